"""The fragmentation measure behind the ``fgd`` and ``trireme`` policies: the paper's rule for
shares and whole GPUs, and NVLink islands for tensor-parallel shapes (counted by ``trireme`` only)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trireme.scheduler.cluster import MILLI, BoundPod, ClusterSnapshot, NodeState, node_state
from trireme.scheduler.fragmentation import Fragmentation, FragmentationSettings, TaskShape
from trireme.scheduler.plan import Bind, Unschedulable, plan
from trireme.scheduler.policies import make_policy, shapes_from_snapshot, workload_shapes
from trireme.scheduler.requests import PodRequest

ISLANDS = ((0, 1, 2, 3), (4, 5, 6, 7))
ONE_GPU = TaskShape(1000, MILLI, 1)
TP4 = TaskShape(1000, MILLI, 4, tensor_parallel=4)
TP2_X4 = TaskShape(1000, MILLI, 4, tensor_parallel=2)
SHARE = TaskShape(1000, 300, 1)
COUNTED = FragmentationSettings(count_islands=True)


def idle(*gpus: int, n: int = 8, partial: dict[int, int] | None = None) -> tuple[int, ...]:
    """Free shares of an ``n``-GPU node: the listed GPUs idle, ``partial`` GPUs with that much free."""
    partial = partial or {}
    return tuple(MILLI if i in gpus else partial.get(i, 0) for i in range(n))


MEASURE_CASES = [
    # (id, shape, settings, free shares, islands, fragmented milli-GPUs)
    ("share-slivers-stranded", SHARE, FragmentationSettings(), idle(0, partial={1: 200, 2: 500}), (), 200),
    ("whole-gpu-slivers-stranded", ONE_GPU, FragmentationSettings(), idle(0, partial={1: 200}), (), 200),
    ("too-few-gpus-all-fragmented", TP4, FragmentationSettings(), idle(0, 1, 2), (), 3000),
    ("paper-ignores-islands", TP4, FragmentationSettings(), idle(0, 1, 4, 5), ISLANDS, 0),
    ("no-island-holds-a-group", TP4, COUNTED, idle(0, 1, 4, 5), ISLANDS, 4000),
    ("whole-island-free", TP4, COUNTED, idle(0, 1, 2, 3, 4), ISLANDS, 1000),
    ("groups-of-two-in-two-islands", TP2_X4, COUNTED, idle(0, 1, 4, 5), ISLANDS, 0),
    ("odd-gpu-of-a-group-island-has-room", TP2_X4, COUNTED, idle(0, 1, 2, 4, 5, 6), ISLANDS, 0),
    ("island-with-one-idle-is-stranded", TP2_X4, COUNTED, idle(0, 1, 2, 3, 4), ISLANDS, 1000),
    ("too-few-groups", TP2_X4, COUNTED, idle(0, 1, 2, 4), ISLANDS, 4000),
    ("node-without-islands", TP4, COUNTED, idle(0, 1, 4, 5), (), 0),
    ("single-gpu-shapes-ignore-islands", ONE_GPU, COUNTED, idle(0, 4), ISLANDS, 0),
    ("partial-gpus-no-use-to-groups", TP2_X4, COUNTED, idle(0, 1, 4, 5, partial={2: 500}), ISLANDS, 500),
]


@pytest.mark.parametrize(("shape", "settings", "free", "islands", "expected"), [c[1:] for c in MEASURE_CASES],
                         ids=[c[0] for c in MEASURE_CASES])
def test_measure(shape: TaskShape, settings: FragmentationSettings, free: tuple[int, ...],
                 islands: tuple[tuple[int, ...], ...], expected: float) -> None:
    measure = Fragmentation((shape,), settings)
    assert measure.measure("A100", 64000, 0, free, islands) == pytest.approx(expected)


def test_memo_tells_apart_nodes_whose_idle_gpus_sit_in_different_islands() -> None:
    measure = Fragmentation((TP4,), COUNTED)
    assert measure.measure("A100", 64000, 0, idle(0, 1, 2, 3), ISLANDS) == 0
    assert measure.measure("A100", 64000, 0, idle(0, 1, 4, 5), ISLANDS) == 4000


@given(st.lists(st.sampled_from([0, 300, 700, MILLI]), min_size=8, max_size=8),
       st.sampled_from([TP4, TP2_X4, ONE_GPU, SHARE, TaskShape(1000, MILLI, 8, tensor_parallel=4)]))
def test_counting_islands_never_finds_more_room(free: list[int], shape: TaskShape) -> None:
    """Islands only take room away: the island-aware measure is never below the paper's, and equal
    on a node without islands."""
    blind = Fragmentation((shape,)).measure("A100", 64000, 0, tuple(free), ISLANDS)
    counted = Fragmentation((shape,), COUNTED)
    assert counted.measure("A100", 64000, 0, tuple(free), ISLANDS) >= blind
    assert counted.measure("A100", 64000, 0, tuple(free), ()) == blind


def test_workload_shapes_keep_the_tensor_parallel_group() -> None:
    shapes = workload_shapes([PodRequest("ns/tp", gpus=8, tensor_parallel=4), PodRequest("ns/one", gpus=1,
                                                                                         tensor_parallel=1)])
    assert [s.tensor_parallel for s in shapes] == [4, 1]


@pytest.mark.parametrize(("groups", "expected"), [({"ns/llm": 4}, [4, 1]), ({"other/llm": 4}, [1, 1]), (None, [1, 1])],
                         ids=["own-namespace", "same-name-elsewhere", "none-given"])
def test_bound_replicas_take_their_services_tensor_parallel_group(groups: dict[str, int] | None,
                                                                  expected: list[int]) -> None:
    snapshot = ClusterSnapshot.of({"n": _node()}).with_bound(BoundPod("ns/llm-r0", "n", (0, 1, 2, 3), MILLI,
                                                                      service="llm")).with_bound(
        BoundPod("ns/web-r0", "n", (4,), MILLI, service="web"))
    assert [s.tensor_parallel for s in shapes_from_snapshot(snapshot, groups)] == expected


def _node() -> NodeState:
    return node_state(gpus=8, product="A100", gpu_memory_mib=81920, cpu_milli=64000, memory_mib=262144,
                      islands=ISLANDS)


# a: one whole island idle (GPUs 0-3); b: four idle GPUs, two in each island.
ISLAND_CLUSTER = ClusterSnapshot.of({"a": _node(), "b": _node()}).with_bound(
    BoundPod("other/a", "a", (4, 5, 6, 7), MILLI)).with_bound(BoundPod("other/b", "b", (2, 3, 6, 7), MILLI))


@pytest.mark.parametrize(("policy", "one_gpu_node", "tensor_parallel_fits"),
                         [("trireme", "b", True), ("fgd", "a", False)], ids=["trireme", "fgd-as-the-paper"])
def test_a_single_gpu_pod_leaves_the_last_whole_island_to_a_tensor_parallel_replica(
        policy: str, one_gpu_node: str, tensor_parallel_fits: bool) -> None:
    tensor_parallel = PodRequest("ns/tp", gpus=4, tensor_parallel=4)
    one_gpu = PodRequest("ns/one", gpus=1)
    chosen = make_policy(policy, workload_shapes([tensor_parallel, one_gpu]))
    first = plan(ISLAND_CLUSTER, [one_gpu], chosen).decisions[0]
    assert isinstance(first, Bind) and first.node == one_gpu_node
    after = ISLAND_CLUSTER.with_bound(BoundPod("ns/one", first.node, first.gpu_indices, MILLI))
    second = plan(after, [tensor_parallel], chosen).decisions[0]
    assert isinstance(second, Bind if tensor_parallel_fits else Unschedulable)
