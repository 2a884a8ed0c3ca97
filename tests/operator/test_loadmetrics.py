"""Reading Triton's load from Prometheus: the queries, the checks that turn bad answers into
errors (never zero), and a real Prometheus scraping a real Triton pod on the local cluster."""

from __future__ import annotations

import json
import math
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from trireme.devcluster.prometheus import free_port
from trireme.devcluster.testing import wait_for
from trireme.operator.loadmetrics import (COUNTERS, MetricsUnavailable, PrometheusSettings, ReplicaLoad,
                                          ServiceLoad, prometheus_query, queries, read_gpu_utilization,
                                          read_service_load, replica_pod_pattern)

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = PrometheusSettings(url="http://prometheus.test:9090")


def test_queries_select_the_replicas_by_namespace_and_pod_name() -> None:
    texts = queries(SETTINGS, "team-a", "llm.v2")
    assert texts["success"] == ('sum by (pod) (nv_inference_request_success{namespace="team-a",'
                                'pod=~"llm\\\\.v2-r[0-9]+(-p[0-9]+)?"})')
    assert texts["rate:queue_us"].startswith("sum by (pod) (rate(nv_inference_queue_duration_us{")
    assert texts["rate:queue_us"].endswith("[60s]))")


@pytest.mark.parametrize(("name", "matches"), [
    ("x-r0", True), ("x-r12", True), ("x-r1-p3", True), ("x-r", False), ("xy-r0", False), ("x-r0-extra", False),
], ids=lambda v: str(v))
def test_replica_pod_pattern(name: str, matches: bool) -> None:
    import re

    assert bool(re.fullmatch(replica_pod_pattern("x"), name)) is matches


def series(pod: str | None, value: object) -> dict[str, Any]:
    return {"metric": {"pod": pod} if pod else {}, "value": [1700000000.0, value]}


def fake_prometheus(overrides: dict[str, list[dict[str, Any]]], pods: tuple[str, ...] = ("x-r0",)) -> Callable:
    """A query function answering every query with one sane series per pod, except ``overrides``."""
    def query(promql: str, at: float) -> list[dict[str, Any]]:
        name = next(n for n, text in queries(SETTINGS, "ns", "x").items() if text == promql)
        if name in overrides:
            return overrides[name]
        value = {"age": "2", "gpu_utilization": None}.get(name, "10")
        return [] if value is None else [series(pod, value) for pod in pods]
    return query


BAD_ANSWERS = [
    ("empty", {"success": []}, "has no success for pod ns/x-r0"),
    ("nan", {"pending": [series("x-r0", "NaN")]}, "pending of pod ns/x-r0 is nan"),
    ("inf", {"rate:success": [series("x-r0", "+Inf")]}, "rate:success of pod ns/x-r0 is inf"),
    ("two-series", {"failure": [series("x-r0", "1"), series("x-r0", "2")]}, "several series for pod x-r0"),
    ("no-pod-label", {"queue_us": [series(None, "1")]}, "a series has no 'pod' label"),
    ("malformed", {"compute_us": [{"metric": {"pod": "x-r0"}, "value": ["oops"]}]}, "malformed sample"),
    ("stale", {"age": [series("x-r0", "300")]}, "stale: newest sample is 300 s old"),
]


@pytest.mark.parametrize(("overrides", "message"), [c[1:] for c in BAD_ANSWERS], ids=[c[0] for c in BAD_ANSWERS])
def test_bad_answers_are_errors_never_zero(overrides: dict, message: str) -> None:
    with pytest.raises(MetricsUnavailable, match=message.replace("+", r"\+")):
        read_service_load(fake_prometheus(overrides), SETTINGS, "ns", "x", ["x-r0"], at=1.0)


def test_a_good_answer_becomes_per_replica_and_service_load() -> None:
    overrides = {"rate:success": [series("x-r0", "4"), series("x-r1", "6")],
                 "rate:queue_us": [series("x-r0", "8000"), series("x-r1", "12000")],
                 "rate:compute_us": [series("x-r0", "40000"), series("x-r1", "60000")],
                 "rate:failure": [series("x-r0", "0"), series("x-r1", "0")],
                 "gpu_utilization": [series("x-r1", "0.5")]}
    load = read_service_load(fake_prometheus(overrides, ("x-r0", "x-r1")), SETTINGS, "ns", "x", ["x-r1", "x-r0"],
                             at=5.0)
    assert [r.pod for r in load.replicas] == ["x-r0", "x-r1"]
    assert load.requests_per_s == 10
    assert load.queue_ms_per_request == pytest.approx(2.0)
    assert load.compute_ms_per_request == pytest.approx(10.0)
    assert load.replicas[0].gpu_utilization is None and load.replicas[1].gpu_utilization == 0.5
    assert load.pending == 20 and load.total("success") == 20


def test_no_pods_no_queries() -> None:
    def never(promql: str, at: float) -> list:
        raise AssertionError("queried")
    assert read_service_load(never, SETTINGS, "ns", "x", [], at=1.0) == ServiceLoad(1.0, ())


GPU_CASES = [
    ("none-measured", [], {}),
    ("per-pod", [{"metric": {"namespace": "a", "pod": "x-r0"}, "value": [1, "0.5"]},
                 {"metric": {"namespace": "b", "pod": "x-r0"}, "value": [1, "1.2"]}],
     {("a", "x-r0"): 0.5, ("b", "x-r0"): 1.0}),
    ("nan-left-out", [{"metric": {"namespace": "a", "pod": "x-r0"}, "value": [1, "NaN"]}], {}),
    ("no-pod-label", [{"metric": {"namespace": "a"}, "value": [1, "0.5"]}], MetricsUnavailable),
    ("malformed", [{"metric": {"namespace": "a", "pod": "x-r0"}, "value": []}], MetricsUnavailable),
]


