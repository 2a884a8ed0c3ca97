"""The InferenceService API agrees with itself: the pydantic models, the generated
schema (checked by the local cluster's CRD validator) and kubectl against the local
cluster accept the same objects, reject the same objects naming the same fields, and
fill in the same defaults."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trireme.devcluster.crd import CustomResourceVersion
from trireme.devcluster.errors import ApiError
from trireme.operator import api, crdgen

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "inferenceservice.yaml").read_text())
Run = Callable[..., CompletedProcess[str]]
DELETE = object()
"""In a patch: remove this key."""


def patched(patch: dict[str, Any], base: dict[str, Any] = EXAMPLE) -> dict[str, Any]:
    """``base`` with ``patch`` merged in (dicts recursively, DELETE removes a key)."""
    out = copy.deepcopy(base)

    def merge(target: dict[str, Any], changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is DELETE:
                target.pop(key, None)
            elif isinstance(value, dict) and isinstance(target.get(key), dict):
                merge(target[key], value)
            else:
                target[key] = copy.deepcopy(value)
    merge(out, patch)
    return out


def spec(**changes: Any) -> dict[str, Any]:
    return {"spec": changes}


MINIMAL = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "minimal"},
           "spec": {"models": [{"name": "simple"}], "modelRepository": {"uri": "/models"}}}

VALID = [
    pytest.param({}, id="example"),
    pytest.param({"spec": MINIMAL["spec"]}, id="minimal"),
    pytest.param(spec(gpus={"count": DELETE, "fraction": 0.5}), id="gpu-fraction"),
    pytest.param(spec(gpus={"count": DELETE, "memory": "20Gi"}), id="gpu-memory"),
    pytest.param(spec(gpus={"count": 4, "products": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"]},
                      parallelism={"tensorParallel": 2, "pipelineParallel": 2}), id="tp2-pp2-on-4"),
    pytest.param(spec(gpus={"count": 8}, parallelism={"tensorParallel": 2, "pipelineParallel": 2}),
                 id="two-tp-groups-per-stage"),
    pytest.param(spec(gpus={"count": DELETE, "fraction": 0.25}, parallelism={"pipelineParallel": 3}),
                 id="pipeline-of-shared-gpus"),
    pytest.param(spec(replicas=0), id="zero-replicas"),
    pytest.param(spec(priority={"className": "high-priority", "preemptible": False}), id="priority-class"),
    pytest.param(spec(priority={"value": -5}), id="priority-value"),
    pytest.param(spec(dependsOn=["tokenizer", "embedder"]), id="depends-on"),
    pytest.param(spec(scheduling={"policy": "fgd", "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                                  "tolerations": [{"operator": "Exists"},
                                                  {"key": "nvidia.com/gpu", "value": "present",
                                                   "effect": "NoExecute", "tolerationSeconds": 30}],
                                  "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                                      "nodeSelectorTerms": [{"matchExpressions": [
                                          {"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}),
                 id="scheduling"),
    pytest.param(spec(autoscaling={"enabled": True, "maxReplicas": 8, "signal": "requestRate", "target": 150,
                                   "latencySLOMilliseconds": 250,
                                   "behavior": {"scaleDown": {"maxChange": "50%"}}}), id="autoscaling"),
    pytest.param(spec(autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 2, "signal": "gpuUtilization",
                                   "target": 100}), id="gpu-utilization-100"),
    pytest.param(spec(disruptionBudget={"maxUnavailable": "25%"}), id="budget-percent"),
    pytest.param(spec(disruptionBudget={"maxUnavailable": 0}), id="budget-zero"),
    pytest.param(spec(runtime={"args": ["--log-verbose=1"], "imagePullPolicy": "IfNotPresent",
                               "env": [{"name": "AWS_ACCESS_KEY_ID",
                                        "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}},
                                       {"name": "LOG", "value": "1"}],
                               "resources": {"requests": {"cpu": "500m", "memory": 1073741824}}}), id="runtime"),
    pytest.param(spec(modelRepository={"uri": "s3://bucket/models"}), id="s3"),
    pytest.param(spec(modelRepository={"uri": "gs://bucket/models"}), id="gcs"),
    pytest.param(spec(modelRepository={"uri": "pvc://model-store/triton"}), id="pvc"),
    pytest.param(spec(modelRepository={"uri": "file:///srv/models"}), id="file-url"),
    pytest.param({"status": {"replicas": 1, "readyReplicas": 1, "desiredReplicas": 1, "observedGeneration": 2,
                             "endpoint": "http://simple.default.svc:8000", "selector": "trireme.io/service=simple",
                             "placements": [{"replica": 0, "ready": True,
                                             "pods": [{"name": "simple-0-0", "node": "n1", "gpus": [0, 1]}]}],
                             "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady",
                                             "message": "1/1 ready", "observedGeneration": 2,
                                             "lastTransitionTime": "2025-01-02T03:04:05Z"}]}}, id="status"),
]


@dataclass(frozen=True)
class Invalid:
    """An invalid object: the field the rejection names, and the message when a rule (CEL) rejects it."""

    patch: dict[str, Any]
    field: str
    message: str = ""
    rule: bool = False


INVALID = [
    pytest.param(Invalid(spec(autoscaling={"minReplicas": 3, "maxReplicas": 2}), "spec.autoscaling.minReplicas",
                         "minReplicas must not exceed maxReplicas", rule=True), id="min-above-max"),
    pytest.param(Invalid(spec(autoscaling={"enabled": True, "maxReplicas": DELETE}), "spec.autoscaling.maxReplicas",
                         "maxReplicas is required when enabled", rule=True), id="enabled-without-max"),
    pytest.param(Invalid(spec(autoscaling={"signal": "requestRate", "target": DELETE}), "spec.autoscaling.target",
                         "needs a target", rule=True), id="request-rate-without-target"),
    pytest.param(Invalid(spec(autoscaling={"signal": "gpuUtilization", "target": 150}), "spec.autoscaling.target",
                         "at most 100", rule=True), id="utilization-above-100"),
    pytest.param(Invalid(spec(gpus={"count": 1, "fraction": 0.5}), "spec.gpus",
                         "set exactly one of count, fraction and memory", rule=True), id="count-and-fraction"),
    pytest.param(Invalid(spec(gpus={"count": DELETE, "fraction": 0.5, "memory": "10Gi"}), "spec.gpus",
                         "set exactly one of count, fraction and memory", rule=True), id="fraction-and-memory"),
    pytest.param(Invalid(spec(gpus={"count": DELETE, "products": ["NVIDIA-A100-SXM4-80GB"]}), "spec.gpus",
                         "set exactly one of count, fraction and memory", rule=True), id="no-gpu-amount"),
    pytest.param(Invalid(spec(gpus={"count": 1}, parallelism={"tensorParallel": 2}),
                         "spec.parallelism.tensorParallel", "tensorParallel must not exceed gpus.count", rule=True),
                 id="tensor-parallel-above-count"),
    pytest.param(Invalid(spec(gpus={"count": 3}, parallelism={"pipelineParallel": 2}), "spec.gpus.count",
                         "must be a multiple of tensorParallel × pipelineParallel", rule=True),
                 id="count-not-divisible-by-stages"),
    pytest.param(Invalid(spec(gpus={"count": DELETE, "fraction": 0.5}, parallelism={"tensorParallel": 2}),
                         "spec.parallelism.tensorParallel", "tensorParallel needs whole GPUs", rule=True),
                 id="tensor-parallel-on-shared-gpu"),
    pytest.param(Invalid(spec(priority={"value": 10, "className": "high"}), "spec.priority",
                         "set value or className, not both", rule=True), id="priority-value-and-class"),
    pytest.param(Invalid(spec(dependsOn=["other", "simple"]), "spec.dependsOn",
                         "an InferenceService cannot depend on itself", rule=True), id="depends-on-itself"),
    pytest.param(Invalid(spec(modelRepository={"uri": "http://example.com/models"}), "spec.modelRepository.uri",
                         "must be a local path or a file://, s3://, gs:// or pvc:// URI", rule=True),
                 id="unknown-repository-scheme"),
    pytest.param(Invalid(spec(modelRepository={"uri": "pvc://Not_A_Claim/models"}), "spec.modelRepository.uri",
                         "pvc://<claim name>/<path in the volume>", rule=True), id="bad-claim-name"),
    pytest.param(Invalid(spec(runtime={"env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {}}}]}),
                         "spec.runtime.env[0]", "set value or valueFrom, not both", rule=True),
                 id="env-value-and-value-from"),
    pytest.param(Invalid(spec(scheduling={"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}),
                         "spec.scheduling.tolerations[0].value", "value must be empty when operator is Exists",
                         rule=True), id="toleration-exists-with-value"),
    pytest.param(Invalid(spec(scheduling={"tolerations": [{"value": "v"}]}),
                         "spec.scheduling.tolerations[0].operator",
                         "a toleration without a key must use operator Exists", rule=True),
                 id="toleration-without-key"),
    pytest.param(Invalid(spec(scheduling={"tolerations": [{"key": "k", "tolerationSeconds": 5}]}),
                         "spec.scheduling.tolerations[0].tolerationSeconds", "needs effect NoExecute", rule=True),
                 id="toleration-seconds-without-no-execute"),
    pytest.param(Invalid(spec(scheduling={"policy": "random"}), "spec.scheduling.policy",
                         'Unsupported value: "random"'), id="unknown-policy"),
    pytest.param(Invalid(spec(replicas=-1), "spec.replicas", "should be greater than or equal to 0"),
                 id="negative-replicas"),
    pytest.param(Invalid(spec(replicas=1001), "spec.replicas", "should be less than or equal to 1000"),
                 id="too-many-replicas"),
    pytest.param(Invalid(spec(replicas="3"), "spec.replicas", "must be of type integer"), id="replicas-as-string"),
    pytest.param(Invalid(spec(gpus={"count": 0}), "spec.gpus.count", "should be greater than or equal to 1"),
                 id="zero-gpus"),
    pytest.param(Invalid(spec(gpus={"count": DELETE, "fraction": 1}), "spec.gpus.fraction", "should be less than 1"),
                 id="whole-gpu-as-fraction"),
    pytest.param(Invalid(spec(gpus={"count": DELETE, "memory": "0Gi"}), "spec.gpus.memory", "should match"),
                 id="zero-gpu-memory"),
    pytest.param(Invalid(spec(gpus={"products": ["A100 80GB"]}), "spec.gpus.products[0]", "should match"),
                 id="bad-product-label"),
    pytest.param(Invalid(spec(parallelism={"pipelineParallel": 0}), "spec.parallelism.pipelineParallel",
                         "should be greater than or equal to 1"), id="zero-pipeline-stages"),
    pytest.param(Invalid(spec(models=[]), "spec.models", "should have at least 1 items"), id="no-models"),
    pytest.param(Invalid(spec(models=[{"name": "simple"}, {"name": "simple"}]), "spec.models[1]",
                         "Duplicate value"), id="duplicate-models"),
    pytest.param(Invalid(spec(dependsOn=["a", "a"]), "spec.dependsOn[1]", "Duplicate value"),
                 id="duplicate-dependency"),
    pytest.param(Invalid(spec(dependsOn=["Not_A_Name"]), "spec.dependsOn[0]", "should match"),
                 id="bad-dependency-name"),
    pytest.param(Invalid(spec(modelRepository=DELETE), "spec.modelRepository", "Required value"),
                 id="no-model-repository"),
    pytest.param(Invalid(spec(autoscaling={"signal": "latency"}), "spec.autoscaling.signal", "Unsupported value"),
                 id="unknown-signal"),
    pytest.param(Invalid(spec(disruptionBudget={"maxUnavailable": "150%"}), "spec.disruptionBudget.maxUnavailable",
                         "should match"), id="budget-above-100-percent"),
    pytest.param(Invalid(spec(autoscaling={"behavior": {"scaleUp": {"maxChange": 0}}}),
                         "spec.autoscaling.behavior.scaleUp.maxChange", "should be greater than or equal to 1"),
                 id="zero-max-change"),
    pytest.param(Invalid(spec(runtime={"args": ["-v"] * 65}), "spec.runtime.args", "must have at most 64 items"),
                 id="too-many-args"),
    pytest.param(Invalid(spec(runtime={"resources": {"requests": {"cpu": "-1"}}}),
                         "spec.runtime.resources.requests.cpu", "should match"), id="negative-cpu"),
    pytest.param(Invalid(spec(models=[{"name": "m" * 129}]), "spec.models[0].name", "may not be more than 128"),
                 id="model-name-too-long"),
]


@pytest.fixture(scope="module")
def schema() -> CustomResourceVersion:
    return CustomResourceVersion(crdgen.crd(), api.VERSION)


def schema_fields(schema: CustomResourceVersion, obj: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) of every cause the API server's validation reports; empty when valid."""
    try:
        schema.validate(obj)
    except ApiError as exc:
        return [(c["field"], c["message"]) for c in exc.details.get("causes", [])]
    return []


