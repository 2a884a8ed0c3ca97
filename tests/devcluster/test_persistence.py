"""A cluster with a state file survives its own restart.

Objects written before a stop come back after a start on the same state file
(on a new port) with the same uid and resourceVersion; custom resources are
served again from their stored CustomResourceDefinition; new writes continue
the resourceVersion sequence. Watch history does not survive: a watch from a
version older than the restart gets 410 Gone (reason Expired) and must relist,
as from a kube-apiserver whose watch cache starts at the current revision after
a restart, while a watch from the newest version before the stop goes on
seeing changes. Continue tokens from before the restart are expired likewise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from trireme.devcluster.background import BackgroundCluster
from trireme.devcluster.cluster import ClusterSettings
from trireme.devcluster.kubelet import KubeletSettings
from trireme.devcluster.testing import wait_for

Obj = dict[str, Any]

GROUP = "persist.example.com"
CRD_NAME = f"sprockets.{GROUP}"
NS = "keep"
PATHS = {
    "namespace": f"/api/v1/namespaces/{NS}",
    "configmap": f"/api/v1/namespaces/{NS}/configmaps/cm",
    "crd": f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}",
    "sprocket": f"/apis/{GROUP}/v1/namespaces/{NS}/sprockets/s1",
    "service": f"/api/v1/namespaces/{NS}/services/svc",
}


def settings(state: Path, work: Path) -> ClusterSettings:
    return ClusterSettings(state_file=state, work_dir=work, port=0, prometheus=False,
                           kubelet=KubeletSettings(mode="simulated", simulated_start_delay_s=0.1))


def post(url: str, path: str, body: Obj) -> Obj:
    response = requests.post(url + path, json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def sprocket_crd() -> Obj:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "teeth": {"type": "integer", "minimum": 1}}}}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": CRD_NAME},
            "spec": {"group": GROUP, "scope": "Namespaced",
                     "names": {"plural": "sprockets", "singular": "sprocket", "kind": "Sprocket"},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": schema},
                                   "additionalPrinterColumns": [{"name": "Teeth", "type": "integer",
                                                                 "jsonPath": ".spec.teeth"}]}]}}


def populate(url: str) -> str:
    """Create the objects; return a continue token taken before the last write."""
    post(url, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    post(url, f"/api/v1/namespaces/{NS}/configmaps",
         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"app": "keep"}},
          "data": {"k": "v"}})
    post(url, f"/api/v1/namespaces/{NS}/services",
         {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
          "spec": {"selector": {"app": "keep"}, "ports": [{"port": 80}]}})
    post(url, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", sprocket_crd())
    wait_for(lambda: requests.get(f"{url}/apis/{GROUP}/v1", timeout=10).status_code == 200,
             what="the sprocket CRD to be served")
    page = requests.get(url + "/api/v1/namespaces?limit=1", timeout=10).json()
    post(url, f"/apis/{GROUP}/v1/namespaces/{NS}/sprockets",
         {"apiVersion": f"{GROUP}/v1", "kind": "Sprocket", "metadata": {"name": "s1"}, "spec": {"teeth": 12}})
    return str(page["metadata"]["continue"])


@dataclass
class Restarted:
    """The cluster after a restart, and what was seen before it."""

    cluster: BackgroundCluster
    url: str
    before: dict[str, Obj]
    last_rv: int
    """The store's resourceVersion when the first cluster stopped."""
    old_continue: str
    """A continue token of a list made before the last write before the stop."""


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restarted]:
    work = tmp_path_factory.mktemp("persistence")
    state = work / "state.json"
    first = BackgroundCluster(settings(state, work / "first"))
    first.start()
    try:
        url = first.cluster.url
        old_continue = populate(url)
        before = {what: requests.get(url + path, timeout=10).json() for what, path in PATHS.items()}
    finally:
        first.stop()
    last_rv = first.cluster.store.resource_version
    assert state.exists()
    second = BackgroundCluster(settings(state, work / "second"))
    second.start()
    try:
        yield Restarted(second, second.cluster.url, before, last_rv, old_continue)
    finally:
        second.stop()


@pytest.mark.parametrize("what", list(PATHS))
def test_objects_come_back_unchanged(restarted: Restarted, what: str) -> None:
    response = requests.get(restarted.url + PATHS[what], timeout=10)
    assert response.status_code == 200, response.text
    after, before = response.json(), restarted.before[what]
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after == before


