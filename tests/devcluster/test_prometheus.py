"""Tests for the local cluster's Prometheus.

Config and file-based discovery are checked as tables (and the config with the
real ``promtool``); the ``e2e`` test scrapes a real Triton through a real
Prometheus and reads the series back with prometheus-api-client, labelled as on
a Kubernetes cluster.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from trireme.devcluster.prometheus import (
    MISSING_PROMETHEUS,
    PodTarget,
    PrometheusError,
    PrometheusProcess,
    PrometheusSettings,
    TargetsFile,
    config_document,
    find_prometheus,
    free_port,
    prometheus_command,
    prometheus_duration,
    sanitize_label_name,
    target_group,
    write_config,
)
from trireme.devcluster.triton import TritonProcess, live_processes_in_group, pick_free_loopback_ip, prepare_backends

SAMPLE_MODELS = Path(__file__).resolve().parents[2] / "examples" / "models"
"""Served from a copy: the Python backend writes ``__pycache__`` next to ``model.py``."""
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
needs_prometheus = pytest.mark.skipif(find_prometheus() is None, reason=MISSING_PROMETHEUS)

DURATIONS = [
    ("whole seconds", 2, "2s"),
    ("a quarter minute", 15.0, "15s"),
    ("half a second", 0.5, "500ms"),
    ("seconds and milliseconds", 1.25, "1250ms"),
    ("one millisecond", 0.001, "1ms"),
]


@pytest.mark.parametrize(("seconds", "text"), [c[1:] for c in DURATIONS], ids=[c[0] for c in DURATIONS])
def test_prometheus_durations(seconds, text):
    assert prometheus_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, -1, 0.0001], ids=["zero", "negative", "below a millisecond"])
def test_durations_prometheus_cannot_express_are_rejected(seconds):
    with pytest.raises(ValueError):
        prometheus_duration(seconds)


LABEL_KEYS = [
    ("plain", "team", "team"),
    ("prefixed", "app.kubernetes.io/name", "app_kubernetes_io_name"),
    ("dashes", "serving.trireme.io/inference-service", "serving_trireme_io_inference_service"),
    ("underscores kept", "a_b", "a_b"),
]


@pytest.mark.parametrize(("key", "name"), [c[1:] for c in LABEL_KEYS], ids=[c[0] for c in LABEL_KEYS])
def test_label_keys_are_sanitized_like_kubernetes_sd(key, name):
    assert sanitize_label_name(key) == name


def test_a_pod_becomes_a_target_group_with_kubernetes_meta_labels():
    pod = PodTarget("ml", "simple-0", "127.0.3.7", "gpu-node-1", {"app.kubernetes.io/name": "simple"})
    assert target_group(pod) == {
        "targets": ["127.0.3.7:8002"],
        "labels": {
            "__meta_kubernetes_namespace": "ml",
            "__meta_kubernetes_pod_name": "simple-0",
            "__meta_kubernetes_pod_ip": "127.0.3.7",
            "__meta_kubernetes_pod_node_name": "gpu-node-1",
            "__meta_kubernetes_pod_container_port_number": "8002",
            "__meta_kubernetes_pod_label_app_kubernetes_io_name": "simple",
            "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name": "true",
        },
    }


TARGET_SETS = [
    ("empty", [], []),
    ("one pod", [("ml", "a", "127.0.0.2", "n1", {})], ["127.0.0.2:8002"]),
    ("sorted by namespace and name", [("ml", "b", "127.0.0.3", "n1", {}), ("ml", "a", "127.0.0.2", "n1", {}), ("dev", "z", "127.0.0.4", "n2", {})], ["127.0.0.4:8002", "127.0.0.2:8002", "127.0.0.3:8002"]),
    ("pods without IP left out", [("ml", "a", "", "n1", {}), ("ml", "b", "127.0.0.3", "n1", {})], ["127.0.0.3:8002"]),
]


@pytest.mark.parametrize(("pods", "targets"), [c[1:] for c in TARGET_SETS], ids=[c[0] for c in TARGET_SETS])
def test_targets_file_lists_running_pods(tmp_path, pods, targets):
    targets_file = TargetsFile(tmp_path / "targets.json")
    targets_file.set_pods(pods)
    groups = json.loads(targets_file.path.read_text())
    assert [target for group in groups for target in group["targets"]] == targets


def test_targets_file_starts_empty_and_reports_changes(tmp_path):
    targets_file = TargetsFile(tmp_path / "targets.json")
    assert json.loads(targets_file.path.read_text()) == []
    pods = [("ml", "a", "127.0.0.2", "n1", {"x": "1"})]
    assert targets_file.set_pods(pods) is True
    assert targets_file.set_pods(pods) is False
    assert targets_file.set_pods([("ml", "a", "127.0.0.2", "n1", {"x": "2"})]) is True
    assert targets_file.set_pods([]) is True
    assert json.loads(targets_file.path.read_text()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["targets.json"], "no temporary files are left"


label_keys = st.from_regex(r"\A([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]+)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?\Z")
pods = st.lists(
    st.builds(
        PodTarget,
        namespace=st.from_regex(r"\A[a-z0-9]{1,8}\Z"),
        name=st.from_regex(r"\A[a-z0-9-]{1,12}\Z"),
        ip=st.from_regex(r"\A127\.0\.[0-9]{1,3}\.[0-9]{1,3}\Z"),
        node=st.from_regex(r"\A[a-z0-9-]{1,12}\Z"),
        labels=st.dictionaries(label_keys, st.text(max_size=10), max_size=4),
    ),
    max_size=5,
    unique_by=lambda pod: (pod.namespace, pod.name),
)


@given(pods)
def test_every_pod_is_one_target_with_valid_label_names(tmp_path_factory, pod_list):
    targets_file = TargetsFile(tmp_path_factory.mktemp("sd") / "targets.json")
    targets_file.set_pods(pod_list)
    groups = json.loads(targets_file.path.read_text())
    assert sorted(group["targets"][0] for group in groups) == sorted(f"{pod.ip}:8002" for pod in pod_list)
    for group in groups:
        assert all(LABEL_NAME.match(name) for name in group["labels"])
        assert all(isinstance(value, str) for value in group["labels"].values())


CONFIGS = [
    ("defaults", 2.0, PrometheusSettings(), "2s", "1s", "triton"),
    ("timeout capped at the interval", 0.5, PrometheusSettings(), "500ms", "500ms", "triton"),
    ("another job", 15, PrometheusSettings(job_name="inference", scrape_timeout_s=10), "15s", "10s", "inference"),
]


@pytest.mark.parametrize(("interval", "settings", "scrape_interval", "scrape_timeout", "job"), [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_config_document(tmp_path, interval, settings, scrape_interval, scrape_timeout, job):
    document = config_document(interval, tmp_path / "targets.json", settings=settings)
    (scrape,) = document["scrape_configs"]
    assert document["global"]["scrape_interval"] == scrape_interval
    assert (scrape["job_name"], scrape["scrape_interval"], scrape["scrape_timeout"]) == (job, scrape_interval, scrape_timeout)
    assert scrape["file_sd_configs"][0]["files"] == [str(tmp_path / "targets.json")]
    targets = {rule.get("target_label"): rule.get("source_labels") for rule in scrape["relabel_configs"]}
    assert targets["namespace"] == ["__meta_kubernetes_namespace"]
    assert targets["pod"] == ["__meta_kubernetes_pod_name"]
    assert targets["node"] == ["__meta_kubernetes_pod_node_name"]
    assert {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"} in scrape["relabel_configs"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (package prometheus) is not installed")
def test_promtool_accepts_the_config_and_targets(tmp_path):
    targets = TargetsFile(tmp_path / "targets.json")
    targets.set_pods([("ml", "simple-0", "127.0.3.7", "n1", {"app.kubernetes.io/name": "simple"})])
    config = write_config(tmp_path, 2.0, targets.path)
    assert yaml.safe_load(config.read_text())["scrape_configs"][0]["job_name"] == "triton"
    result = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_command(tmp_path):
    argv = prometheus_command("/usr/bin/prometheus", tmp_path / "p.yml", tmp_path / "data", 19090, PrometheusSettings(retention="30m"))
    assert argv == [
        "/usr/bin/prometheus",
        f"--config.file={tmp_path / 'p.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        "--storage.tsdb.retention.time=30m",
        "--web.listen-address=127.0.0.1:19090",
        "--web.enable-lifecycle",
    ]


async def test_a_missing_prometheus_says_how_to_install_it():
    settings = PrometheusSettings(binary="prometheus-that-is-not-installed")
    assert find_prometheus(settings.binary) is None
    server = PrometheusProcess(free_port(), settings=settings)
    try:
        with pytest.raises(PrometheusError, match=r"apt-get install prometheus.*runs without it"):
            await server.start()
    finally:
        await server.stop()
    assert not server.directory.exists()


# --- real processes ----------------------------------------------------------------


@pytest.fixture
async def triton(tmp_path_factory):
    cache = tmp_path_factory.mktemp("triton-cache")
    models = shutil.copytree(SAMPLE_MODELS, cache / "models")
    server = TritonProcess(models, pick_free_loopback_ip(), cache / "triton.log", backends_dir=prepare_backends(cache))
    try:
        await server.start()
        yield server
    finally:
        if server.pid is not None:
            await server.stop(grace_s=0)


@pytest.fixture
async def prometheus():
    server = PrometheusProcess(free_port())
    try:
        yield server
    finally:
        await server.stop(grace_s=5)


async def poll(probe, timeout_s: float, interval_s: float = 0.25):
    """``await probe()`` until it returns something truthy, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if result or time.monotonic() >= deadline:
            return result
        await asyncio.sleep(interval_s)


