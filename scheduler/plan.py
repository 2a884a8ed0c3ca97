"""Plans: which node and GPUs each pending pod gets, or why it gets none, as data.

``plan(snapshot, requests, policy)`` places requests one after another (higher priority
first, then in the order given), each on the snapshot left by those before, and returns
the decisions with the snapshot they lead to. It is deterministic (ties go to the node
name that sorts first), never raises on bad input (an impossible or malformed request
gets an ``Unschedulable`` saying why), and idempotent: a pod already bound in the
snapshot keeps its place, so re-planning the resulting snapshot changes nothing.

Gangs (the pods of one pipeline-parallel replica) are placed all or nothing, on as few
nodes as possible, inside one topology domain (rack, then zone) when one can hold them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trireme.scheduler.cluster import MILLI, BoundPod, ClusterSnapshot
from trireme.scheduler.plugins import CAPACITY_REASONS, GPU_CAPACITY_REASONS
from trireme.scheduler.policies import (
    DEFAULT_POLICY, Policy, make_policy, shapes_from_snapshot, workload_shapes)
from trireme.scheduler.requests import Gang, PodRequest, Request


@dataclass(frozen=True)
class Bind:
    """Bind ``pod`` to ``node``; it uses GPUs ``gpu_indices`` (its share of each, for a GPU share)."""

    pod: str
    node: str
    gpu_indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class Unschedulable:
    """``pod`` fits nowhere now; ``reason`` says what is missing, in words a user can act on."""

    pod: str
    reason: str


Decision = Bind | Unschedulable


@dataclass(frozen=True)
class Plan:
    """The decisions of one cycle, in the order they were made, and the snapshot after the binds."""

    decisions: tuple[Decision, ...]
    snapshot: ClusterSnapshot

    @property
    def binds(self) -> tuple[Bind, ...]:
        return tuple(d for d in self.decisions if isinstance(d, Bind))

    @property
    def unschedulable(self) -> tuple[Unschedulable, ...]:
        return tuple(d for d in self.decisions if isinstance(d, Unschedulable))

    def decision(self, pod: str) -> Decision | None:
        return next((d for d in self.decisions if d.pod == pod), None)


def plan(snapshot: ClusterSnapshot, requests: Sequence[Request], policy: Policy | str = DEFAULT_POLICY, *,
         seed: int = 0) -> Plan:
    """Place ``requests`` on ``snapshot`` with ``policy`` (a Policy or a name from ``POLICY_NAMES``).

    A policy given by name that needs a workload summary (``fgd``, ``trireme``) takes it from
    the pods bound in the snapshot and the requests; ``seed`` drives ``random``.
    """
    if isinstance(policy, str):
        members = [m for r in requests for m in (r.members if isinstance(r, Gang) else (r,))]
        memories = sorted(s.gpu_memory_mib for s in snapshot.states.values() if s.gpu_memory_mib > 0)
        usual_memory = memories[len(memories) // 2] if memories else 0
        policy = make_policy(policy, shapes_from_snapshot(snapshot) + workload_shapes(members, usual_memory),
                             seed=seed)
    decisions: list[Decision] = []
    bound = {b.pod: b for b in snapshot.bound}
    recorded = len(snapshot.bound)
    explanations: dict[tuple[object, ...], str] = {}  # reasons by request shape, until the snapshot changes
    ordered = sorted(requests, key=lambda r: -_priority(r))
    for request in ordered:
        if isinstance(request, Gang):
            made, snapshot = place_gang(snapshot, request, policy, bound)
            decisions.extend(made)
        else:
            before = snapshot
            decision, snapshot = place(snapshot, request, policy, bound, explanations=explanations)
            decisions.append(decision)
            if snapshot is not before:
                explanations.clear()
        bound.update((b.pod, b) for b in snapshot.bound[recorded:])
        recorded = len(snapshot.bound)
    return Plan(tuple(decisions), snapshot)


def place(snapshot: ClusterSnapshot, request: PodRequest, policy: Policy,
          bound: Mapping[str, BoundPod] | None = None, explain_failure: bool = True,
          explanations: dict[tuple[object, ...], str] | None = None,
          kept: frozenset[str] = frozenset()) -> tuple[Decision, ClusterSnapshot]:
    """One pod: its decision and the snapshot after it (unchanged when unschedulable or already bound).

    ``kept`` names nodes kept for other pods (nominated to them while room is made there): the pod goes
    there only when it fits nowhere else.

    ``bound`` indexes ``snapshot.bound`` by pod, when the caller keeps one (a replay of fresh pods
    passes an empty mapping); without it the snapshot is searched. ``explain_failure=False`` skips
    composing the reason of an Unschedulable (a replay that drops failed tasks), not the decision.
    ``explanations`` caches reasons by request shape for a caller that clears it whenever the
    snapshot changes (``plan`` does): in a full cluster, equal pods fail for equal reasons."""
    existing = _bound(snapshot, request.pod) if bound is None else bound.get(request.pod)
    if existing is not None:
        return Bind(request.pod, existing.node, existing.gpu_indices), snapshot
    problem = _problem(request)
    if problem:
        return Unschedulable(request.pod, problem), snapshot
    avoid = _replica_nodes(snapshot, request) if request.spread and request.service else frozenset()
    chosen = select(snapshot, request, policy, avoid=avoid | kept) if kept else None
    if chosen is None:
        chosen = select(snapshot, request, policy, avoid=avoid)
    if chosen is None:
        if not explain_failure:
            reason = "fits on no node"
        elif explanations is None or avoid:
            reason = explain(snapshot, request, policy, avoid)
        else:
            reason = explanations.get(request.shape) or explanations.setdefault(
                request.shape, explain(snapshot, request, policy, avoid))
        return Unschedulable(request.pod, reason), snapshot
    name, gpus = chosen
    return Bind(request.pod, name, gpus), snapshot.with_bound(_bound_pod(snapshot, request, name, gpus))


def select(snapshot: ClusterSnapshot, request: PodRequest, policy: Policy, *, avoid: frozenset[str] = frozenset(),
           allowed: frozenset[str] | None = None) -> tuple[str, tuple[int, ...]] | None:
    """The node (name) and GPUs ``policy`` picks for ``request``, or None when none passes the filters.

    ``avoid`` names nodes that may not be used; ``allowed``, when given, the only ones that may.
    Every distinct node state is evaluated once (cached per request shape); the best score
    wins, ties going to the name that sorts first.
    """
    token = policy.token(request)
    evaluate = policy.evaluate
    restricted = bool(avoid) or allowed is not None
    if policy.uniform_random:
        return _select_random(snapshot, request, policy, token, avoid, allowed)
    best_name: str | None = None
    best_score = 0.0
    best_gpus: tuple[int, ...] | None = None
    for state, names in snapshot.groups.items():
        memo = state.memo
        evaluation = memo.get(token)
        if evaluation is None:
            evaluation = memo[token] = evaluate(state, request)
        if evaluation[0] is not None:
            continue
        if restricted:
            name = next((n for n in names if n not in avoid and (allowed is None or n in allowed)), None)
            if name is None:
                continue
        else:
            name = names[0]
        score = evaluation[1]
        if best_name is None or score > best_score or (score == best_score and name < best_name):
            best_name, best_score, best_gpus = name, score, evaluation[2]
    if best_name is None or best_gpus is None:
        return None
    return best_name, best_gpus


def _select_random(snapshot: ClusterSnapshot, request: PodRequest, policy: Policy, token: object,
                   avoid: frozenset[str], allowed: frozenset[str] | None) -> tuple[str, tuple[int, ...]] | None:
    """A node drawn uniformly among the feasible ones (groups walked in their fixed order), then a GPU."""
    feasible: list[tuple[str, ...]] = []
    total = 0
    for state, names in snapshot.groups.items():
        if policy.cached_evaluation(state, request, token)[0] is None:
            if avoid or allowed is not None:
                names = tuple(n for n in names if n not in avoid and (allowed is None or n in allowed))
            feasible.append(names)
            total += len(names)
    if not total:
        return None
    draw = policy.rng.randrange(total)
    for names in feasible:
        if draw < len(names):
            name = names[draw]
            break
        draw -= len(names)
    gpus = policy.random_gpus(snapshot.states[name], request)
    return None if gpus is None else (name, gpus)


def place_gang(snapshot: ClusterSnapshot, gang: Gang, policy: Policy, bound: Mapping[str, BoundPod] | None = None
               ) -> tuple[list[Decision], ClusterSnapshot]:
    """All members of ``gang`` or none: the placement on the fewest nodes, inside one topology domain
    (by ``gang.topology_keys``, in order) when one can hold the gang, else anywhere."""
    members = gang.members
    if not members:
        return [], snapshot
    already = [_bound(snapshot, m.pod) if bound is None else bound.get(m.pod) for m in members]
    if all(already):
        return [Bind(m.pod, b.node, b.gpu_indices) for m, b in zip(members, already) if b], snapshot
    for member in members:
        problem = _problem(member)
        if problem:
            return [Unschedulable(m.pod, f"gang {gang.name}: {member.pod}: {problem}") for m in members], snapshot
    domains: list[frozenset[str] | None] = []
    for key in gang.topology_keys:
        by_value: dict[str, list[str]] = {}
        for name, state in snapshot.states.items():
            value = state.label(key)
            if value is not None:
                by_value.setdefault(value, []).append(name)
        domains.extend(frozenset(names) for _, names in sorted(by_value.items()))
    domains.append(None)
    best: tuple[int, int, list[Decision], ClusterSnapshot] | None = None
    failure = ""
    for rank, domain in enumerate(domains):
        trial, why = _try_gang(snapshot, gang, policy, domain)
        if trial is None:
            failure = failure or why
            continue
        decisions, after = trial
        used = len({d.node for d in decisions if isinstance(d, Bind)})
        if best is None or used < best[0]:
            best = (used, rank, decisions, after)
        if used == 1:
            break
    if best is None:
        return [Unschedulable(m.pod, f"gang {gang.name} of {len(members)} pods does not fit together: {failure}")
                for m in members], snapshot
    return best[2], best[3]


def _try_gang(snapshot: ClusterSnapshot, gang: Gang, policy: Policy, domain: frozenset[str] | None
              ) -> tuple[tuple[list[Decision], ClusterSnapshot] | None, str]:
    """Place the gang's members, largest first, preferring nodes the gang already uses."""
    order = sorted(range(len(gang.members)), key=lambda i: (-gang.members[i].gpus_needed(),
                                                             -gang.members[i].cpu_milli, i))
    placed: dict[int, Bind] = {}
    used: set[str] = set()
    for index in order:
        member = gang.members[index]
        existing = _bound(snapshot, member.pod)
        if existing is not None:
            placed[index] = Bind(member.pod, existing.node, existing.gpu_indices)
            used.add(existing.node)
            continue
        chosen = None
        if used:
            chosen = select(snapshot, member, policy, allowed=frozenset(used))
        if chosen is None:
            chosen = select(snapshot, member, policy, allowed=domain)
        if chosen is None:
            return None, f"{member.pod}: {explain(snapshot, member, policy, frozenset())}"
        name, gpus = chosen
        snapshot = snapshot.with_bound(_bound_pod(snapshot, member, name, gpus))
        placed[index] = Bind(member.pod, name, gpus)
        used.add(name)
    return ([placed[i] for i in range(len(gang.members))], snapshot), ""


