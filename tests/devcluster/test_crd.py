"""Custom resources: kube-apiserver's validation wording, pruning, defaulting, CEL, subresources, CRD checks."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trireme.devcluster.crd import (
    CustomResourceVersion,
    check_crd,
    compile_versions,
    crd_errors,
    default_crd,
    go_float,
    go_json,
    go_quote,
)
from trireme.devcluster.errors import ApiError

Obj = dict[str, Any]

SPEC_SCHEMA: Obj = {
    "type": "object",
    "required": ["model"],
    "x-kubernetes-validations": [
        {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"},
    ],
    "properties": {
        "model": {"type": "string", "minLength": 2, "maxLength": 10, "pattern": "^[a-z]+$"},
        "replicas": {"type": "integer", "minimum": 0, "maximum": 100, "default": 1},
        "minReplicas": {"type": "integer", "default": 1},
        "maxReplicas": {"type": "integer", "default": 5},
        "share": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 1.5},
        "step": {"type": "integer", "multipleOf": 4},
        "mode": {"type": "string", "enum": ["spread", "binpack"], "default": "spread"},
        "level": {"type": "integer", "enum": [1, 2]},
        "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set", "maxItems": 3},
        "zones": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True},
        "gpus": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                 "items": {"type": "object", "required": ["name"],
                           "x-kubernetes-validations": [{"rule": "self.count <= 8", "message": "at most 8 GPUs"}],
                           "properties": {"name": {"type": "string"},
                                          "count": {"type": "integer", "default": 1}}}},
        "labels": {"type": "object", "maxProperties": 2, "additionalProperties": {"type": "string", "maxLength": 3}},
        "selector": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
        "values": {"x-kubernetes-preserve-unknown-fields": True},
        "when": {"type": "string", "format": "date-time"},
        "note": {"type": "string", "nullable": True},
        "weights": {"type": "array", "items": {"type": "integer"}},
        "runtime": {"type": "object", "properties": {"image": {"type": "string", "default": "triton"},
                                                     "args": {"type": "array", "items": {"type": "string"}}}},
        "policy": {"type": "object", "default": {}, "properties": {"window": {"type": "integer", "default": 30}}},
        "choice": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                   "oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
        "both": {"type": "string", "allOf": [{"minLength": 1}, {"maxLength": 3}]},
        "notEmpty": {"type": "string", "not": {"enum": [""]}},
        "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                     "x-kubernetes-preserve-unknown-fields": True},
    },
}

CRD: Obj = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
        "versions": [{
            "name": "v1",
            "served": True,
            "storage": True,
            "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                     "statusReplicasPath": ".status.replicas",
                                                     "labelSelectorPath": ".status.selector"}},
            "additionalPrinterColumns": [{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}],
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object"},
                    "spec": SPEC_SCHEMA,
                    "status": {"type": "object", "properties": {"replicas": {"type": "integer"},
                                                                "selector": {"type": "string"}}},
                },
            }},
        }],
    },
}

WIDGETS = CustomResourceVersion(CRD, "v1")
BLOCKED = ("<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; "
           "correct the existing errors to complete validation")


def widget(**spec: Any) -> Obj:
    return {"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "default"}, "spec": {"model": "resnet", **spec}}


def causes(obj: Obj, old: Obj | None = None, version: CustomResourceVersion = WIDGETS) -> list[str]:
    """The 422's causes as ``field: message`` lines (empty when the object is valid)."""
    try:
        version.validate(obj, old)
    except ApiError as exc:
        assert exc.code == 422 and exc.reason == "Invalid"
        return [f"{c['field']}: {c['message']}" for c in exc.details["causes"]]
    return []


def crd_with(mutate: Callable[[Obj], Any]) -> Obj:
    crd = copy.deepcopy(CRD)
    mutate(crd)
    return crd


def schema_of(crd: Obj) -> Obj:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def spec_of(crd: Obj) -> Obj:
    return schema_of(crd)["properties"]["spec"]


# -- validation wording ----------------------------------------------------------------------------

