"""One scheduling cycle: the queue of pending requests in, every decision out.

The operator's scheduling loop reads the cluster once per cycle, turns the pending pods
into ``Pending`` entries (a pod, or a gang of pipeline stages, with its policy and age)
and calls ``schedule``. The queue is ordered by priority, then age, then name; each
entry is placed with its service's policy on the snapshot the entries before it left.
An entry that fits nowhere may preempt lower-priority, preemptible pods
(``preemption.find_preemption``); while the pods it preempted are still terminating on
its nominated node it waits instead of choosing new victims. Victims chosen for one entry
are not offered to the next, and every preemption counts against the victims' disruption
budgets for the rest of the cycle. An entry that waits although pods of lower priority are
bound says why preemption could not help (they may not be preempted, or evicting them would
not make room), so a preempted replica that waits for its GPUs to come back says so. A node
an entry is nominated to (by a preemption, or by the rebalancer clearing it) is kept for it:
other single pods go there only when they fit nowhere else, so the room being made is not
taken piece by piece by whatever arrives meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from trireme.scheduler.cluster import ClusterSnapshot
from trireme.scheduler.plan import Bind, Unschedulable, place, place_gang
from trireme.scheduler.policies import DEFAULT_POLICY, POLICY_NAMES, Policy, make_policy, shapes_from_snapshot, \
    workload_shapes
from trireme.scheduler.preemption import Preempt, Victim, find_preemption
from trireme.scheduler.requests import Gang, PodRequest, Request


@dataclass(frozen=True)
class Pending:
    """One entry of the queue: a pod or a gang, placed with ``policy``.

    ``age`` orders entries of equal priority (older first): any string that sorts by age, such as the
    RFC 3339 creation timestamp. ``nominated_node`` is the node an earlier preemption or the rebalancer
    makes room on.
    """

    request: Request
    policy: str = DEFAULT_POLICY
    age: str = ""
    nominated_node: str = ""

    @property
    def name(self) -> str:
        return self.request.name if isinstance(self.request, Gang) else self.request.pod

    @property
    def priority(self) -> int:
        members = self.request.members if isinstance(self.request, Gang) else (self.request,)
        return max((m.priority for m in members), default=0)

    @property
    def pods(self) -> tuple[str, ...]:
        members = self.request.members if isinstance(self.request, Gang) else (self.request,)
        return tuple(m.pod for m in members)


Decision = Bind | Unschedulable | Preempt


@dataclass(frozen=True)
class CycleResult:
    """Decisions per pod (a gang's preemption is reported on each member) and the snapshot after the binds."""

    decisions: Mapping[str, Decision]
    snapshot: ClusterSnapshot


def queue_order(pending: Iterable[Pending]) -> list[Pending]:
    """Highest priority first, then oldest, then by name."""
    return sorted(pending, key=lambda p: (-p.priority, p.age, p.name))


def schedule(snapshot: ClusterSnapshot, pending: Sequence[Pending], victims: Mapping[str, Victim] | None = None,
             budgets: Mapping[str, int] | None = None, terminating: Mapping[str, int] | None = None,
             tensor_parallel: Mapping[str, int] | None = None) -> CycleResult:
    """Decide every entry of ``pending``.

    ``victims`` describes bound pods that preemption may consider (none: no preemption); ``budgets`` how
    many pods of each service may be evicted now; ``terminating`` how many pods are terminating on each
    node (their resources are still held); ``tensor_parallel`` the tensor-parallel group of each service
    (``namespace/name``) whose replicas run, for the workload the fragmentation-aware policies weigh.
    """
    victims = dict(victims or {})
    budgets = dict(budgets or {})
    terminating = terminating or {}
    members = [m for p in pending for m in (p.request.members if isinstance(p.request, Gang) else (p.request,))]
    workload = shapes_from_snapshot(snapshot, tensor_parallel) + workload_shapes(members)
    policies: dict[str, Policy] = {}
    decisions: dict[str, Decision] = {}
    keeping = {entry.name: entry.nominated_node for entry in pending if entry.nominated_node}
    for entry in queue_order(pending):
        name = entry.policy if entry.policy in POLICY_NAMES else DEFAULT_POLICY
        policy = policies.get(name)
        if policy is None:
            policy = policies[name] = make_policy(name, workload)
        kept = frozenset(node for owner, node in keeping.items() if owner != entry.name)
        made, snapshot = _place(snapshot, entry.request, policy, kept)
        if all(isinstance(d, Bind) for d in made):
            decisions.update((d.pod, d) for d in made)
            keeping.pop(entry.name, None)
            continue
        if entry.nominated_node and terminating.get(entry.nominated_node):
            waiting = Unschedulable(entry.name, f"waiting for {terminating[entry.nominated_node]} pod(s) to leave "
                                                f"node {entry.nominated_node} (preempted or moved to make room)")
            decisions.update((pod, Unschedulable(pod, waiting.reason)) for pod in entry.pods)
            continue
        preemption = find_preemption(snapshot, entry.request, policy, victims, budgets) if victims else None
        if preemption is None:
            why = _no_preemption(snapshot, entry, victims)
            decisions.update((d.pod, Unschedulable(d.pod, d.reason + why) if isinstance(d, Unschedulable) and why
                              else d) for d in made)
            continue
        for victim in preemption.victims:
            service = victims.pop(victim).service
            if service in budgets:
                budgets[service] -= 1
        decisions.update((pod, Preempt(pod, preemption.node, preemption.victims, preemption.reason))
                         for pod in entry.pods)
    return CycleResult(decisions, snapshot)


def _no_preemption(snapshot: ClusterSnapshot, entry: Pending, victims: Mapping[str, Victim]) -> str:
    """Why preemption could not make room, to append to the reason an entry waits ('' when no bound pod
    has a lower priority: then preemption was never an option, and saying so adds nothing)."""
    lower = [victims[b.pod] for b in snapshot.bound if b.pod in victims and victims[b.pod].priority < entry.priority]
    if not lower:
        return ""
    if not any(v.preemptible for v in lower):
        return f"; preemption cannot help: no pod of lower priority than {entry.priority} may be preempted"
    return (f"; preemption cannot help: evicting pods of lower priority than {entry.priority}, within their "
            f"disruption budgets, would not make room")


def _place(snapshot: ClusterSnapshot, request: Request, policy: Policy, kept: frozenset[str]
           ) -> tuple[list[Bind | Unschedulable], ClusterSnapshot]:
    if isinstance(request, Gang):
        return place_gang(snapshot, request, policy)
    decision, snapshot = place(snapshot, request, policy, kept=kept)
    return [decision], snapshot


__all__ = ["Bind", "CycleResult", "Decision", "Pending", "PodRequest", "Preempt", "Unschedulable", "Victim",
           "queue_order", "schedule"]
