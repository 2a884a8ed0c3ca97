"""The InferenceService API (``serving.trireme.io/v1alpha1``), defined once.

Users write InferenceServices, the API server validates them, ``kubectl explain``
documents them and the operator reads and reports on them. All of that comes from
the pydantic models in this module: ``trireme.operator.crdgen`` turns them into the
CustomResourceDefinition (field docstrings become the schema's descriptions, field
constraints its bounds and enums, defaults its defaults), and the operator parses
objects with them, so the Python view of an object and the API server's view never
drift apart.

Rules that span fields are written as ``Rule`` entries: the rule in CEL for the API
server (``x-kubernetes-validations``) next to the same rule in Python for the models,
with one message. Lists declare their ``x-kubernetes-list-type``, and the models
enforce the uniqueness that ``set`` and ``map`` lists promise. Tests hold the two
sides to the same verdicts.

Python code uses snake_case attributes; the wire format is Kubernetes' camelCase
(``InferenceService.from_api`` / ``to_api`` convert).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (BaseModel, ConfigDict, Field, PlainValidator, Strict, ValidationError, WithJsonSchema,
                      model_validator)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

__all__ = [
    "API_VERSION", "CATEGORIES", "CRD_NAME", "DEFAULT_TARGETS", "DEFAULT_TRITON_IMAGE", "GROUP", "KIND",
    "PLURAL", "PRINTER_COLUMNS", "SCALE_SUBRESOURCE", "SHORT_NAMES", "SINGULAR", "TRITON_GRPC_PORT",
    "TRITON_HTTP_PORT", "TRITON_METRICS_PORT", "VERSION",
    "Bool", "ChangePerPeriod", "Int", "Number", "Percent", "Quantity", "Str", "atomic", "int_or_string",
    "map_list", "set_list",
    "Affinity", "ApiModel", "AutoscalerMetrics", "AutoscalerStatus", "Autoscaling", "Behavior", "Condition",
    "ConditionStatus", "ConditionType", "Dispatch",
    "DisruptionBudget", "EnvVar", "FieldProblem", "Gpus", "InferenceService", "InferenceServiceSpec",
    "InferenceServiceStatus", "InvalidInferenceService", "ModelRepository", "ObjectMeta", "Parallelism",
    "PodPlacement", "Policy", "Priority", "PullPolicy", "ReplicaPlacement", "ResourceAmounts", "Resources",
    "Rule", "Runtime", "ScaleDownBehavior", "ScaleUpBehavior", "Scheduling", "Signal", "Toleration",
    "TolerationEffect", "TolerationOperator", "TritonModel", "field_problems",
]

GROUP = "serving.trireme.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceService"
PLURAL = "inferenceservices"
SINGULAR = "inferenceservice"
SHORT_NAMES = ("tis",)
CATEGORIES = ("trireme",)
CRD_NAME = f"{PLURAL}.{GROUP}"

DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"
TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002

SCALE_SUBRESOURCE = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                     "labelSelectorPath": ".status.selector"}
"""Where ``/scale`` (kubectl scale, HPA, KEDA) reads and writes replicas and finds the pods."""

PRINTER_COLUMNS = (
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas",
     "description": "Replicas asked for (spec.replicas)."},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas",
     "description": "Replicas wanted now: spec.replicas, or with autoscaling the autoscaler's count."},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas",
     "description": "Replicas whose Triton servers report every model ready."},
    {"name": "GPUs", "type": "integer", "jsonPath": ".spec.gpus.count",
     "description": "Whole GPUs per replica; empty when replicas share GPUs (see GPU-Fraction, GPU-Memory)."},
    {"name": "Policy", "type": "string", "jsonPath": ".spec.scheduling.policy",
     "description": "Placement policy."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
     "description": "Time since the InferenceService was created."},
    {"name": "GPU-Fraction", "type": "number", "jsonPath": ".spec.gpus.fraction", "priority": 1,
     "description": "Share of one GPU per pod, when replicas share GPUs by fraction."},
    {"name": "GPU-Memory", "type": "string", "jsonPath": ".spec.gpus.memory", "priority": 1,
     "description": "GPU memory per pod, when replicas share GPUs by memory."},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1,
     "description": "In-cluster HTTP endpoint of the service."},
)
"""``kubectl get tis`` columns; priority 1 columns show with ``-o wide``."""

# -- patterns and bounds shared by the models and the schema ---------------------------------------------

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
TOLERATION_KEY = r"^([A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?)?$"
QUANTITY = (r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
            r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
"""A Kubernetes resource quantity ('500m', '16Gi', '1e3'), without a minus sign."""
GPU_MEMORY = r"^[0-9]*[1-9][0-9]*(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
IMAGE = r"^\S+$"
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
MODEL_REPOSITORY_SCHEMES = ("file", "s3", "gs", "pvc")
MAX_REPLICAS = 1000
MAX_INT32 = 2**31 - 1

Int = Annotated[int, Strict()]
"""An integer, as the API server takes one: no strings, no booleans."""
Number = Annotated[float, Strict()]
"""A number (integers too), as the API server takes one: no strings, no booleans."""
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]


def int_or_string(*, minimum: int, maximum: int, pattern: str, max_length: int, example: str) -> Any:
    """An ``x-kubernetes-int-or-string`` type: integers within bounds, or strings matching ``pattern``.

    The same bounds become the schema's value validations and the model's check.
    """
    compiled = re.compile(pattern)

    def check(value: Any) -> int | str:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise PydanticCustomError("int_or_string", "must be an integer or a string such as {example}",
                                      {"example": example})
        if isinstance(value, int) and not minimum <= value <= maximum:
            raise PydanticCustomError("int_or_string", "must be between {minimum} and {maximum}",
                                      {"minimum": minimum, "maximum": maximum})
        if isinstance(value, str) and (len(value) > max_length or not compiled.search(value)):
            raise PydanticCustomError("int_or_string", "{value!r} is not valid: use a string such as {example}",
                                      {"value": value, "example": example})
        return value

    schema = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True,
              "minimum": minimum, "maximum": maximum, "pattern": pattern, "maxLength": max_length}
    return Annotated[int | str, PlainValidator(check), WithJsonSchema(schema)]


Quantity = int_or_string(minimum=0, maximum=10**15, pattern=QUANTITY, max_length=64, example="'500m' or '16Gi'")
Percent = int_or_string(minimum=0, maximum=MAX_REPLICAS, pattern=r"^(100|[1-9]?[0-9])%$", max_length=4,
                        example="'25%'")
ChangePerPeriod = int_or_string(minimum=1, maximum=MAX_REPLICAS, pattern=r"^([1-9][0-9]{0,2}|1000)%$",
                                max_length=5, example="'100%'")


def atomic() -> dict[str, Any]:
    """A list replaced as a whole on merge and apply."""
    return {"x-kubernetes-list-type": "atomic"}


def set_list() -> dict[str, Any]:
    """A list of unique scalars; server-side apply merges it by value."""
    return {"x-kubernetes-list-type": "set"}


def map_list(*keys: str) -> dict[str, Any]:
    """A list of objects unique by ``keys`` (wire names); server-side apply merges it by key."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


