"""The operator's scheduling loop on a small cluster of its own (two nodes of two GPUs,
simulated kubelet): every pending Trireme pod is placed in one cycle, higher priority
first; dependsOn holds a service back until what it depends on is ready; a cycle is
named on its members; decisions become bindings, PodScheduled conditions and Events; a pod
nominated to a node that moves are clearing waits for them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from trireme.devcluster.testing import private_cluster, wait_for
from trireme.operator.api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from trireme.operator.scheduling import SchedulingLoop
from trireme.scheduler.cycle import Bind, Preempt, Unschedulable

ROOT = Path(__file__).resolve().parents[2]
PROFILE = {"name": "pair", "pools": [{"name": "gpu", "count": 2, "gpus": 2, "gpuProduct": "NVIDIA-A100-SXM4-40GB",
                                      "gpuMemoryMiB": 40960, "cpu": "16", "memory": "64Gi"}]}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[client.ApiClient]:
    with private_cluster(PROFILE, tmp_path_factory.mktemp("scheduling-loop")) as handle:
        api = config.new_client_from_config(config_file=str(handle.cluster.kubeconfig_path))
        try:
            extensions = client.ApiextensionsV1Api(api)
            for path in sorted((ROOT / "crds").glob("*.yaml")):
                extensions.create_custom_resource_definition(yaml.safe_load(path.read_text()))
            yield api
        finally:
            api.close()


@pytest.fixture
def namespace(api: client.ApiClient) -> str:
    name = f"sched-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def events(api: client.ApiClient) -> list[tuple[str, str, str, str]]:
    return []


@pytest.fixture
def loop(api: client.ApiClient, events: list) -> SchedulingLoop:
    def record(obj: Any, kind: str, reason: str, message: str) -> None:
        events.append((obj["metadata"]["name"], kind, reason, message))
    return SchedulingLoop(api, "trireme", record_event=record)


def make_service(api: client.ApiClient, namespace: str, name: str, *, depends_on: tuple[str, ...] = (),
                 priority: int | None = None, preemptible: bool = True, ready: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"models": [{"name": "m"}], "modelRepository": {"uri": "/models"}, "replicas": 1,
                            "gpus": {"count": 1}, "dependsOn": list(depends_on)}
    if priority is not None or not preemptible:
        spec["priority"] = {"value": priority or 0, "preemptible": preemptible}
    custom = client.CustomObjectsApi(api)
    obj = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                 {"apiVersion": API_VERSION, "kind": KIND,
                                                  "metadata": {"name": name}, "spec": spec})
    if ready:
        condition = {"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "ready",
                     "lastTransitionTime": "2026-01-01T00:00:00Z"}
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                     {"status": {"conditions": [condition]}})
    return obj


def make_pod(api: client.ApiClient, namespace: str, service: dict[str, Any], name: str, gpus: int = 1) -> None:
    owner = {"apiVersion": API_VERSION, "kind": KIND, "name": service["metadata"]["name"],
             "uid": service["metadata"]["uid"], "controller": True}
    client.CoreV1Api(api).create_namespaced_pod(namespace, {
        "metadata": {"name": name, "ownerReferences": [owner]},
        "spec": {"schedulerName": "trireme",
                 "containers": [{"name": "c", "image": "busybox",
                                 "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}})


def read_pod(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    response = client.CoreV1Api(api).read_namespaced_pod(name, namespace, _preload_content=False)
    return json.loads(response.data)


def pod_scheduled(pod: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in pod["status"].get("conditions") or [] if c["type"] == "PodScheduled"), {})


def cleanup(api: client.ApiClient, namespace: str) -> None:
    """Delete the namespace and wait until its pods are gone, so the next test finds every GPU free."""
    core = client.CoreV1Api(api)
    core.delete_namespace(namespace)
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, timeout=30, interval=0.1,
             what=f"pods of namespace {namespace} gone")


def test_one_cycle_places_every_pending_pod_and_tells_the_owner(api, namespace, loop, events) -> None:
    a, b = make_service(api, namespace, "a"), make_service(api, namespace, "b")
    make_pod(api, namespace, a, "a-r0", gpus=2)
    make_pod(api, namespace, b, "b-r0", gpus=2)
    try:
        outcomes = loop.run()
        assert {(o.name, type(o.decision)) for o in outcomes} == {("a-r0", Bind), ("b-r0", Bind)}
        nodes = {read_pod(api, namespace, n)["spec"]["nodeName"] for n in ("a-r0", "b-r0")}
        assert len(nodes) == 2
        assert read_pod(api, namespace, "a-r0")["metadata"]["annotations"]["trireme.io/gpus"] == "0,1"
        assert sorted((e[0], e[2]) for e in events) == [("a", "Scheduled"), ("b", "Scheduled")]
        assert loop.run() == []  # nothing pending: the next cycle has nothing to do
    finally:
        cleanup(api, namespace)


def test_higher_priority_goes_first_when_gpus_are_short(api, namespace, loop, events) -> None:
    low, high = make_service(api, namespace, "low", priority=1), make_service(api, namespace, "high", priority=100)
    big = make_service(api, namespace, "big", preemptible=False)
    make_pod(api, namespace, big, "big-r0", gpus=2)
    loop.run()  # one node is taken whole; one node of two GPUs is left
    make_pod(api, namespace, low, "low-r0", gpus=2)
    make_pod(api, namespace, high, "high-r0", gpus=2)
    try:
        decisions = {o.name: o.decision for o in loop.run()}
        assert isinstance(decisions["high-r0"], Bind)
        assert isinstance(decisions["low-r0"], Unschedulable)
        assert "largest free block is 0" in decisions["low-r0"].reason
        condition = pod_scheduled(read_pod(api, namespace, "low-r0"))
        assert condition["status"] == "False" and condition["message"] == decisions["low-r0"].reason
        assert ("low", "Warning", "FailedScheduling", f"pod low-r0: {decisions['low-r0'].reason}") in events
        events.clear()
        loop.run()  # the same reason again is not a new event
        assert not [e for e in events if e[2] == "FailedScheduling"]
    finally:
        cleanup(api, namespace)


def test_a_higher_priority_preempts_and_takes_the_freed_gpus(api, namespace, loop, events) -> None:
    low = make_service(api, namespace, "low", priority=1)
    for index in range(2):
        make_pod(api, namespace, low, f"low-r{index}", gpus=2)
    loop.run()  # the cluster is full
    urgent = make_service(api, namespace, "urgent", priority=1000)
    make_pod(api, namespace, urgent, "urgent-r0", gpus=2)
    try:
        decisions = {o.name: o.decision for o in loop.run()}
        preemption = decisions["urgent-r0"]
        assert isinstance(preemption, Preempt) and len(preemption.victims) == 1
        assert preemption.victims[0] in (f"{namespace}/low-r0", f"{namespace}/low-r1")
        pod = read_pod(api, namespace, "urgent-r0")
        assert pod["status"]["nominatedNodeName"] == preemption.node
        assert ("low", "Warning", "Preempted") in {e[:3] for e in events}
        assert ("urgent", "Normal", "Preempting") in {e[:3] for e in events}

        def bound() -> bool:
            loop.run()
            return bool(read_pod(api, namespace, "urgent-r0")["spec"].get("nodeName"))

        wait_for(bound, timeout=30, interval=0.2, what="urgent-r0 bound once its victim left")
        assert read_pod(api, namespace, "urgent-r0")["spec"]["nodeName"] == preemption.node
    finally:
        cleanup(api, namespace)


def test_depends_on_holds_a_service_until_its_dependency_is_ready(api, namespace, loop) -> None:
    tokenizer = make_service(api, namespace, "tokenizer")
    app = make_service(api, namespace, "app", depends_on=("tokenizer", "ghost"))
    make_pod(api, namespace, app, "app-r0")
    make_pod(api, namespace, tokenizer, "tokenizer-r0")
    try:
        decisions = {o.name: o.decision for o in loop.run()}
        assert isinstance(decisions["tokenizer-r0"], Bind)
        assert decisions["app-r0"] == Unschedulable(f"{namespace}/app-r0", 
            "waits for ghost (not found in this namespace; create it or remove it from dependsOn); "
            "waits for tokenizer to be ready")
        assert pod_scheduled(read_pod(api, namespace, "app-r0"))["message"] == decisions["app-r0"].reason
        make_service(api, namespace, "ghost", ready=True)
        condition = {"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "ready",
                     "lastTransitionTime": "2026-01-01T00:00:00Z"}
        client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "tokenizer", {"status": {"conditions": [condition]}})
        assert [(o.name, type(o.decision)) for o in loop.run()] == [("app-r0", Bind)]
    finally:
        cleanup(api, namespace)


def test_a_dependency_cycle_is_named_on_every_member(api, namespace, loop) -> None:
    first = make_service(api, namespace, "first", depends_on=("second",))
    second = make_service(api, namespace, "second", depends_on=("first",))
    make_pod(api, namespace, first, "first-r0")
    make_pod(api, namespace, second, "second-r0")
    try:
        reasons = {o.name: o.decision.reason for o in loop.run() if isinstance(o.decision, Unschedulable)}
        expected = "dependsOn forms a cycle: first → second → first; remove one of these dependencies"
        assert reasons == {"first-r0": expected, "second-r0": expected}
    finally:
        cleanup(api, namespace)


def _node(name: str, gpus: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}}, "spec": {},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "16", "memory": "64Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def _pending(name: str, policy: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    owner = {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": f"u-{name}", "controller": True}
    pod = {"metadata": {"name": f"{name}-r0", "namespace": "ns", "ownerReferences": [owner]},
           "spec": {"schedulerName": "trireme",
                    "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}
    service = {"metadata": {"name": name}, "spec": {"scheduling": {"policy": policy} if policy else {}}}
    return pod, service


@pytest.mark.parametrize(("spec_policy", "default", "node"), [
    ("binpack", "spread", "busy"), ("spread", "binpack", "idle"), (None, "binpack", "busy"), (None, "spread", "idle"),
], ids=["spec-binpack", "spec-spread", "default-binpack", "default-spread"])
def test_a_service_without_a_policy_gets_the_cluster_default(spec_policy: str | None, default: str,
                                                             node: str) -> None:
    from trireme.operator.scheduling import decide

    nodes = [_node("busy", 4), _node("idle", 4)]
    other = {"metadata": {"name": "other", "namespace": "ns", "annotations": {"trireme.io/gpus": "0,1"}},
             "spec": {"nodeName": "busy", "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]},
             "status": {"phase": "Running"}}
    pod, service = _pending("svc", spec_policy)
    decisions = decide(nodes, [other, pod], [pod], {"ns/svc": service}, {}, default_policy=default)
    assert decisions["ns/svc-r0"].node == node


def test_a_pod_nominated_to_a_node_being_cleared_waits_for_the_moves() -> None:
    from trireme.operator.reconcile import REPLACES_ANNOTATION
    from trireme.operator.scheduling import decide

    def running(name: str, node: str, gpu: int, **annotations: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}",
                             "annotations": {"trireme.io/gpus": str(gpu), **annotations}},
                "spec": {"nodeName": node,
                         "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
                "status": {"phase": "Running"}}

    old, stays = running("web-r0", "n0", 0), running("db-r0", "n0", 1)
    new = running("web-r2", "n1", 0, **{REPLACES_ANNOTATION: "u-web-r0"})
    pod, service = _pending("tp", None)
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "2"
    pod["status"] = {"nominatedNodeName": "n0"}
    decisions = decide([_node("n0", 2), _node("n1", 2)], [old, stays, new, pod], [pod], {"ns/tp": service}, {})
    assert decisions["ns/tp-r0"] == Unschedulable(
        "ns/tp-r0", "waiting for 1 pod(s) to leave node n0 (preempted or moved to make room)")


@pytest.mark.parametrize(("llm_tensor_parallel", "node"), [(4, "b"), (1, "a")],
                         ids=["running-tensor-parallel-service-keeps-an-island", "no-tensor-parallel-service"])
def test_a_small_pod_leaves_whole_islands_for_a_running_tensor_parallel_service(llm_tensor_parallel: int,
                                                                                node: str) -> None:
    """Node a has one whole NVLink island idle, node b as many idle GPUs in two broken islands. While a
    service with tensor-parallel replicas runs (its next replica needs a whole island), a 1-GPU pod goes to
    b; with no such service both nodes look alike and it goes to a, the first by name."""
    from trireme.operator.scheduling import decide

    def island_node(name: str) -> dict[str, Any]:
        node_object = _node(name, 8)
        node_object["metadata"]["annotations"] = {"trireme.io/nvlink-islands": "0-3;4-7"}
        return node_object

    def running(name: str, node_name: str, gpus: str, service: str = "") -> dict[str, Any]:
        labels = {"serving.trireme.io/service": service} if service else {}
        return {"metadata": {"name": name, "namespace": "ns", "labels": labels,
                             "annotations": {"trireme.io/gpus": gpus}},
                "spec": {"nodeName": node_name,
                         "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "4"}}}]},
                "status": {"phase": "Running"}}

    pods = [running("other-a", "a", "4,5,6,7"), running("other-b", "b", "2,3,6,7"),
            running("llm-r0", "c", "0,1,2,3", service="llm"), running("other-c", "c", "4,5,6,7")]
    pod, service = _pending("svc", None)
    llm = {"metadata": {"name": "llm"}, "spec": {"parallelism": {"tensorParallel": llm_tensor_parallel}}}
    decisions = decide([island_node("a"), island_node("b"), island_node("c")], pods + [pod], [pod],
                       {"ns/svc": service, "ns/llm": llm}, {})
    assert decisions["ns/svc-r0"].node == node
