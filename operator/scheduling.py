"""The scheduling loop: one cycle places every pending Trireme pod of the cluster.

kube-scheduler's model, in the operator: a cycle lists every node and every pod
(any scheduler's, so GPUs held by others are never handed out), lists the
InferenceServices to learn policies, priorities, parallelism and ``dependsOn``
readiness, and the PodDisruptionBudgets that bound preemption; hands the pending
pods to ``scheduler/`` (``cycle.schedule``: queue order, per-service policy, gangs of
pipeline stages, preemption), and carries out the decisions: bindings through the
Binding API with the GPU indices in the pod's annotation, PodScheduled=False with
the reason on pods that wait, graceful deletion of preempted pods with the
preemptor nominated to their node, and an Event on the owning InferenceService for
each. Cycles are serialised, and a caller that arrives while a cycle runs waits for
the next one instead of starting its own, so many services converging at once cost
one or two cycles, not one each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trireme.operator.api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from trireme.operator.reconcile import (MANAGED_BY, MANAGED_BY_LABEL, REPLICA_LABEL, SERVICE_LABEL, STAGE_LABEL,
                                        moves_in_flight)
from trireme.scheduler.cluster import cluster_from_objects
from trireme.scheduler.cycle import Bind, Pending, Preempt, Unschedulable, Victim, schedule
from trireme.scheduler.dependencies import ServiceState, gates
from trireme.scheduler.requests import Gang, request_from_pod
from trireme.scheduler.kube import GPU_ANNOTATION

log = logging.getLogger(__name__)

Decision = Bind | Unschedulable | Preempt
EventSink = Callable[[Mapping[str, Any], str, str, str], None]
"""Records an Event: (involved object, type "Normal"/"Warning", reason, message)."""
AttemptObserver = Callable[[Mapping[str, Any], str], None]
"""Told of each scheduling attempt: the pod and "bound", "unschedulable", "preempting" or "error"
(for metrics)."""


@dataclass(frozen=True)
class PodOutcome:
    """What a cycle did for one pod (``namespace``/``name``), owned by InferenceService ``service``."""

    namespace: str
    name: str
    service: str
    decision: Decision


@dataclass(frozen=True)
class ClusterObjects:
    """What a cycle reads: every node and pod, the InferenceServices (by ``namespace/name``) of the
    namespaces those pods are in, and their disruption budgets (pods each service may lose now)."""

    nodes: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    services: dict[str, dict[str, Any]]
    budgets: dict[str, int]


@dataclass
class CycleTimings:
    """Where one cycle's time went, in seconds: reading the cluster, deciding, and writing decisions."""

    read_s: float = 0.0
    decide_s: float = 0.0
    act_s: float = 0.0
    pods: int = 0
    """Pending pods the cycle handled."""