# -- rules -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A rule across fields of one object: ``cel`` for the API server, ``holds`` for the models.

    ``field_path`` (relative, ``.parallelism.tensorParallel``) is where a failure is
    reported; empty means the object carrying the rule. ``reason`` is the API
    server's field error type (``FieldValueInvalid`` when empty).
    """

    cel: str
    message: str
    holds: Callable[[Any], bool]
    field_path: str = ""
    reason: str = ""

    def schema(self) -> dict[str, Any]:
        """The ``x-kubernetes-validations`` entry."""
        entry: dict[str, Any] = {"rule": self.cel, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry


@dataclass(frozen=True)
class FieldProblem:
    """One reason an object is invalid: the field (``spec.gpus.count``) and what is wrong."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidInferenceService(ValueError):
    """An object that is not a valid InferenceService; ``problems`` name the fields."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def _schema_extra(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    rules = cls.__dict__.get("cel_rules") or ()
    if rules:
        schema["x-kubernetes-validations"] = [rule.schema() for rule in rules]


class ApiModel(BaseModel):
    """Base of the API's objects: camelCase on the wire, unknown fields refused, rules checked."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True, extra="forbid", use_attribute_docstrings=True,
                              json_schema_extra=_schema_extra)
    cel_rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _rules_and_lists_hold(self) -> ApiModel:
        broken = [(rule.field_path.lstrip("."), rule.message) for rule in type(self).__dict__.get("cel_rules", ())
                  if not rule.holds(self)]
        broken += self._duplicates()
        if broken:
            summary = "; ".join(f"{path}: {message}" if path else message for path, message in broken)
            raise PydanticCustomError("rule", "{summary}", {"summary": summary, "problems": broken})
        return self

    def _duplicates(self) -> list[tuple[str, str]]:
        """Repeated values in ``set`` lists and repeated keys in ``map`` lists."""
        found = []
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            kind = extra.get("x-kubernetes-list-type")
            items = getattr(self, name)
            if kind not in ("set", "map") or not items:
                continue
            keys = extra.get("x-kubernetes-list-map-keys") or []
            seen: list[Any] = []
            reported: list[Any] = []
            for index, item in enumerate(items):
                key = tuple(_by_wire_name(item, k) for k in keys) if kind == "map" else item
                if key in seen and key not in reported:  # once per value, as the API server reports it
                    shown = dict(zip(keys, key)) if kind == "map" else key
                    found.append((f"{info.alias or name}[{index}]", f"duplicate value {shown!r}"))
                    reported.append(key)
                seen.append(key)
        return found

    def to_api(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys; unset fields and empty lists and maps left out."""
        return _without_empty(self.model_dump(mode="json", by_alias=True, exclude_none=True))


def _without_empty(value: Any) -> Any:
    """Drop empty lists and maps: the models' defaults for fields the API server leaves out."""
    if isinstance(value, dict):
        cleaned = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


def _by_wire_name(model: BaseModel, wire_name: str) -> Any:
    for name, info in type(model).model_fields.items():
        if (info.alias or name) == wire_name:
            return getattr(model, name)
    raise KeyError(wire_name)


# -- enums -----------------------------------------------------------------------------------------------


class Policy(StrEnum):
    """How the scheduler chooses GPUs for a replica."""

    SPREAD = "spread"
    BINPACK = "binpack"
    BESTFIT = "bestfit"
    FGD = "fgd"
    TRIREME = "trireme"


class Signal(StrEnum):
    """The metric the autoscaler keeps at its target."""

    QUEUE_TIME = "queueTime"
    PENDING_REQUESTS = "pendingRequests"
    REQUEST_RATE = "requestRate"
    GPU_UTILIZATION = "gpuUtilization"


class Dispatch(StrEnum):
    """How requests reach the replicas."""

    POOLED = "pooled"
    PER_REPLICA = "perReplica"
    AUTO = "auto"


DEFAULT_TARGETS: dict[Signal, float] = {Signal.QUEUE_TIME: 20.0, Signal.PENDING_REQUESTS: 4.0,
                                        Signal.GPU_UTILIZATION: 70.0}
"""Targets used when ``autoscaling.target`` is omitted (requestRate has none: it must be set)."""


class PullPolicy(StrEnum):
    """When the kubelet pulls the Triton image."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TolerationEffect(StrEnum):
    """The taint effect a toleration matches."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class ConditionType(StrEnum):
    """The conditions an InferenceService reports."""

    READY = "Ready"
    SCHEDULED = "Scheduled"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    METRICS_AVAILABLE = "MetricsAvailable"


class ConditionStatus(StrEnum):
    """Whether a condition holds."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


# -- spec ------------------------------------------------------------------------------------------------


class TritonModel(ApiModel):
    """A model that every replica loads from the model repository."""

    name: Str = Field(min_length=1, max_length=128, pattern=MODEL_NAME)
    """Name of the model: its directory in the model repository, and the name clients send requests to
    (/v2/models/<name>/infer). A replica counts as ready only when Triton reports this model ready."""


class ModelRepository(ApiModel):
    """Where Triton finds the models."""

    uri: Str = Field(min_length=1, max_length=2048)
    """Location of the Triton model repository. One of: a path on the node (/models, or relative to the
    kubelet's working directory) or file:///path; s3://bucket/path (Amazon S3 or a compatible store;
    credentials come from runtime.env, e.g. AWS_ACCESS_KEY_ID from a Secret); gs://bucket/path (Google
    Cloud Storage); pvc://<claim>/<path> (a PersistentVolumeClaim in the same namespace, mounted
    read-only)."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(cel="!self.uri.contains('://') || self.uri.startsWith('file://') || self.uri.startsWith('s3://')"
                 " || self.uri.startsWith('gs://') || self.uri.startsWith('pvc://')",
             message="uri must be a local path or a file://, s3://, gs:// or pvc:// URI",
             holds=lambda r: "://" not in r.uri or r.uri.split("://", 1)[0] in MODEL_REPOSITORY_SCHEMES,
             field_path=".uri"),
        Rule(cel="!self.uri.startsWith('pvc://') || self.uri.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/.*)?$')",
             message="a pvc:// uri is pvc://<claim name>/<path in the volume>",
             holds=lambda r: not r.uri.startswith("pvc://")
             or re.search(r"^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/.*)?$", r.uri) is not None,
             field_path=".uri"),
    )