def explain(snapshot: ClusterSnapshot, request: PodRequest, policy: Policy, avoid: frozenset[str]) -> str:
    """Why ``request`` fits on no node: the GPUs it needs, the largest free block among nodes it
    may use, and how many nodes were left out for which reason."""
    left_out: Counter[str] = Counter()
    largest = 0
    largest_share = 0
    token = policy.token(request)
    for state, names in snapshot.groups.items():
        reason = policy.cached_evaluation(state, request, token)[0]
        if reason is not None and reason not in GPU_CAPACITY_REASONS and reason not in CAPACITY_REASONS:
            left_out[reason] += len(names)
            continue
        largest = max(largest, _largest_block(state, request))
        largest_share = max(largest_share, max(state.gpu_free_milli, default=0))
        if reason in CAPACITY_REASONS:
            left_out[reason] += len(names)
            continue
        blocked = sum(1 for n in names if n in avoid)
        if blocked:
            left_out[f"already run{'s' if blocked == 1 else ''} a replica of {request.service}"] += blocked
    need = request.gpus_needed()
    if not need:
        message = f"needs {request.cpu_milli}m CPU and {request.memory_mib} MiB memory; no node has them free"
    elif request.shared:
        message = (f"needs {request.describe()}; the most free on one GPU is "
                   f"{largest_share / MILLI:g} of a GPU")
    else:
        where = ("on one node" if request.tensor_parallel <= 1 else "in one NVLink island"
                 if request.tensor_parallel == request.gpus else
                 f"on one node in groups of {request.tensor_parallel}, each group in one NVLink island")
        message = f"needs {request.describe()} {where}; largest free block is {largest}"
    if left_out:
        details = ", ".join(f"{count} {why}" for why, count in sorted(left_out.items()))
        message += f" (nodes left out: {details})"
    return message


