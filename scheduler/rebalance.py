"""Rebalancing: which running replicas to move, and where, so that the cluster serves better.

Placement decides once, when a pod arrives; the cluster then changes under it. Pods leave
and strand slivers of GPUs, a service's replicas bunch up on one node, a node runs hot. A
pending replica may then fit nowhere although the cluster has the GPUs free, only scattered.
This module plans the moves that fix that, as data, from one snapshot:

- ``defragment``: the fewest moves that make a pending replica fit. For each node the
  replica could use, the movable pods that would have to leave are found by simulation
  (remove them all, then give back every one that is not needed); nodes are tried in order
  of how little must move, and on each the pods that leave are placed elsewhere with the
  same policy as the scheduler, on a copy of the snapshot. The first node where all of them
  find room wins; the search is bounded (``RebalanceSettings.candidate_nodes``). Nodes where
  a pod that must leave needs at least what the replica needs (another 8-GPU task on an
  otherwise empty node) are tried last: that pod would need the room the replica could not find.
- ``prepare``: when no node can be cleared within the budgets, the first moves toward clearing
  the cheapest one, for a caller that keeps that node for the replica (Kubernetes' nominated
  node) and finishes it in later cycles.
- ``spread_hot_spots``: replicas of one service bunched on a node (two more than on another
  node the service could use), and nodes whose measured GPU utilisation is far above the
  rest, each lose a replica to a node that evens it out.
- ``consolidate``: GPUs holding only a small share are emptied into the spare room of other
  partly used GPUs, so that whole-GPU replicas find whole GPUs again (least used first, or
  the most per move first; optionally only where the node keeps CPU for a whole-GPU replica).
- ``rebalance``: all of them, within one cycle's budgets: pending replicas first (a replica no
  plan within the budgets places gets ``prepare``'s first moves, and one nominated earlier goes
  on with its own node), then hot spots, then (when ``RebalanceSettings.consolidate``)
  consolidation.
- ``revalidate``: the same plan checked against a fresh snapshot before the operator acts:
  every move must still apply, and the pending replica must still fit after them.

Budgets bound every plan: a cap on moves per cycle; a disruption budget per service (each
moved pod is one disruption of its service); a minimum time between two moves of one
replica (the last-move times and the current time are arguments: nothing here reads a
clock). Only pods described in ``movable`` move (Trireme's replicas; others are never
touched), and a gang's members move together or not at all.

A ``Move`` is make-before-break for the operator: it starts the replacement on ``to_node``
with ``gpu_indices``, waits until Triton reports the model ready, and only then drains
and deletes the old pod. The plan itself only lists the moves.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter

from trireme.scheduler.cluster import MILLI, BoundPod, ClusterSnapshot, NodeState
from trireme.scheduler.plan import select
from trireme.scheduler.policies import Policy, make_policy
from trireme.scheduler.preemption import released
from trireme.scheduler.requests import PodRequest

__all__ = ["CONSOLIDATE", "DEFRAGMENT", "HOT_NODE", "SKEWED_SERVICE", "Budgets", "Movable", "Move", "MovePlan",
           "RebalanceSettings", "apply_moves", "consolidate", "defragment", "gpu_milli_used", "prepare", "rebalance",
           "revalidate", "spread_hot_spots", "unbound"]

DEFRAGMENT = "defragment"
SKEWED_SERVICE = "skewed-service"
HOT_NODE = "hot-node"
CONSOLIDATE = "consolidate"
_POD_NAME = attrgetter("pod")


@dataclass(frozen=True)
class RebalanceSettings:
    """How much a rebalancing cycle may do, and when a spread counts as a hot spot."""

    max_moves_per_cycle: int = 4
    """Moves one cycle may plan. Every move costs a replica start and a drain: a handful per
    cycle keeps the cluster changing slowly enough for the operator to watch each one."""
    min_move_interval_s: float = 600.0
    """Seconds before a replica that was moved may move again: a model takes tens of seconds
    to minutes to load, and a replica moved back and forth serves nothing meanwhile."""
    default_disruption_budget: int = 1
    """Moves per cycle for a service whose budget is not given: one at a time, the most any
    service with two or more replicas can take without losing half its capacity."""
    candidate_nodes: int = 16
    """Target nodes simulated per pending replica, cheapest first: bounds the search on large
    clusters, where the cheapest few nodes almost always contain the best."""
    max_pods_per_candidate: int = 4
    """Nodes that would need more moves than this are not tried: beyond a few moves, waiting
    for a pod to leave on its own is cheaper than making room."""
    skew: int = 2
    """A service's replicas are bunched when a node runs this many more of them than another
    node that could take one: moving one replica then narrows the gap without reversing it."""
    hot_utilisation: float = 0.9
    """Measured GPU utilisation (0..1) at or above which a node may be hot."""
    hot_margin: float = 0.3
    """...and only when it is this far above the mean of the nodes measured: a uniformly busy
    cluster has no hot spot to move load to."""
    prepare: bool = True
    """Whether ``rebalance`` starts clearing a node for a pending replica that no plan within the cycle's
    budgets places (``prepare``): the replica is nominated to that node, and later cycles finish it. Without
    it, a replica that needs more moves than one cycle allows (an 8-GPU one on a busy cluster) waits until
    departures happen to make room."""
    consolidate: bool = False
    """Whether ``rebalance`` spends what is left of a cycle's budget on consolidation. Off by
    default: it moves replicas that serve well for capacity nobody may be waiting for; turn it on
    where whole-GPU replicas often wait while shares are scattered."""
    consolidate_below_milli: int = 500
    """GPUs holding at most this many milli-GPUs are worth emptying: their pods are small enough
    to fit into the spare room other GPUs leave, and the GPU freed is whole again."""
    consolidate_min_cpu_milli: int = 0
    """CPU (milli-CPUs) a node must have free once a GPU's pods have left for that GPU to be worth
    emptying: a whole GPU on a node without CPU to go with it serves no whole-GPU replica. 0: any."""
    consolidate_fullest_first: bool = False
    """Empty the GPUs whose pods hold the most per move first (what a move takes out of the spare
    room of other GPUs, where no whole-GPU replica could use it), instead of the least used first."""


@dataclass(frozen=True)
class Movable:
    """A running pod the rebalancer may move: what it asks for (to place it again elsewhere),
    the replica it serves (for the minimum interval between moves) and its gang, if any."""

    request: PodRequest
    replica: str = ""
    """Stable identity of the replica across moves (the pod name changes when it is replaced);
    '' uses the pod name."""
    gang: str = ""
    """The gang (pipeline-parallel replica) the pod belongs to; its members move together."""


@dataclass(frozen=True)
class Budgets:
    """What this cycle may disrupt, from the operator's state.

    ``services`` maps a service to how many of its pods may move now (its disruption budget
    less what is already disrupted); ``last_moved`` maps a replica to when it last moved, and
    ``now`` is the current time, both in seconds on one clock.
    """

    now: float = 0.0
    services: Mapping[str, int] = field(default_factory=dict)
    last_moved: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Move:
    """Move ``pod`` from ``from_node`` to ``to_node``, on GPUs ``gpu_indices`` there."""

    pod: str
    from_node: str
    to_node: str
    gpu_indices: tuple[int, ...]
    reason: str


@dataclass(frozen=True)
class MovePlan:
    """Moves in the order to make them, the snapshot after them, and for a defragmentation the
    pending pod they make room for with the node and GPUs it will take."""

    moves: tuple[Move, ...]
    snapshot: ClusterSnapshot
    pending: PodRequest | None = None
    node: str = ""
    gpu_indices: tuple[int, ...] = ()
    complete: bool = True
    """Whether ``pending`` fits on ``node`` once the moves are made; False for the first moves of clearing
    it (``prepare``), which later cycles finish."""

    def __len__(self) -> int:
        return len(self.moves)


# --- simulation ------------------------------------------------------------------------------


def unbound(snapshot: ClusterSnapshot, pod: str) -> ClusterSnapshot:
    """``snapshot`` after ``pod`` left its node (unchanged when it is not bound); one node's state
    changes, the rest is shared, as in ``ClusterSnapshot.with_bound``."""
    bound = snapshot.bound
    names = list(map(_POD_NAME, bound))  # C-level: snapshots of a busy cluster hold thousands of pods
    names.reverse()
    try:
        index = len(bound) - 1 - names.index(pod)
    except ValueError:
        return snapshot
    gone = bound[index]
    return _with_state(snapshot, gone.node, released(snapshot.states[gone.node], gone),
                       bound[:index] + bound[index + 1:])


def _with_state(snapshot: ClusterSnapshot, node: str, new: NodeState, bound: tuple[BoundPod, ...]
                ) -> ClusterSnapshot:
    old = snapshot.states[node]
    states = dict(snapshot.states)
    states[node] = new
    groups = dict(snapshot.groups)
    members = groups[old]
    if len(members) == 1:
        del groups[old]
    else:
        position = bisect.bisect_left(members, node)
        groups[old] = members[:position] + members[position + 1:]
    joined = groups.get(new)
    if joined is None:
        groups[new] = (node,)
    else:
        position = bisect.bisect_left(joined, node)
        groups[new] = joined[:position] + (node,) + joined[position:]
    return ClusterSnapshot(states, bound, groups)


def _rebound(snapshot: ClusterSnapshot, pod: BoundPod, node: str, gpus: tuple[int, ...],
             request: PodRequest | None) -> ClusterSnapshot:
    """``snapshot`` with ``pod`` bound again on ``node``/``gpus``; ValueError when it does not fit."""
    state = snapshot.states.get(node)
    if state is None:
        raise ValueError(f"node {node} does not exist")
    milli = pod.gpu_milli
    if request is not None:
        milli = request.milli_on(state) if gpus else 0
    return snapshot.with_bound(BoundPod(pod.pod, node, tuple(gpus), milli, pod.cpu_milli, pod.memory_mib,
                                        pod.service))


def apply_moves(snapshot: ClusterSnapshot, moves: Iterable[Move],
                movable: Mapping[str, Movable] | None = None) -> ClusterSnapshot:
    """The snapshot after ``moves``, in order. ValueError when a move does not apply: its pod is
    not bound on ``from_node``, or its GPUs, CPU or memory are not free on ``to_node``."""
    movable = movable or {}
    for move in moves:
        pod = _find(snapshot, move.pod)
        if pod is None or pod.node != move.from_node:
            raise ValueError(f"{move.pod} is not bound on {move.from_node}")
        info = movable.get(move.pod)
        snapshot = _rebound(unbound(snapshot, move.pod), pod, move.to_node, move.gpu_indices,
                            info.request if info else None)
    return snapshot


def _find(snapshot: ClusterSnapshot, pod: str) -> BoundPod | None:
    for bound in reversed(snapshot.bound):
        if bound.pod == pod:
            return bound
    return None


# --- budgets ---------------------------------------------------------------------------------


class _Allowance:
    """What is left of one cycle's budgets while a plan is built."""

    def __init__(self, settings: RebalanceSettings, budgets: Budgets, cap: int | None) -> None:
        self.settings = settings
        self.budgets = budgets
        self.moves_left = settings.max_moves_per_cycle if cap is None else min(cap, settings.max_moves_per_cycle)
        self.by_service: dict[str, int] = {}
        self.moved: set[str] = set()

    def service_left(self, service: str) -> int:
        if not service:
            return self.moves_left
        start = self.budgets.services.get(service, self.settings.default_disruption_budget)
        return start - self.by_service.get(service, 0)

    def rested(self, pod: str, info: Movable) -> bool:
        """Whether the replica is allowed to move: not moved this cycle nor within the interval."""
        replica = info.replica or pod
        if replica in self.moved:
            return False
        last = self.budgets.last_moved.get(replica)
        return last is None or self.budgets.now - last >= self.settings.min_move_interval_s

    def affords(self, pods: Sequence[BoundPod]) -> bool:
        if len(pods) > self.moves_left:
            return False
        wanted: dict[str, int] = {}
        for pod in pods:
            if pod.service:
                wanted[pod.service] = wanted.get(pod.service, 0) + 1
        return all(count <= self.service_left(service) for service, count in wanted.items())

    def spend(self, pods: Sequence[BoundPod], movable: Mapping[str, Movable]) -> None:
        self.moves_left -= len(pods)
        for pod in pods:
            if pod.service:
                self.by_service[pod.service] = self.by_service.get(pod.service, 0) + 1
            self.moved.add(movable[pod.pod].replica or pod.pod)


