"""The autoscaler end to end on the local cluster: real Triton replicas, the session's real
Prometheus, ``trireme run`` in its own process and real inferences through tritonclient.

One scenario, in the order a user would live it, so the replicas one phase starts serve the next:
a step in load scales the service up (capped at the GPUs the cluster has, with Scheduled=False
saying so, never a Pending pod) and the new replica serves; Prometheus goes away (a proxy in
front of it starts answering 503, the way an outage looks to the operator) and the replicas are
held with MetricsAvailable=False, then it recovers by itself; the load drops to a trickle and,
after the short scale-down window, one replica is drained and removed without a failed request.

A second scenario holds the stabilisation windows to their word: a load that keeps crossing the
target every few seconds changes the replica count at most once per window, without a failed request.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from trireme.devcluster.prometheus import free_port
from trireme.devcluster.testing import OperatorProcess, scratch_namespace, wait_for
from trireme.loadgen import LoadGenerator

ROOT = Path(__file__).resolve().parents[2]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]
pytestmark = pytest.mark.e2e

DELAY_MS = 200
"""Each request holds the model's one instance this long: one replica serves 5 requests per second."""


class SwitchableProxy:
    """An HTTP proxy to Prometheus that can be switched off (it then answers 503), so the operator sees
    an outage while the session's Prometheus keeps running for everything else."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.up = True
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                if not proxy.up:
                    status, body = 503, b"Prometheus is down"
                else:
                    try:
                        with urllib.request.urlopen(proxy.upstream + self.path, timeout=10) as answer:
                            status, body = answer.status, answer.read()
                    except urllib.error.HTTPError as exc:
                        status, body = exc.code, exc.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="prometheus-proxy", daemon=True)

    def __enter__(self) -> SwitchableProxy:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def get_json(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


@pytest.fixture
def prometheus(background_cluster: Any) -> Iterator[SwitchableProxy]:
    url = background_cluster.cluster.prometheus_url
    if not url or os.environ.get("TRIREME_E2E_KUBECONFIG"):
        pytest.skip("needs the local cluster's Prometheus")
    with SwitchableProxy(url) as proxy:
        yield proxy


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    kubectl("apply", "-f", str(ROOT / "crds"))
    with scratch_namespace(kubectl, "as") as name:
        yield name
    # the GPUs are the session's: the next test must find them free
    wait_for(lambda: not get_json(kubectl, "pods", "-n", name).get("items"), timeout=30, interval=0.3,
             what="the autoscaled pods to be gone")


@pytest.fixture
def operator(kubeconfig: Path, namespace: str, prometheus: SwitchableProxy, tmp_path: Path,
             request: pytest.FixtureRequest) -> Iterator[Path]:
    """``trireme run`` with short intervals, reading Prometheus through the proxy; its log on failure."""
    operator = OperatorProcess(kubeconfig, namespace, tmp_path, "--prometheus-url", prometheus.url,
                               "--autoscale-interval", "1", "--metrics-unavailable-after", "3", "--drain-grace", "2",
                               "--drain-timeout", "30")
    failed_before = request.session.testsfailed
    operator.start()
    try:
        yield operator.log_path
    finally:
        operator.stop()
        if request.session.testsfailed > failed_before:
            print(operator.log()[-8000:])


def slow_models(tmp_path: Path) -> Path:
    """The example model repository, with each request holding the model's instance for ``DELAY_MS``."""
    models = tmp_path / "models"
    shutil.copytree(ROOT / "examples" / "models", models, ignore=shutil.ignore_patterns("__pycache__"))
    config = models / "simple" / "config.pbtxt"
    config.write_text(config.read_text().replace('string_value: "5"', f'string_value: "{DELAY_MS}"'))
    return models


STEP_AUTOSCALING = {"enabled": True, "minReplicas": 1, "maxReplicas": 3, "signal": "pendingRequests", "target": 1,
                    "behavior": {"scaleUp": {"maxChange": 4},
                                 "scaleDown": {"stabilizationWindowSeconds": 5, "periodSeconds": 1}}}