class EnvVar(ApiModel):
    """An environment variable of the Triton container (the Kubernetes EnvVar)."""

    name: Str = Field(min_length=1, max_length=256, pattern=ENV_NAME)
    """Name of the variable."""
    value: Str | None = Field(None, max_length=32768)
    """Value of the variable. Set value or valueFrom, not both."""
    value_from: dict[str, Any] | None = None
    """Source of the value: the Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef,
    resourceFieldRef), e.g. {secretKeyRef: {name: s3-credentials, key: access-key}}."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(cel="!(has(self.value) && has(self.valueFrom))", message="set value or valueFrom, not both",
             holds=lambda e: e.value is None or e.value_from is None),
    )


class ResourceAmounts(ApiModel):
    """Amounts of CPU and memory."""

    cpu: Quantity | None = None
    """CPU, in cores (2) or millicores ('500m')."""
    memory: Quantity | None = None
    """Memory, in bytes or with a suffix ('16Gi', '512Mi')."""


class Resources(ApiModel):
    """CPU and memory of the Triton container. GPUs are set by spec.gpus, not here."""

    requests: ResourceAmounts | None = None
    """What the scheduler reserves for each pod of a replica."""
    limits: ResourceAmounts | None = None
    """The most each pod of a replica may use."""


class Runtime(ApiModel):
    """The Triton Inference Server container that serves the models."""

    image: Str = Field(DEFAULT_TRITON_IMAGE, min_length=1, max_length=512, pattern=IMAGE)
    """Triton Inference Server image. The pods run tritonserver from it on ports 8000 (HTTP),
    8001 (gRPC) and 8002 (metrics)."""
    image_pull_policy: PullPolicy | None = None
    """When to pull the image: Always, IfNotPresent or Never. The Kubernetes default when omitted."""
    args: list[Annotated[Str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64,
                                                                json_schema_extra=atomic())
    """Extra tritonserver flags, appended after the ones Trireme sets (--model-repository,
    --model-control-mode=explicit, --load-model for each model, and the ports), e.g.
    ['--log-verbose=1']."""
    env: list[EnvVar] = Field(default_factory=list, max_length=128, json_schema_extra=map_list("name"))
    """Environment variables of the Triton container (for instance credentials of the model
    repository)."""
    resources: Resources = Field(default_factory=Resources)
    """CPU and memory requests and limits of each pod."""


class Gpus(ApiModel):
    """The GPUs of one replica: set exactly one of count (whole GPUs), fraction or memory (a share of
    one GPU); optionally restrict the GPU products.

    With pipeline parallelism a replica is several pods: whole GPUs are divided evenly among them, and
    with a share each pod gets that share of one GPU."""

    count: Int | None = Field(None, ge=1, le=1024)
    """Whole GPUs per replica, divided evenly among its parallelism.pipelineParallel pods; each pod's
    GPUs are on one node. Must be a multiple of tensorParallel × pipelineParallel."""
    fraction: Number | None = Field(None, gt=0, lt=1)
    """Share of one GPU per pod, greater than 0 and less than 1 (0.5 = half of a GPU's compute and
    memory). Replicas that share a GPU run with tensorParallel 1."""
    memory: Str | None = Field(None, max_length=32, pattern=GPU_MEMORY)
    """GPU memory per pod on one shared GPU, e.g. '20Gi' or '512Mi': the pod goes to a GPU that has this
    much memory free. Replicas that share a GPU run with tensorParallel 1."""
    products: list[Annotated[Str, Field(min_length=1, max_length=63, pattern=LABEL_VALUE)]] = Field(
        default_factory=list, max_length=16, json_schema_extra=set_list())
    """GPU products a replica may run on, as the node label nvidia.com/gpu.product names them
    (e.g. NVIDIA-A100-SXM4-80GB, NVIDIA-H100-80GB-HBM3). Any product when empty."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(cel="(has(self.count) ? 1 : 0) + (has(self.fraction) ? 1 : 0) + (has(self.memory) ? 1 : 0) == 1",
             message="set exactly one of count, fraction and memory",
             holds=lambda g: sum(v is not None for v in (g.count, g.fraction, g.memory)) == 1),
    )

    @property
    def shared(self) -> bool:
        """Whether a replica takes a share of one GPU instead of whole GPUs."""
        return self.count is None


