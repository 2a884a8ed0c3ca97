"""The autoscaler's I/O glue against kmock, with fake time, a fake Prometheus and fake Triton probes.

Each test seeds the mock with an autoscaled InferenceService and its pods, then steps the
autoscaler the way the resync pass does, advancing a fake clock by the autoscale interval:
scale-up capped by what the scheduler can place, metrics outages that hold the count and
turn MetricsAvailable False after the threshold and back, and a scale-down that takes the
least-loaded replica out of the Service, waits for Triton to go idle and only then deletes
it. The decisions themselves are ``scheduler.autoscale``'s and are tested there.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import kmock
import pytest
from kubernetes import client
from trireme.operator.api import InferenceService
from trireme.operator.autoscaling import Autoscaler, autoscaler_settings, status_differs
from trireme.operator.loadmetrics import MetricsUnavailable, PrometheusSettings, queries
from trireme.operator.reconcile import (REPLACES_ANNOTATION, AutoscalerReport, counted_pods, desired_replica_count,
                                        moves_in_flight, pods_to_label_serving, replica_indices, service_status)
from trireme.operator.settings import OperatorSettings
from trireme.scheduler.autoscale import Dispatch, Signal
from trireme.scheduler.cycle import Bind, Unschedulable

PODS = kmock.resource("v1/pods")
START = 1_700_000_000.0
SETTINGS = OperatorSettings(namespaces=("ns",), autoscale_interval_s=5.0, metrics_unavailable_after_s=12.0,
                            drain_grace_s=3.0, drain_timeout_s=60.0)


def body(**autoscaling: Any) -> dict[str, Any]:
    spec = {"enabled": True, "minReplicas": 1, "maxReplicas": 4, "signal": "pendingRequests", "target": 2,
            "behavior": {"scaleUp": {"maxChange": 4},
                         "scaleDown": {"stabilizationWindowSeconds": 10, "periodSeconds": 1, "maxChange": "100%"}},
            **autoscaling}
    return {"apiVersion": "serving.trireme.io/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": "svc", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": {"models": [{"name": "simple"}], "modelRepository": {"uri": "/srv/models"}, "replicas": 1,
                     "autoscaling": spec}}


def pod(index: int, ready: bool = True, serving: str = "true") -> dict[str, Any]:
    name = f"svc-r{index}"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "annotations": {},
                         "labels": {"app.kubernetes.io/managed-by": "trireme", "serving.trireme.io/service": "svc",
                                    "serving.trireme.io/replica": str(index), "serving.trireme.io/serving": serving}},
            "spec": {"schedulerName": "trireme", "nodeName": "a", "containers": [{"name": "triton", "image": "t"}]},
            "status": {"podIP": f"127.0.9.{index + 1}",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


@dataclass
class FakePrometheus:
    """Answers loadmetrics' queries from per-pod values; ``down`` makes every query fail."""

    pending: dict[str, float] = field(default_factory=dict)
    success: dict[str, float] = field(default_factory=dict)
    compute_rate: dict[str, float] = field(default_factory=dict)
    """Compute µs per second per pod: the requests each is running, as Triton's counters show them."""
    down: bool = False

    def __call__(self, promql: str, at: float) -> list[dict[str, Any]]:
        if self.down:
            raise MetricsUnavailable("Prometheus at http://prometheus.test did not answer: connection refused")
        name = next(n for n, text in queries(PrometheusSettings(), "ns", "svc").items() if text == promql)
        if name == "gpu_utilization":
            return []
        values = {"pending": self.pending, "success": self.success, "rate:compute_us": self.compute_rate}.get(name)
        pods = self.pending
        return [{"metric": {"pod": p}, "value": [at, str({"age": 1.0}.get(name, (values or {}).get(p, 0.0)))]}
                for p in pods]


@dataclass
class Harness:
    cluster: kmock.KubernetesEmulator
    autoscaler: Autoscaler
    prometheus: FakePrometheus
    clock: list[float]
    events: list[tuple[str, str, str]]
    simulated: list[list[str]]
    fits: int = 8
    triton: dict[str, tuple[float, float]] = field(default_factory=dict)

    async def step(self, advance: float = 5.0) -> AutoscalerReport | None:
        """Advance the fake clock and run one step, in a thread: kmock serves on this event loop."""
        self.clock[0] += advance
        await asyncio.to_thread(self.autoscaler.step, self.tis())
        return self.autoscaler.report("ns", "svc")

    def tis(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.cluster.objects[kmock.resource("serving.trireme.io/v1alpha1/"
                                                                         "inferenceservices"), "ns", "svc"].raw))

    def pods(self) -> dict[str, dict[str, Any]]:
        return {key[2]: json.loads(json.dumps(obj.raw)) for key, obj in self.cluster.objects.items()
                if key[0] == PODS and not obj.deleted}

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


