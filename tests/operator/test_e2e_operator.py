"""The operator end to end on the local cluster: ``trireme run`` in its own process, an
InferenceService applied with kubectl, real Triton replicas bound to GPUs, an inference
through the Service's endpoints, scaling, deletion, and a replica that fits nowhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from trireme.devcluster.testing import wait_for

ROOT = Path(__file__).resolve().parents[2]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"tis-{uuid.uuid4().hex[:8]}"
    kubectl("apply", "-f", str(ROOT / "crds"))
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


class OperatorProcess:
    """``trireme run`` watching one namespace, as its own process, with its log in a file."""

    def __init__(self, kubeconfig: Path, namespace: str, work: Path, *extra: str) -> None:
        self.args = [str(Path(sys.executable).parent / "trireme"), "run", "--namespace", namespace,
                     "--reconcile-interval", "0.5", *extra]
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.work = work
        self.log_path = work / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(self.args, cwd=self.work, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text()[-6000:]


@pytest.fixture(scope="module")
def operator_process(kubeconfig: Path, namespace: str,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator, always stopped at the end."""
    operator = OperatorProcess(kubeconfig, namespace, tmp_path_factory.mktemp("operator"))
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


@pytest.fixture
def show_log_on_failure(operator_process: OperatorProcess, request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the operator's log when the test fails."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        print(operator_process.log())


def service_manifest(name: str, namespace: str, models: Path, gpus: int = 1) -> str:
    return json.dumps({
        "apiVersion": "serving.trireme.io/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"models": [{"name": "simple"}], "modelRepository": {"uri": str(models)},
                 "replicas": 1, "gpus": {"count": gpus}}})


