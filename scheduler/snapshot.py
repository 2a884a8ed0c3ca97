"""An immutable picture of the cluster's GPU nodes, taken once per scheduling cycle.

Placement decisions are made on this snapshot, never on live objects: the same
snapshot gives the same decision, a decision can be simulated on a copy
(``with_pod``) before it is acted on, and tests build snapshots from plain data.
Every pod bound to a node counts, whichever scheduler placed it, so GPUs taken by
other workloads are never handed out twice.

``snapshot_from_objects`` reads nodes and pods as the API server returns them
(plain mappings); nothing here talks to a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_ANNOTATION = "trireme.io/gpus"
"""Pod annotation with the node's GPU indices the pod uses ("0,1"), set at binding."""
BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
"""Taint effects that keep pods without a matching toleration off a node."""
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class Taint:
    """A node taint."""

    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True)
class Toleration:
    """A pod toleration, with the Kubernetes matching rules."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        """Whether this toleration matches ``taint``."""
        if self.effect and self.effect != taint.effect:
            return False
        if not self.key:
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


@dataclass(frozen=True)
class Node:
    """One node as the scheduler sees it. ``used`` maps each taken GPU index to the pod holding it
    (``namespace/name``)."""

    name: str
    gpu_count: int = 0
    product: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False
    ready: bool = True
    used: Mapping[int, str] = field(default_factory=dict)

    @property
    def free_gpus(self) -> tuple[int, ...]:
        """Indices of the GPUs no pod holds, in ascending order."""
        return tuple(i for i in range(self.gpu_count) if i not in self.used)


@dataclass(frozen=True)
class Snapshot:
    """The nodes of the cluster, sorted by name."""

    nodes: tuple[Node, ...] = ()

    def node(self, name: str) -> Node | None:
        """The node called ``name``, if it exists."""
        return next((n for n in self.nodes if n.name == name), None)

    def with_pod(self, node_name: str, pod: str, gpus: Iterable[int]) -> Snapshot:
        """The snapshot after ``pod`` took ``gpus`` on ``node_name``; raises ValueError when one is taken."""
        nodes = []
        for node in self.nodes:
            if node.name == node_name:
                wanted = tuple(gpus)
                clash = [i for i in wanted if i in node.used or not 0 <= i < node.gpu_count]
                if clash:
                    raise ValueError(f"GPUs {clash} of node {node_name} are taken or do not exist")
                node = replace(node, used={**node.used, **{i: pod for i in wanted}})
            nodes.append(node)
        return Snapshot(tuple(nodes))


def snapshot_from_objects(nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> Snapshot:
    """A snapshot from Node and Pod objects (API mappings). Pods that are finished or unbound hold no
    GPUs; a bound pod without a GPU annotation holds the lowest free indices of its GPU request."""
    by_node: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name and (pod.get("status") or {}).get("phase") not in FINISHED_PHASES:
            by_node.setdefault(node_name, []).append(pod)
    built = [_node_from_object(obj, by_node.get(obj["metadata"]["name"], [])) for obj in nodes]
    return Snapshot(tuple(sorted(built, key=lambda n: n.name)))


def _node_from_object(obj: Mapping[str, Any], pods: list[Mapping[str, Any]]) -> Node:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    labels = dict(meta.get("labels") or {})
    allocatable = status.get("allocatable") or status.get("capacity") or {}
    gpu_count = _int(allocatable.get(GPU_RESOURCE, 0))
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    taints = tuple(Taint(t.get("key", ""), t.get("value") or "", t.get("effect", "NoSchedule"))
                   for t in spec.get("taints") or [])
    used: dict[int, str] = {}
    unannotated: list[tuple[str, int]] = []
    for pod in sorted(pods, key=_pod_key):
        indices = gpu_indices((pod["metadata"].get("annotations") or {}).get(GPU_ANNOTATION, ""))
        if indices:
            used.update({i: _pod_key(pod) for i in indices if 0 <= i < gpu_count})
        elif pod_gpu_request(pod):
            unannotated.append((_pod_key(pod), pod_gpu_request(pod)))
    for key, count in unannotated:
        free = [i for i in range(gpu_count) if i not in used][:count]
        used.update({i: key for i in free})
    return Node(name=meta["name"], gpu_count=gpu_count, product=labels.get(GPU_PRODUCT_LABEL, ""), labels=labels,
                taints=taints, unschedulable=bool(spec.get("unschedulable")), ready=ready, used=used)


def gpu_indices(annotation: str) -> tuple[int, ...]:
    """GPU indices from a ``trireme.io/gpus`` annotation ("0,1"); empty when absent or malformed."""
    try:
        return tuple(int(part) for part in annotation.split(",") if part.strip())
    except ValueError:
        return ()


def pod_gpu_request(pod: Mapping[str, Any]) -> int:
    """Whole GPUs a pod asks for: the sum over its containers of the nvidia.com/gpu limit (or request)."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("limits") or {}).get(GPU_RESOURCE) or (resources.get("requests") or {}).get(GPU_RESOURCE)
        total += _int(value or 0)
    return total


def _pod_key(pod: Mapping[str, Any]) -> str:
    return f"{pod['metadata'].get('namespace', '')}/{pod['metadata']['name']}"


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