def _units(snapshot: ClusterSnapshot, movable: Mapping[str, Movable], allowance: _Allowance
           ) -> dict[str, tuple[BoundPod, ...]]:
    """Pods that may move now, as units keyed by pod (a pod alone) or by ``gang:NAME`` (a whole
    gang: every member bound, movable and rested, else none of them)."""
    gangs: dict[str, list[str]] = {}
    for pod, info in movable.items():
        if info.gang:
            gangs.setdefault(info.gang, []).append(pod)
    by_pod = {b.pod: b for b in snapshot.bound if b.pod in movable}
    units: dict[str, tuple[BoundPod, ...]] = {}
    for pod, bound in by_pod.items():
        info = movable[pod]
        if not info.gang:
            if allowance.rested(pod, info):
                units[pod] = (bound,)
            continue
        members = sorted(gangs[info.gang])
        if all(m in by_pod and allowance.rested(m, movable[m]) for m in members):
            units[f"gang:{info.gang}"] = tuple(by_pod[m] for m in members)
    return units


# --- defragmentation -------------------------------------------------------------------------


def defragment(snapshot: ClusterSnapshot, request: PodRequest, policy: Policy, movable: Mapping[str, Movable],
               budgets: Budgets = Budgets(), settings: RebalanceSettings = RebalanceSettings(), *,
               max_moves: int | None = None, reserved: frozenset[str] = frozenset()) -> MovePlan | None:
    """The fewest moves after which ``request`` fits, or None when none within the budgets does.

    A plan without moves means the request fits already. ``max_moves`` lowers the cycle's cap
    (a caller's own rate limit). ``reserved`` names nodes being emptied for other pending
    replicas (``prepare``): pods moved away do not go there."""
    allowance = _Allowance(settings, budgets, max_moves)
    return _defragment(snapshot, request, policy, movable, allowance, reserved)