class SchedulingLoop:
    """Places pending pods of one scheduler name; one cycle at a time per process."""

    def __init__(self, api: client.ApiClient, scheduler_name: str, namespaces: Iterable[str] = (),
                 record_event: EventSink | None = None, observe: AttemptObserver | None = None,
                 writers: int = 8, default_policy: str = "trireme") -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.policy = client.PolicyV1Api(api)
        self.scheduler_name = scheduler_name
        self.namespaces = tuple(namespaces)
        self.record_event = record_event or (lambda *_: None)
        self.observe = observe or (lambda pod, result: None)
        self.writers = writers
        self.default_policy = default_policy
        """Policy of the services whose spec names none."""
        """Bindings and status writes in flight at once: decisions are made in order, but carrying them out
        is one request per pod, and requests overlap well."""
        self._lock = threading.Lock()
        self._started = 0
        self._finished = 0
        self.last_cycle = CycleTimings()
        """Timings of the latest cycle that had pending pods."""

    def run(self) -> list[PodOutcome]:
        """Run a cycle, or wait for the one that starts after this call if one is running now."""
        wanted = self._started + 1
        with self._lock:
            if self._finished >= wanted:  # a cycle that started after our call has placed our pods
                return []
            self._started += 1
            try:
                return self._cycle()
            finally:
                self._finished = self._started

    def simulate(self, extra: list[dict[str, Any]]) -> dict[str, Decision]:
        """What a cycle would decide for ``extra``, pods not created yet, on the cluster as it is now (by
        ``namespace/name``): Bind, Preempt (room made by evicting lower priorities) or Unschedulable with
        what is missing. Nothing is written; the autoscaler asks this before adding replicas."""
        if not extra:
            return {}
        seen = self.read(extra)
        return decide(seen.nodes, [*seen.pods, *extra], list(extra), seen.services, seen.budgets,
                      self.default_policy)

    def read(self, extra: Iterable[Mapping[str, Any]] = ()) -> ClusterObjects:
        """The cluster as a cycle sees it (services and budgets also of the namespaces of ``extra``)."""
        pods = self._list_pods()
        nodes = _items(self.core.list_node(_preload_content=False))
        namespaces = {p["metadata"]["namespace"] for p in [*pods, *extra] if service_name(p)}
        return ClusterObjects(nodes, pods, self._list_services(namespaces), self._disruption_budgets(namespaces))

    def read_replicas(self) -> ClusterObjects:
        """Only the pods Trireme made (in the served namespaces) and their InferenceServices: enough to
        follow moves in flight, and far cheaper than ``read`` on a large cluster (no nodes, no other pods)."""
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        if self.namespaces:
            pods = [p for ns in self.namespaces
                    for p in _items(self.core.list_namespaced_pod(ns, label_selector=selector, _preload_content=False))]
        else:
            pods = _items(self.core.list_pod_for_all_namespaces(label_selector=selector, _preload_content=False))
        namespaces = {p["metadata"]["namespace"] for p in pods if service_name(p)}
        return ClusterObjects([], pods, self._list_services(namespaces), {})

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold off scheduling cycles meanwhile: the rebalancer binds the new replicas of its moves inside,
        so no cycle hands out the same GPUs from an older snapshot."""
        with self._lock:
            yield

    def bind(self, namespace: str, name: str, decision: Bind) -> None:
        """Bind a pod as a cycle does (call inside ``exclusive``)."""
        self._bind(namespace, name, decision)

    # -- one cycle -------------------------------------------------------------------------------------

    def _cycle(self) -> list[PodOutcome]:
        started = time.perf_counter()
        pods = self._list_pods()
        pending = [p for p in pods if self.is_pending_here(p)]
        if not pending:
            return []
        nodes = _items(self.core.list_node(_preload_content=False))
        namespaces = {p["metadata"]["namespace"] for p in pods if service_name(p)}
        services = self._list_services(namespaces)
        budgets = self._disruption_budgets(namespaces)
        read = time.perf_counter()
        decisions = decide(nodes, pods, pending, services, budgets, self.default_policy)
        decided = time.perf_counter()
        self._preempt([d for d in decisions.values() if isinstance(d, Preempt)], pods)
        work = [(pod, PodOutcome(pod["metadata"]["namespace"], pod["metadata"]["name"], service_name(pod),
                                 decisions[pod_key(pod)])) for pod in pending]
        with ThreadPoolExecutor(self.writers, thread_name_prefix="bind") as pool:
            outcomes = list(pool.map(lambda item: self._act(*item), work))
        self.last_cycle = CycleTimings(read - started, decided - read, time.perf_counter() - decided, len(pending))
        return outcomes

    def _list_pods(self) -> list[dict[str, Any]]:
        try:  # every pod on the nodes counts, also for a namespaced install that may list them
            return _items(self.core.list_pod_for_all_namespaces(_preload_content=False))
        except ApiException as exc:
            if exc.status != 403 or not self.namespaces:
                raise
            return [p for ns in self.namespaces for p in _items(self.core.list_namespaced_pod(ns, _preload_content=False))]

    def is_pending_here(self, pod: Mapping[str, Any]) -> bool:
        spec, meta = pod.get("spec") or {}, pod["metadata"]
        return (spec.get("schedulerName") == self.scheduler_name and not spec.get("nodeName")
                and not meta.get("deletionTimestamp")
                and (not self.namespaces or meta.get("namespace") in self.namespaces))

    def _list_services(self, namespaces: Iterable[str]) -> dict[str, dict[str, Any]]:
        found = {}
        for namespace in sorted(namespaces):
            try:
                response = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                     _preload_content=False)
            except ApiException as exc:
                if exc.status != 404:  # no InferenceService CRD: pods of no service, nothing to wait for
                    raise
                continue
            for obj in _items(response):
                found[f"{namespace}/{obj['metadata']['name']}"] = obj
        return found

    def _disruption_budgets(self, namespaces: Iterable[str]) -> dict[str, int]:
        """Pods each service may lose now (its PodDisruptionBudget's disruptionsAllowed), by ``namespace/name``."""
        budgets = {}
        for namespace in sorted(namespaces):
            response = self.policy.list_namespaced_pod_disruption_budget(namespace, _preload_content=False)
            for pdb in _items(response):
                if (pdb["metadata"].get("labels") or {}).get(SERVICE_LABEL):
                    budgets[f"{namespace}/{pdb['metadata']['name']}"] = int(
                        (pdb.get("status") or {}).get("disruptionsAllowed") or 0)
        return budgets

    # -- carrying out decisions --------------------------------------------------------------------------

    def _preempt(self, preemptions: Iterable[Preempt], pods: Iterable[Mapping[str, Any]]) -> None:
        """Delete each preemption's victims gracefully (once, whatever number of gang members it serves)."""
        by_key = {pod_key(p): p for p in pods}
        done: set[str] = set()
        for preemption in sorted(preemptions, key=lambda p: p.pod):
            for victim in preemption.victims:
                if victim in done:
                    continue
                done.add(victim)
                namespace, _, name = victim.partition("/")
                try:
                    self.core.delete_namespaced_pod(name, namespace, _preload_content=False)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                log.info("preempted pod %s for %s on node %s", victim, preemption.pod, preemption.node)
                owner = _owner(by_key[victim]) if victim in by_key else None
                if owner:
                    self.record_event(owner, "Warning", "Preempted",
                                      f"pod {name} preempted on node {preemption.node} to make room for "
                                      f"{preemption.pod}, of higher priority")

    def _act(self, pod: Mapping[str, Any], outcome: PodOutcome) -> PodOutcome:
        decision = outcome.decision
        owner = _owner(pod)
        try:
            if isinstance(decision, Bind):
                self._bind(outcome.namespace, outcome.name, decision)
                self.observe(pod, "bound")
                if owner:
                    self.record_event(owner, "Normal", "Scheduled", f"pod {outcome.name} bound to node "
                                                                    f"{decision.node}, GPUs {list(decision.gpu_indices)}")
            elif isinstance(decision, Preempt):
                self._wait(pod, decision.reason, nominated=decision.node)
                self.observe(pod, "preempting")
                if owner:
                    self.record_event(owner, "Normal", "Preempting", f"pod {outcome.name}: {decision.reason}")
            else:
                self.observe(pod, "unschedulable")
                if self._wait(pod, decision.reason) and owner:
                    self.record_event(owner, "Warning", "FailedScheduling", f"pod {outcome.name}: {decision.reason}")
        except ApiException as exc:
            self.observe(pod, "error")
            if exc.status not in (404, 409):
                raise
            log.info("pod %s/%s changed while it was being scheduled (%s); retrying next cycle",
                     outcome.namespace, outcome.name, exc.status)
            return replace(outcome, decision=Unschedulable(pod_key(pod), f"retrying: pod changed while it was "
                                                                          f"scheduled ({exc.status})"))
        return outcome

    def _bind(self, namespace: str, name: str, decision: Bind) -> None:
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace,
                             "annotations": {GPU_ANNOTATION: ",".join(map(str, decision.gpu_indices))}},
                "target": {"apiVersion": "v1", "kind": "Node", "name": decision.node}}
        # the generated client cannot parse the Status the API server answers with: read it raw
        self.core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False)
        log.info("bound pod %s/%s to node %s, GPUs %s", namespace, name, decision.node, decision.gpu_indices)

    def _wait(self, pod: Mapping[str, Any], reason: str, nominated: str | None = None) -> bool:
        """Record why the pod waits (PodScheduled=False, and the node made free for it, if any); False when
        the pod already says so."""
        status = pod.get("status") or {}
        current = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
        if (current.get("status") == "False" and current.get("message") == reason
                and (nominated is None or status.get("nominatedNodeName") == nominated)):
            return False
        patch: dict[str, Any] = {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                 "message": reason, "lastTransitionTime": _now()}]}
        if nominated is not None:
            patch["nominatedNodeName"] = nominated
        self.core.patch_namespaced_pod_status(pod["metadata"]["name"], pod["metadata"]["namespace"],
                                              {"status": patch}, _preload_content=False)
        return True


