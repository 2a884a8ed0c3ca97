"""What a pod (or a gang of pods) asks of the scheduler, as plain immutable data.

A ``PodRequest`` says how much CPU, memory and GPU one pod needs (whole GPUs, or a
share of one GPU as milli-GPUs or memory), which GPU products it accepts, where it may
go (node selector, required node affinity, tolerations), whether replicas of its
service should spread over nodes, and whether its GPUs must share one NVLink island
(tensor parallelism). A ``Gang`` is the pods of one pipeline-parallel replica, placed
all together or not at all. ``request_from_pod`` reads a Pod object (API mapping).

``shape`` is the part of a request that placement depends on apart from the pod's
identity: requests with one shape get one cached evaluation per node state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from trireme.scheduler.cluster import (
    MILLI, SERVICE_LABEL, SHARE_ANNOTATION, NodeState, parse_share, pod_cpu_memory)
from trireme.scheduler.kube import BLOCKING_EFFECTS, Toleration, pod_gpu_request

PRODUCTS_ANNOTATION = "serving.trireme.io/gpu-products"
"""Pod annotation listing the GPU products it accepts, comma-separated."""
ZONE_LABEL = "topology.kubernetes.io/zone"
RACK_LABEL = "topology.trireme.io/rack"
NODE_SELECTOR_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"})


@dataclass(frozen=True)
class Requirement:
    """One node selector requirement (``matchExpressions`` item) with the Kubernetes semantics."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, node: NodeState) -> bool:
        value = node.label(self.key)
        if self.operator == "In":
            return value is not None and value in self.values
        if self.operator == "NotIn":
            return value is None or value not in self.values
        if self.operator == "Exists":
            return value is not None
        if self.operator == "DoesNotExist":
            return value is None
        if self.operator in ("Gt", "Lt") and value is not None and len(self.values) == 1:
            try:
                have, bound = int(value), int(self.values[0])
            except ValueError:
                return False
            return have > bound if self.operator == "Gt" else have < bound
        return False


