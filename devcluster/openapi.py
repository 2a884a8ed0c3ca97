"""OpenAPI documents for the local API server, and schema checks of built-in kinds.

kubectl and helm read the server's OpenAPI. ``kubectl explain`` renders the v3
documents; ``kubectl apply`` computes strategic-merge patches from them and
decides, from the parameters of each kind's PATCH operation, whether the server
validates fields itself (``fieldValidation``) or kubectl must validate on the
client; helm goes through the same validator on install. Nothing here is
hand-written: every schema comes from the Kubernetes 1.37 type definitions that
the ``kubernetes-validate`` package ships, or from the schemas of served
CustomResourceDefinitions, and is published the way kube-apiserver publishes it
(``#/definitions/`` in Swagger 2.0, ``#/components/schemas/`` and ``allOf``-wrapped
references in OpenAPI 3.0, ``x-kubernetes-group-version-kind`` on kinds and
operations). The same definitions validate built-in objects (types and required
fields) and find the fields a schema does not know, for
``fieldValidation=Strict|Warn``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.resources
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .errors import Cause

KUBERNETES_VERSION = "v1.37.0"
"""The Kubernetes release whose type definitions are published and enforced."""

_DEFINITIONS_FILE = f"kubernetes-json-schema/{KUBERNETES_VERSION}-local/_definitions.json"

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
LIST_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"
STATUS = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
DELETE_OPTIONS = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"
PATCH = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
BUILTIN_PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)
"""Built-in kinds take all four patch types."""
CUSTOM_PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, APPLY_PATCH)
"""Custom resources have no Go struct tags, hence no strategic merge; kubectl reads
its absence from the PATCH operation and sends a JSON merge patch instead."""


@dataclass(frozen=True)
class ResourceDoc:
    """What the OpenAPI documents need to know about one served resource.

    ``definition_name`` names the built-in definition (``io.k8s.api.core.v1.Pod``;
    looked up by group/version/kind when None). ``crd_schema`` is the
    ``openAPIV3Schema`` of a custom resource version; a resource with one is
    published as a custom resource. Subresources: ``status``, ``scale``,
    ``binding``, ``eviction``, ``log``, ``finalize``; any other name is published
    like ``status`` (get/replace/patch of the parent kind).
    """

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    subresources: frozenset[str] = frozenset()
    definition_name: str | None = None
    crd_schema: dict[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "subresources", frozenset(self.subresources))

    @property
    def is_custom(self) -> bool:
        return self.crd_schema is not None

    @property
    def group_version_path(self) -> str:
        """``api/v1`` or ``apis/<group>/<version>``: the key of its v3 document."""
        return f"apis/{self.group}/{self.version}" if self.group else f"api/{self.version}"

    @property
    def gvk(self) -> dict[str, str]:
        return {"group": self.group, "kind": self.kind, "version": self.version}


# -- the Kubernetes definitions ------------------------------------------------


@dataclass(frozen=True)
class _Catalog:
    """The Kubernetes definitions as shipped: JSON Schema, ``#/$defs/`` references,
    nullable optional fields (``type: [string, "null"]``)."""

    definitions: dict[str, dict[str, Any]]
    by_gvk: dict[tuple[str, str, str], str]


@functools.cache
def _catalog() -> _Catalog:
    source = importlib.resources.files("kubernetes_validate").joinpath(_DEFINITIONS_FILE)
    definitions = orjson.loads(source.read_bytes())["$defs"]
    by_gvk = {(gvk["group"], gvk["version"], gvk["kind"]): name
              for name, definition in definitions.items()
              for gvk in definition.get("x-kubernetes-group-version-kind", ())}
    return _Catalog(definitions, by_gvk)


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def definition_for(api_version: str, kind: str) -> str | None:
    """The built-in definition of ``kind`` in ``api_version``, or None."""
    group, version = _split_api_version(api_version)
    return _catalog().by_gvk.get((group, version, kind))


def _schema_references(node: Mapping[str, Any]) -> Iterator[str]:
    """Names of the definitions a schema refers to directly."""
    ref = node.get("$ref")
    if isinstance(ref, str):
        yield _ref_name(ref)
    for sub in node.get("properties", {}).values():
        yield from _schema_references(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _schema_references(node[key])
    for key in ("oneOf", "anyOf", "allOf"):
        for sub in node.get(key, ()):
            yield from _schema_references(sub)


@functools.cache
def _references(name: str) -> frozenset[str]:
    return frozenset(_schema_references(_catalog().definitions[name]))


def _closure(roots: Iterable[str]) -> set[str]:
    """The definitions in ``roots`` and all they refer to, transitively."""
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(_references(name) - seen)
    return seen


# -- publishing schemas ----------------------------------------------------------


@dataclass(frozen=True)
class _Dialect:
    """How one OpenAPI version spells references and schema details."""

    name: str
    ref_prefix: str
    wraps_refs: bool
    """OpenAPI 3.0 ignores siblings of ``$ref``; kube-apiserver wraps such references
    in ``allOf`` there so descriptions and extensions survive."""


V2 = _Dialect("v2", "#/definitions/", wraps_refs=False)
V3 = _Dialect("v3", "#/components/schemas/", wraps_refs=True)

_PUBLISHED_SCALARS: dict[str, dict[str, dict[str, Any]]] = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "v2": {"type": "string"},
        "v3": {"oneOf": [{"type": "string"}, {"type": "number"}]},
    },
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "v2": {"type": "string", "format": "int-or-string"},
        "v3": {"format": "int-or-string", "oneOf": [{"type": "integer"}, {"type": "string"}]},
    },
}
"""Union scalars as kube-apiserver publishes them: Swagger 2.0 has no ``oneOf``."""


def _single_type(value: str | list[str]) -> str | None:
    if isinstance(value, str):
        return value
    types = [t for t in value if t != "null"]
    return types[0] if len(types) == 1 else None


def _publish_schema(node: Mapping[str, Any], dialect: _Dialect) -> dict[str, Any]:
    """One schema node in OpenAPI form: single types, dialect references."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type":
            single = _single_type(value)
            if single is not None:
                out["type"] = single
        elif key == "$ref" and isinstance(value, str):
            out["$ref"] = dialect.ref_prefix + _ref_name(value)
        elif key == "properties":
            out[key] = {name: _publish_schema(sub, dialect) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _publish_schema(value, dialect)
        elif key in ("oneOf", "anyOf", "allOf"):
            out[key] = [_publish_schema(sub, dialect) for sub in value]
        else:
            out[key] = value
    if dialect.wraps_refs and "$ref" in out and len(out) > 1:
        out["allOf"] = [{"$ref": out.pop("$ref")}]
    return out


@functools.cache
def _published_definition(name: str, dialect: _Dialect) -> dict[str, Any]:
    """A built-in definition as kube-apiserver publishes it (shared: never mutate)."""
    source = _catalog().definitions[name]
    if name in _PUBLISHED_SCALARS:
        described = {"description": source["description"]} if "description" in source else {}
        return {**described, **_PUBLISHED_SCALARS[name][dialect.name]}
    published = _publish_schema(source, dialect)
    if "x-kubernetes-group-version-kind" in source:
        # the package pins apiVersion/kind with enums; the API's own schemas do not
        for meta_field in ("apiVersion", "kind"):
            published.get("properties", {}).get(meta_field, {}).pop("enum", None)
    return published


def _described_ref(name: str, description: str, dialect: _Dialect) -> dict[str, Any]:
    return _publish_schema({"$ref": name, "description": description}, dialect)


@functools.cache
def _type_meta_descriptions() -> dict[str, str]:
    """Descriptions of apiVersion, kind, metadata and list metadata, as built-in kinds have them."""
    definitions = _catalog().definitions
    pod = definitions["io.k8s.api.core.v1.Pod"]["properties"]
    pod_list = definitions["io.k8s.api.core.v1.PodList"]["properties"]
    return {"apiVersion": pod["apiVersion"]["description"], "kind": pod["kind"]["description"],
            "metadata": pod["metadata"]["description"], "listMetadata": pod_list["metadata"]["description"]}


def _add_type_meta(schema: dict[str, Any], meta: str, dialect: _Dialect) -> None:
    descriptions = _type_meta_descriptions()
    properties = schema.setdefault("properties", {})
    properties["apiVersion"] = {"description": descriptions["apiVersion"], "type": "string"}
    properties["kind"] = {"description": descriptions["kind"], "type": "string"}
    metadata_description = descriptions["metadata" if meta == OBJECT_META else "listMetadata"]
    properties["metadata"] = _described_ref(meta, metadata_description, dialect)
    schema["type"] = "object"


_V2_JUNCTORS = ("allOf", "oneOf", "anyOf", "not")


def _custom_schema_v2(node: Mapping[str, Any]) -> dict[str, Any]:
    """A CRD schema cut down for Swagger 2.0 like kube-apiserver does: no junctors,
    no ``nullable``, untyped where nullable, free-form where unknown fields are kept."""
    out = {key: value for key, value in node.items() if key not in _V2_JUNCTORS}
    if out.pop("nullable", False):
        for key in ("type", "items", "properties"):
            out.pop(key, None)
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("items", None)
        out.pop("properties", None)
    if isinstance(out.get("properties"), dict):
        nullable = {name for name, sub in out["properties"].items() if sub.get("nullable")}
        if nullable and "required" in out:
            out["required"] = [name for name in out["required"] if name not in nullable]
        out["properties"] = {name: _custom_schema_v2(sub) for name, sub in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _custom_schema_v2(out[key])
    if out.get("type") == "array" and "items" not in out:
        out.pop("type")
    return out


def custom_definition_name(group: str, version: str, kind: str) -> str:
    """``serving.trireme.io/v1alpha1 Model`` -> ``io.trireme.serving.v1alpha1.Model``."""
    return ".".join([*reversed(group.split(".")), version, kind])


def _custom_definition(resource: ResourceDoc, dialect: _Dialect) -> dict[str, Any]:
    schema = copy.deepcopy(resource.crd_schema) or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if dialect is V2:
        schema = _custom_schema_v2(schema)
    _add_type_meta(schema, OBJECT_META, dialect)
    schema["x-kubernetes-group-version-kind"] = [resource.gvk]
    return schema


def _list_definition(resource: ResourceDoc, item_definition: str, dialect: _Dialect) -> dict[str, Any]:
    """A ``<Kind>List`` for kinds that have none among the built-in definitions."""
    schema: dict[str, Any] = {
        "description": f"{resource.kind}List is a list of {resource.kind}",
        "required": ["items"],
        "properties": {"items": {
            "description": f"List of {resource.plural}. More info: "
                           "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md",
            "type": "array",
            "items": {"$ref": dialect.ref_prefix + item_definition}}},
        "x-kubernetes-group-version-kind": [{**resource.gvk, "kind": resource.kind + "List"}],
    }
    _add_type_meta(schema, LIST_META, dialect)
    return schema


# -- operations ------------------------------------------------------------------

_QUERY_PARAMETERS: dict[str, tuple[str, str]] = {
    "allowWatchBookmarks": ("boolean", "Ask for BOOKMARK events in a watch; servers may ignore it."),
    "continue": ("string", "The continue token of a previous page of a paged list."),
    "dryRun": ("string", "When present (value All), the request is checked and processed "
                         "but nothing is persisted."),
    "fieldManager": ("string", "The name of the actor making the change, recorded in managedFields; "
                               "required for apply patches."),
    "fieldSelector": ("string", "Restrict the returned objects by their fields (metadata.name=x)."),
    "fieldValidation": ("string", "What to do with unknown or duplicate fields in the request body: "
                                  "Ignore drops them, Warn drops them and returns a warning per field, "
                                  "Strict fails the request with BadRequest."),
    "force": ("boolean", "Apply patches only: take ownership of fields managed by other managers "
                         "instead of failing with a conflict."),
    "gracePeriodSeconds": ("integer", "Seconds before the object is deleted; zero deletes at once."),
    "ignoreStoreReadErrorWithClusterBreakingPotential": (
        "boolean", "Delete objects that cannot be read from storage; unsafe."),
    "labelSelector": ("string", "Restrict the returned objects by their labels."),
    "limit": ("integer", "The most objects to return in one page; a continue token follows when more exist."),
    "orphanDependents": ("boolean", "Deprecated: use propagationPolicy."),
    "propagationPolicy": ("string", "Whether and how dependents are garbage collected: "
                                    "Orphan, Background or Foreground."),
    "resourceVersion": ("string", "Which version of the data a list or watch starts from."),
    "resourceVersionMatch": ("string", "How resourceVersion applies to a list: Exact or NotOlderThan."),
    "sendInitialEvents": ("boolean", "Begin a watch with synthetic ADDED events for the current state."),
    "timeoutSeconds": ("integer", "End a list or watch call after this many seconds."),
    "watch": ("boolean", "Stream changes to the described objects instead of listing them."),
    "pretty": ("string", "If 'true', the output is indented."),
    "container": ("string", "The container whose log is returned; may be omitted for single-container pods."),
    "follow": ("boolean", "Keep the log stream open and follow new lines."),
    "insecureSkipTLSVerifyBackend": ("boolean", "Skip verifying the kubelet's serving certificate."),
    "limitBytes": ("integer", "The most bytes of log to return."),
    "previous": ("boolean", "Return the log of the previous, terminated container instance."),
    "sinceSeconds": ("integer", "Return log lines newer than this many seconds."),
    "sinceTime": ("string", "Return log lines from this RFC 3339 time on."),
    "stream": ("string", "Which stream of the log to return: All, Stdout or Stderr."),
    "tailLines": ("integer", "Return this many lines from the end of the log."),
    "timestamps": ("boolean", "Prefix every log line with its RFC 3339 timestamp."),
}
"""Query parameters by name: schema type and description."""

_LIST = ("allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit", "resourceVersion",
         "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch")
_WRITE = ("dryRun", "fieldManager", "fieldValidation")
_PATCH = (*_WRITE, "force")
_DELETE = ("dryRun", "gracePeriodSeconds", "ignoreStoreReadErrorWithClusterBreakingPotential",
           "orphanDependents", "propagationPolicy")
_DELETE_COLLECTION = (*_DELETE, "continue", "fieldSelector", "labelSelector", "limit", "resourceVersion",
                      "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds")
_LOG = ("container", "follow", "insecureSkipTLSVerifyBackend", "limitBytes", "previous", "sinceSeconds",
        "sinceTime", "stream", "tailLines", "timestamps")

_OK = (("200", "OK"),)
_WRITTEN = (("200", "OK"), ("201", "Created"))
_ACCEPTED = (("200", "OK"), ("201", "Created"), ("202", "Accepted"))
_DELETED = (("200", "OK"), ("202", "Accepted"))

JSON = "application/json"
TEXT = "text/plain"
WATCH_STREAM = "application/json;stream=watch"


@dataclass(frozen=True)
class _Operation:
    """One HTTP operation, independent of the OpenAPI version it is written in."""

    method: str
    action: str
    """``x-kubernetes-action``: list, post, get, put, patch, delete, deletecollection."""
    operation_id: str
    description: str
    tag: str
    gvk: dict[str, str] = field(hash=False)
    query: tuple[str, ...] = ()
    body: str | None = None
    """Definition name of the request body."""
    body_types: tuple[str, ...] = ("*/*",)
    body_required: bool = True
    response: str | None = None
    """Definition name of the response body; None for plain text."""
    responses: tuple[tuple[str, str], ...] = _OK
    produces: tuple[str, ...] = (JSON,)


@dataclass
class _PathItem:
    path_parameters: tuple[str, ...]
    operations: list[_Operation] = field(default_factory=list)


def _camel_words(text: str) -> list[str]:
    return [word[:1].upper() + word[1:] for word in re.split(r"[.\-]", text) if word]


def _group_words(group: str) -> list[str]:
    return _camel_words(group.removesuffix(".k8s.io")) if group else ["Core"]


def _operation_prefix(resource: ResourceDoc) -> str:
    """``CoreV1``, ``AppsV1``, ``RbacAuthorizationV1``, ``ServingTriremeIoV1alpha1``."""
    return "".join(_group_words(resource.group)) + resource.version[:1].upper() + resource.version[1:]


def _tag(resource: ResourceDoc) -> str:
    """``core_v1``, ``apps_v1``, ``servingTriremeIo_v1alpha1``."""
    words = _group_words(resource.group)
    return words[0].lower() + "".join(words[1:]) + "_" + resource.version


@dataclass(frozen=True)
class _Kind:
    """A served resource with the definitions that describe it."""

    resource: ResourceDoc
    definition: str
    list_definition: str
    list_is_builtin: bool


def _resolve(resource: ResourceDoc) -> _Kind:
    catalog = _catalog()
    if resource.is_custom:
        name = custom_definition_name(resource.group, resource.version, resource.kind)
        return _Kind(resource, name, name + "List", list_is_builtin=False)
    name = resource.definition_name or catalog.by_gvk.get((resource.group, resource.version, resource.kind))
    if name is None or name not in catalog.definitions:
        raise ValueError(f"no Kubernetes {KUBERNETES_VERSION} definition for "
                         f"{resource.group or 'core'}/{resource.version} {resource.kind}")
    list_name = catalog.by_gvk.get((resource.group, resource.version, resource.kind + "List"))
    if list_name is None:
        return _Kind(resource, name, name + "List", list_is_builtin=False)
    return _Kind(resource, name, list_name, list_is_builtin=True)


@dataclass(frozen=True)
class _Subresource:
    """How a subresource is published: its methods and the kind of its body."""

    methods: tuple[str, ...]
    """HTTP methods; ``log`` is a GET answered in plain text."""
    definition: str | None = None
    """The body's built-in definition; None: the parent kind."""
    gvk: tuple[str, str, str] | None = None
    """(group, version, kind) of the body; None: the parent's."""


_SUBRESOURCES: dict[str, _Subresource] = {
    "status": _Subresource(("get", "put", "patch")),
    "scale": _Subresource(("get", "put", "patch"), "io.k8s.api.autoscaling.v1.Scale", ("autoscaling", "v1", "Scale")),
    "binding": _Subresource(("post",), "io.k8s.api.core.v1.Binding", ("", "v1", "Binding")),
    "eviction": _Subresource(("post",), "io.k8s.api.policy.v1.Eviction", ("policy", "v1", "Eviction")),
    "finalize": _Subresource(("put",)),
    "log": _Subresource(("log",)),
}
_STATUS_LIKE = _SUBRESOURCES["status"]


def _resource_operations(kind: _Kind) -> dict[str, _PathItem]:
    """Paths of one resource: collection, item, all-namespaces list, subresources."""
    resource = kind.resource
    prefix = "/" + resource.group_version_path
    scope = "/namespaces/{namespace}" if resource.namespaced else ""
    scope_parameters = ("namespace",) if resource.namespaced else ()
    collection_path = f"{prefix}{scope}/{resource.plural}"
    item_path = collection_path + "/{name}"
    ops = _OperationFactory(resource)
    patch_types = CUSTOM_PATCH_TYPES if resource.is_custom else BUILTIN_PATCH_TYPES
    what = f"the specified {resource.kind}"
    paths = {
        collection_path: _PathItem(scope_parameters, [
            ops.make("get", "list", "list", f"list or watch objects of kind {resource.kind}", query=_LIST,
                     response=kind.list_definition, produces=(JSON, WATCH_STREAM)),
            ops.make("post", "post", "create", f"create a {resource.kind}", query=_WRITE, body=kind.definition,
                     response=kind.definition, responses=_ACCEPTED),
            ops.make("delete", "deletecollection", "delete", f"delete collection of {resource.kind}",
                     infix="Collection", query=_DELETE_COLLECTION, body=DELETE_OPTIONS, body_required=False,
                     response=STATUS),
        ]),
        item_path: _PathItem(("name", *scope_parameters), [
            ops.make("get", "get", "read", f"read {what}", response=kind.definition),
            ops.make("put", "put", "replace", f"replace {what}", query=_WRITE, body=kind.definition,
                     response=kind.definition, responses=_WRITTEN),
            ops.make("patch", "patch", "patch", f"partially update {what}", query=_PATCH, body=PATCH,
                     body_types=patch_types, response=kind.definition, responses=_WRITTEN),
            ops.make("delete", "delete", "delete", f"delete a {resource.kind}", query=_DELETE,
                     body=DELETE_OPTIONS, body_required=False, response=kind.definition, responses=_DELETED),
        ]),
    }
    if resource.namespaced:
        paths[f"{prefix}/{resource.plural}"] = _PathItem((), [
            ops.make("get", "list", "list", f"list or watch objects of kind {resource.kind}", scoped=False,
                     suffix="ForAllNamespaces", query=_LIST, response=kind.list_definition,
                     produces=(JSON, WATCH_STREAM))])
    for name in sorted(resource.subresources):
        paths[f"{item_path}/{name}"] = _PathItem(("name", *scope_parameters),
                                                 _subresource_operations(kind, name, ops, patch_types))
    return paths


class _OperationFactory:
    """Builds one resource's operations with kube-apiserver's operation ids
    (``patchCoreV1NamespacedPodStatus``, ``listAppsV1DeploymentForAllNamespaces``)."""

    def __init__(self, resource: ResourceDoc) -> None:
        self.resource = resource
        self.prefix = _operation_prefix(resource)
        self.tag = _tag(resource)

    def make(self, method: str, action: str, verb: str, description: str, *, infix: str = "",
             suffix: str = "", scoped: bool = True, gvk: dict[str, str] | None = None,
             **details: Any) -> _Operation:
        scope = "Namespaced" if scoped and self.resource.namespaced else ""
        operation_id = f"{verb}{self.prefix}{infix}{scope}{self.resource.kind}{suffix}"
        return _Operation(method, action, operation_id, description, self.tag, gvk or self.resource.gvk,
                          **details)


def _subresource_operations(kind: _Kind, name: str, ops: _OperationFactory,
                            patch_types: tuple[str, ...]) -> list[_Operation]:
    spec = _SUBRESOURCES.get(name, _STATUS_LIKE)
    body = spec.definition or kind.definition
    gvk = ({"group": spec.gvk[0], "kind": spec.gvk[2], "version": spec.gvk[1]} if spec.gvk
           else kind.resource.gvk)
    suffix = name[:1].upper() + name[1:]
    what = f"{name} of the specified {kind.resource.kind}"
    builders = {
        "log": lambda: ops.make("get", "get", "read", f"read {what}", suffix=suffix, query=_LOG, response=None,
                                produces=(TEXT,)),
        "get": lambda: ops.make("get", "get", "read", f"read {what}", suffix=suffix, gvk=gvk, response=body),
        "put": lambda: ops.make("put", "put", "replace", f"replace {what}", suffix=suffix, gvk=gvk,
                                query=_WRITE, body=body, response=body, responses=_WRITTEN),
        "patch": lambda: ops.make("patch", "patch", "patch", f"partially update {what}", suffix=suffix, gvk=gvk,
                                  query=_PATCH, body=PATCH, body_types=patch_types, response=body,
                                  responses=_WRITTEN),
        "post": lambda: ops.make("post", "post", "create", f"create {what}", suffix=suffix, gvk=gvk,
                                 query=_WRITE, body=body, response=body, responses=_ACCEPTED),
    }
    return [builders[method]() for method in spec.methods]


# -- rendering -----------------------------------------------------------------


def _ref(name: str, dialect: _Dialect) -> dict[str, str]:
    return {"$ref": dialect.ref_prefix + name}


def _path_parameter(name: str, dialect: _Dialect) -> dict[str, Any]:
    description = {"name": "name of the object", "namespace": "object name and auth scope, "
                   "such as for teams and projects"}[name]
    if dialect is V2:
        return {"name": name, "in": "path", "required": True, "type": "string", "uniqueItems": True,
                "description": description}
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "uniqueItems": True}}


