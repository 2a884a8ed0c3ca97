"""The rebalancer's I/O: plans from ``scheduler.rebalance``, carried out as make-before-break moves.

Placement decides once, when a pod arrives; the cluster changes under it. Every
``rebalance_interval_s`` the leader reads the cluster (``SchedulingLoop.read``), builds the
snapshot, the replicas waiting for GPUs and the replicas that may move, and asks
``scheduler.rebalance.rebalance`` for a plan: room for a replica that fits nowhere only
because the free GPUs are scattered (defragmentation), then a service's replicas bunched on
one node. It then re-reads the cluster with scheduling cycles held off
(``SchedulingLoop.exclusive``), re-validates the plan against that fresh snapshot
(``revalidate``) and starts the moves that fit now. A plan that went stale is dropped; the
next interval plans again.

A move never lowers what a service serves (make-before-break):

1. a new replica (a new replica index) is created and bound at once to the move's node and
   GPUs; it carries ``serving.trireme.io/replaces`` (the old pod's uid), and until it serves
   it is not counted as a replica anywhere (``reconcile.counted_pods``);
2. once its pod is Ready and Triton reports every model ready, the old pod is drained like a
   scale-down (``draining.Drainer``: out of the Service, idle or timed out);
3. then the old pod is deleted and the annotation removed: the move is done.

A new replica not serving within ``move_timeout_s`` (or failed) is deleted and the old one
keeps serving (Warning Event MoveFailed). Every step is kept on the pods, so a restarted or
new leader continues the moves it finds. Budgets: at most ``rebalance_max_moves`` moves in
flight over the cluster, each service's PodDisruptionBudget (less its moves in flight), and
``min_move_interval_s`` between two moves of one replica. A replica that needs more moves than
that allows (a node emptied for an 8-GPU replica) gets the first moves of clearing a node and is
nominated to it (``status.nominatedNodeName``): later plans go on clearing that node, other pods
keep off it while they fit elsewhere (``scheduler.cycle``), and the replica binds there once it
is clear. Only single-pod replicas of
InferenceServices move; pipeline-parallel replicas (gangs of stage pods) stay where they are.
Events: Moving, Moved, MoveFailed on the moved replica's service, Defragmenting on the service
whose replica the room is made for (and its pod is nominated to the node).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trireme.operator.api import InferenceService, InvalidInferenceService
from trireme.operator.draining import Drainer, parse_time, rfc3339
from trireme.operator.loadmetrics import MetricsUnavailable
from trireme.operator.reconcile import (MOVE_REASON_ANNOTATION, MOVED_AT_ANNOTATION, REPLACES_ANNOTATION,
                                        STAGE_LABEL, MoveInFlight, is_draining, moves_in_flight, pod_is_ready,
                                        replica_index, replica_pods)
from trireme.operator.scheduling import (ClusterObjects, SchedulingLoop, gated, pod_key, queue_entry, service_key,
                                         service_name, tensor_parallel_groups)
from trireme.operator.settings import OperatorSettings
from trireme.scheduler.cluster import BoundPod, ClusterSnapshot, cluster_from_objects
from trireme.scheduler.cycle import Bind
from trireme.scheduler.policies import make_policy, shapes_from_snapshot, workload_shapes
from trireme.scheduler.rebalance import (DEFRAGMENT, Budgets, Movable, Move, MovePlan, RebalanceSettings, apply_moves,
                                         rebalance, revalidate)
from trireme.scheduler.requests import PodRequest

log = logging.getLogger(__name__)

EventSink = Callable[[Mapping[str, Any], str, str, str], None]
"""Records an Event: (involved object, type "Normal"/"Warning", reason, message)."""
ModelsReady = Callable[[Iterable[Mapping[str, Any]], list[str], float], set[str]]
"""``handlers.models_ready``: the pods (by name) on which Triton reports every listed model ready."""
PodUtilisation = Callable[[float], Mapping[tuple[str, str], float]]
"""GPU utilisation (0–1) by (namespace, pod) at a time: ``loadmetrics.read_gpu_utilization``."""
MERGE = "application/merge-patch+json"


@dataclass(frozen=True)
class StartedMove:
    """A move this leader started: the plan's move, and the new pod that carries it out."""

    move: Move
    new_pod: str