VALIDATION_CASES: list[tuple[str, Obj, list[str]]] = [
    ("minimum", {"replicas": -1},
     ["spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
      ".spec.replicas: Invalid value: -1: should be a non-negative integer"]),
    ("maximum", {"replicas": 101},
     ["spec.replicas: Invalid value: 101: spec.replicas in body should be less than or equal to 100"]),
    ("exclusive minimum", {"share": 0},
     ["spec.share: Invalid value: 0: spec.share in body should be greater than 0"]),
    ("float bound", {"share": 2.5},
     ["spec.share: Invalid value: 2.5: spec.share in body should be less than or equal to 1.5"]),
    ("multipleOf", {"step": 6},
     ["spec.step: Invalid value: 6: spec.step in body should be a multiple of 4"]),
    ("string for integer", {"replicas": "three"},
     ['spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"',
      ".spec.replicas: Invalid value: 0: .spec.replicas accessor error: three is of the type string, expected int64",
      BLOCKED]),
    ("fraction for integer", {"minReplicas": 1.5},
     ['spec.minReplicas: Invalid value: "number": spec.minReplicas in body must be of type integer: "number"',
      BLOCKED]),
    ("string for object", {"runtime": "triton"},
     ['spec.runtime: Invalid value: "string": spec.runtime in body must be of type object: "string"', BLOCKED]),
    ("enum", {"mode": "random"},
     ['spec.mode: Unsupported value: "random": supported values: "spread", "binpack"', BLOCKED]),
    ("integer enum", {"level": 3},
     ['spec.level: Unsupported value: 3: supported values: "1", "2"', BLOCKED]),
    ("too long", {"model": "resnetresnet50"},
     ["spec.model: Too long: may not be more than 10 bytes", BLOCKED]),
    ("too short", {"model": "r"},
     ['spec.model: Invalid value: "r": spec.model in body should be at least 2 chars long']),
    ("pattern", {"model": "ResNet"},
     ["spec.model: Invalid value: \"ResNet\": spec.model in body should match '^[a-z]+$'"]),
    ("too many items", {"tags": ["a", "b", "c", "d"]},
     ["spec.tags: Too many: 4: must have at most 3 items", BLOCKED]),
    ("too few items", {"zones": []},
     ["spec.zones: Invalid value: 0: spec.zones in body should have at least 1 items"]),
    ("unique items", {"zones": ["a", "a"]},
     ['spec.zones: Invalid value: "": spec.zones in body shouldn\'t contain duplicates']),
    ("too many properties", {"labels": {"a": "x", "b": "y", "c": "z"}},
     ["spec.labels: Too many: 3: must have at most 2 items", BLOCKED]),
    ("too few properties", {"selector": {}},
     ["spec.selector: Invalid value: 0: spec.selector in body should have at least 1 properties"]),
    ("additionalProperties schema", {"labels": {"a": "long"}},
     ["spec.labels.a: Too long: may not be more than 3 bytes", BLOCKED]),
    ("null array item", {"weights": [1, None]},
     ['spec.weights[1]: Invalid value: "null": spec.weights[1] in body must be of type integer: "null"', BLOCKED]),
    ("date-time format", {"when": "yesterday"},
     ['spec.when: Invalid value: "yesterday": spec.when in body must be of type date-time: "yesterday"', BLOCKED]),
    ("int-or-string", {"port": True},
     ['spec.port: Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean"',
      '<nil>: Invalid value: "": "spec.port" must validate at least one schema (anyOf)',
      'spec.port: Invalid value: "boolean": spec.port in body must be of type integer: "boolean"', BLOCKED]),
    ("set duplicates", {"tags": ["a", "b", "a"]},
     ['spec.tags[2]: Duplicate value: "a"']),
    ("map list duplicates", {"gpus": [{"name": "a100"}, {"name": "a100", "count": 2}]},
     ['spec.gpus[1]: Duplicate value: {"name":"a100"}']),
    ("oneOf none", {"choice": {}},
     ['<nil>: Invalid value: "": "spec.choice" must validate one and only one schema (oneOf). Found none valid',
      "spec.choice.a: Required value", BLOCKED]),
    ("oneOf two", {"choice": {"a": "x", "b": "y"}},
     ['<nil>: Invalid value: "": "spec.choice" must validate one and only one schema (oneOf). '
      "Found 2 valid alternatives"]),
    ("allOf", {"both": "long"},
     ["spec.both: Too long: may not be more than 3 bytes",
      '<nil>: Invalid value: "": "spec.both" must validate all the schemas (allOf)', BLOCKED]),
    ("not", {"notEmpty": ""},
     ['<nil>: Invalid value: "": "spec.notEmpty" must not validate the schema (not)']),
    ("required", {"model": None},
     ["spec.model: Required value", BLOCKED]),
    ("embedded resources need apiVersion and kind", {"template": {"spec": {}}},
     ["spec.template.apiVersion: Required value: must not be empty",
      "spec.template.kind: Required value: must not be empty", BLOCKED]),
]