def test_the_custom_resource_is_served_again(restarted: Restarted) -> None:
    discovery = requests.get(f"{restarted.url}/apis/{GROUP}/v1", timeout=10).json()
    assert [(r["name"], r["kind"]) for r in discovery["resources"]] == [("sprockets", "Sprocket")]
    groups = requests.get(f"{restarted.url}/apis", timeout=10).json()["groups"]
    assert GROUP in [g["name"] for g in groups]
    items = requests.get(f"{restarted.url}/apis/{GROUP}/v1/sprockets", timeout=10).json()["items"]
    assert [(i["metadata"]["name"], i["spec"]) for i in items] == [("s1", {"teeth": 12})]
    invalid = requests.post(f"{restarted.url}/apis/{GROUP}/v1/namespaces/{NS}/sprockets", timeout=10,
                            json={"apiVersion": f"{GROUP}/v1", "kind": "Sprocket", "metadata": {"name": "s0"},
                                  "spec": {"teeth": 0}})
    assert invalid.status_code == 422 and "spec.teeth" in invalid.json()["message"]


def test_kubectl_gets_the_custom_resource_after_restart(restarted: Restarted) -> None:
    binary = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if not binary:
        pytest.skip("kubectl is not installed: run scripts/install-tools.sh")
    env = {**os.environ, "KUBECONFIG": str(restarted.cluster.cluster.kubeconfig_path)}
    result = subprocess.run([binary, "get", "sprockets", "-n", NS], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    # with additionalPrinterColumns, the columns are Name and those (no Age), as for kube-apiserver
    assert result.stdout.split() == ["NAME", "TEETH", "s1", "12"]


def test_new_writes_get_higher_resource_versions(restarted: Restarted) -> None:
    created = post(restarted.url, f"/api/v1/namespaces/{NS}/configmaps",
                   {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-restart"}})
    assert int(created["metadata"]["resourceVersion"]) > restarted.last_rv
    old_rvs = [int(o["metadata"]["resourceVersion"]) for o in restarted.before.values()]
    assert int(created["metadata"]["resourceVersion"]) > max(old_rvs)
    uids = {o["metadata"]["uid"] for o in restarted.before.values()}
    assert created["metadata"]["uid"] not in uids


def test_new_service_gets_an_unused_cluster_ip(restarted: Restarted) -> None:
    created = post(restarted.url, f"/api/v1/namespaces/{NS}/services",
                   {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc2"},
                    "spec": {"ports": [{"port": 80}]}})
    assert created["spec"]["clusterIP"] != restarted.before["service"]["spec"]["clusterIP"]


def watch_events(url: str, path: str, rv: int | str, until: Callable[[list[Obj]], bool],
                 once_open: Callable[[], object] = lambda: None) -> list[Obj]:
    """Read a watch's events until ``until(events)`` or the server's 5 s timeout;
    ``once_open`` runs when the server has started the watch (its headers arrived)."""
    events: list[Obj] = []
    with requests.get(f"{url}{path}?watch=1&resourceVersion={rv}&timeoutSeconds=5", stream=True,
                      timeout=10) as response:
        assert response.status_code == 200, response.text
        once_open()
        for line in response.iter_lines():
            if line:
                events.append(json.loads(line))
                if until(events):
                    break
    return events


def test_watch_from_before_the_restart_is_gone(restarted: Restarted) -> None:
    oldest_seen = min(int(o["metadata"]["resourceVersion"]) for o in restarted.before.values())
    events = watch_events(restarted.url, f"/api/v1/namespaces/{NS}/configmaps", oldest_seen - 1,
                          until=lambda e: True)
    assert len(events) == 1 and events[0]["type"] == "ERROR", events
    status = events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired"), status
    assert "too old resource version" in status["message"]


def test_list_continue_from_before_the_restart_is_gone(restarted: Restarted) -> None:
    response = requests.get(f"{restarted.url}/api/v1/namespaces?limit=1&continue={restarted.old_continue}",
                            timeout=10)
    assert response.status_code == 410, response.text
    status = response.json()
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Expired", 410)
    assert "continue parameter is too old" in status["message"]


def test_watch_from_the_last_version_sees_new_changes(restarted: Restarted) -> None:
    path = f"/api/v1/namespaces/{NS}/configmaps"

    def write() -> None:
        post(restarted.url, path, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seen-by-watch"}})
    events = watch_events(restarted.url, path, restarted.last_rv, once_open=write,
                          until=lambda e: any(x["object"]["metadata"].get("name") == "seen-by-watch" for x in e))
    assert all(e["type"] in ("ADDED", "MODIFIED", "DELETED") for e in events), events
    assert ("ADDED", "seen-by-watch") in [(e["type"], e["object"]["metadata"]["name"]) for e in events]
