"""The rebalancer end to end: a fragmented cluster defragmented by make-before-break moves.

The module's own cluster has two nodes of two GPUs. A Triton service with two replicas placed
with the spread policy holds one GPU of each node, so a tensor-parallel replica that needs both
GPUs of one node fits nowhere although two GPUs are free. ``trireme run`` (with a short
rebalancing interval) moves one Triton replica next to the other: the new replica starts on the
other node, serves, and only then is the old one taken out of the Service, drained and deleted.
The tensor-parallel replica then takes the node that was cleared. Inferences run through
tritonclient all along, and none may fail.

A second cluster (one node of four GPUs, one of two) checks a node cleared over several plans:
with one move in flight at a time, the two Triton replicas on the four-GPU node move one after the
other, the four-GPU replica nominated to that node meanwhile, and it binds there once both left.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from trireme.devcluster.background import BackgroundCluster
from trireme.devcluster.testing import (OperatorProcess, kubectl_runner, private_cluster, scratch_namespace,
                                        tritonserver_pids, wait_for)
from trireme.loadgen import LoadGenerator
from trireme.operator.reconcile import DRAINING_ANNOTATION, REPLACES_ANNOTATION, pod_is_ready

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PROFILE = {"name": "rebalance", "pools": [
    {"name": "small", "count": 2, "gpus": 2, "gpuProduct": "NVIDIA-A100-SXM4-80GB", "gpuMemoryMiB": 81920,
     "nvlinkIslands": [[0, 1]], "cpu": "16", "memory": "64Gi"}]}
PLACEHOLDER_IMAGE = "registry.example.com/gpu-placeholder:1"
"""An image the kubelet runs without a process: the pod holds its GPUs and turns Ready."""
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


WIDE_PROFILE = {"name": "rebalance-wide", "pools": [
    {"name": "wide", "count": 1, "gpus": 4, "gpuProduct": "NVIDIA-A100-SXM4-80GB", "gpuMemoryMiB": 81920,
     "nvlinkIslands": [[0, 1, 2, 3]], "cpu": "16", "memory": "64Gi"},
    {"name": "small", "count": 1, "gpus": 2, "gpuProduct": "NVIDIA-A100-SXM4-80GB", "gpuMemoryMiB": 81920,
     "nvlinkIslands": [[0, 1]], "cpu": "16", "memory": "64Gi"}]}


def _cluster(profile: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundCluster]:
    with private_cluster(profile, tmp_path_factory.mktemp(profile["name"]), kubelet="process") as handle:
        yield handle


def _kubectl(cluster: BackgroundCluster, crd_installer: Callable[[Kubectl], str]) -> Kubectl:
    run = kubectl_runner(cluster.cluster.kubeconfig_path)
    crd_installer(run)
    return run


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundCluster]:
    yield from _cluster(PROFILE, tmp_path_factory)


@pytest.fixture(scope="module")
def kubectl(cluster: BackgroundCluster, crd_installer: Callable[[Kubectl], str]) -> Kubectl:
    return _kubectl(cluster, crd_installer)


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory,
         crd_installer: Callable[[Kubectl], str]) -> Iterator[tuple[BackgroundCluster, Kubectl]]:
    """The second cluster, with kubectl for it."""
    for handle in _cluster(WIDE_PROFILE, tmp_path_factory):
        yield handle, _kubectl(handle, crd_installer)


@pytest.fixture
def models(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "models"
    shutil.copytree(ROOT / "examples" / "models", target, ignore=shutil.ignore_patterns("__pycache__"))
    yield target
    wait_for(lambda: not tritonserver_pids(target), timeout=30, interval=0.2, what="no tritonserver left running")


def _operator(cluster: BackgroundCluster, tmp_path: Path, request: pytest.FixtureRequest,
              *extra: str) -> Iterator[OperatorProcess]:
    """``trireme run`` planning moves every second, with a short drain; its log printed on failure."""
    operator = OperatorProcess(cluster.cluster.kubeconfig_path, "", tmp_path, "--rebalance-interval", "1",
                               "--min-move-interval", "0", "--drain-grace", "2", "--drain-timeout", "30",
                               "--move-timeout", "90", *extra)
    failed_before = request.session.testsfailed
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
        if request.session.testsfailed > failed_before:
            print(operator.log()[-8000:])


@pytest.fixture
def operator(cluster: BackgroundCluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    yield from _operator(cluster, tmp_path, request)


@pytest.fixture
def one_move_operator(wide: tuple[BackgroundCluster, Kubectl], tmp_path: Path,
                      request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    """The same on the second cluster, with one move in flight at a time."""
    yield from _operator(wide[0], tmp_path, request, "--rebalance-max-moves", "1")


def manifest(name: str, namespace: str, models: Path, *, gpus: int, replicas: int, tensor: int = 1,
             triton: bool = True, policy: str | None = None) -> str:
    spec: dict[str, Any] = {"models": [{"name": "simple"}], "modelRepository": {"uri": str(models)},
                            "replicas": replicas, "gpus": {"count": gpus},
                            "parallelism": {"tensorParallel": tensor}}
    if not triton:
        spec["runtime"] = {"image": PLACEHOLDER_IMAGE}
    if policy:
        spec["scheduling"] = {"policy": policy}
    return json.dumps({"apiVersion": "serving.trireme.io/v1alpha1", "kind": "InferenceService",
                       "metadata": {"name": name, "namespace": namespace}, "spec": spec})


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(microsecond=0)


def get(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


@pytest.mark.timeout(240)
def test_a_fragmented_cluster_is_defragmented_without_a_failed_request(kubectl: Kubectl, operator: OperatorProcess,
                                                                       models: Path) -> None:
    with scratch_namespace(kubectl, "rebal") as namespace:
        def pods(service: str) -> list[dict[str, Any]]:
            return [p for p in get(kubectl, "pods", "-n", namespace, "-l",
                                   f"serving.trireme.io/service={service}")["items"]
                    if not p["metadata"].get("deletionTimestamp")]

        def endpoints() -> list[str]:
            found = get(kubectl, "endpoints", "-n", namespace, "web")
            return [f"{a['ip']}:8000" for s in found.get("subsets") or [] for a in s.get("addresses") or []]

        def ready(service: str) -> int:
            return int(get(kubectl, "tis", "-n", namespace, service).get("status", {}).get("readyReplicas") or 0)

        # -- two Triton replicas spread over both nodes: one GPU free on each -----------------------------------
        kubectl("apply", "-f", "-", input=manifest("web", namespace, models, gpus=1, replicas=2, policy="spread"))
        wait_for(lambda: ready("web") == 2, timeout=90, interval=0.5, what="both replicas of web ready")
        before = {p["spec"]["nodeName"] for p in pods("web")}
        assert before == {"small-0", "small-1"}, f"spread placed web on {before}"
        wait_for(lambda: len(endpoints()) == 2, timeout=20, interval=0.3, what="two endpoints")
        load = LoadGenerator(endpoints, rate=8.0, timeout_s=20.0)
        load.start()
        try:
            wait_for(lambda: load.snapshot().succeeded >= 5, timeout=30, interval=0.3, what="inferences served")

            # -- a tensor-parallel replica needing a whole node: it fits only after a move ------------------
            kubectl("apply", "-f", "-", input=manifest("tp", namespace, models, gpus=2, replicas=1, tensor=2,
                                                        triton=False))
            ready_at: dict[str, str] = {}  # a new replica of a move: when it turned Ready
            drained_at: dict[str, str] = {}  # a replica taken out of the Service: when

            def placed() -> dict[str, Any] | None:
                for item in pods("web"):
                    annotations = item["metadata"].get("annotations") or {}
                    ready = next((c for c in item["status"].get("conditions") or [] if c["type"] == "Ready"), {})
                    if REPLACES_ANNOTATION in annotations and ready.get("status") == "True":
                        ready_at.setdefault(item["metadata"]["name"], ready["lastTransitionTime"])
                    if DRAINING_ANNOTATION in annotations:
                        drained_at.setdefault(item["metadata"]["name"], annotations[DRAINING_ANNOTATION])
                found = pods("tp")
                return found[0] if found and found[0]["spec"].get("nodeName") and pod_is_ready(found[0]) else None

            tp = wait_for(placed, timeout=150, interval=0.5, what="the tensor-parallel replica placed and ready")
            wait_for(lambda: ready("web") == 2 and len(pods("web")) == 2, timeout=60, interval=0.5,
                     what="web back to two replicas, the old one deleted")
            succeeded = load.snapshot().succeeded
            wait_for(lambda: load.snapshot().succeeded >= succeeded + 5, timeout=30, interval=0.3,
                     what="inferences served after the move")
        finally:
            load.stop()
        after = load.snapshot()
        assert after.failed == 0 and after.retried == 0, after.last_error

        # the tensor-parallel replica has a node to itself; web's replicas share the other
        web_nodes = [p["spec"]["nodeName"] for p in pods("web")]
        assert tp["spec"]["nodeName"] not in web_nodes and len(set(web_nodes)) == 1, (tp["spec"]["nodeName"],
                                                                                     web_nodes)
        assert sorted(tp["metadata"]["annotations"]["trireme.io/gpus"].split(",")) == ["0", "1"]
        # make-before-break: the old replica left the Service only once its replacement was Ready
        assert len(ready_at) == 1 and len(drained_at) == 1, (ready_at, drained_at)
        assert _time(*ready_at.values()) <= _time(*drained_at.values()), (ready_at, drained_at)
        events = [(e["involvedObject"]["name"], e["reason"], e["message"])
                  for e in get(kubectl, "events", "-n", namespace)["items"]]
        reasons = {(name, reason) for name, reason, _ in events}
        assert {("web", "Moving"), ("web", "Moved"), ("tp", "Defragmenting")} <= reasons, events
        moving = next(m for name, reason, m in events if reason == "Moving")
        assert "make room" in moving, moving


@pytest.mark.timeout(300)
def test_a_node_is_cleared_over_several_plans(wide: tuple[BackgroundCluster, Kubectl],
                                              one_move_operator: OperatorProcess, models: Path) -> None:
    kubectl = wide[1]
    with scratch_namespace(kubectl, "clear") as namespace:
        def pods(service: str) -> list[dict[str, Any]]:
            return [p for p in get(kubectl, "pods", "-n", namespace, "-l",
                                   f"serving.trireme.io/service={service}")["items"]
                    if not p["metadata"].get("deletionTimestamp")]

        def ready(service: str) -> int:
            return int(get(kubectl, "tis", "-n", namespace, service).get("status", {}).get("readyReplicas") or 0)

        # -- two Triton replicas on the four-GPU node: the two-GPU node is taken while they are placed ------
        kubectl("apply", "-f", "-", input=manifest("filler", namespace, models, gpus=2, replicas=1, triton=False))
        wait_for(lambda: any(pod_is_ready(p) for p in pods("filler")), timeout=60, interval=0.5,
                 what="filler's pod ready")
        kubectl("apply", "-f", "-", input=manifest("web", namespace, models, gpus=1, replicas=2))
        wait_for(lambda: ready("web") == 2, timeout=120, interval=0.5, what="both replicas of web ready")
        assert {p["spec"]["nodeName"] for p in pods("web")} == {"wide-0"}

        # -- a replica needing all four GPUs: two moves, one at a time -----------------------------------------
        # applied before the filler leaves: while a replica waits, web's bunched replicas are not spread
        kubectl("apply", "-f", "-", input=manifest("big", namespace, models, gpus=4, replicas=1, tensor=4,
                                                    triton=False))
        wait_for(lambda: pods("big"), timeout=30, interval=0.3, what="the four-GPU replica's pod")
        kubectl("delete", "tis", "-n", namespace, "filler")
        nominated: set[str] = set()

        def placed() -> dict[str, Any] | None:
            found = pods("big")
            if found and (found[0].get("status") or {}).get("nominatedNodeName"):
                nominated.add(found[0]["status"]["nominatedNodeName"])
            return found[0] if found and found[0]["spec"].get("nodeName") and pod_is_ready(found[0]) else None

        big = wait_for(placed, timeout=200, interval=0.5, what="the four-GPU replica placed and ready")
        assert big["spec"]["nodeName"] == "wide-0" and nominated == {"wide-0"}, (big["spec"], nominated)
        wait_for(lambda: ready("web") == 2 and len(pods("web")) == 2, timeout=60, interval=0.5,
                 what="web back to two replicas")
        assert {p["spec"]["nodeName"] for p in pods("web")} == {"small-0"}
        events = [(e["involvedObject"]["name"], e["reason"], e["message"])
                  for e in get(kubectl, "events", "-n", namespace)["items"]]
        assert [r for name, r, _ in events if name == "web" and r in ("Moving", "Moved")].count("Moved") == 2, events
        defragmenting = [m for name, r, m in events if name == "big" and r == "Defragmenting"]
        assert len(defragmenting) == 2 and any("more moves follow" in m for m in defragmenting), defragmenting
