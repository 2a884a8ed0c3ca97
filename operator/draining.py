"""Taking a replica out of service without failing a request: out of the Service, wait until idle, delete.

Two parts of the operator remove replicas that serve: the autoscaler's scale-down and the
rebalancer's moves. Both go through ``Drainer`` so that both keep the same promise:

1. ``start``: the pod's ``serving.trireme.io/serving`` label turns "false", so the Service (and every
   balancer that follows its endpoints) stops sending it new requests; the time goes into
   ``serving.trireme.io/draining-since`` on the pod, so a restarted operator continues the drain;
2. ``drained``: true once ``drain_grace_s`` has passed (the time balancers need to notice) and Triton,
   asked directly on its metrics port (Prometheus scrapes too rarely to tell), reports no pending
   request and no request completed between two probes; or once ``drain_timeout_s`` has passed, so a
   stuck replica does not hold its GPUs for ever;
3. ``delete``: the pod goes; Triton finishes what it is executing on SIGTERM.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trireme.operator.api import TRITON_METRICS_PORT
from trireme.operator.loadmetrics import PENDING
from trireme.operator.reconcile import DRAINING_ANNOTATION, SERVING_LABEL, pod_is_ready
from trireme.operator.settings import OperatorSettings

log = logging.getLogger(__name__)

Probe = Callable[[str, float], tuple[float, float]]
"""Asks one pod's Triton (by IP) for (pending requests, completed requests); raises OSError when it cannot."""
MERGE = "application/merge-patch+json"


def triton_probe(ip: str, timeout_s: float) -> tuple[float, float]:
    """(pending, completed) requests of every model, from the pod's Triton metrics endpoint directly:
    Prometheus scrapes too rarely to tell when a draining replica has gone idle."""
    url = f"http://{ip}:{TRITON_METRICS_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - a pod IP, plain HTTP
        text = response.read().decode(errors="replace")
    pending = completed = 0.0
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in (PENDING, "nv_inference_request_success", "nv_inference_request_failure"):
            value = float(line.rsplit(" ", 1)[1])
            if name == PENDING:
                pending += value
            else:
                completed += value
    return pending, completed


class Drainer:
    """Drains pods (see the module's docstring); thread-safe, remembers one probe per draining pod."""

    def __init__(self, core: client.CoreV1Api, settings: OperatorSettings, probe: Probe = triton_probe) -> None:
        self.core = core
        self.settings = settings
        self.probe = probe
        self._completed: dict[str, float] = {}
        """Per draining pod (``namespace/name``), the completed-request count of the previous probe."""
        self._lock = threading.Lock()

    def start(self, pod: Mapping[str, Any], now: float) -> None:
        """Take the pod out of the Service, recording when."""
        self._label(pod, "false", rfc3339(now))
        log.info("draining pod %s/%s", pod["metadata"]["namespace"], pod["metadata"]["name"])

    def restore(self, pod: Mapping[str, Any]) -> None:
        """Put a draining pod back into the Service."""
        self._label(pod, "true", None)
        with self._lock:
            self._completed.pop(_key(pod), None)

    def drained(self, pod: Mapping[str, Any], now: float) -> bool:
        """Whether the draining pod may be deleted now. A pod taken out of the Service by hand (no time
        recorded) starts its drain now."""
        since = parse_time((pod["metadata"].get("annotations") or {}).get(DRAINING_ANNOTATION))
        if since is None:
            self.start(pod, now)
            return False
        elapsed = now - since
        if elapsed >= self.settings.drain_timeout_s:
            return True
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or not pod_is_ready(pod):
            return elapsed >= self.settings.drain_grace_s  # nothing can reach it, nothing to wait for
        try:
            pending, completed = self.probe(ip, self.settings.triton_timeout_s)
        except (OSError, ValueError) as exc:
            log.debug("cannot ask Triton of draining pod %s: %s", _key(pod), exc)
            return False
        with self._lock:
            before = self._completed.get(_key(pod))
            self._completed[_key(pod)] = completed
        return elapsed >= self.settings.drain_grace_s and pending == 0 and before == completed

    def delete(self, pod: Mapping[str, Any]) -> None:
        """Delete the pod (gone already is fine)."""
        meta = pod["metadata"]
        try:
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"], _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise
        with self._lock:
            self._completed.pop(_key(pod), None)
        log.info("deleted drained pod %s/%s", meta["namespace"], meta["name"])

    def _label(self, pod: Mapping[str, Any], serving: str, since: str | None) -> None:
        meta = pod["metadata"]
        patch = {"metadata": {"labels": {SERVING_LABEL: serving}, "annotations": {DRAINING_ANNOTATION: since}}}
        try:
            self.core.patch_namespaced_pod(meta["name"], meta["namespace"], patch, _content_type=MERGE,
                                           _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise


def _key(pod: Mapping[str, Any]) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def rfc3339(at: float) -> str:
    """``at`` (seconds since the epoch) as the RFC 3339 UTC time Kubernetes writes."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(text: str | None) -> float | None:
    """An RFC 3339 time as seconds since the epoch; None when absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