class Parallelism(ApiModel):
    """How one replica of the model is split across GPUs and pods."""

    tensor_parallel: Int = Field(1, ge=1, le=64)
    """Tensor-parallel degree: the GPUs that hold one shard group of the model and work on every
    request together. They are placed on one node and, on a node that declares NVLink islands
    (annotation trireme.io/nvlink-islands), inside one island: a group never spans a slower link."""
    pipeline_parallel: Int = Field(1, ge=1, le=64)
    """Pipeline-parallel degree: pods per replica, one per pipeline stage, possibly on different nodes.
    The pods of a replica are placed all together or not at all."""


class Priority(ApiModel):
    """How important the service is when GPUs are scarce. Set value or className, not both; neither
    means priority 0."""

    value: Int | None = Field(None, ge=-(2**31), le=1_000_000_000)
    """Priority of the replicas; higher goes first in the scheduling queue and may preempt lower."""
    class_name: Str | None = Field(None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of a PriorityClass whose value is the priority of the replicas."""
    preemptible: Bool = True
    """Whether replicas of this service may be evicted to make room for replicas of higher priority.
    False protects them from preemption (not from node failures or drains)."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(cel="!(has(self.value) && has(self.className))", message="set value or className, not both",
             holds=lambda p: p.value is None or p.class_name is None),
    )


