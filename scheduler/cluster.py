"""The cluster as the placement policies see it: an immutable snapshot of nodes and bound pods.

A scheduling cycle takes one ``ClusterSnapshot`` and decides on it alone, so the same
snapshot always gives the same plan, a plan can be tried on a copy before anything is
bound, and an incident can be replayed from the snapshot's JSON (``to_json`` /
``from_json``) in a test.

A node is its name plus a ``NodeState``: capacities, what is still free (CPU, memory,
pod slots, and each GPU's free share in milli-GPUs, 0..1000), the GPU product and
memory, NVLink islands, labels, taints, readiness. States are values: identical nodes
share one state, so filters and scores are computed once per distinct state and
cached, and placing a pod replaces one node's state instead of copying the cluster.

Every bound pod counts, whichever scheduler placed it: ``cluster_from_objects`` reads
Node and Pod objects as the API server returns them (plain mappings), taking a pod's
GPUs from the ``trireme.io/gpus`` annotation and its share of a GPU from
``serving.trireme.io/gpu-share``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from trireme.scheduler.kube import (
    BLOCKING_EFFECTS, FINISHED_PHASES, GPU_ANNOTATION, GPU_PRODUCT_LABEL, GPU_RESOURCE, Taint, gpu_indices,
    pod_gpu_request)

__all__ = ["BLOCKING_EFFECTS", "DEFAULT_MAX_PODS", "GPU_ANNOTATION", "GPU_MEMORY_LABEL", "GPU_PRODUCT_LABEL",
           "GPU_RESOURCE", "ISLANDS_ANNOTATION", "MAX_GPUS_PER_NODE", "MILLI", "SERVICE_LABEL", "SHARE_ANNOTATION",
           "BoundPod", "ClusterSnapshot", "NodeState", "Taint", "cluster_from_objects", "node_state",
           "parse_cpu_milli", "parse_islands", "parse_memory_mib", "parse_share", "pod_cpu_memory",
           "pod_share_milli"]

MILLI = 1000
"""A whole GPU in milli-GPUs: GPU shares are integers 0..1000."""
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
"""GPU Feature Discovery's label with the memory of one GPU, in MiB."""
ISLANDS_ANNOTATION = "trireme.io/nvlink-islands"
"""Node annotation grouping GPU indices by NVLink: ``"0-3;4-7"`` is two islands of four."""
SHARE_ANNOTATION = "serving.trireme.io/gpu-share"
"""Pod annotation asking for a share of one GPU: a fraction ("0.5") or memory ("10Gi")."""
SERVICE_LABEL = "serving.trireme.io/service"
"""Pod label naming the InferenceService a replica belongs to (spreading replicas reads it)."""
DEFAULT_MAX_PODS = 110
"""The kubelet's default ``--max-pods``, used when a node does not report ``pods``."""
MAX_GPUS_PER_NODE = 256
"""More GPUs than any machine holds: a node reporting more has bad data and is left out."""