class Rebalancer:
    """Plans and carries out moves for the whole cluster; driven by the resync pass of the leader."""

    def __init__(self, api: client.ApiClient, settings: OperatorSettings, scheduling: SchedulingLoop,
                 record_event: EventSink, models_ready: ModelsReady, drainer: Drainer | None = None,
                 clock: Callable[[], float] = time.time, observe: Callable[[str], None] | None = None,
                 utilisation: PodUtilisation | None = None) -> None:
        self.core = client.CoreV1Api(api)
        self.settings = settings
        self.scheduling = scheduling
        self.record_event = record_event
        self.models_ready = models_ready
        self.drainer = drainer or Drainer(self.core, settings)
        self.clock = clock
        self.observe = observe or (lambda step: None)
        """Told of each move's steps: "started", "done", "abandoned" (for metrics)."""
        self.utilisation = utilisation
        """Measured GPU utilisation by pod, for hot nodes; None (or a failed reading) plans without it."""
        self._utilisation_failed = False
        self.planned_at: float | None = None
        self.in_flight: int | None = None
        """Moves in flight at the latest read (None before the first): with none, passes between plans
        read nothing."""

    def step(self) -> list[StartedMove]:
        """Advance every move in flight; when the interval has passed, plan and start new ones."""
        if self.settings.rebalance_interval_s <= 0:
            return []
        now = self.clock()
        due = self.planned_at is None or now - self.planned_at >= self.settings.rebalance_interval_s - 1e-6
        if self.in_flight != 0 or due:
            self._advance(self.scheduling.read_replicas(), now)
        if not due:
            return []
        self.planned_at = now
        return self.plan_and_start(now)

    # -- moves in flight ------------------------------------------------------------------------------------

    def _advance(self, seen: ClusterObjects, now: float) -> None:
        moves = moves_in_flight(self._ours(seen.pods))
        self.in_flight = len(moves)
        for move in moves:
            try:
                self._advance_one(move, seen.services, now)
            except ApiException as exc:  # the next pass retries
                log.warning("advancing the move to %s failed: %s", move.new["metadata"]["name"], exc)

    def _advance_one(self, move: MoveInFlight, services: Mapping[str, Mapping[str, Any]], now: float) -> None:
        new, old = move.new, move.old
        owner = services.get(service_key(new))
        started = parse_time((new["metadata"].get("annotations") or {}).get(MOVED_AT_ANNOTATION)) or now
        serving = self._serving(new, owner)
        if not serving and ((new.get("status") or {}).get("phase") == "Failed"
                            or now - started >= self.settings.move_timeout_s):
            self._abandon(move, owner, now - started, now)
            return
        if not is_draining(old):
            if serving:
                self.drainer.start(old, now)
            return
        if not self.drainer.drained(old, now):
            return
        self.drainer.delete(old)
        self._patch_annotations(new, {REPLACES_ANNOTATION: None})
        self.observe("done")
        if owner is not None:
            self.record_event(owner, "Normal", "Moved",
                              f"pod {_name(new)} serves on node {_node(new)}; pod {_name(old)} on node "
                              f"{_node(old)} drained and deleted")

    def _serving(self, pod: Mapping[str, Any], owner: Mapping[str, Any] | None) -> bool:
        """Whether the new replica serves: its pod Ready and every model of the service ready in Triton."""
        if owner is None or not pod_is_ready(pod):
            return False
        models = [m.get("name", "") for m in (owner.get("spec") or {}).get("models") or []]
        return _name(pod) in self.models_ready([pod], models, self.settings.triton_timeout_s)

    def _abandon(self, move: MoveInFlight, owner: Mapping[str, Any] | None, waited_s: float, now: float) -> None:
        """Delete the new pod; the old one serves on (back into the Service if its drain had begun) and is not
        tried again before ``min_move_interval_s``: the attempt counts as a move."""
        if is_draining(move.old):
            self.drainer.restore(move.old)
        self._patch_annotations(move.old, {MOVED_AT_ANNOTATION: rfc3339(now)})
        self.drainer.delete(move.new)
        self.observe("abandoned")
        if owner is not None:
            self.record_event(owner, "Warning", "MoveFailed",
                              f"pod {_name(move.new)} on node {_node(move.new)} did not serve within "
                              f"{waited_s:.0f}s and was deleted; pod {_name(move.old)} keeps serving on node "
                              f"{_node(move.old)}")

    # -- planning -------------------------------------------------------------------------------------------

    def plan_and_start(self, now: float) -> list[StartedMove]:
        """Plan on the cluster as it is; re-validate against a fresh read with cycles held off; start."""
        seen = self.scheduling.read()
        in_flight = moves_in_flight(self._ours(seen.pods))
        self.in_flight = len(in_flight)
        slots = self.settings.rebalance_max_moves - len(in_flight)
        if slots <= 0:
            return []
        snapshot = cluster_from_objects(seen.nodes, seen.pods)
        movable = self._movable(seen, in_flight)
        pending = self._pending(seen, in_flight)
        if not movable:
            return []
        policy = make_policy(self.scheduling.default_policy,
                             shapes_from_snapshot(snapshot, tensor_parallel_groups(seen.services))
                             + workload_shapes(pending))
        budgets = Budgets(now, self._budgets(seen, in_flight), self._last_moved(seen.pods))
        waiting = bool(in_flight) or any(self.scheduling.is_pending_here(p) for p in seen.pods)
        nominated = {pod_key(p): node for p in seen.pods if self.scheduling.is_pending_here(p)
                     and (node := (p.get("status") or {}).get("nominatedNodeName"))}
        plan = rebalance(snapshot, pending, policy, movable, budgets,
                         RebalanceSettings(max_moves_per_cycle=slots,
                                           min_move_interval_s=self.settings.min_move_interval_s),
                         utilisation={} if waiting else self._node_utilisation(seen.pods, now),
                         nominated=nominated)
        if waiting:
            plan = _room_only(plan, snapshot, movable)
        if not plan.moves:
            return []
        with self.scheduling.exclusive():
            fresh = self.scheduling.read()
            room = cluster_from_objects(fresh.nodes, fresh.pods)
            checked, why = revalidate(plan, room, movable)
            if checked is None:
                log.info("rebalancing plan dropped, the next interval plans again: %s", why)
                return []
            started = self._start(plan, fresh, room, movable, now)
        self.in_flight = (self.in_flight or 0) + len(started)
        return started

    def _node_utilisation(self, pods: Iterable[Mapping[str, Any]], now: float) -> dict[str, float]:
        """Mean measured GPU utilisation of the pods on each node (nodes without a measured pod are left
        out); empty when nothing is measured or the reading fails, which only disables hot-node moves."""
        if self.utilisation is None:
            return {}
        try:
            by_pod = self.utilisation(now)
        except MetricsUnavailable as exc:
            # said once (a cluster without Prometheus would otherwise repeat it every interval)
            log.log(logging.DEBUG if self._utilisation_failed else logging.INFO,
                    "planning without GPU utilisation (hot nodes are not judged): %s", exc)
            self._utilisation_failed = True
            return {}
        self._utilisation_failed = False
        values: dict[str, list[float]] = {}
        for pod in pods:
            measured = by_pod.get((pod["metadata"]["namespace"], pod["metadata"]["name"]))
            if measured is not None and _node(pod):
                values.setdefault(_node(pod), []).append(measured)
        return {node: sum(found) / len(found) for node, found in values.items()}

    def _ours(self, pods: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pods of this operator's InferenceServices (its scheduler name, in its namespaces)."""
        namespaces = self.settings.namespaces
        return [p for p in pods if (p.get("spec") or {}).get("schedulerName") == self.scheduling.scheduler_name
                and service_name(p) and (not namespaces or p["metadata"].get("namespace") in namespaces)]

    def _movable(self, seen: ClusterObjects, in_flight: Sequence[MoveInFlight]) -> dict[str, Movable]:
        """Replicas that may move: single-pod replicas of InferenceServices, bound, Ready and serving, and
        not part of a move already."""
        busy = {id(m.new) for m in in_flight} | {id(m.old) for m in in_flight}
        found = {}
        for pod in self._ours(seen.pods):
            meta = pod["metadata"]
            if (id(pod) in busy or meta.get("deletionTimestamp") or not (pod.get("spec") or {}).get("nodeName")
                    or not pod_is_ready(pod) or is_draining(pod) or STAGE_LABEL in (meta.get("labels") or {})
                    or service_key(pod) not in seen.services):
                continue
            request = queue_entry([pod], seen.services, self.scheduling.default_policy).request
            if isinstance(request, PodRequest):
                found[request.pod] = Movable(request, replica=request.pod)
        return found

    def _pending(self, seen: ClusterObjects, in_flight: Sequence[MoveInFlight]) -> list[PodRequest]:
        """Single pods waiting for GPUs, not held back by ``dependsOn``, and not already waiting on a node
        that moves or preemptions are clearing for them."""
        clearing = {_node(m.old) for m in in_flight} | {
            (p.get("spec") or {}).get("nodeName") for p in seen.pods if p["metadata"].get("deletionTimestamp")}
        waiting = [p for p in seen.pods if self.scheduling.is_pending_here(p) and STAGE_LABEL not in
                   (p["metadata"].get("labels") or {})
                   and (p.get("status") or {}).get("nominatedNodeName") not in clearing]
        free, _ = gated(waiting, seen.services)
        requests = [queue_entry([p], seen.services, self.scheduling.default_policy).request for p in free]
        return [r for r in requests if isinstance(r, PodRequest)]

    def _budgets(self, seen: ClusterObjects, in_flight: Sequence[MoveInFlight]) -> dict[str, int]:
        """Moves each service may take now: its PodDisruptionBudget's disruptionsAllowed, less its moves in
        flight. Keyed like the snapshot's pods (the service label); a name in several namespaces gets the
        smallest."""
        busy: dict[str, int] = {}
        for move in in_flight:
            busy[service_key(move.new)] = busy.get(service_key(move.new), 0) + 1
        found: dict[str, int] = {}
        for key in seen.services:
            allowed = seen.budgets.get(key, 0) - busy.get(key, 0)
            label = key.partition("/")[2]
            found[label] = min(allowed, found.get(label, allowed))
        return found

    @staticmethod
    def _last_moved(pods: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        found = {}
        for pod in pods:
            at = parse_time((pod["metadata"].get("annotations") or {}).get(MOVED_AT_ANNOTATION))
            if at is not None:
                found[pod_key(pod)] = at
        return found

    # -- starting moves -------------------------------------------------------------------------------------

    def _start(self, plan: MovePlan, seen: ClusterObjects, room: ClusterSnapshot, movable: Mapping[str, Movable],
               now: float) -> list[StartedMove]:
        """Create and bind the new replica of each move whose node has room now, with the old replicas
        still in place (make-before-break); a move that needs room an earlier move frees waits for the
        next plan, and so do the moves after it."""
        by_key = {pod_key(p): p for p in seen.pods}
        started: list[StartedMove] = []
        for move in plan.moves:
            old = by_key[move.pod]
            owner = seen.services[service_key(old)]
            try:
                tis = InferenceService.from_api({**owner, "status": None})
            except InvalidInferenceService:
                break  # reconcile reports the spec; nothing of it moves meanwhile
            index = 1 + max((replica_index(p) for p in seen.pods if service_key(p) == service_key(old)),
                            default=-1)
            new = replica_pods(tis, index, self.scheduling.scheduler_name)[0]
            request = movable[move.pod].request
            key = f"{old['metadata']['namespace']}/{new['metadata']['name']}"
            try:
                room = _with_replacement(room, request, key, move)
            except ValueError:
                break
            new["metadata"]["annotations"] |= {REPLACES_ANNOTATION: old["metadata"]["uid"],
                                               MOVE_REASON_ANNOTATION: move.reason, MOVED_AT_ANNOTATION: rfc3339(now)}
            namespace = old["metadata"]["namespace"]
            try:
                self.core.create_namespaced_pod(namespace, new, _preload_content=False)
                self.scheduling.bind(namespace, new["metadata"]["name"], Bind(key, move.to_node, move.gpu_indices))
            except ApiException as exc:
                log.warning("starting the move of %s failed: %s", move.pod, exc)
                break
            started.append(StartedMove(move, new["metadata"]["name"]))
            self.observe("started")
            self.record_event(owner, "Normal", "Moving",
                              f"pod {_name(old)} moves from node {move.from_node} to node {move.to_node} "
                              f"(GPUs {list(move.gpu_indices)}) as pod {new['metadata']['name']}: "
                              f"{move.reason}")
            by_key[key] = new
            seen.pods.append(new)
        if started and len(started) == len(plan.moves) and plan.pending is not None and plan.node:
            self._nominate(plan, by_key, seen.services, started)
        return started

    def _nominate(self, plan: MovePlan, by_key: Mapping[str, Mapping[str, Any]],
                  services: Mapping[str, Mapping[str, Any]], started: Sequence[StartedMove]) -> None:
        """Tell the pending pod (and its service) which node the moves clear for it."""
        assert plan.pending is not None
        pod = by_key.get(plan.pending.pod)
        if pod is None:
            return
        meta = pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"],
                                                  {"status": {"nominatedNodeName": plan.node}},
                                                  _content_type=MERGE, _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return
        owner = services.get(service_key(pod))
        if owner is not None:
            moved = ", ".join(f"{s.move.pod.partition('/')[2]} → {s.move.to_node}" for s in started)
            rest = "" if plan.complete else "; more moves follow once these are done"
            self.record_event(owner, "Normal", "Defragmenting",
                              f"making room on node {plan.node} for pod {meta['name']}: moving {moved}{rest}")

    def _patch_annotations(self, pod: Mapping[str, Any], annotations: Mapping[str, str | None]) -> None:
        meta = pod["metadata"]
        try:
            self.core.patch_namespaced_pod(meta["name"], meta["namespace"], {"metadata": {"annotations": annotations}},
                                           _content_type=MERGE, _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise


def _room_only(plan: MovePlan, snapshot: ClusterSnapshot, movable: Mapping[str, Movable]) -> MovePlan:
    """The plan's defragmentation only: while a replica waits for room (or a move is under way) no replica
    moves for balance, which could take the very room being cleared."""
    moves = tuple(itertools.takewhile(lambda m: m.reason.startswith(DEFRAGMENT), plan.moves))
    if len(moves) == len(plan.moves):
        return plan
    return MovePlan(moves, apply_moves(snapshot, moves, movable), plan.pending, plan.node, plan.gpu_indices)


def _with_replacement(snapshot: ClusterSnapshot, request: PodRequest, key: str, move: Move) -> ClusterSnapshot:
    """``snapshot`` with the move's new pod on its node and GPUs, the old one still in place; ValueError
    when it does not fit there now."""
    state = snapshot.states.get(move.to_node)
    if state is None:
        raise ValueError(f"node {move.to_node} is gone")
    milli = request.milli_on(state) if move.gpu_indices else 0
    return snapshot.with_bound(BoundPod(key, move.to_node, move.gpu_indices, milli, request.cpu_milli,
                                        request.memory_mib, request.service))


def _name(pod: Mapping[str, Any]) -> str:
    return str(pod["metadata"]["name"])


def _node(pod: Mapping[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


__all__ = ["Rebalancer", "StartedMove"]
