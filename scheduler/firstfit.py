"""First-fit placement of whole-GPU pods: the simplest policy that is correct.

A pod goes to the first node, by name, that is ready, schedulable, whose taints it
tolerates, whose labels match its node selector, whose GPU product it accepts and
that has enough free whole GPUs; it gets that node's lowest free GPU indices. When
no node fits, the answer says what is missing in words a user can act on. Later
policies (spread, binpack, fragmentation-aware) keep the same inputs and outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from trireme.scheduler.snapshot import BLOCKING_EFFECTS, Node, Snapshot, Toleration


@dataclass(frozen=True)
class PlacementRequest:
    """What one pod needs: whole GPUs on one node, and where it may go."""

    pod: str
    """``namespace/name`` of the pod."""
    gpus: int
    """Whole GPUs, all on one node."""
    products: tuple[str, ...] = ()
    """Acceptable GPU products (node label nvidia.com/gpu.product); any when empty."""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()


@dataclass(frozen=True)
class Bind:
    """Place the pod on ``node`` using GPUs ``gpu_indices``."""

    node: str
    gpu_indices: tuple[int, ...]


@dataclass(frozen=True)
class Unschedulable:
    """No node fits; ``reason`` says what is missing."""

    reason: str


Decision = Bind | Unschedulable


def place(snapshot: Snapshot, request: PlacementRequest) -> Decision:
    """The first node (by name) that fits ``request`` and its lowest free GPUs, or why none fits."""
    excluded: dict[str, int] = {}
    largest_block = 0
    for node in sorted(snapshot.nodes, key=lambda n: n.name):
        why_not = _excluded_because(node, request)
        if why_not:
            excluded[why_not] = excluded.get(why_not, 0) + 1
            continue
        free = node.free_gpus
        if len(free) >= request.gpus:
            return Bind(node.name, free[:request.gpus])
        largest_block = max(largest_block, len(free))
    return Unschedulable(_reason(request, largest_block, excluded))


def _excluded_because(node: Node, request: PlacementRequest) -> str:
    """Why ``node`` cannot take the pod whatever its free GPUs, or '' when it can."""
    if not node.ready:
        return "not ready"
    if node.unschedulable:
        return "cordoned"
    if any(t.effect in BLOCKING_EFFECTS and not any(tol.tolerates(t) for tol in request.tolerations)
           for t in node.taints):
        return "taint not tolerated"
    if any(node.labels.get(key) != value for key, value in request.node_selector.items()):
        return "node selector does not match"
    if request.gpus and node.gpu_count == 0:
        return "no GPUs"
    if request.products and node.product not in request.products:
        return "other GPU product"
    return ""


def _reason(request: PlacementRequest, largest_block: int, excluded: Mapping[str, int]) -> str:
    product = " or ".join(request.products) if request.products else "GPU"
    message = f"needs {request.gpus}× {product} on one node; largest free block is {largest_block}"
    if excluded:
        details = ", ".join(f"{count} {why}" for why, count in sorted(excluded.items()))
        message += f" (nodes left out: {details})"
    return message