def prepare(snapshot: ClusterSnapshot, request: PodRequest, policy: Policy, movable: Mapping[str, Movable],
            budgets: Budgets = Budgets(), settings: RebalanceSettings = RebalanceSettings(), *,
            max_moves: int | None = None, reserved: frozenset[str] = frozenset(),
            nodes: frozenset[str] | None = None) -> MovePlan | None:
    """The first moves toward room for ``request`` when ``defragment`` finds none within the budgets.

    A pending replica that needs a node emptied (an 8-GPU one) may need more moves than one cycle
    allows, and trying again from scratch each cycle need not get it closer: the room departures
    free meanwhile may go to other pods. Instead, the node that the fewest moves would clear (the
    same search as ``defragment``, up to ``settings.max_pods_per_candidate`` moves whatever the
    cycle's cap) is chosen, every pod that must leave is placed elsewhere in simulation, and as
    many of those moves as the budgets allow are planned, largest pod first.
    The caller keeps the node for the replica (``reserved`` in later calls, and its own
    placement keeps other pods off it while they fit elsewhere); the next cycle finishes it,
    with fewer moves. ``nodes``, when given, are the only nodes considered (a caller that
    finishes the nodes it already keeps before starting another).

    The plan's ``node`` names the node being emptied and ``pending`` is ``request``; it may
    have no moves (the budget is spent, yet the node is worth keeping). None when the request
    fits already (``defragment`` places it) or no node can be emptied for it."""
    return _prepare(snapshot, request, policy, movable, _Allowance(settings, budgets, max_moves), reserved, nodes)