@pytest.mark.parametrize(("spec", "expected"), [(s, e) for _, s, e in VALIDATION_CASES],
                         ids=[i for i, _, _ in VALIDATION_CASES])
def test_validation_causes_read_like_kube_apiserver(spec: Obj, expected: list[str]) -> None:
    assert causes(widget(**spec)) == expected


def test_the_status_message_joins_causes_like_kube_apiserver() -> None:
    with pytest.raises(ApiError) as single:
        WIDGETS.validate(widget(replicas=101))
    assert single.value.message == ('Widget.example.com "w" is invalid: spec.replicas: Invalid value: 101: '
                                    'spec.replicas in body should be less than or equal to 100')
    with pytest.raises(ApiError) as several:
        WIDGETS.validate(widget(replicas=101, share=0))
    assert several.value.message.startswith('Widget.example.com "w" is invalid: [spec.replicas: Invalid value: 101')
    assert several.value.details["causes"][0] == {
        "reason": "FieldValueInvalid", "field": "spec.replicas",
        "message": "Invalid value: 101: spec.replicas in body should be less than or equal to 100"}


def test_every_error_is_collected_not_only_the_first() -> None:
    found = causes(widget(replicas=101, share=0, mode="x", model="R"))
    assert [line.split(":")[0] for line in found] == ["spec.model", "spec.replicas", "spec.share", "spec.mode", "<nil>"]


@pytest.mark.parametrize(("value", "stored"), [(1.0, 1), (3, 3), (0.0, 0)], ids=["1.0", "3", "0.0"])
def test_integral_numbers_are_integers_and_stored_as_such(value: float, stored: int) -> None:
    out = WIDGETS.validate(widget(replicas=value))
    assert out["spec"]["replicas"] == stored and type(out["spec"]["replicas"]) is int


def test_the_root_object_needs_what_the_schema_requires() -> None:
    crd = crd_with(lambda c: schema_of(c).update(required=["spec"]))
    version = CustomResourceVersion(crd, "v1")
    assert causes({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}, version=version) \
        == ["spec: Required value", BLOCKED]


# -- pruning and defaulting ----------------------------------------------------------------------------

DEFAULTING_CASES: list[tuple[str, Obj, Obj]] = [
    ("absent scalars get defaults", {},
     {"model": "resnet", "replicas": 1, "minReplicas": 1, "maxReplicas": 5, "mode": "spread",
      "policy": {"window": 30}}),
    ("given values win", {"replicas": 3, "mode": "binpack", "policy": {"window": 5}},
     {"model": "resnet", "replicas": 3, "minReplicas": 1, "maxReplicas": 5, "mode": "binpack",
      "policy": {"window": 5}}),
    ("an existing nested object is defaulted", {"runtime": {}},
     {"runtime": {"image": "triton"}}),
    ("list-map items are defaulted", {"gpus": [{"name": "a100"}]},
     {"gpus": [{"name": "a100", "count": 1}]}),
    ("null without nullable takes the default", {"replicas": None},
     {"replicas": 1}),
    ("null without nullable or default is dropped", {"when": None},
     {}),
    ("nullable null is kept", {"note": None},
     {"note": None}),
]


@pytest.mark.parametrize(("spec", "expected"), [(s, e) for _, s, e in DEFAULTING_CASES],
                         ids=[i for i, _, _ in DEFAULTING_CASES])
def test_defaulting(spec: Obj, expected: Obj) -> None:
    out = WIDGETS.validate(widget(**spec))["spec"]
    assert {k: out.get(k, "<absent>") for k in expected} == expected
    if "when" in spec:
        assert "when" not in out


def test_an_absent_object_gets_no_defaults_inside_it() -> None:
    assert "runtime" not in WIDGETS.validate(widget())["spec"]