class Toleration(ApiModel):
    """A toleration of the replica pods (the Kubernetes Toleration)."""

    key: Str | None = Field(None, max_length=316, pattern=TOLERATION_KEY)
    """Taint key to tolerate; empty with operator Exists tolerates every taint."""
    operator: TolerationOperator = TolerationOperator.EQUAL
    """Exists matches any value; Equal matches value."""
    value: Str | None = Field(None, max_length=63, pattern=LABEL_VALUE)
    """Taint value to match with operator Equal; empty with Exists."""
    effect: TolerationEffect | None = None
    """Taint effect to match: NoSchedule, PreferNoSchedule or NoExecute; every effect when empty."""
    toleration_seconds: Int | None = Field(None, ge=0, le=MAX_INT32)
    """With effect NoExecute: how long a pod stays on a node after the taint appears; forever when
    empty."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(cel="self.operator != 'Exists' || !has(self.value) || self.value == ''",
             message="value must be empty when operator is Exists",
             holds=lambda t: t.operator != TolerationOperator.EXISTS or not t.value, field_path=".value"),
        Rule(cel="(has(self.key) && self.key != '') || self.operator == 'Exists'",
             message="a toleration without a key must use operator Exists",
             holds=lambda t: bool(t.key) or t.operator == TolerationOperator.EXISTS, field_path=".operator"),
        Rule(cel="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
             message="tolerationSeconds needs effect NoExecute",
             holds=lambda t: t.toleration_seconds is None or t.effect == TolerationEffect.NO_EXECUTE,
             field_path=".tolerationSeconds"),
    )


class Affinity(ApiModel):
    """Kubernetes affinity rules for the replica pods, as in a pod's spec.affinity. Trireme's
    scheduler honours node affinity; pod (anti-)affinity are passed to the pods."""

    node_affinity: dict[str, Any] | None = None
    """The Kubernetes NodeAffinity: requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms and
    preferredDuringSchedulingIgnoredDuringExecution."""
    pod_affinity: dict[str, Any] | None = None
    """The Kubernetes PodAffinity: pods to be placed near."""
    pod_anti_affinity: dict[str, Any] | None = None
    """The Kubernetes PodAntiAffinity: pods to be placed away from."""


class Scheduling(ApiModel):
    """Where replicas may go and how Trireme picks among the GPUs that fit."""

    policy: Policy | None = None
    """Placement policy. spread: least loaded nodes first; binpack: most loaded nodes first, keeping whole
    nodes free; bestfit: the GPUs whose free capacity matches the request most closely; fgd: least growth
    of GPU fragmentation (Weng et al., ATC '23); trireme: Trireme's own fragmentation-aware policy, which
    also keeps NVLink islands whole for tensor-parallel replicas. Unset: the cluster's default, the
    operator's --default-policy (trireme unless the administrator chose another)."""
    node_selector: dict[str, Annotated[Str, Field(max_length=63, pattern=LABEL_VALUE)]] = Field(
        default_factory=dict, max_length=64)
    """Node labels a node must carry to host a replica, as in a pod's spec.nodeSelector."""
    affinity: Affinity | None = None
    """Node affinity and pod (anti-)affinity of the replica pods."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=64, json_schema_extra=atomic())
    """Taints the replica pods tolerate (GPU nodes are often tainted nvidia.com/gpu:NoSchedule)."""


_WINDOW = ("Seconds of recommendations the autoscaler looks back over before {}: it acts on the {} "
           "recommendation in the window, so short spikes do not make it flap.")
_CHANGE = "Most replicas {} per period: a count (4) or a percentage of the current replicas ('100%')."
_PERIOD = "Length of the period that maxChange limits, in seconds."


class ScaleUpBehavior(ApiModel):
    """How fast the autoscaler adds replicas."""

    stabilization_window_seconds: Int = Field(0, ge=0, le=3600,
                                              description=_WINDOW.format("scaling up", "lowest"))
    max_change: ChangePerPeriod = Field("100%", description=_CHANGE.format("added"))
    period_seconds: Int = Field(15, ge=1, le=1800, description=_PERIOD)


class ScaleDownBehavior(ApiModel):
    """How fast the autoscaler removes replicas."""

    stabilization_window_seconds: Int = Field(300, ge=0, le=3600,
                                              description=_WINDOW.format("scaling down", "highest"))
    max_change: ChangePerPeriod = Field(1, description=_CHANGE.format("removed"))
    period_seconds: Int = Field(60, ge=1, le=1800, description=_PERIOD)


class Behavior(ApiModel):
    """Rate limits and stabilisation of the autoscaler, per direction."""

    scale_up: ScaleUpBehavior = ScaleUpBehavior()
    """Adding replicas: by default at once, doubling at most every 15 seconds."""
    scale_down: ScaleDownBehavior = ScaleDownBehavior()
    """Removing replicas: by default after 5 minutes of lower demand, one per minute."""


class Autoscaling(ApiModel):
    """Trireme's autoscaler: replicas follow demand, read from Triton's metrics in Prometheus. It adds a
    replica only when GPUs to place it exist, and missing or stale metrics never scale down."""

    enabled: Bool = False
    """Whether Trireme's autoscaler sets the replica count. When false, spec.replicas decides (kubectl
    scale, or another autoscaler such as HPA or KEDA through the scale subresource)."""
    min_replicas: Int = Field(1, ge=1, le=MAX_REPLICAS)
    """Fewest replicas the autoscaler keeps."""
    max_replicas: Int | None = Field(None, ge=1, le=MAX_REPLICAS)
    """Most replicas the autoscaler runs; required when enabled."""
    signal: Signal = Signal.QUEUE_TIME
    """Metric kept at the target. queueTime: average time a request waits in Triton's queue, in
    milliseconds; pendingRequests: requests waiting or running per replica; requestRate: requests per
    second per replica; gpuUtilization: average utilisation of the replicas' GPUs, in percent."""
    target: Number | None = Field(None, gt=0, le=1_000_000)
    """Value of the signal to hold, in the signal's unit. Defaults: queueTime 20 (ms), pendingRequests 4,
    gpuUtilization 70 (%); requestRate has no default and needs a target."""
    dispatch: Dispatch = Dispatch.AUTO
    """How clients' requests reach the replicas, which decides how many replicas a queueTime target needs.
    pooled: through a load-aware gateway that sends each request to the replica with the fewest
    outstanding (requests queue as one pool). perReplica: through the plain Kubernetes Service, which
    picks a replica per request or connection (each replica queues on its own; more replicas for the
    same load). auto (the default): pooled until requests are seen waiting at one replica while another
    has a free slot, which a load-aware gateway never lets happen, then perReplica (with an Event)."""
    latency_slo_milliseconds: Int | None = Field(None, ge=1, le=3_600_000, alias="latencySLOMilliseconds")
    """Latency objective: average time per request (queue and compute) the service should stay under.
    When it is exceeded the autoscaler adds replicas whatever the signal says."""
    behavior: Behavior = Behavior()
    """Stabilisation windows and rate limits for scaling up and down."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(cel="!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
             message="minReplicas must not exceed maxReplicas",
             holds=lambda a: a.max_replicas is None or a.min_replicas <= a.max_replicas, field_path=".minReplicas"),
        Rule(cel="!self.enabled || has(self.maxReplicas)", message="maxReplicas is required when enabled",
             holds=lambda a: not a.enabled or a.max_replicas is not None, field_path=".maxReplicas",
             reason="FieldValueRequired"),
        Rule(cel="self.signal != 'requestRate' || has(self.target)",
             message="a requestRate signal needs a target (requests per second one replica serves)",
             holds=lambda a: a.signal != Signal.REQUEST_RATE or a.target is not None, field_path=".target",
             reason="FieldValueRequired"),
        Rule(cel="self.signal != 'gpuUtilization' || !has(self.target) || self.target <= 100.0",
             message="a gpuUtilization target is a percentage: at most 100",
             holds=lambda a: a.signal != Signal.GPU_UTILIZATION or a.target is None or a.target <= 100,
             field_path=".target"),
    )

    def effective_target(self) -> float:
        """The target in force: ``target``, or the signal's default."""
        if self.target is not None:
            return self.target
        return DEFAULT_TARGETS[self.signal]