@pytest.fixture
def harness(kmock: kmock.KubernetesEmulator) -> Iterator[Harness]:
    kmock.resources[PODS] = {}
    kmock.resources[kmock.resource("serving.trireme.io/v1alpha1/inferenceservices")] = {}
    configuration = client.Configuration()
    configuration.host = str(kmock.url).rstrip("/")
    api = client.ApiClient(configuration)
    clock = [START]
    events: list[tuple[str, str, str]] = []
    simulated: list[list[str]] = []
    prometheus = FakePrometheus()
    holder: dict[str, Harness] = {}

    def simulate(extra: list[dict[str, Any]]) -> dict[str, Any]:
        simulated.append([p["metadata"]["name"] for p in extra])
        fits = holder["h"].fits
        return {f"ns/{p['metadata']['name']}": Bind(p["metadata"]["name"], "a", (i,)) if i < fits else
                Unschedulable(p["metadata"]["name"], "needs 1× GPU on one node; largest free block is 0")
                for i, p in enumerate(extra)}

    def probe(ip: str, timeout_s: float) -> tuple[float, float]:
        return holder["h"].triton.get(ip, (0.0, 0.0))

    autoscaler = Autoscaler(api, SETTINGS, simulate, lambda obj, kind, reason, message:
                            events.append((kind, reason, message)), query=prometheus, clock=lambda: clock[0],
                            probe=probe)
    harness = holder["h"] = Harness(kmock, autoscaler, prometheus, clock, events, simulated)
    kmock.objects[kmock.resource("serving.trireme.io/v1alpha1/inferenceservices"), "ns", "svc"] = body()
    yield harness
    api.close()


def seed(harness: Harness, *pods: dict[str, Any]) -> None:
    for item in pods:
        harness.cluster.objects[PODS, "ns", item["metadata"]["name"]] = item


pytestmark = pytest.mark.kmock(cls=kmock.KubernetesEmulator)


async def test_load_scales_up_to_what_the_gpus_can_place(harness: Harness) -> None:
    seed(harness, pod(0))
    harness.prometheus.pending = {"svc-r0": 10.0}  # 10 requests waiting on one replica, target 2 per replica
    harness.fits = 2
    assert (await harness.step()).desired_replicas == 1  # one sample is not enough to decide: held
    report = await harness.step()
    assert report is not None and report.desired_replicas == 3  # 1 + the 2 that fit, not the 4 the load asks
    assert harness.simulated[-1] == ["svc-r1", "svc-r2", "svc-r3"]  # the lowest free indices
    assert report.capacity == ("the load needs 4 replicas but the free GPUs place 3: needs 1× GPU on one node; "
                               "largest free block is 0")
    assert report.status["capacityLimitedTo"] == 3 and report.status["action"] == "scale-up"
    assert report.status["metrics"]["pendingRequests"] == 10.0
    assert harness.reasons() == ["InsufficientGPUs", "ScaledUp"]
    assert harness.events[-1][2].startswith("1 → 3 replicas: scale-up to 4")
    assert report.metrics is not None and report.metrics.available
    await harness.step()  # the same shortfall is not reported again
    assert harness.reasons().count("InsufficientGPUs") == 1


async def test_a_steady_decision_is_not_rewritten_until_the_refresh(harness: Harness) -> None:
    seed(harness, pod(0), pod(1))
    harness.prometheus.pending = {"svc-r0": 2.0, "svc-r1": 2.0}  # on target: steady at 2
    await harness.step()
    first = await harness.step()
    assert first is not None and first.status["action"] == "steady"
    shown = first.status["lastDecisionTime"]
    for _ in range(11):  # 55 s of decisions that agree with the one shown
        report = await harness.step()
        assert report is not None and report.status == first.status
    report = await harness.step()  # 60 s: refreshed
    assert report is not None and report.status["lastDecisionTime"] > shown
    harness.prometheus.pending = {"svc-r0": 3.0, "svc-r1": 3.0}  # the load moved: said at once
    report = await harness.step()
    assert report is not None and report.status["metrics"]["pendingRequests"] == 6.0


