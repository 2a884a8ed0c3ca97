"""OpenAPI documents as kubectl and helm read them, and checks of built-in objects.

The documents are checked the way their readers use them: kubectl's
field-validation probe (a PATCH operation with the kind's GVK and a
``fieldValidation`` query parameter), its strategic-merge probe (the PATCH
request body's content types), ``kubectl explain``'s lookup (a path per resource,
a component schema per GVK), and reference integrity for every document.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trireme.devcluster import openapi
from trireme.devcluster.errors import Cause
from trireme.devcluster.openapi import (
    APPLY_PATCH,
    STRATEGIC_MERGE_PATCH,
    OpenAPIDocs,
    ResourceDoc,
    accepts_json,
    custom_definition_name,
    definition_for,
    field_path,
    unknown_fields,
    validate_builtin,
)
from trireme.devcluster.resources import BUILTIN_RESOURCES

MODEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {"type": "object", "description": "What to serve.", "required": ["model", "note"],
                 "properties": {
                     "model": {"type": "string", "description": "The model's name."},
                     "replicas": {"type": "integer", "minimum": 0},
                     "note": {"type": "string", "nullable": True},
                     "port": {"x-kubernetes-int-or-string": True,
                              "anyOf": [{"type": "integer"}, {"type": "string"}]},
                     "tags": {"type": "array", "items": {"type": "string"}},
                     "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                               "properties": {"kept": {"type": "string"}}},
                 }},
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}

POD = ResourceDoc("", "v1", "Pod", "pods", True, {"status", "binding", "eviction", "log"},
                  "io.k8s.api.core.v1.Pod")
NODE = ResourceDoc("", "v1", "Node", "nodes", False, {"status"})
NAMESPACE = ResourceDoc("", "v1", "Namespace", "namespaces", False, {"status", "finalize"})
CONFIG_MAP = ResourceDoc("", "v1", "ConfigMap", "configmaps", True)
DEPLOYMENT = ResourceDoc("apps", "v1", "Deployment", "deployments", True, {"status", "scale"})
CLUSTER_ROLE = ResourceDoc("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False)
PDB = ResourceDoc("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, {"status"})
MODEL = ResourceDoc("serving.trireme.io", "v1alpha1", "Model", "models", True, {"status", "scale"},
                    crd_schema=MODEL_SCHEMA)
FLEET = ResourceDoc("serving.trireme.io", "v1alpha1", "Fleet", "fleets", False, crd_schema={})

CATALOGUE = (POD, NODE, NAMESPACE, CONFIG_MAP, DEPLOYMENT, CLUSTER_ROLE, PDB, MODEL, FLEET)
BUILTINS = tuple(r for r in CATALOGUE if not r.is_custom)
CUSTOM = tuple(r for r in CATALOGUE if r.is_custom)
DOCS = OpenAPIDocs(CATALOGUE)


def v3(resource: ResourceDoc, docs: OpenAPIDocs = DOCS) -> dict[str, Any]:
    body = docs.v3(resource.group_version_path)
    assert body is not None, resource.group_version_path
    return orjson.loads(body)


def v2(docs: OpenAPIDocs = DOCS) -> dict[str, Any]:
    return orjson.loads(docs.v2())


def gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "kind": kind, "version": version}


# -- what kubectl does with the documents -----------------------------------------


def kubectl_supports_query_param(document: dict[str, Any], want: dict[str, str], param: str) -> bool:
    """kubectl's supportsQueryParamV3: the first PATCH operation carrying the GVK decides."""
    for item in document["paths"].values():
        operation = item.get("patch")
        if operation is None or operation.get("x-kubernetes-group-version-kind") != want:
            continue
        return any(p.get("name") == param and p.get("in") == "query" for p in operation.get("parameters", ()))
    raise LookupError(f"Path not found for GVK ({want}) in OpenAPI V3 doc")


def kubectl_patches_strategically(document: dict[str, Any], want: dict[str, str]) -> bool:
    """kubectl apply's gvkSupportsPatchOpenAPIV3: SMP only where the PATCH body takes it."""
    for item in document["paths"].values():
        operation = item.get("patch")
        if operation is not None and operation.get("x-kubernetes-group-version-kind") == want:
            return STRATEGIC_MERGE_PATCH in operation["requestBody"]["content"]
    return False


