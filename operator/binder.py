"""The scheduling loop's I/O: read nodes and pods, ask ``scheduler.place``, bind.

Trireme is a secondary scheduler: pods with its ``schedulerName`` are bound by
nobody else. One cycle takes a snapshot of every node and every pod (any
scheduler's, so GPUs others hold are never handed out), places the pending pods
in name order, and binds each through the Binding API with the chosen GPU indices
in the ``trireme.io/gpus`` annotation. A pod that fits nowhere gets PodScheduled=False
with the reason. Cycles are serialised by a lock, so two services reconciled at
once never pick the same GPUs.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trireme.operator.reconcile import PRODUCTS_ANNOTATION, SHARE_ANNOTATION
from trireme.scheduler.firstfit import Bind, Decision, PlacementRequest, Unschedulable, place
from trireme.scheduler.snapshot import GPU_ANNOTATION, Snapshot, Toleration, pod_gpu_request, snapshot_from_objects

log = logging.getLogger(__name__)

SHARED_GPUS_UNSUPPORTED = ("shares of a GPU (gpus.fraction or gpus.memory) are not placed yet: "
                           "use gpus.count for whole GPUs")


@dataclass(frozen=True)
class Outcome:
    """What a cycle did for one pod: bound it (``decision`` is a Bind) or left it pending."""

    pod: str
    decision: Decision


def placement_request(pod: Mapping[str, Any]) -> PlacementRequest:
    """What a pod asks of the scheduler, read from its spec and Trireme's annotations."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    products = tuple(p for p in (meta.get("annotations") or {}).get(PRODUCTS_ANNOTATION, "").split(",") if p)
    tolerations = tuple(Toleration(t.get("key") or "", t.get("operator") or "Equal", t.get("value") or "",
                                   t.get("effect") or "") for t in spec.get("tolerations") or [])
    return PlacementRequest(pod=f"{meta['namespace']}/{meta['name']}", gpus=pod_gpu_request(pod), products=products,
                            node_selector=dict(spec.get("nodeSelector") or {}), tolerations=tolerations)


def decide(snapshot: Snapshot, pods: Iterable[Mapping[str, Any]]) -> list[Outcome]:
    """Decisions for ``pods`` in name order, each on the snapshot left by the ones before."""
    outcomes = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        name = pod["metadata"]["name"]
        if (pod["metadata"].get("annotations") or {}).get(SHARE_ANNOTATION):
            outcomes.append(Outcome(name, Unschedulable(SHARED_GPUS_UNSUPPORTED)))
            continue
        request = placement_request(pod)
        decision = place(snapshot, request)
        if isinstance(decision, Bind):
            snapshot = snapshot.with_pod(decision.node, request.pod, decision.gpu_indices)
        outcomes.append(Outcome(name, decision))
    return outcomes


AttemptObserver = Callable[[Mapping[str, Any], str], None]
"""Told of each scheduling attempt: the pod and "bound", "unschedulable" or "error" (for metrics)."""


class Binder:
    """Binds pending pods of one scheduler name; one cycle at a time per process."""

    def __init__(self, api: client.ApiClient, scheduler_name: str, observe: AttemptObserver | None = None) -> None:
        self.core = client.CoreV1Api(api)
        self.scheduler_name = scheduler_name
        self.observe = observe or (lambda pod, result: None)
        self._lock = threading.Lock()

    def schedule(self, pending: Iterable[Mapping[str, Any]]) -> list[Outcome]:
        """Place and bind ``pending`` pods (unbound, of this scheduler); return what happened to each."""
        candidates = [p for p in pending if not (p.get("spec") or {}).get("nodeName")
                      and (p.get("spec") or {}).get("schedulerName") == self.scheduler_name
                      and not p["metadata"].get("deletionTimestamp")]
        if not candidates:
            return []
        with self._lock:
            nodes = self._list(self.core.list_node)
            pods = self._list(self.core.list_pod_for_all_namespaces)
            bound = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods
                     if (p.get("spec") or {}).get("nodeName")}
            todo = [p for p in candidates if (p["metadata"]["namespace"], p["metadata"]["name"]) not in bound]
            outcomes = decide(snapshot_from_objects(nodes, pods), todo)
            by_name = {p["metadata"]["name"]: p for p in todo}
            return [self._act(by_name[o.pod], o) for o in outcomes]

    def _act(self, pod: Mapping[str, Any], outcome: Outcome) -> Outcome:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        decision = outcome.decision
        try:
            if isinstance(decision, Bind):
                self._bind(namespace, name, decision)
            else:
                self._mark_unschedulable(pod, decision.reason)
        except ApiException as exc:
            self.observe(pod, "error")
            if exc.status not in (404, 409):
                raise
            log.info("pod %s/%s changed while it was being scheduled (%s); retrying next cycle",
                     namespace, name, exc.status)
            return Outcome(name, Unschedulable(f"retrying: pod changed while it was scheduled ({exc.status})"))
        self.observe(pod, "bound" if isinstance(decision, Bind) else "unschedulable")
        return outcome

    def _bind(self, namespace: str, name: str, decision: Bind) -> None:
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace,
                             "annotations": {GPU_ANNOTATION: ",".join(map(str, decision.gpu_indices))}},
                "target": {"apiVersion": "v1", "kind": "Node", "name": decision.node}}
        # the generated client cannot parse the Status the API server answers with: read it raw
        self.core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False)
        log.info("bound pod %s/%s to node %s, GPUs %s", namespace, name, decision.node, decision.gpu_indices)

    def _mark_unschedulable(self, pod: Mapping[str, Any], reason: str) -> None:
        current = next((c for c in (pod.get("status") or {}).get("conditions") or []
                        if c.get("type") == "PodScheduled"), {})
        if current.get("status") == "False" and current.get("message") == reason:
            return
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": reason}
        self.core.patch_namespaced_pod_status(pod["metadata"]["name"], pod["metadata"]["namespace"],
                                              {"status": {"conditions": [condition]}})

    @staticmethod
    def _list(method: Any) -> list[dict[str, Any]]:
        response = method(_preload_content=False)
        return json.loads(response.data)["items"]
