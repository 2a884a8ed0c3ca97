"""Preemption: which lower-priority replicas to evict so that a higher-priority one fits.

When a pod fits nowhere, the scheduler may make room by evicting pods of lower priority
that their services allow to be preempted. The victims are found by simulation on a copy
of the snapshot, never by guessing:

1. On each node the pod could use, remove every eligible victim (and, for a victim that
   belongs to a gang, the rest of its gang, wherever it runs: a gang member is never
   evicted alone). If the pod still does not fit, the node cannot help.
2. Give victims back one unit at a time, highest priority first, keeping each reprieve
   that still leaves room: what remains is a minimal set for that node.
3. Drop a node whose set would take more from a service than its disruption budget allows.
4. Of the nodes left, choose the one whose victims have the lowest highest priority, then
   the fewest victims, then the lowest total priority, then the first name.

A gang (pipeline-parallel replica) that fits nowhere is handled over the whole cluster:
victims are removed lowest priority first until the gang can be placed, then given back
highest priority first while it still can.

The result is a ``Preempt`` decision (data): the operator deletes the victims gracefully,
records Events on both services, and places the pod in a later cycle once the resources
are free. Nothing here reads a clock or the cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from trireme.scheduler.cluster import BoundPod, ClusterSnapshot, NodeState
from trireme.scheduler.plan import Bind, place_gang
from trireme.scheduler.policies import Policy
from trireme.scheduler.requests import Gang, PodRequest, Request


@dataclass(frozen=True)
class Victim:
    """What preemption needs to know about a bound pod besides its resources."""

    priority: int = 0
    preemptible: bool = True
    """Whether the pod's service lets its replicas be evicted for higher priorities."""
    service: str = ""
    """``namespace/name`` of the InferenceService, for its disruption budget; '' for other pods."""
    gang: str = ""
    """The gang (pipeline-parallel replica) the pod belongs to; '' when it is on its own."""


@dataclass(frozen=True)
class Preempt:
    """Evict ``victims`` (pods, ``namespace/name``) so that ``pod`` fits on ``node`` (the first
    node of a gang's placement for a gang); ``reason`` says why, for Events."""

    pod: str
    node: str
    victims: tuple[str, ...]
    reason: str


def find_preemption(snapshot: ClusterSnapshot, request: Request, policy: Policy, victims: Mapping[str, Victim],
                    budgets: Mapping[str, int] | None = None) -> Preempt | None:
    """The least disruptive eviction that lets ``request`` fit, or None when none does.

    ``victims`` describes the bound pods that may be considered (pods missing from it are never
    evicted); ``budgets`` maps a service to how many of its pods may be evicted now (missing:
    unlimited, as for pods outside any InferenceService's budget).
    """
    budgets = budgets or {}
    priority = _priority(request)
    eligible = {b.pod: b for b in snapshot.bound
                if b.pod in victims and victims[b.pod].preemptible and victims[b.pod].priority < priority}
    if not eligible:
        return None
    units = _units(eligible, victims)
    if isinstance(request, Gang):
        return _preempt_for_gang(snapshot, request, policy, eligible, units, victims, budgets)
    return _preempt_on_a_node(snapshot, request, policy, eligible, units, victims, budgets)


def _preempt_on_a_node(snapshot: ClusterSnapshot, request: PodRequest, policy: Policy,
                       eligible: Mapping[str, BoundPod], units: Mapping[str, tuple[str, ...]],
                       victims: Mapping[str, Victim], budgets: Mapping[str, int]) -> Preempt | None:
    best: tuple[tuple[int, int, int, str], Preempt] | None = None
    by_node: dict[str, list[str]] = {}
    for pod in eligible.values():
        by_node.setdefault(pod.node, []).append(pod.pod)
    for node in sorted(by_node):
        chosen = _units_for(by_node[node], units)
        removed = _members(chosen, units)
        if not _fits_on(snapshot, node, request, policy, removed, eligible):
            continue
        for unit in sorted(chosen, key=lambda u: (-_unit_priority(u, units, victims), u)):
            trial = removed - set(units[unit])
            if _fits_on(snapshot, node, request, policy, trial, eligible):
                removed = trial
        if not removed or not _within_budgets(removed, victims, budgets):
            continue
        key = _cost(removed, victims) + (node,)
        if best is None or key < best[0]:
            best = (key, Preempt(request.pod, node, tuple(sorted(removed)), _reason(request.pod, removed, victims)))
    return best[1] if best else None