def kubectl_explain_kind(document: dict[str, Any], resource: ResourceDoc) -> dict[str, Any]:
    """kubectl explain's template: the GVK from the resource's paths, then the schema carrying it."""
    prefix = "/api" if not resource.group else f"/apis/{resource.group}"
    base = f"{prefix}/{resource.version}"
    searched = [f"{base}/{resource.plural}", f"{base}/{resource.plural}/{{name}}",
                f"{base}/namespaces/{{namespace}}/{resource.plural}",
                f"{base}/namespaces/{{namespace}}/{resource.plural}/{{name}}"]
    found = next(operation["x-kubernetes-group-version-kind"] for path in searched if path in document["paths"]
                 for method in ("get", "post", "put", "patch", "delete")
                 if (operation := document["paths"][path].get(method)))
    return next(schema for schema in document["components"]["schemas"].values()
                if found in schema.get("x-kubernetes-group-version-kind", ()))


def resolve_v3(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "allOf" in schema:
        schema = schema["allOf"][0]
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].removeprefix("#/components/schemas/")]
    return schema


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def schema_types(schemas: dict[str, Any]) -> Iterator[Any]:
    """Every ``type`` of a schema node (not property names that happen to be "type")."""
    def visit(node: dict[str, Any]) -> Iterator[Any]:
        if "type" in node:
            yield node["type"]
        for sub in node.get("properties", {}).values():
            yield from visit(sub)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                yield from visit(node[key])
        for key in ("allOf", "oneOf", "anyOf"):
            for sub in node.get(key, ()):
                yield from visit(sub)
    for schema in schemas.values():
        yield from visit(schema)


# -- the index and the documents ------------------------------------------------------


def test_the_v3_index_lists_each_served_group_version_with_the_hash_of_its_document() -> None:
    index = DOCS.v3_index()
    assert sorted(index["paths"]) == ["api/v1", "apis/apps/v1", "apis/policy/v1",
                                      "apis/rbac.authorization.k8s.io/v1", "apis/serving.trireme.io/v1alpha1"]
    for path, entry in index["paths"].items():
        assert entry == {"serverRelativeURL": f"/openapi/v3/{path}?hash={DOCS.v3_etag(path)}"}


@pytest.mark.parametrize("path", ["apis/batch/v1", "apis/apps/v2", "api/v2", ""], ids=str)
def test_a_group_version_that_is_not_served_has_no_document(path: str) -> None:
    assert DOCS.v3(path) is None
    assert DOCS.v3_etag(path) is None


def test_leading_slashes_name_the_same_document() -> None:
    assert DOCS.v3("/apis/apps/v1") == DOCS.v3("apis/apps/v1")


def test_documents_declare_their_openapi_versions() -> None:
    assert v3(POD)["openapi"] == "3.0.0"
    swagger = v2()
    assert swagger["swagger"] == "2.0"
    assert swagger["info"]["version"] == openapi.KUBERNETES_VERSION


OPERATIONS = [
    (POD, "/api/v1/namespaces/{namespace}/pods", "get", "list", "listCoreV1NamespacedPod"),
    (POD, "/api/v1/namespaces/{namespace}/pods", "post", "post", "createCoreV1NamespacedPod"),
    (POD, "/api/v1/namespaces/{namespace}/pods", "delete", "deletecollection", "deleteCoreV1CollectionNamespacedPod"),
    (POD, "/api/v1/namespaces/{namespace}/pods/{name}", "get", "get", "readCoreV1NamespacedPod"),
    (POD, "/api/v1/namespaces/{namespace}/pods/{name}", "put", "put", "replaceCoreV1NamespacedPod"),
    (POD, "/api/v1/namespaces/{namespace}/pods/{name}", "patch", "patch", "patchCoreV1NamespacedPod"),
    (POD, "/api/v1/namespaces/{namespace}/pods/{name}", "delete", "delete", "deleteCoreV1NamespacedPod"),
    (POD, "/api/v1/pods", "get", "list", "listCoreV1PodForAllNamespaces"),
    (POD, "/api/v1/namespaces/{namespace}/pods/{name}/status", "patch", "patch", "patchCoreV1NamespacedPodStatus"),
    (POD, "/api/v1/namespaces/{namespace}/pods/{name}/binding", "post", "post", "createCoreV1NamespacedPodBinding"),
    (POD, "/api/v1/namespaces/{namespace}/pods/{name}/eviction", "post", "post",
     "createCoreV1NamespacedPodEviction"),
    (POD, "/api/v1/namespaces/{namespace}/pods/{name}/log", "get", "get", "readCoreV1NamespacedPodLog"),
    (NODE, "/api/v1/nodes/{name}/status", "put", "put", "replaceCoreV1NodeStatus"),
    (NAMESPACE, "/api/v1/namespaces/{name}/finalize", "put", "put", "replaceCoreV1NamespaceFinalize"),
    (DEPLOYMENT, "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale", "patch", "patch",
     "patchAppsV1NamespacedDeploymentScale"),
    (DEPLOYMENT, "/apis/apps/v1/deployments", "get", "list", "listAppsV1DeploymentForAllNamespaces"),
    (CLUSTER_ROLE, "/apis/rbac.authorization.k8s.io/v1/clusterroles", "get", "list",
     "listRbacAuthorizationV1ClusterRole"),
    (MODEL, "/apis/serving.trireme.io/v1alpha1/namespaces/{namespace}/models/{name}", "patch", "patch",
     "patchServingTriremeIoV1alpha1NamespacedModel"),
    (FLEET, "/apis/serving.trireme.io/v1alpha1/fleets/{name}", "delete", "delete",
     "deleteServingTriremeIoV1alpha1Fleet"),
]