def _prepare(snapshot: ClusterSnapshot, request: PodRequest, policy: Policy, movable: Mapping[str, Movable],
             allowance: _Allowance, reserved: frozenset[str] = frozenset(), nodes: frozenset[str] | None = None
             ) -> MovePlan | None:
    settings = allowance.settings
    if select(snapshot, request, policy) is not None or request.problem():
        return None
    found = _candidates(snapshot, request, movable, allowance, settings.max_pods_per_candidate)
    if found is None:
        return None
    units, candidates = found
    tried = 0
    for _, _, _, node, leaving in candidates:
        if nodes is not None and node not in nodes:
            continue
        if tried >= settings.candidate_nodes:
            break
        tried += 1
        pods = [b for unit in leaving for b in units[unit]]
        trial = _relocate(snapshot, node, pods, policy, movable, reserved)
        if trial is None:
            continue
        first: list[Move] = []
        taken: list[BoundPod] = []
        by_pod = {b.pod: b for b in pods}
        for move in trial[1]:
            unit = [by_pod[move.pod]]
            if not allowance.affords(taken + unit):
                break
            taken.extend(unit)
            first.append(move)
        if any(movable[b.pod].gang for b in taken):
            first, taken = [], []  # a gang moves whole, with its node's room: only in a full plan
        allowance.spend(taken, movable)
        return MovePlan(tuple(first), apply_moves(snapshot, first, movable), request, node, complete=False)
    return None


def _defragment(snapshot: ClusterSnapshot, request: PodRequest, policy: Policy, movable: Mapping[str, Movable],
                allowance: _Allowance, reserved: frozenset[str] = frozenset()) -> MovePlan | None:
    chosen = select(snapshot, request, policy)
    if chosen is not None:
        return MovePlan((), snapshot, request, chosen[0], chosen[1])
    if request.problem() or allowance.moves_left <= 0:
        return None
    found = _candidates(snapshot, request, movable, allowance,
                        min(allowance.moves_left, allowance.settings.max_pods_per_candidate))
    if found is None:
        return None
    units, candidates = found
    for _, _, _, node, leaving in candidates[:allowance.settings.candidate_nodes]:
        pods = [b for unit in leaving for b in units[unit]]
        if not allowance.affords(pods):
            continue
        trial = _relocate(snapshot, node, pods, policy, movable, reserved)
        if trial is None:
            continue
        after, moves = trial
        target = select(after, request, policy, allowed=frozenset({node}))
        if target is None:
            continue
        allowance.spend(pods, movable)
        return MovePlan(tuple(moves), after, request, target[0], target[1])
    return None


def _candidates(snapshot: ClusterSnapshot, request: PodRequest, movable: Mapping[str, Movable],
                allowance: _Allowance, limit: int
                ) -> tuple[dict[str, tuple[BoundPod, ...]], list[tuple[bool, int, int, str, tuple[str, ...]]]] | None:
    """The movable units and, cheapest first, the nodes ``request`` would fit on once at most
    ``limit`` pods have left: (hopeless, pods to move, milli-GPUs they hold, node, units leaving).
    Nodes where a pod that must leave needs as much as the request come last."""
    units = _units(snapshot, movable, allowance)
    if not units:
        return None
    on_node: dict[str, list[str]] = {}
    for key, unit in units.items():
        for member in unit:
            on_node.setdefault(member.node, []).append(key)
    feasible = _feasibility()
    candidates: list[tuple[bool, int, int, str, tuple[str, ...]]] = []
    for node in sorted(on_node):
        leaving = _leaving(snapshot.states[node], node, request, sorted(set(on_node[node])), units, feasible)
        if leaving is None:
            continue
        pods = [b for unit in leaving for b in units[unit]]
        if len(pods) > limit:
            continue
        moved_milli = sum(b.gpu_milli * len(b.gpu_indices) for b in pods)
        hopeless = any(_needs_as_much(b, movable[b.pod].request, request) for b in pods if b.node == node)
        candidates.append((hopeless, len(pods), moved_milli, node, leaving))
    candidates.sort()
    return units, candidates


