"""The store and the selectors on their own: label selector grammar and its
errors, field selectors, structured selectors, and the store's invariants —
resourceVersions only grow, a watch from version R replays exactly what came
after R, continue tokens page through a list exactly once, and a saved store
loads back with its objects but no history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trireme.devcluster.errors import ApiError
from trireme.devcluster.registry import DeleteOptions, Registry, WriteOptions
from trireme.devcluster.selectors import field_predicate, label_predicate, match_label_selector
from trireme.devcluster.store import Event, Store, StoreSettings

Obj = dict[str, Any]


def labelled(labels: dict[str, str]) -> Obj:
    return {"metadata": {"name": "o", "labels": labels}}


# -- label selectors ---------------------------------------------------------------

LABEL_MATCHES = [
    ("app=web", {"app": "web"}, True),
    ("app=web", {"app": "db"}, False),
    ("app=web", {}, False),
    ("app==web", {"app": "web"}, True),
    ("app!=web", {"app": "db"}, True),
    ("app!=web", {}, True),
    ("app!=web", {"app": "web"}, False),
    ("app in (web,db)", {"app": "db"}, True),
    ("app in (web, db)", {"app": "api"}, False),
    ("app in (web,db)", {}, False),
    ("app in (web,)", {"app": ""}, True),
    ("app notin (web)", {"app": "db"}, True),
    ("app notin (web)", {}, True),
    ("app notin (web)", {"app": "web"}, False),
    ("app", {"app": ""}, True),
    ("app", {"tier": "front"}, False),
    ("!app", {"tier": "front"}, True),
    ("!app", {"app": "web"}, False),
    ("app=web,tier=front", {"app": "web", "tier": "front"}, True),
    ("app=web,tier=front", {"app": "web"}, False),
    ("app=web,!legacy", {"app": "web", "legacy": "1"}, False),
    ("app in (web),tier notin (db,cache)", {"app": "web", "tier": "front"}, True),
    ("app=", {"app": ""}, True),
    ("app=", {"app": "web"}, False),
    ("  app  =  web  ", {"app": "web"}, True),
    ("App=Web", {"app": "web"}, False),
    ("App=Web", {"App": "Web"}, True),
    ("example.com/app=web", {"example.com/app": "web"}, True),
    ("trireme.io/gpus in (a_b,c.d,e-f)", {"trireme.io/gpus": "c.d"}, True),
    ("count>3", {"count": "5"}, True),
    ("count>3", {"count": "3"}, False),
    ("count>3", {"count": "many"}, False),
    ("count>3", {}, False),
    ("count<3", {"count": "-1"}, True),
    ("count<3", {"count": "7"}, False),
    ("a=b,a=c", {"a": "b"}, False),
]


@pytest.mark.parametrize("selector, labels, expected",
                         [pytest.param(s, lbl, e, id=f"{s}|{lbl}") for s, lbl, e in LABEL_MATCHES])
def test_label_selector_matches(selector: str, labels: dict[str, str], expected: bool) -> None:
    predicate = label_predicate(selector)
    assert predicate is not None
    assert predicate(labelled(labels)) is expected


@pytest.mark.parametrize("selector", [None, "", "   "], ids=["none", "empty", "blank"])
def test_empty_label_selector_selects_everything(selector: str | None) -> None:
    assert label_predicate(selector) is None


LABEL_ERRORS = [
    ("app in web", "unable to parse requirement"),
    ("app in (web", "unable to parse requirement"),
    ("app notin web)", "unable to parse requirement"),
    ("app web", "unable to parse requirement"),
    ("app=web=db", "unable to parse requirement"),
    ("app in ()", "values set can't be empty"),
    ("!app=web", "'!' only tests that a label is absent"),
    ("!app in (web)", "'!' only tests that a label is absent"),
    ("-app=web", 'key: Invalid value: "-app": name part must consist'),
    ("app_=web", "name part must consist"),
    ("a/b/c=x", "a qualified name must consist"),
    ("/app=x", "prefix part must be non-empty"),
    ("Example.com/app=x", "prefix part a lowercase RFC 1123 subdomain"),
    ("a" * 64, "name part must be no more than 63 characters"),
    ("app=-web", 'values[0]: Invalid value: "-web": a valid label must be'),
    ("app in (web,-db)", 'values[1]: Invalid value: "-db"'),
    ("app=" + "v" * 64, "must be no more than 63 characters"),
    ("count>x", "for 'Gt', 'Lt' operators, the value must be an integer"),
    ("count<1.5", "the value must be an integer"),
    ("app=web,", "found '', expected: identifier after ','"),
    (",app=web", "found ',', expected: !, identifier"),
    ("app=web,,tier=x", "identifier after ','"),
]


@pytest.mark.parametrize("selector, says", [pytest.param(s, m, id=s[:40]) for s, m in LABEL_ERRORS])
def test_label_selector_errors(selector: str, says: str) -> None:
    with pytest.raises(ApiError) as err:
        label_predicate(selector)
    assert (err.value.code, err.value.reason) == (400, "BadRequest")
    assert says in err.value.message


STRUCTURED = [
    (None, {"app": "web"}, False),
    ({}, {"app": "web"}, True),
    ({"matchLabels": {"app": "web"}}, {"app": "web", "x": "y"}, True),
    ({"matchLabels": {"app": "web"}}, {"app": "db"}, False),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}, {"app": "db"}, True),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, {}, False),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, {}, True),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, {"app": "web"}, False),
    ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, {"app": ""}, True),
    ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, {"app": ""}, False),
    ({"matchLabels": {"app": "web"},
      "matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"app": "web"}, False),
]


@pytest.mark.parametrize("selector, labels, expected",
                         [pytest.param(s, lbl, e, id=f"{s}|{lbl}") for s, lbl, e in STRUCTURED])
def test_structured_label_selector(selector: Obj | None, labels: dict[str, str], expected: bool) -> None:
    assert match_label_selector(selector, labels) is expected


# -- field selectors ---------------------------------------------------------------

POD: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "ns"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always"}, "status": {"phase": "Running"}}
UNBOUND: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p2", "namespace": "ns"}, "spec": {}}
NODE: Obj = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"unschedulable": True}}
EVENT: Obj = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "ns"},
              "involvedObject": {"kind": "Pod", "name": "p1"}, "reason": "Scheduled", "type": "Normal"}

FIELD_MATCHES = [
    ("metadata.name=p1", POD, True),
    ("metadata.name==p1", POD, True),
    ("metadata.name!=p1", POD, False),
    ("metadata.namespace=ns", POD, True),
    ("spec.nodeName=n1", POD, True),
    ("spec.nodeName=n1", UNBOUND, False),
    ("spec.nodeName=", UNBOUND, True),
    ("spec.nodeName!=", POD, True),
    ("status.phase=Running,spec.nodeName=n1", POD, True),
    ("status.phase=Running,spec.nodeName=n2", POD, False),
    ("status.phase!=Succeeded,status.phase!=Failed", POD, True),
    ("spec.restartPolicy=Always", POD, True),
    ("metadata.name=p1,", POD, True),
    (" metadata.name = p1 ", POD, True),
    ("spec.unschedulable=true", NODE, True),
    ("spec.unschedulable=false", NODE, False),
    ("involvedObject.name=p1,involvedObject.kind=Pod", EVENT, True),
    ("reason=Scheduled,type=Normal", EVENT, True),
]


@pytest.mark.parametrize("selector, obj, expected",
                         [pytest.param(s, o, e, id=f"{s}|{o['metadata']['name']}") for s, o, e in FIELD_MATCHES])
def test_field_selector_matches(selector: str, obj: Obj, expected: bool) -> None:
    predicate = field_predicate(selector, obj["kind"])
    assert predicate is not None
    assert predicate(obj) is expected


@pytest.mark.parametrize("selector, says", [
    pytest.param("spec.color=red", "field label not supported: spec.color", id="unsupported-field"),
    pytest.param("metadata.name", "invalid field selector term", id="no-operator"),
    pytest.param("metadata.name in (a,b)", "invalid field selector term", id="set-operator"),
    pytest.param("metadata-name=a", "invalid field selector term", id="bad-field-name"),
])
def test_field_selector_errors(selector: str, says: str) -> None:
    with pytest.raises(ApiError) as err:
        field_predicate(selector, "Pod")
    assert (err.value.code, err.value.reason) == (400, "BadRequest")
    assert says in err.value.message


# -- the store: versions and watch replay ---------------------------------------------

KEYS = [("", "configmaps"), ("apps", "deployments")]
Op = tuple[str, int, str, str, int]
ops_strategy = st.lists(st.tuples(st.sampled_from(["create", "update", "delete"]), st.integers(0, 1),
                                  st.sampled_from(["a", "b"]), st.sampled_from(["x", "y", "z"]),
                                  st.integers(0, 9)), max_size=40)


def apply(store: Store, ops: list[Op]) -> list[int]:
    """Run the writes (failures included) and return the versions of the ones that succeeded."""
    versions = []
    for op, key_index, ns, name, value in ops:
        key = KEYS[key_index]
        obj = {"metadata": {"name": name, "namespace": ns}, "data": {"v": str(value)}}
        before = store.resource_version
        try:
            if op == "create":
                stored = store.create(key, obj)
            elif op == "update":
                stored = store.update(key, obj)
            else:
                stored = store.delete(key, ns, name)
        except ApiError as exc:
            assert exc.code in (404, 409)
            assert store.resource_version == before, "a failed write must not take a version"
            continue
        versions.append(int(stored["metadata"]["resourceVersion"]))
        assert store.resource_version == versions[-1]
    return versions


@given(ops_strategy)
def test_resource_versions_strictly_increase(ops: list[Op]) -> None:
    store = Store()
    events: list[Event] = []
    store.add_listener(events.append)
    versions = apply(store, ops)
    assert all(a < b for a, b in zip(versions, versions[1:]))
    assert [e.rv for e in events] == versions
    assert all(int(e.obj["metadata"]["resourceVersion"]) == e.rv for e in events)
    for key in KEYS:
        for obj in store.items(key):
            assert int(obj["metadata"]["resourceVersion"]) <= store.resource_version


def summary(events: list[Event]) -> list[tuple[str, str, str, int]]:
    return [(e.type, e.obj["metadata"]["namespace"], e.obj["metadata"]["name"], e.rv) for e in events]


@given(ops_strategy, ops_strategy, st.sampled_from([None, "a"]))
def test_watch_replays_exactly_the_events_after_its_version(before: list[Op], after: list[Op],
                                                            namespace: str | None) -> None:
    store = Store()
    events: list[Event] = []
    store.add_listener(events.append)
    apply(store, before)
    since = store.resource_version
    apply(store, after)
    key = KEYS[0]
    watcher, replay = store.watch(key, namespace, since)
    try:
        expected = [e for e in events if e.rv > since and e.key == key
                    and (namespace is None or e.obj["metadata"]["namespace"] == namespace)]
        assert summary(replay) == summary(expected)
    finally:
        watcher.close()


@given(ops_strategy)
def test_watch_without_version_starts_with_the_current_objects(ops: list[Op]) -> None:
    store = Store()
    apply(store, ops)
    watcher, replay = store.watch(KEYS[1], None, None)
    try:
        assert [e.type for e in replay] == ["ADDED"] * len(replay)
        assert [e.obj for e in replay] == list(store.items(KEYS[1]))
    finally:
        watcher.close()


@given(ops_strategy, st.integers(1, 8), st.data())
def test_watch_older_than_the_history_is_gone(ops: list[Op], history: int, data: st.DataObject) -> None:
    store = Store(StoreSettings(history_size=history))
    events: list[Event] = []
    store.add_listener(events.append)
    apply(store, ops)
    since = data.draw(st.integers(0, store.resource_version), label="since")
    kept = events[-history:]
    reachable = not events or len(events) <= history or since >= kept[0].rv - 1
    if not reachable:
        with pytest.raises(ApiError) as err:
            store.watch(KEYS[0], None, since)
        assert (err.value.code, err.value.reason) == (410, "Expired")
        return
    watcher, replay = store.watch(KEYS[0], None, since)
    watcher.close()
    assert summary(replay) == summary([e for e in events if e.rv > since and e.key == KEYS[0]])


def test_watch_sees_later_writes_through_its_selector() -> None:
    store = Store()
    watcher, replay = store.watch(KEYS[0], "a", None, lambda o: (o.get("metadata", {}).get("labels") or {})
                                  .get("app") == "web")
    assert replay == []
    meta = {"name": "x", "namespace": "a"}
    store.create(KEYS[0], {"metadata": {**meta, "labels": {"app": "db"}}})
    store.update(KEYS[0], {"metadata": {**meta, "labels": {"app": "web"}}})
    store.create(KEYS[0], {"metadata": {"name": "y", "namespace": "b", "labels": {"app": "web"}}})
    store.update(KEYS[0], {"metadata": {**meta, "labels": {"app": "web"}}, "data": {}})
    store.update(KEYS[0], {"metadata": {**meta, "labels": {}}})
    seen = []
    while not watcher.queue.empty():
        event = watcher.queue.get_nowait()
        assert event is not None
        seen.append((event.type, event.obj["metadata"]["name"]))
    watcher.close()
    # entering the selector is ADDED, leaving it is DELETED, as for a real watch with selectors
    assert seen == [("ADDED", "x"), ("MODIFIED", "x"), ("DELETED", "x")]


# -- paging ----------------------------------------------------------------------------

NAMESPACES = ("ns-a", "ns-b", "ns-c")


def registry_with(names: list[tuple[str, str]]) -> tuple[Registry, Any]:
    registry = Registry(Store())
    rt = registry.resolve("", "v1", "configmaps")
    for ns in NAMESPACES:
        registry.create(registry.resolve("", "v1", "namespaces"), "",
                        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, WriteOptions())
    for index, (ns, name) in enumerate(names):
        registry.create(rt, ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": name, "labels": {"parity": str(index % 2)}}}, WriteOptions())
    return registry, rt


def page_through(registry: Registry, rt: Any, limit: int, selector: str | None = None,
                 between_pages: Any = None) -> list[list[tuple[str, str]]]:
    pages, token = [], None
    while True:
        result = registry.list(rt, None, selector, None, limit, token)
        pages.append([(o["metadata"]["namespace"], o["metadata"]["name"]) for o in result.items])
        assert len(result.items) <= limit
        if result.continue_token is None:
            assert result.remaining is None
            return pages
        # like kube-apiserver, what is left is counted only when no selector filters the list
        assert (result.remaining is None) if selector else (result.remaining is not None and result.remaining > 0)
        token = result.continue_token
        if between_pages is not None:
            between_pages(len(pages))


names_strategy = st.lists(st.tuples(st.sampled_from(NAMESPACES),
                                    st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)),
                          unique=True, max_size=25)


@settings(max_examples=60, deadline=None)
@given(names_strategy, st.integers(1, 10), st.sampled_from([None, "parity=0", "parity!=0"]))
def test_continue_tokens_page_through_everything_once(names: list[tuple[str, str]], limit: int,
                                                      selector: str | None) -> None:
    registry, rt = registry_with(names)
    pages = page_through(registry, rt, limit, selector)
    seen = [item for page in pages for item in page]
    everything = registry.list(rt, None, selector).items
    assert seen == [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in everything]
    assert len(seen) == len(set(seen))
    assert all(len(page) == limit for page in pages[:-1])


@settings(max_examples=40, deadline=None)
@given(names_strategy, st.integers(1, 5))
def test_writes_between_pages_never_repeat_an_item(names: list[tuple[str, str]], limit: int) -> None:
    """Objects present throughout appear exactly once, whatever is created or deleted meanwhile."""
    registry, rt = registry_with(names)
    deleted = set(names[1::3])
    pending = sorted(deleted)

    def churn(page: int) -> None:
        if pending:
            ns, name = pending.pop()
            registry.delete(rt, ns, name, DeleteOptions())
        registry.create(rt, "ns-b", {"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": f"new-{page}"}}, WriteOptions())
    pages = page_through(registry, rt, limit, between_pages=churn)
    seen = [item for page in pages for item in page]
    assert len(seen) == len(set(seen))
    assert set(names) - deleted <= set(seen)


def test_continue_token_older_than_the_history_is_expired() -> None:
    registry = Registry(Store(StoreSettings(history_size=3)))
    rt = registry.resolve("", "v1", "configmaps")
    for index in range(3):
        registry.create(rt, "default", {"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": f"c{index}"}}, WriteOptions())
    token = registry.list(rt, None, limit=1).continue_token
    for index in range(5):
        registry.create(rt, "default", {"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": f"d{index}"}}, WriteOptions())
    with pytest.raises(ApiError) as err:
        registry.list(rt, None, limit=1, continue_token=token)
    assert (err.value.code, err.value.reason) == (410, "Expired")
    assert "continue parameter is too old" in err.value.message


@pytest.mark.parametrize("token", ["not-a-token", "e30", "eyJydiI6ICJ4In0"], ids=["garbage", "empty-object",
                                                                               "rv-not-a-number"])
def test_malformed_continue_token_is_a_bad_request(token: str) -> None:
    registry, rt = registry_with([("ns-a", "a")])
    with pytest.raises(ApiError) as err:
        registry.list(rt, None, limit=1, continue_token=token)
    assert (err.value.code, err.value.reason) == (400, "BadRequest")


# -- persistence -------------------------------------------------------------------------

@given(ops_strategy)
@settings(max_examples=30, deadline=None)
def test_saved_store_loads_back_without_history(tmp_path_factory: pytest.TempPathFactory, ops: list[Op]) -> None:
    store = Store()
    apply(store, ops)
    path = tmp_path_factory.mktemp("state") / "state.json"
    store.save(path)
    assert not store.dirty
    loaded = Store()
    loaded.load(path)
    assert loaded.resource_version == store.resource_version
    for key in KEYS:
        assert list(loaded.items(key)) == list(store.items(key))
    if store.resource_version:
        with pytest.raises(ApiError) as err:
            loaded.watch(KEYS[0], None, store.resource_version - 1)
        assert err.value.code == 410
    watcher, replay = loaded.watch(KEYS[0], None, store.resource_version)
    watcher.close()
    assert replay == []
    created = loaded.create(KEYS[0], {"metadata": {"name": "after", "namespace": "a"}})
    assert int(created["metadata"]["resourceVersion"]) == store.resource_version + 1


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = Store()
    store.create(KEYS[0], {"metadata": {"name": "x", "namespace": "a"}})
    store.save(tmp_path / "state.json")
    store.save(tmp_path / "state.json")
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]