@pytest.mark.parametrize("resource,path,method,action,operation_id", OPERATIONS,
                         ids=[row[-1] for row in OPERATIONS])
def test_operations_carry_kube_apiserver_ids_and_actions(resource: ResourceDoc, path: str, method: str,
                                                         action: str, operation_id: str) -> None:
    for document in (v3(resource), v2()):
        operation = document["paths"][path][method]
        assert operation["operationId"] == operation_id
        assert operation["x-kubernetes-action"] == action


def test_cluster_scoped_resources_have_no_namespaced_or_all_namespaces_paths() -> None:
    paths = v3(NODE)["paths"]
    assert "/api/v1/nodes" in paths and "/api/v1/nodes/{name}" in paths
    assert not any("namespaces/{namespace}/nodes" in path for path in paths)
    assert "/api/v1/namespaces/{namespace}/nodes" not in paths


SUBRESOURCE_KINDS = [
    ("/api/v1/namespaces/{namespace}/pods/{name}/status", "patch", gvk("", "v1", "Pod"),
     "io.k8s.api.core.v1.Pod"),
    ("/api/v1/namespaces/{namespace}/pods/{name}/binding", "post", gvk("", "v1", "Binding"),
     "io.k8s.api.core.v1.Binding"),
    ("/api/v1/namespaces/{namespace}/pods/{name}/eviction", "post", gvk("policy", "v1", "Eviction"),
     "io.k8s.api.policy.v1.Eviction"),
    ("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale", "put", gvk("autoscaling", "v1", "Scale"),
     "io.k8s.api.autoscaling.v1.Scale"),
    ("/apis/serving.trireme.io/v1alpha1/namespaces/{namespace}/models/{name}/scale", "get",
     gvk("autoscaling", "v1", "Scale"), "io.k8s.api.autoscaling.v1.Scale"),
    ("/apis/serving.trireme.io/v1alpha1/namespaces/{namespace}/models/{name}/status", "put",
     gvk("serving.trireme.io", "v1alpha1", "Model"), "io.trireme.serving.v1alpha1.Model"),
]


@pytest.mark.parametrize("path,method,kind,body", SUBRESOURCE_KINDS, ids=[row[0].rsplit("/", 3)[1] + "/" +
                                                                           row[0].rsplit("/", 1)[1]
                                                                           for row in SUBRESOURCE_KINDS])
def test_subresources_are_published_with_the_kind_they_exchange(path: str, method: str, kind: dict[str, str],
                                                                 body: str) -> None:
    group_version = path.split("/namespaces/")[0].lstrip("/")
    document = orjson.loads(DOCS.v3(group_version) or b"{}")
    operation = document["paths"][path][method]
    assert operation["x-kubernetes-group-version-kind"] == kind
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": f"#/components/schemas/{body}"}
    assert body in document["components"]["schemas"]


def test_the_log_subresource_answers_plain_text_with_log_parameters() -> None:
    operation = v3(POD)["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/log"]["get"]
    assert operation["responses"]["200"]["content"] == {"text/plain": {"schema": {"type": "string"}}}
    assert {"container", "follow", "tailLines", "previous"} <= {p["name"] for p in operation["parameters"]}


# -- kubectl's probes ------------------------------------------------------------------


@pytest.mark.parametrize("resource", CATALOGUE, ids=lambda r: r.kind)
def test_kubectl_finds_server_side_field_validation_for_every_kind(resource: ResourceDoc) -> None:
    assert kubectl_supports_query_param(v3(resource), resource.gvk, "fieldValidation")


def test_the_field_validation_probe_fails_on_a_document_without_the_parameter() -> None:
    document = v3(POD)
    for item in document["paths"].values():
        if "patch" in item:
            item["patch"]["parameters"] = [p for p in item["patch"]["parameters"] if p["name"] != "fieldValidation"]
    assert not kubectl_supports_query_param(document, POD.gvk, "fieldValidation")