def _needs_as_much(pod: BoundPod, mine: PodRequest, request: PodRequest) -> bool:
    """Whether ``pod`` holds at least what ``request`` asks for (GPUs and each GPU's share, CPU,
    memory) and accepts no GPU product the request does not: it needs the room the request could
    not find, so moving it rarely succeeds (on a busy cluster, another 8-GPU task on an otherwise
    empty node is the cheapest node to clear for an 8-GPU request, and the one that never clears).
    Such nodes are tried last. Shares given as GPU memory are never compared (their size depends
    on the node)."""
    if request.gpu_memory_mib or mine.gpu_memory_mib:
        return False
    wanted = request.gpu_milli if request.shared else (MILLI if request.gpus else 0)
    if len(pod.gpu_indices) < request.gpus_needed() or (wanted and pod.gpu_milli < wanted):
        return False
    if pod.cpu_milli < request.cpu_milli or pod.memory_mib < request.memory_mib:
        return False
    return not request.products or (bool(mine.products) and set(mine.products) <= set(request.products))


def _feasibility() -> Policy:
    """Fit alone, without a preference: the cheap check used to screen nodes."""
    return make_policy("firstfit")


def _leaving(state: NodeState, node: str, request: PodRequest, pods: Sequence[str],
             units: Mapping[str, tuple[BoundPod, ...]], feasible: Policy) -> tuple[str, ...] | None:
    """The units (by key) that must leave ``node`` for ``request`` to fit there: a minimal set,
    or None when even all of them leaving is not enough."""
    emptied = state
    for key in pods:
        for member in units[key]:
            if member.node == node:
                emptied = released(emptied, member)
    if feasible.evaluate(emptied, request)[0] is not None:
        return None
    best: tuple[str, ...] | None = None
    # Two orders of giving pods back: keep the largest (few large pods leave) or the smallest
    # (the pods that leave are easy to place elsewhere); the smaller set wins.
    for largest_first in (True, False):
        order = sorted(pods, key=lambda p: (_size(units[p], node), p), reverse=largest_first)
        leaving = set(order)
        current = emptied
        for key in order:
            trial: NodeState | None = current
            for member in units[key]:
                if member.node == node and trial is not None:
                    trial = _taken_again(trial, member)
            if trial is not None and feasible.evaluate(trial, request)[0] is None:
                current = trial
                leaving.discard(key)
        if best is None or len(leaving) < len(best):
            best = tuple(sorted(leaving))
    return best


def _size(unit: Sequence[BoundPod], node: str) -> tuple[int, int]:
    here = [b for b in unit if b.node == node]
    return sum(b.gpu_milli * len(b.gpu_indices) for b in here), sum(b.cpu_milli for b in here)


def _taken_again(state: NodeState, pod: BoundPod) -> NodeState | None:
    try:
        return state.taken(pod.gpu_indices, pod.gpu_milli, pod.cpu_milli, pod.memory_mib)
    except ValueError:
        return None


def _relocate(snapshot: ClusterSnapshot, node: str, pods: Sequence[BoundPod], policy: Policy,
              movable: Mapping[str, Movable], reserved: frozenset[str] = frozenset()
              ) -> tuple[ClusterSnapshot, list[Move]] | None:
    """Take ``pods`` off their nodes and place each elsewhere, never on ``node`` nor a ``reserved``
    node, largest first; None when one of them fits nowhere. Members of a gang that are not on
    ``node`` are replaced with the rest of their gang but stay on their own node when they can
    (placed first)."""
    trial = snapshot
    for pod in pods:
        trial = unbound(trial, pod.pod)
    moves: list[Move] = []
    order = sorted(pods, key=lambda b: (b.node == node, -len(b.gpu_indices) * b.gpu_milli, -b.cpu_milli, b.pod))
    for pod in order:
        request = movable[pod.pod].request
        avoid = {node} | reserved
        if request.spread and request.service:
            avoid |= {b.node for b in trial.bound if b.service == request.service}
        chosen = None
        if pod.node != node:
            chosen = select(trial, request, policy, allowed=frozenset({pod.node}))
        if chosen is None:
            chosen = select(trial, request, policy, avoid=frozenset(avoid))
        if chosen is None:
            return None
        target, gpus = chosen
        try:
            trial = _rebound(trial, pod, target, gpus, request)
        except ValueError:
            return None
        moves.append(Move(pod.pod, pod.node, target, gpus, f"{DEFRAGMENT}: make room on {node}"))
    return trial, moves


