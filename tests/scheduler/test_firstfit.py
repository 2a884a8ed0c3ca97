"""First-fit placement: which node and GPUs a pod gets, why it gets none, and that no GPU
is ever handed out twice."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trireme.scheduler.firstfit import Bind, PlacementRequest, Unschedulable, place
from trireme.scheduler.snapshot import Node, Snapshot, Taint, Toleration, snapshot_from_objects

A100 = "NVIDIA-A100-SXM4-80GB"
T4 = "Tesla-T4"


def node(name: str, gpus: int = 8, product: str = A100, **kw: object) -> Node:
    labels = {"nvidia.com/gpu.product": product, **kw.pop("labels", {})}  # type: ignore[dict-item]
    return Node(name=name, gpu_count=gpus, product=product, labels=labels, **kw)  # type: ignore[arg-type]


def req(gpus: int = 1, **kw: object) -> PlacementRequest:
    return PlacementRequest(pod="ns/p", gpus=gpus, **kw)  # type: ignore[arg-type]


CASES = [
    ("first-node-by-name", [node("b"), node("a")], req(2), Bind("a", (0, 1))),
    ("lowest-free-indices", [node("a", used={0: "x/y", 2: "x/z"})], req(2), Bind("a", (1, 3))),
    ("skips-full-node", [node("a", gpus=2, used={0: "x/y"}), node("b", gpus=2)], req(2), Bind("b", (0, 1))),
    ("skips-not-ready", [node("a", ready=False), node("b")], req(1), Bind("b", (0,))),
    ("skips-cordoned", [node("a", unschedulable=True), node("b")], req(1), Bind("b", (0,))),
    ("skips-tainted", [node("a", taints=(Taint("gpu", "x", "NoSchedule"),)), node("b")], req(1), Bind("b", (0,))),
    ("prefer-no-schedule-is-soft", [node("a", taints=(Taint("gpu", "x", "PreferNoSchedule"),))], req(1),
     Bind("a", (0,))),
    ("toleration-equal", [node("a", taints=(Taint("gpu", "x", "NoSchedule"),))],
     req(1, tolerations=(Toleration("gpu", "Equal", "x"),)), Bind("a", (0,))),
    ("toleration-exists-all", [node("a", taints=(Taint("gpu", "x", "NoExecute"),))],
     req(1, tolerations=(Toleration(operator="Exists"),)), Bind("a", (0,))),
    ("toleration-wrong-effect", [node("a", taints=(Taint("gpu", "x", "NoExecute"),))],
     req(1, tolerations=(Toleration("gpu", "Exists", effect="NoSchedule"),)),
     Unschedulable("needs 1× GPU on one node; largest free block is 0 (nodes left out: 1 taint not tolerated)")),
    ("node-selector", [node("a"), node("b", labels={"pool": "x"})], req(1, node_selector={"pool": "x"}),
     Bind("b", (0,))),
    ("product-filter", [node("a", product=T4), node("b")], req(1, products=(A100,)), Bind("b", (0,))),
    ("no-gpus-needed", [node("a", gpus=0, product="")], req(0), Bind("a", ())),
    ("largest-free-block", [node("a", gpus=2, used={0: "x/y"}), node("b", gpus=2, used={1: "x/z"})],
     req(2, products=(A100,)), Unschedulable(f"needs 2× {A100} on one node; largest free block is 1")),
    ("names-left-out-nodes", [node("a", product=T4), node("b", ready=False), node("c", gpus=1)],
     req(2, products=(A100,)), Unschedulable(
         f"needs 2× {A100} on one node; largest free block is 1 (nodes left out: 1 not ready, 1 other GPU product)")),
    ("empty-cluster", [], req(1), Unschedulable("needs 1× GPU on one node; largest free block is 0")),
]


@pytest.mark.parametrize(("nodes", "request_", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_place(nodes: list[Node], request_: PlacementRequest, expected: object) -> None:
    assert place(Snapshot(tuple(nodes)), request_) == expected


def _node_object(name: str, gpus: int, ready: bool = True) -> dict:
    return {"metadata": {"name": name, "labels": {"nvidia.com/gpu.product": A100}},
            "spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus)},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def _pod_object(name: str, node_name: str | None, gpus: int, annotation: str | None = None,
                phase: str = "Running") -> dict:
    meta = {"name": name, "namespace": "ns", "annotations": {"trireme.io/gpus": annotation} if annotation else {}}
    return {"metadata": meta, "spec": {"nodeName": node_name, "containers": [
        {"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}, "status": {"phase": phase}}


OBJECT_CASES = [
    ("annotated", [_pod_object("p", "n", 2, "1,3")], {1: "ns/p", 3: "ns/p"}),
    ("unannotated-takes-lowest", [_pod_object("a", "n", 1, "0"), _pod_object("b", "n", 2)],
     {0: "ns/a", 1: "ns/b", 2: "ns/b"}),
    ("unbound-holds-nothing", [_pod_object("p", None, 2)], {}),
    ("finished-holds-nothing", [_pod_object("p", "n", 2, "0,1", phase="Succeeded")], {}),
    ("other-node", [_pod_object("p", "m", 2, "0,1")], {}),
    ("malformed-annotation", [_pod_object("p", "n", 1, "zero")], {0: "ns/p"}),
]


@pytest.mark.parametrize(("pods", "used"), [c[1:] for c in OBJECT_CASES], ids=[c[0] for c in OBJECT_CASES])
def test_snapshot_counts_every_bound_pod(pods: list[dict], used: dict[int, str]) -> None:
    snap = snapshot_from_objects([_node_object("n", 4)], pods)
    (only,) = snap.nodes
    assert dict(only.used) == used
    assert (only.gpu_count, only.product, only.ready, only.taints) == (4, A100, True, (Taint("k", "v"),))


def test_with_pod_refuses_a_taken_gpu() -> None:
    snap = Snapshot((node("a", gpus=2, used={0: "x/y"}),))
    with pytest.raises(ValueError, match="taken"):
        snap.with_pod("a", "x/z", (0,))


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(0, 8), min_size=1, max_size=5),
       requests=st.lists(st.integers(0, 5), max_size=25))
def test_no_gpu_is_ever_assigned_twice(sizes: list[int], requests: list[int]) -> None:
    snap = Snapshot(tuple(node(f"n{i}", gpus=size) for i, size in enumerate(sizes)))
    assigned: set[tuple[str, int]] = set()
    for number, gpus in enumerate(requests):
        decision = place(snap, PlacementRequest(pod=f"ns/p{number}", gpus=gpus))
        if isinstance(decision, Unschedulable):
            assert all(len(n.free_gpus) < gpus for n in snap.nodes)
            continue
        assert len(decision.gpu_indices) == gpus
        taken = {(decision.node, i) for i in decision.gpu_indices}
        assert not taken & assigned
        assigned |= taken
        snap = snap.with_pod(decision.node, f"ns/p{number}", decision.gpu_indices)