@pytest.mark.parametrize("param", ["fieldValidation", "fieldManager", "dryRun", "force"], ids=str)
def test_every_patch_operation_takes_the_apply_parameters(param: str) -> None:
    for resource in CATALOGUE:
        for path, item in v3(resource)["paths"].items():
            if "patch" in item:
                assert param in {p["name"] for p in item["patch"]["parameters"]}, path


@pytest.mark.parametrize("resource,strategic", [(r, not r.is_custom) for r in CATALOGUE],
                         ids=lambda value: value.kind if isinstance(value, ResourceDoc) else str(value))
def test_kubectl_patches_built_ins_strategically_and_custom_resources_by_merge(resource: ResourceDoc,
                                                                                strategic: bool) -> None:
    assert kubectl_patches_strategically(v3(resource), resource.gvk) is strategic


@pytest.mark.parametrize("resource", CATALOGUE, ids=lambda r: r.kind)
def test_every_patch_takes_json_merge_and_apply_patches(resource: ResourceDoc) -> None:
    for path, item in v3(resource)["paths"].items():
        if "patch" in item:
            content = item["patch"]["requestBody"]["content"]
            assert {"application/json-patch+json", "application/merge-patch+json", APPLY_PATCH} <= set(content)
            assert (STRATEGIC_MERGE_PATCH in content) is (not resource.is_custom), path
    swagger_patch = v2()["paths"][f"/{resource.group_version_path}/" + (
        f"namespaces/{{namespace}}/{resource.plural}/{{name}}" if resource.namespaced
        else f"{resource.plural}/{{name}}")]["patch"]
    assert (STRATEGIC_MERGE_PATCH in swagger_patch["consumes"]) is (not resource.is_custom)


@pytest.mark.parametrize("resource", CATALOGUE, ids=lambda r: r.kind)
def test_kubectl_explain_finds_each_kind(resource: ResourceDoc) -> None:
    schema = kubectl_explain_kind(v3(resource), resource)
    assert {"apiVersion", "kind", "metadata"} <= set(schema["properties"])
    assert schema["type"] == "object"


def test_kubectl_explain_walks_into_referenced_fields() -> None:
    document = v3(POD)
    pod = kubectl_explain_kind(document, POD)
    spec = resolve_v3(document, pod["properties"]["spec"])
    containers = spec["properties"]["containers"]
    assert containers["type"] == "array"
    container = resolve_v3(document, containers["items"])
    assert container["properties"]["image"]["type"] == "string"
    assert container["required"] == ["name"]


# -- integrity -------------------------------------------------------------------------


def assert_references_resolve(document: dict[str, Any], prefix: str, schemas: dict[str, Any]) -> None:
    references = {value for key, value in walk(document) if key == "$ref" and isinstance(value, str)}
    assert references, "a document without references proves nothing"
    for reference in references:
        if reference.startswith(prefix):
            assert reference.removeprefix(prefix) in schemas, reference
        else:
            assert reference.startswith("#/parameters/"), reference
            assert reference.removeprefix("#/parameters/") in document["parameters"], reference


@settings(max_examples=25, deadline=None)
@given(st.sets(st.sampled_from(CATALOGUE), min_size=1))
def test_every_reference_resolves_and_every_type_is_one_openapi_type(served: set[ResourceDoc]) -> None:
    docs = OpenAPIDocs(served)
    for path in docs.group_version_paths:
        document = orjson.loads(docs.v3(path) or b"{}")
        schemas = document["components"]["schemas"]
        assert_references_resolve(document, "#/components/schemas/", schemas)
        assert all(isinstance(t, str) for t in schema_types(schemas))
        for item in document["paths"].values():
            for method in ("get", "put", "post", "patch", "delete"):
                if method in item:
                    assert set(item[method]["x-kubernetes-group-version-kind"]) == {"group", "version", "kind"}
    swagger = v2(docs)
    assert_references_resolve(swagger, "#/definitions/", swagger["definitions"])
    assert all(isinstance(t, str) for t in schema_types(swagger["definitions"]))