# --- hot spots -------------------------------------------------------------------------------


def spread_hot_spots(snapshot: ClusterSnapshot, policy: Policy, movable: Mapping[str, Movable],
                     budgets: Budgets = Budgets(), settings: RebalanceSettings = RebalanceSettings(), *,
                     utilisation: Mapping[str, float] | None = None, max_moves: int | None = None) -> MovePlan:
    """Moves that even out bunched replicas of a service and, given measured GPU ``utilisation``
    per node (0..1), nodes far hotter than the rest; within the budgets."""
    allowance = _Allowance(settings, budgets, max_moves)
    return _spread(snapshot, policy, movable, allowance, utilisation or {})


def _spread(snapshot: ClusterSnapshot, policy: Policy, movable: Mapping[str, Movable], allowance: _Allowance,
            utilisation: Mapping[str, float]) -> MovePlan:
    moves: list[Move] = []
    tried: set[tuple[str, str]] = set()
    while allowance.moves_left > 0:
        step = _skew_step(snapshot, policy, movable, allowance, tried)
        if step is None:
            break
        snapshot, move = step
        moves.append(move)
    hot = _hot_nodes(snapshot, utilisation, allowance.settings)
    if hot:
        cold = frozenset(n for n, u in utilisation.items() if n in snapshot.states
                         and u < sum(utilisation.values()) / len(utilisation))
        for node in hot:
            if allowance.moves_left <= 0:
                break
            units = _units(snapshot, movable, allowance)
            here = sorted((b for b in snapshot.bound if b.node == node and b.pod in units
                           and len(units[b.pod]) == 1 and b.gpu_indices),
                          key=lambda b: (-b.gpu_milli * len(b.gpu_indices), b.pod))
            for pod in here:
                if not allowance.affords([pod]):
                    continue
                request = movable[pod.pod].request
                trial = unbound(snapshot, pod.pod)
                chosen = select(trial, request, policy, avoid=frozenset({node}), allowed=cold)
                if chosen is None:
                    continue
                snapshot = _rebound(trial, pod, chosen[0], chosen[1], request)
                allowance.spend([pod], movable)
                moves.append(Move(pod.pod, node, chosen[0], chosen[1],
                                  f"{HOT_NODE}: GPU utilisation {utilisation[node]:.0%} on {node}"))
                break
    return MovePlan(tuple(moves), snapshot)


def _skew_step(snapshot: ClusterSnapshot, policy: Policy, movable: Mapping[str, Movable], allowance: _Allowance,
               tried: set[tuple[str, str]]) -> tuple[ClusterSnapshot, Move] | None:
    """One move of a replica from the node where its service is most bunched to a node where the
    service runs at least ``skew`` fewer replicas; None when no service is bunched."""
    units = _units(snapshot, movable, allowance)
    counts: dict[str, dict[str, int]] = {}
    for bound in snapshot.bound:
        if bound.service and bound.pod in movable:
            per_node = counts.setdefault(bound.service, {})
            per_node[bound.node] = per_node.get(bound.node, 0) + 1
    worst = sorted(((-count, service, node) for service, per_node in counts.items()
                    for node, count in per_node.items() if count >= allowance.settings.skew
                    and (service, node) not in tried), key=lambda x: x)
    for negative, service, node in worst:
        count = -negative
        crowded = frozenset(n for n, c in counts[service].items() if c > count - allowance.settings.skew)
        pods = sorted((b for b in snapshot.bound if b.node == node and b.service == service and b.pod in units
                       and len(units[b.pod]) == 1), key=lambda b: b.pod)
        for pod in pods:
            if not allowance.affords([pod]):
                continue
            request = movable[pod.pod].request
            trial = unbound(snapshot, pod.pod)
            chosen = select(trial, request, policy, avoid=crowded)
            if chosen is None:
                continue
            allowance.spend([pod], movable)
            return (_rebound(trial, pod, chosen[0], chosen[1], request),
                    Move(pod.pod, node, chosen[0], chosen[1],
                         f"{SKEWED_SERVICE}: {count} replicas of {service} on {node}"))
        tried.add((service, node))  # nothing of it can move now: do not look again this cycle
    return None


def _hot_nodes(snapshot: ClusterSnapshot, utilisation: Mapping[str, float], settings: RebalanceSettings
               ) -> list[str]:
    known = {n: u for n, u in utilisation.items() if n in snapshot.states and math.isfinite(u)}
    if len(known) < 2:
        return []
    mean = sum(known.values()) / len(known)
    return sorted((n for n, u in known.items() if u >= settings.hot_utilisation and u - mean >= settings.hot_margin),
                  key=lambda n: (-known[n], n))


# --- consolidation ---------------------------------------------------------------------------