def _query_parameter(name: str, dialect: _Dialect) -> dict[str, Any]:
    kind, description = _QUERY_PARAMETERS[name]
    if dialect is V2:
        return {"name": name, "in": "query", "type": kind, "uniqueItems": True, "description": description}
    return {"name": name, "in": "query", "description": description,
            "schema": {"type": kind, "uniqueItems": True}}


def _render_operation(operation: _Operation, dialect: _Dialect) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "description": operation.description,
        "operationId": operation.operation_id,
        "tags": [operation.tag],
        "x-kubernetes-action": operation.action,
        "x-kubernetes-group-version-kind": operation.gvk,
    }
    response_schema = (_ref(operation.response, dialect) if operation.response is not None
                       else {"type": "string"})
    if dialect is V2:
        rendered["parameters"] = [{"$ref": f"#/parameters/{name}"} for name in operation.query]
        if operation.body is not None:
            rendered["parameters"].append({"name": "body", "in": "body", "required": operation.body_required,
                                           "schema": _ref(operation.body, dialect)})
            rendered["consumes"] = list(operation.body_types)
        rendered["produces"] = list(operation.produces)
        rendered["schemes"] = ["https"]
        rendered["responses"] = {code: {"description": text, "schema": response_schema}
                                 for code, text in operation.responses}
    else:
        rendered["parameters"] = [_query_parameter(name, dialect) for name in operation.query]
        if operation.body is not None:
            rendered["requestBody"] = {
                "content": {media: {"schema": _ref(operation.body, dialect)} for media in operation.body_types},
                "required": operation.body_required}
        rendered["responses"] = {
            code: {"description": text, "content": {media: {"schema": response_schema}
                                                    for media in operation.produces}}
            for code, text in operation.responses}
    rendered["responses"]["401"] = {"description": "Unauthorized"}
    return rendered


