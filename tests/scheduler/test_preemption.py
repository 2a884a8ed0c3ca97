"""Preemption: the fewest, lowest-priority victims that make room, found by simulation; never a
gang member alone; never beyond a service's disruption budget; never a non-preemptible pod."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trireme.scheduler.cluster import BoundPod, ClusterSnapshot, node_state
from trireme.scheduler.plan import Bind, plan
from trireme.scheduler.policies import make_policy
from trireme.scheduler.preemption import Preempt, Victim, find_preemption, without
from trireme.scheduler.requests import Gang, PodRequest

A100 = "NVIDIA-A100-SXM4-80GB"
POLICY = make_policy("firstfit")


def node(gpus: int = 2) -> object:
    return node_state(gpus=gpus, product=A100, gpu_memory_mib=81920, cpu_milli=64000, memory_mib=262144)


def full_cluster(**placed: tuple[str, tuple[int, ...]]) -> ClusterSnapshot:
    """Nodes a and b with two GPUs each; ``placed`` maps pod → (node, GPUs), whole GPUs."""
    snapshot = ClusterSnapshot.of({"a": node(), "b": node()})
    for pod, (where, gpus) in placed.items():
        snapshot = snapshot.with_bound(BoundPod(f"ns/{pod}", where, gpus, 1000))
    return snapshot


FULL = full_cluster(low1=("a", (0,)), low2=("a", (1,)), mid=("b", (0,)), high=("b", (1,)))
INFO = {"ns/low1": Victim(1, service="ns/low"), "ns/low2": Victim(1, service="ns/low"),
        "ns/mid": Victim(50, service="ns/mid"), "ns/high": Victim(1000, preemptible=False, service="ns/high")}


def want(gpus: int, priority: int = 100, pod: str = "ns/new") -> PodRequest:
    return PodRequest(pod=pod, gpus=gpus, priority=priority)


CASES = [
    ("one-lowest-victim-last-name", FULL, want(1), INFO, {}, Preempt(
        "ns/new", "a", ("ns/low2",), "preempting 1 pod(s) of lower priority (at most 1) to make room for ns/new: "
                                     "ns/low2")),
    ("two-gpus-take-both-low", FULL, want(2), INFO, {},
     Preempt("ns/new", "a", ("ns/low1", "ns/low2"), "preempting 2 pod(s) of lower priority (at most 1) to make "
                                                   "room for ns/new: ns/low1, ns/low2")),
    ("budget-of-one-blocks-two", FULL, want(2), INFO, {"ns/low": 1}, None),
    ("budget-moves-to-other-node", FULL, want(1), INFO, {"ns/low": 0},
     Preempt("ns/new", "b", ("ns/mid",), "preempting 1 pod(s) of lower priority (at most 50) to make room for "
                                         "ns/new: ns/mid")),
    ("not-below-own-priority", FULL, want(1, priority=1), INFO, {}, None),
    ("non-preemptible-never", FULL, want(2, priority=5000), {**INFO, "ns/low1": Victim(1, preemptible=False),
                                                              "ns/low2": Victim(1, preemptible=False)}, {}, None),
    ("unknown-pods-never", FULL, want(1), {}, {}, None),
    ("gang-member-never-alone", FULL, want(1), {**INFO, "ns/low1": Victim(1, gang="g"), "ns/low2": Victim(1, gang="g"),
                                                "ns/mid": Victim(900)}, {},
     Preempt("ns/new", "a", ("ns/low1", "ns/low2"), "preempting 2 pod(s) of lower priority (at most 1) to make "
                                                   "room for ns/new: ns/low1, ns/low2")),
]


@pytest.mark.parametrize(("snapshot", "request_", "victims", "budgets", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_find_preemption(snapshot, request_, victims, budgets, expected) -> None:
    assert find_preemption(snapshot, request_, POLICY, victims, budgets) == expected


def test_a_gang_victim_is_evicted_whole() -> None:
    snapshot = full_cluster(g0=("a", (0,)), g1=("b", (0,)), x=("a", (1,)), y=("b", (1,)))
    victims = {"ns/g0": Victim(1, gang="g"), "ns/g1": Victim(1, gang="g"), "ns/x": Victim(500),
               "ns/y": Victim(500)}
    result = find_preemption(snapshot, want(1), POLICY, victims)
    assert result is not None and result.victims == ("ns/g0", "ns/g1")


def test_a_gang_preempts_over_the_whole_cluster() -> None:
    gang = Gang("ns/pipe-r0", (want(2, pod="ns/pipe-r0-p0"), want(2, pod="ns/pipe-r0-p1")))
    result = find_preemption(FULL, gang, POLICY, {**INFO, "ns/high": Victim(60)})
    assert result is not None and result.victims == ("ns/high", "ns/low1", "ns/low2", "ns/mid")
    result = find_preemption(FULL, gang, POLICY, INFO)  # ns/high cannot go: node b never frees up
    assert result is None


# -- properties -------------------------------------------------------------------------------------------

PODS = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 2), st.integers(0, 200), st.booleans()),
                min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(PODS, st.integers(1, 2), st.integers(0, 200))
def test_preemption_is_minimal_and_makes_room(pods, gpus_wanted, priority) -> None:
    """After evicting the victims the pod fits; sparing any one victim it would not (minimal); every
    victim is preemptible and of lower priority."""
    snapshot = ClusterSnapshot.of({f"n{i}": node(2) for i in range(4)})
    victims = {}
    for index, (where, gpus, prio, preemptible) in enumerate(pods):
        state = snapshot.states[f"n{where}"]
        free = [i for i, f in enumerate(state.gpu_free_milli) if f == 1000][:gpus]
        if len(free) < gpus:
            continue
        snapshot = snapshot.with_bound(BoundPod(f"ns/p{index}", f"n{where}", tuple(free), 1000))
        victims[f"ns/p{index}"] = Victim(prio, preemptible)
    request = want(gpus_wanted, priority)
    result = find_preemption(snapshot, request, POLICY, victims)
    if result is None:
        return
    assert all(victims[v].preemptible and victims[v].priority < priority for v in result.victims)
    after = plan(without(snapshot, result.victims), [request], POLICY)
    assert isinstance(after.decisions[0], Bind)
    for spared in result.victims:
        rest = [v for v in result.victims if v != spared]
        state = without(snapshot, rest).states[result.node]
        assert POLICY.evaluate(state, request)[0] is not None