def consolidate(snapshot: ClusterSnapshot, policy: Policy, movable: Mapping[str, Movable],
                budgets: Budgets = Budgets(), settings: RebalanceSettings = RebalanceSettings(), *,
                max_moves: int | None = None) -> MovePlan:
    """Moves that empty lightly used GPUs into the spare room of other partly used GPUs.

    A whole-GPU replica needs a GPU nobody holds a share of; shares scattered one per GPU
    leave none. A GPU holding at most ``settings.consolidate_below_milli`` is emptied when
    every pod on it may move and each finds a place, with the scheduler's policy, on a GPU
    that is already partly used (taking an idle GPU would gain nothing). Least used GPUs
    first (``settings.consolidate_fullest_first``: the most milli-GPUs per move first); GPUs
    whose node would keep less CPU free than ``settings.consolidate_min_cpu_milli``, and GPUs
    holding a pod larger than any other GPU's spare room, are left alone; within the budgets."""
    allowance = _Allowance(settings, budgets, max_moves)
    return _consolidate(snapshot, policy, movable, allowance)


def _consolidate(snapshot: ClusterSnapshot, policy: Policy, movable: Mapping[str, Movable],
                 allowance: _Allowance) -> MovePlan:
    moves: list[Move] = []
    units = _units(snapshot, movable, allowance)
    on_gpu: dict[tuple[str, int], list[BoundPod]] = {}
    for pod in snapshot.bound:
        for index in pod.gpu_indices:
            on_gpu.setdefault((pod.node, index), []).append(pod)
    # The most any pod can take elsewhere: the largest spare room of a partly used GPU.
    room = max((f for state in snapshot.states.values() for f in state.gpu_free_milli if f < MILLI), default=0)
    light = []
    settings = allowance.settings
    for (node, index), pods in on_gpu.items():
        state = snapshot.states[node]
        used = MILLI - state.gpu_free_milli[index]
        if 0 < used <= settings.consolidate_below_milli and all(p.gpu_milli <= room for p in pods) \
                and state.cpu_free_milli + sum(p.cpu_milli for p in pods) >= settings.consolidate_min_cpu_milli \
                and all(p.pod in units and len(units[p.pod]) == 1 and len(p.gpu_indices) == 1 for p in pods):
            order = -used / len(pods) if settings.consolidate_fullest_first else used
            light.append((order, node, index, tuple(sorted(pods, key=lambda p: p.pod))))
    light.sort(key=lambda item: item[:3])
    moved: set[str] = set()
    tries = allowance.settings.candidate_nodes
    for _, node, index, pods in light:
        if tries <= 0 or allowance.moves_left <= 0:
            break
        if allowance.moves_left < len(pods) or not allowance.affords(pods) or any(p.pod in moved for p in pods):
            continue
        tries -= 1
        found = _pack(snapshot, node, index, pods, policy, movable)
        if found is None:
            continue
        moved.update(p.pod for p in pods)
        snapshot, made = found
        allowance.spend(pods, movable)
        moves.extend(made)
    return MovePlan(tuple(moves), snapshot)


def _pack(snapshot: ClusterSnapshot, node: str, index: int, pods: Sequence[BoundPod], policy: Policy,
          movable: Mapping[str, Movable]) -> tuple[ClusterSnapshot, list[Move]] | None:
    """Move ``pods`` off GPU ``index`` of ``node`` onto partly used GPUs; None when one cannot."""
    trial = snapshot
    for pod in pods:
        trial = unbound(trial, pod.pod)
    emptied = trial.states[node]
    # The emptied GPU must not take them back: simulate it as full while placing.
    blocked = emptied.gpu_free_milli[:index] + (0,) + emptied.gpu_free_milli[index + 1:]
    trial = _with_state(trial, node, _replace_free(emptied, blocked), trial.bound)
    moves = []
    for pod in sorted(pods, key=lambda b: (-b.gpu_milli, b.pod)):
        request = movable[pod.pod].request
        before = trial
        chosen = select(trial, request, policy)
        if chosen is None:
            return None
        target, gpus = chosen
        if any(before.states[target].gpu_free_milli[g] == MILLI for g in gpus):
            return None  # it would take an idle GPU: nothing gained
        trial = _rebound(trial, pod, target, gpus, request)
        moves.append(Move(pod.pod, node, target, gpus, f"{CONSOLIDATE}: empty GPU {index} of {node}"))
    state = trial.states[node]
    restored = state.gpu_free_milli[:index] + (MILLI,) + state.gpu_free_milli[index + 1:]
    return _with_state(trial, node, _replace_free(state, restored), trial.bound), moves


def _replace_free(state: NodeState, free: tuple[int, ...]) -> NodeState:
    return replace(state, gpu_free_milli=free)


# --- a cycle ---------------------------------------------------------------------------------