# -- from API objects to the scheduler's queue -------------------------------------------------------------


def decide(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], pending: list[dict[str, Any]],
           services: Mapping[str, Mapping[str, Any]], budgets: Mapping[str, int],
           default_policy: str = "trireme") -> dict[str, Decision]:
    """A decision for every pending pod (by ``namespace/name``): held back by dependsOn, or decided by
    ``scheduler.cycle.schedule`` with its service's policy (``default_policy`` when it names none),
    priority and parallelism. Pods leaving a node — terminating, or the old half of a move in flight,
    deleted once its replacement serves — make a pod nominated there wait for them instead of looking
    for other room (a preemption elsewhere, say)."""
    free, decisions = gated(pending, services)
    leaving = [p for p in pods if p["metadata"].get("deletionTimestamp")] + [m.old for m in moves_in_flight(pods)]
    terminating: dict[str, int] = {}
    for pod in leaving:
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            terminating[node] = terminating.get(node, 0) + 1
    queue = [queue_entry(group, services, default_policy) for group in _groups(free)]
    result = schedule(cluster_from_objects(nodes, pods), queue, _victims(pods, services), budgets, terminating,
                      tensor_parallel_groups(services))
    decisions.update(result.decisions)
    return decisions


def tensor_parallel_of(spec: Mapping[str, Any]) -> int:
    """GPUs of one tensor-parallel group of a service's replica (they share an NVLink island); 1: none."""
    return int((spec.get("parallelism") or {}).get("tensorParallel") or 1)