PRUNING_CASES: list[tuple[str, Obj, Obj]] = [
    ("unknown spec fields go", {"bogus": 1, "runtime": {"image": "x", "gpu": True}},
     {"runtime": {"image": "x"}}),
    ("preserve-unknown-fields keeps everything", {"values": {"a": {"b": [1, {"c": 2}]}}},
     {"values": {"a": {"b": [1, {"c": 2}]}}}),
    ("embedded resources keep apiVersion, kind and metadata",
     {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": 1}}},
     {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": 1}}}),
    ("list items are pruned", {"gpus": [{"name": "a", "vendor": "nvidia"}]},
     {"gpus": [{"name": "a", "count": 1}]}),
]


@pytest.mark.parametrize(("spec", "expected"), [(s, e) for _, s, e in PRUNING_CASES],
                         ids=[i for i, _, _ in PRUNING_CASES])
def test_pruning(spec: Obj, expected: Obj) -> None:
    out = WIDGETS.validate(widget(**spec))["spec"]
    assert {k: out[k] for k in expected} == expected
    assert "bogus" not in out


def test_metadata_apiversion_and_kind_pass_through_and_top_level_strays_go() -> None:
    obj = widget()
    obj["metadata"]["labels"] = {"a": "b"}
    obj["extra"] = {"x": 1}
    out = WIDGETS.validate(obj)
    assert out["metadata"] == obj["metadata"] and out["apiVersion"] == "example.com/v1" and "extra" not in out


def test_validate_does_not_change_its_input() -> None:
    obj = widget(runtime={}, bogus=1)
    before = copy.deepcopy(obj)
    WIDGETS.validate(obj)
    assert obj == before


def test_unknown_fields_are_reported_with_their_paths() -> None:
    obj = widget(bogus=1, gpus=[{"name": "a", "vendor": "x"}], values={"free": 1})
    obj["top"] = 1
    assert WIDGETS.unknown_fields(obj) == ["spec.bogus", "spec.gpus[0].vendor", "top"]


# -- CEL -----------------------------------------------------------------------------------------------


def with_rules(node_path: tuple[str, ...], *rules: Obj, extra: Obj | None = None) -> CustomResourceVersion:
    """WIDGETS with rules added at a node of the spec schema (and extra spec properties)."""
    def mutate(crd: Obj) -> None:
        node = spec_of(crd)
        node["properties"].update(extra or {})
        for part in node_path:
            node = node[part]
        node.setdefault("x-kubernetes-validations", []).extend(rules)
    return CustomResourceVersion(crd_with(mutate), "v1")


CEL_CASES: list[tuple[str, CustomResourceVersion, Obj, Obj | None, list[str]]] = [
    ("message", WIDGETS, {"minReplicas": 9}, None,
     ['spec: Invalid value: "object": minReplicas must not exceed maxReplicas']),
    ("default message", with_rules(("properties", "replicas"), {"rule": "self % 2 == 1"}), {"replicas": 2}, None,
     ['spec.replicas: Invalid value: "integer": failed rule: self % 2 == 1']),
    ("messageExpression", with_rules(("properties", "replicas"),
                                     {"rule": "self < 10", "messageExpression": "'too many: ' + string(self)"}),
     {"replicas": 12}, None,
     ['spec.replicas: Invalid value: "integer": too many: 12']),
    ("messageExpression falls back to message", with_rules(
        ("properties", "replicas"), {"rule": "self < 10", "message": "fallback", "messageExpression": "self.x"}),
     {"replicas": 12}, None,
     ['spec.replicas: Invalid value: "integer": fallback']),
    ("reason Forbidden", with_rules((), {"rule": "!has(self.note)", "message": "no notes", "reason":
                                         "FieldValueForbidden"}), {"note": "x"}, None,
     ["spec: Forbidden: no notes"]),
    ("reason Required with fieldPath", with_rules(
        (), {"rule": "has(self.when)", "message": "when is needed", "reason": "FieldValueRequired",
             "fieldPath": ".when"}), {}, None,
     ["spec.when: Required value: when is needed"]),
    ("reason Duplicate", with_rules(("properties", "zones"), {"rule": "false", "reason": "FieldValueDuplicate"}),
     {"zones": ["a"]}, None,
     ['spec.zones: Duplicate value: "array"']),
    ("list items are checked one by one", WIDGETS, {"gpus": [{"name": "a", "count": 2}, {"name": "b", "count": 9}]},
     None, ['spec.gpus[1]: Invalid value: "object": at most 8 GPUs']),
    ("map values have key paths", with_rules(("properties", "labels", "additionalProperties"),
                                             {"rule": "self != 'x'"}), {"labels": {"k": "x"}}, None,
     ["spec.labels[k]: Invalid value: \"string\": failed rule: self != 'x'"]),
    ("runtime error", with_rules((), {"rule": "self.note == 'x'"}), {}, None,
     ['spec: Invalid value: "object": no such key: note evaluating rule: self.note == \'x\'']),
    ("kubernetes string functions", with_rules(("properties", "model"),
                                               {"rule": "self.upperAscii().lowerAscii() == self && "
                                                        "self.split('n').size() == 2"}),
     {"model": "resnn"}, None,
     ["spec.model: Invalid value: \"string\": failed rule: self.upperAscii().lowerAscii() == self && "
      "self.split('n').size() == 2"]),
    ("transition rules skip creates", with_rules(("properties", "model"), {"rule": "self == oldSelf",
                                                                           "message": "is immutable"}),
     {"model": "vgg"}, None, []),
    ("transition rules run on updates", with_rules(("properties", "model"), {"rule": "self == oldSelf",
                                                                             "message": "is immutable"}),
     {"model": "vgg"}, {"model": "resnet"},
     ['spec.model: Invalid value: "string": is immutable']),
    ("transition rules pass when unchanged", with_rules(("properties", "model"), {"rule": "self == oldSelf"}),
     {"model": "vgg", "replicas": 2}, {"model": "vgg"}, []),
    ("rules skip invalid objects", WIDGETS, {"minReplicas": 9, "mode": "x"}, None,
     ['spec.mode: Unsupported value: "x": supported values: "spread", "binpack"', BLOCKED]),
]


@pytest.mark.parametrize(("version", "spec", "old_spec", "expected"), [c[1:] for c in CEL_CASES],
                         ids=[c[0] for c in CEL_CASES])
def test_cel_rules(version: CustomResourceVersion, spec: Obj, old_spec: Obj | None, expected: list[str]) -> None:
    old = version.validate(widget(**old_spec)) if old_spec is not None else None
    assert causes(widget(**spec), old, version=version) == expected


def test_root_rules_report_the_nil_path_and_see_only_name_in_metadata() -> None:
    crd = crd_with(lambda c: schema_of(c).setdefault("x-kubernetes-validations", []).append(
        {"rule": "self.metadata.name.startsWith('w-')", "message": "names start with w-"}))
    version = CustomResourceVersion(crd, "v1")
    assert causes(widget(), version=version) == ['<nil>: Invalid value: "object": names start with w-']
    named = widget()
    named["metadata"]["name"] = "w-1"
    assert causes(named, version=version) == []


RATCHET_CASES: list[tuple[str, Obj, Obj, list[str]]] = [
    ("an unchanged invalid value stays", {"model": "ResNet", "replicas": 2}, {"model": "ResNet"}, []),
    ("a changed invalid value fails", {"model": "VGG"}, {"model": "ResNet"},
     ["spec.model: Invalid value: \"VGG\": spec.model in body should match '^[a-z]+$'"]),
    ("an unchanged CEL failure stays", {"minReplicas": 9, "model": "vgg"}, {"minReplicas": 9, "model": "vgg"}, []),
]


@pytest.mark.parametrize(("spec", "old_spec", "expected"), [c[1:] for c in RATCHET_CASES],
                         ids=[c[0] for c in RATCHET_CASES])
def test_validation_ratchets_on_update(spec: Obj, old_spec: Obj, expected: list[str]) -> None:
    old = WIDGETS.shape(widget(**old_spec))
    assert causes(widget(**spec), old) == expected


# -- subresources -----------------------------------------------------------------------------------------


def stored(**spec: Any) -> Obj:
    obj = WIDGETS.validate(widget(**spec))
    obj["metadata"].update(uid="u-1", resourceVersion="7", creationTimestamp="2024-01-01T00:00:00Z")
    return obj


SCALE_CASES: list[tuple[str, Obj, Obj]] = [
    ("replicas and selector", {"replicas": 3}, {"spec": {"replicas": 3}, "status": {"replicas": 2,
                                                                                     "selector": "app=w"}}),
    ("zero replicas", {"replicas": 0}, {"spec": {}, "status": {"replicas": 2, "selector": "app=w"}}),
]


@pytest.mark.parametrize(("spec", "expected"), [c[1:] for c in SCALE_CASES], ids=[c[0] for c in SCALE_CASES])
def test_get_scale(spec: Obj, expected: Obj) -> None:
    obj = stored(**spec)
    obj["status"] = {"replicas": 2, "selector": "app=w"}
    scale = WIDGETS.get_scale(obj)
    assert scale == {"kind": "Scale", "apiVersion": "autoscaling/v1",
                     "metadata": {"name": "w", "namespace": "default", "uid": "u-1", "resourceVersion": "7",
                                  "creationTimestamp": "2024-01-01T00:00:00Z"}, **expected}


def test_get_scale_without_status_reads_zero() -> None:
    assert WIDGETS.get_scale(stored())["status"] == {"replicas": 0}


def test_set_scale_replicas_writes_the_spec_path_and_creates_it() -> None:
    crd = crd_with(lambda c: c["spec"]["versions"][0]["subresources"]["scale"].update(
        specReplicasPath=".spec.scaling.replicas"))
    version = CustomResourceVersion(crd, "v1")
    obj = widget()
    out = version.set_scale_replicas(obj, 4)
    assert out["spec"]["scaling"] == {"replicas": 4} and "scaling" not in obj["spec"]
    assert WIDGETS.set_scale_replicas(stored(replicas=1), 6)["spec"]["replicas"] == 6


def test_negative_scale_is_invalid() -> None:
    with pytest.raises(ApiError) as exc:
        WIDGETS.set_scale_replicas(stored(), -1)
    assert exc.value.message == ('Scale.autoscaling "w" is invalid: spec.replicas: Invalid value: -1: '
                                 'must be greater than or equal to 0')


def test_status_is_ignored_on_create_and_main_updates() -> None:
    obj = {**stored(), "status": {"replicas": 9}}
    assert "status" not in WIDGETS.for_create(obj)
    old = {**stored(), "status": {"replicas": 1}}
    old["metadata"]["generation"] = 3
    new = copy.deepcopy(old)
    new["status"] = {"replicas": 9}
    new["metadata"]["labels"] = {"a": "b"}
    updated = WIDGETS.for_update(new, old)
    assert updated["status"] == {"replicas": 1} and updated["metadata"]["generation"] == 3
    new["spec"]["replicas"] = 5
    assert WIDGETS.for_update(new, old)["metadata"]["generation"] == 4


def test_status_writes_change_only_status() -> None:
    old = {**stored(replicas=1), "status": {"replicas": 1}}
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 9
    new["metadata"]["labels"] = {"sneaky": "yes"}
    new["status"] = {"replicas": 2}
    out = WIDGETS.for_status_update(new, old)
    assert out["spec"] == old["spec"] and out["metadata"] == old["metadata"] and out["status"] == {"replicas": 2}
    del new["status"]
    assert "status" not in WIDGETS.for_status_update(new, old)


def test_scale_paths_are_validated_with_the_object() -> None:
    assert causes(widget(replicas=-2)) == [
        "spec.replicas: Invalid value: -2: spec.replicas in body should be greater than or equal to 0",
        ".spec.replicas: Invalid value: -2: should be a non-negative integer"]


def test_a_selector_of_the_wrong_type_is_an_accessor_error() -> None:
    obj = {**widget(), "status": {"selector": 5}}
    assert causes(obj) == [
        'status.selector: Invalid value: "integer": status.selector in body must be of type string: "integer"',
        '.status.selector: Invalid value: "": .status.selector accessor error: 5 is of the type int64, expected string',
        BLOCKED]


def test_printer_columns_default_to_age() -> None:
    assert WIDGETS.additional_printer_columns() == [
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]
    crd = crd_with(lambda c: c["spec"]["versions"][0].pop("additionalPrinterColumns"))
    (age,) = CustomResourceVersion(crd, "v1").additional_printer_columns()
    assert (age["name"], age["type"], age["jsonPath"]) == ("Age", "date", ".metadata.creationTimestamp")


def test_compile_versions_and_defaults() -> None:
    crd = crd_with(lambda c: c["spec"]["versions"].append(
        {**copy.deepcopy(c["spec"]["versions"][0]), "name": "v2", "storage": False}))
    assert set(compile_versions(crd)) == {"v1", "v2"}
    defaulted = default_crd(CRD)
    assert defaulted["spec"]["names"]["listKind"] == "WidgetList"
    assert defaulted["spec"]["conversion"] == {"strategy": "None"}


# -- checking CRDs ------------------------------------------------------------------------------------------

SCHEMA = "spec.versions[0].schema.openAPIV3Schema"
CRD_CASES: list[tuple[str, Callable[[Obj], Any], list[str]]] = [
    ("name must be plural.group", lambda c: c["metadata"].update(name="widget.example.com"),
     ['metadata.name: Invalid value: "widget.example.com": must be spec.names.plural+"."+spec.group']),
    ("group needs a dot", lambda c: c["spec"].update(group="example"),
     ['metadata.name: Invalid value: "widgets.example.com": must be spec.names.plural+"."+spec.group',
      'spec.group: Invalid value: "example": should be a domain with at least one dot']),
    ("scope", lambda c: c["spec"].update(scope="Global"),
     ['spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced"']),
    ("kind required", lambda c: c["spec"]["names"].pop("kind"),
     ["spec.names.kind: Required value"]),
    ("untyped property", lambda c: spec_of(c)["properties"].update(loose={"description": "x"}),
     [f"{SCHEMA}.properties[spec].properties[loose].type: Required value: must not be empty for specified "
      "object fields"]),
    ("untyped array items", lambda c: spec_of(c)["properties"].update(list={"type": "array", "items": {}}),
     [f"{SCHEMA}.properties[spec].properties[list].items.type: Required value: must not be empty for specified "
      "array items"]),
    ("array without items", lambda c: spec_of(c)["properties"].update(list={"type": "array"}),
     [f"{SCHEMA}.properties[spec].properties[list].items: Required value: must be specified"]),
    ("root must be an object", lambda c: schema_of(c).update(type="string"),
     [f'{SCHEMA}.type: Invalid value: "string": must be object at the root']),
    ("metadata may only constrain names", lambda c: schema_of(c)["properties"]["metadata"].update(
        properties={"labels": {"type": "object"}}),
     [f"{SCHEMA}.properties[metadata]: Forbidden: must not specify anything other than name and generateName, "
      "but metadata is implicitly specified"]),
    ("exactly one storage version", lambda c: c["spec"]["versions"][0].update(storage=False),
     ["spec.versions: Invalid value"]),
    ("schemas are required", lambda c: c["spec"]["versions"][0].pop("schema"),
     [f"{SCHEMA}: Required value: schemas are required"]),
    ("defaults must validate", lambda c: spec_of(c)["properties"]["replicas"].update(default="one"),
     [f'{SCHEMA}.properties[spec].properties[replicas].default: Invalid value: "string":  in body must be of '
      'type integer: "string"']),
    ("CEL syntax", lambda c: spec_of(c)["x-kubernetes-validations"].append({"rule": "self.model =="}),
     [f"{SCHEMA}.properties[spec].x-kubernetes-validations[1]: Invalid value: {{\"rule\":\"self.model ==\"}}: "
      "compilation failed: ERROR: <input>:1:"]),
    ("CEL undefined field", lambda c: spec_of(c)["x-kubernetes-validations"].append({"rule": "self.modell != ''"}),
     [f"{SCHEMA}.properties[spec].x-kubernetes-validations[1]: Invalid value: {{\"rule\":\"self.modell != ''\"}}: "
      "compilation failed: ERROR: <input>:1:5: undefined field 'modell'\n | self.modell != ''\n | ....^"]),
    ("CEL reason", lambda c: spec_of(c)["x-kubernetes-validations"][0].update(reason="Bad"),
     [f'{SCHEMA}.properties[spec].x-kubernetes-validations[0].reason: Unsupported value: "Bad": supported values: '
      '"FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired"']),
    ("printer column type", lambda c: c["spec"]["versions"][0]["additionalPrinterColumns"][0].update(type="int"),
     ['spec.versions[0].additionalPrinterColumns[0].type: Unsupported value: "int": supported values: "boolean", '
      '"date", "integer", "number", "string"']),
    ("scale paths", lambda c: c["spec"]["versions"][0]["subresources"]["scale"].update(
        specReplicasPath=".status.replicas"),
     ['spec.versions[0].subresources.scale.specReplicasPath: Invalid value: ".status.replicas": should be a json '
      "path under .spec"]),
    ("list-map keys", lambda c: spec_of(c)["properties"]["gpus"].pop("x-kubernetes-list-map-keys"),
     [f"{SCHEMA}.properties[spec].properties[gpus].x-kubernetes-list-map-keys: Required value: must not be empty "
      "if x-kubernetes-list-type is map"]),
    ("preserveUnknownFields", lambda c: c["spec"].update(preserveUnknownFields=True),
     ["spec.preserveUnknownFields: Invalid value: true: cannot set to true, set x-kubernetes-preserve-unknown-fields "
      "to true in spec.versions[*].schema instead"]),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in CRD_CASES], ids=[c[0] for c in CRD_CASES])
def test_crd_checks(mutate: Callable[[Obj], Any], expected: list[str]) -> None:
    found = [str(e) for e in crd_errors(crd_with(mutate))]
    assert len(found) == len(expected), found
    for line, prefix in zip(found, expected):
        assert line.startswith(prefix), line


def test_a_good_crd_passes_and_a_bad_one_is_a_422() -> None:
    check_crd(CRD)
    assert crd_errors(CRD) == []
    with pytest.raises(ApiError) as exc:
        check_crd(crd_with(lambda c: c["spec"].update(scope="Global")))
    assert exc.value.code == 422
    assert exc.value.message.startswith('CustomResourceDefinition.apiextensions.k8s.io "widgets.example.com" is '
                                        'invalid: spec.scope: Unsupported value')


def test_untyped_fields_are_fine_when_int_or_string_or_preserving() -> None:
    check_crd(crd_with(lambda c: spec_of(c)["properties"].update(
        free={"x-kubernetes-preserve-unknown-fields": True}, either={"x-kubernetes-int-or-string": True})))


# -- speed ---------------------------------------------------------------------------------------------------


def without_rules(crd: Obj) -> None:
    spec_of(crd).pop("x-kubernetes-validations")
    spec_of(crd)["properties"]["gpus"]["items"].pop("x-kubernetes-validations")


def test_validation_without_cel_is_well_under_a_millisecond() -> None:
    plain = CustomResourceVersion(crd_with(without_rules), "v1")
    obj = widget(replicas=3, tags=["a", "b"], gpus=[{"name": "a100", "count": 2}], labels={"a": "b"},
                 runtime={"image": "triton", "args": ["--log-verbose=1"]}, values={"x": [1, 2, {"y": 3}]})
    rounds = 300
    started = time.perf_counter()
    for _ in range(rounds):
        plain.validate(obj)
    assert (time.perf_counter() - started) / rounds < 1e-3


# -- properties ---------------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=5) | \
    st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.sampled_from(["model", "replicas", "gpus", "name", "count", "values",
                                                              "x", "runtime", "image"]), children, max_size=4),
                           max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(list(SPEC_SCHEMA["properties"]) + ["bogus"]), json_values, max_size=6))