def rebalance(snapshot: ClusterSnapshot, pending: Sequence[PodRequest], policy: Policy,
              movable: Mapping[str, Movable], budgets: Budgets = Budgets(),
              settings: RebalanceSettings = RebalanceSettings(), *,
              utilisation: Mapping[str, float] | None = None, nominated: Mapping[str, str] | None = None
              ) -> MovePlan:
    """One cycle: room for pending replicas first (higher priority first, then in the order
    given), then hot spots, all within one set of budgets. The returned plan's snapshot has every
    move made and the pending replicas that got room placed; ``pending``/``node`` name the last
    defragmented replica, and a defragmentation's moves come before the next one's.

    A pending replica that no plan within the budgets places gets the first moves of clearing a
    node instead (``RebalanceSettings.prepare``; the plan is then not ``complete``), and no replica
    after it is considered in this cycle: the caller nominates it to the node. When the budgets let
    nothing move for it, the replicas after it are still considered. ``nominated`` maps
    pending replicas to the nodes earlier cycles nominated them to: such a replica goes on clearing
    its own node while that can still be cleared, and pods moved for any replica avoid the others'."""
    nominated = dict(nominated or {})
    allowance = _Allowance(settings, budgets, None)
    moves: list[Move] = []
    last: MovePlan | None = None
    for request in sorted(pending, key=lambda r: -r.priority):
        if allowance.moves_left <= 0:
            break
        own = nominated.get(request.pod, "")
        reserved = frozenset(nominated.values()) - {own}
        found = _defragment(snapshot, request, policy, movable, allowance, reserved)
        if found is None and settings.prepare:
            if own:
                found = _prepare(snapshot, request, policy, movable, allowance, reserved, frozenset({own}))
            if found is None:
                found = _prepare(snapshot, request, policy, movable, allowance, reserved)
            if found is not None and found.moves:
                moves.extend(found.moves)
                snapshot = found.snapshot
                last = found
                break
            found = None  # nothing can move for it now (budgets): the replicas after it may still be helped
        if found is None or not found.moves:
            if found is not None:
                snapshot = found.snapshot.with_bound(_pending_bound(found))
            continue
        moves.extend(found.moves)
        snapshot = found.snapshot.with_bound(_pending_bound(found))
        last = found
    spread = _spread(snapshot, policy, movable, allowance, utilisation or {})
    moves.extend(spread.moves)
    snapshot = spread.snapshot
    if settings.consolidate and allowance.moves_left > 0:
        packed = _consolidate(snapshot, policy, movable, allowance)
        moves.extend(packed.moves)
        snapshot = packed.snapshot
    if last is None:
        return MovePlan(tuple(moves), snapshot)
    return MovePlan(tuple(moves), snapshot, last.pending, last.node, last.gpu_indices, last.complete)


def _pending_bound(found: MovePlan) -> BoundPod:
    request = found.pending
    assert request is not None
    state = found.snapshot.states[found.node]
    milli = request.milli_on(state) if found.gpu_indices else 0
    return BoundPod(request.pod, found.node, found.gpu_indices, milli, request.cpu_milli, request.memory_mib,
                    request.service)


def revalidate(move_plan: MovePlan, fresh: ClusterSnapshot, movable: Mapping[str, Movable] | None = None
               ) -> tuple[MovePlan | None, str]:
    """``move_plan`` checked against ``fresh`` (a newer snapshot) before acting.

    Returns the plan re-simulated on ``fresh`` and '' when every move still applies (its pod is
    still on ``from_node`` and its GPUs, CPU and memory are free on ``to_node``) and, for a
    complete defragmentation, the pending replica still fits on its node afterwards; else None
    and why.
    Acting on a stale plan could over-commit a node, so the operator re-plans instead."""
    try:
        after = apply_moves(fresh, move_plan.moves, movable)
    except ValueError as exc:
        return None, f"stale plan: {exc}"
    request = move_plan.pending
    if request is not None and move_plan.node:
        state = after.states.get(move_plan.node)
        if state is None:
            return None, f"stale plan: node {move_plan.node} is gone"
        if not move_plan.complete:
            return replace(move_plan, snapshot=after), ""
        reason = _feasibility().evaluate(state, request)[0]
        if reason is not None:
            return None, f"stale plan: {request.pod} no longer fits on {move_plan.node} ({reason})"
        milli = request.milli_on(state) if move_plan.gpu_indices else 0
        if any(not 0 <= i < state.gpu_count or state.gpu_free_milli[i] < milli for i in move_plan.gpu_indices):
            return None, f"stale plan: GPUs {list(move_plan.gpu_indices)} on {move_plan.node} are taken"
    return replace(move_plan, snapshot=after), ""


def gpu_milli_used(snapshot: ClusterSnapshot) -> int:
    """Milli-GPUs allocated over the whole cluster (a check that moves keep it unchanged)."""
    return sum(state.gpu_count * MILLI - sum(state.gpu_free_milli) for state in snapshot.states.values())