@pytest.mark.parametrize(("shown", "new", "differs"), [
    pytest.param({"action": "steady", "reason": "a", "metrics": {"requestRate": 100.0}},
                 {"action": "steady", "reason": "b", "metrics": {"requestRate": 109.0}}, False,
                 id="same-action-metric-within-10-percent"),
    pytest.param({"action": "steady", "metrics": {"requestRate": 100.0}},
                 {"action": "steady", "metrics": {"requestRate": 111.0}}, True, id="metric-moved-over-10-percent"),
    pytest.param({"action": "steady", "metrics": {"queueTimeMilliseconds": 0.2}},
                 {"action": "steady", "metrics": {"queueTimeMilliseconds": 0.9}}, False,
                 id="near-zero-wavering-is-not-a-change"),
    pytest.param({"action": "steady", "metrics": {"requestRate": 1.0}},
                 {"action": "steady", "metrics": {"requestRate": 1.0, "queueTimeMilliseconds": 3.0}}, True,
                 id="a-metric-appears"),
    pytest.param({"action": "steady"}, {"action": "scale-up"}, True, id="action"),
    pytest.param({"action": "steady"}, {"action": "steady", "capacityLimitedTo": 3}, True, id="capacity-limit"),
    pytest.param({"action": "steady"}, {"action": "steady", "draining": ["svc-r1"]}, True, id="draining"),
    pytest.param({"action": "hold", "reason": "holding 2 replicas: Prometheus down"},
                 {"action": "hold", "reason": "holding 2 replicas: stale samples"}, True, id="what-is-wrong-changed"),
    pytest.param({"action": "hold", "reason": "holding 2 replicas: the newest sample is 35 s old"},
                 {"action": "hold", "reason": "holding 2 replicas: the newest sample is 40 s old"}, False,
                 id="only-a-number-in-the-reason-changed"),
])
def test_status_differs(shown: dict[str, Any], new: dict[str, Any], differs: bool) -> None:
    assert status_differs(shown, new) is differs


async def test_missing_metrics_hold_the_count_and_recover(harness: Harness) -> None:
    seed(harness, pod(0), pod(1))
    harness.prometheus.pending = {"svc-r0": 2.0, "svc-r1": 2.0}  # on target: steady at 2
    await harness.step()
    await harness.step()
    harness.prometheus.down = True
    held = [await harness.step() for _ in range(5)]  # 0, 5, 10, 15, 20 s into the outage (threshold 12 s)
    assert all(r is not None and r.desired_replicas == 2 and r.status["action"] == "hold" for r in held)
    assert [r.metrics.available for r in held if r and r.metrics] == [True, True, True, False, False]
    assert held[-1].metrics.reason == "MetricsUnavailable" and "connection refused" in held[-1].metrics.message
    assert harness.reasons().count("MetricsUnavailable") == 1
    harness.prometheus.down = False
    report = await harness.step()
    assert report is not None and report.metrics is not None and report.metrics.available
    assert harness.reasons()[-1] == "MetricsAvailable"
    assert all(p["metadata"]["labels"]["serving.trireme.io/serving"] == "true" for p in harness.pods().values())


async def test_scale_down_drains_the_least_loaded_replica_before_deleting_it(harness: Harness) -> None:
    seed(harness, pod(0), pod(1), pod(2))
    harness.prometheus.pending = {"svc-r0": 2.0, "svc-r1": 0.0, "svc-r2": 2.0}  # 4 requests: 2 replicas
    for _ in range(4):  # a whole scale-down window (10 s) of low demand
        report = await harness.step()
    assert report is not None and report.desired_replicas == 2 and report.status["action"] == "scale-down"
    assert harness.reasons() == ["ScaledDown"]
    pods = harness.pods()
    assert pods["svc-r1"]["metadata"]["labels"]["serving.trireme.io/serving"] == "false"  # out of the Service
    assert pods["svc-r1"]["metadata"]["annotations"]["serving.trireme.io/draining-since"]
    assert [p["metadata"]["labels"]["serving.trireme.io/serving"] for n, p in sorted(pods.items()) if n != "svc-r1"] \
        == ["true", "true"]
    harness.triton["127.0.9.2"] = (1.0, 40.0)  # Triton still has a request queued
    await harness.step(advance=4.0)
    harness.triton["127.0.9.2"] = (0.0, 41.0)  # queue empty, but a request just completed
    await harness.step(advance=0.5)
    assert "svc-r1" in harness.pods()
    await harness.step(advance=0.5)  # idle between two probes, and past the grace period: deleted
    assert "svc-r1" not in harness.pods()
    assert harness.reasons()[-1] == "Drained"
    assert replica_indices(list(harness.pods().values()), 3, autoscaled=True) == [0, 1, 2]  # the gap is reused