def _preempt_for_gang(snapshot: ClusterSnapshot, gang: Gang, policy: Policy, eligible: Mapping[str, BoundPod],
                      units: Mapping[str, tuple[str, ...]], victims: Mapping[str, Victim],
                      budgets: Mapping[str, int]) -> Preempt | None:
    order = sorted(units, key=lambda u: (_unit_priority(u, units, victims), u))
    removed: set[str] = set()
    for unit in order:
        removed |= set(units[unit])
        if _gang_fits(snapshot, gang, policy, removed, eligible):
            break
    else:
        return None
    for unit in reversed(order):
        trial = removed - set(units[unit])
        if trial != removed and _gang_fits(snapshot, gang, policy, trial, eligible):
            removed = trial
    if not _within_budgets(removed, victims, budgets):
        return None
    first = min(eligible[pod].node for pod in removed)
    return Preempt(gang.name, first, tuple(sorted(removed)), _reason(gang.name, removed, victims))


# -- simulation -------------------------------------------------------------------------------------------


def without(snapshot: ClusterSnapshot, pods: Iterable[str]) -> ClusterSnapshot:
    """A copy of ``snapshot`` in which ``pods`` have given back what they held."""
    gone = set(pods)
    states = dict(snapshot.states)
    for pod in snapshot.bound:
        if pod.pod in gone:
            states[pod.node] = released(states[pod.node], pod)
    return ClusterSnapshot.of(states, (p for p in snapshot.bound if p.pod not in gone))


def released(state: NodeState, pod: BoundPod) -> NodeState:
    """``state`` after ``pod`` left: its GPU shares, CPU, memory and pod slot are free again."""
    free = list(state.gpu_free_milli)
    for index in pod.gpu_indices:
        if 0 <= index < len(free):
            free[index] += pod.gpu_milli
    return replace(state, gpu_free_milli=tuple(free), cpu_free_milli=state.cpu_free_milli + pod.cpu_milli,
                   memory_free_mib=state.memory_free_mib + pod.memory_mib, pods_free=state.pods_free + 1)


def _fits_on(snapshot: ClusterSnapshot, node: str, request: PodRequest, policy: Policy, removed: Iterable[str],
             eligible: Mapping[str, BoundPod]) -> bool:
    state = snapshot.states[node]
    for pod in removed:
        if eligible[pod].node == node:
            state = released(state, eligible[pod])
    return policy.evaluate(state, request)[0] is None


def _gang_fits(snapshot: ClusterSnapshot, gang: Gang, policy: Policy, removed: set[str],
               eligible: Mapping[str, BoundPod]) -> bool:
    decisions, _ = place_gang(without(snapshot, removed), gang, policy)
    return bool(decisions) and all(isinstance(d, Bind) for d in decisions)


# -- bookkeeping ------------------------------------------------------------------------------------------


def _units(eligible: Mapping[str, BoundPod], victims: Mapping[str, Victim]) -> dict[str, tuple[str, ...]]:
    """Eviction units by name: a gang's members together (all must be eligible), other pods alone."""
    gangs: dict[str, list[str]] = {}
    for pod, info in victims.items():
        if info.gang:
            gangs.setdefault(info.gang, []).append(pod)
    units: dict[str, tuple[str, ...]] = {}
    for pod in eligible:
        gang = victims[pod].gang
        if not gang:
            units[pod] = (pod,)
        elif all(member in eligible for member in gangs[gang]):
            units[f"gang:{gang}"] = tuple(sorted(gangs[gang]))
    return units


def _units_for(pods: Iterable[str], units: Mapping[str, tuple[str, ...]]) -> set[str]:
    wanted = set(pods)
    return {name for name, members in units.items() if wanted & set(members)}


def _members(chosen: Iterable[str], units: Mapping[str, tuple[str, ...]]) -> set[str]:
    return {pod for unit in chosen for pod in units[unit]}


def _unit_priority(unit: str, units: Mapping[str, tuple[str, ...]], victims: Mapping[str, Victim]) -> int:
    return max(victims[pod].priority for pod in units[unit])


def _within_budgets(removed: Iterable[str], victims: Mapping[str, Victim], budgets: Mapping[str, int]) -> bool:
    taken: dict[str, int] = {}
    for pod in removed:
        service = victims[pod].service
        if service:
            taken[service] = taken.get(service, 0) + 1
    return all(count <= budgets.get(service, count) for service, count in taken.items())


def _cost(removed: Iterable[str], victims: Mapping[str, Victim]) -> tuple[int, int, int]:
    priorities = [victims[pod].priority for pod in removed]
    return max(priorities), len(priorities), sum(priorities)


def _priority(request: Request) -> int:
    if isinstance(request, Gang):
        return max((m.priority for m in request.members), default=0)
    return request.priority


def _reason(pod: str, removed: Iterable[str], victims: Mapping[str, Victim]) -> str:
    names = sorted(removed)
    highest = max(victims[p].priority for p in names)
    return (f"preempting {len(names)} pod(s) of lower priority (at most {highest}) to make room for {pod}: "
            + ", ".join(names))
