"""The process kubelet: a bound Triton pod is a real tritonserver on its own
loopback IP — ready, serving inferences, restarted when killed, logged for
``kubectl logs``, scraped by Prometheus, and gone when the pod is deleted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trireme.devcluster.testing import wait_for

ROOT = Path(__file__).resolve().parents[2]
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"


@pytest.fixture
def models(tmp_path: Path) -> Path:
    repository = tmp_path / "models"
    shutil.copytree(ROOT / "examples" / "models", repository, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
    return repository


@pytest.fixture
def triton_pod(kubectl: Callable[..., Any], models: Path) -> Iterator[tuple[str, str]]:
    ns = f"tr-{uuid.uuid4().hex[:6]}"
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
    node = kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "triton", "labels": {"app": "triton"}},
           "spec": {"nodeName": node, "terminationGracePeriodSeconds": 5,
                    "containers": [{"name": "triton", "image": TRITON_IMAGE,
                                    "args": ["tritonserver", "--model-repository=/models"],
                                    "resources": {"limits": {"nvidia.com/gpu": 1}},
                                    "volumeMounts": [{"name": "models", "mountPath": "/models"}]}],
                    "volumes": [{"name": "models", "hostPath": {"path": str(models)}}]}}
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod))
    try:
        yield ns, "triton"
    finally:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def pod_json(kubectl: Callable[..., Any], ns: str, name: str) -> dict[str, Any]:
    result = kubectl("get", "pod", name, "-n", ns, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.e2e
def test_triton_pod_lifecycle(triton_pod: tuple[str, str], kubectl: Callable[..., Any],
                              background_cluster: Any) -> None:
    import tritonclient.http as triton_http

    ns, name = triton_pod
    kubectl("wait", "-n", ns, "--for=condition=Ready", f"pod/{name}", "--timeout=90s", timeout=100)
    pod = pod_json(kubectl, ns, name)
    ip = pod["status"]["podIP"]
    assert ip.startswith("127.") and pod["metadata"]["annotations"]["trireme.io/gpus"] == "0"

    # it answers an inference at its own IP on Triton's standard port
    client = triton_http.InferenceServerClient(f"{ip}:8000")
    a, b = np.arange(4, dtype=np.float32), np.ones(4, dtype=np.float32)
    inputs = [triton_http.InferInput("INPUT0", [4], "FP32"), triton_http.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("simple", inputs)
    assert np.allclose(result.as_numpy("OUTPUT0"), a + b)

    # kubectl logs shows Triton's own output (Triton flushes its log lines a little after the fact)
    wait_for(lambda: "Started HTTPService" in kubectl("logs", name, "-n", ns).stdout, timeout=30, interval=0.3,
             what="Triton's start-up lines in kubectl logs")

    # Prometheus scrapes it, labelled like Kubernetes service discovery
    prometheus_url = background_cluster.cluster.prometheus_url
    if prometheus_url:
        from prometheus_api_client import PrometheusConnect
        prom = PrometheusConnect(prometheus_url)
        query = f'nv_inference_request_success{{namespace="{ns}",pod="{name}",model="simple"}}'
        # the series exists from the first scrape; the inference above shows up by a later one
        wait_for(lambda: any(float(s["value"][1]) >= 1 for s in prom.custom_query(query)), timeout=30,
                 what="Prometheus to scrape the pod's successful inference")

    # a killed server is restarted by the kubelet
    run = background_cluster.call(lambda: background_cluster.cluster.kubelet.run_of(ns, name))
    first_pid = run.process.pid
    os.killpg(first_pid, signal.SIGKILL)
    wait_for(lambda: pod_json(kubectl, ns, name)["status"]["containerStatuses"][0]["restartCount"] == 1,
             what="the restart to be counted")
    kubectl("wait", "-n", ns, "--for=condition=Ready", f"pod/{name}", "--timeout=90s", timeout=100)
    second_pid = background_cluster.call(lambda: background_cluster.cluster.kubelet.run_of(ns, name).process.pid)
    assert second_pid != first_pid and process_alive(second_pid)

    # what happened is told as Events, as kubectl describe shows them
    described = kubectl("describe", "pod", name, "-n", ns).stdout
    assert "Started" in described and "BackOff" in described

    # deleting the pod stops the server and its python stub
    kubectl("delete", "pod", name, "-n", ns, "--timeout=60s", timeout=70)
    wait_for(lambda: not process_alive(second_pid), timeout=30, what="tritonserver to exit")
    assert not pod_json(kubectl, ns, name)