@dataclass(frozen=True, eq=False)
class NodeState:
    """Everything about a node that placement depends on, except its name.

    ``gpu_free_milli[i]`` is the free share of GPU ``i`` (1000 = idle). ``islands``
    groups GPU indices joined by NVLink; empty means the node does not say. ``problem``
    is non-empty when the node's own data is unusable (negative or NaN capacity, an
    island naming a GPU that does not exist): such a node is left out, with that reason.
    Equal states compare and hash equal, so identical nodes share cached decisions.
    """

    cpu_milli: int = 0
    memory_mib: int = 0
    max_pods: int = DEFAULT_MAX_PODS
    product: str = ""
    gpu_memory_mib: int = 0
    """Memory of one GPU (all GPUs of a node are one product); 0 when unknown."""
    gpu_free_milli: tuple[int, ...] = ()
    islands: tuple[tuple[int, ...], ...] = ()
    cpu_free_milli: int = 0
    memory_free_mib: int = 0
    pods_free: int = DEFAULT_MAX_PODS
    labels: tuple[tuple[str, str], ...] = ()
    """Sorted (key, value) pairs; ``label(key)`` reads one."""
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    cordoned: bool = False
    problem: str = ""

    def __post_init__(self) -> None:
        # Evaluations of this state by policies, keyed by a policy's token for a request shape.
        # A memo, not part of the value: equality, hashing and JSON ignore it, and it lives as
        # long as the state does.
        object.__setattr__(self, "memo", {})

    def _key(self) -> tuple[Any, ...]:
        cached = self.__dict__.get("_cached_key")
        if cached is None:
            cached = tuple(getattr(self, f.name) for f in fields(self))
            object.__setattr__(self, "_cached_key", cached)
            object.__setattr__(self, "_cached_hash", hash(cached))
        return cached

    def __hash__(self) -> int:
        cached = self.__dict__.get("_cached_hash")
        if cached is None:
            self._key()
            cached = self.__dict__["_cached_hash"]
        return cached

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, NodeState):
            return NotImplemented
        return hash(self) == hash(other) and self._key() == other._key()

    @property
    def gpu_count(self) -> int:
        return len(self.gpu_free_milli)

    @property
    def whole_free_gpus(self) -> int:
        """GPUs no pod holds any share of."""
        return self.gpu_free_milli.count(MILLI)

    def label(self, key: str) -> str | None:
        """The value of label ``key``, or None when the node lacks it."""
        labels = self.__dict__.get("_label_map")
        if labels is None:
            labels = dict(self.labels)
            object.__setattr__(self, "_label_map", labels)
        return labels.get(key)

    def taken(self, gpus: Sequence[int], milli: int, cpu_milli: int, memory_mib: int) -> NodeState:
        """The state after a pod took ``milli`` of each GPU in ``gpus`` plus CPU, memory and one pod slot.

        Raises ValueError when any of it is not free: callers place only what fits."""
        free = list(self.gpu_free_milli)
        for index in gpus:
            if not 0 <= index < len(free) or free[index] < milli:
                raise ValueError(f"GPU {index} has {free[index] if 0 <= index < len(free) else 'no'} "
                                 f"milli-GPUs free, {milli} needed")
            free[index] -= milli
        if cpu_milli > self.cpu_free_milli or memory_mib > self.memory_free_mib or self.pods_free < 1:
            raise ValueError("not enough CPU, memory or pod slots free")
        return replace(self, gpu_free_milli=tuple(free), cpu_free_milli=self.cpu_free_milli - cpu_milli,
                       memory_free_mib=self.memory_free_mib - memory_mib, pods_free=self.pods_free - 1)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["gpu_free_milli"] = list(self.gpu_free_milli)
        data["islands"] = [list(i) for i in self.islands]
        data["labels"] = dict(self.labels)
        data["taints"] = [{"key": t.key, "value": t.value, "effect": t.effect} for t in self.taints]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeState:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["gpu_free_milli"] = tuple(values.get("gpu_free_milli", ()))
        values["islands"] = tuple(tuple(i) for i in values.get("islands", ()))
        values["labels"] = tuple(sorted((values.get("labels") or {}).items()))
        values["taints"] = tuple(Taint(t.get("key", ""), t.get("value", ""), t.get("effect", "NoSchedule"))
                                 for t in values.get("taints", ()))
        return cls(**values)


def node_state(*, gpus: int = 0, product: str = "", gpu_memory_mib: int = 0, cpu_milli: int = 0,
               memory_mib: int = 0, max_pods: int = DEFAULT_MAX_PODS, islands: Sequence[Sequence[int]] = (),
               labels: Mapping[str, str] | None = None, taints: Sequence[Taint] = (), ready: bool = True,
               cordoned: bool = False) -> NodeState:
    """An empty node's state from its capacities, checking them: bad values set ``problem``."""
    problem = _capacity_problem(gpus=gpus, gpu_memory_mib=gpu_memory_mib, cpu_milli=cpu_milli,
                                memory_mib=memory_mib, max_pods=max_pods, islands=islands)
    if problem:
        gpus, cpu_milli, memory_mib, max_pods, islands = 0, 0, 0, 0, ()
    return NodeState(cpu_milli=int(cpu_milli), memory_mib=int(memory_mib), max_pods=int(max_pods),
                     product=product, gpu_memory_mib=int(gpu_memory_mib) if not problem else 0,
                     gpu_free_milli=(MILLI,) * int(gpus), islands=tuple(tuple(i) for i in islands),
                     cpu_free_milli=int(cpu_milli), memory_free_mib=int(memory_mib), pods_free=int(max_pods),
                     labels=tuple(sorted((labels or {}).items())), taints=tuple(taints), ready=ready,
                     cordoned=cordoned, problem=problem)


