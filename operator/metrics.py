"""The operator's own Prometheus metrics, and the HTTP endpoints that serve them and its health.

Trireme reads Triton's metrics to scale services; this module is about the operator itself:
how long reconciles take and how they end, how scheduling goes (attempts by result, the time
from a pod's creation to its binding, the length of a scheduling cycle), how many replicas
wait for GPUs per service, how rebalancing moves go, how often a bind fails, which version runs, and whether this
replica leads. Every metric lives in the ``CollectorRegistry`` of one ``OperatorMetrics``
rather than in prometheus-client's global registry, so two operators in one process (tests)
never share counters.

``serve`` runs one small aiohttp server per port: ``/metrics`` on the metrics port, and
``/healthz`` (liveness) and ``/readyz`` (readiness) on the health port. Kubernetes convention
(controller-runtime does the same) keeps probes off the metrics port, so a NetworkPolicy or
a ServiceMonitor can expose metrics without exposing the probes; when both ports are equal
one server serves all three paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

log = logging.getLogger(__name__)

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: a reconcile is a few API calls (milliseconds) plus Triton checks bounded by their timeout."""
SCHEDULING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Seconds from a pod's creation to its binding: sub-second when GPUs are free, minutes when a pod
waits for room."""
CYCLE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds of one scheduling cycle: a snapshot of nodes and pods, decisions and binds."""

RESULTS = ("bound", "unschedulable", "error")
"""Results of one scheduling attempt of one pod."""
MOVE_STEPS = ("started", "done", "abandoned")
"""What happens to a rebalancing move: started (new replica bound), done (old one drained and deleted),
abandoned (the new replica never served)."""


def _version() -> str:
    try:
        return version("trireme")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


class OperatorMetrics:
    """The operator's metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.reconcile_duration = Histogram(
            "trireme_reconcile_duration_seconds", "Time to reconcile one InferenceService, by result "
            "(ok, invalid: the spec cannot be served, error: the reconcile failed and is retried).",
            ["result"], buckets=RECONCILE_BUCKETS, registry=self.registry)
        self.scheduling_attempts = Counter(
            "trireme_scheduling_attempts", "Attempts to place and bind one pending pod, by result "
            "(bound, unschedulable: no node has room, error: the API refused the bind or status write).",
            ["result"], registry=self.registry)
        self.scheduling_latency = Histogram(
            "trireme_scheduling_latency_seconds", "Time from a pod's creation to its binding to a node.",
            buckets=SCHEDULING_BUCKETS, registry=self.registry)
        self.scheduling_cycle = Histogram(
            "trireme_scheduling_cycle_duration_seconds", "Time of one scheduling cycle that had pending pods: "
            "snapshot, decisions and binds.", buckets=CYCLE_BUCKETS, registry=self.registry)
        self.pending_replicas = Gauge(
            "trireme_pending_replicas", "Replicas of an InferenceService with a pod not bound to a node yet.",
            ["namespace", "service"], registry=self.registry)
        self.bind_errors = Counter(
            "trireme_bind_errors", "Binds (or unschedulable marks) the API server refused.",
            registry=self.registry)
        self.leader = Gauge(
            "trireme_leader", "1 while this operator replica acts, 0 while it stands by for a peer "
            "of higher priority.", registry=self.registry)
        self.moves = Counter(
            "trireme_rebalance_moves", "Make-before-break moves of replicas by the rebalancer, by step (started, "
            "done: the old replica drained and deleted, abandoned: the new replica never served).",
            ["step"], registry=self.registry)
        self.build = Info("trireme_build", "The running Trireme.", registry=self.registry)
        self.build.info({"version": _version()})
        for result in RESULTS:  # every series exists from the start, so rate() sees the first increment
            self.scheduling_attempts.labels(result)
        for step in MOVE_STEPS:
            self.moves.labels(step)
        self._services: set[tuple[str, str]] = set()

    def reconciled(self, result: str, seconds: float) -> None:
        """One reconcile ended with ``result`` (ok, invalid or error) after ``seconds``."""
        self.reconcile_duration.labels(result).observe(seconds)

    def scheduling_attempt(self, pod: Mapping[str, Any], result: str, now: datetime | None = None) -> None:
        """The scheduler tried ``pod``; a bound pod also records the time since its creation."""
        self.scheduling_attempts.labels(result).inc()
        if result == "error":
            self.bind_errors.inc()
        created = (pod.get("metadata") or {}).get("creationTimestamp")
        if result == "bound" and created:
            now = now or datetime.now(UTC)
            since = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
            self.scheduling_latency.observe(max(0.0, (now - since).total_seconds()))

    def move(self, step: str) -> None:
        """A rebalancing move reached ``step`` (one of ``MOVE_STEPS``)."""
        self.moves.labels(step).inc()

    def scheduling_cycle_took(self, seconds: float) -> None:
        """A scheduling cycle with pending pods took ``seconds``."""
        self.scheduling_cycle.observe(seconds)

    def pending(self, namespace: str, service: str, replicas: int) -> None:
        """``replicas`` of the service wait for placement."""
        self._services.add((namespace, service))
        self.pending_replicas.labels(namespace, service).set(replicas)

    def forget_services(self, present: Iterable[tuple[str, str]]) -> None:
        """Drop the series of services that are gone (everything but ``present``)."""
        for key in self._services - set(present):
            with contextlib.suppress(KeyError):
                self.pending_replicas.remove(*key)
            self._services.discard(key)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


@dataclass
class Health:
    """What the probes report: readiness once kopf has started; liveness while the resync loop turns.

    ``stall_after_s`` is how long the loop may go without a pass before the process counts as hung
    (a reconcile blocked on an API call that never answers); the kubelet then restarts it.
    """

    stall_after_s: float
    clock: Callable[[], float] = time.monotonic
    ready: bool = False
    last_pass: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.last_pass = self.clock()

    def passed(self) -> None:
        """The resync loop completed a pass (acting or standing by)."""
        self.last_pass = self.clock()

    def alive(self) -> bool:
        return self.clock() - self.last_pass <= self.stall_after_s


def _routes(metrics: OperatorMetrics, health: Health, paths: set[str]) -> web.Application:
    async def metrics_page(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(metrics.exposition)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        if health.alive():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="the resync loop has not completed a pass in time\n")

    async def readyz(_: web.Request) -> web.Response:
        if health.ready:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="starting\n")

    app = web.Application()
    handlers = {"/metrics": metrics_page, "/healthz": healthz, "/readyz": readyz}
    for path in sorted(paths):
        app.router.add_get(path, handlers[path])
    return app


@contextlib.asynccontextmanager
async def serve(metrics: OperatorMetrics, health: Health, metrics_port: int, health_port: int,
                host: str = "0.0.0.0") -> AsyncIterator[None]:
    """Serve /metrics on ``metrics_port`` and /healthz, /readyz on ``health_port`` while in the block.

    A port of 0 serves nothing (several operators can then run side by side on one machine).
    """
    wanted: dict[int, set[str]] = {}
    if metrics_port:
        wanted.setdefault(metrics_port, set()).add("/metrics")
    if health_port:
        wanted.setdefault(health_port, set()).update({"/healthz", "/readyz"})
    runners: list[web.AppRunner] = []
    try:
        for port, paths in wanted.items():
            runner = web.AppRunner(_routes(metrics, health, paths), access_log=None)
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, host, port)
            await site.start()
            log.info("serving %s on port %d", ", ".join(sorted(paths)), port)
        yield
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
