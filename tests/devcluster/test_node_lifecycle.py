"""Node lifecycle on a small cluster of its own: cordon and uncordon, a node that
stops reporting (NotReady, unreachable taints, its pods not ready) and recovers,
and pod garbage collection when a node is deleted.

The tests change nodes, so they run against a two-node cluster started for this
module rather than the shared session cluster. The last test deletes a node.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from trireme.devcluster.background import BackgroundCluster
from trireme.devcluster.kubelet import CONDITION_ANNOTATION
from trireme.devcluster.testing import kubectl_runner, private_cluster, wait_for

Run = Callable[..., subprocess.CompletedProcess[str]]

PROFILE = """\
name: pair
pools:
  - name: pair
    count: 2
    gpus: 1
    gpuProduct: NVIDIA-A100-SXM4-40GB
    gpuMemoryMiB: 40960
    cpu: "8"
    memory: 32Gi
"""
UNREACHABLE = "node.kubernetes.io/unreachable"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundCluster]:
    with private_cluster(yaml.safe_load(PROFILE), tmp_path_factory.mktemp("node-lifecycle")) as handle:
        yield handle


@pytest.fixture(scope="module")
def core(cluster: BackgroundCluster) -> Iterator[client.CoreV1Api]:
    api = config.new_client_from_config(config_file=str(cluster.cluster.kubeconfig_path))
    try:
        yield client.CoreV1Api(api)
    finally:
        api.close()


@pytest.fixture(scope="module")
def kubectl(cluster: BackgroundCluster) -> Run:
    return kubectl_runner(cluster.cluster.kubeconfig_path)


@pytest.fixture(scope="module")
def nodes(core: client.CoreV1Api) -> list[str]:
    names = sorted(n.metadata.name for n in core.list_node().items)
    assert len(names) == 2, names
    return names


@pytest.fixture
def namespace(core: client.CoreV1Api) -> str:
    name = f"nl-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def start_pod(core: client.CoreV1Api, namespace: str, name: str, node: str) -> None:
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": "busybox:1.36"}]}})


def condition(conditions: list[Any] | None, kind: str) -> str | None:
    return next((c.status for c in conditions or [] if c.type == kind), None)


def pod_ready(core: client.CoreV1Api, namespace: str, name: str) -> str | None:
    return condition(core.read_namespaced_pod(name, namespace).status.conditions, "Ready")


def node_ready(core: client.CoreV1Api, node: str) -> str | None:
    return condition(core.read_node(node).status.conditions, "Ready")


def unreachable_taints(core: client.CoreV1Api, node: str) -> set[str]:
    return {t.effect for t in core.read_node(node).spec.taints or [] if t.key == UNREACHABLE}


def node_status_column(kubectl: Run, node: str) -> str:
    return kubectl("get", "node", node, "--no-headers").stdout.split()[1]


def test_cordon_and_uncordon(kubectl: Run, core: client.CoreV1Api, nodes: list[str]) -> None:
    node = nodes[0]
    kubectl("cordon", node)
    assert core.read_node(node).spec.unschedulable is True
    assert node_status_column(kubectl, node) == "Ready,SchedulingDisabled"
    unschedulable = kubectl("get", "nodes", "--field-selector", "spec.unschedulable=true", "-o", "name").stdout
    assert unschedulable.split() == [f"node/{node}"]
    kubectl("uncordon", node)
    assert not core.read_node(node).spec.unschedulable
    assert node_status_column(kubectl, node) == "Ready"


def test_cordon_is_idempotent(kubectl: Run, core: client.CoreV1Api, nodes: list[str]) -> None:
    node = nodes[0]
    kubectl("cordon", node)
    rv = core.read_node(node).metadata.resource_version
    assert "already cordoned" in kubectl("cordon", node).stdout
    assert core.read_node(node).metadata.resource_version == rv
    kubectl("uncordon", node)


def test_not_ready_node_and_recovery(kubectl: Run, core: client.CoreV1Api, nodes: list[str],
                                     namespace: str) -> None:
    node, other = nodes[1], nodes[0]
    start_pod(core, namespace, "on-node", node)
    start_pod(core, namespace, "elsewhere", other)
    for pod in ("on-node", "elsewhere"):
        wait_for(lambda: pod_ready(core, namespace, pod) == "True", what=f"{pod} to be ready")

    kubectl("annotate", "node", node, f"{CONDITION_ANNOTATION}=NotReady")
    wait_for(lambda: node_ready(core, node) == "Unknown", what="the node's Ready condition to become Unknown")
    assert unreachable_taints(core, node) == {"NoSchedule", "NoExecute"}
    wait_for(lambda: pod_ready(core, namespace, "on-node") == "False", what="the pod on the node to be not ready")
    assert pod_ready(core, namespace, "elsewhere") == "True"
    assert node_status_column(kubectl, node) == "NotReady"
    assert node_ready(core, other) == "True" and not unreachable_taints(core, other)

    kubectl("annotate", "node", node, f"{CONDITION_ANNOTATION}-")
    wait_for(lambda: node_ready(core, node) == "True", what="the node to be ready again")
    assert unreachable_taints(core, node) == set()
    wait_for(lambda: pod_ready(core, namespace, "on-node") == "True", what="the pod to be ready again")
    assert node_status_column(kubectl, node) == "Ready"


def test_pod_started_on_a_not_ready_node_is_not_ready(kubectl: Run, core: client.CoreV1Api, nodes: list[str],
                                                      namespace: str) -> None:
    node = nodes[1]
    kubectl("annotate", "node", node, f"{CONDITION_ANNOTATION}=NotReady")
    try:
        wait_for(lambda: node_ready(core, node) == "Unknown", what="the node to be not ready")
        start_pod(core, namespace, "late", node)
        wait_for(lambda: core.read_namespaced_pod("late", namespace).status.phase == "Running",
                 what="the pod to run")
        assert pod_ready(core, namespace, "late") == "False"
    finally:
        kubectl("annotate", "node", node, f"{CONDITION_ANNOTATION}-")
    wait_for(lambda: pod_ready(core, namespace, "late") == "True", what="the pod to be ready once the node is")


def test_deleting_a_node_removes_its_pods(kubectl: Run, core: client.CoreV1Api, nodes: list[str],
                                          namespace: str) -> None:
    node, other = nodes[1], nodes[0]
    for index in range(3):
        start_pod(core, namespace, f"doomed-{index}", node)
    start_pod(core, namespace, "survivor", other)
    wait_for(lambda: all(pod_ready(core, namespace, f"doomed-{i}") == "True" for i in range(3)),
             what="the pods on the node to be ready")

    kubectl("delete", "node", node)

    def names_left() -> list[str]:
        return sorted(p.metadata.name for p in core.list_namespaced_pod(namespace).items)
    wait_for(lambda: names_left() == ["survivor"], what="the deleted node's pods to be collected")
    assert pod_ready(core, namespace, "survivor") == "True"
    assert [n.metadata.name for n in core.list_node().items] == [other]
    bound = json.loads(kubectl("get", "pods", "-A", "--field-selector", f"spec.nodeName={node}", "-o",
                               "json").stdout)
    assert bound["items"] == []