class DisruptionBudget(ApiModel):
    """How many replicas may be down at once for voluntary moves: rebalancing, defragmentation and
    drains (a PodDisruptionBudget guards the same for evictions)."""

    max_unavailable: Percent = 1
    """Most replicas unavailable at once: a count (1) or a percentage of the replicas ('25%', rounded
    down, at least one move at a time). 0 forbids moves."""


class InferenceServiceSpec(ApiModel):
    """The desired state: which models, served how, on which GPUs, how many."""

    models: list[TritonModel] = Field(min_length=1, max_length=32, json_schema_extra=map_list("name"))
    """Models every replica loads from the model repository."""
    model_repository: ModelRepository
    """Where the models live."""
    runtime: Runtime = Runtime()
    """The Triton server: image, flags, environment, CPU and memory."""
    replicas: Int = Field(1, ge=0, le=MAX_REPLICAS)
    """Replicas to run (each a full copy of the models, of parallelism.pipelineParallel pods). kubectl
    scale and external autoscalers set it through the scale subresource. With autoscaling.enabled,
    Trireme's autoscaler decides instead and reports its choice in status.desiredReplicas."""
    gpus: Gpus = Gpus(count=1)
    """GPUs per replica: set exactly one of count (whole GPUs), fraction or memory (a share of one GPU),
    and optionally the acceptable GPU products. Default: one whole GPU of any product. With pipeline
    parallelism, whole GPUs are divided evenly among a replica's pods, and a share is per pod."""
    parallelism: Parallelism = Parallelism()
    """Tensor- and pipeline-parallel degrees of one replica."""
    priority: Priority = Priority()
    """Scheduling priority and whether replicas may be preempted."""
    depends_on: list[Annotated[Str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]] = Field(
        default_factory=list, max_length=32, json_schema_extra=set_list())
    """Names of other InferenceServices in this namespace that must be placed and ready first (for
    instance the models of an ensemble or a pipeline). Cycles are reported on the objects in them."""
    scheduling: Scheduling = Scheduling()
    """Placement policy and node constraints."""
    autoscaling: Autoscaling = Autoscaling()
    """Demand-driven replica count (off by default)."""
    disruption_budget: DisruptionBudget = DisruptionBudget()
    """Limits on voluntary moves of replicas."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(cel="!has(self.gpus.count) || self.parallelism.tensorParallel <= self.gpus.count",
             message="tensorParallel must not exceed gpus.count",
             holds=lambda s: s.gpus.count is None or s.parallelism.tensor_parallel <= s.gpus.count,
             field_path=".parallelism.tensorParallel"),
        Rule(cel="!has(self.gpus.count) || self.parallelism.tensorParallel > self.gpus.count"
                 " || self.gpus.count % (self.parallelism.tensorParallel * self.parallelism.pipelineParallel) == 0",
             message="gpus.count must be a multiple of tensorParallel × pipelineParallel: each pipeline stage "
                     "gets the same whole number of tensor-parallel groups",
             holds=lambda s: s.gpus.count is None or s.parallelism.tensor_parallel > s.gpus.count
             or s.gpus.count % (s.parallelism.tensor_parallel * s.parallelism.pipeline_parallel) == 0,
             field_path=".gpus.count"),
        Rule(cel="has(self.gpus.count) || self.parallelism.tensorParallel == 1",
             message="tensorParallel needs whole GPUs: with gpus.fraction or gpus.memory it must be 1",
             holds=lambda s: s.gpus.count is not None or s.parallelism.tensor_parallel == 1,
             field_path=".parallelism.tensorParallel"),
    )


# -- status ----------------------------------------------------------------------------------------------


class Condition(ApiModel):
    """One aspect of the service's state (the Kubernetes metav1.Condition)."""

    type: ConditionType
    """Ready: every replica serves every model; Scheduled: every replica is placed on GPUs; Progressing: a
    change (create, scale, move) is under way; Degraded: fewer replicas serve than asked for;
    MetricsAvailable: the autoscaler reads current metrics for the service."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: Str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON)
    """Why the condition is in its status, in CamelCase (e.g. InsufficientGPUs)."""
    message: Str = Field(max_length=32768)
    """What happened, for people (e.g. "needs 2× A100 on one node; largest free block is 1")."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: Int | None = Field(None, ge=0)
    """metadata.generation of the spec the condition was computed from."""