def model_problems(obj: dict[str, Any]) -> list[api.FieldProblem]:
    try:
        api.InferenceService.from_api(obj)
    except api.InvalidInferenceService as exc:
        assert exc.problems, "an invalid object must come with problems"
        return exc.problems
    return []


# -- valid objects -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("patch", VALID)
def test_valid_objects_pass_the_schema(schema: CustomResourceVersion, patch: dict[str, Any]) -> None:
    assert schema_fields(schema, patched(patch)) == []


@pytest.mark.parametrize("patch", VALID)
def test_valid_objects_parse_with_the_server_defaults(schema: CustomResourceVersion, patch: dict[str, Any]) -> None:
    obj = patched(patch)
    stored = schema.validate(obj)
    parsed = api.InferenceService.from_api(obj)
    assert parsed.to_api() == stored  # the models default exactly what the API server defaults
    assert api.InferenceService.from_api(stored).to_api() == stored  # and read back what it stores


def test_the_example_reads_as_intended() -> None:
    tis = api.InferenceService.from_api(EXAMPLE)
    assert tis.metadata.name == "simple"
    assert [m.name for m in tis.spec.models] == ["simple"]
    assert tis.spec.gpus.count == 1 and not tis.spec.gpus.shared
    assert tis.spec.scheduling.policy is api.Policy.TRIREME
    assert tis.spec.autoscaling.effective_target() == 20
    assert tis.spec.runtime.resources.requests is not None and tis.spec.runtime.resources.requests.memory == "2Gi"
    assert tis.spec.disruption_budget.max_unavailable == 1