def test_shaping_is_idempotent_and_leaves_nothing_unknown(spec: Obj) -> None:
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}
    once = WIDGETS.shape(obj)
    assert WIDGETS.shape(once) == once
    assert WIDGETS.unknown_fields(once) == []
    WIDGETS.problems(once)  # never raises, whatever the input


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_go_float_round_trips(number: float) -> None:
    assert float(go_float(number)) == number or (number == 0 and go_float(number) == "0")


@pytest.mark.parametrize(("number", "text"), [
    (0.0, "0"), (1.5, "1.5"), (100.0, "100"), (1e21, "1e+21"), (1.5e-5, "1.5e-05"), (0.0001, "0.0001"),
    (123456789012345680000.0, "123456789012345680000"), (-2.5, "-2.5"), (math.inf, "+Inf")],
    ids=["zero", "fraction", "integral", "big", "small", "edge-small", "edge-big", "negative", "inf"])
def test_go_float_matches_go(number: float, text: str) -> None:
    assert go_float(number) == text


@pytest.mark.parametrize(("value", "text"), [
    ({"b": 1, "a": "<x>"}, '{"a":"\\u003cx\\u003e","b":1}'), ([1.0, True, None], "[1,true,null]"),
    ("tab\t", '"tab\\t"')], ids=["map", "list", "string"])
def test_go_json_matches_go(value: Any, text: str) -> None:
    assert go_json(value) == text


def test_go_quote_escapes_like_strconv() -> None:
    assert go_quote('a"b\\c\n\x01é') == '"a\\"b\\\\c\\n\\x01é"'