@pytest.mark.e2e
@needs_prometheus
async def test_prometheus_scrapes_triton_pods_with_kubernetes_labels(triton, prometheus):
    from prometheus_api_client import PrometheusConnect

    await prometheus.start()
    print(f"Prometheus ready after {await prometheus.wait_ready():.2f}s")
    await triton.wait_ready(timeout=60)

    prometheus.targets.set_pods([("ml", "simple-0", triton.ip, "gpu-node-1", {"app.kubernetes.io/name": "simple"})])
    client = PrometheusConnect(prometheus.url)
    query = 'nv_inference_request_success{namespace="ml",pod="simple-0"}'

    async def series():
        return await asyncio.to_thread(client.custom_query, query)

    listed = time.monotonic()
    found = await poll(series, timeout_s=30)
    assert found, f"{query} never appeared"
    print(f"series queryable {time.monotonic() - listed:.2f}s after the pod was listed")
    labels = found[0]["metric"]
    assert labels["job"] == "triton"
    assert labels["node"] == "gpu-node-1"
    assert labels["app_kubernetes_io_name"] == "simple"
    assert labels["instance"] == f"{triton.ip}:8002"
    assert labels["model"] == "simple"
    assert not any(name.startswith("__meta") for name in labels)

    prometheus.targets.set_pods([])

    async def no_active_targets():
        targets = await asyncio.to_thread(client.get_targets, state="active")
        return not targets["activeTargets"]

    dropped = time.monotonic()
    assert await poll(no_active_targets, timeout_s=30), "the pod's target was not dropped"
    print(f"target dropped {time.monotonic() - dropped:.2f}s after the pod was unlisted")

    pid, directory = triton.pid, prometheus.directory
    assert await prometheus.stop() == 0
    assert not directory.exists()
    await triton.stop(grace_s=0)
    assert live_processes_in_group(pid) == []