@pytest.mark.parametrize("signal, target, expected", [
    pytest.param(api.Signal.QUEUE_TIME, None, api.DEFAULT_TARGETS[api.Signal.QUEUE_TIME], id="queue-time-default"),
    pytest.param(api.Signal.GPU_UTILIZATION, None, 70.0, id="utilization-default"),
    pytest.param(api.Signal.PENDING_REQUESTS, 2.5, 2.5, id="explicit"),
])
def test_effective_target(signal: api.Signal, target: float | None, expected: float) -> None:
    assert api.Autoscaling(signal=signal, target=target).effective_target() == expected


def test_python_names_work_too() -> None:
    gpus = api.Gpus(count=2)
    spec_ = api.InferenceServiceSpec(models=[api.TritonModel(name="m")], model_repository=api.ModelRepository(uri="/m"),
                                     gpus=gpus, parallelism=api.Parallelism(tensor_parallel=2))
    assert spec_.to_api()["parallelism"] == {"tensorParallel": 2, "pipelineParallel": 1}


def test_status_condition_lookup() -> None:
    status = api.InferenceServiceStatus.model_validate(
        {"conditions": [{"type": "Scheduled", "status": "False", "reason": "InsufficientGPUs",
                         "message": "needs 2× A100 on one node; largest free block is 1",
                         "lastTransitionTime": "2025-01-02T03:04:05Z"}]})
    scheduled = status.condition(api.ConditionType.SCHEDULED)
    assert scheduled is not None and scheduled.status is api.ConditionStatus.FALSE
    assert status.condition(api.ConditionType.READY) is None
    assert status.to_api()["conditions"][0]["lastTransitionTime"] == "2025-01-02T03:04:05Z"


