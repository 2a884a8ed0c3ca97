"""The scheduling loop: one cycle places every pending Trireme pod of the cluster.

kube-scheduler's model, in the operator: a cycle lists every node and every pod
(any scheduler's, so GPUs held by others are never handed out), lists the
InferenceServices to learn priorities and ``dependsOn`` readiness, hands the
pending pods to ``scheduler/`` in queue order, and carries out the decisions:
bindings through the Binding API with the GPU indices in the pod's annotation,
PodScheduled=False with the reason on pods that wait, and an Event on the owning
InferenceService for each. Cycles are serialised, and a caller that arrives while a
cycle runs waits for the next one instead of starting its own, so many services
converging at once cost one or two cycles, not one each.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trireme.operator.api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from trireme.operator.binder import Outcome, decide
from trireme.scheduler.dependencies import ServiceState, gates
from trireme.scheduler.firstfit import Bind, Unschedulable
from trireme.scheduler.snapshot import GPU_ANNOTATION, snapshot_from_objects

log = logging.getLogger(__name__)

EventSink = Callable[[Mapping[str, Any], str, str, str], None]
"""Records an Event: (involved object, type "Normal"/"Warning", reason, message)."""


@dataclass(frozen=True)
class PodOutcome:
    """What a cycle did for one pod (``namespace``/``name``), owned by InferenceService ``service``."""

    namespace: str
    name: str
    service: str
    decision: Bind | Unschedulable


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
                 record_event: EventSink | None = None, writers: int = 8) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.scheduler_name = scheduler_name
        self.namespaces = tuple(namespaces)
        self.record_event = record_event or (lambda *_: None)
        self.writers = writers
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

    # -- one cycle -------------------------------------------------------------------------------------

    def _cycle(self) -> list[PodOutcome]:
        started = time.perf_counter()
        pods = self._list_pods()
        pending = [p for p in pods if self._is_pending_here(p)]
        if not pending:
            return []
        nodes = _items(self.core.list_node(_preload_content=False))
        services = self._list_services({p["metadata"]["namespace"] for p in pending})
        read = time.perf_counter()
        decisions = self._decide(nodes, pods, pending, services)
        decided = time.perf_counter()
        work = [(pod, PodOutcome(pod["metadata"]["namespace"], pod["metadata"]["name"], _service_name(pod),
                                 decisions[_pod_key(pod)])) for pod in pending]
        with ThreadPoolExecutor(self.writers, thread_name_prefix="bind") as pool:
            outcomes = list(pool.map(lambda item: self._act(*item), work))
        self.last_cycle = CycleTimings(read - started, decided - read, time.perf_counter() - decided, len(pending))
        return outcomes

    @staticmethod
    def _decide(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], pending: list[dict[str, Any]],
                services: Mapping[str, Mapping[str, Any]]) -> dict[str, Bind | Unschedulable]:
        """A decision for every pending pod (by ``namespace/name``): held back by dependsOn, or placed in
        queue order (priority, then age, then name)."""
        service_gates = gates({key: ServiceState(tuple(obj.get("spec", {}).get("dependsOn") or ()), _is_ready(obj))
                               for key, obj in services.items()})
        decisions: dict[str, Bind | Unschedulable] = {}
        placeable = []
        for pod in pending:
            gate = service_gates.get(_service_key(pod))
            if gate is not None and not gate.open:
                decisions[_pod_key(pod)] = Unschedulable(gate.reason)
            else:
                placeable.append(pod)
        placeable.sort(key=lambda p: (-_priority(p, services), p["metadata"].get("creationTimestamp") or "",
                                      _pod_key(p)))
        outcomes = _decide_in_order(snapshot_from_objects(nodes, pods), placeable)
        decisions.update({_pod_key(p): o.decision for p, o in zip(placeable, outcomes)})
        return decisions

    def _list_pods(self) -> list[dict[str, Any]]:
        if not self.namespaces:
            return _items(self.core.list_pod_for_all_namespaces(_preload_content=False))
        # a namespaced install still counts every pod on the nodes when it may list them
        try:
            return _items(self.core.list_pod_for_all_namespaces(_preload_content=False))
        except ApiException as exc:
            if exc.status != 403:
                raise
            return [p for ns in self.namespaces for p in _items(self.core.list_namespaced_pod(ns, _preload_content=False))]

    def _is_pending_here(self, pod: Mapping[str, Any]) -> bool:
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

    def _act(self, pod: Mapping[str, Any], outcome: PodOutcome) -> PodOutcome:
        decision = outcome.decision
        owner = _owner(pod)
        try:
            if isinstance(decision, Bind):
                self._bind(outcome.namespace, outcome.name, decision)
                if owner:
                    self.record_event(owner, "Normal", "Scheduled",
                                      f"pod {outcome.name} bound to node {decision.node}, "
                                      f"GPUs {list(decision.gpu_indices)}")
            elif self._mark_unschedulable(pod, decision.reason) and owner:
                self.record_event(owner, "Warning", "FailedScheduling", f"pod {outcome.name}: {decision.reason}")
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
            log.info("pod %s/%s changed while it was being scheduled (%s); retrying next cycle",
                     outcome.namespace, outcome.name, exc.status)
            return PodOutcome(outcome.namespace, outcome.name, outcome.service,
                              Unschedulable(f"retrying: pod changed while it was scheduled ({exc.status})"))
        return outcome

    def _bind(self, namespace: str, name: str, decision: Bind) -> None:
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace,
                             "annotations": {GPU_ANNOTATION: ",".join(map(str, decision.gpu_indices))}},
                "target": {"apiVersion": "v1", "kind": "Node", "name": decision.node}}
        # the generated client cannot parse the Status the API server answers with: read it raw
        self.core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False)
        log.info("bound pod %s/%s to node %s, GPUs %s", namespace, name, decision.node, decision.gpu_indices)

    def _mark_unschedulable(self, pod: Mapping[str, Any], reason: str) -> bool:
        """Record why the pod waits (PodScheduled=False); False when it already says so."""
        current = next((c for c in (pod.get("status") or {}).get("conditions") or []
                        if c.get("type") == "PodScheduled"), {})
        if current.get("status") == "False" and current.get("message") == reason:
            return False
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": reason,
                     "lastTransitionTime": _now()}
        self.core.patch_namespaced_pod_status(pod["metadata"]["name"], pod["metadata"]["namespace"],
                                              {"status": {"conditions": [condition]}}, _preload_content=False)
        return True


def _decide_in_order(snapshot: Any, pods: list[dict[str, Any]]) -> list[Outcome]:
    """Decisions for ``pods`` in the given (queue) order, each on the snapshot the ones before left."""
    outcomes = []
    for pod in pods:
        outcome = decide(snapshot, [pod])[0]
        if isinstance(outcome.decision, Bind):
            snapshot = snapshot.with_pod(outcome.decision.node, _pod_key(pod), outcome.decision.gpu_indices)
        outcomes.append(outcome)
    return outcomes


def _items(response: Any) -> list[dict[str, Any]]:
    return json.loads(response.data)["items"]


def _now() -> str:
    from datetime import UTC

    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _pod_key(pod: Mapping[str, Any]) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def _owner(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The InferenceService controlling ``pod``, as an object reference an Event can point at."""
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion") == API_VERSION:
            return {"apiVersion": API_VERSION, "kind": KIND,
                    "metadata": {"name": ref["name"], "namespace": pod["metadata"]["namespace"], "uid": ref["uid"]}}
    return None


def _service_name(pod: Mapping[str, Any]) -> str:
    owner = _owner(pod)
    return owner["metadata"]["name"] if owner else ""


def _service_key(pod: Mapping[str, Any]) -> str:
    return f"{pod['metadata']['namespace']}/{_service_name(pod)}"


def _is_ready(obj: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def _priority(pod: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]]) -> int:
    """The pod's priority: what admission resolved into spec.priority, else its service's priority.value."""
    value = (pod.get("spec") or {}).get("priority")
    if value:
        return int(value)
    service = services.get(_service_key(pod)) or {}
    return int(((service.get("spec") or {}).get("priority") or {}).get("value") or 0)