def _render_paths(kinds: Sequence[_Kind], dialect: _Dialect) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for kind in kinds:
        for path, item in _resource_operations(kind).items():
            rendered: dict[str, Any] = {op.method: _render_operation(op, dialect) for op in item.operations}
            parameters = [_path_parameter(name, dialect) for name in item.path_parameters]
            rendered["parameters"] = [*parameters, _query_parameter("pretty", dialect) if dialect is V3
                                      else {"$ref": "#/parameters/pretty"}]
            paths[path] = rendered
    return paths


def _component_roots(kinds: Sequence[_Kind]) -> set[str]:
    roots = {STATUS, DELETE_OPTIONS, PATCH}
    for kind in kinds:
        if kind.resource.is_custom or not kind.list_is_builtin:
            roots.update((OBJECT_META, LIST_META))
        if not kind.resource.is_custom:
            roots.add(kind.definition)
        if kind.list_is_builtin:
            roots.add(kind.list_definition)
        for name in kind.resource.subresources:
            body = _SUBRESOURCES.get(name, _STATUS_LIKE).definition
            if body is not None:
                roots.add(body)
    return roots


def _render_schemas(kinds: Sequence[_Kind], dialect: _Dialect) -> dict[str, Any]:
    schemas = {name: _published_definition(name, dialect) for name in _closure(_component_roots(kinds))}
    for kind in kinds:
        if kind.resource.is_custom:
            schemas[kind.definition] = _custom_definition(kind.resource, dialect)
        if not kind.list_is_builtin:
            schemas[kind.list_definition] = _list_definition(kind.resource, kind.definition, dialect)
    return schemas


