"""The operator end to end on the local cluster: ``trireme run`` in its own process, an
InferenceService applied with kubectl, real Triton replicas bound to GPUs, an inference
through the Service's endpoints, scaling, deletion, and a replica that fits nowhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from trireme.devcluster.testing import OperatorProcess, scratch_namespace, tritonserver_pids, wait_for

ROOT = Path(__file__).resolve().parents[2]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.e2e
OLD_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


@pytest.fixture(scope="module")
def namespace(kubectl: Kubectl) -> Iterator[str]:
    kubectl("apply", "-f", str(ROOT / "crds"))
    with scratch_namespace(kubectl, "tis") as name:
        yield name


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
        print(operator_process.log()[-6000:])


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
    wait_for(lambda: not tritonserver_pids(models), timeout=15, interval=0.2, what="tritonserver processes gone")


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


@pytest.mark.timeout(60)
def test_the_operator_serves_its_metrics_and_probes(kubectl: Kubectl, namespace: str,
                                                   operator_process: OperatorProcess, tmp_path: Path,
                                                   show_log_on_failure: None) -> None:
    assert operator_process.get("/healthz")[0] == 200
    wait_for(lambda: operator_process.get("/readyz")[0] == 200, timeout=20, interval=0.2, what="/readyz ok")
    assert operator_process.get("/metrics")[0] == 200
    assert operator_process.get("/nothing")[0] == 404
    kubectl("apply", "-f", "-", input=service_manifest("m", namespace, tmp_path, gpus=64))
    pending = f'trireme_pending_replicas{{namespace="{namespace}",service="m"}}'
    wait_for(lambda: operator_process.metric(pending) == 1.0, timeout=20, interval=0.3,
             what="the pending replica counted")
    assert operator_process.metric('trireme_scheduling_attempts_total{result="unschedulable"}') >= 1
    assert operator_process.metric("trireme_scheduling_cycle_duration_seconds_count") >= 1
    assert operator_process.metric('trireme_reconcile_duration_seconds_count{result="ok"}') >= 1
    assert operator_process.metric("trireme_leader") == 1.0
    text = operator_process.get("/metrics")[1]
    assert 'trireme_build_info{version="' in text
    for name in ("trireme_scheduling_latency_seconds", "trireme_bind_errors_total"):
        assert f"# TYPE {name.removesuffix('_total')}" in text
    kubectl("delete", "-n", namespace, "tis", "m")
    wait_for(lambda: pending not in operator_process.get("/metrics")[1], timeout=20, interval=0.3,
             what="the deleted service's series dropped")


def _names_and_uids(kubectl: Kubectl, namespace: str, name: str) -> list[tuple[str, str]]:
    return sorted((p["metadata"]["name"], p["metadata"]["uid"]) for p in service_pods(kubectl, namespace, name))


@pytest.mark.timeout(90)
def test_a_spec_change_replaces_the_replicas_one_at_a_time(kubectl: Kubectl, namespace: str,
                                                          operator_process: OperatorProcess, tmp_path: Path,
                                                          show_log_on_failure: None) -> None:
    models = tmp_path / "models"
    shutil.copytree(ROOT / "examples" / "models", models, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads(service_manifest("roll", namespace, models))
    manifest["spec"]["replicas"] = 2
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    wait_for(lambda: get_json(kubectl, "tis", "-n", namespace, "roll").get("status", {}).get("readyReplicas") == 2,
             timeout=40, interval=0.3, what="readyReplicas == 2")
    before = dict(_names_and_uids(kubectl, namespace, "roll"))
    manifest["spec"]["runtime"] = {"args": ["--log-verbose=1"]}
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    least_ready = [2]

    def replaced() -> bool:
        ready = get_json(kubectl, "tis", "-n", namespace, "roll").get("status", {}).get("readyReplicas", 0)
        least_ready[0] = min(least_ready[0], ready)
        pods = service_pods(kubectl, namespace, "roll")
        return ready == 2 and len(pods) == 2 and all(
            p["metadata"]["uid"] != before.get(p["metadata"]["name"])
            and "--log-verbose=1" in p["spec"]["containers"][0]["args"] for p in pods)

    wait_for(replaced, timeout=60, interval=0.2, what="both replicas recreated from the new spec and ready")
    assert least_ready[0] >= 1  # maxUnavailable 1: one replica kept serving throughout
    kubectl("delete", "-n", namespace, "tis", "roll")  # the session cluster's GPUs are shared
    wait_for(lambda: not service_pods(kubectl, namespace, "roll"), timeout=30, interval=0.3, what="pods of roll gone")


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


@pytest.mark.timeout(90)
def test_a_service_that_lived_through_a_restart_is_deleted_promptly(
        kubectl: Kubectl, namespace: str, operator_process: OperatorProcess, tmp_path: Path,
        show_log_on_failure: None) -> None:
    """Deleting an InferenceService never waits for the operator: it carries no finalizer, so the
    API server removes it at once and garbage collection removes what it owned, even while no
    operator runs at all."""
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
    # what an older operator left: kopf's finalizer, added while the periodic pass was a kopf timer
    kubectl("patch", "-n", namespace, "tis", "z", "--type=merge",
            "-p", json.dumps({"metadata": {"finalizers": [OLD_FINALIZER]}}))
    operator_process.start()
    wait_for(lambda: not get_json(kubectl, "tis", "-n", namespace, "z")["metadata"].get("finalizers"),
             timeout=20, interval=0.3, what="kopf to take off the finalizer no handler needs")
    wait_for(lambda: operator_process.metric('trireme_reconcile_duration_seconds_count{result="ok"}') >= 3,
             timeout=20, interval=0.3, what="the restarted operator to reconcile the service")
    assert not get_json(kubectl, "tis", "-n", namespace, "z")["metadata"].get("finalizers")
    operator_process.stop()  # deletion must not need a running operator
    try:
        kubectl("delete", "-n", namespace, "tis", "z", "--wait=false")
        wait_for(lambda: kubectl("get", "-n", namespace, "tis", "z", check=False).returncode != 0, timeout=10,
                 interval=0.2, what="the InferenceService to be deleted")
        wait_for(lambda: not service_pods(kubectl, namespace, "z"), timeout=30, interval=0.3, what="pods of z gone")
        wait_for(lambda: not tritonserver_pids(models), timeout=15, interval=0.2,
                 what="tritonserver processes gone")
    finally:
        operator_process.start()


@pytest.mark.timeout(90)
def test_only_the_highest_priority_peer_acts_and_the_other_takes_over(kubectl: Kubectl, kubeconfig: Path,
                                                                      tmp_path: Path) -> None:
    """Leader election with kopf peering: the lower-priority operator pauses (kopf's handlers and
    Trireme's resync), creates nothing, and takes over when the leader stops."""
    namespace = f"peer-{uuid.uuid4().hex[:8]}"
    kubectl("apply", "-f", str(ROOT / "crds"))  # kopf's peering CRDs come with Trireme's
    kubectl("create", "namespace", namespace)
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                                                  "metadata": {"name": "trireme", "namespace": namespace}}))
    low = OperatorProcess(kubeconfig, namespace, tmp_path, "--peering", "trireme", "--priority", "100", name="low")
    high = OperatorProcess(kubeconfig, namespace, tmp_path, "--peering", "trireme", "--priority", "200", name="high")
    service = {"apiVersion": "serving.trireme.io/v1alpha1", "kind": "InferenceService",
               "metadata": {"name": "p", "namespace": namespace},
               "spec": {"models": [{"name": "simple"}], "modelRepository": {"uri": str(tmp_path)},
                        "runtime": {"image": "registry.example.com/not-triton:1"}, "replicas": 1,
                        "gpus": {"count": 1}}}
    try:
        high.start()
        wait_for(lambda: "resync resumed" in high.log(), timeout=20, interval=0.2, what="the leader acting")
        # kopf starts paused until it has read the peering object, so a replica that starts next to a
        # live leader of higher priority never acts at all; the resync says why it waits
        low.start()
        wait_for(lambda: "resync paused" in low.log(), timeout=20, interval=0.2, what="the standby waiting")
        assert "(priority 200)" in low.log() and "resync resumed" not in low.log()
        kubectl("apply", "-f", "-", input=json.dumps(service))
        wait_for(lambda: f"created pod {namespace}/p-r0" in high.log(), timeout=20, interval=0.2,
                 what="the leader creating the replica")
        wait_for(lambda: get_json(kubectl, "tis", "-n", namespace, "p").get("status", {}).get("desiredReplicas") == 1,
                 timeout=20, interval=0.2, what="the leader reporting status")
        assert "created pod" not in low.log() and "Pausing operations" not in high.log()
        assert (low.metric("trireme_leader"), high.metric("trireme_leader")) == (0.0, 1.0)
        assert low.get("/readyz")[0] == 200  # a standby is healthy and ready: it only waits

        high.stop()  # a graceful stop withdraws its keep-alive: the standby resumes at once
        wait_for(lambda: "Resuming operations" in low.log()
                 and "resync resumed" in low.log().split("resync paused")[-1],
                 timeout=20, interval=0.2, what="the priority-100 operator taking over")
        kubectl("scale", "-n", namespace, "tis/p", "--replicas=2")
        wait_for(lambda: f"created pod {namespace}/p-r1" in low.log(), timeout=20, interval=0.2,
                 what="the new leader creating the second replica")
        assert sorted(p["metadata"]["name"] for p in service_pods(kubectl, namespace, "p")) == ["p-r0", "p-r1"]
    finally:
        for operator in (high, low):
            operator.stop()
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