def _largest_block(state: object, request: PodRequest) -> int:
    free = state.gpu_free_milli  # type: ignore[attr-defined]
    islands = state.islands  # type: ignore[attr-defined]
    if request.tensor_parallel > 1 and islands:
        return max((sum(1 for i in island if free[i] == MILLI) for island in islands), default=0)
    return free.count(MILLI)


def _problem(request: PodRequest) -> str:
    try:
        return request.problem()
    except (TypeError, ValueError) as exc:
        return f"bad request: {exc}"


def _bound(snapshot: ClusterSnapshot, pod: str) -> BoundPod | None:
    for bound in reversed(snapshot.bound):
        if bound.pod == pod:
            return bound
    return None


def _replica_nodes(snapshot: ClusterSnapshot, request: PodRequest) -> frozenset[str]:
    return frozenset(b.node for b in snapshot.bound if b.service == request.service)


def _bound_pod(snapshot: ClusterSnapshot, request: PodRequest, node: str, gpus: tuple[int, ...]) -> BoundPod:
    milli = request.milli_on(snapshot.states[node]) if gpus else 0
    return BoundPod(request.pod, node, gpus, milli, request.cpu_milli, request.memory_mib, request.service)


def _priority(request: Request) -> int:
    members = request.members if isinstance(request, Gang) else (request,)
    return max((m.priority for m in members if isinstance(m.priority, int)), default=0)