_INFO = {"title": "Kubernetes", "version": KUBERNETES_VERSION}
_SECURITY_SCHEME = {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header",
                                    "description": "Bearer Token authentication"}}


def _v2_document(kinds: Sequence[_Kind]) -> dict[str, Any]:
    used = sorted({name for kind in kinds for item in _resource_operations(kind).values()
                   for op in item.operations for name in op.query} | {"pretty"})
    return {"swagger": "2.0", "info": _INFO, "paths": _render_paths(kinds, V2),
            "definitions": _render_schemas(kinds, V2),
            "parameters": {name: _query_parameter(name, V2) for name in used},
            "securityDefinitions": _SECURITY_SCHEME, "security": [{"BearerToken": []}]}


def _v3_document(kinds: Sequence[_Kind]) -> dict[str, Any]:
    return {"openapi": "3.0.0", "info": _INFO, "paths": _render_paths(kinds, V3),
            "components": {"schemas": _render_schemas(kinds, V3), "securitySchemes": _SECURITY_SCHEME},
            "security": [{"BearerToken": []}]}


OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
"""What client-go asks ``/openapi/v2`` for, and only that: it decodes the answer as
protobuf whatever its content type, so a JSON answer fails as "proto: cannot parse
invalid wire-format data"; 406 Not Acceptable fails cleanly, like kube-apiserver does
for types it cannot produce."""


