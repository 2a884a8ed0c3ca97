"""Rebalancing: the fewest moves that make a pending replica fit, found by simulation; hot spots
evened out; every budget respected (moves per cycle, per service, time between moves of one
replica); only movable pods move, a gang only whole; plans re-checked on a fresh snapshot. And
``trireme bench rebalance`` end to end on a tiny synthetic trace."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trireme.benchmarks.rebalance import RebalanceBenchSettings, defrag_budget, defrag_cap, run
from trireme.cli import main
from trireme.scheduler.cluster import BoundPod, ClusterSnapshot, node_state
from trireme.scheduler.plan import select
from trireme.scheduler.policies import make_policy
from trireme.scheduler.rebalance import (
    DEFRAGMENT, HOT_NODE, SKEWED_SERVICE, Budgets, Movable, Move, MovePlan, RebalanceSettings, apply_moves,
    _needs_as_much, consolidate, defragment, gpu_milli_used, prepare, rebalance, revalidate, spread_hot_spots)
from trireme.scheduler.requests import PodRequest

A100 = "NVIDIA-A100-SXM4-80GB"
FIRSTFIT = make_policy("firstfit")
BINPACK = make_policy("binpack")
OPENB = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "openb"


def node(gpus: int = 2) -> object:
    return node_state(gpus=gpus, product=A100, gpu_memory_mib=81920, cpu_milli=64000, memory_mib=262144)


@dataclass(frozen=True)
class Pod:
    """A bound pod in a table: where it runs and what it holds."""

    node: str
    gpus: tuple[int, ...]
    milli: int = 1000
    service: str = ""
    movable: bool = True
    gang: str = ""
    spread: bool = False


def cluster(nodes: dict[str, int], pods: dict[str, Pod]) -> tuple[ClusterSnapshot, dict[str, Movable]]:
    snapshot = ClusterSnapshot.of({name: node(gpus) for name, gpus in nodes.items()})
    movable = {}
    for name, pod in pods.items():
        snapshot = snapshot.with_bound(BoundPod(name, pod.node, pod.gpus, pod.milli, 1000, 1024, pod.service))
        if pod.movable:
            shared = pod.milli < 1000
            request = PodRequest(pod=name, cpu_milli=1000, memory_mib=1024, gpus=len(pod.gpus),
                                 gpu_milli=pod.milli if shared else 0, service=pod.service, spread=pod.spread)
            movable[name] = Movable(request, gang=pod.gang)
    return snapshot, movable


def moved(plan: MovePlan | None) -> list[tuple[str, str, str]]:
    return [] if plan is None else [(m.pod, m.from_node, m.to_node) for m in plan.moves]


@dataclass(frozen=True)
class DefragCase:
    nodes: dict[str, int]
    pods: dict[str, Pod]
    want: PodRequest
    expect: list[tuple[str, str, str]] | None
    """The moves (pod, from, to), or None for no plan."""
    settings: RebalanceSettings = RebalanceSettings()
    budgets: Budgets = Budgets()
    target: str = ""


TWO = PodRequest(pod="ns/new", gpus=2)
DEFRAG_CASES = {
    "one move makes a 2-GPU replica fit": DefragCase(
        {"a": 2, "b": 2}, {"x": Pod("a", (0,)), "y": Pod("b", (0,))}, TWO, [("x", "a", "b")], target="a"),
    "fits already: no moves": DefragCase(
        {"a": 2, "b": 2}, {"x": Pod("a", (0,))}, TWO, [], target="b"),
    "unmovable pods stay": DefragCase(
        {"a": 2, "b": 2}, {"x": Pod("a", (0,), movable=False), "y": Pod("b", (0,), movable=False)}, TWO, None),
    "moves the one pod that may move": DefragCase(
        {"a": 2, "b": 2}, {"x": Pod("a", (0,), movable=False), "y": Pod("b", (0,))}, TWO, [("y", "b", "a")],
        target="b"),
    "a share makes room for a whole GPU": DefragCase(
        {"a": 2, "b": 1}, {"x": Pod("a", (0,), 400), "y": Pod("a", (1,), 400), "z": Pod("b", (0,), 500)},
        PodRequest(pod="ns/new", gpus=1), [("x", "a", "b")], target="a"),
    "no room anywhere else": DefragCase(
        {"a": 2, "b": 1}, {"x": Pod("a", (0,)), "y": Pod("b", (0,))}, TWO, None),
    "cycle cap of zero moves": DefragCase(
        {"a": 2, "b": 2}, {"x": Pod("a", (0,)), "y": Pod("b", (0,))}, TWO, None,
        settings=RebalanceSettings(max_moves_per_cycle=0)),
    "service disruption budget spent": DefragCase(
        {"a": 2, "b": 2}, {"x": Pod("a", (0,), service="ns/s"), "y": Pod("b", (0,), service="ns/s")}, TWO, None,
        budgets=Budgets(services={"ns/s": 0})),
    "service disruption budget left": DefragCase(
        {"a": 2, "b": 2}, {"x": Pod("a", (0,), service="ns/s"), "y": Pod("b", (0,), service="ns/s")}, TWO,
        [("x", "a", "b")], budgets=Budgets(services={"ns/s": 1}), target="a"),
    "moved too recently": DefragCase(
        {"a": 2, "b": 2}, {"x": Pod("a", (0,)), "y": Pod("b", (0,))}, TWO, None,
        budgets=Budgets(now=1000.0, last_moved={"x": 500.0, "y": 900.0})),
    "interval passed for one": DefragCase(
        {"a": 2, "b": 2}, {"x": Pod("a", (0,)), "y": Pod("b", (0,))}, TWO, [("y", "b", "a")],
        budgets=Budgets(now=1000.0, last_moved={"x": 900.0, "y": 300.0}), target="b"),
    "a gang member never moves alone": DefragCase(
        {"a": 2, "b": 2, "c": 1}, {"g1": Pod("a", (0,), gang="g"), "g2": Pod("b", (0,), gang="g")}, TWO, None,
        settings=RebalanceSettings(max_moves_per_cycle=1)),
    "a gang moves whole": DefragCase(
        {"a": 2, "b": 2, "c": 1}, {"g1": Pod("a", (0,), gang="g"), "g2": Pod("b", (0,), gang="g")}, TWO,
        [("g2", "b", "b"), ("g1", "a", "b")]),
    "a node held by a task as large as the request is tried last": DefragCase(
        {"a": 2, "b": 2, "c": 1, "d": 1}, {"big": Pod("a", (0, 1)), "x": Pod("b", (0,)), "y": Pod("b", (1,))}, TWO,
        [("x", "b", "c"), ("y", "b", "d")], settings=RebalanceSettings(candidate_nodes=1), target="b"),
    "a spread replica avoids its service's nodes": DefragCase(
        {"a": 2, "b": 2},
        {"x": Pod("a", (0,), service="ns/s", spread=True), "y": Pod("b", (0,), service="ns/s", spread=True)},
        TWO, None, budgets=Budgets(services={"ns/s": 2})),
}


@pytest.mark.parametrize("case", DEFRAG_CASES.values(), ids=DEFRAG_CASES.keys())
def test_defragment(case: DefragCase) -> None:
    snapshot, movable = cluster(case.nodes, case.pods)
    found = defragment(snapshot, case.want, FIRSTFIT, movable, case.budgets, case.settings)
    if case.expect is None:
        assert found is None
        return
    assert found is not None and moved(found) == case.expect
    assert all(m.reason.startswith(DEFRAGMENT) for m in found.moves)
    if case.target:
        assert found.node == case.target
    assert select(found.snapshot, case.want, FIRSTFIT, allowed=frozenset({found.node})) is not None
    assert revalidate(found, snapshot, movable) == (found, "")


@dataclass(frozen=True)
class PrepareCase:
    nodes: dict[str, int]
    pods: dict[str, Pod]
    max_moves: int
    expect: list[tuple[str, str, str]] | None
    """The first moves (pod, from, to), or None for no plan."""
    node: str = ""
    reserved: frozenset[str] = frozenset()
    only: frozenset[str] | None = None


FULL_A = {"x": Pod("a", (0,)), "y": Pod("a", (1,))}
PREPARE_CASES = {
    "one of the two moves a 2-GPU replica needs": PrepareCase(
        {"a": 2, "b": 1, "c": 1}, FULL_A, 1, [("x", "a", "b")], node="a"),
    "no move allowed: the node is named, nothing moves": PrepareCase(
        {"a": 2, "b": 1, "c": 1}, FULL_A, 0, [], node="a"),
    "enough for all of them: all are planned": PrepareCase(
        {"a": 2, "b": 1, "c": 1}, FULL_A, 4, [("x", "a", "b"), ("y", "a", "c")], node="a"),
    "the node the fewest moves clear": PrepareCase(
        {"b": 2, "a": 2, "c": 1, "d": 1, "e": 1},
        {**FULL_A, "z": Pod("b", (0,)), "u": Pod("b", (1,), 500), "t": Pod("b", (1,), 400)}, 0, [], node="a"),
    "a node is started only if all its pods can go somewhere": PrepareCase(
        {"a": 2, "b": 1}, FULL_A, 1, None),
    "moved pods never go to a node kept for another replica": PrepareCase(
        {"a": 2, "b": 1, "c": 1}, FULL_A, 1, None, reserved=frozenset({"b"})),
    "only the nodes given are considered": PrepareCase(
        {"a": 2, "b": 2, "c": 1, "d": 1, "e": 1}, {**FULL_A, "z": Pod("b", (0,)), "w": Pod("b", (1,))}, 1,
        [("w", "b", "c")], node="b", only=frozenset({"b"})),
    "fits already: nothing to prepare": PrepareCase({"a": 2, "b": 2}, {"x": Pod("a", (0,))}, 1, None),
}


@pytest.mark.parametrize("case", PREPARE_CASES.values(), ids=PREPARE_CASES.keys())
def test_prepare(case: PrepareCase) -> None:
    snapshot, movable = cluster(case.nodes, case.pods)
    found = prepare(snapshot, TWO, FIRSTFIT, movable, max_moves=case.max_moves, reserved=case.reserved,
                    nodes=case.only)
    if case.expect is None:
        assert found is None
        return
    assert found is not None and moved(found) == case.expect and found.node == case.node
    assert found.pending == TWO and len(found.moves) <= case.max_moves
    assert not {m.to_node for m in found.moves} & (case.reserved | {case.node})
    assert apply_moves(snapshot, found.moves, movable).bound == found.snapshot.bound


WHOLE8 = PodRequest(pod="new", cpu_milli=64000, memory_mib=1024, gpus=8)
NEEDS_AS_MUCH_CASES = {
    "another 8-GPU task": (BoundPod("p", "a", tuple(range(8)), 1000, 88000, 2048), PodRequest(pod="p", gpus=8),
                           WHOLE8, True),
    "fewer GPUs": (BoundPod("p", "a", (0, 1, 2, 3), 1000, 88000, 2048), PodRequest(pod="p", gpus=4), WHOLE8, False),
    "less CPU": (BoundPod("p", "a", tuple(range(8)), 1000, 32000, 2048), PodRequest(pod="p", gpus=8), WHOLE8, False),
    "a share is smaller than a whole GPU": (BoundPod("p", "a", (0,), 500, 12000, 2048),
                                            PodRequest(pod="p", gpus=1, gpu_milli=500),
                                            PodRequest(pod="new", gpus=1), False),
    "a whole GPU holds any share": (BoundPod("p", "a", (0,), 1000, 4000, 2048), PodRequest(pod="p", gpus=1),
                                    PodRequest(pod="new", cpu_milli=3000, gpus=1, gpu_milli=810), True),
    "a smaller share": (BoundPod("p", "a", (0,), 600, 4000, 2048), PodRequest(pod="p", gpus=1, gpu_milli=600),
                        PodRequest(pod="new", cpu_milli=3000, gpus=1, gpu_milli=810), False),
    "the pod accepts GPUs the request does not": (
        BoundPod("p", "a", (0,), 1000, 4000, 2048), PodRequest(pod="p", gpus=1),
        PodRequest(pod="new", gpus=1, products=(A100,)), False),
    "the pod accepts only the request's GPUs": (
        BoundPod("p", "a", (0,), 1000, 4000, 2048), PodRequest(pod="p", gpus=1, products=(A100,)),
        PodRequest(pod="new", gpus=1, products=(A100, "T4")), True),
    "a share given as GPU memory is never compared": (
        BoundPod("p", "a", (0,), 1000, 4000, 2048), PodRequest(pod="p", gpus=1),
        PodRequest(pod="new", gpus=1, gpu_memory_mib=20480), False),
    "CPU-only pods with more CPU and memory": (BoundPod("p", "a", (), 0, 8000, 4096), PodRequest(pod="p"),
                                               PodRequest(pod="new", cpu_milli=4000, memory_mib=1024), True),
}


@pytest.mark.parametrize("case", NEEDS_AS_MUCH_CASES.values(), ids=NEEDS_AS_MUCH_CASES.keys())
def test_needs_as_much(case: tuple[BoundPod, PodRequest, PodRequest, bool]) -> None:
    pod, mine, request, expect = case
    assert _needs_as_much(pod, mine, request) is expect


def test_a_whole_gang_counts_against_the_cap() -> None:
    snapshot, movable = cluster({"a": 2, "b": 2, "c": 1},
                                {"g1": Pod("a", (0,), gang="g"), "g2": Pod("b", (0,), gang="g")})
    assert defragment(snapshot, TWO, FIRSTFIT, movable, max_moves=1) is None
    found = defragment(snapshot, TWO, FIRSTFIT, movable, max_moves=2)
    assert found is not None and {m.pod for m in found.moves} == {"g1", "g2"}


def test_revalidate_refuses_a_stale_plan() -> None:
    snapshot, movable = cluster({"a": 2, "b": 2}, {"x": Pod("a", (0,)), "y": Pod("b", (0,))})
    found = defragment(snapshot, TWO, FIRSTFIT, movable)
    assert found is not None
    taken = snapshot.with_bound(BoundPod("z", "b", (1,), 1000))  # the target GPU went to someone else
    again, why = revalidate(found, taken, movable)
    assert again is None and "stale plan" in why
    gone = ClusterSnapshot.of(dict(snapshot.states))  # x already left: nothing to move
    assert revalidate(found, gone, movable)[0] is None
    late = snapshot.with_bound(BoundPod("v", "a", (1,), 1000))  # the room on a was taken meanwhile
    again, why = revalidate(found, late, movable)
    assert again is None and "ns/new" in why


@dataclass(frozen=True)
class SpreadCase:
    nodes: dict[str, int]
    pods: dict[str, Pod]
    expect: list[tuple[str, str, str]]
    utilisation: dict[str, float] = field(default_factory=dict)
    settings: RebalanceSettings = RebalanceSettings(default_disruption_budget=5)


S = "ns/s"
SPREAD_CASES = {
    "bunched replicas spread out": SpreadCase(
        {"a": 4, "b": 4, "c": 4}, {"r1": Pod("a", (0,), service=S), "r2": Pod("a", (1,), service=S),
                                   "r3": Pod("a", (2,), service=S)},
        [("r1", "a", "b"), ("r2", "a", "c")]),
    "a gap of one is left alone": SpreadCase(
        {"a": 4, "b": 4}, {"r1": Pod("a", (0,), service=S), "r2": Pod("a", (1,), service=S),
                           "r3": Pod("b", (0,), service=S)}, []),
    "the cycle cap bounds the spreading": SpreadCase(
        {"a": 4, "b": 4, "c": 4}, {"r1": Pod("a", (0,), service=S), "r2": Pod("a", (1,), service=S),
                                   "r3": Pod("a", (2,), service=S)},
        [("r1", "a", "b")], settings=RebalanceSettings(max_moves_per_cycle=1, default_disruption_budget=5)),
    "the service budget bounds the spreading": SpreadCase(
        {"a": 4, "b": 4, "c": 4}, {"r1": Pod("a", (0,), service=S), "r2": Pod("a", (1,), service=S),
                                   "r3": Pod("a", (2,), service=S)},
        [("r1", "a", "b")], settings=RebalanceSettings(default_disruption_budget=1)),
    "unmovable replicas stay bunched": SpreadCase(
        {"a": 4, "b": 4}, {"r1": Pod("a", (0,), service=S, movable=False),
                           "r2": Pod("a", (1,), service=S, movable=False)}, []),
    "a hot node loses a replica to a cool one": SpreadCase(
        {"a": 2, "b": 2, "c": 2}, {"x": Pod("a", (0,)), "y": Pod("a", (1,), 500), "z": Pod("b", (0,))},
        [("x", "a", "c")], utilisation={"a": 0.97, "b": 0.6, "c": 0.05}),
    "a uniformly busy cluster has no hot spot": SpreadCase(
        {"a": 2, "b": 2}, {"x": Pod("a", (0,)), "z": Pod("b", (0,))}, [], utilisation={"a": 0.97, "b": 0.95}),
}


@pytest.mark.parametrize("case", SPREAD_CASES.values(), ids=SPREAD_CASES.keys())
def test_spread_hot_spots(case: SpreadCase) -> None:
    snapshot, movable = cluster(case.nodes, case.pods)
    found = spread_hot_spots(snapshot, FIRSTFIT, movable, Budgets(), case.settings, utilisation=case.utilisation)
    assert moved(found) == case.expect
    assert all(m.reason.startswith((SKEWED_SERVICE, HOT_NODE)) for m in found.moves)
    assert gpu_milli_used(found.snapshot) == gpu_milli_used(snapshot)


CONSOLIDATE_CASES = {
    "a light GPU is emptied into a partly used one": (
        {"a": 2, "b": 2}, {"x": Pod("a", (0,), 300), "y": Pod("a", (1,), 500), "z": Pod("b", (0,), 600)},
        [("x", "a", "a")]),
    "no idle GPU is taken to empty another": (
        {"a": 2, "b": 2}, {"x": Pod("a", (0,), 300), "z": Pod("b", (0,), 800)}, []),
    "an unmovable pod keeps its GPU": (
        {"a": 2}, {"x": Pod("a", (0,), 300, movable=False), "y": Pod("a", (1,), 600)}, []),
    "a heavy GPU is left alone": (
        {"a": 2}, {"x": Pod("a", (0,), 600), "y": Pod("a", (1,), 700)}, []),
}


@pytest.mark.parametrize("case", CONSOLIDATE_CASES.values(), ids=CONSOLIDATE_CASES.keys())
def test_consolidate(case: tuple[dict[str, int], dict[str, Pod], list[tuple[str, str, str]]]) -> None:
    nodes, pods, expect = case
    snapshot, movable = cluster(nodes, pods)
    found = consolidate(snapshot, BINPACK, movable, Budgets(), RebalanceSettings(default_disruption_budget=5))
    assert moved(found) == expect
    assert gpu_milli_used(found.snapshot) == gpu_milli_used(snapshot)
    if expect:
        assert sum(s.whole_free_gpus for s in found.snapshot.states.values()) == \
            sum(s.whole_free_gpus for s in snapshot.states.values()) + len(expect)
        assert apply_moves(snapshot, found.moves, movable).states == found.snapshot.states


CONSOLIDATE_ORDER_CASES = {
    "least used first": (RebalanceSettings(default_disruption_budget=5), [("x", "a", "a")]),
    "fullest first": (RebalanceSettings(default_disruption_budget=5, consolidate_fullest_first=True),
                      [("z", "a", "a")]),
    "enough CPU left for a whole GPU": (
        RebalanceSettings(default_disruption_budget=5, consolidate_min_cpu_milli=62000), [("x", "a", "a")]),
    "too little CPU left for a whole GPU": (
        RebalanceSettings(default_disruption_budget=5, consolidate_min_cpu_milli=62001), []),
}


@pytest.mark.parametrize("case", CONSOLIDATE_ORDER_CASES.values(), ids=CONSOLIDATE_ORDER_CASES.keys())
def test_consolidate_picks(case: tuple[RebalanceSettings, list[tuple[str, str, str]]]) -> None:
    rules, expect = case
    snapshot, movable = cluster({"a": 3}, {"x": Pod("a", (0,), 200), "y": Pod("a", (1,), 400),
                                           "z": Pod("a", (2,), 500)})  # 64 CPUs, 3 used
    found = consolidate(snapshot, BINPACK, movable, Budgets(), rules, max_moves=1)
    assert moved(found) == expect
    assert gpu_milli_used(found.snapshot) == gpu_milli_used(snapshot)


def test_consolidate_skips_pods_larger_than_any_spare_room() -> None:
    snapshot, movable = cluster({"a": 2, "b": 1}, {"x": Pod("a", (0,), 450), "y": Pod("a", (1,), 600),
                                                   "z": Pod("b", (0,), 700)})  # most room 400 < 450
    assert consolidate(snapshot, BINPACK, movable, Budgets(), RebalanceSettings(candidate_nodes=1)).moves == ()


def test_a_cycle_makes_room_first_then_spreads_within_one_cap() -> None:
    snapshot, movable = cluster({"a": 2, "b": 2, "c": 4, "d": 1},
                                {"x": Pod("a", (0,)), "y": Pod("b", (0,)), "r1": Pod("c", (0,), service=S),
                                 "r2": Pod("c", (1,), service=S), "r3": Pod("c", (2,), service=S)})
    found = rebalance(snapshot, [TWO], FIRSTFIT, movable, Budgets(), RebalanceSettings(max_moves_per_cycle=2))
    assert len(found) == 2
    assert found.moves[0].reason.startswith(DEFRAGMENT) and found.pending == TWO
    assert any(b.pod == "ns/new" for b in found.snapshot.bound)
    nothing = rebalance(snapshot, [TWO], FIRSTFIT, movable, Budgets(), RebalanceSettings(max_moves_per_cycle=0))
    assert nothing.moves == ()


@dataclass(frozen=True)
class CycleCase:
    nodes: dict[str, int]
    pods: dict[str, Pod]
    cap: int
    expect: list[tuple[str, str, str]]
    """The moves (pod, from, to) of the cycle."""
    node: str = ""
    complete: bool = True
    nominated: dict[str, str] = field(default_factory=dict)
    prepare: bool = True


THREE_ON_A = {"x": Pod("a", (0,)), "y": Pod("a", (1,)), "z": Pod("a", (2,))}
CYCLE_CASES = {
    "a replica one cycle cannot place gets the first moves of clearing a node": CycleCase(
        {"a": 3, "b": 1, "c": 1, "d": 1}, THREE_ON_A, 2, [("x", "a", "b"), ("y", "a", "c")], node="a",
        complete=False),
    "without prepare it waits": CycleCase({"a": 3, "b": 1, "c": 1, "d": 1}, THREE_ON_A, 2, [], prepare=False),
    "the last move of a cleared node completes it": CycleCase(
        {"a": 3, "b": 1, "c": 1, "d": 1}, {"z": Pod("a", (2,)), "u": Pod("b", (0,)), "v": Pod("c", (0,))}, 2,
        [("z", "a", "d")], node="a", nominated={"ns/new": "a"}),
    "a nominated replica goes on clearing its own node": CycleCase(
        {"a": 3, "e": 3, "b": 1, "c": 1, "d": 1},
        {"x": Pod("a", (0,)), "y": Pod("a", (1,)), "p": Pod("e", (0,)), "q": Pod("e", (1,)), "r": Pod("e", (2,))},
        1, [("p", "e", "a")], node="e", complete=False, nominated={"ns/new": "e"}),
    "moved pods avoid nodes nominated to other replicas": CycleCase(
        {"a": 3, "b": 1, "c": 1, "d": 1, "f": 1}, THREE_ON_A, 2, [("x", "a", "b"), ("y", "a", "d")], node="a",
        complete=False, nominated={"ns/other": "c"}),
}


@pytest.mark.parametrize("case", CYCLE_CASES.values(), ids=CYCLE_CASES.keys())
def test_a_cycle_starts_clearing_what_it_cannot_finish(case: CycleCase) -> None:
    snapshot, movable = cluster(case.nodes, case.pods)
    three = PodRequest(pod="ns/new", gpus=3)
    found = rebalance(snapshot, [three], FIRSTFIT, movable, Budgets(),
                      RebalanceSettings(max_moves_per_cycle=case.cap, prepare=case.prepare),
                      nominated=case.nominated)
    assert moved(found) == case.expect
    if not case.expect:
        assert found.pending is None
        return
    assert (found.pending, found.node, found.complete) == (three, case.node, case.complete)
    assert any(b.pod == "ns/new" for b in found.snapshot.bound) is case.complete
    again = revalidate(found, snapshot, movable)[0]
    assert again is not None and (again.moves, again.node, again.complete) == (found.moves, found.node, found.complete)


def test_a_replica_nothing_may_move_for_does_not_block_the_next() -> None:
    pods = {**{k: Pod("a", p.gpus, service="s") for k, p in THREE_ON_A.items()}, "u": Pod("b", (0,), service="t")}
    snapshot, movable = cluster({"a": 3, "b": 2, "c": 1, "d": 1, "e": 1}, pods)
    big = PodRequest(pod="ns/big", gpus=3, priority=1)
    found = rebalance(snapshot, [big, TWO], FIRSTFIT, movable, Budgets(services={"s": 0}),
                      RebalanceSettings(max_moves_per_cycle=2))
    assert moved(found) == [("u", "b", "c")] and found.pending == TWO and found.complete


def test_apply_moves_refuses_what_does_not_fit() -> None:
    snapshot, movable = cluster({"a": 2, "b": 2}, {"x": Pod("a", (0,)), "y": Pod("b", (0,))})
    with pytest.raises(ValueError, match="GPU 0"):
        apply_moves(snapshot, [Move("x", "a", "b", (0,), "test")], movable)
    with pytest.raises(ValueError, match="not bound on b"):
        apply_moves(snapshot, [Move("x", "b", "a", (1,), "test")], movable)


# --- properties ---------------------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ClusterSnapshot, dict[str, Movable], PodRequest, int]:
    nodes = {f"n{i}": draw(st.integers(1, 4)) for i in range(draw(st.integers(2, 4)))}
    snapshot = ClusterSnapshot.of({name: node(gpus) for name, gpus in nodes.items()})
    movable: dict[str, Movable] = {}
    for i in range(draw(st.integers(0, 10))):
        name = draw(st.sampled_from(sorted(nodes)))
        state = snapshot.states[name]
        whole = draw(st.booleans())
        milli = 1000 if whole else draw(st.sampled_from((250, 400, 500, 700)))
        room = [g for g, free in enumerate(state.gpu_free_milli) if free >= milli]
        if not room:
            continue
        gpu = draw(st.sampled_from(room))
        pod = f"p{i}"
        snapshot = snapshot.with_bound(BoundPod(pod, name, (gpu,), milli, 1000, 1024))
        if draw(st.integers(0, 4)):  # most pods are movable
            movable[pod] = Movable(PodRequest(pod=pod, cpu_milli=1000, memory_mib=1024, gpus=1,
                                              gpu_milli=0 if whole else milli))
    gpus = draw(st.integers(1, 4))
    share = draw(st.sampled_from((0, 0, 300, 600)))
    want = PodRequest(pod="new", gpus=1 if share else gpus, gpu_milli=share)
    return snapshot, movable, want, draw(st.integers(0, 4))


COMMON = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@COMMON
@given(scenarios())
def test_defragment_properties(scenario: tuple[ClusterSnapshot, dict[str, Movable], PodRequest, int]) -> None:
    snapshot, movable, want, cap = scenario
    budgets = Budgets()
    rules = RebalanceSettings(max_moves_per_cycle=cap)
    found = defragment(snapshot, want, FIRSTFIT, movable, budgets, rules)
    assert found == defragment(snapshot, want, FIRSTFIT, movable, budgets, rules)  # same input, same plan
    if found is None:
        return
    assert len(found.moves) <= cap
    assert {m.pod for m in found.moves} <= set(movable)
    after = apply_moves(snapshot, found.moves, movable)  # raises on over-allocation
    assert all(0 <= f <= 1000 for s in after.states.values() for f in s.gpu_free_milli)
    assert gpu_milli_used(after) == gpu_milli_used(snapshot)
    assert after.states == found.snapshot.states
    assert select(after, want, FIRSTFIT, allowed=frozenset({found.node})) is not None
    assert after.states[found.node].taken(found.gpu_indices, want.milli_on(after.states[found.node]), 0, 0)
    assert revalidate(found, snapshot, movable)[1] == ""


@COMMON
@given(scenarios(), st.dictionaries(st.sampled_from(("n0", "n1", "n2", "n3")), st.floats(0, 1), max_size=4))
def test_rebalance_properties(scenario: tuple[ClusterSnapshot, dict[str, Movable], PodRequest, int],
                              utilisation: dict[str, float]) -> None:
    snapshot, movable, want, cap = scenario
    rules = RebalanceSettings(max_moves_per_cycle=cap, default_disruption_budget=cap, consolidate=True)
    found = rebalance(snapshot, [want], FIRSTFIT, movable, Budgets(), rules, utilisation=utilisation)
    assert found == rebalance(snapshot, [want], FIRSTFIT, movable, Budgets(), rules, utilisation=utilisation)
    assert len(found.moves) <= cap
    assert {m.pod for m in found.moves} <= set(movable)
    assert len({m.pod for m in found.moves}) == len(found.moves)  # a replica moves at most once a cycle
    after = apply_moves(snapshot, found.moves, movable)
    assert all(0 <= f <= 1000 for s in after.states.values() for f in s.gpu_free_milli)


# --- the benchmark -------------------------------------------------------------------------------------

NODES_CSV = """sn,cpu_milli,memory_mib,gpu,model
n-0,32000,131072,4,V100M16
n-1,32000,131072,4,V100M16
n-2,96000,393216,8,G2
n-3,16000,65536,2,T4
"""


def pods_csv() -> str:
    shapes = [(4000, 1, 500), (8000, 1, 1000), (2000, 0, 0), (4000, 1, 250), (16000, 2, 1000), (4000, 1, 750)]
    lines = ["name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,"
             "scheduled_time"]
    for i in range(60):
        cpu, gpus, milli = shapes[i % len(shapes)]
        created = i * 100
        lines.append(f"p-{i:03d},{cpu},8192,{gpus},{milli},,LS,Running,{created},{created + 50 + (i * 37) % 900},"
                     f"{created}")
    return "\n".join(lines) + "\n"


def test_cli_rebalance_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes, pods, picture = tmp_path / "nodes.csv", tmp_path / "pods.csv", tmp_path / "unallocated.png"
    nodes.write_text(NODES_CSV)
    pods.write_text(pods_csv())
    assert main(["bench", "rebalance", "--nodes", str(nodes), "--pods", str(pods), "--policy", "firstfit",
                 "--seeds", "1", "--passes", "3", "--warmup-passes", "1", "--max-lifetime", "600", "--json",
                 "--plot", str(picture)]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["policy"] == "firstfit" and result["load"]["arrivals"] == 180
    for mode in ("without_rebalancer", "with_rebalancer"):
        assert 0 <= result[mode]["unallocated_gpu_pct"] <= 100
        assert result[mode]["moves_per_100_placements"] <= 2.0
        assert result[mode]["moves_per_100_placements_whole_replay"] <= 2.0
    assert result["without_rebalancer"]["moves_per_100_placements"] == 0
    assert "[2/2]" in out.err and "compressed" in out.err
    assert picture.read_bytes().startswith(b"\x89PNG")
    assert main(["bench", "rebalance", "--nodes", str(nodes), "--pods", str(pods), "--seeds", "1", "--quiet"]) == 0
    assert "with rebalancer" in capsys.readouterr().out
    assert main(["bench", "rebalance", "--nodes", str(nodes), "--pods", str(pods), "--seeds", "1", "--quiet",
                 "--hold", "120", "--max-holds", "2", "--json"]) == 0
    held = json.loads(capsys.readouterr().out)
    assert held["hold_s"] == 120 and held["max_holds"] == 2
    assert held["with_rebalancer"]["moves_per_100_placements"] <= 2.0
    assert main(["bench", "rebalance", "--nodes", str(nodes), "--pods", str(pods), "--hold", "0"]) == 2
    assert main(["bench", "rebalance", "--nodes", str(nodes), "--pods", str(pods), "--policy", "nope"]) == 2
    no_times = tmp_path / "multigpu.csv"
    no_times.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1000,1024,1,1000\n")
    assert main(["bench", "rebalance", "--nodes", str(nodes), "--pods", str(no_times), "--quiet"]) == 2
    assert "creation_time" in capsys.readouterr().err


BUDGET_CASES = {
    "an 8-GPU task: two moves per GPU": (8, 20.0, None, 16),
    "an 8-GPU task: what is saved": (8, 9.5, None, 9),
    "a 4-GPU task": (4, 20.0, None, 8),
    "a 2-GPU task: the least cap": (2, 20.0, None, 4),
    "nothing saved": (8, 0.5, None, 0),
    "one GPU, no reserve: never": (1, 20.0, None, 0),
    "a share, no reserve: never": (0, 20.0, None, 0),
    "one GPU beyond the reserve": (1, 20.0, 16.0, 4),
    "one GPU, one move beyond the reserve": (1, 17.5, 16.0, 1),
    "one GPU within the reserve": (1, 16.5, 16.0, 0),
}


@pytest.mark.parametrize("case", BUDGET_CASES.values(), ids=BUDGET_CASES.keys())
def test_defrag_budget(case: tuple[int, float, float | None, int]) -> None:
    gpus, saved, reserve, expect = case
    bench = RebalanceBenchSettings(Path("nodes.csv"), Path("pods.csv"), small_task_reserve=reserve)
    assert defrag_budget(gpus, saved, bench) == expect
    assert defrag_budget(gpus, saved, bench) <= defrag_cap(gpus, bench)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from((1, 3)), st.sampled_from((0.5, 2.0, 10.0)), st.booleans(), st.sampled_from((None, 1.0)),
       st.sampled_from((None, 300.0)))
def test_replay_spends_only_what_it_earns(tmp_path_factory: pytest.TempPathFactory, warmup_passes: int,
                                         rate: float, in_warmup: bool, reserve: float | None,
                                         hold: float | None) -> None:
    folder = tmp_path_factory.mktemp("trace")
    (folder / "nodes.csv").write_text(NODES_CSV)
    (folder / "pods.csv").write_text(pods_csv())
    bench = RebalanceBenchSettings(folder / "nodes.csv", folder / "pods.csv", policy="firstfit", seeds=(1,),
                                   passes=warmup_passes + 2, warmup_passes=warmup_passes, max_lifetime_s=600,
                                   move_rate=rate, small_task_reserve=reserve, rebalance_in_warmup=in_warmup,
                                   max_saved_moves=4, hold_s=hold, hold_gpus=2)
    load, runs = run(bench)
    without, with_ = sorted(runs, key=lambda r: r.rebalance)
    assert without.moves == without.warmup_moves == 0
    assert with_.moves <= rate / 100 * with_.placements
    assert with_.moves + with_.warmup_moves <= rate / 100 * (with_.placements + with_.warmup_placements)
    assert in_warmup or with_.warmup_moves == 0
    assert without.placements + without.failures == with_.placements + with_.failures == load.arrivals - load.warmup


def test_cli_rebalance_on_openb(capsys: pytest.CaptureFixture[str]) -> None:
    if not (OPENB / "openb_node_list_gpu_node.csv").is_file():
        pytest.skip("the openb trace is not in ../shared/data/openb")
    assert main(["bench", "rebalance", "--nodes", str(OPENB / "openb_node_list_gpu_node.csv"),
                 "--pods", str(OPENB / "openb_pod_list_default.csv"), "--seeds", "42", "--passes", "2",
                 "--warmup-passes", "0", "--limit", "1500", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["without_rebalancer"]["placements"] == 1500  # the first 1,500 arrivals all fit