class PodPlacement(ApiModel):
    """One pod of a replica and where it runs."""

    name: Str = Field(min_length=1, max_length=253)
    """Name of the pod."""
    node: Str | None = Field(None, max_length=253)
    """Node the pod is bound to; empty while pending."""
    gpus: list[Annotated[Int, Field(ge=0, le=255)]] = Field(default_factory=list, max_length=64,
                                                          json_schema_extra=set_list())
    """Indices of the node's GPUs the pod uses (the one GPU it shares, with a fraction or memory)."""


class ReplicaPlacement(ApiModel):
    """One replica and its pods."""

    replica: Int = Field(ge=0, le=MAX_INT32)
    """Index of the replica (stable: it appears in the pod names)."""
    pods: list[PodPlacement] = Field(default_factory=list, max_length=64, json_schema_extra=map_list("name"))
    """The replica's pods, one per pipeline stage."""
    ready: Bool = False
    """Whether Triton reports every model ready on every pod of the replica."""


class AutoscalerMetrics(ApiModel):
    """The metric values behind the autoscaler's latest decision (absent where they were not measured)."""

    request_rate: Number | None = Field(None, ge=0)
    """Requests per second arriving, over the rate window."""
    forecast_request_rate: Number | None = Field(None, ge=0)
    """Requests per second expected by the time a replica asked for now serves."""
    queue_time_milliseconds: Number | None = Field(None, ge=0)
    """Mean time a completed request waited in Triton's queue, over the rate window."""
    compute_time_milliseconds: Number | None = Field(None, ge=0)
    """Mean compute time of one request, learned from Triton's counters."""
    pending_requests: Number | None = Field(None, ge=0)
    """Requests waiting or running on all replicas."""
    signal_value: Number | None = Field(None, ge=0)
    """The autoscaling signal in its own unit (queueTime: milliseconds)."""
    needed_replicas: Number | None = Field(None, ge=0)
    """Replicas the load asks for, before windows, rate limits, bounds and GPU capacity."""