@dataclass(frozen=True)
class NodeSelectorTerm:
    """Requirements that must all hold; a node matches required affinity when any term matches."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, node: NodeState) -> bool:
        return all(r.matches(node) for r in self.requirements)


@dataclass(frozen=True)
class PodRequest:
    """What one pod needs.

    GPUs: ``gpus`` whole GPUs on one node, or one GPU's share: ``gpu_milli`` (1..1000)
    or ``gpu_memory_mib`` (converted per node with its GPU memory). ``tensor_parallel``
    greater than 1 asks that the pod's GPUs, in groups of that many, lie each group in one
    NVLink island on nodes that declare islands (``gpus`` must be a multiple of it; equal to
    it, every GPU of the pod is in one island). ``spread`` keeps this pod off nodes that
    already run a replica of ``service``.
    """

    pod: str
    cpu_milli: int = 0
    memory_mib: int = 0
    gpus: int = 0
    gpu_milli: int = 0
    gpu_memory_mib: int = 0
    products: tuple[str, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    affinity: tuple[NodeSelectorTerm, ...] = ()
    """Required node affinity: the node must match one of these terms (none = any node)."""
    tolerations: tuple[Toleration, ...] = ()
    service: str = ""
    spread: bool = False
    tensor_parallel: int = 1
    priority: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.node_selector, Mapping):
            object.__setattr__(self, "node_selector", tuple(sorted(self.node_selector.items())))
        for name in ("products", "affinity", "tolerations"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    @cached_property
    def shape(self) -> tuple[Any, ...]:
        """Everything but the pod's identity: equal shapes get equal evaluations on equal nodes."""
        return (self.cpu_milli, self.memory_mib, self.gpus, self.gpu_milli, self.gpu_memory_mib, self.products,
                self.node_selector, self.affinity, self.tolerations, self.tensor_parallel)

    @property
    def shared(self) -> bool:
        """Whether the pod asks for a share of one GPU rather than whole GPUs."""
        return bool(self.gpu_milli or self.gpu_memory_mib) and self.gpus <= 1

    def gpus_needed(self) -> int:
        """How many GPUs the pod touches: 1 for a share, else ``gpus``."""
        return 1 if self.shared else self.gpus

    def milli_on(self, node: NodeState) -> int:
        """Milli-GPUs the pod takes from each of its GPUs on ``node``; above 1000 when it cannot fit there."""
        if self.gpu_memory_mib:
            if node.gpu_memory_mib <= 0:
                return MILLI + 1
            return -(-self.gpu_memory_mib * MILLI // node.gpu_memory_mib)
        if self.gpu_milli:
            return self.gpu_milli
        return MILLI if self.gpus else 0

    def problem(self) -> str:
        """Why the request itself cannot be satisfied anywhere, or ''."""
        numbers = {"cpu": self.cpu_milli, "memory": self.memory_mib, "gpus": self.gpus,
                   "gpu share": self.gpu_milli, "gpu memory": self.gpu_memory_mib}
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return f"bad request: {name} {value!r}"
        if isinstance(self.tensor_parallel, bool) or not isinstance(self.tensor_parallel, int) \
                or self.tensor_parallel < 1:
            return f"bad request: tensor parallel degree {self.tensor_parallel!r}"
        if self.gpu_milli > MILLI:
            return f"bad request: a GPU share of {self.gpu_milli} milli-GPUs is more than one GPU"
        if (self.gpu_milli or self.gpu_memory_mib) and self.gpus > 1:
            return "bad request: a share of a GPU and several whole GPUs at once"
        if self.gpu_milli and self.gpu_memory_mib:
            return "bad request: a GPU share both as a fraction and as memory"
        if self.tensor_parallel > 1 and self.gpus % self.tensor_parallel:
            return f"bad request: tensor parallel degree {self.tensor_parallel} with {self.gpus} GPUs"
        if any(r.operator not in NODE_SELECTOR_OPERATORS for t in self.affinity for r in t.requirements):
            return "bad request: unknown node affinity operator"
        return ""

    def tolerates(self, node: NodeState) -> bool:
        return all(t.effect not in BLOCKING_EFFECTS or any(tol.tolerates(t) for tol in self.tolerations)
                   for t in node.taints)

    def describe(self) -> str:
        """The GPU part of the request in words: ``2× A100``, ``0.5 of a GPU``."""
        product = " or ".join(self.products) if self.products else "GPU"
        if self.gpu_memory_mib:
            return f"{self.gpu_memory_mib} MiB of one {product}"
        if self.gpu_milli and self.gpu_milli < MILLI:
            return f"{self.gpu_milli / MILLI:g} of one {product}"
        if self.gpus or self.gpu_milli:
            return f"{max(self.gpus, 1)}× {product}"
        return "no GPU"


@dataclass(frozen=True)
class Gang:
    """Pods placed all together or not at all (one pipeline-parallel replica).

    The gang goes on as few nodes as it can, preferring nodes that share a value of
    one of ``topology_keys`` (tried in order), then any nodes.
    """

    name: str
    members: tuple[PodRequest, ...]
    topology_keys: tuple[str, ...] = (RACK_LABEL, ZONE_LABEL)

    def __post_init__(self) -> None:
        if not isinstance(self.members, tuple):
            object.__setattr__(self, "members", tuple(self.members))


Request = PodRequest | Gang


def request_from_pod(pod: Mapping[str, Any], *, spread: bool = False, tensor_parallel: bool | int = False
                     ) -> PodRequest:
    """What a Pod object (API mapping) asks for.

    CPU and memory from container requests; whole GPUs from ``nvidia.com/gpu``; a GPU
    share from ``serving.trireme.io/gpu-share``; products from
    ``serving.trireme.io/gpu-products``; node selector, required node affinity and
    tolerations from the spec; the service from ``serving.trireme.io/service``.
    ``tensor_parallel`` asks for the pod's GPUs in NVLink islands: True for all of them in one
    island, a degree for groups of that many GPUs, each group in one island (a pod may hold several
    tensor-parallel groups).
    """
    meta, spec = pod["metadata"], pod.get("spec") or {}
    annotations = meta.get("annotations") or {}
    cpu_milli, memory_mib = pod_cpu_memory(pod)
    share_milli, share_memory = parse_share(annotations.get(SHARE_ANNOTATION, ""))
    gpus = pod_gpu_request(pod)
    if share_milli or share_memory:
        gpus = 1
    products = tuple(p.strip() for p in annotations.get(PRODUCTS_ANNOTATION, "").split(",") if p.strip())
    tolerations = tuple(Toleration(t.get("key") or "", t.get("operator") or "Equal", t.get("value") or "",
                                   t.get("effect") or "") for t in spec.get("tolerations") or [])
    node_affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {})
    required = (node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = tuple(NodeSelectorTerm(tuple(Requirement(e.get("key", ""), e.get("operator", ""),
                                                     tuple(str(v) for v in e.get("values") or ()))
                                         for e in term.get("matchExpressions") or ()))
                  for term in required.get("nodeSelectorTerms") or ())
    return PodRequest(
        pod=f"{meta.get('namespace', '')}/{meta['name']}", cpu_milli=max(cpu_milli, -1), memory_mib=memory_mib,
        gpus=gpus, gpu_milli=share_milli, gpu_memory_mib=share_memory, products=products,
        node_selector=tuple(sorted((spec.get("nodeSelector") or {}).items())), affinity=terms,
        tolerations=tolerations, service=(meta.get("labels") or {}).get(SERVICE_LABEL, ""), spread=spread,
        tensor_parallel=_tensor_parallel(tensor_parallel, gpus), priority=int(spec.get("priority") or 0))


def _tensor_parallel(wanted: bool | int, gpus: int) -> int:
    """The GPUs of one tensor-parallel group: all of the pod's for True, else the degree asked for."""
    degree = gpus if wanted is True else int(wanted)
    return degree if degree > 1 and gpus > 1 else 1


def gang_from_pods(name: str, pods: Sequence[Mapping[str, Any]], **kwargs: Any) -> Gang:
    """A gang of the given Pod objects (one pipeline-parallel replica's stages)."""
    return Gang(name, tuple(request_from_pod(p, **kwargs) for p in pods))


__all__ = ["Gang", "NodeSelectorTerm", "PodRequest", "Request", "Requirement", "gang_from_pods",
           "request_from_pod", "RACK_LABEL", "ZONE_LABEL", "PRODUCTS_ANNOTATION"]