def _capacity_problem(**values: Any) -> str:
    islands = values.pop("islands")
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
                or math.isinf(value) or value < 0:
            return f"bad capacity {name}={value!r}"
        if value != int(value):
            return f"bad capacity {name}={value!r}"
    if values["gpus"] > MAX_GPUS_PER_NODE:
        return f"bad capacity gpus={values['gpus']!r}"
    seen = [i for island in islands for i in island]
    if any(not 0 <= i < values["gpus"] for i in seen) or len(seen) != len(set(seen)):
        return f"bad NVLink islands {[list(i) for i in islands]} for {values['gpus']} GPUs"
    return ""


@dataclass(frozen=True)
class BoundPod:
    """A pod that holds resources on a node: ``gpu_milli`` of each GPU in ``gpu_indices``."""

    pod: str
    node: str
    gpu_indices: tuple[int, ...] = ()
    gpu_milli: int = 0
    cpu_milli: int = 0
    memory_mib: int = 0
    service: str = ""
    """The InferenceService the pod is a replica of, for spreading replicas; '' for others."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BoundPod:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["gpu_indices"] = tuple(values.get("gpu_indices", ()))
        return cls(**values)


@dataclass(frozen=True)
class ClusterSnapshot:
    """Nodes by name and the pods bound to them.

    Build one with ``ClusterSnapshot.of``; ``with_bound`` returns the snapshot after one
    more pod is bound (one node's state replaced, the rest shared). ``groups`` maps each
    distinct node state to the sorted names of the nodes in it: policies evaluate a
    state once and break ties by the first name.
    """

    states: Mapping[str, NodeState]
    bound: tuple[BoundPod, ...] = ()
    groups: Mapping[NodeState, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, states: Mapping[str, NodeState], bound: Iterable[BoundPod] = ()) -> ClusterSnapshot:
        names = sorted(states)
        groups: dict[NodeState, list[str]] = {}
        for name in names:
            groups.setdefault(states[name], []).append(name)
        return cls({name: states[name] for name in names}, tuple(bound),
                   {state: tuple(members) for state, members in groups.items()})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.states)

    def with_bound(self, pod: BoundPod) -> ClusterSnapshot:
        """The snapshot after ``pod`` took its resources; ValueError when they are not free."""
        old = self.states.get(pod.node)
        if old is None:
            raise ValueError(f"node {pod.node} does not exist")
        new = old.taken(pod.gpu_indices, pod.gpu_milli, pod.cpu_milli, pod.memory_mib)
        states = dict(self.states)
        states[pod.node] = new
        groups = dict(self.groups)
        members = groups[old]
        if len(members) == 1:
            del groups[old]
        else:
            position = bisect.bisect_left(members, pod.node)
            groups[old] = members[:position] + members[position + 1:]
        joined = groups.get(new)
        if joined is None:
            groups[new] = (pod.node,)
        else:
            position = bisect.bisect_left(joined, pod.node)
            groups[new] = joined[:position] + (pod.node,) + joined[position:]
        return ClusterSnapshot(states, self.bound + (pod,), groups)

    def to_json(self) -> dict[str, Any]:
        """Plain data (``json.dumps``-able) that ``from_json`` turns back into an equal snapshot."""
        return {"nodes": [{"name": name, **state.to_json()} for name, state in self.states.items()],
                "bound": [pod.to_json() for pod in self.bound]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClusterSnapshot:
        states = {node["name"]: NodeState.from_json(node) for node in data.get("nodes", ())}
        return cls.of(states, (BoundPod.from_json(pod) for pod in data.get("bound", ())))


# --- from API objects -----------------------------------------------------------------


def cluster_from_objects(nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> ClusterSnapshot:
    """A snapshot from Node and Pod objects (API mappings).

    Pods that are finished or unbound hold nothing. A bound pod holds its CPU and memory
    requests, and GPUs: the indices of its ``trireme.io/gpus`` annotation, or the lowest
    free whole GPUs of its ``nvidia.com/gpu`` request when it has none. A pod with a
    ``serving.trireme.io/gpu-share`` annotation holds that share of its one GPU. A pod
    whose resources no longer fit (the node shrank) is still counted, clamped at zero
    free, so nothing is handed out twice.
    """
    by_node: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name and (pod.get("status") or {}).get("phase") not in FINISHED_PHASES:
            by_node.setdefault(node_name, []).append(pod)
    states: dict[str, NodeState] = {}
    bound: list[BoundPod] = []
    for obj in nodes:
        name = obj["metadata"]["name"]
        state, held = _node_with_pods(obj, sorted(by_node.get(name, []), key=_pod_key))
        states[name] = state
        bound.extend(held)
    return ClusterSnapshot.of(states, bound)


def _node_with_pods(obj: Mapping[str, Any], pods: list[Mapping[str, Any]]) -> tuple[NodeState, list[BoundPod]]:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    annotations = meta.get("annotations") or {}
    allocatable = status.get("allocatable") or status.get("capacity") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    taints = tuple(Taint(t.get("key", ""), t.get("value") or "", t.get("effect", "NoSchedule"))
                   for t in spec.get("taints") or [])
    gpus = _number(allocatable.get(GPU_RESOURCE, 0))
    islands_text = annotations.get(ISLANDS_ANNOTATION) or labels.get(ISLANDS_ANNOTATION) or ""
    islands = parse_islands(islands_text)
    state = node_state(
        gpus=gpus, product=labels.get(GPU_PRODUCT_LABEL, ""), gpu_memory_mib=_number(labels.get(GPU_MEMORY_LABEL, 0)),
        cpu_milli=parse_cpu_milli(allocatable.get("cpu", 0)), memory_mib=parse_memory_mib(allocatable.get("memory", 0)),
        max_pods=_number(allocatable.get("pods", DEFAULT_MAX_PODS)), islands=islands if islands is not None else (),
        labels=labels, taints=taints, ready=ready, cordoned=bool(spec.get("unschedulable")))
    if islands is None and not state.problem:
        state = replace(state, problem=f"bad NVLink islands annotation {islands_text!r}")
    free = list(state.gpu_free_milli)
    held: list[BoundPod] = []
    pending: list[tuple[Mapping[str, Any], int]] = []
    cpu = memory = 0
    for pod in pods:
        cpu_milli, memory_mib = pod_cpu_memory(pod)
        cpu, memory = cpu + cpu_milli, memory + memory_mib
        share = pod_share_milli(pod, state.gpu_memory_mib)
        indices = tuple(i for i in gpu_indices(_annotations(pod).get(GPU_ANNOTATION, "")) if 0 <= i < len(free))
        count = 1 if share else pod_gpu_request(pod)
        if count and not indices:
            pending.append((pod, count))
            continue
        milli = share or MILLI
        for i in indices:
            free[i] = max(0, free[i] - milli)
        held.append(BoundPod(_pod_key(pod), meta["name"], indices, milli if indices else 0, cpu_milli, memory_mib,
                             _service(pod)))
    for pod, count in pending:  # unannotated GPU pods: the emptiest GPUs, lowest index first
        share = pod_share_milli(pod, state.gpu_memory_mib)
        milli = share or MILLI
        order = sorted(range(len(free)), key=lambda i: (-free[i], i))[:count]
        for i in order:
            free[i] = max(0, free[i] - milli)
        cpu_milli, memory_mib = pod_cpu_memory(pod)
        held.append(BoundPod(_pod_key(pod), meta["name"], tuple(sorted(order)), milli, cpu_milli, memory_mib,
                             _service(pod)))
    state = replace(state, gpu_free_milli=tuple(free), cpu_free_milli=max(0, state.cpu_milli - cpu),
                    memory_free_mib=max(0, state.memory_mib - memory),
                    pods_free=max(0, state.max_pods - len(pods)))
    return state, held


def pod_cpu_memory(pod: Mapping[str, Any]) -> tuple[int, int]:
    """CPU (milli) and memory (MiB) a pod requests: the sum over containers, or the larger init container."""
    spec = pod.get("spec") or {}

    def requested(container: Mapping[str, Any]) -> tuple[int, int]:
        resources = container.get("resources") or {}
        values = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        return parse_cpu_milli(values.get("cpu", 0)), parse_memory_mib(values.get("memory", 0))

    main = [requested(c) for c in spec.get("containers") or []]
    init = [requested(c) for c in spec.get("initContainers") or []]
    cpu, memory = sum(c for c, _ in main), sum(m for _, m in main)
    return max([cpu, *(c for c, _ in init)]), max([memory, *(m for _, m in init)])


def pod_share_milli(pod: Mapping[str, Any], gpu_memory_mib: int) -> int:
    """The share of one GPU a pod holds, from ``serving.trireme.io/gpu-share``; 0 when it asks for none."""
    text = _annotations(pod).get(SHARE_ANNOTATION, "")
    milli, memory = parse_share(text)
    if memory:
        return min(MILLI, math.ceil(memory * MILLI / gpu_memory_mib)) if gpu_memory_mib > 0 else MILLI
    return milli


def parse_share(text: str) -> tuple[int, int]:
    """A share of one GPU: ``"0.5"`` -> (500, 0) milli-GPUs, ``"10Gi"`` -> (0, 10240) MiB; (0, 0) when empty/bad."""
    text = str(text or "").strip()
    if not text:
        return 0, 0
    try:
        value = float(text)
    except ValueError:
        memory = parse_memory_mib(text)
        return (0, memory) if memory > 0 else (0, 0)
    if not 0 < value <= 1 or math.isnan(value):
        return 0, 0
    return max(1, round(value * MILLI)), 0


_CPU_SUFFIX = {"m": 1, "": 1000, "k": 1_000_000}
_MEMORY_SUFFIX = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "Ki": 2**10, "Mi": 2**20,
                  "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "m": 1e-3}


def parse_cpu_milli(quantity: Any) -> int:
    """Milli-CPUs of a CPU quantity (``"500m"`` -> 500, ``2`` -> 2000); -1 when malformed."""
    number, suffix = _split_quantity(quantity)
    if number is None or suffix not in _CPU_SUFFIX:
        return -1
    return math.ceil(number * _CPU_SUFFIX[suffix])


def parse_memory_mib(quantity: Any) -> int:
    """MiB of a memory quantity, rounded up (``"10Gi"`` -> 10240); -1 when malformed."""
    number, suffix = _split_quantity(quantity)
    if number is None or suffix not in _MEMORY_SUFFIX:
        return -1
    return math.ceil(number * _MEMORY_SUFFIX[suffix] / 2**20)


def _split_quantity(quantity: Any) -> tuple[float | None, str]:
    if isinstance(quantity, bool):
        return None, ""
    if isinstance(quantity, (int, float)):
        return (float(quantity), "") if math.isfinite(quantity) and quantity >= 0 else (None, "")
    text = str(quantity).strip()
    end = len(text)
    while end and text[end - 1].isalpha():
        end -= 1
    try:
        number = float(text[:end])
    except ValueError:
        return None, ""
    if not math.isfinite(number) or number < 0:
        return None, ""
    return number, text[end:]


def parse_islands(text: str) -> tuple[tuple[int, ...], ...] | None:
    """NVLink islands from ``"0-3;4-7"``; () when empty, None when malformed."""
    text = (text or "").strip()
    if not text:
        return ()
    islands = []
    try:
        for part in text.split(";"):
            island: list[int] = []
            for item in part.split(","):
                low, _, high = item.strip().partition("-")
                first, last = int(low), int(high or low)
                if last < first:
                    return None
                island.extend(range(first, last + 1))
            islands.append(tuple(island))
    except ValueError:
        return None
    return tuple(islands)


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return pod["metadata"].get("annotations") or {}


def _service(pod: Mapping[str, Any]) -> str:
    return (pod["metadata"].get("labels") or {}).get(SERVICE_LABEL, "")


def _pod_key(pod: Mapping[str, Any]) -> str:
    return f"{pod['metadata'].get('namespace', '')}/{pod['metadata']['name']}"


def _number(value: Any) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -1
    return int(number) if math.isfinite(number) and number == int(number) else -1