def test_v3_wraps_described_references_in_all_of_and_v2_keeps_them_beside() -> None:
    pod_v3 = v3(POD)["components"]["schemas"]["io.k8s.api.core.v1.Pod"]["properties"]["spec"]
    pod_v2 = v2()["definitions"]["io.k8s.api.core.v1.Pod"]["properties"]["spec"]
    assert pod_v3["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}]
    assert "$ref" not in pod_v3 and pod_v3["description"]
    assert pod_v2["$ref"] == "#/definitions/io.k8s.api.core.v1.PodSpec" and pod_v2["description"]


def test_built_in_definitions_keep_patch_strategies_and_list_keys() -> None:
    spec = v3(POD)["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]
    containers = spec["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["x-kubernetes-list-map-keys"] == ["name"]


def test_built_in_kinds_publish_api_version_and_kind_without_pinning_enums() -> None:
    pod = v3(POD)["components"]["schemas"]["io.k8s.api.core.v1.Pod"]
    assert pod["properties"]["apiVersion"] == {"description": pod["properties"]["apiVersion"]["description"],
                                               "type": "string"}
    assert "enum" not in pod["properties"]["kind"]
    assert pod["x-kubernetes-group-version-kind"] == [gvk("", "v1", "Pod")]


@pytest.mark.parametrize("name,swagger,openapi3", [
    ("io.k8s.apimachinery.pkg.api.resource.Quantity", {"type": "string"},
     {"oneOf": [{"type": "string"}, {"type": "number"}]}),
    ("io.k8s.apimachinery.pkg.util.intstr.IntOrString", {"type": "string", "format": "int-or-string"},
     {"format": "int-or-string", "oneOf": [{"type": "integer"}, {"type": "string"}]}),
], ids=["Quantity", "IntOrString"])
def test_union_scalars_are_published_as_kube_apiserver_does(name: str, swagger: dict[str, Any],
                                                            openapi3: dict[str, Any]) -> None:
    published_v2 = dict(v2()["definitions"][name])
    published_v3 = dict(v3(POD)["components"]["schemas"][name])
    published_v2.pop("description", None)
    published_v3.pop("description", None)
    assert published_v2 == swagger
    assert published_v3 == openapi3


# -- custom resources --------------------------------------------------------------------


def model_schema(dialect_document: dict[str, Any], section: str) -> dict[str, Any]:
    return dialect_document[section]["io.trireme.serving.v1alpha1.Model"]


def test_custom_definitions_are_named_by_reversed_group() -> None:
    assert custom_definition_name("serving.trireme.io", "v1alpha1", "Model") == "io.trireme.serving.v1alpha1.Model"


def test_custom_resources_publish_their_schema_with_object_meta_and_their_gvk() -> None:
    schema = model_schema(v3(MODEL)["components"], "schemas")
    assert schema["x-kubernetes-group-version-kind"] == [MODEL.gvk]
    assert schema["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]
    assert schema["properties"]["apiVersion"]["type"] == "string"
    assert schema["properties"]["spec"] == MODEL_SCHEMA["properties"]["spec"]
    assert MODEL_SCHEMA["properties"].keys() == {"spec", "status"}, "the CRD's schema must not be modified"


def test_custom_resources_get_a_list_kind() -> None:
    schemas = v3(MODEL)["components"]["schemas"]
    model_list = schemas["io.trireme.serving.v1alpha1.ModelList"]
    assert model_list["x-kubernetes-group-version-kind"] == [gvk("serving.trireme.io", "v1alpha1", "ModelList")]
    assert model_list["properties"]["items"]["items"] == {"$ref": "#/components/schemas/io.trireme.serving."
                                                                   "v1alpha1.Model"}
    assert model_list["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"}]
    listing = v3(MODEL)["paths"]["/apis/serving.trireme.io/v1alpha1/namespaces/{namespace}/models"]["get"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/io.trireme.serving.v1alpha1.ModelList"}


def test_swagger_gets_custom_schemas_without_what_swagger_cannot_say() -> None:
    schema = model_schema(v2(), "definitions")
    spec = schema["properties"]["spec"]
    assert spec["properties"]["note"] == {}, "nullable fields lose their type"
    assert spec["required"] == ["model"], "nullable fields are no longer required"
    assert spec["properties"]["port"] == {"x-kubernetes-int-or-string": True}
    assert spec["properties"]["extra"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert spec["properties"]["replicas"] == {"type": "integer", "minimum": 0}
    assert schema["properties"]["metadata"]["$ref"] == "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def test_a_custom_resource_without_a_schema_is_free_form() -> None:
    schema = v3(FLEET)["components"]["schemas"]["io.trireme.serving.v1alpha1.Fleet"]
    assert schema["x-kubernetes-preserve-unknown-fields"] is True
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata"}


def test_a_built_in_kind_without_a_definition_is_refused() -> None:
    with pytest.raises(ValueError, match="Widget"):
        OpenAPIDocs([ResourceDoc("example.com", "v1", "Widget", "widgets", True)])


def test_every_resource_the_server_serves_has_a_definition() -> None:
    docs = OpenAPIDocs(ResourceDoc(rt.group, rt.version, rt.kind, rt.plural, rt.namespaced,
                                   set(rt.subresources), rt.definition) for rt in BUILTIN_RESOURCES)
    for rt in BUILTIN_RESOURCES:
        document = orjson.loads(docs.v3(rt.base_path) or b"{}")
        assert rt.definition in document["components"]["schemas"], rt.kind
        assert kubectl_supports_query_param(document, gvk(rt.group, rt.version, rt.kind), "fieldValidation")


# -- caching and change ---------------------------------------------------------------


def test_documents_are_built_once_per_resource_set() -> None:
    docs = OpenAPIDocs(CATALOGUE)
    assert docs.v2() is docs.v2()
    assert docs.v3("api/v1") is docs.v3("api/v1")


def test_the_same_resources_in_another_order_give_the_same_documents() -> None:
    shuffled = OpenAPIDocs(reversed(CATALOGUE))
    assert shuffled.v2_etag() == DOCS.v2_etag()
    assert shuffled.v3_index() == DOCS.v3_index()


def test_updating_to_the_same_resources_changes_nothing() -> None:
    docs = OpenAPIDocs(CATALOGUE)
    index = docs.v3_index()
    assert docs.update(list(CATALOGUE)) is False
    assert docs.v3_index() == index


def test_a_new_custom_resource_changes_only_its_group_version_and_v2() -> None:
    docs = OpenAPIDocs(BUILTINS)
    before, v2_before = docs.v3_index()["paths"], docs.v2_etag()
    assert docs.update([*BUILTINS, MODEL]) is True
    after = docs.v3_index()["paths"]
    assert set(after) - set(before) == {"apis/serving.trireme.io/v1alpha1"}
    assert all(after[path] == before[path] for path in before)
    assert docs.v2_etag() != v2_before
    assert b"io.trireme.serving.v1alpha1.Model" in docs.v2()


def test_a_changed_custom_schema_changes_the_hash_of_its_document() -> None:
    docs = OpenAPIDocs([MODEL])
    before = docs.v3_etag(MODEL.group_version_path)
    changed_schema = copy.deepcopy(MODEL_SCHEMA)
    changed_schema["properties"]["spec"]["properties"]["model"]["maxLength"] = 63
    changed = ResourceDoc(MODEL.group, MODEL.version, MODEL.kind, MODEL.plural, MODEL.namespaced,
                          MODEL.subresources, crd_schema=changed_schema)
    assert docs.update([changed]) is True
    assert docs.v3_etag(MODEL.group_version_path) != before
    assert b'"maxLength":63' in (docs.v3(MODEL.group_version_path) or b"")


def test_removing_the_last_kind_of_a_group_version_removes_its_document() -> None:
    docs = OpenAPIDocs(CATALOGUE)
    docs.update([r for r in CATALOGUE if r.group != "policy"])
    assert docs.v3("apis/policy/v1") is None
    assert "apis/policy/v1" not in docs.v3_index()["paths"]


def test_v2_for_every_served_kind_builds_well_under_a_second() -> None:
    served = [ResourceDoc(rt.group, rt.version, rt.kind, rt.plural, rt.namespaced, set(rt.subresources),
                          rt.definition) for rt in BUILTIN_RESOURCES] + list(CUSTOM)
    openapi._v2_for.cache_clear()
    openapi._published_definition.cache_clear()
    started = time.perf_counter()
    body = OpenAPIDocs(served).v2()
    assert time.perf_counter() - started < 0.5
    assert len(body) > 100_000


@pytest.mark.parametrize("accept,json_ok", [
    (None, True),
    ("application/json", True),
    ("application/json, */*", True),
    ("*/*", True),
    ("application/*;q=0.5", True),
    (openapi.OPENAPI_V2_PROTOBUF, False),
    ("application/com.github.proto-openapi.spec.v2.v1.0+protobuf", False),
    ("application/json;q=0, " + openapi.OPENAPI_V2_PROTOBUF, False),
    ("application/yaml", False),
], ids=str)
def test_json_is_offered_only_to_clients_that_accept_it(accept: str | None, json_ok: bool) -> None:
    assert accepts_json(accept) is json_ok


# -- checking built-in objects ---------------------------------------------------------


def a_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "triton-0", "namespace": "default", "labels": {"app": "triton"},
                     "annotations": {"note": "x"}, "creationTimestamp": None,
                     "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                                        "fieldsV1": {"f:metadata": {"f:labels": {}}}}]},
        "spec": {
            "containers": [{
                "name": "triton", "image": "nvcr.io/nvidia/tritonserver:24.05-py3",
                "args": ["tritonserver", "--model-repository=/models"],
                "ports": [{"containerPort": 8000, "name": "http"}, {"containerPort": 8002, "name": "metrics"}],
                "resources": {"limits": {"nvidia.com/gpu": 1, "cpu": "4", "memory": "16Gi"},
                              "requests": {"cpu": 2.5, "memory": "8Gi"}},
                "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5},
                "env": [{"name": "A", "value": "1"},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "volumeMounts": [{"name": "models", "mountPath": "/models"}],
            }],
            "volumes": [{"name": "models", "emptyDir": {}}],
            "nodeSelector": {"nvidia.com/gpu.product": "A100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "restartPolicy": "Always", "priorityClassName": None,
        },
    }


def changed(obj: dict[str, Any], path: list[str | int], value: Any) -> dict[str, Any]:
    """A copy of ``obj`` with ``value`` at ``path``; ``DELETE`` removes the field."""
    result = copy.deepcopy(obj)
    parent = result
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return result


DELETE = object()
CONTAINER = ["spec", "containers", 0]

INVALID_PODS = [
    ("image is a number", [*CONTAINER, "image"], 5,
     Cause("spec.containers[0].image", "Invalid value: 5: must be of type string", "FieldValueTypeInvalid")),
    ("port is a string", [*CONTAINER, "ports", 1, "containerPort"], "8002",
     Cause("spec.containers[0].ports[1].containerPort", 'Invalid value: "8002": must be of type integer',
           "FieldValueTypeInvalid")),
    ("container without a name", [*CONTAINER, "name"], DELETE,
     Cause("spec.containers[0].name", "Required value", "FieldValueRequired")),
    ("pod without containers", ["spec", "containers"], DELETE,
     Cause("spec.containers", "Required value", "FieldValueRequired")),
    ("containers are null", ["spec", "containers"], None,
     Cause("spec.containers", "Required value", "FieldValueRequired")),
    ("quantity is a boolean", [*CONTAINER, "resources", "limits", "cpu"], True,
     Cause("spec.containers[0].resources.limits[cpu]", "Invalid value: true: must be of type string or number",
           "FieldValueTypeInvalid")),
    ("label value is a number", ["metadata", "labels", "app"], 3,
     Cause("metadata.labels[app]", "Invalid value: 3: must be of type string", "FieldValueTypeInvalid")),
    ("spec is a list", ["spec"], [],
     Cause("spec", 'Invalid value: "array": must be of type object', "FieldValueTypeInvalid")),
    ("int-or-string is an object", [*CONTAINER, "readinessProbe", "httpGet", "port"], {"n": 1},
     Cause("spec.containers[0].readinessProbe.httpGet.port",
           'Invalid value: "object": must be of type string or integer', "FieldValueTypeInvalid")),
    ("boolean is a string", ["spec", "hostNetwork"], "yes",
     Cause("spec.hostNetwork", 'Invalid value: "yes": must be of type boolean', "FieldValueTypeInvalid")),
    ("env var without a name", [*CONTAINER, "env", 1, "name"], DELETE,
     Cause("spec.containers[0].env[1].name", "Required value", "FieldValueRequired")),
]


def test_a_typical_pod_is_valid_and_has_no_unknown_fields() -> None:
    assert validate_builtin(a_pod(), "v1", "Pod") == []
    assert unknown_fields(a_pod(), "v1", "Pod") == []


@pytest.mark.parametrize("path,value,cause", [row[1:] for row in INVALID_PODS], ids=[row[0] for row in INVALID_PODS])
def test_invalid_pods_are_reported_with_kubernetes_field_paths(path: list[str | int], value: Any,
                                                               cause: Cause) -> None:
    assert validate_builtin(changed(a_pod(), path, value), "v1", "Pod") == [cause]


def test_every_error_of_an_object_is_reported() -> None:
    pod = changed(changed(a_pod(), [*CONTAINER, "image"], 5), [*CONTAINER, "name"], DELETE)
    assert {c.field for c in validate_builtin(pod, "v1", "Pod")} == {"spec.containers[0].image",
                                                                      "spec.containers[0].name"}


@pytest.mark.parametrize("api_version,kind,obj,fields", [
    ("apps/v1", "Deployment", {"spec": {}}, ["spec.selector", "spec.template"]),
    ("apps/v1", "Deployment", {"spec": {"replicas": "3", "selector": {}, "template": {}}}, ["spec.replicas"]),
    ("v1", "ConfigMap", {"data": {"a": 1}}, ["data[a]"]),
    ("policy/v1", "Eviction", {"metadata": {"name": 5}}, ["metadata.name"]),
    ("autoscaling/v1", "Scale", {"spec": {"replicas": 2}}, []),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition",
     {"spec": {"group": "g", "names": {"plural": "ws"}, "scope": "Namespaced", "versions": [
         {"name": "v1", "served": True, "storage": True,
          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                         "default": {"any": ["json"]}}}}]}},
     ["spec.names.kind"]),
], ids=["deployment-required", "deployment-replicas", "configmap-data", "eviction-name", "scale", "crd"])
def test_other_built_in_kinds_are_checked_against_their_own_definitions(api_version: str, kind: str,
                                                                        obj: dict[str, Any],
                                                                        fields: list[str]) -> None:
    assert [cause.field for cause in validate_builtin(obj, api_version, kind)] == fields


@pytest.mark.parametrize("api_version,kind", [("serving.trireme.io/v1alpha1", "Model"), ("v1", "Widget"),
                                              ("apps/v9", "Deployment")], ids=str)
def test_kinds_without_a_built_in_definition_are_not_checked(api_version: str, kind: str) -> None:
    assert definition_for(api_version, kind) is None
    assert validate_builtin({"spec": 5}, api_version, kind) == []
    assert unknown_fields({"spec": {"anything": 1}}, api_version, kind) == []


UNKNOWN = [
    ("top level", ["specification"], {}, ["specification"]),
    ("metadata", ["metadata", "colour"], "red", ["metadata.colour"]),
    ("container field", [*CONTAINER, "imagePullPolicyy"], "Always", ["spec.containers[0].imagePullPolicyy"]),
    ("deep in a list", [*CONTAINER, "env", 1, "valueFrom", "fieldRef", "path"], "x",
     ["spec.containers[0].env[1].valueFrom.fieldRef.path"]),
    ("inside an empty struct", ["spec", "volumes", 0, "emptyDir", "size"], "1Gi",
     ["spec.volumes[0].emptyDir.size"]),
    ("free-form fieldsV1", ["metadata", "managedFields", 0, "fieldsV1", "f:spec"], {}, []),
    ("map keys are data", ["metadata", "labels", "anything.example.com/x"], "y", []),
]


@pytest.mark.parametrize("path,value,fields", [row[1:] for row in UNKNOWN], ids=[row[0] for row in UNKNOWN])
def test_unknown_fields_are_listed_by_path_and_do_not_fail_validation(path: list[str | int], value: Any,
                                                                      fields: list[str]) -> None:
    pod = changed(a_pod(), path, value)
    assert unknown_fields(pod, "v1", "Pod") == fields
    assert validate_builtin(pod, "v1", "Pod") == []


def test_unknown_fields_of_a_custom_resource_definition_schema_are_found() -> None:
    crd = {"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
        "type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-colour": "red"}}}}}]}}
    assert unknown_fields(crd, "apiextensions.k8s.io/v1", "CustomResourceDefinition") == [
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-colour"]


KNOWN_PLACES = [["metadata"], ["spec"], [*CONTAINER], [*CONTAINER, "resources"], ["spec", "tolerations", 0],
                [*CONTAINER, "readinessProbe", "httpGet"]]


@settings(max_examples=40, deadline=None)
@given(place=st.sampled_from(KNOWN_PLACES),
       name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12).map(lambda s: "zz" + s),
       value=st.one_of(st.none(), st.integers(), st.text(max_size=5), st.dictionaries(st.text(max_size=3),
                                                                                       st.integers(), max_size=2)))