def tensor_parallel_groups(services: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """The tensor-parallel group of each service that has one, by ``namespace/name``."""
    groups = {key: tensor_parallel_of(obj.get("spec") or {}) for key, obj in services.items()}
    return {key: group for key, group in groups.items() if group > 1}


def gated(pending: Iterable[dict[str, Any]], services: Mapping[str, Mapping[str, Any]]
          ) -> tuple[list[dict[str, Any]], dict[str, Decision]]:
    """The pending pods that may be placed, and a decision for each one its service's ``dependsOn``
    holds back (Unschedulable with the reason)."""
    service_gates = gates({key: ServiceState(tuple(obj.get("spec", {}).get("dependsOn") or ()), _is_ready(obj))
                           for key, obj in services.items()})
    decisions: dict[str, Decision] = {}
    free: list[dict[str, Any]] = []
    for pod in pending:
        gate = service_gates.get(service_key(pod))
        if gate is not None and not gate.open:
            decisions[pod_key(pod)] = Unschedulable(pod_key(pod), gate.reason)
        else:
            free.append(pod)
    return free, decisions


def _groups(pods: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Pending pods grouped: the stages of one pipeline-parallel replica together, other pods alone."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for pod in sorted(pods, key=pod_key):
        groups.setdefault(_gang_name(pod) or pod_key(pod), []).append(pod)
    return list(groups.values())


def _gang_name(pod: Mapping[str, Any]) -> str:
    """``namespace/<service>-r<replica>`` for a pipeline stage of a replica, '' for other pods."""
    labels = pod["metadata"].get("labels") or {}
    if STAGE_LABEL not in labels or not service_name(pod):
        return ""
    return f"{service_key(pod)}-r{labels.get(REPLICA_LABEL, '')}"


def queue_entry(group: list[dict[str, Any]], services: Mapping[str, Mapping[str, Any]],
                default_policy: str) -> Pending:
    """The queue entry of one pod, or of a gang of pipeline stages: what it asks for (with its service's
    priority and parallelism), its policy, age and nominated node."""
    first = group[0]
    spec = (services.get(service_key(first)) or {}).get("spec") or {}
    scheduling = spec.get("scheduling") or {}
    tensor_parallel = tensor_parallel_of(spec)
    spread = bool((scheduling.get("affinity") or {}).get("podAntiAffinity"))
    requests = tuple(replace(request_from_pod(p, spread=spread, tensor_parallel=tensor_parallel),
                             priority=_priority(p, services)) for p in group)
    age = min(p["metadata"].get("creationTimestamp") or "" for p in group)
    nominated = (first.get("status") or {}).get("nominatedNodeName") or ""
    policy = scheduling.get("policy") or default_policy
    gang = _gang_name(first)
    return Pending(Gang(gang, requests) if gang else requests[0], policy, age, nominated)


def _victims(pods: Iterable[Mapping[str, Any]], services: Mapping[str, Mapping[str, Any]]) -> dict[str, Victim]:
    """Bound replicas of InferenceServices, with what preemption needs; other pods are never preempted."""
    found = {}
    for pod in pods:
        if not (pod.get("spec") or {}).get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            continue
        service = services.get(service_key(pod)) if service_name(pod) else None
        if service is None:
            continue
        preemptible = ((service.get("spec") or {}).get("priority") or {}).get("preemptible", True)
        found[pod_key(pod)] = Victim(_priority(pod, services), bool(preemptible), service_key(pod),
                                      _gang_name(pod))
    return found


def _items(response: Any) -> list[dict[str, Any]]:
    return json.loads(response.data)["items"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def pod_key(pod: Mapping[str, Any]) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def _owner(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The InferenceService controlling ``pod``, as an object reference an Event can point at."""
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion") == API_VERSION:
            return {"apiVersion": API_VERSION, "kind": KIND,
                    "metadata": {"name": ref["name"], "namespace": pod["metadata"]["namespace"], "uid": ref["uid"]}}
    return None


def service_name(pod: Mapping[str, Any]) -> str:
    owner = _owner(pod)
    return owner["metadata"]["name"] if owner else ""


def service_key(pod: Mapping[str, Any]) -> str:
    return f"{pod['metadata']['namespace']}/{service_name(pod)}"


def _is_ready(obj: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def _priority(pod: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]]) -> int:
    """The pod's priority: what admission resolved into spec.priority, else its service's priority.value."""
    value = (pod.get("spec") or {}).get("priority")
    if value:
        return int(value)
    service = services.get(service_key(pod)) or {}
    return int(((service.get("spec") or {}).get("priority") or {}).get("value") or 0)