async def test_a_stuck_drain_ends_at_the_timeout(harness: Harness) -> None:
    stuck = pod(1, serving="false")
    stuck["metadata"]["annotations"]["serving.trireme.io/draining-since"] = "2023-11-14T22:13:20Z"  # START
    seed(harness, pod(0), stuck)
    harness.prometheus.pending = {"svc-r0": 0.0, "svc-r1": 0.0}
    harness.triton["127.0.9.2"] = (3.0, 0.0)
    await harness.step(advance=30.0)
    assert "svc-r1" in harness.pods()
    await harness.step(advance=31.0)
    assert "svc-r1" not in harness.pods()


async def test_scaling_up_again_puts_a_draining_replica_back_first(harness: Harness) -> None:
    seed(harness, pod(0), pod(1, serving="false"))
    harness.prometheus.pending = {"svc-r0": 8.0, "svc-r1": 0.0}
    harness.triton["127.0.9.2"] = (1.0, 0.0)  # still busy: the drain has not ended
    harness.fits = 0
    await harness.step()
    report = await harness.step()
    assert report is not None and report.desired_replicas == 2  # r1 back, nothing new fits
    assert harness.pods()["svc-r1"]["metadata"]["labels"]["serving.trireme.io/serving"] == "true"
    assert harness.simulated[-1] == ["svc-r2", "svc-r3"]


async def test_a_replica_joining_the_sum_adds_no_phantom_requests(harness: Harness) -> None:
    seed(harness, pod(0))
    harness.prometheus.pending = {"svc-r0": 0.0}
    harness.prometheus.success = {"svc-r0": 100.0}
    await harness.step()
    seed(harness, pod(1))
    harness.prometheus.pending = {"svc-r0": 0.0, "svc-r1": 0.0}
    harness.prometheus.success = {"svc-r0": 110.0, "svc-r1": 5000.0}  # its history predates this service's sum
    await harness.step()
    harness.prometheus.success = {"svc-r0": 120.0, "svc-r1": 5010.0}
    await harness.step()
    memory = harness.autoscaler._memory["ns", "svc"]
    assert [s.request_success for s in memory.samples] == [0.0, 10.0, 30.0]


async def test_auto_dispatch_says_when_replicas_queue_on_their_own(harness: Harness) -> None:
    """Samples carry what Triton's gauge leaves out (the requests running, from the compute counters), per replica
    too; when ``dispatch: auto`` sees requests wait at one replica beside free slots at another, it sizes per
    replica from then on and posts one Event saying so and how to choose."""
    harness.cluster.objects[kmock.resource("serving.trireme.io/v1alpha1/inferenceservices"), "ns", "svc"] = \
        body(signal="queueTime", target=100, maxReplicas=8)
    seed(harness, pod(0), pod(1))
    harness.prometheus.pending = {"svc-r0": 5.0, "svc-r1": 0.0}  # 5 waiting at r0 ...
    harness.prometheus.compute_rate = {"svc-r0": 4e6, "svc-r1": 1e6}  # ... running 4, while r1 runs 1 of 4
    await harness.step()
    memory = harness.autoscaler._memory["ns", "svc"]
    assert memory.samples[-1].pending_requests == 10.0 and memory.samples[-1].replica_pending == (9.0, 1.0)
    assert memory.state is not None
    memory.state = replace(memory.state, capacity=replace(memory.state.capacity, slots_per_replica=4.0))
    for _ in range(4):
        await harness.step()
    assert memory.state.seen_per_replica
    assert harness.reasons().count("PerReplicaQueueing") == 1
    message = next(m for _, r, m in harness.events if r == "PerReplicaQueueing")
    assert "in 3 scrapes within 60s" in message and "pooled or perReplica" in message


def test_autoscaler_settings_follow_the_spec() -> None:
    spec = InferenceService.from_api(body(signal="queueTime", target=None, latencySLOMilliseconds=250,
                                          behavior={"scaleUp": {"maxChange": 3, "periodSeconds": 20},
                                                    "scaleDown": {"maxChange": "25%"}})).spec.autoscaling
    settings = autoscaler_settings(spec)
    assert (settings.signal, settings.target, settings.latency_slo_ms) == (Signal.QUEUE_TIME, 20.0, 250.0)
    assert (settings.min_replicas, settings.max_replicas) == (1, 4)
    assert (settings.scale_up.max_change_replicas, settings.scale_up.max_change_percent,
            settings.scale_up.period_s, settings.scale_up.stabilization_window_s) == (3, 0.0, 20.0, 0.0)
    assert (settings.scale_down.max_change_replicas, settings.scale_down.max_change_percent,
            settings.scale_down.stabilization_window_s) == (1, 25.0, 300.0)
    assert settings.dispatch is Dispatch.AUTO  # the default: pooled until the replicas show otherwise
    assert autoscaler_settings(InferenceService.from_api(body(dispatch="pooled")).spec.autoscaling).dispatch \
        is Dispatch.POOLED
    behind_a_service = InferenceService.from_api(body(dispatch="perReplica")).spec.autoscaling
    assert autoscaler_settings(behind_a_service).dispatch is Dispatch.PER_REPLICA


