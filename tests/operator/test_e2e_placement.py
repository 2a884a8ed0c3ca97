"""Placement end to end: InferenceServices applied with kubectl to a small cluster of the module's
own, ``trireme run`` placing their pods, real Triton replicas reporting their models ready.

The cluster has one 8-GPU node with two NVLink islands (0-3 and 4-7) in zone a and two 2-GPU
nodes in zone b. The tests show what a user sees for each placement rule: a tensor-parallel
replica on one island (and a replica of two tensor-parallel groups on two), a pipeline-parallel
gang placed whole or not at all, preemption of a lower-priority service (and never of a
non-preemptible one), and ``dependsOn`` ordering start-up and naming a cycle. Services that only take GPUs (fillers, victims) run an image that
is not Triton, so the kubelet starts no process for them; the services whose readiness matters
run real ``tritonserver`` processes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from trireme.devcluster.background import BackgroundCluster
from trireme.devcluster.testing import (OperatorProcess, kubectl_runner, private_cluster, tritonserver_pids,
                                        wait_for)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIG = "big-0"
"""The 8-GPU node, islands 0-3 and 4-7, zone a."""
SMALL = ("small-0", "small-1")
"""The 2-GPU nodes, zone b."""
PROFILE = {"name": "placement", "pools": [
    {"name": "big", "count": 1, "gpus": 8, "gpuProduct": "NVIDIA-A100-SXM4-80GB", "gpuMemoryMiB": 81920,
     "nvlinkIslands": [[0, 1, 2, 3], [4, 5, 6, 7]], "cpu": "64", "memory": "256Gi",
     "topology": {"zone": "zone-a", "rack": "rack-1"}},
    {"name": "small", "count": 2, "gpus": 2, "gpuProduct": "NVIDIA-A100-SXM4-80GB", "gpuMemoryMiB": 81920,
     "cpu": "16", "memory": "64Gi", "topology": {"zone": "zone-b", "rack": "rack-2"}}]}
PLACEHOLDER_IMAGE = "registry.example.com/gpu-placeholder:1"
"""An image the kubelet runs without a process: the pod holds its GPUs and turns Ready."""
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


# -- the module's cluster, operator and model repository --------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundCluster]:
    with private_cluster(PROFILE, tmp_path_factory.mktemp("placement-cluster"), kubelet="process") as handle:
        yield handle


@pytest.fixture(scope="module")
def kubectl(cluster: BackgroundCluster) -> Kubectl:
    return kubectl_runner(cluster.cluster.kubeconfig_path)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("placement-models") / "models"
    shutil.copytree(ROOT / "examples" / "models", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture(scope="module")
def operator(cluster: BackgroundCluster, kubectl: Kubectl, models: Path, tmp_path_factory: pytest.TempPathFactory,
             crd_installer: Callable[[Kubectl], str]) -> Iterator[Path]:
    """``trireme run`` for the whole cluster, in its own process; yields its log file. At the end no
    ``tritonserver`` of the module's model repository may be left running."""
    crd_installer(kubectl)
    operator = OperatorProcess(cluster.cluster.kubeconfig_path, "", tmp_path_factory.mktemp("placement-operator"))
    operator.start()
    try:
        yield operator.log_path
    finally:
        operator.stop()
        wait_for(lambda: not tritonserver_pids(models), timeout=20, interval=0.2,
                 what="no tritonserver left running")


