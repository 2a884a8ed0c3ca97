"""Tests for the four patch types, checked against the semantics kube-apiserver documents.

Cases come from RFC 7386 / RFC 6902, from the Kubernetes page "Update API Objects in
Place Using kubectl patch", from what ``kubectl apply`` (client side) sends, and from
the server-side apply documentation (ownership, conflicts, force, pruning).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trireme.devcluster.errors import ApiError
from trireme.devcluster.patch import (
    CRDSchemaLookup,
    SchemaLookup,
    decode_managed_fields,
    fields_v1_to_paths,
    json_patch,
    merge_patch,
    paths_to_fields_v1,
    record_update,
    server_side_apply,
    strategic_merge_patch,
)

T0, T1, T2, T3 = ("2024-05-01T10:00:00Z", "2024-05-01T11:00:00Z", "2024-05-01T12:00:00Z",
                  "2024-05-01T13:00:00Z")
DEPLOYMENT = SchemaLookup.for_kind("apps/v1", "Deployment")
POD = SchemaLookup.for_kind("v1", "Pod")


def directive_keys(value: Any) -> list[str]:
    """Every key starting with '$' anywhere in value (none may be stored)."""
    if isinstance(value, dict):
        return [k for k in value if k.startswith("$")] + [d for v in value.values() for d in directive_keys(v)]
    if isinstance(value, list):
        return [d for item in value for d in directive_keys(item)]
    return []


def content(obj: dict) -> dict:
    """The object without managedFields."""
    stripped = copy.deepcopy(obj)
    stripped.get("metadata", {}).pop("managedFields", None)
    return stripped


def fields_of(obj: dict, manager: str, operation: str = "Apply") -> dict:
    for entry in obj["metadata"].get("managedFields", []):
        if entry["manager"] == manager and entry["operation"] == operation:
            return entry["fieldsV1"]
    raise AssertionError(f"{manager}/{operation} owns nothing in {obj['metadata'].get('managedFields')}")


def managers(obj: dict) -> list[tuple[str, str]]:
    return [(entry["manager"], entry["operation"]) for entry in obj["metadata"].get("managedFields", [])]


def deployment(**spec: Any) -> dict:
    """A Deployment as the Kubernetes docs write it, with spec overrides."""
    base_spec = {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "nginx"}},
        "template": {
            "metadata": {"labels": {"app": "nginx"}},
            "spec": {
                "containers": [{"name": "patch-demo-ctr", "image": "nginx"}],
                "tolerations": [{"effect": "NoSchedule", "key": "dedicated", "value": "test-team"}],
            },
        },
    }
    base_spec.update(spec)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "patch-demo", "namespace": "default"}, "spec": base_spec}


def pod_spec(**spec: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec}


# ---------------------------------------------------------------------------
# JSON merge patch (RFC 7386)
# ---------------------------------------------------------------------------

RFC7386_CASES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    # Kubernetes: a merge patch replaces lists whole, containers included.
    (deployment(), {"spec": {"template": {"spec": {"containers": [{"name": "c2", "image": "redis"}]}}}},
     deployment(template={"metadata": {"labels": {"app": "nginx"}},
                          "spec": {"containers": [{"name": "c2", "image": "redis"}],
                                   "tolerations": [{"effect": "NoSchedule", "key": "dedicated",
                                                    "value": "test-team"}]}})),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7386_CASES,
                         ids=[f"rfc7386-{i}" for i in range(15)] + ["k8s-containers-replaced"])
def test_merge_patch(target, patch, expected):
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    assert merge_patch(target, patch) == expected
    assert (target, patch) == (target_before, patch_before), "inputs must not change"


def test_merge_patch_result_shares_nothing_with_inputs():
    target = {"metadata": {"labels": {"a": "1"}}, "spec": {"x": [1]}}
    patch = {"spec": {"y": {"z": 1}}}
    result = merge_patch(target, patch)
    result["metadata"]["labels"]["a"] = "changed"
    result["spec"]["y"]["z"] = 2
    assert target == {"metadata": {"labels": {"a": "1"}}, "spec": {"x": [1]}}
    assert patch == {"spec": {"y": {"z": 1}}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=3), json_values, max_size=4)


@given(json_objects)
def test_merge_patch_with_empty_patch_is_identity(target):
    assert merge_patch(target, {}) == target


@given(json_objects, json_objects)
def test_merge_patch_is_idempotent(target, patch):
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


# ---------------------------------------------------------------------------
# JSON patch (RFC 6902)
# ---------------------------------------------------------------------------

JSON_PATCH_DOC = {"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 1, "args": ["a", "b"]}}

JSON_PATCH_CASES = [
    ("add", [{"op": "add", "path": "/metadata/labels/tier", "value": "front"}],
     {"metadata": {"labels": {"app": "web", "tier": "front"}}, "spec": {"replicas": 1, "args": ["a", "b"]}}),
    ("add-list-end", [{"op": "add", "path": "/spec/args/-", "value": "c"}],
     {"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 1, "args": ["a", "b", "c"]}}),
    ("remove", [{"op": "remove", "path": "/metadata/labels/app"}],
     {"metadata": {"labels": {}}, "spec": {"replicas": 1, "args": ["a", "b"]}}),
    ("replace", [{"op": "replace", "path": "/spec/replicas", "value": 3}],
     {"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 3, "args": ["a", "b"]}}),
    ("move", [{"op": "move", "from": "/spec/args/0", "path": "/spec/args/1"}],
     {"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 1, "args": ["b", "a"]}}),
    ("copy", [{"op": "copy", "from": "/metadata/labels", "path": "/spec/selector"}],
     {"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 1, "args": ["a", "b"],
                                                        "selector": {"app": "web"}}}),
    ("test-then-replace", [{"op": "test", "path": "/spec/replicas", "value": 1},
                           {"op": "replace", "path": "/spec/replicas", "value": 2}],
     {"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 2, "args": ["a", "b"]}}),
    ("escaped-key", [{"op": "add", "path": "/metadata/labels/example.com~1role", "value": "x"}],
     {"metadata": {"labels": {"app": "web", "example.com/role": "x"}},
      "spec": {"replicas": 1, "args": ["a", "b"]}}),
]


@pytest.mark.parametrize(("ops", "expected"), [case[1:] for case in JSON_PATCH_CASES],
                         ids=[case[0] for case in JSON_PATCH_CASES])
def test_json_patch(ops, expected):
    before = copy.deepcopy(JSON_PATCH_DOC)
    assert json_patch(JSON_PATCH_DOC, ops) == expected
    assert JSON_PATCH_DOC == before


JSON_PATCH_FAILURES = [
    ("remove-missing", [{"op": "remove", "path": "/spec/missing"}], 422, 'operation 0 (remove "/spec/missing")'),
    ("replace-missing", [{"op": "add", "path": "/spec/a", "value": 1},
                         {"op": "replace", "path": "/spec/b", "value": 1}], 422, 'operation 1 (replace "/spec/b")'),
    ("add-under-missing-parent", [{"op": "add", "path": "/status/phase", "value": "x"}], 422, '"/status/phase"'),
    ("test-failed", [{"op": "test", "path": "/spec/replicas", "value": 5}], 422, "test failed"),
    ("index-out-of-range", [{"op": "add", "path": "/spec/args/7", "value": "x"}], 422, '"/spec/args/7"'),
    ("move-from-missing", [{"op": "move", "from": "/spec/nope", "path": "/spec/x"}], 422, 'from "/spec/nope"'),
    ("unknown-op", [{"op": "frobnicate", "path": "/spec"}], 400, "unknown operation 'frobnicate'"),
    ("missing-value", [{"op": "add", "path": "/spec/x"}], 400, 'missing member "value"'),
    ("bad-pointer", [{"op": "remove", "path": "spec/replicas"}], 400, "JSON pointer"),
    ("not-a-list", {"op": "remove", "path": "/spec"}, 400, "list of operations"),
    ("op-not-object", ["remove"], 400, "not an object"),
    ("root-replaced-by-scalar", [{"op": "replace", "path": "", "value": 3}], 422, "must be an object"),
]


@pytest.mark.parametrize(("ops", "code", "words"), [case[1:] for case in JSON_PATCH_FAILURES],
                         ids=[case[0] for case in JSON_PATCH_FAILURES])
def test_json_patch_failures_say_which_operation(ops, code, words):
    with pytest.raises(ApiError) as raised:
        json_patch(JSON_PATCH_DOC, ops)
    assert raised.value.code == code
    assert words in raised.value.message


def test_json_patch_is_all_or_nothing():
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 9}, {"op": "remove", "path": "/nope"}]
    before = copy.deepcopy(JSON_PATCH_DOC)
    with pytest.raises(ApiError):
        json_patch(JSON_PATCH_DOC, ops)
    assert JSON_PATCH_DOC == before


# ---------------------------------------------------------------------------
# Schema lookups
# ---------------------------------------------------------------------------

def test_schema_lookup_reads_merge_keys_and_strategies():
    spec = POD.field("spec")
    containers = spec.field("containers")
    assert (containers.patch_strategies, containers.patch_merge_key) == ({"merge"}, "name")
    assert (containers.list_type, containers.list_map_keys) == ("map", ("name",))
    ports = containers.items().field("ports")
    assert (ports.patch_merge_key, ports.list_map_keys) == ("containerPort", ("containerPort", "protocol"))
    assert spec.field("volumes").patch_strategies == {"merge", "retainKeys"}
    assert spec.field("tolerations").patch_strategies == frozenset()
    assert spec.field("tolerations").list_type == "atomic"
    assert POD.field("metadata").field("finalizers").list_type == "set"
    assert DEPLOYMENT.field("spec").field("selector").map_is_atomic
    assert DEPLOYMENT.field("spec").field("strategy").patch_strategies == {"retainKeys"}
    assert POD.field("metadata").field("labels").field("anything") is not None
    assert POD.field("metadata").declares("labels") and not POD.field("metadata").field("labels").declares("x")
    assert POD.field("nonsense") is None


@pytest.mark.parametrize(("api_version", "kind", "definition"), [
    ("v1", "Pod", "io.k8s.api.core.v1.Pod"),
    ("apps/v1", "Deployment", "io.k8s.api.apps.v1.Deployment"),
    ("policy/v1", "PodDisruptionBudget", "io.k8s.api.policy.v1.PodDisruptionBudget"),
    ("trireme.io/v1alpha1", "TritonModel", None),
    ("v1", "Deployment", None),
], ids=["pod", "deployment", "pdb", "custom-resource", "wrong-group"])
def test_schema_lookup_for_kind(api_version, kind, definition):
    lookup = SchemaLookup.for_kind(api_version, kind)
    assert (lookup.name if lookup else None) == definition


CRD_SCHEMA = {
    "type": "object",
    "properties": {
        "metadata": {"type": "object"},
        "spec": {"type": "object", "properties": {
            "replicas": {"type": "integer"},
            "models": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                       "items": {"type": "object", "properties": {"name": {"type": "string"},
                                                                  "version": {"type": "string"}}}},
            "gpus": {"type": "array", "items": {"type": "string"}},
            "zones": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        }},
        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    },
}


def test_crd_schema_lookup():
    lookup = CRDSchemaLookup(CRD_SCHEMA)
    spec = lookup.field("spec")
    assert (spec.field("models").list_type, spec.field("models").list_map_keys) == ("map", ("name",))
    assert spec.field("gpus").list_type == "atomic"
    assert spec.field("zones").list_type == "set"
    assert spec.field("config").field("anything") is None
    assert lookup.field("metadata").field("finalizers").list_type == "set", "metadata is always ObjectMeta"


# ---------------------------------------------------------------------------
# Strategic merge patch
# ---------------------------------------------------------------------------

def template_spec(**spec: Any) -> dict:
    return deployment(template={"metadata": {"labels": {"app": "nginx"}}, "spec": spec})


CONTAINERS = [{"name": "patch-demo-ctr", "image": "nginx"}]
TOLERATIONS = [{"effect": "NoSchedule", "key": "dedicated", "value": "test-team"}]

SMP_CASES = [
    # "Update API Objects in Place Using kubectl patch": containers merge by name, new one first.
    ("docs-containers-merge-by-name", DEPLOYMENT, deployment(),
     {"spec": {"template": {"spec": {"containers": [{"name": "patch-demo-ctr-2", "image": "redis"}]}}}},
     template_spec(containers=[{"name": "patch-demo-ctr-2", "image": "redis"}, *CONTAINERS],
                   tolerations=TOLERATIONS)),
    # Same page: tolerations have no patch strategy, so they are replaced.
    ("docs-tolerations-replace", DEPLOYMENT, deployment(),
     {"spec": {"template": {"spec": {"tolerations": [{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}]}}}},
     template_spec(containers=CONTAINERS,
                   tolerations=[{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}])),
    # Same page: the retainKeys strategy drops rollingUpdate when switching to Recreate.
    ("docs-retain-keys", DEPLOYMENT, deployment(strategy={"rollingUpdate": {"maxSurge": "30%"}}),
     {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
     deployment(strategy={"type": "Recreate"})),
    ("without-retain-keys-maps-merge", DEPLOYMENT, deployment(strategy={"rollingUpdate": {"maxSurge": "30%"}}),
     {"spec": {"strategy": {"type": "Recreate"}}},
     deployment(strategy={"rollingUpdate": {"maxSurge": "30%"}, "type": "Recreate"})),
    ("merge-existing-container", DEPLOYMENT, deployment(),
     {"spec": {"template": {"spec": {"containers": [{"name": "patch-demo-ctr", "image": "nginx:1.27"}]}}}},
     template_spec(containers=[{"name": "patch-demo-ctr", "image": "nginx:1.27"}], tolerations=TOLERATIONS)),
    ("null-deletes-field", DEPLOYMENT, deployment(), {"spec": {"replicas": None}},
     {**deployment(), "spec": {k: v for k, v in deployment()["spec"].items() if k != "replicas"}}),
    ("patch-delete-list-item", POD, pod_spec(containers=[{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]),
     {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}},
     pod_spec(containers=[{"name": "b", "image": "y"}])),
    ("patch-replace-list", POD, pod_spec(containers=[{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]),
     {"spec": {"containers": [{"name": "c", "image": "z"}, {"$patch": "replace"}]}},
     pod_spec(containers=[{"name": "c", "image": "z"}])),
    ("patch-replace-map", POD, pod_spec(nodeSelector={"gpu": "a100", "zone": "x"}),
     {"spec": {"nodeSelector": {"$patch": "replace", "gpu": "h100"}}},
     pod_spec(nodeSelector={"gpu": "h100"})),
    ("patch-delete-map", POD, pod_spec(nodeSelector={"gpu": "a100"}, restartPolicy="Always"),
     {"spec": {"nodeSelector": {"$patch": "delete"}}},
     pod_spec(nodeSelector={}, restartPolicy="Always")),
    ("patch-merge-map-is-default", POD, pod_spec(nodeSelector={"gpu": "a100"}),
     {"spec": {"nodeSelector": {"$patch": "merge", "zone": "x"}}},
     pod_spec(nodeSelector={"gpu": "a100", "zone": "x"})),
    ("ports-merge-by-container-port", POD,
     pod_spec(containers=[{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}]),
     {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "web"},
                                                      {"containerPort": 443}]}]}},
     pod_spec(containers=[{"name": "a", "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 443}]}])),
    ("env-merge-and-delete-by-name", POD,
     pod_spec(containers=[{"name": "a", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]),
     {"spec": {"containers": [{"name": "a", "env": [{"name": "B", "value": None, "valueFrom": {
         "fieldRef": {"fieldPath": "metadata.name"}}}, {"name": "A", "$patch": "delete"}]}]}},
     pod_spec(containers=[{"name": "a", "env": [{"name": "B", "valueFrom": {
         "fieldRef": {"fieldPath": "metadata.name"}}}]}])),
    ("patch-merge-list-item-is-default", POD, pod_spec(containers=[{"name": "a", "image": "x"}]),
     {"spec": {"containers": [{"name": "a", "$patch": "merge", "imagePullPolicy": "Always"}]}},
     pod_spec(containers=[{"name": "a", "image": "x", "imagePullPolicy": "Always"}])),
    ("args-replace", POD, pod_spec(containers=[{"name": "a", "args": ["--x", "--y"]}]),
     {"spec": {"containers": [{"name": "a", "args": ["--z"]}]}},
     pod_spec(containers=[{"name": "a", "args": ["--z"]}])),
    ("finalizers-union", POD, {**pod_spec(), "metadata": {"name": "p", "finalizers": ["a", "b"]}},
     {"metadata": {"finalizers": ["b", "c"]}},
     {**pod_spec(), "metadata": {"name": "p", "finalizers": ["a", "b", "c"]}}),
    ("delete-from-primitive-list", POD, {**pod_spec(), "metadata": {"name": "p", "finalizers": ["a", "b"]}},
     {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}},
     {**pod_spec(), "metadata": {"name": "p", "finalizers": ["b"]}}),
    ("labels-merge-and-null-deletes", POD, {**pod_spec(), "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}},
     {"metadata": {"labels": {"a": None, "c": "3"}}},
     {**pod_spec(), "metadata": {"name": "p", "labels": {"b": "2", "c": "3"}}}),
    ("pdb-selector-strategy-replace", SchemaLookup.for_kind("policy/v1", "PodDisruptionBudget"),
     {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "x"},
      "spec": {"selector": {"matchLabels": {"app": "a"}}, "minAvailable": 1}},
     {"spec": {"selector": {"matchLabels": {"tier": "b"}}}},
     {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "x"},
      "spec": {"selector": {"matchLabels": {"tier": "b"}}, "minAvailable": 1}}),
    ("status-conditions-merge-by-type", POD,
     {**pod_spec(), "status": {"conditions": [{"type": "Ready", "status": "False"},
                                              {"type": "PodScheduled", "status": "True"}]}},
     {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
     {**pod_spec(), "status": {"conditions": [{"type": "Ready", "status": "True"},
                                              {"type": "PodScheduled", "status": "True"}]}}),
    ("volume-retain-keys-in-item", POD, pod_spec(volumes=[{"name": "v", "emptyDir": {}}]),
     {"spec": {"volumes": [{"$retainKeys": ["configMap", "name"], "name": "v", "configMap": {"name": "cm"}}]}},
     pod_spec(volumes=[{"name": "v", "configMap": {"name": "cm"}}])),
    ("new-item-is-cleaned-of-directives-and-nulls", POD, pod_spec(containers=[]),
     {"spec": {"containers": [{"name": "a", "image": "x", "command": None, "$setElementOrder/env": [{"name": "E"}],
                               "env": [{"name": "E", "value": "1"}]}]}},
     pod_spec(containers=[{"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]}])),
    ("unknown-kind-lists-replace-maps-merge", None,
     {"spec": {"models": [{"name": "a"}], "config": {"x": 1}}},
     {"spec": {"models": [{"name": "b"}], "config": {"y": 2}}},
     {"spec": {"models": [{"name": "b"}], "config": {"x": 1, "y": 2}}}),
]


@pytest.mark.parametrize(("schema", "target", "patch", "expected"), [case[1:] for case in SMP_CASES],
                         ids=[case[0] for case in SMP_CASES])
def test_strategic_merge_patch(schema, target, patch, expected):
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    result = strategic_merge_patch(target, patch, schema)
    assert result == expected
    assert directive_keys(result) == []
    assert (target, patch) == (target_before, patch_before), "inputs must not change"


# What `kubectl apply` (client side) sends: the order of the merged list follows
# $setElementOrder, removed items come as `$patch: delete`.
CLIENT_SIDE_APPLY_CASES = [
    ("reorder-and-change-image",
     [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
     {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "a", "image": "x2"}]},
     [{"name": "b", "image": "y"}, {"name": "a", "image": "x2"}]),
    ("add-in-the-middle",
     [{"name": "a", "image": "x"}, {"name": "c", "image": "z"}],
     {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
      "containers": [{"name": "b", "image": "y"}]},
     [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}, {"name": "c", "image": "z"}]),
    ("remove-one",
     [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
     {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "b", "$patch": "delete"}]},
     [{"name": "a", "image": "x"}]),
    ("order-only",
     [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
     {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]},
     [{"name": "b", "image": "y"}, {"name": "a", "image": "x"}]),
    ("server-only-item-keeps-its-place",
     [{"name": "a", "image": "x"}, {"name": "sidecar", "image": "s"}, {"name": "b", "image": "y"}],
     {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "b", "image": "y2"}]},
     [{"name": "a", "image": "x"}, {"name": "sidecar", "image": "s"}, {"name": "b", "image": "y2"}]),
]


@pytest.mark.parametrize(("live", "patch", "expected"), [case[1:] for case in CLIENT_SIDE_APPLY_CASES],
                         ids=[case[0] for case in CLIENT_SIDE_APPLY_CASES])
def test_strategic_merge_patch_set_element_order(live, patch, expected):
    result = strategic_merge_patch(pod_spec(containers=live), {"spec": patch}, POD)
    assert result["spec"]["containers"] == expected
    assert directive_keys(result) == []


def test_strategic_merge_patch_primitive_list_order_and_deletion():
    target = {**pod_spec(), "metadata": {"name": "p", "finalizers": ["a", "b"]}}
    patch = {"metadata": {"$setElementOrder/finalizers": ["c", "b"], "$deleteFromPrimitiveList/finalizers": ["a"],
                          "finalizers": ["c"]}}
    assert strategic_merge_patch(target, patch, POD)["metadata"]["finalizers"] == ["c", "b"]


SMP_FAILURES = [
    ("unknown-directive", {"spec": {"nodeSelector": {"$patch": "explode"}}}, 400, "unknown patch type"),
    ("unknown-list-directive", {"spec": {"containers": [{"name": "a", "$patch": "explode"}]}}, 400,
     "unknown patch type"),
    ("retain-keys-not-a-list", {"spec": {"nodeSelector": {"$retainKeys": "gpu"}}}, 400, "retainKeys"),
    ("retain-keys-mismatch", {"spec": {"nodeSelector": {"$retainKeys": ["a"], "b": "1"}}}, 422, "retainKeys"),
    ("missing-merge-key", {"spec": {"containers": [{"image": "x"}]}}, 400, "merge key: name"),
    ("set-element-order-not-a-list", {"spec": {"$setElementOrder/containers": "a"}}, 400, "setElementOrder"),
    ("patch-not-an-object", ["x"], 400, "JSON object"),
]


@pytest.mark.parametrize(("patch", "code", "words"), [case[1:] for case in SMP_FAILURES],
                         ids=[case[0] for case in SMP_FAILURES])
def test_strategic_merge_patch_failures(patch, code, words):
    with pytest.raises(ApiError) as raised:
        strategic_merge_patch(pod_spec(containers=[{"name": "a"}], nodeSelector={"gpu": "x"}), patch, POD)
    assert (raised.value.code, words in raised.value.message) == (code, True)


# ---------------------------------------------------------------------------
# FieldsV1
# ---------------------------------------------------------------------------

REAL_FIELDS_V1 = {  # as kube-apiserver records `kubectl apply --server-side` of a Deployment
    "f:metadata": {"f:labels": {"f:app": {}}},
    "f:spec": {
        "f:replicas": {},
        "f:selector": {},
        "f:template": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:containers": {'k:{"name":"nginx"}': {".": {}, "f:image": {}, "f:name": {},
                                                                "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {
                                                                    ".": {}, "f:containerPort": {}}}}}},
        },
    },
}


def test_fields_v1_round_trip_of_a_real_entry():
    paths = fields_v1_to_paths(REAL_FIELDS_V1)
    assert ("f:spec", "f:replicas") in paths
    assert ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"nginx"}') in paths
    assert ("f:spec", "f:template") not in paths
    assert paths_to_fields_v1(paths) == REAL_FIELDS_V1


path_steps = st.sampled_from(["f:a", "f:b", 'k:{"name":"x"}', 'v:"y"', "f:c"])


@given(st.frozensets(st.lists(path_steps, min_size=1, max_size=4).map(tuple), max_size=8))
def test_fields_v1_round_trip(paths):
    assert fields_v1_to_paths(paths_to_fields_v1(paths)) == paths


def test_server_side_apply_records_the_real_fields_v1_shape():
    config = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "nginx", "namespace": "default", "labels": {"app": "nginx"}},
              "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "nginx"}},
                       "template": {"metadata": {"labels": {"app": "nginx"}},
                                    "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27",
                                                             "ports": [{"containerPort": 80}]}]}}}}
    created = server_side_apply(None, config, "kubectl", False, DEPLOYMENT, T0)
    assert created["metadata"]["managedFields"] == [{
        "manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1", "time": T0,
        "fieldsType": "FieldsV1", "fieldsV1": REAL_FIELDS_V1}]
    assert content(created) == config


# ---------------------------------------------------------------------------
# Server-side apply
# ---------------------------------------------------------------------------

def web(replicas: int | None = 2, image: str = "nginx:1.27", labels: dict | None = None,
        extra_containers: list | None = None) -> dict:
    """An applied Deployment configuration."""
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}},
                                         "spec": {"containers": [{"name": "web", "image": image},
                                                                 *(extra_containers or [])]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    metadata: dict[str, Any] = {"name": "web", "namespace": "default"}
    if labels is not None:
        metadata["labels"] = labels
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}


def stored(obj: dict, **metadata: Any) -> dict:
    """The object as the server stores it (server-set metadata added)."""
    result = copy.deepcopy(obj)
    result["metadata"].update({"uid": "u-1", "resourceVersion": "7", "creationTimestamp": T0, **metadata})
    return result


def test_apply_creates_with_an_apply_entry():
    created = server_side_apply(None, web(labels={"team": "a"}), "kubectl", False, DEPLOYMENT, T0)
    assert content(created) == web(labels={"team": "a"})
    assert managers(created) == [("kubectl", "Apply")]
    assert fields_of(created, "kubectl")["f:metadata"] == {"f:labels": {"f:team": {}}}


def test_reapply_is_a_no_op():
    live = stored(server_side_apply(None, web(), "argocd", False, DEPLOYMENT, T0))
    again = server_side_apply(live, web(), "argocd", False, DEPLOYMENT, T3)
    assert again == live


def test_reapply_keeps_server_set_metadata_and_ignores_what_the_config_says_about_it():
    live = stored(server_side_apply(None, web(), "kubectl", False, DEPLOYMENT, T0))
    config = web()
    config["metadata"].update({"uid": "other", "resourceVersion": "99", "generation": 5})
    assert server_side_apply(live, config, "kubectl", False, DEPLOYMENT, T1) == live


PRUNE_CASES = [
    ("omitted-scalar-removed", web(replicas=3), web(replicas=None),
     lambda result: "replicas" not in result["spec"]),
    ("omitted-label-removed-and-empty-map-goes", web(labels={"team": "a"}), web(),
     lambda result: "labels" not in result["metadata"]),
    ("omitted-container-removed", web(extra_containers=[{"name": "sidecar", "image": "envoy"}]), web(),
     lambda result: [c["name"] for c in result["spec"]["template"]["spec"]["containers"]] == ["web"]),
    ("omitted-container-field-removed",
     web(extra_containers=[{"name": "sidecar", "image": "envoy", "args": ["-v"]}]),
     web(extra_containers=[{"name": "sidecar", "image": "envoy"}]),
     lambda result: result["spec"]["template"]["spec"]["containers"][1] == {"name": "sidecar", "image": "envoy"}),
    ("null-removes", web(replicas=3), {**web(), "spec": {**web()["spec"], "replicas": None}},
     lambda result: "replicas" not in result["spec"]),
]


@pytest.mark.parametrize(("first", "second", "check"), [case[1:] for case in PRUNE_CASES],
                         ids=[case[0] for case in PRUNE_CASES])
def test_apply_removes_what_the_manager_no_longer_applies(first, second, check):
    live = stored(server_side_apply(None, first, "kubectl", False, DEPLOYMENT, T0))
    result = server_side_apply(live, second, "kubectl", False, DEPLOYMENT, T1)
    assert check(result)
    assert server_side_apply(result, second, "kubectl", False, DEPLOYMENT, T2) == result


def test_omitted_field_that_another_manager_owns_stays():
    live = server_side_apply(None, web(replicas=3), "a", False, DEPLOYMENT, T0)
    live = server_side_apply(live, web(replicas=3), "b", False, DEPLOYMENT, T1)  # same value: shared
    result = server_side_apply(live, web(replicas=None), "a", False, DEPLOYMENT, T2)
    assert result["spec"]["replicas"] == 3
    assert "f:replicas" in fields_of(result, "b")["f:spec"]
    assert "f:replicas" not in fields_of(result, "a")["f:spec"]


def test_omitted_field_changed_by_an_update_stays():
    live = server_side_apply(None, web(replicas=3), "kubectl", False, DEPLOYMENT, T0)
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    live = record_update(live, scaled, "hpa", T1, DEPLOYMENT)
    result = server_side_apply(live, web(replicas=None), "kubectl", False, DEPLOYMENT, T2)
    assert result["spec"]["replicas"] == 5


CONFLICT_CASES = [
    ("two-appliers", lambda live: server_side_apply(live, web(replicas=5), "helm", False, DEPLOYMENT, T1),
     'Apply failed with 1 conflict: conflict with "helm": .spec.replicas'),
    ("an-updater", lambda live: record_update(live, {**live, "spec": {**live["spec"], "replicas": 5}},
                                              "kubectl-client-side-apply", T1, DEPLOYMENT),
     'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas'),
    ("two-fields", lambda live: server_side_apply(live, web(replicas=5, image="nginx:1.26"), "helm", False,
                                                  DEPLOYMENT, T1),
     'Apply failed with 2 conflicts: conflicts with "helm":\n- .spec.replicas\n'
     '- .spec.template.spec.containers[name="web"].image'),
]


@pytest.mark.parametrize(("other_write", "message"), [case[1:] for case in CONFLICT_CASES],
                         ids=[case[0] for case in CONFLICT_CASES])
def test_apply_conflicts_with_other_owners(other_write, message):
    live = server_side_apply(None, web(replicas=2), "helm", False, DEPLOYMENT, T0)
    live = other_write(live)
    with pytest.raises(ApiError) as raised:
        server_side_apply(live, web(replicas=3), "kubectl", False, DEPLOYMENT, T2)
    assert (raised.value.code, raised.value.reason) == (409, "Conflict")
    assert raised.value.message == message
    assert raised.value.details["causes"][0]["reason"] == "FieldManagerConflict"


def test_conflicts_listed_per_manager():
    live = server_side_apply(None, web(replicas=2), "a", False, DEPLOYMENT, T0)
    live = server_side_apply(live, web(replicas=2, labels={"x": "1"}), "b", False, DEPLOYMENT, T1)
    with pytest.raises(ApiError) as raised:
        server_side_apply(live, web(replicas=4, labels={"x": "2"}), "c", False, DEPLOYMENT, T2)
    assert raised.value.message == ('Apply failed with 3 conflicts: conflicts with "a":\n- .spec.replicas\n'
                                    'conflicts with "b":\n- .metadata.labels.x\n- .spec.replicas')


def test_force_moves_ownership():
    live = server_side_apply(None, web(replicas=2), "helm", False, DEPLOYMENT, T0)
    forced = server_side_apply(live, web(replicas=3), "kubectl", True, DEPLOYMENT, T1)
    assert forced["spec"]["replicas"] == 3
    assert "f:replicas" in fields_of(forced, "kubectl")["f:spec"]
    assert "f:replicas" not in fields_of(forced, "helm")["f:spec"]
    # helm no longer owns replicas, so helm re-applying its config now conflicts on it
    with pytest.raises(ApiError, match=r'conflict with "kubectl": \.spec\.replicas'):
        server_side_apply(forced, web(replicas=2), "helm", False, DEPLOYMENT, T2)


def test_same_value_is_shared_without_conflict():
    live = server_side_apply(None, web(replicas=2), "a", False, DEPLOYMENT, T0)
    shared = server_side_apply(live, web(replicas=2), "b", False, DEPLOYMENT, T1)
    assert content(shared) == content(live)
    assert "f:replicas" in fields_of(shared, "a")["f:spec"] and "f:replicas" in fields_of(shared, "b")["f:spec"]
    assert [e["time"] for e in shared["metadata"]["managedFields"]] == [T0, T1], "a's entry keeps its time"


def test_apply_ignores_status_on_the_main_resource():
    live = stored({**web(), "status": {"replicas": 1}})
    config = {**web(), "status": {"replicas": 9}}
    result = server_side_apply(live, config, "kubectl", False, DEPLOYMENT, T1)
    assert result["status"] == {"replicas": 1}
    assert "f:status" not in fields_of(result, "kubectl")


def test_apply_to_the_status_subresource():
    live = server_side_apply(None, web(), "kubectl", False, DEPLOYMENT, T0)
    result = server_side_apply(live, {**web(replicas=7), "status": {"readyReplicas": 2}}, "controller", False,
                               DEPLOYMENT, T1, subresource="status")
    assert (result["status"], result["spec"]["replicas"]) == ({"readyReplicas": 2}, 2)
    entry = next(e for e in result["metadata"]["managedFields"] if e["manager"] == "controller")
    assert (entry["subresource"], entry["fieldsV1"]) == ("status", {"f:status": {"f:readyReplicas": {}}})


def test_first_apply_to_an_untracked_object_gives_its_fields_to_before_first_apply():
    untracked = stored(web(replicas=2))
    with pytest.raises(ApiError, match='conflict with "before-first-apply" using apps/v1: .spec.replicas'):
        server_side_apply(untracked, web(replicas=4), "kubectl", False, DEPLOYMENT, T1)
    result = server_side_apply(untracked, web(replicas=2), "kubectl", False, DEPLOYMENT, T1)
    assert managers(result) == [("kubectl", "Apply"), ("before-first-apply", "Update")]


def test_custom_resource_lists_are_atomic_unless_the_schema_says_map():
    crd = CRDSchemaLookup(CRD_SCHEMA)
    config = {"apiVersion": "trireme.io/v1alpha1", "kind": "Fleet", "metadata": {"name": "f"},
              "spec": {"gpus": ["a100"], "zones": ["z1"], "models": [{"name": "resnet", "version": "1"}],
                       "config": {"batch": {"max": 8}}}}
    created = server_side_apply(None, config, "op", False, crd, T0)
    assert fields_of(created, "op") == {"f:spec": {
        "f:gpus": {}, "f:zones": {'v:"z1"': {}},
        "f:models": {'k:{"name":"resnet"}': {".": {}, "f:name": {}, "f:version": {}}},
        "f:config": {"f:batch": {".": {}, "f:max": {}}}}}
    other = {**config, "spec": {"models": [{"name": "bert", "version": "2"}], "gpus": ["h100"], "zones": ["z2"]}}
    merged = server_side_apply(created, other, "user", True, crd, T1)
    assert merged["spec"]["models"] == [{"name": "resnet", "version": "1"}, {"name": "bert", "version": "2"}]
    assert merged["spec"]["gpus"] == ["h100"]
    assert merged["spec"]["zones"] == ["z1", "z2"]


APPLY_FAILURES = [
    ("managed-fields-in-config", {**web(), "metadata": {"name": "web", "managedFields": [{"manager": "x"}]}},
     "metadata.managedFields must be nil"),
    ("missing-kind", {k: v for k, v in web().items() if k != "kind"}, "Object 'Kind' is missing"),
    ("duplicate-keys", web(extra_containers=[{"name": "web", "image": "again"}]), "duplicate entries for key"),
    ("missing-key", web(extra_containers=[{"image": "nameless"}]), 'omits key field "name"'),
]


@pytest.mark.parametrize(("config", "words"), [case[1:] for case in APPLY_FAILURES],
                         ids=[case[0] for case in APPLY_FAILURES])
def test_apply_rejects_bad_configurations(config, words):
    with pytest.raises(ApiError) as raised:
        server_side_apply(None, config, "kubectl", False, DEPLOYMENT, T0)
    assert raised.value.code == 400 and words in raised.value.message


def test_apply_does_not_mutate_inputs():
    live = server_side_apply(None, web(labels={"a": "1"}), "kubectl", False, DEPLOYMENT, T0)
    config = web(replicas=None)
    live_before, config_before = copy.deepcopy(live), copy.deepcopy(config)
    server_side_apply(live, config, "kubectl", False, DEPLOYMENT, T1)
    assert (live, config) == (live_before, config_before)


# ---------------------------------------------------------------------------
# Non-apply writes
# ---------------------------------------------------------------------------

def test_record_update_on_create_tracks_maps_and_items_like_the_api_server():
    created = record_update(None, web(labels={"app": "web"}), "kubectl-create", T0, DEPLOYMENT)
    fields = fields_of(created, "kubectl-create", "Update")
    assert fields["f:metadata"] == {"f:labels": {".": {}, "f:app": {}}}
    assert fields["f:spec"]["f:template"]["f:spec"]["f:containers"] == {
        'k:{"name":"web"}': {".": {}, "f:image": {}, "f:name": {}}}
    assert "." not in fields["f:spec"], "struct fields are not owned themselves"


def test_record_update_takes_changed_fields_from_their_owner():
    live = server_side_apply(None, web(replicas=2), "kubectl", False, DEPLOYMENT, T0)
    edited = copy.deepcopy(live)
    edited["spec"]["replicas"] = 4
    result = record_update(live, edited, "kubectl-edit", T1, DEPLOYMENT)
    assert fields_of(result, "kubectl-edit", "Update") == {"f:spec": {"f:replicas": {}}}
    assert "f:replicas" not in fields_of(result, "kubectl")["f:spec"]


def test_record_update_that_changes_nothing_keeps_entries():
    live = record_update(None, web(), "kubectl-create", T0, DEPLOYMENT)
    assert record_update(live, copy.deepcopy(live), "kopf", T1, DEPLOYMENT) == live


def test_record_update_removal_drops_ownership():
    live = server_side_apply(None, web(labels={"a": "1", "b": "2"}), "kubectl", False, DEPLOYMENT, T0)
    edited = copy.deepcopy(live)
    del edited["metadata"]["labels"]["a"]
    result = record_update(live, edited, "kubectl-edit", T1, DEPLOYMENT)
    assert fields_of(result, "kubectl")["f:metadata"] == {"f:labels": {"f:b": {}}}
    assert ("kubectl-edit", "Update") not in managers(result), "a removal alone owns nothing"


def test_record_update_honours_managed_fields_sent_by_the_client():
    live = server_side_apply(None, web(), "kubectl", False, DEPLOYMENT, T0)
    reset = copy.deepcopy(live)
    reset["metadata"]["managedFields"] = [{}]
    assert "managedFields" not in record_update(live, reset, "x", T1, DEPLOYMENT)["metadata"]
    kept = copy.deepcopy(live)
    del kept["metadata"]["managedFields"]
    assert record_update(live, kept, "x", T1, DEPLOYMENT) == live


def test_decode_managed_fields():
    live = server_side_apply(None, web(replicas=2), "kubectl", False, DEPLOYMENT, T0)
    (entry,) = decode_managed_fields(live)
    assert (entry.manager, entry.operation, entry.api_version, entry.time) == ("kubectl", "Apply", "apps/v1", T0)
    assert ("f:spec", "f:replicas") in entry.fields


# ---------------------------------------------------------------------------
# Properties of apply
# ---------------------------------------------------------------------------

names = st.text(alphabet="abc", min_size=1, max_size=2)
containers = st.lists(
    st.fixed_dictionaries(
        {"name": names, "image": st.sampled_from(["nginx", "redis", "triton"])},
        optional={"args": st.lists(names, max_size=2),
                  "env": st.lists(st.fixed_dictionaries({"name": names, "value": names}), max_size=3,
                                  unique_by=lambda env: env["name"]),
                  "ports": st.lists(st.fixed_dictionaries({"containerPort": st.integers(1, 3)}), max_size=2,
                                    unique_by=lambda port: port["containerPort"])}),
    max_size=3, unique_by=lambda container: container["name"])
configurations = st.builds(
    lambda labels, replicas, pod_containers, finalizers: {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", **({"labels": labels} if labels is not None else {}),
                     **({"finalizers": finalizers} if finalizers is not None else {})},
        "spec": {**({"replicas": replicas} if replicas is not None else {}),
                 "template": {"spec": {"containers": pod_containers}}}},
    st.none() | st.dictionaries(names, names, max_size=3),
    st.none() | st.integers(0, 3),
    containers,
    st.none() | st.lists(names, max_size=3, unique=True),
)


@settings(max_examples=60, deadline=None)
@given(configurations, configurations)
def test_reapplying_the_same_configuration_changes_nothing(first, second):
    live = server_side_apply(None, first, "a", False, DEPLOYMENT, T0)
    after = server_side_apply(live, second, "b", True, DEPLOYMENT, T1)
    assert server_side_apply(after, second, "b", False, DEPLOYMENT, T2) == after
    assert server_side_apply(after, first, "a", True, DEPLOYMENT, T2) == server_side_apply(
        server_side_apply(after, first, "a", True, DEPLOYMENT, T2), first, "a", False, DEPLOYMENT, T3)


@settings(max_examples=60, deadline=None)
@given(configurations, configurations)
def test_a_single_manager_converges_to_its_configuration(first, second):
    live = server_side_apply(None, first, "kubectl", False, DEPLOYMENT, T0)
    assert content(server_side_apply(live, second, "kubectl", False, DEPLOYMENT, T1)) == content(
        server_side_apply(None, second, "kubectl", False, DEPLOYMENT, T1))


def test_ports_key_on_protocol_default():
    config = pod_spec(containers=[{"name": "a", "ports": [{"containerPort": 80}, {"containerPort": 80,
                                                                                   "protocol": "UDP"}]}])
    created = server_side_apply(None, config, "m", False, POD, T0)
    ports = fields_of(created, "m")["f:spec"]["f:containers"]['k:{"name":"a"}']["f:ports"]
    assert set(ports) == {'k:{"containerPort":80,"protocol":"TCP"}', 'k:{"containerPort":80,"protocol":"UDP"}'}
    assert json.loads(json.dumps(created)) == created


def client_side_applied(config: dict) -> dict:
    """An object as `kubectl apply` (client side) creates it: annotated, owned by an Update."""
    annotated = copy.deepcopy(config)
    annotated["metadata"].setdefault("annotations", {})["kubectl.kubernetes.io/last-applied-configuration"] = (
        json.dumps(config) + "\n")
    return record_update(None, annotated, "kubectl-client-side-apply", T0, DEPLOYMENT)


def test_kubectl_server_side_apply_takes_over_from_client_side_apply():
    live = client_side_applied(web(replicas=2))
    result = server_side_apply(live, web(replicas=3), "kubectl", False, DEPLOYMENT, T1)
    assert result["spec"]["replicas"] == 3
    last_applied = json.loads(result["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert last_applied == web(replicas=3)
    assert server_side_apply(result, web(replicas=3), "kubectl", False, DEPLOYMENT, T2) == result


@pytest.mark.parametrize("manager, live_replicas", [("helm", 2), ("kubectl", 5)],
                         ids=["other-manager-gets-no-upgrade", "value-drifted-from-last-applied"])
def test_client_side_apply_upgrade_only_covers_unchanged_fields_for_kubectl(manager, live_replicas):
    live = client_side_applied(web(replicas=2))
    drifted = copy.deepcopy(live)
    drifted["spec"]["replicas"] = live_replicas
    live = record_update(live, drifted, "kubectl-client-side-apply", T1, DEPLOYMENT)
    with pytest.raises(ApiError, match='conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas'):
        server_side_apply(live, web(replicas=3), manager, False, DEPLOYMENT, T2)


def test_record_update_through_the_status_subresource_owns_only_status():
    live = server_side_apply(None, web(), "kubectl", False, DEPLOYMENT, T0)
    reported = copy.deepcopy(live)
    reported["status"] = {"readyReplicas": 2}
    reported["spec"]["replicas"] = 9  # ignored for ownership through /status
    result = record_update(live, reported, "kopf", T1, DEPLOYMENT, subresource="status")
    entry = next(e for e in result["metadata"]["managedFields"] if e["manager"] == "kopf")
    assert (entry["operation"], entry["subresource"]) == ("Update", "status")
    assert entry["fieldsV1"] == {"f:status": {"f:readyReplicas": {}}}
    assert "f:replicas" in fields_of(result, "kubectl")["f:spec"]