class AutoscalerStatus(ApiModel):
    """What the autoscaler decided last, and why."""

    action: Str = Field(max_length=32)
    """scale-up, scale-down, steady or hold (metrics not trusted: the count is never lowered)."""
    reason: Str = Field(max_length=4096)
    """Why, with the numbers it used."""
    last_decision_time: datetime
    """When the decision shown was made. Later decisions that agree with it (same action, limits and
    drains, metrics within 10 %) are not written, for up to the operator's status refresh (60 s)."""
    last_scale_time: datetime | None = None
    """When the autoscaler last changed desiredReplicas."""
    capacity_limited_to: Int | None = Field(None, ge=0, le=MAX_INT32)
    """Set when the load asks for more replicas than the free GPUs can place: the count that fits."""
    draining: list[Annotated[Str, Field(max_length=253)]] = Field(default_factory=list, max_length=MAX_REPLICAS,
                                                                   json_schema_extra=set_list())
    """Pods taken out of the Service for a scale-down, deleted once Triton reports them idle."""
    metrics: AutoscalerMetrics = AutoscalerMetrics()
    """The metric values the decision used."""


class InferenceServiceStatus(ApiModel):
    """The observed state, written by Trireme."""

    observed_generation: Int | None = Field(None, ge=0)
    """metadata.generation of the spec this status reflects."""
    replicas: Int = Field(0, ge=0, le=MAX_INT32)
    """Replicas that exist, ready or not."""
    ready_replicas: Int = Field(0, ge=0, le=MAX_INT32)
    """Replicas whose Triton servers report every model ready."""
    desired_replicas: Int = Field(0, ge=0, le=MAX_INT32)
    """Replicas wanted now: spec.replicas, or the autoscaler's choice when autoscaling is enabled."""
    placements: list[ReplicaPlacement] = Field(default_factory=list, max_length=MAX_REPLICAS,
                                               json_schema_extra=map_list("replica"))
    """Where each replica runs: its pods, their nodes and GPU indices."""
    conditions: list[Condition] = Field(default_factory=list, max_length=16, json_schema_extra=map_list("type"))
    """Ready, Scheduled, Progressing, Degraded and MetricsAvailable, with reasons and messages."""
    endpoint: Str | None = Field(None, max_length=512)
    """In-cluster HTTP URL of the service (its Service, port 8000); gRPC is on port 8001 of the same
    host."""
    selector: Str | None = Field(None, max_length=4096)
    """Label selector of the replica pods, in string form, for the scale subresource (HPA and KEDA read
    it)."""
    autoscaler: AutoscalerStatus | None = None
    """The autoscaler's latest decision, while autoscaling is enabled."""

    def condition(self, kind: ConditionType) -> Condition | None:
        """The condition of that type, if reported."""
        return next((c for c in self.conditions if c.type == kind), None)


# -- the object ------------------------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The parts of Kubernetes object metadata that Trireme reads; other fields are kept as they are."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True, extra="allow")
    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class InferenceService(ApiModel):
    """A fleet of NVIDIA Triton Inference Server replicas serving a set of models on GPUs. Trireme creates
    the replica pods, places them on GPUs as a secondary scheduler, puts them behind a Service, scales
    them on demand and moves them to keep GPUs unfragmented."""

    api_version: Literal[API_VERSION] = API_VERSION
    """APIVersion defines the versioned schema of this representation of an object. Servers should convert
    recognized schemas to the latest internal value, and may reject unrecognized values. More info:
    https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"""
    kind: Literal[KIND] = KIND
    """Kind is a string value representing the REST resource this object represents. Servers may infer
    this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info:
    https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: InferenceServiceSpec
    """What to serve and how."""
    status: InferenceServiceStatus | None = None
    """What Trireme observed and did."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(cel="!has(self.spec.dependsOn) || !has(self.metadata.name)"
                 " || !(self.metadata.name in self.spec.dependsOn)",
             message="an InferenceService cannot depend on itself",
             holds=lambda o: o.metadata.name is None or o.metadata.name not in o.spec.depends_on,
             field_path=".spec.dependsOn"),
    )

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> InferenceService:
        """Parse an object as the API server returns it; raises InvalidInferenceService naming the fields."""
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise InvalidInferenceService(field_problems(exc)) from None


def field_problems(exc: ValidationError) -> list[FieldProblem]:
    """A pydantic ValidationError as problems named by Kubernetes field paths (``spec.models[0].name``)."""
    problems = []
    for error in exc.errors():
        base = _field_path(error["loc"])
        context = error.get("ctx") or {}
        if error["type"] == "rule" and "problems" in context:
            for relative, message in context["problems"]:
                path = base + ("" if not relative else relative if relative.startswith("[") or not base
                               else "." + relative)
                problems.append(FieldProblem(path, message))
        else:
            problems.append(FieldProblem(base, error["msg"]))
    return problems


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path