# -- invalid objects ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", INVALID)
def test_invalid_objects_are_rejected_by_the_schema_naming_the_field(schema: CustomResourceVersion,
                                                                      case: Invalid) -> None:
    causes = schema_fields(schema, patched(case.patch))
    assert any(field == case.field and case.message in message for field, message in causes), causes


@pytest.mark.parametrize("case", INVALID)
def test_invalid_objects_are_rejected_by_the_models_naming_the_field(case: Invalid) -> None:
    problems = model_problems(patched(case.patch))
    named = [p for p in problems if p.field == case.field]
    assert named, f"expected a problem at {case.field}, got {[str(p) for p in problems]}"
    if case.rule:
        assert any(case.message in p.message for p in named), [str(p) for p in problems]


def test_several_rule_failures_are_all_reported() -> None:
    obj = patched(spec(gpus={"count": 1, "fraction": 0.5}, priority={"value": 1, "className": "x"},
                       scheduling={"tolerations": [{"operator": "Exists", "value": "v", "tolerationSeconds": 1}]}))
    fields = {p.field for p in model_problems(obj)}
    assert fields == {"spec.gpus", "spec.priority", "spec.scheduling.tolerations[0].value",
                      "spec.scheduling.tolerations[0].tolerationSeconds"}


def test_problems_read_as_field_and_message() -> None:
    with pytest.raises(api.InvalidInferenceService) as caught:
        api.InferenceService.from_api(patched(spec(replicas=-1)))
    assert str(caught.value).startswith("spec.replicas: ")


# -- the models and the schema agree on generated objects ------------------------------------------------------

