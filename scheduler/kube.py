"""The Kubernetes vocabulary the scheduler reads: resource and label names, taints and
tolerations with their matching rules, and the GPU indices a pod holds.

``cluster.py`` builds the scheduler's snapshot from Node and Pod objects with these;
the operator writes the same annotation when it binds a pod. Nothing here talks to a
cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
