"""The kubernetes Python client against the local API server: CRUD, the patch
types, selectors, optimistic concurrency, watch resume, 410 Gone, bookmarks,
finalizers and garbage collection — the calls Trireme's operator makes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from trireme.devcluster.testing import wait_for


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name)
    except ApiException:
        pass


def configmap(name: str, labels: dict[str, str] | None = None, data: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}},
            "data": data or {}}


def test_create_get_replace_delete(core: client.CoreV1Api, namespace: str) -> None:
    created = core.create_namespaced_config_map(namespace, configmap("a", data={"k": "v"}))
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp
    got = core.read_namespaced_config_map("a", namespace)
    assert got.data == {"k": "v"}
    got.data["k"] = "w"
    replaced = core.replace_namespaced_config_map("a", namespace, got)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    core.delete_namespaced_config_map("a", namespace)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("a", namespace)
    assert err.value.status == 404


def test_create_twice_is_already_exists(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, configmap("dup"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(namespace, configmap("dup"))
    assert err.value.status == 409 and "AlreadyExists" in err.value.body


def test_stale_resource_version_is_a_conflict(core: client.CoreV1Api, namespace: str) -> None:
    first = core.create_namespaced_config_map(namespace, configmap("c", data={"n": "1"}))
    core.patch_namespaced_config_map("c", namespace, {"data": {"n": "2"}})
    first.data = {"n": "3"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("c", namespace, first)
    assert err.value.status == 409
    assert "the object has been modified" in err.value.body
    assert core.read_namespaced_config_map("c", namespace).data == {"n": "2"}


@pytest.mark.parametrize("patch, content_type, expected", [
    pytest.param({"data": {"b": "2", "a": None}}, "application/merge-patch+json", {"b": "2"}, id="merge"),
    pytest.param([{"op": "add", "path": "/data/b", "value": "2"}, {"op": "remove", "path": "/data/a"}],
                 "application/json-patch+json", {"b": "2"}, id="json"),
    pytest.param({"data": {"b": "2"}}, "application/strategic-merge-patch+json", {"a": "1", "b": "2"},
                 id="strategic"),
])
def test_patch_types(core: client.CoreV1Api, namespace: str, patch: Any, content_type: str,
                     expected: dict[str, str]) -> None:
    core.create_namespaced_config_map(namespace, configmap("p", data={"a": "1"}))
    core.patch_namespaced_config_map("p", namespace, patch, _content_type=content_type)
    assert core.read_namespaced_config_map("p", namespace).data == expected


def test_strategic_merge_merges_containers_by_name(core: client.CoreV1Api, namespace: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "smp"},
           "spec": {"containers": [{"name": "a", "image": "busybox:1"}, {"name": "b", "image": "busybox:1"}]}}
    core.create_namespaced_pod(namespace, pod)
    core.patch_namespaced_pod("smp", namespace, {"metadata": {"labels": {"x": "y"}},
                                                 "spec": {"containers": [{"name": "b", "image": "busybox:2"}]}})
    got = core.read_namespaced_pod("smp", namespace)
    assert [(c.name, c.image) for c in got.spec.containers] == [("a", "busybox:1"), ("b", "busybox:2")]
    assert got.metadata.labels == {"x": "y"}


@pytest.mark.parametrize("selector, expected", [
    pytest.param("app=web", ["w1", "w2"], id="equals"),
    pytest.param("app!=web", ["d1", "n1"], id="not-equals"),
    pytest.param("app in (web,db)", ["d1", "w1", "w2"], id="in"),
    pytest.param("app notin (web)", ["d1", "n1"], id="notin"),
    pytest.param("tier", ["w1"], id="exists"),
    pytest.param("!app", ["n1"], id="not-exists"),
    pytest.param("app=web,tier=front", ["w1"], id="and"),
])
def test_label_selectors(core: client.CoreV1Api, namespace: str, selector: str, expected: list[str]) -> None:
    for name, labels in [("w1", {"app": "web", "tier": "front"}), ("w2", {"app": "web"}),
                         ("d1", {"app": "db"}), ("n1", {})]:
        core.create_namespaced_config_map(namespace, configmap(name, labels))
    names = [i.metadata.name for i in core.list_namespaced_config_map(namespace, label_selector=selector).items]
    assert names == expected


def test_field_selectors_on_pods(core: client.CoreV1Api, namespace: str) -> None:
    for name, scheduler in [("f1", "trireme"), ("f2", "default-scheduler")]:
        core.create_namespaced_pod(namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                                               "spec": {"schedulerName": scheduler,
                                                        "containers": [{"name": "c", "image": "busybox"}]}})
    got = core.list_namespaced_pod(namespace, field_selector="spec.schedulerName=trireme,spec.nodeName=")
    assert [p.metadata.name for p in got.items] == ["f1"]
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod(namespace, field_selector="spec.bogus=1")
    assert err.value.status == 400 and "field label not supported" in err.value.body


def test_list_pages_with_limit_and_continue(core: client.CoreV1Api, namespace: str) -> None:
    for i in range(7):
        core.create_namespaced_config_map(namespace, configmap(f"page-{i}"))
    seen, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map(namespace, limit=3, _continue=token)
        seen += [i.metadata.name for i in page.items]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
    assert seen == sorted(f"page-{i}" for i in range(7)) and pages == 3


def test_watch_resumes_from_resource_version(core: client.CoreV1Api, namespace: str) -> None:
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, configmap("w1"))
    core.patch_namespaced_config_map("w1", namespace, {"data": {"x": "1"}})
    core.delete_namespaced_config_map("w1", namespace)
    events = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, namespace, resource_version=start, timeout_seconds=2):
        events.append((event["type"], event["object"].metadata.name))
        if len(events) == 3:
            w.stop()
    assert events == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


def test_watch_sees_live_changes(core: client.CoreV1Api, namespace: str) -> None:
    import threading
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    threading.Timer(0.3, lambda: core.create_namespaced_config_map(namespace, configmap("live"))).start()
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, namespace, resource_version=rv, timeout_seconds=10):
        assert (event["type"], event["object"].metadata.name) == ("ADDED", "live")
        w.stop()
        break
    else:
        pytest.fail("no event within the watch timeout")


def test_watch_from_expired_version_is_gone(core: client.CoreV1Api, namespace: str,
                                            background_cluster: Any) -> None:
    store = background_cluster.cluster.store
    oldest = background_cluster.call(lambda: store._oldest_rv)
    if oldest < 2:
        background_cluster.call(lambda: setattr(store, "_oldest_rv", store.resource_version))
    try:
        w = watch.Watch()
        with pytest.raises(ApiException) as err:
            for _ in w.stream(core.list_namespaced_config_map, namespace, resource_version="1", timeout_seconds=2):
                pass
        assert err.value.status == 410
    finally:
        if oldest < 2:
            background_cluster.call(lambda: setattr(store, "_oldest_rv", oldest))


def test_watch_bookmarks(api_client: client.ApiClient, namespace: str, background_cluster: Any) -> None:
    settings = background_cluster.cluster.server.settings
    old = settings.bookmark_interval_s
    settings.bookmark_interval_s = 0.2
    try:
        core = client.CoreV1Api(api_client)
        rv = core.list_namespaced_config_map(namespace).metadata.resource_version
        response = core.list_namespaced_config_map(namespace, watch=True, allow_watch_bookmarks=True,
                                                   resource_version=rv, timeout_seconds=1, _preload_content=False)
        lines = [line for line in response.read().decode().splitlines() if line]
        assert any('"BOOKMARK"' in line for line in lines), lines
    finally:
        settings.bookmark_interval_s = old


def test_finalizers_hold_deletion_until_removed(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, {**configmap("fin"), "metadata": {
        "name": "fin", "finalizers": ["trireme.io/test"]}})
    core.delete_namespaced_config_map("fin", namespace)
    held = core.read_namespaced_config_map("fin", namespace)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("fin", namespace, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("fin", namespace)
    assert err.value.status == 404


@pytest.mark.parametrize("policy, dependent_survives", [
    pytest.param("Background", False, id="background"),
    pytest.param("Foreground", False, id="foreground"),
    pytest.param("Orphan", True, id="orphan"),
])
def test_garbage_collection_by_owner_references(core: client.CoreV1Api, namespace: str, policy: str,
                                                dependent_survives: bool) -> None:
    owner = core.create_namespaced_config_map(namespace, configmap("owner"))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(namespace, {**configmap("dep"), "metadata": {
        "name": "dep", "ownerReferences": [ref]}})
    core.delete_namespaced_config_map("owner", namespace, propagation_policy=policy)

    def owner_gone() -> bool:
        return not any(c.metadata.name == "owner" for c in core.list_namespaced_config_map(namespace).items)
    wait_for(owner_gone, what="the owner to be deleted")
    if dependent_survives:
        dep = wait_for(lambda: (lambda d: d if not d.metadata.owner_references else None)(
            core.read_namespaced_config_map("dep", namespace)), what="the dependent to be orphaned")
        assert dep.metadata.name == "dep"
    else:
        wait_for(lambda: not any(c.metadata.name == "dep" for c in core.list_namespaced_config_map(namespace).items),
                 what="the dependent to be garbage collected")


def test_an_object_created_after_its_owner_was_deleted_is_collected(core: client.CoreV1Api, namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, configmap("late-owner"))
    core.delete_namespaced_config_map("late-owner", namespace)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "late-owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(namespace, {**configmap("late-dep"), "metadata": {
        "name": "late-dep", "ownerReferences": [ref]}})
    core.create_namespaced_config_map(namespace, configmap("bystander"))
    wait_for(lambda: not any(c.metadata.name == "late-dep" for c in core.list_namespaced_config_map(namespace).items),
             what="the dependent of a deleted owner to be garbage collected")
    assert core.read_namespaced_config_map("bystander", namespace).metadata.name == "bystander"


def test_namespace_deletion_removes_its_objects(core: client.CoreV1Api) -> None:
    name = f"gone-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(name, configmap("x"))
    core.delete_namespace(name)
    wait_for(lambda: name not in [n.metadata.name for n in core.list_namespace().items], what="namespace removal")
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(name, configmap("y"))
    assert err.value.status == 404


def test_generation_bumps_on_spec_changes_only(api_client: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api_client)
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                       "template": {"metadata": {"labels": {"app": "d"}},
                                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    created = apps.create_namespaced_deployment(namespace, deploy)
    assert created.metadata.generation == 1
    labelled = apps.patch_namespaced_deployment("d", namespace, {"metadata": {"labels": {"a": "b"}}})
    assert labelled.metadata.generation == 1
    scaled = apps.patch_namespaced_deployment("d", namespace, {"spec": {"replicas": 3}})
    assert scaled.metadata.generation == 2


def test_binding_assigns_node_and_copies_annotations(core: client.CoreV1Api, namespace: str) -> None:
    node = core.list_node().items[0].metadata.name
    core.create_namespaced_pod(namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b"},
                                           "spec": {"schedulerName": "trireme",
                                                    "containers": [{"name": "c", "image": "busybox"}]}})
    core.create_namespaced_binding(namespace, client.V1Binding(
        metadata=client.V1ObjectMeta(name="b", annotations={"trireme.io/gpus": "1"}),
        target=client.V1ObjectReference(kind="Node", name=node)), _preload_content=False)
    pod = core.read_namespaced_pod("b", namespace)
    assert pod.spec.node_name == node
    assert pod.metadata.annotations["trireme.io/gpus"] == "1"
    ready = wait_for(lambda: (lambda p: p if p.status.phase == "Running" else None)(
        core.read_namespaced_pod("b", namespace)), what="the pod to run")
    assert ready.status.pod_ip.startswith("127.")
    with pytest.raises(ApiException) as err:
        core.create_namespaced_binding(namespace, client.V1Binding(
            metadata=client.V1ObjectMeta(name="b"), target=client.V1ObjectReference(kind="Node", name=node)),
            _preload_content=False)
    assert err.value.status == 409


def test_eviction_honours_disruption_budgets(api_client: client.ApiClient, core: client.CoreV1Api,
                                             namespace: str) -> None:
    node = core.list_node().items[0].metadata.name
    for name in ("e1", "e2"):
        core.create_namespaced_pod(namespace, {"apiVersion": "v1", "kind": "Pod",
                                               "metadata": {"name": name, "labels": {"app": "e"}},
                                               "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                                                        "containers": [{"name": "c", "image": "busybox"}]}})
    policy = client.PolicyV1Api(api_client)
    policy.create_namespaced_pod_disruption_budget(namespace, {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "pdb"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "e"}}}})
    wait_for(lambda: (policy.read_namespaced_pod_disruption_budget("pdb", namespace).status or
                      client.V1PodDisruptionBudgetStatus(current_healthy=0, desired_healthy=0,
                                                         disruptions_allowed=0, expected_pods=0))
             .disruptions_allowed == 1, what="the budget to allow one disruption")
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name="e1", namespace=namespace))
    core.create_namespaced_pod_eviction("e1", namespace, eviction)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod_eviction("e2", namespace, client.V1Eviction(
            metadata=client.V1ObjectMeta(name="e2", namespace=namespace)))
    assert err.value.status == 429 and "disruption budget" in err.value.body


@pytest.mark.parametrize("gpus, scheduled", [
    pytest.param(1, True, id="fits"),
    pytest.param(99, False, id="too-many-gpus"),
])
def test_default_scheduler_binds_pods_that_fit(core: client.CoreV1Api, namespace: str, gpus: int,
                                               scheduled: bool) -> None:
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ds"},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                                 "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}})

    def condition() -> Any:
        pod = core.read_namespaced_pod("ds", namespace)
        return next((c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)
    cond = wait_for(condition, what="a scheduling decision")
    reasons = [e.reason for e in core.list_namespaced_event(namespace, field_selector="involvedObject.name=ds").items]
    if scheduled:
        assert cond.status == "True" and core.read_namespaced_pod("ds", namespace).spec.node_name
        assert reasons == ["Scheduled"]
    else:
        assert cond.status == "False" and cond.reason == "Unschedulable" and "99 free nvidia.com/gpu" in cond.message
        assert reasons == ["FailedScheduling"]
