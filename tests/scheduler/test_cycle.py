"""A scheduling cycle: queue order, per-service policies, preemption once per victim, waiting
for preempted pods to leave instead of preempting again, and nodes kept for the pods nominated
to them."""

from __future__ import annotations

import pytest

from trireme.scheduler.cluster import BoundPod, ClusterSnapshot, node_state
from trireme.scheduler.cycle import Pending, queue_order, schedule
from trireme.scheduler.plan import Bind, Unschedulable
from trireme.scheduler.preemption import Preempt, Victim
from trireme.scheduler.requests import Gang, PodRequest

A100 = "NVIDIA-A100-SXM4-80GB"


def cluster(nodes: int = 1, gpus: int = 2) -> ClusterSnapshot:
    state = node_state(gpus=gpus, product=A100, gpu_memory_mib=81920, cpu_milli=64000, memory_mib=262144)
    return ClusterSnapshot.of({f"n{i}": state for i in range(nodes)})


def pod(name: str, gpus: int = 1, priority: int = 0) -> PodRequest:
    return PodRequest(pod=f"ns/{name}", gpus=gpus, priority=priority)


def test_queue_order_is_priority_then_age_then_name() -> None:
    entries = [Pending(pod("b"), age="2"), Pending(pod("a"), age="2"), Pending(pod("old"), age="1"),
               Pending(pod("vip", priority=9), age="3")]
    assert [e.name for e in queue_order(entries)] == ["ns/vip", "ns/old", "ns/a", "ns/b"]


def test_the_higher_priority_gets_the_last_gpus() -> None:
    result = schedule(cluster(gpus=2), [Pending(pod("low", 2), age="1"), Pending(pod("high", 2, 5), age="2")])
    assert isinstance(result.decisions["ns/high"], Bind)
    assert isinstance(result.decisions["ns/low"], Unschedulable)


def test_an_unknown_policy_name_uses_the_default() -> None:
    result = schedule(cluster(), [Pending(pod("x"), policy="no-such-policy")])
    assert isinstance(result.decisions["ns/x"], Bind)


def test_a_gang_binds_every_member() -> None:
    gang = Gang("ns/pipe-r0", (pod("pipe-r0-p0"), pod("pipe-r0-p1")))
    result = schedule(cluster(nodes=2, gpus=1), [Pending(gang)])
    assert {type(d) for d in result.decisions.values()} == {Bind}
    assert len(result.decisions) == 2


def full() -> ClusterSnapshot:
    snapshot = cluster(nodes=1, gpus=2)
    for index in range(2):
        snapshot = snapshot.with_bound(BoundPod(f"ns/low{index}", "n0", (index,), 1000, service="ns/low"))
    return snapshot


VICTIMS = {"ns/low0": Victim(1, service="ns/low"), "ns/low1": Victim(1, service="ns/low")}


def test_preemption_picks_each_victim_once_and_spends_the_budget() -> None:
    entries = [Pending(pod("a", 1, 10), age="1"), Pending(pod("b", 1, 10), age="2"), Pending(pod("c", 1, 10), age="3")]
    result = schedule(full(), entries, VICTIMS, budgets={"ns/low": 1})
    assert result.decisions["ns/a"] == Preempt("ns/a", "n0", ("ns/low1",), result.decisions["ns/a"].reason)
    assert isinstance(result.decisions["ns/b"], Unschedulable)  # budget spent: no second victim
    assert isinstance(result.decisions["ns/c"], Unschedulable)


def test_a_nominated_pod_waits_for_its_victims_to_leave() -> None:
    entry = Pending(pod("a", 1, 10), nominated_node="n0")
    result = schedule(full(), [entry], VICTIMS, terminating={"n0": 1})
    assert result.decisions["ns/a"] == Unschedulable("ns/a", "waiting for 1 pod(s) to leave node n0 (preempted or moved to make room)")


BIG, SMALL = Pending(pod("big", 2), age="1", nominated_node="n0"), Pending(pod("small"), age="2")


@pytest.mark.parametrize(("nodes", "bound", "expect"), [
    pytest.param(2, {"n0": 0, "n1": 0}, {"ns/small": "n1"}, id="other-pods-keep-off-a-nominated-node"),
    pytest.param(1, {"n0": 0}, {"ns/small": "n0"}, id="unless-they-fit-nowhere-else"),
    pytest.param(2, {}, {"ns/big": "n0", "ns/small": "n1"}, id="the-nominee-takes-its-node"),
])
def test_a_node_is_kept_for_the_pod_nominated_to_it(nodes: int, bound: dict[str, int],
                                                    expect: dict[str, str]) -> None:
    snapshot = cluster(nodes=nodes, gpus=2)
    for node, gpu in bound.items():  # n0: a pod still leaving; n1: a pod that stays
        snapshot = snapshot.with_bound(BoundPod(f"ns/on-{node}", node, (gpu,), 1000))
    result = schedule(snapshot, [BIG, SMALL])
    assert {p: d.node for p, d in result.decisions.items() if isinstance(d, Bind)} == expect


def test_no_victims_no_preemption() -> None:
    result = schedule(full(), [Pending(pod("a", 1, 10))])
    assert isinstance(result.decisions["ns/a"], Unschedulable)


NOT_PREEMPTIBLE = {"ns/low0": Victim(1, preemptible=False, service="ns/low"),
                   "ns/low1": Victim(1, preemptible=False, service="ns/low")}


@pytest.mark.parametrize(("priority", "victims", "budgets", "ending"), [
    pytest.param(0, VICTIMS, {}, "largest free block is 0", id="no-lower-priority-nothing-added"),
    pytest.param(1, VICTIMS, {}, "largest free block is 0", id="equal-priority-nothing-added"),
    pytest.param(10, NOT_PREEMPTIBLE, {}, "; preemption cannot help: no pod of lower priority than 10 may be "
                 "preempted", id="lower-priority-not-preemptible"),
    pytest.param(10, VICTIMS, {"ns/low": 0}, "; preemption cannot help: evicting pods of lower priority than 10, "
                 "within their disruption budgets, would not make room", id="budget-spent"),
])
def test_a_waiting_pod_says_why_preemption_cannot_help(priority: int, victims: dict[str, Victim],
                                                       budgets: dict[str, int], ending: str) -> None:
    result = schedule(full(), [Pending(pod("a", 1, priority))], victims, budgets)
    decision = result.decisions["ns/a"]
    assert isinstance(decision, Unschedulable)
    assert decision.reason.endswith(ending), decision.reason