"""Three replicas asked for, two GPUs in the cluster: the third must never be a Pending pod."""


def manifest(namespace: str, models: Path, autoscaling: dict[str, Any] = STEP_AUTOSCALING) -> str:
    return json.dumps({
        "apiVersion": "serving.trireme.io/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": "auto", "namespace": namespace},
        "spec": {"models": [{"name": "simple"}], "modelRepository": {"uri": str(models)}, "replicas": 1,
                 "gpus": {"count": 1}, "autoscaling": autoscaling}})


class Service:
    """The InferenceService "auto" of one test, its pods, endpoints and Events, as the API has them."""

    def __init__(self, kubectl: Kubectl, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.kubectl, self.namespace = kubectl, namespace
        self.core = client.CoreV1Api(api_client)

    def get(self) -> dict[str, Any]:
        return get_json(self.kubectl, "tis", "-n", self.namespace, "auto")

    def pods(self) -> list[dict[str, Any]]:
        return json.loads(self.core.list_namespaced_pod(self.namespace, _preload_content=False).data)["items"]

    def endpoints(self) -> list[str]:
        found = json.loads(self.core.read_namespaced_endpoints("auto", self.namespace, _preload_content=False).data)
        return [f"{a['ip']}:8000" for s in found.get("subsets") or [] for a in s.get("addresses") or []]

    def events(self) -> list[dict[str, Any]]:
        """Events about the service, oldest first."""
        found = [e for e in get_json(self.kubectl, "events", "-n", self.namespace)["items"]
                 if e["involvedObject"].get("name") == "auto"]
        return sorted(found, key=event_time)

    def first_endpoint(self) -> str:
        """Waits for the first replica to be ready and serving; its address."""
        wait_for(lambda: self.get().get("status", {}).get("readyReplicas") == 1, timeout=40, interval=0.3,
                 what="the first replica ready")
        return wait_for(self.endpoints, timeout=20, interval=0.3, what="an endpoint")[0]


def event_time(event: dict[str, Any]) -> float:
    """When an Event was first posted, in seconds since the epoch (the operator writes microseconds)."""
    stamp = event.get("eventTime") or event.get("firstTimestamp") or event["metadata"]["creationTimestamp"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.mark.timeout(150)
def test_load_scales_up_outages_hold_and_scale_down_drains(kubectl: Kubectl, api_client: Any, namespace: str,
                                                           operator: Path, prometheus: SwitchableProxy,
                                                           tmp_path: Path) -> None:
    models = slow_models(tmp_path)
    kubectl("apply", "-f", "-", input=manifest(namespace, models))
    service = Service(kubectl, api_client, namespace)
    tis, pods = service.get, service.pods

    def never_pending() -> None:
        stuck = [p["metadata"]["name"] for p in pods() if not p["spec"].get("nodeName")]
        assert not stuck, f"pods left Pending: {stuck}"

    first = service.first_endpoint()
    load = LoadGenerator(service.endpoints, rate=12.0, timeout_s=20.0)
    load.start()
    try:
        # -- a step in load: more replicas, capped at the two GPUs, and the new one serves -------------------
        def scaled_up() -> dict[str, Any] | None:
            never_pending()
            found = tis()
            return found if found["status"].get("readyReplicas") == 2 else None

        found = wait_for(scaled_up, timeout=40, interval=0.5, what="a second ready replica")
        assert found["spec"]["replicas"] == 1  # the decision lives in status, never in the spec
        assert found["status"]["desiredReplicas"] == 2
        scheduled = condition(found, "Scheduled")
        assert (scheduled["status"], scheduled["reason"]) == ("False", "InsufficientGPUs"), scheduled
        assert "the free GPUs place 2" in scheduled["message"]
        assert condition(found, "MetricsAvailable")["status"] == "True"
        wait_for(lambda: any(at != first and count > 0 for at, count in load.snapshot().by_endpoint.items()),
                 timeout=20, interval=0.3, what="the new replica serving inferences")
        assert "unchanged" in kubectl("apply", "-f", "-", input=manifest(namespace, models)).stdout

        # -- Prometheus goes away: held, MetricsAvailable=False; it comes back: True ---------------------------
        prometheus.up = False
        unavailable = wait_for(lambda: (t := tis()) and condition(t, "MetricsAvailable").get("status") == "False"
                               and t, timeout=20, interval=0.3, what=f"MetricsAvailable=False {tis()['status']}")
        assert condition(unavailable, "MetricsAvailable")["reason"] == "MetricsUnavailable"
        assert unavailable["status"]["desiredReplicas"] == 2 and unavailable["status"]["autoscaler"]["action"] == "hold"
        assert len([p for p in pods() if not p["metadata"].get("deletionTimestamp")]) == 2
        prometheus.up = True
        wait_for(lambda: condition(tis(), "MetricsAvailable").get("status") == "True", timeout=20, interval=0.3,
                 what="MetricsAvailable=True again")

        # -- the load drops to a trickle: after the window, one replica drains and goes ----------------------
        before = load.snapshot()
        load.rate = 1.0
        wait_for(lambda: tis()["status"].get("desiredReplicas") == 1, timeout=40, interval=0.3,
                 what="the autoscaler deciding on one replica")
        wait_for(lambda: len(pods()) == 1, timeout=40, interval=0.3, what="the drained replica deleted")
        wait_for(lambda: load.snapshot().succeeded >= before.succeeded + 3, timeout=20, interval=0.3,
                 what="inferences served after the scale-down")
    finally:
        load.stop()
    after = load.snapshot()
    assert after.failed == 0 and after.retried == 0, after.last_error
    reasons = [e["reason"] for e in service.events()]
    for reason in ("ScaledUp", "InsufficientGPUs", "MetricsUnavailable", "MetricsAvailable", "ScaledDown", "Drained"):
        assert reason in reasons, reasons


WINDOW_S = 10
"""Both stabilisation windows of the flapping scenario."""
FLAP_RATES = (6.5, 4.5)
"""Requests per second, swapped every ``FLAP_HALF_PERIOD_S``: one replica serves 5, so the load keeps crossing
what one replica holds at the target (requests queue on it, then drain), and averages more than one replica
and less than two."""
FLAP_HALF_PERIOD_S = 2.0
FLAP_PHASE_S = 4 * WINDOW_S
FLAPPING = {"enabled": True, "minReplicas": 1, "maxReplicas": 2, "signal": "pendingRequests", "target": 1,
            "behavior": {"scaleUp": {"stabilizationWindowSeconds": WINDOW_S, "maxChange": 1, "periodSeconds": 1},
                         "scaleDown": {"stabilizationWindowSeconds": WINDOW_S, "maxChange": 1, "periodSeconds": 1}}}


def replica_changes(events: list[dict[str, Any]]) -> list[tuple[float, int, int]]:
    """(time, from, to) of the ScaledUp and ScaledDown Events ("<from> → <to> replicas: why"), oldest first."""
    changes = []
    for event in events:
        if event["reason"] in ("ScaledUp", "ScaledDown"):
            counts = event["message"].split(" replicas", 1)[0].split(" → ")
            changes.append((event_time(event), int(counts[0]), int(counts[1])))
    return changes


@pytest.mark.timeout(120)
def test_flapping_load_changes_replicas_at_most_once_per_window(kubectl: Kubectl, api_client: Any, namespace: str,
                                                                operator: Path, tmp_path: Path) -> None:
    kubectl("apply", "-f", "-", input=manifest(namespace, slow_models(tmp_path), FLAPPING))
    service = Service(kubectl, api_client, namespace)
    service.first_endpoint()
    signals: list[float] = []  # the autoscaler's signal (pending requests per ready replica) in status
    desired: list[int] = []  # status.desiredReplicas
    load = LoadGenerator(service.endpoints, rate=FLAP_RATES[0], timeout_s=20.0)
    load.start()
    try:
        # a paced phase of fixed length: the rate swaps every half period while status is sampled
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < FLAP_PHASE_S:
            load.rate = FLAP_RATES[int(elapsed // FLAP_HALF_PERIOD_S) % 2]
            status = service.get().get("status") or {}
            signal = ((status.get("autoscaler") or {}).get("metrics") or {}).get("signalValue")
            if signal is not None:
                signals.append(signal)
            if "desiredReplicas" in status:
                desired.append(status["desiredReplicas"])
            time.sleep(0.4)
    finally:
        load.stop()
    after = load.snapshot()
    assert after.failed == 0 and after.retried == 0, after.last_error

    # the load did flap around the target: above it (a replica more needed), then below it (one too many);
    # with both windows at 0 the same load changes the count every few seconds
    sides = "".join("+" if value > 1.1 else "-" if value < 0.9 else "" for value in signals)
    assert "+-" in sides, f"the signal never crossed the target both ways: {signals}"
    changes = replica_changes(service.events())
    assert changes, f"the replicas never followed the load: {signals}"
    counts = [1] + [to for _, _, to in changes]
    assert [was for _, was, _ in changes] == counts[:-1], f"a change without its Event: {changes}"
    seen = [count for i, count in enumerate(desired) if i == 0 or count != desired[i - 1]]
    remaining = iter(counts)
    assert all(count in remaining for count in seen), f"status changed {seen} without Events {changes}"
    # an Event is posted a moment after the decision it reports, on the operator's clock: a second of slack
    # covers a loaded machine and stays far below the gaps of flapping
    gaps = [later - earlier for (earlier, _, _), (later, _, _) in zip(changes, changes[1:], strict=False)]
    assert all(gap >= WINDOW_S - 1 for gap in gaps), f"two changes within a {WINDOW_S}s window: {gaps} {changes}"


STUCK = {"enabled": True, "minReplicas": 2, "maxReplicas": 2, "signal": "queueTime", "target": 100}
"""Two replicas, the queue-time objective and the default dispatch (``auto``)."""


@pytest.mark.timeout(120)
def test_a_client_stuck_to_one_replica_is_seen_as_per_replica_queueing(kubectl: Kubectl, api_client: Any,
                                                                       namespace: str, operator: Path,
                                                                       tmp_path: Path) -> None:
    """A client whose requests all reach one replica (one keep-alive connection through a plain Service) leaves
    that replica queueing while the other idles. From Triton's real gauges and counters, through Prometheus, the
    operator sees requests waiting beside a free slot, sizes each replica as its own queue and says so."""
    kubectl("apply", "-f", "-", input=manifest(namespace, slow_models(tmp_path), STUCK))
    service = Service(kubectl, api_client, namespace)
    wait_for(lambda: service.get().get("status", {}).get("readyReplicas") == 2, timeout=60, interval=0.3,
             what="two ready replicas")
    first = wait_for(service.endpoints, timeout=20, interval=0.3, what="an endpoint")[0]
    load = LoadGenerator(lambda: [first], rate=6.0, timeout_s=30.0)  # one replica serves 5 per second
    load.start()
    try:
        event = wait_for(lambda: next((e for e in service.events() if e["reason"] == "PerReplicaQueueing"), None),
                         timeout=60, interval=0.5, what="the PerReplicaQueueing Event")
    finally:
        load.stop()
    assert "free slot" in event["message"] and "pooled or perReplica" in event["message"]
    reason = wait_for(lambda: (r := (service.get()["status"].get("autoscaler") or {}).get("reason", ""))
                      and "each replica queueing on its own" in r and r, timeout=10, interval=0.3,
                      what="the autoscaler's reason naming per-replica queueing")
    assert "requests were seen waiting at one replica while another had a free slot" in reason
    assert load.snapshot().failed == 0, load.snapshot().last_error