def _mostly(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values nine times in ten, so that single mistakes in otherwise valid objects are common."""
    return st.one_of(*[valid] * 9, invalid)


_GPUS = _mostly(
    st.one_of(st.fixed_dictionaries({"count": st.integers(1, 8)}),
              st.fixed_dictionaries({"fraction": st.sampled_from([0.25, 0.5, 0.999])}),
              st.fixed_dictionaries({"memory": st.sampled_from(["20Gi", "512Mi", "1.5G"])})),
    st.fixed_dictionaries({}, optional={
        "count": st.integers(-1, 9),
        "fraction": st.sampled_from([0.0, 0.5, 1.0, 1.5]),
        "memory": st.sampled_from(["20Gi", "0Gi", "lots"]),
        "products": st.lists(st.sampled_from(["NVIDIA-A100-SXM4-80GB", "Tesla-T4", "bad product"]), max_size=3),
    }))
_REQUIRED = {"models": st.just([{"name": "simple"}]), "modelRepository": st.just({"uri": "/m"})}
_SPEC = st.fixed_dictionaries(_REQUIRED, optional={
    "replicas": _mostly(st.integers(0, 3), st.sampled_from([-1, 1001, "2"])),
    "gpus": _GPUS,
    "parallelism": st.fixed_dictionaries({}, optional={"tensorParallel": _mostly(st.integers(1, 4), st.just(0)),
                                                       "pipelineParallel": _mostly(st.integers(1, 4), st.just(0))}),
    "priority": st.fixed_dictionaries({}, optional={"value": st.integers(-3, 3),
                                                    "className": _mostly(st.just("high"), st.just("Not_Valid")),
                                                    "preemptible": st.booleans()}),
    "dependsOn": _mostly(st.lists(st.sampled_from(["a", "b", "c"]), max_size=3, unique=True),
                         st.lists(st.sampled_from(["a", "self"]), min_size=1, max_size=3)),
    "autoscaling": st.fixed_dictionaries({}, optional={
        "enabled": st.booleans(),
        "minReplicas": _mostly(st.integers(1, 4), st.just(0)),
        "maxReplicas": _mostly(st.integers(1, 4), st.just(0)),
        "signal": _mostly(st.sampled_from(["queueTime", "pendingRequests", "requestRate", "gpuUtilization"]),
                          st.just("latency")),
        "target": _mostly(st.sampled_from([0.5, 50, 100]), st.sampled_from([0, 101.5]))}),
    "disruptionBudget": st.fixed_dictionaries({}, optional={
        "maxUnavailable": _mostly(st.sampled_from([0, 1, "25%", "100%"]), st.sampled_from([-1, "101%", "3"]))}),
})
_BLOCKING = ("Required value", "Unsupported value", "Too long", "Too many", "must be of type")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec_=_SPEC)
def test_models_and_schema_give_the_same_verdict(schema: CustomResourceVersion, spec_: dict[str, Any]) -> None:
    obj = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "self"}, "spec": spec_}
    causes = schema_fields(schema, obj)
    problems = model_problems(obj)
    assert bool(causes) == bool(problems), (causes, [str(p) for p in problems])
    blocked = any(any(b in message for b in _BLOCKING) for _, message in causes)
    if causes and not blocked:
        # every field the models name, the API server names too
        assert {p.field for p in problems} <= {field for field, _ in causes}, (causes, [str(p) for p in problems])


# -- kubectl against the local cluster ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespace(kubectl: Run, installed_crd: str) -> Iterator[str]:
    name = f"api-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.parametrize("case", INVALID)
def test_kubectl_apply_rejects_invalid_objects_naming_the_field(kubectl: Run, namespace: str, case: Invalid) -> None:
    obj = patched(case.patch)
    obj["metadata"]["name"] = "simple"  # the name the self-dependency case refers to
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode != 0, result.stdout
    assert case.field in result.stderr and case.message in result.stderr, result.stderr
    assert "simple" not in kubectl("get", "tis", "-n", namespace, "-o", "name").stdout


@pytest.mark.parametrize("patch", [p for p in VALID if p.id in {"gpu-fraction", "tp2-pp2-on-4", "scheduling",
                                                                 "autoscaling", "runtime", "status"}])
def test_kubectl_apply_accepts_valid_objects(kubectl: Run, namespace: str, patch: dict[str, Any]) -> None:
    obj = patched(patch)
    obj["metadata"]["name"] = f"ok-{uuid.uuid4().hex[:6]}"
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))
    stored = json.loads(kubectl("get", "tis", obj["metadata"]["name"], "-n", namespace, "-o", "json").stdout)
    assert api.InferenceService.from_api(stored).to_api()["spec"] == stored["spec"]
    kubectl("delete", "tis", obj["metadata"]["name"], "-n", namespace)