def test_an_added_unknown_field_is_found_exactly_where_it_was_added(place: list[str | int], name: str,
                                                                    value: Any) -> None:
    pod = changed(a_pod(), [*place, name], value)
    expected = field_path("io.k8s.api.core.v1.Pod", [*place, name])
    assert unknown_fields(pod, "v1", "Pod") == [expected]
    assert expected.endswith("." + name)
    assert validate_builtin(pod, "v1", "Pod") == []


@pytest.mark.parametrize("keys,path", [
    (["spec", "containers", 0, "image"], "spec.containers[0].image"),
    (["metadata", "labels", "app"], "metadata.labels[app]"),
    (["spec", "containers", 2, "resources", "limits", "nvidia.com/gpu"],
     "spec.containers[2].resources.limits[nvidia.com/gpu]"),
    ([], ""),
], ids=["list", "map", "nested map", "root"])
def test_field_paths_are_written_like_kubernetes_writes_them(keys: list[str | int], path: str) -> None:
    assert field_path("io.k8s.api.core.v1.Pod", keys) == path


def test_validating_a_typical_pod_takes_well_under_a_millisecond() -> None:
    pod = a_pod()
    validate_builtin(pod, "v1", "Pod")
    rounds = 200
    started = time.perf_counter()
    for _ in range(rounds):
        validate_builtin(pod, "v1", "Pod")
        unknown_fields(pod, "v1", "Pod")
    per_pod_ms = (time.perf_counter() - started) / rounds * 1000
    assert per_pod_ms < 3, f"{per_pod_ms:.2f} ms per pod"