@pytest.mark.parametrize(("answer", "expected"), [c[1:] for c in GPU_CASES], ids=[c[0] for c in GPU_CASES])
def test_gpu_utilisation_by_pod(answer: list[dict[str, Any]], expected: Any) -> None:
    asked = []

    def query(promql: str, at: float) -> list[dict[str, Any]]:
        asked.append(promql)
        return answer

    if expected is MetricsUnavailable:
        with pytest.raises(MetricsUnavailable, match="nv_gpu_utilization"):
            read_gpu_utilization(query, SETTINGS, 1.0)
    else:
        assert read_gpu_utilization(query, SETTINGS, 1.0) == expected
    assert asked == ["avg by (namespace, pod) (nv_gpu_utilization)"]


def test_an_unreachable_prometheus_is_an_error() -> None:
    query = prometheus_query(PrometheusSettings(url=f"http://127.0.0.1:{free_port()}", timeout_s=2))
    with pytest.raises(MetricsUnavailable, match="did not answer"):
        query("up", time.time())


# -- a real Prometheus scraping a real Triton ------------------------------------------------------------


@pytest.fixture
def triton_replica(kubectl: Callable[..., Any], tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A Triton pod named like a replica (``load-r0``) in a fresh namespace: (namespace, service, address)."""
    namespace = f"load-{uuid.uuid4().hex[:8]}"
    models = tmp_path / "models"
    shutil.copytree(ROOT / "examples" / "models", models, ignore=shutil.ignore_patterns("__pycache__"))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "load-r0", "namespace": namespace},
           "spec": {"containers": [{
               "name": "triton", "image": "nvcr.io/nvidia/tritonserver:24.08-py3",
               "args": ["tritonserver", "--model-repository=/models"],
               "ports": [{"name": "http", "containerPort": 8000}, {"name": "metrics", "containerPort": 8002}],
               "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 1},
               "volumeMounts": [{"name": "models", "mountPath": "/models"}]}],
               "volumes": [{"name": "models", "hostPath": {"path": str(models)}}]}}
    kubectl("create", "namespace", namespace)
    try:
        kubectl("apply", "-f", "-", input=json.dumps(pod))

        def ready_ip() -> str | None:
            found = json.loads(kubectl("get", "pod", "-n", namespace, "load-r0", "-o", "json").stdout)
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in found["status"].get("conditions", []))
            return found["status"].get("podIP") if ready else None

        ip = wait_for(ready_ip, timeout=60, interval=0.3, what="Triton pod load-r0 ready")
        yield namespace, "load", f"{ip}:8000"
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_real_prometheus_reports_the_inferences_triton_served(background_cluster: Any,
                                                               triton_replica: tuple[str, str, str]) -> None:
    import tritonclient.http as triton_http

    url = background_cluster.cluster.prometheus_url
    if not url:
        pytest.skip("Prometheus is not installed")
    namespace, service, address = triton_replica
    triton = triton_http.InferenceServerClient(address, network_timeout=10)
    try:
        for _ in range(5):
            inputs = [triton_http.InferInput(name, [3], "FP32") for name in ("INPUT0", "INPUT1")]
            for item in inputs:
                item.set_data_from_numpy(np.ones(3, dtype=np.float32))
            triton.infer("simple", inputs)
    finally:
        triton.close()
    settings = PrometheusSettings(url=url, timeout_s=5)
    query = prometheus_query(settings)

    def five_served() -> ServiceLoad | None:
        try:
            load = read_service_load(query, settings, namespace, service, ["load-r0"], at=time.time())
        except MetricsUnavailable:
            return None  # not scraped yet
        return load if load.total("success") >= 5 else None

    load = wait_for(five_served, timeout=60, interval=0.5, what="Prometheus to report 5 inferences")
    replica = load.replicas[0]
    assert replica.pod == "load-r0" and replica.counters["failure"] == 0 and replica.pending == 0
    assert set(replica.counters) == set(COUNTERS) and all(math.isfinite(v) for v in replica.rates.values())
    assert replica.sample_age_s < settings.stale_after_s
    with pytest.raises(MetricsUnavailable, match="has no"):  # a replica Prometheus never saw is an error
        read_service_load(query, settings, namespace, service, ["load-r0", "load-r9"], at=time.time())


@pytest.mark.parametrize(("pending", "compute_us_per_s", "in_flight"), [
    (0.0, 0.0, 0.0),
    (0.0, 2.5e6, 2.5),   # none waiting, two and a half running on average
    (5.0, 4e6, 9.0),     # a full replica with a queue
    (3.0, 0.0, 3.0),     # waiting with nothing computed yet
], ids=["idle", "running-only", "busy-with-queue", "waiting-only"])
def test_in_flight_adds_the_requests_running_to_the_pending_count(pending: float, compute_us_per_s: float,
                                                                   in_flight: float) -> None:
    """Triton's pending count is only the requests awaiting execution; those running show in the compute
    counter's rate, so requests in flight are both."""
    rates = {name: 0.0 for name in COUNTERS} | {"compute_us": compute_us_per_s}
    replica = ReplicaLoad("x-r0", {name: 0.0 for name in COUNTERS}, rates, pending, 1.0)
    assert replica.in_flight == pytest.approx(in_flight)
    assert ServiceLoad(0.0, (replica, replica)).in_flight == pytest.approx(2 * in_flight)
