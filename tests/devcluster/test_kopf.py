"""A tiny kopf operator, run as its own process, reacts to a custom resource on
the local cluster: create, update and delete, also after its watches were cut."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from trireme.devcluster.aio import interrupt
from trireme.devcluster.testing import wait_for

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.example.trireme.io"},
    "spec": {"group": "example.trireme.io", "scope": "Namespaced",
             "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {
                               "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}

OPERATOR = textwrap.dedent('''
    import kopf

    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_):
        settings.watching.server_timeout = 3       # reconnect often: resuming watches is under test
        settings.persistence.finalizer = "example.trireme.io/kopf-finalizer"

    @kopf.on.create("example.trireme.io", "v1", "gadgets")
    def created(spec, **_):
        return {"size": spec.get("size")}

    @kopf.on.update("example.trireme.io", "v1", "gadgets")
    def updated(spec, patch, **_):
        patch.status["seenSize"] = spec.get("size")

    @kopf.on.delete("example.trireme.io", "v1", "gadgets")
    def deleted(name, namespace, **_):
        import kubernetes
        kubernetes.config.load_kube_config()
        kubernetes.client.CoreV1Api().create_namespaced_config_map(namespace, {
            "metadata": {"name": f"deleted-{name}"}, "data": {}})
''')


@pytest.fixture
def operator_process(kubeconfig: Path, kubectl: Callable[..., Any], tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    kubectl("apply", "-f", "-", input=json.dumps(CRD))
    kubectl("wait", "--for=condition=Established", "crd/gadgets.example.trireme.io", "--timeout=20s")
    source = tmp_path / "operator.py"
    source.write_text(OPERATOR)
    log = open(tmp_path / "kopf.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
                                str(source)], env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                               stdout=log, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        yield process
    finally:
        interrupt(process, timeout_s=20)
        log.close()


def test_kopf_operator_handles_create_update_delete_across_watch_reconnects(
        operator_process: subprocess.Popen[str], kubectl: Callable[..., Any], background_cluster: Any,
        tmp_path: Path) -> None:
    ns = f"kopf-{uuid.uuid4().hex[:6]}"
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
    gadget = {"apiVersion": "example.trireme.io/v1", "kind": "Gadget", "metadata": {"name": "g1", "namespace": ns},
              "spec": {"size": "small"}}

    def status() -> dict[str, Any]:
        out = kubectl("get", "gadget", "g1", "-n", ns, "-o", "json", check=False)
        return json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}

    kubectl("apply", "-f", "-", input=json.dumps(gadget))
    try:
        wait_for(lambda: status().get("created", {}).get("size") == "small", what="the create handler")
        # cut every watch the operator holds, as an API server restart or a load balancer would
        store = background_cluster.cluster.store
        background_cluster.call(lambda: [w.close() for ws in list(store._watchers.values()) for w in list(ws)])
        gadget["spec"]["size"] = "large"
        kubectl("apply", "-f", "-", input=json.dumps(gadget))
        wait_for(lambda: status().get("seenSize") == "large", what="the update handler after a reconnect")
        kubectl("delete", "gadget", "g1", "-n", ns, "--timeout=30s")
        wait_for(lambda: kubectl("get", "cm", "deleted-g1", "-n", ns, check=False).returncode == 0,
                 what="the delete handler")
        assert kubectl("get", "gadget", "g1", "-n", ns, check=False).returncode != 0  # finalizer removed
    except AssertionError:
        print((tmp_path / "kopf.log").read_text()[-4000:])
        raise
    assert operator_process.poll() is None, "the operator died"