def get_json(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def service_pods(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    return get_json(kubectl, "pods", "-n", namespace, "-l", f"serving.trireme.io/service={name}")["items"]


def events(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    """Events about the InferenceService ``name``."""
    return [e for e in get_json(kubectl, "events", "-n", namespace)["items"]
            if e["involvedObject"].get("kind") == "InferenceService" and e["involvedObject"].get("name") == name]


def tritonservers_serving(models: Path) -> list[int]:
    """Process ids whose command line names the model repository."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "tritonserver" in cmdline and str(models) in cmdline:
            found.append(int(entry.name))
    return found


def infer_sum(address: str) -> list[float]:
    import tritonclient.http as triton_http

    triton = triton_http.InferenceServerClient(address, connection_timeout=5, network_timeout=10)
    try:
        a, b = np.array([1, 2, 3], dtype=np.float32), np.array([10, 20, 30], dtype=np.float32)
        inputs = [triton_http.InferInput("INPUT0", [3], "FP32"), triton_http.InferInput("INPUT1", [3], "FP32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = triton.infer("simple", inputs, outputs=[triton_http.InferRequestedOutput("OUTPUT0")])
        return result.as_numpy("OUTPUT0").tolist()
    finally:
        triton.close()


@pytest.mark.timeout(120)
def test_apply_serve_scale_delete(kubectl: Kubectl, namespace: str, operator_process: OperatorProcess, tmp_path: Path,
                                  show_log_on_failure: None) -> None:
    models = tmp_path / "models"
    shutil.copytree(ROOT / "examples" / "models", models, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = service_manifest("x", namespace, models)
    kubectl("apply", "-f", "-", input=manifest)

    def bound_ready_pod() -> dict[str, Any] | None:
        found = kubectl("get", "pod", "-n", namespace, "x-r0", "-o", "json", check=False)
        pod = json.loads(found.stdout) if found.returncode == 0 else None
        if pod and pod["spec"].get("nodeName") and condition(pod, "Ready").get("status") == "True":
            return pod
        return None

    pod = wait_for(bound_ready_pod, timeout=40, interval=0.3, what="pod x-r0 bound and Ready")
    assert pod["spec"]["schedulerName"] == "trireme"
    assert pod["metadata"]["annotations"]["trireme.io/gpus"] in ("0", "1")
    tis = wait_for(lambda: (t := get_json(kubectl, "tis", "-n", namespace, "x"))["status"].get("readyReplicas") == 1
                   and t, timeout=20, interval=0.3, what="readyReplicas == 1")
    assert condition(tis, "Ready")["status"] == "True"
    assert condition(tis, "Scheduled")["status"] == "True"
    assert tis["status"]["endpoint"] == f"x.{namespace}.svc:8000"
    assert tis["status"]["placements"][0]["pods"][0]["node"] == pod["spec"]["nodeName"]

    def endpoint_address() -> str | None:
        endpoints = get_json(kubectl, "endpoints", "-n", namespace, "x")
        for subset in endpoints.get("subsets") or []:
            for address in subset.get("addresses") or []:
                port = next(p["port"] for p in subset["ports"] if p.get("name") == "http")
                return f"{address['ip']}:{port}"
        return None

    address = wait_for(endpoint_address, timeout=20, interval=0.3, what="a ready endpoint of Service x")
    assert infer_sum(address) == [11.0, 22.0, 33.0]
    assert "unchanged" in kubectl("apply", "-f", "-", input=manifest).stdout  # the spec is never written

    assert any(e["reason"] == "Scheduled" and "x-r0" in e["message"] for e in events(kubectl, namespace, "x"))

    kubectl("scale", "-n", namespace, "tis/x", "--replicas=2")
    wait_for(lambda: get_json(kubectl, "tis", "-n", namespace, "x")["status"].get("readyReplicas") == 2,
             timeout=40, interval=0.3, what="readyReplicas == 2")
    pods = service_pods(kubectl, namespace, "x")
    assert sorted(p["metadata"]["name"] for p in pods) == ["x-r0", "x-r1"]
    gpus = {(p["spec"]["nodeName"], p["metadata"]["annotations"]["trireme.io/gpus"]) for p in pods}
    assert len(gpus) == 2

    kubectl("delete", "-n", namespace, "tis", "x")
    wait_for(lambda: not service_pods(kubectl, namespace, "x"), timeout=30, interval=0.3, what="pods of x gone")
    wait_for(lambda: not tritonservers_serving(models), timeout=15, interval=0.2, what="tritonserver processes gone")


@pytest.mark.timeout(60)
def test_a_replica_that_fits_nowhere_says_why(kubectl: Kubectl, namespace: str, operator_process: OperatorProcess,
                                              tmp_path: Path, show_log_on_failure: None) -> None:
    kubectl("apply", "-f", "-", input=service_manifest("huge", namespace, tmp_path, gpus=99))
    tis = wait_for(lambda: (t := get_json(kubectl, "tis", "-n", namespace, "huge"))
                   and condition(t, "Scheduled").get("reason") == "Unschedulable" and t,
                   timeout=30, interval=0.3, what="Scheduled=False on huge")
    scheduled = condition(tis, "Scheduled")
    assert scheduled["status"] == "False"
    assert "needs 99× GPU on one node; largest free block is" in scheduled["message"]
    assert condition(tis, "Ready")["status"] == "False"
    wait_for(lambda: any(e["reason"] == "FailedScheduling" and e["type"] == "Warning"
                         for e in events(kubectl, namespace, "huge")), timeout=10, interval=0.3,
             what="a FailedScheduling event")
    pod = get_json(kubectl, "pod", "-n", namespace, "huge-r0")
    assert not pod["spec"].get("nodeName")
    assert condition(pod, "PodScheduled")["status"] == "False"
    kubectl("delete", "-n", namespace, "tis", "huge")
    wait_for(lambda: not service_pods(kubectl, namespace, "huge"), timeout=20, interval=0.3, what="pod of huge gone")


def _names_and_uids(kubectl: Kubectl, namespace: str, name: str) -> list[tuple[str, str]]:
    return sorted((p["metadata"]["name"], p["metadata"]["uid"]) for p in service_pods(kubectl, namespace, name))


@pytest.mark.timeout(90)
def test_a_restarted_operator_converges_without_duplicates(kubectl: Kubectl, namespace: str,
                                                           operator_process: OperatorProcess, tmp_path: Path,
                                                           show_log_on_failure: None) -> None:
    models = tmp_path / "models"
    shutil.copytree(ROOT / "examples" / "models", models, ignore=shutil.ignore_patterns("__pycache__"))
    kubectl("apply", "-f", "-", input=service_manifest("y", namespace, models))
    wait_for(lambda: get_json(kubectl, "tis", "-n", namespace, "y").get("status", {}).get("readyReplicas") == 1,
             timeout=40, interval=0.3, what="readyReplicas == 1")
    before = _names_and_uids(kubectl, namespace, "y")
    operator_process.stop()
    kubectl("scale", "-n", namespace, "tis/y", "--replicas=2")
    operator_process.start()
    wait_for(lambda: get_json(kubectl, "tis", "-n", namespace, "y")["status"].get("readyReplicas") == 2,
             timeout=40, interval=0.3, what="readyReplicas == 2 after a restart")
    after = _names_and_uids(kubectl, namespace, "y")
    assert [n for n, _ in after] == ["y-r0", "y-r1"]
    assert after[0] == before[0]  # the replica that existed was kept, not recreated
    services = get_json(kubectl, "services", "-n", namespace, "-l", "serving.trireme.io/service=y")["items"]
    budgets = get_json(kubectl, "pdb", "-n", namespace, "-l", "serving.trireme.io/service=y")["items"]
    assert len(services) == len(budgets) == 1


@pytest.mark.timeout(120)
@pytest.mark.xfail(strict=False, reason=(
    "known issue, under investigation: once, in a full CI run, `kubectl delete tis` of a service that "
    "lived through an operator restart waited more than 60 s for kopf to remove the finalizer its timer "
    "adds; it has not reproduced in isolation"))
def test_a_service_that_lived_through_a_restart_is_deleted_promptly(
        kubectl: Kubectl, namespace: str, operator_process: OperatorProcess, tmp_path: Path,
        show_log_on_failure: None) -> None:
    # the earlier tests' services hold the local cluster's two GPUs: free them first
    kubectl("delete", "-n", namespace, "tis", "--all", "--wait=false")
    wait_for(lambda: not get_json(kubectl, "pods", "-n", namespace)["items"], timeout=60, interval=0.3,
             what="the earlier services' pods to be gone")
    models = tmp_path / "models"
    shutil.copytree(ROOT / "examples" / "models", models, ignore=shutil.ignore_patterns("__pycache__"))
    kubectl("apply", "-f", "-", input=service_manifest("z", namespace, models))
    wait_for(lambda: get_json(kubectl, "tis", "-n", namespace, "z").get("status", {}).get("readyReplicas") == 1,
             timeout=40, interval=0.3, what="readyReplicas == 1")
    operator_process.stop()
    operator_process.start()
    kubectl("delete", "-n", namespace, "tis", "z", "--wait=false")
    wait_for(lambda: kubectl("get", "-n", namespace, "tis", "z", check=False).returncode != 0, timeout=60,
             interval=0.3, what="the InferenceService to be deleted (kopf removes its finalizer)")
    wait_for(lambda: not service_pods(kubectl, namespace, "z"), timeout=30, interval=0.3, what="pods of z gone")
    wait_for(lambda: not tritonservers_serving(models), timeout=15, interval=0.2, what="tritonserver processes gone")


PEERING_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "kopfpeerings.kopf.dev"},
    "spec": {"group": "kopf.dev", "scope": "Namespaced",
             "names": {"kind": "KopfPeering", "plural": "kopfpeerings", "singular": "kopfpeering"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "properties": {"status": {"type": "object",
                                                             "x-kubernetes-preserve-unknown-fields": True}}}}}]},
}


@pytest.mark.timeout(60)
def test_only_the_highest_priority_peer_acts(kubectl: Kubectl, kubeconfig: Path, tmp_path: Path) -> None:
    """Leader election with kopf peering: the lower-priority operator pauses."""
    namespace = f"peer-{uuid.uuid4().hex[:8]}"
    kubectl("apply", "-f", "-", input=json.dumps(PEERING_CRD))
    kubectl("create", "namespace", namespace)
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                                                  "metadata": {"name": "trireme", "namespace": namespace}}))
    operators = []
    try:
        for priority in (100, 200):
            work = tmp_path / str(priority)
            work.mkdir()
            operators.append(OperatorProcess(kubeconfig, namespace, work, "--peering", "trireme",
                                             "--priority", str(priority)))
            operators[-1].start()
            wait_for(lambda: "Keep-alive" in operators[-1].log_path.read_text()
                     or "Resuming operations" in operators[-1].log_path.read_text(), timeout=20, interval=0.2,
                     what=f"operator with priority {priority} peering")
        low, high = operators
        wait_for(lambda: "Pausing operations in favour of" in low.log_path.read_text(), timeout=20, interval=0.2,
                 what="the priority-100 operator pausing")
        assert "priority=200" in low.log_path.read_text()
        assert "Pausing operations" not in high.log_path.read_text()
    finally:
        for operator in operators:
            operator.stop()
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        kubectl("delete", "crd", PEERING_CRD["metadata"]["name"], "--wait=false", check=False)
