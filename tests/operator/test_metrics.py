"""The operator's own metrics and its HTTP endpoints: separate registries, what each recording does,
the probes' verdicts, and the layout of /metrics, /healthz and /readyz over one or two ports."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import aiohttp
import pytest
from trireme.operator.metrics import Health, OperatorMetrics, serve


def sample(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_operator_has_its_own_registry() -> None:
    first, second = OperatorMetrics(), OperatorMetrics()
    first.reconciled("ok", 0.2)
    assert sample(first, "trireme_reconcile_duration_seconds_count", result="ok") == 1
    assert sample(second, "trireme_reconcile_duration_seconds_count", result="ok") is None


def test_every_scheduling_result_is_exported_from_the_start() -> None:
    metrics = OperatorMetrics()
    for result in ("bound", "unschedulable", "error"):
        assert sample(metrics, "trireme_scheduling_attempts_total", result=result) == 0
    assert b'trireme_build_info{version="' in metrics.exposition()


# (id, result, creationTimestamp, attempts, latency observations, bind errors)
ATTEMPT_CASES = [
    ("bound", "bound", "2026-01-02T03:04:00Z", 1, 1, 0),
    ("unschedulable-has-no-latency", "unschedulable", "2026-01-02T03:04:00Z", 1, 0, 0),
    ("error-counts-a-bind-error", "error", "2026-01-02T03:04:00Z", 1, 0, 1),
    ("bound-without-a-creation-time", "bound", None, 1, 0, 0),
]


@pytest.mark.parametrize(("result", "created", "attempts", "latencies", "errors"), [c[1:] for c in ATTEMPT_CASES],
                         ids=[c[0] for c in ATTEMPT_CASES])
def test_scheduling_attempts(result: str, created: str | None, attempts: int, latencies: int, errors: int) -> None:
    metrics = OperatorMetrics()
    pod = {"metadata": {"name": "p", **({"creationTimestamp": created} if created else {})}}
    metrics.scheduling_attempt(pod, result, now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert sample(metrics, "trireme_scheduling_attempts_total", result=result) == attempts
    assert sample(metrics, "trireme_scheduling_latency_seconds_count") == latencies
    assert sample(metrics, "trireme_bind_errors_total") == errors
    if latencies:
        assert sample(metrics, "trireme_scheduling_latency_seconds_sum") == 5.0


def test_pending_series_of_deleted_services_are_dropped() -> None:
    metrics = OperatorMetrics()
    metrics.pending("ns", "a", 2)
    metrics.pending("ns", "b", 0)
    metrics.forget_services([("ns", "b")])
    assert sample(metrics, "trireme_pending_replicas", namespace="ns", service="a") is None
    assert sample(metrics, "trireme_pending_replicas", namespace="ns", service="b") == 0


def test_health_is_lost_when_the_resync_stalls() -> None:
    now = [100.0]
    health = Health(stall_after_s=60, clock=lambda: now[0])
    now[0] = 159.0
    assert health.alive()
    now[0] = 161.0
    assert not health.alive()
    health.passed()
    assert health.alive()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def fetch(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


@pytest.mark.parametrize("same_port", [False, True], ids=["metrics-and-probes-apart", "one-port"])
async def test_endpoints(same_port: bool) -> None:
    metrics_port = free_port()
    health_port = metrics_port if same_port else free_port()
    metrics, health = OperatorMetrics(), Health(stall_after_s=60)
    metrics.reconciled("ok", 0.1)
    async with serve(metrics, health, metrics_port, health_port, host="127.0.0.1"):
        status, text = await fetch(metrics_port, "/metrics")
        assert status == 200 and 'trireme_reconcile_duration_seconds_count{result="ok"} 1.0' in text
        assert (await fetch(health_port, "/healthz"))[0] == 200
        assert (await fetch(health_port, "/readyz"))[0] == 503  # kopf has not started yet
        health.ready = True
        assert (await fetch(health_port, "/readyz"))[0] == 200
        if not same_port:
            assert (await fetch(metrics_port, "/healthz"))[0] == 404
            assert (await fetch(health_port, "/metrics"))[0] == 404


async def test_port_zero_serves_nothing() -> None:
    async with serve(OperatorMetrics(), Health(stall_after_s=60), 0, 0):
        pass