@pytest.fixture
def namespace(kubectl: Kubectl, operator: Path, models: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace for one test; deleted afterwards, with every pod (and Triton process) gone before the
    next test, so it finds every GPU free. The operator's log is printed when the test fails."""
    name = f"place-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    failed_before = request.session.testsfailed
    try:
        yield name
    finally:
        if request.session.testsfailed > failed_before:
            print(operator.read_text()[-8000:])
        kubectl("delete", "namespace", name, "--wait=false")
        wait_for(lambda: not get(kubectl, "pods", "-A")["items"], timeout=40, interval=0.2,
                 what=f"the pods of namespace {name} gone")
        wait_for(lambda: not tritonserver_pids(models), timeout=20, interval=0.2, what="tritonserver processes gone")


# -- helpers ---------------------------------------------------------------------------------------------


def service(name: str, namespace: str, models: Path, *, gpus: int = 1, replicas: int = 1, triton: bool = True,
            tensor: int = 1, pipeline: int = 1, priority: int | None = None, preemptible: bool = True,
            depends_on: tuple[str, ...] = (), node: str | None = None) -> str:
    """An InferenceService manifest (JSON, for ``kubectl apply -f -``)."""
    spec: dict[str, Any] = {"models": [{"name": "simple"}], "modelRepository": {"uri": str(models)},
                            "replicas": replicas, "gpus": {"count": gpus},
                            "parallelism": {"tensorParallel": tensor, "pipelineParallel": pipeline}}
    if not triton:
        spec["runtime"] = {"image": PLACEHOLDER_IMAGE}
    if priority is not None or not preemptible:
        spec["priority"] = {"value": priority or 0, "preemptible": preemptible}
    if depends_on:
        spec["dependsOn"] = list(depends_on)
    if node:
        spec["scheduling"] = {"nodeSelector": {"kubernetes.io/hostname": node}}
    return json.dumps({"apiVersion": "serving.trireme.io/v1alpha1", "kind": "InferenceService",
                       "metadata": {"name": name, "namespace": namespace}, "spec": spec})


def apply(kubectl: Kubectl, *manifests: str) -> None:
    for manifest in manifests:
        kubectl("apply", "-f", "-", input=manifest)


def get(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def tis(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return get(kubectl, "tis", "-n", namespace, name)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def pods_of(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    """The live pods of service ``name``, by name."""
    items = get(kubectl, "pods", "-n", namespace, "-l", f"serving.trireme.io/service={name}")["items"]
    return sorted((p for p in items if not p["metadata"].get("deletionTimestamp")), key=lambda p: p["metadata"]["name"])


def bound(kubectl: Kubectl, namespace: str, name: str, count: int = 1) -> list[dict[str, Any]] | None:
    """The service's pods once ``count`` of them are bound to a node and none waits, else None."""
    pods = pods_of(kubectl, namespace, name)
    return pods if len(pods) == count and all(p["spec"].get("nodeName") for p in pods) else None


def ready(kubectl: Kubectl, namespace: str, name: str, replicas: int = 1) -> dict[str, Any] | None:
    """The InferenceService once it reports ``replicas`` ready replicas and Ready=True, else None."""
    obj = tis(kubectl, namespace, name)
    ok = (obj.get("status") or {}).get("readyReplicas") == replicas and condition(obj, "Ready").get("status") == "True"
    return obj if ok else None


def unscheduled(kubectl: Kubectl, namespace: str, name: str, words: str) -> dict[str, Any] | None:
    """The InferenceService once it reports Scheduled=False with ``words`` in the message, else None."""
    obj = tis(kubectl, namespace, name)
    scheduled = condition(obj, "Scheduled")
    return obj if scheduled.get("status") == "False" and words in scheduled.get("message", "") else None


def events(kubectl: Kubectl, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    """Events of ``reason`` about the InferenceService ``name``."""
    return [e for e in get(kubectl, "events", "-n", namespace)["items"]
            if e["involvedObject"].get("kind") == "InferenceService" and e["involvedObject"].get("name") == name
            and e.get("reason") == reason]


def gpus_of(pod: dict[str, Any]) -> list[int]:
    return [int(i) for i in pod["metadata"]["annotations"]["trireme.io/gpus"].split(",")]


def islands(kubectl: Kubectl, node: str) -> list[set[int]]:
    text = get(kubectl, "node", node)["metadata"]["annotations"]["trireme.io/nvlink-islands"]
    result = []
    for island in text.split(";"):
        first, _, last = island.partition("-")
        result.append(set(range(int(first), int(last or first) + 1)))
    return result


def timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def pod_scheduled(pod: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == "PodScheduled"), {})


# -- the tests -------------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_tensor_parallel_replica_gets_one_nvlink_island(kubectl: Kubectl, namespace: str, models: Path) -> None:
    # a replica of two tensor-parallel groups of 4 takes both islands of the big node, a group in each
    apply(kubectl, service("wide", namespace, models, gpus=8, tensor=4, triton=False))
    wide = wait_for(lambda: bound(kubectl, namespace, "wide"), timeout=30, interval=0.2, what="wide bound")[0]
    assert (wide["spec"]["nodeName"], gpus_of(wide)) == (BIG, list(range(8)))
    kubectl("delete", "-n", namespace, "tis", "wide")
    wait_for(lambda: not get(kubectl, "pods", "-n", namespace)["items"], timeout=30, interval=0.2,
             what="the pod of wide gone")

    apply(kubectl, service("filler", namespace, models, triton=False, node=BIG))
    filler = wait_for(lambda: bound(kubectl, namespace, "filler"), timeout=30, interval=0.2,
                      what="the filler bound")[0]
    taken = set(gpus_of(filler))
    node_islands = islands(kubectl, BIG)
    assert node_islands == [{0, 1, 2, 3}, {4, 5, 6, 7}]
    naive = sorted(set(range(8)) - taken)[:4]  # the lowest free indices: what a first-fit would take
    assert sum(1 for island in node_islands if island & set(naive)) == 2, f"the filler holds {taken}"

    apply(kubectl, service("tp", namespace, models, gpus=4, tensor=4))
    obj = wait_for(lambda: ready(kubectl, namespace, "tp"), timeout=45, interval=0.3, what="tp Ready")
    assert tritonserver_pids(models), "tp is Ready, so its tritonserver runs"
    pod = pods_of(kubectl, namespace, "tp")[0]
    assert pod["metadata"]["name"] == "tp-r0" and pod["spec"]["nodeName"] == BIG
    gpus = gpus_of(pod)
    assert len(set(gpus)) == 4 and not set(gpus) & taken
    assert any(set(gpus) <= island for island in node_islands), f"GPUs {gpus} straddle NVLink islands"
    placement = obj["status"]["placements"][0]
    assert placement["replica"] == 0 and placement["ready"] is True
    assert placement["pods"] == [{"name": "tp-r0", "node": BIG, "gpus": gpus}]
    assert any(f"GPUs {gpus}" in e["message"] for e in events(kubectl, namespace, "tp", "Scheduled"))


@pytest.mark.timeout(90)
def test_a_pipeline_gang_is_placed_whole_or_not_at_all(kubectl: Kubectl, namespace: str, models: Path) -> None:
    # 4 of the big node's 8 GPUs held: one stage (4 GPUs, tensor parallel) would fit there, the other nowhere
    apply(kubectl, service("filler", namespace, models, gpus=4, triton=False, preemptible=False, node=BIG))
    wait_for(lambda: bound(kubectl, namespace, "filler"), timeout=30, interval=0.2, what="the filler bound")
    apply(kubectl, service("pipe", namespace, models, gpus=8, tensor=4, pipeline=2))
    obj = wait_for(lambda: unscheduled(kubectl, namespace, "pipe", "does not fit together"), timeout=30,
                   interval=0.3, what="Scheduled=False on the gang")
    assert condition(obj, "Scheduled")["reason"] == "Unschedulable"
    pods = pods_of(kubectl, namespace, "pipe")
    assert [p["metadata"]["name"] for p in pods] == ["pipe-r0-p0", "pipe-r0-p1"]
    for pod in pods:
        assert not pod["spec"].get("nodeName")
        assert pod_scheduled(pod)["status"] == "False"
        assert pod_scheduled(pod)["message"].startswith(f"gang {namespace}/pipe-r0 of 2 pods does not fit together")
    assert not events(kubectl, namespace, "pipe", "Scheduled")
    assert events(kubectl, namespace, "pipe", "FailedScheduling")

    kubectl("delete", "-n", namespace, "tis", "filler")  # now the gang fits, on the big node
    wait_for(lambda: ready(kubectl, namespace, "pipe"), timeout=60, interval=0.3, what="the gang's replica Ready")
    pods = pods_of(kubectl, namespace, "pipe")
    assert {p["spec"]["nodeName"] for p in pods} == {BIG}
    assert sorted(g for p in pods for g in gpus_of(p)) == list(range(8))
    assert sorted(sorted(gpus_of(p)) for p in pods) == [sorted(i) for i in islands(kubectl, BIG)]  # one island each
    obj = tis(kubectl, namespace, "pipe")
    assert condition(obj, "Scheduled")["status"] == "True"
    assert [len(p["pods"]) for p in obj["status"]["placements"]] == [2]


@pytest.mark.timeout(90)
def test_a_higher_priority_preempts_a_preemptible_service_only(kubectl: Kubectl, namespace: str,
                                                                models: Path) -> None:
    # fill the cluster: the big node with a service that may not be preempted (priority 0, lower
    # than the victim's: preemption would prefer it), the two small nodes with a preemptible one
    apply(kubectl, service("anchor", namespace, models, gpus=8, triton=False, preemptible=False))
    anchor = wait_for(lambda: bound(kubectl, namespace, "anchor"), timeout=30, interval=0.2,
                      what="anchor bound")[0]
    apply(kubectl, service("batch", namespace, models, gpus=2, replicas=2, triton=False, priority=1))
    batch = wait_for(lambda: bound(kubectl, namespace, "batch", 2), timeout=30, interval=0.2, what="batch bound")
    assert sorted(p["spec"]["nodeName"] for p in batch) == list(SMALL)
    # preemption respects the PodDisruptionBudget: wait until it allows a disruption
    wait_for(lambda: (get(kubectl, "pdb", "-n", namespace, "batch").get("status") or {}).get("disruptionsAllowed"),
             timeout=20, interval=0.2, what="batch's disruption budget to allow one eviction")

    apply(kubectl, service("urgent", namespace, models, gpus=2, priority=1000))
    preempted = wait_for(lambda: events(kubectl, namespace, "batch", "Preempted"), timeout=30, interval=0.3,
                         what="a Preempted event on batch")
    assert events(kubectl, namespace, "urgent", "Preempting")
    victims = [p for p in batch if p["metadata"]["name"] in preempted[0]["message"]]
    assert len(victims) == 1, preempted[0]["message"]
    victim = victims[0]
    obj = wait_for(lambda: ready(kubectl, namespace, "urgent"), timeout=45, interval=0.3, what="urgent Ready")
    pod = pods_of(kubectl, namespace, "urgent")[0]
    assert pod["spec"]["nodeName"] == victim["spec"]["nodeName"]
    assert obj["status"]["placements"][0]["pods"][0]["node"] == victim["spec"]["nodeName"]
    uids = {p["metadata"]["uid"] for p in pods_of(kubectl, namespace, "batch")}
    assert victim["metadata"]["uid"] not in uids  # deleted; the replica was created again and waits

    # the victim's service says why its replica waits; nothing else was touched
    obj = wait_for(lambda: unscheduled(kubectl, namespace, "batch", victim["metadata"]["name"]), timeout=20,
                   interval=0.3, what="Scheduled=False on batch")
    message = condition(obj, "Scheduled")["message"]
    assert message == (f"{victim['metadata']['name']}: needs 2× GPU on one node; largest free block is 0; "
                       "preemption cannot help: no pod of lower priority than 1 may be preempted")
    assert pods_of(kubectl, namespace, "anchor")[0]["metadata"]["uid"] == anchor["metadata"]["uid"]
    assert not events(kubectl, namespace, "anchor", "Preempted")
    survivors = [p for p in batch if p is not victim]
    assert [p["metadata"]["uid"] for p in pods_of(kubectl, namespace, "batch") if p["spec"].get("nodeName")] == \
        [p["metadata"]["uid"] for p in survivors]


@pytest.mark.timeout(90)
def test_depends_on_orders_start_up_and_names_a_cycle(kubectl: Kubectl, namespace: str, models: Path) -> None:
    # frontend → backend → store; store does not exist yet, so nothing can start
    apply(kubectl, service("frontend", namespace, models, triton=False, depends_on=("backend",)),
          service("backend", namespace, models, depends_on=("store",)),
          service("a", namespace, models, triton=False, depends_on=("b",)),
          service("b", namespace, models, triton=False, depends_on=("a",)))
    wait_for(lambda: unscheduled(kubectl, namespace, "backend", "waits for store (not found in this namespace"),
             timeout=30, interval=0.3, what="backend waiting for store")
    wait_for(lambda: unscheduled(kubectl, namespace, "frontend", "waits for backend to be ready"),
             timeout=30, interval=0.3, what="frontend waiting for backend")
    cycle = "dependsOn forms a cycle: a → b → a; remove one of these dependencies"
    for name in ("a", "b"):
        obj = wait_for(lambda: unscheduled(kubectl, namespace, name, cycle), timeout=20, interval=0.3,
                       what=f"the cycle named on {name}")
        assert condition(obj, "Scheduled")["message"] == f"{name}-r0: {cycle}"
        assert condition(obj, "Ready")["status"] == "False"
        assert not pods_of(kubectl, namespace, name)[0]["spec"].get("nodeName")
    for name in ("frontend", "backend"):
        assert not pods_of(kubectl, namespace, name)[0]["spec"].get("nodeName")

    kubectl("patch", "-n", namespace, "tis", "backend", "--type=merge", "-p", '{"spec": {"dependsOn": []}}')

    wait_for(lambda: bound(kubectl, namespace, "frontend"), timeout=45, interval=0.3, what="frontend placed")
    backend_ready = condition(ready(kubectl, namespace, "backend") or {}, "Ready")
    assert backend_ready.get("status") == "True"
    # placed only after its dependency turned Ready (both times come from the operator's clock)
    placed = events(kubectl, namespace, "frontend", "Scheduled")
    assert len(placed) == 1
    assert timestamp(placed[0]["lastTimestamp"]) >= timestamp(backend_ready["lastTransitionTime"])
    wait_for(lambda: condition(tis(kubectl, namespace, "frontend"), "Scheduled").get("status") == "True",
             timeout=20, interval=0.3, what="frontend Scheduled=True")
    for name in ("a", "b"):  # the cycle still holds both back
        assert unscheduled(kubectl, namespace, name, cycle)
