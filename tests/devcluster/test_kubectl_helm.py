"""kubectl 1.37 and helm 4, as subprocesses, against the local cluster: what a
user types works unchanged, and bad input fails with the server's message."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest

Run = Callable[..., CompletedProcess[str]]
CHART = Path(__file__).parent / "charts" / "hello"

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.trireme.io
spec:
  group: example.trireme.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {}
        scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
      additionalPrinterColumns:
        - {name: Replicas, type: integer, jsonPath: .spec.replicas}
        - {name: Size, type: string, jsonPath: .spec.size}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              x-kubernetes-validations:
                - rule: "self.replicas <= self.maxReplicas"
                  message: "replicas must not exceed maxReplicas"
              properties:
                replicas: {type: integer, minimum: 0, default: 1, description: "How many widgets."}
                maxReplicas: {type: integer, default: 10}
                size: {type: string, enum: [small, large]}
            status:
              type: object
              properties:
                replicas: {type: integer}
"""


@pytest.fixture
def ns(kubectl: Run) -> Iterator[str]:
    name = f"k-{uuid.uuid4().hex[:8]}"
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def widget_crd(kubectl: Run) -> str:
    kubectl("apply", "-f", "-", input=CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.example.trireme.io", "--timeout=20s")
    return "widgets.example.trireme.io"


def widget(name: str, **spec: object) -> str:
    return json.dumps({"apiVersion": "example.trireme.io/v1", "kind": "Widget", "metadata": {"name": name},
                       "spec": spec})


def test_nodes_carry_gpu_labels(kubectl: Run) -> None:
    out = kubectl("get", "nodes", "-L", "nvidia.com/gpu.product").stdout
    assert "GPU.PRODUCT" in out and "Ready" in out
    node = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"][0]
    assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) >= 1


def test_apply_get_describe_delete_pod(kubectl: Run, ns: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "ports": [{"containerPort": 80}]}]}}
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod))
    assert "unchanged" in kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod)).stdout
    pod["metadata"]["labels"]["tier"] = "front"
    assert "configured" in kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod)).stdout
    table = kubectl("get", "pods", "-n", ns).stdout
    assert table.splitlines()[0].split()[:3] == ["NAME", "READY", "STATUS"] and "web" in table
    assert "tier=front" in kubectl("get", "pods", "-n", ns, "--show-labels").stdout
    assert "Containers:" in kubectl("describe", "pod", "web", "-n", ns).stdout
    kubectl("delete", "pod", "web", "-n", ns, "--wait=true", "--timeout=30s")
    assert "web" not in kubectl("get", "pods", "-n", ns).stdout


def test_wait_for_a_bound_pod_to_be_ready(kubectl: Run, ns: str) -> None:
    node = kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:1.36"}]}}
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod))
    kubectl("wait", "-n", ns, "--for=condition=Ready", "pod/sleeper", "--timeout=30s")
    wide = kubectl("get", "pod", "sleeper", "-n", ns, "-o", "wide").stdout
    assert node in wide and "127." in wide


def test_custom_resources_apply_get_scale(kubectl: Run, ns: str, widget_crd: str) -> None:
    kubectl("apply", "-n", ns, "-f", "-", input=widget("w1", size="small"))
    got = json.loads(kubectl("get", "widget", "w1", "-n", ns, "-o", "json").stdout)
    assert got["spec"] == {"size": "small", "replicas": 1, "maxReplicas": 10}  # defaults applied
    header = kubectl("get", "wd", "-n", ns).stdout.splitlines()[0].split()
    assert header == ["NAME", "REPLICAS", "SIZE"]  # kube-apiserver adds no Age when columns are given
    kubectl("scale", "widget/w1", "-n", ns, "--replicas=3")
    assert kubectl("get", "widget", "w1", "-n", ns, "-o", "jsonpath={.spec.replicas}").stdout == "3"
    explained = kubectl("explain", "widgets.spec.replicas").stdout
    assert "How many widgets." in explained


@pytest.mark.parametrize("spec, message", [
    pytest.param({"size": "medium"}, 'spec.size: Unsupported value: "medium"', id="enum"),
    pytest.param({"size": "small", "replicas": -1}, "spec.replicas: Invalid value: -1", id="minimum"),
    pytest.param({"replicas": 2}, "spec.size: Required value", id="required"),
    pytest.param({"size": "small", "replicas": 20}, "replicas must not exceed maxReplicas", id="cel"),
    pytest.param({"size": "small", "replicas": "two"}, "spec.replicas: Invalid value", id="type"),
])
def test_invalid_custom_resource_is_rejected_naming_the_field(kubectl: Run, ns: str, widget_crd: str,
                                                               spec: dict[str, object], message: str) -> None:
    result = kubectl("apply", "-n", ns, "-f", "-", input=widget("bad", **spec), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "bad" not in kubectl("get", "widgets", "-n", ns).stdout


def test_server_side_apply_is_idempotent_and_detects_conflicts(kubectl: Run, ns: str) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}}
    kubectl("apply", "--server-side", "--field-manager=alice", "-n", ns, "-f", "-", input=json.dumps(cm))
    rv = kubectl("get", "cm", "ssa", "-n", ns, "-o", "jsonpath={.metadata.resourceVersion}").stdout
    kubectl("apply", "--server-side", "--field-manager=alice", "-n", ns, "-f", "-", input=json.dumps(cm))
    assert kubectl("get", "cm", "ssa", "-n", ns, "-o", "jsonpath={.metadata.resourceVersion}").stdout == rv
    other = {**cm, "data": {"a": "2"}}
    clash = kubectl("apply", "--server-side", "--field-manager=bob", "-n", ns, "-f", "-", input=json.dumps(other),
                    check=False)
    assert clash.returncode != 0 and "conflict" in clash.stderr.lower()
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=bob", "-n", ns, "-f", "-",
            input=json.dumps(other))
    assert kubectl("get", "cm", "ssa", "-n", ns, "-o", "jsonpath={.data.a}").stdout == "2"


def test_bad_manifest_fails_with_a_clear_message(kubectl: Run, ns: str) -> None:
    bad_name = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_A_Name"}}
    result = kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(bad_name), check=False)
    assert result.returncode != 0 and "metadata.name" in result.stderr and "RFC 1123" in result.stderr
    unknown = kubectl("apply", "-n", ns, "-f", "-", check=False,
                      input=json.dumps({"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "g"}}))
    assert unknown.returncode != 0 and "Gizmo" in unknown.stderr


def test_helm_install_upgrade_uninstall(helm: Run, kubectl: Run, ns: str) -> None:
    helm("install", "hello", str(CHART), "-n", ns)
    assert kubectl("get", "cm", "hello-config", "-n", ns, "-o", "jsonpath={.data.message}").stdout == "hello"
    helm("upgrade", "hello", str(CHART), "-n", ns, "--set", "message=bonjour,replicas=2")
    assert kubectl("get", "cm", "hello-config", "-n", ns, "-o", "jsonpath={.data.message}").stdout == "bonjour"
    assert kubectl("get", "deploy", "hello", "-n", ns, "-o", "jsonpath={.spec.replicas}").stdout == "2"
    releases = json.loads(helm("list", "-n", ns, "-o", "json").stdout)
    assert [(r["name"], r["revision"]) for r in releases] == [("hello", "2")]
    helm("uninstall", "hello", "-n", ns)
    assert "hello-config" not in kubectl("get", "cm", "-n", ns).stdout