INDICES = [
    ("contiguous-grow", [0, 1], [], 4, True, [0, 1, 2, 3]),
    ("gap-is-filled-first", [0, 2], [], 3, True, [0, 1, 2]),
    ("draining-kept-and-not-counted", [0, 1], [1], 2, True, [0, 1, 2]),
    ("autoscaled-never-deletes", [0, 1, 2], [], 1, True, [0, 1, 2]),
    ("manual-keeps-the-lowest", [0, 2, 5], [], 2, False, [0, 2]),
    ("manual-fills-gaps", [0, 2], [], 3, False, [0, 1, 2]),
    ("manual-ignores-drains", [0, 1], [1], 2, False, [0, 1]),
]


@pytest.mark.parametrize(("live", "draining", "wanted", "autoscaled", "expected"), [c[1:] for c in INDICES],
                         ids=[c[0] for c in INDICES])
def test_replica_indices(live: list[int], draining: list[int], wanted: int, autoscaled: bool,
                         expected: list[int]) -> None:
    pods = [pod(i, serving="false" if i in draining else "true") for i in live]
    assert replica_indices(pods, wanted, autoscaled) == expected


def test_new_replicas_skip_the_indices_of_uncounted_pods() -> None:
    assert replica_indices([pod(0)], 3, autoscaled=False, taken=[1, 4]) == [0, 2, 3]


def moved(new: int, old: int, old_draining: bool = False, gone: bool = False) -> list[dict[str, Any]]:
    """Pods 0..max(new, old) of a service where replica ``new`` replaces replica ``old``."""
    pods = [pod(i, serving="false" if i == old and old_draining else "true") for i in range(max(new, old) + 1)]
    for item in pods:
        item["metadata"]["uid"] = f"u{item['metadata']['labels']['serving.trireme.io/replica']}"
    pods[new]["metadata"]["annotations"][REPLACES_ANNOTATION] = "u9" if gone else f"u{old}"
    return pods


COUNTED = [
    ("new-not-serving-yet", moved(2, 0), ["svc-r0", "svc-r1"]),
    ("old-draining", moved(2, 0, old_draining=True), ["svc-r1", "svc-r2"]),
    ("old-gone", moved(2, 0, gone=True), ["svc-r0", "svc-r1", "svc-r2"]),
]


@pytest.mark.parametrize(("pods", "expected"), [c[1:] for c in COUNTED], ids=[c[0] for c in COUNTED])
def test_a_replica_being_moved_counts_once(pods: list[dict[str, Any]], expected: list[str]) -> None:
    assert [p["metadata"]["name"] for p in counted_pods(pods)] == expected
    assert len(moves_in_flight(pods)) == (0 if expected == ["svc-r0", "svc-r1", "svc-r2"] else 1)


def test_pods_without_the_serving_label_get_it_and_drains_end_with_autoscaling() -> None:
    old = pod(0)
    del old["metadata"]["labels"]["serving.trireme.io/serving"]
    pods = [old, pod(1), pod(2, serving="false")]
    assert pods_to_label_serving(pods, autoscaled=True) == ["svc-r0"]
    assert pods_to_label_serving(pods, autoscaled=False) == ["svc-r0", "svc-r2"]


def test_status_shows_the_autoscalers_count_and_capacity() -> None:
    tis = InferenceService.from_api(body())
    assert desired_replica_count(tis) == 1
    restored = InferenceService.from_api({**body(), "status": {"desiredReplicas": 3, "autoscaler": {
        "action": "steady", "reason": "r", "lastDecisionTime": "2026-01-01T00:00:00Z"}}})
    assert desired_replica_count(restored) == 3  # a restarted operator holds what was decided
    report = AutoscalerReport(2, {"action": "scale-up", "reason": "why", "lastDecisionTime": "2026-01-01T00:00:00Z"},
                              capacity="the load needs 3 replicas but the free GPUs place 2")
    from datetime import UTC, datetime

    status = service_status(tis, [pod(0), pod(1)], {"svc-r0", "svc-r1"}, {}, datetime.now(UTC), autoscaler=report)
    scheduled = next(c for c in status["conditions"] if c["type"] == "Scheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "InsufficientGPUs")
    assert status["desiredReplicas"] == 2 and status["autoscaler"]["action"] == "scale-up"
    assert InferenceService.from_api({**body(), "status": status}).status is not None  # the schema accepts it