def accepts_json(accept: str | None) -> bool:
    """Whether an ``Accept`` header admits a JSON OpenAPI document (no header does)."""
    if not accept:
        return True
    for clause in accept.split(","):
        media, *params = (part.strip() for part in clause.split(";"))
        weights = [param.partition("=")[2] for param in params if param.partition("=")[0].strip() == "q"]
        if weights and _weight(weights[0]) == 0:
            continue
        if media.lower() in ("application/json", "application/*", "*/*"):
            return True
    return False


def _weight(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 1.0


@dataclass(frozen=True)
class Document:
    """A serialized OpenAPI document and its entity tag (a hash of the bytes)."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, document: dict[str, Any]) -> Document:
        body = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        return cls(body, hashlib.sha512(body).hexdigest().upper())


@functools.lru_cache(maxsize=256)
def _v3_for(resources: tuple[ResourceDoc, ...]) -> Document:
    """One group-version's document; cached across ``OpenAPIDocs`` instances so a
    new CRD rebuilds only its own group-version."""
    return Document.of(_v3_document([_resolve(resource) for resource in resources]))


@functools.lru_cache(maxsize=8)
def _v2_for(resources: tuple[ResourceDoc, ...]) -> Document:
    return Document.of(_v2_document([_resolve(resource) for resource in resources]))


def _ordered(resources: Iterable[ResourceDoc]) -> tuple[ResourceDoc, ...]:
    return tuple(sorted(resources, key=lambda r: (r.group, r.version, r.plural, r.kind)))


class OpenAPIDocs:
    """The OpenAPI documents for one set of served resources.

    Built lazily and cached: ``v2()`` and every ``v3(path)`` serialize once per
    resource set, and a group-version's document is shared by every instance that
    serves the same resources in it (so a new CRD rebuilds only its own). Entity
    tags are hashes of the bytes, so they change exactly when a document does;
    serve ``v3`` documents with ``Cache-Control: public, immutable`` when the
    request's ``hash`` query matches ``v3_etag``. Construction and ``update``
    check every resource has a definition (ValueError otherwise). The
    ``crd_schema`` dicts handed in must not be mutated afterwards.
    """

    def __init__(self, resources: Iterable[ResourceDoc] = ()) -> None:
        self._resources: tuple[ResourceDoc, ...] = ()
        self._by_group_version: dict[str, tuple[ResourceDoc, ...]] = {}
        self.update(resources)

    def update(self, resources: Iterable[ResourceDoc]) -> bool:
        """Serve a new resource set; True when it differs from the current one."""
        ordered = _ordered(resources)
        if ordered == self._resources:
            return False
        for resource in ordered:
            _resolve(resource)
        grouped: dict[str, list[ResourceDoc]] = {}
        for resource in ordered:
            grouped.setdefault(resource.group_version_path, []).append(resource)
        self._resources = ordered
        self._by_group_version = {path: tuple(items) for path, items in sorted(grouped.items())}
        return True

    @property
    def group_version_paths(self) -> list[str]:
        return list(self._by_group_version)

    def v2(self) -> bytes:
        """The Swagger 2.0 document (JSON) of every served resource."""
        return _v2_for(self._resources).body

    def v2_etag(self) -> str:
        return _v2_for(self._resources).etag

    def v3_index(self) -> dict[str, Any]:
        """``/openapi/v3``: each group-version and the URL of its document."""
        return {"paths": {path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={_v3_for(resources).etag}"}
                          for path, resources in self._by_group_version.items()}}

    def v3(self, group_version_path: str) -> bytes | None:
        """``/openapi/v3/<path>`` (``api/v1``, ``apis/apps/v1``); None when not served."""
        resources = self._by_group_version.get(group_version_path.strip("/"))
        return None if resources is None else _v3_for(resources).body

    def v3_etag(self, group_version_path: str) -> str | None:
        resources = self._by_group_version.get(group_version_path.strip("/"))
        return None if resources is None else _v3_for(resources).etag


# -- checking built-in objects -------------------------------------------------


def _validation_schema(node: Any) -> Any:
    """The definitions for checking objects: ``oneOf`` relaxed to ``anyOf`` (a null
    quantity is both a null string and a null number)."""
    if isinstance(node, dict):
        return {("anyOf" if key == "oneOf" else key): _validation_schema(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_validation_schema(item) for item in node]
    return node


_VALIDATION_ID = "urn:trireme:kubernetes-definitions"


@functools.cache
def _validation_registry() -> Registry:
    document = {"$id": _VALIDATION_ID, "$defs": _validation_definitions()}
    return Registry().with_resource(_VALIDATION_ID, Resource.from_contents(document, DRAFT202012))


@functools.cache
def _validation_definitions() -> dict[str, Any]:
    definitions = {}
    for name, definition in _catalog().definitions.items():
        checked = _validation_schema(definition)
        if "x-kubernetes-group-version-kind" in definition:
            # the served endpoint decides apiVersion and kind; the schema checks the rest
            for meta_field in ("apiVersion", "kind"):
                checked.get("properties", {}).get(meta_field, {}).pop("enum", None)
        definitions[name] = checked
    return definitions


@functools.cache
def _fast_validator(definition: str) -> Callable[[Any], Any]:
    """A compiled validator (fastjsonschema) for the valid-or-not decision: about 15 µs
    for a Pod where jsonschema takes 1 ms, so every write can afford it."""
    definitions = {name: json.loads(json.dumps(schema).replace("#/$defs/", "#/definitions/"))
                   for name, schema in _validation_definitions().items()}
    return fastjsonschema.compile({"$ref": f"#/definitions/{definition}", "definitions": definitions},
                                  use_formats=False)


@functools.cache
def _validator(definition: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{_VALIDATION_ID}#/$defs/{definition}"},
                                registry=_validation_registry())


def _resolved(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    definitions = _catalog().definitions
    while isinstance(schema.get("$ref"), str):
        schema = definitions[_ref_name(schema["$ref"])]
    return schema


def _child_schema(schema: Mapping[str, Any], key: str | int) -> tuple[Mapping[str, Any] | None, bool]:
    """The schema of ``key`` inside a value of ``schema``, and whether it is a map key."""
    schema = _resolved(schema)
    if isinstance(key, int):
        items = schema.get("items")
        return (items if isinstance(items, dict) else None), False
    properties = schema.get("properties")
    if properties is not None and key in properties:
        return properties[key], False
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        return additional, True
    return None, False


def _step(path: str, key: str | int, is_map_key: bool) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if is_map_key:
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def field_path(definition: str, keys: Iterable[str | int]) -> str:
    """Kubernetes field path of ``keys`` in an object of ``definition``:
    ``spec.containers[0].image``, ``metadata.labels[app]``."""
    path = ""
    schema: Mapping[str, Any] | None = {"$ref": definition}
    for key in keys:
        child, is_map_key = _child_schema(schema, key) if schema is not None else (None, False)
        path = _step(path, key, is_map_key)
        schema = child
    return path


def _render_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    return '"object"' if isinstance(value, dict) else '"array"'


def _expected_types(error: ValidationError) -> str:
    if error.validator == "type":
        declared = error.validator_value
        types = [declared] if isinstance(declared, str) else list(declared)
    else:
        types = [t for branch in error.validator_value
                 for t in ([branch["type"]] if isinstance(branch.get("type"), str) else branch.get("type", []))]
    named = list(dict.fromkeys(t for t in types if t != "null"))
    return " or ".join(named)


def _causes(error: ValidationError, definition: str) -> list[Cause]:
    keys = list(error.absolute_path)
    if error.validator == "required":
        instance = error.instance if isinstance(error.instance, dict) else {}
        return [Cause(field_path(definition, [*keys, name]), "Required value", "FieldValueRequired")
                for name in error.validator_value if name not in instance]
    where = field_path(definition, keys)
    if error.validator in ("type", "anyOf") and error.instance is None:
        return [Cause(where, "Required value", "FieldValueRequired")]
    if error.validator in ("type", "anyOf"):
        return [Cause(where, f"Invalid value: {_render_value(error.instance)}: must be of type "
                             f"{_expected_types(error)}", "FieldValueTypeInvalid")]
    return [Cause(where, f"Invalid value: {_render_value(error.instance)}: {error.message}")]


def validate_builtin(obj: Mapping[str, Any], api_version: str, kind: str) -> list[Cause]:
    """Type and required-field errors of a built-in object, with Kubernetes field
    paths; [] for a kind without a built-in definition. Unknown fields pass here
    (see ``unknown_fields``)."""
    definition = definition_for(api_version, kind)
    if definition is None:
        return []
    try:
        _fast_validator(definition)(obj)
        return []  # the common case: valid, decided by compiled code in microseconds
    except fastjsonschema.JsonSchemaException:
        pass  # explain with jsonschema, whose errors carry paths for Kubernetes-style causes
    causes: list[Cause] = []
    seen: set[tuple[str, str]] = set()
    for error in _validator(definition).iter_errors(obj):
        for cause in _causes(error, definition):
            if (cause.field, cause.message) not in seen:
                seen.add((cause.field, cause.message))
                causes.append(cause)
    return causes


def _unknown(value: Any, schema: Mapping[str, Any], path: str, found: list[str]) -> None:
    schema = _resolved(schema)
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, child in value.items():
            if properties is not None and key in properties:
                _unknown(child, properties[key], _step(path, key, False), found)
            elif isinstance(additional, dict):
                _unknown(child, additional, _step(path, key, True), found)
            elif properties is not None:
                found.append(_step(path, key, False))
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for index, child in enumerate(value):
                _unknown(child, items, f"{path}[{index}]", found)


def unknown_fields(obj: Mapping[str, Any], api_version: str, kind: str) -> list[str]:
    """Paths of fields the built-in schema does not declare (``spec.containers[0].imagePullPolicyy``),
    in document order; [] for a kind without a built-in definition. Objects whose
    schema declares no properties (``fieldsV1``, raw extensions) are free-form."""
    definition = definition_for(api_version, kind)
    if definition is None:
        return []
    found: list[str] = []
    _unknown(obj, {"$ref": definition}, "", found)
    return found
