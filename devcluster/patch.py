"""The four ways a Kubernetes client changes an object with PATCH, as pure functions.

kubectl, helm, kopf and the kubernetes client send PATCH requests of four content
types, and each one means something different:

- ``application/merge-patch+json``: RFC 7386 JSON merge patch (``merge_patch``);
- ``application/json-patch+json``: RFC 6902 JSON patch (``json_patch``);
- ``application/strategic-merge-patch+json``: Kubernetes' strategic merge patch, whose
  list semantics (merge containers by name, union finalizers, replace tolerations)
  come from the type definitions (``strategic_merge_patch``);
- ``application/apply-patch+yaml``: server-side apply, which merges a manager's
  configuration into the live object and records who owns which field in
  ``metadata.managedFields`` (``server_side_apply``; ``record_update`` keeps that
  record for ordinary writes so later applies see conflicts).

The local API server must behave like kube-apiserver here, or ``kubectl apply``,
``helm upgrade`` and GitOps controllers change objects in ways a real cluster would
not. Merge keys, patch strategies and list types are read from the Kubernetes 1.37
OpenAPI definitions that the ``kubernetes-validate`` package ships, through
``SchemaLookup``; a custom resource's ``openAPIV3Schema`` is read through
``CRDSchemaLookup`` with the same interface.

Every function is pure: inputs are never mutated and results share no mutable
structure with them. Failures raise ``ApiError`` worded like kube-apiserver's.
"""

from __future__ import annotations

import functools
import json
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonpatch
import jsonpointer

from .jsonutil import json_copy
from .errors import ApiError, bad_request

__all__ = [
    "CRDSchemaLookup",
    "DEFINITIONS_VERSION",
    "ManagedFieldsEntry",
    "SchemaLookup",
    "decode_managed_fields",
    "fields_v1_to_paths",
    "json_patch",
    "merge_patch",
    "paths_to_fields_v1",
    "record_update",
    "server_side_apply",
    "strategic_merge_patch",
]


def _unprocessable(message: str) -> ApiError:
    """422 as kube-apiserver sends for a patch that is well formed but cannot apply."""
    return ApiError(422, "Invalid", message)


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _same(left: Any, right: Any) -> bool:
    """JSON equality: unlike ``==``, ``1`` differs from ``True`` and from ``1.0``."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_same(v, right[k]) for k, v in left.items())
    if isinstance(left, list):
        return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right))
    return left == right


# ---------------------------------------------------------------------------
# RFC 7386 JSON merge patch
# ---------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch: objects merge, ``null`` deletes, all else replaces."""
    return _merge_patch_into(json_copy(target), patch)


def _merge_patch_into(target: Any, patch: Any) -> Any:
    """``merge_patch`` on a private copy of the target, which it may change."""
    if not isinstance(patch, dict):
        return json_copy(patch)
    result = target if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = _merge_patch_into(result.get(name), value)
    return result


# ---------------------------------------------------------------------------
# RFC 6902 JSON patch
# ---------------------------------------------------------------------------

_JSON_PATCH_MEMBERS = {
    "add": ("path", "value"),
    "remove": ("path",),
    "replace": ("path", "value"),
    "move": ("from", "path"),
    "copy": ("from", "path"),
    "test": ("path", "value"),
}


def _describe_operation(index: int, operation: Mapping[str, Any]) -> str:
    described = f'json patch operation {index} ({operation.get("op")} "{operation.get("path")}"'
    if "from" in operation:
        described += f' from "{operation["from"]}"'
    return described + ")"


def _check_json_patch_operation(index: int, operation: Any) -> None:
    """400 for an operation that is not one: unknown op, missing members, bad pointers."""
    if not isinstance(operation, dict):
        raise bad_request(f"json patch operation {index} is not an object: {operation!r}")
    op = operation.get("op")
    if op not in _JSON_PATCH_MEMBERS:
        raise bad_request(f"json patch operation {index}: unknown operation {op!r}, "
                          f"expected one of {', '.join(_JSON_PATCH_MEMBERS)}")
    for member in _JSON_PATCH_MEMBERS[op]:
        if member not in operation:
            raise bad_request(f'{_describe_operation(index, operation)}: missing member "{member}"')
    for member in ("path", "from"):
        pointer = operation.get(member)
        if member in operation and not (isinstance(pointer, str) and (pointer == "" or pointer.startswith("/"))):
            raise bad_request(f'{_describe_operation(index, operation)}: "{member}" must be a JSON '
                              f"pointer starting with '/', got {pointer!r}")


def json_patch(target: dict, ops: list) -> dict:
    """Apply RFC 6902 operations in order; all or nothing.

    A malformed operation list is 400 BadRequest; an operation that cannot apply
    (missing path, failed ``test``, index out of range) is 422 naming the operation.
    """
    if not isinstance(ops, list):
        raise bad_request(f"json patch must be a list of operations, got {type(ops).__name__}")
    for index, operation in enumerate(ops):
        _check_json_patch_operation(index, operation)
    document = json_copy(target)
    for index, operation in enumerate(json_copy(ops)):
        try:
            document = jsonpatch.JsonPatch([operation]).apply(document, in_place=True)
        except jsonpatch.JsonPatchTestFailed as failure:
            raise _unprocessable(f"{_describe_operation(index, operation)} failed: test failed: {failure}") from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as failure:
            raise _unprocessable(f"{_describe_operation(index, operation)} failed: {failure}") from None
    if not isinstance(document, dict):
        raise _unprocessable(f"json patch result must be an object, got {type(document).__name__}")
    return document


# ---------------------------------------------------------------------------
# Type definitions: merge keys, patch strategies, list and map types
# ---------------------------------------------------------------------------

DEFINITIONS_VERSION = "v1.37.0-local"
"""Folder of ``kubernetes_validate/kubernetes-json-schema`` whose ``_definitions.json`` is read."""

_KEY_FIELD_DEFAULTS: Mapping[str, Any] = {"protocol": "TCP"}
"""Defaults of list-map key fields that clients usually omit.

kube-apiserver fills a missing key field from its OpenAPI default before keying a list
item (ports are keyed by ``containerPort`` + ``protocol``, and almost nobody writes
``protocol: TCP``). The shipped definitions carry no defaults, so the one that matters
is written down here; a CRD schema's own ``default`` is used when it has one.
"""


@functools.cache
def _load_definitions(version: str) -> Mapping[str, Mapping[str, Any]]:
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema" / version
    document = json.loads((folder / "_definitions.json").read_text(encoding="utf-8"))
    return document.get("$defs") or document["definitions"]


@functools.cache
def _kind_index(version: str) -> Mapping[tuple[str, str, str], str]:
    """(group, version, kind) -> definition name, from ``x-kubernetes-group-version-kind``."""
    index: dict[tuple[str, str, str], str] = {}
    for name, definition in _load_definitions(version).items():
        for gvk in definition.get("x-kubernetes-group-version-kind", ()):
            index.setdefault((gvk.get("group", ""), gvk["version"], gvk["kind"]), name)
    return index


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


class SchemaLookup:
    """One node of the Kubernetes type definitions, with ``$ref`` followed.

    ``for_kind("apps/v1", "Deployment")`` gives the root of a kind; ``field(name)``
    and ``items()`` descend (``None`` where the schema says nothing: the walkers then
    treat maps as mergeable and lists as atomic). The properties answer the questions
    patches ask: how a list merges and by which key, whether a map is atomic.
    Loading the 1.7 MB definitions happens once per process.
    """

    __slots__ = ("_node", "_definitions", "name", "_children")

    def __init__(self, node: Mapping[str, Any], definitions: Mapping[str, Mapping[str, Any]],
                 name: str = "") -> None:
        self._definitions = definitions
        self.name = name
        self._node = self._resolve(node)
        self._children: dict[Any, SchemaLookup | None] = {}

    @staticmethod
    @functools.cache
    def for_kind(api_version: str, kind: str, version: str = DEFINITIONS_VERSION) -> SchemaLookup | None:
        """The schema of a built-in kind, or ``None`` for kinds the definitions lack.

        ``None`` means a custom resource (or an unknown kind): strategic merge patch is
        then refused by kube-apiserver with 415 UnsupportedMediaType, which is the
        caller's to raise; server-side apply uses a ``CRDSchemaLookup`` instead.
        """
        group, api_version_only = _split_api_version(api_version)
        name = _kind_index(version).get((group, api_version_only, kind))
        if name is None:
            return None
        return SchemaLookup.for_definition(name, version)

    @staticmethod
    @functools.cache
    def for_definition(name: str, version: str = DEFINITIONS_VERSION) -> SchemaLookup:
        """The schema of a named definition, e.g. ``io.k8s.api.core.v1.PodSpec``."""
        definitions = _load_definitions(version)
        if name not in definitions:
            raise KeyError(f"no definition named {name!r} in Kubernetes {version}")
        return SchemaLookup({"$ref": f"#/$defs/{name}"}, definitions)

    def _resolve(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        reference = node.get("$ref")
        if not isinstance(reference, str):
            return node
        name = reference.rsplit("/", 1)[-1]
        self.name = self.name or name
        target = self._resolve(self._definitions.get(name, {}))
        annotations = {key: value for key, value in node.items() if key != "$ref"}
        return {**target, **annotations}

    def _child(self, node: Any) -> SchemaLookup | None:
        if not isinstance(node, Mapping):
            return None
        return type(self)(node, self._definitions)

    def field(self, name: str) -> SchemaLookup | None:
        """The schema of property ``name``, or of a map's values; ``None`` if unknown."""
        if name not in self._children:
            properties = self._node.get("properties") or {}
            node = properties.get(name, self._node.get("additionalProperties"))
            self._children[name] = self._child(node)
        return self._children[name]

    def items(self) -> SchemaLookup | None:
        """The schema of a list's items; ``None`` if unknown."""
        if "[]" not in self._children:
            self._children["[]"] = self._child(self._node.get("items"))
        return self._children["[]"]

    def declares(self, name: str) -> bool:
        """Whether ``name`` is a declared property (a struct field, not a map entry)."""
        return name in (self._node.get("properties") or {})

    @property
    def is_struct(self) -> bool:
        """An object with declared properties, as opposed to a free-form map."""
        return bool(self._node.get("properties"))

    @property
    def default(self) -> Any:
        return self._node.get("default")

    @property
    def patch_strategies(self) -> frozenset[str]:
        """``x-kubernetes-patch-strategy`` split on commas: merge, replace, retainKeys."""
        raw = self._node.get("x-kubernetes-patch-strategy") or ""
        return frozenset(part.strip() for part in raw.split(",") if part.strip())

    @property
    def patch_merge_key(self) -> str | None:
        return self._node.get("x-kubernetes-patch-merge-key")

    @property
    def list_type(self) -> str:
        """``atomic``, ``set`` or ``map``, as server-side apply treats the list.

        ``x-kubernetes-list-type`` when given; otherwise a strategic ``merge`` list is
        a map (with a merge key) or a set (without), and anything else is atomic.
        """
        explicit = self._node.get("x-kubernetes-list-type")
        if explicit == "map" and not self.list_map_keys:
            return "atomic"
        if explicit in ("atomic", "set", "map"):
            return explicit
        if "merge" in self.patch_strategies:
            return "map" if self.patch_merge_key else "set"
        return "atomic"

    @property
    def list_map_keys(self) -> tuple[str, ...]:
        keys = self._node.get("x-kubernetes-list-map-keys")
        if keys:
            return tuple(keys)
        return (self.patch_merge_key,) if self.patch_merge_key else ()

    @property
    def map_is_atomic(self) -> bool:
        """Atomic maps (label selectors, for one) are replaced and owned as a whole."""
        return self._node.get("x-kubernetes-map-type") == "atomic"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name or 'inline'})"


class CRDSchemaLookup(SchemaLookup):
    """``SchemaLookup`` over a CRD version's ``openAPIV3Schema``.

    Lists are atomic unless the schema says ``x-kubernetes-list-type: set`` or
    ``map`` (with ``x-kubernetes-list-map-keys``), as for real custom resources.
    ``metadata`` is always the built-in ObjectMeta, whatever the CRD declares, so
    labels, finalizers and ownerReferences behave as on any object.
    """

    __slots__ = ("_root",)

    def __init__(self, openapi_v3_schema: Mapping[str, Any],
                 definitions: Mapping[str, Mapping[str, Any]] | None = None, name: str = "",
                 *, _root: bool = True) -> None:
        self._root = _root
        super().__init__(openapi_v3_schema, definitions or {}, name)

    def _child(self, node: Any) -> SchemaLookup | None:
        if not isinstance(node, Mapping):
            return None
        return CRDSchemaLookup(node, self._definitions, _root=False)

    def field(self, name: str) -> SchemaLookup | None:
        if self._root and name == "metadata":
            return SchemaLookup.for_definition("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        return super().field(name)


def _field_of(schema: SchemaLookup | None, name: str) -> SchemaLookup | None:
    return schema.field(name) if schema is not None else None


def _items_of(schema: SchemaLookup | None) -> SchemaLookup | None:
    return schema.items() if schema is not None else None


# ---------------------------------------------------------------------------
# Strategic merge patch
# ---------------------------------------------------------------------------

_PATCH = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ELEMENT_ORDER = "$setElementOrder/"
_DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList/"


def strategic_merge_patch(target: dict, patch: dict, schema: SchemaLookup | None) -> dict:
    """Apply a strategic merge patch to ``target`` using the kind's ``schema``.

    ``null`` deletes a field; maps merge recursively (unless their strategy is
    ``replace``); lists with strategy ``merge`` merge by their merge key (or, for
    primitives, are unioned); other lists are replaced. Directives: ``$patch``
    (replace/delete/merge, in maps and list items), ``$retainKeys``,
    ``$deleteFromPrimitiveList/<field>`` and ``$setElementOrder/<field>``; none is
    ever stored. With ``schema=None`` there are no merge lists (every list is
    replaced); callers refuse custom resources with 415 before getting here.
    """
    if not isinstance(patch, dict):
        raise bad_request(f"strategic merge patch must be a JSON object, got {type(patch).__name__}")
    if not isinstance(target, dict):
        raise bad_request("strategic merge patch target must be an object")
    return _smp_map(json_copy(target), json_copy(patch), schema)


def _smp_map(original: dict, patch: dict, schema: SchemaLookup | None) -> dict:
    """Merge ``patch`` into ``original``; both are private copies and may be changed."""
    directive = patch.pop(_PATCH, None)
    if directive == "replace":
        return _smp_map({}, patch, schema)
    if directive == "delete":
        return {}
    if directive not in (None, "merge"):
        raise bad_request(f"unknown patch type: {directive} in map: {patch}")
    _smp_retain_keys(original, patch)
    _smp_set_element_orders(original, patch, schema)
    for key, value in patch.items():
        if key.startswith(_DELETE_FROM_PRIMITIVE_LIST):
            _smp_delete_from_primitive_list(original, key[len(_DELETE_FROM_PRIMITIVE_LIST):], value)
        elif value is None:
            original.pop(key, None)
        else:
            original[key] = _smp_value(original.get(key), value, _field_of(schema, key))
    return original


def _smp_value(original: Any, patch: Any, schema: SchemaLookup | None) -> Any:
    """The merge of one field's patch value into its original value (or ``None``)."""
    strategies = schema.patch_strategies if schema is not None else frozenset()
    if isinstance(patch, dict):
        base = original if isinstance(original, dict) and "replace" not in strategies else {}
        return _smp_map(base, patch, schema)
    if isinstance(patch, list):
        base = original if isinstance(original, list) else []
        if "merge" in strategies:
            return _smp_merge_list(base, patch, schema)
        return [_smp_value(None, item, _items_of(schema)) for item in patch]
    return patch


def _smp_retain_keys(original: dict, patch: dict) -> None:
    if _RETAIN_KEYS not in patch:
        return
    retained = patch.pop(_RETAIN_KEYS)
    if not isinstance(retained, list):
        raise bad_request("invalid patch format of retainKeys")
    for key, value in patch.items():
        if value is None or key.startswith((_DELETE_FROM_PRIMITIVE_LIST, _SET_ELEMENT_ORDER)):
            continue
        if key not in retained:
            raise _unprocessable(f'patch content doesn\'t match retainKeys list: "{key}" is not in {retained}')
    for key in [key for key in original if key not in retained]:
        del original[key]


def _smp_delete_from_primitive_list(original: dict, field: str, values: Any) -> None:
    if not isinstance(values, list):
        raise bad_request("invalid patch format of primitive list")
    current = original.get(field)
    if isinstance(current, list):
        original[field] = [item for item in current if not any(_same(item, value) for value in values)]


def _smp_set_element_orders(original: dict, patch: dict, schema: SchemaLookup | None) -> None:
    """Merge each list named by ``$setElementOrder/<field>`` and put it in that order."""
    for directive in [key for key in patch if key.startswith(_SET_ELEMENT_ORDER)]:
        order = patch.pop(directive)
        if not isinstance(order, list):
            raise bad_request("invalid patch format of setElementOrder list")
        field = directive[len(_SET_ELEMENT_ORDER):]
        field_schema = _field_of(schema, field)
        current = original.get(field) if isinstance(original.get(field), list) else []
        if isinstance(patch.get(field), list):
            merged = _smp_value(current, patch.pop(field), field_schema)
        elif field in original and isinstance(original[field], list):
            merged = current
        else:
            continue
        identify = _smp_identity(field_schema.patch_merge_key if field_schema else None)
        ordered, server_only = _partition(merged, order, identify)
        original[field] = _normalize_order(ordered, server_only, order, current, identify)


def _smp_identity(merge_key: str | None) -> Callable[[Any], str]:
    """What identifies a list item: its merge key's value, or (primitives) itself."""
    def identify(item: Any) -> str:
        if merge_key and isinstance(item, dict):
            return _compact_json(item.get(merge_key))
        return _compact_json(item)
    return identify


def _smp_merge_list(original: list, patch: list, schema: SchemaLookup) -> list:
    if not original and not patch:
        return []
    item_schema = schema.items()
    maps = [isinstance(item, dict) for item in [*original, *patch]]
    if all(maps):
        merge_key = schema.patch_merge_key
        if not merge_key:
            raise bad_request(f"cannot merge lists without merge key for {schema.name or 'list'}")
        original, patch = _smp_special_elements(original, patch, merge_key)
        merged = _smp_merge_by_key(original, patch, merge_key, item_schema)
        identify = _smp_identity(merge_key)
    elif not any(maps):
        merged = _deduplicate([*original, *patch])
        identify = _smp_identity(None)
    else:
        raise bad_request(f"lists of mixed maps and values cannot be merged: {patch}")
    ordered, server_only = _partition(merged, patch, identify)
    return _normalize_order(ordered, server_only, patch, original, identify)


def _smp_special_elements(original: list, patch: list, merge_key: str) -> tuple[list, list]:
    """Handle list items carrying ``$patch``: delete by key, or replace the whole list."""
    plain: list = []
    replace = False
    for item in patch:
        directive = item.get(_PATCH)
        if directive is None:
            plain.append(item)
        elif directive == "delete":
            if merge_key not in item:
                raise bad_request(f"map: {item} does not contain declared merge key: {merge_key}")
            original = [kept for kept in original if not _same(kept.get(merge_key), item[merge_key])]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            plain.append({key: value for key, value in item.items() if key != _PATCH})
        else:
            raise bad_request(f"unknown patch type: {directive} in map: {item}")
    return ([], plain) if replace else (original, plain)


def _smp_merge_by_key(original: list, patch: list, merge_key: str, item_schema: SchemaLookup | None) -> list:
    merged = list(original)
    for item in patch:
        if merge_key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {merge_key}")
        position = next((index for index, kept in enumerate(merged)
                         if _same(kept.get(merge_key), item[merge_key])), None)
        if position is None:
            merged.append(_smp_map({}, item, item_schema))
        else:
            merged[position] = _smp_map(merged[position], item, item_schema)
    return merged


def _deduplicate(items: list) -> list:
    seen: set[str] = set()
    unique = []
    for item in items:
        identity = _compact_json(item)
        if identity not in seen:
            seen.add(identity)
            unique.append(item)
    return unique


def _partition(items: list, present_in: list, identify: Callable[[Any], str]) -> tuple[list, list]:
    """Split ``items`` into those named in ``present_in`` and the rest (server-only)."""
    named = {identify(item) for item in present_in}
    inside = [item for item in items if identify(item) in named]
    outside = [item for item in items if identify(item) not in named]
    return inside, outside


def _normalize_order(patch_items: list, server_only: list, patch_order: list, server_order: list,
                     identify: Callable[[Any], str]) -> list:
    """Order like kube-apiserver: patch items in patch order, server-only items in
    live order, interleaved where the live order relates them, patch items first
    where it does not (so a new container lands before the existing ones)."""
    patch_rank = {identify(item): rank for rank, item in reversed(list(enumerate(patch_order)))}
    server_rank = {identify(item): rank for rank, item in reversed(list(enumerate(server_order)))}
    patch_sorted = sorted(patch_items, key=lambda item: patch_rank.get(identify(item), len(patch_rank)))
    server_sorted = sorted(server_only, key=lambda item: server_rank.get(identify(item), len(server_rank)))
    result = []
    left, right = 0, 0
    while left < len(server_sorted) or right < len(patch_sorted):
        if right >= len(patch_sorted):
            result.append(server_sorted[left])
            left += 1
        elif left >= len(server_sorted):
            result.append(patch_sorted[right])
            right += 1
        else:
            left_rank = server_rank.get(identify(server_sorted[left]))
            right_rank = server_rank.get(identify(patch_sorted[right]))
            if left_rank is not None and right_rank is not None and left_rank < right_rank:
                result.append(server_sorted[left])
                left += 1
            else:
                result.append(patch_sorted[right])
                right += 1
    return result


# ---------------------------------------------------------------------------
# Field sets: paths in the FieldsV1 notation of metadata.managedFields
# ---------------------------------------------------------------------------

Path = tuple[str, ...]
"""A field path as FieldsV1 spells its steps: ``f:spec``, ``k:{"name":"x"}``, ``v:"a"``, ``i:0``."""

FieldSet = frozenset[Path]


def fields_v1_to_paths(fields_v1: Mapping[str, Any]) -> FieldSet:
    """The paths a FieldsV1 tree owns: leaves (``{}``) and nodes marked with ``"."``."""
    owned: set[Path] = set()

    def walk(node: Mapping[str, Any], path: Path) -> None:
        for step, child in node.items():
            if step == ".":
                if path:
                    owned.add(path)
            elif isinstance(child, Mapping) and child:
                walk(child, (*path, step))
            else:
                owned.add((*path, step))

    walk(fields_v1, ())
    return frozenset(owned)


def paths_to_fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    """The FieldsV1 tree of a set of paths (``"."`` marks an owned node with children)."""
    owned = frozenset(paths)
    children: dict[Path, set[str]] = {}
    for path in owned:
        for depth in range(len(path)):
            children.setdefault(path[:depth], set()).add(path[depth])

    def build(path: Path) -> dict[str, Any]:
        node: dict[str, Any] = {".": {}} if path in owned and path in children else {}
        for step in sorted(children.get(path, ())):
            node[step] = build((*path, step))
        return node

    return build(())


def _path_string(path: Path) -> str:
    """A path as kube-apiserver prints it in conflicts: ``.spec.containers[name="x"].image``."""
    text = []
    for step in path:
        kind, body = step[:1], step[2:]
        if kind == "f":
            text.append("." + body)
        elif kind == "k":
            key = json.loads(body)
            text.append("[" + ",".join(f"{name}={_compact_json(key[name])}" for name in sorted(key)) + "]")
        elif kind == "v":
            text.append("[=" + _compact_json(json.loads(body)) + "]")
        else:
            text.append("[" + body + "]")
    return "".join(text)


class _Unkeyable(Exception):
    """A list item cannot be keyed as the list type requires."""


def _item_step(item: Any, schema: SchemaLookup, list_type: str) -> str:
    if list_type == "set":
        if isinstance(item, (dict, list)):
            raise _Unkeyable(f"set items must be values, found {_compact_json(item)}")
        return "v:" + _compact_json(item)
    if not isinstance(item, dict):
        raise _Unkeyable(f"associative list with keys has an element that is not a map: {_compact_json(item)}")
    key = {}
    item_schema = schema.items()
    for name in schema.list_map_keys:
        if item.get(name) is not None:
            key[name] = item[name]
            continue
        default = getattr(_field_of(item_schema, name), "default", None)
        default = default if default is not None else _KEY_FIELD_DEFAULTS.get(name)
        if default is None:
            raise _Unkeyable(f'associative list with keys has an element that omits key field "{name}" '
                             "(and doesn't have default value)")
        key[name] = default
    return "k:" + _compact_json(key)


def _list_steps(items: list, schema: SchemaLookup | None, path: Path, strict: bool) -> list[tuple[str, Any]] | None:
    """(step, item) for each item of a granular list; ``None`` when the list is atomic.

    ``strict`` (an applied configuration) raises 400 for items that cannot be keyed
    and for duplicates; otherwise (live objects) such a list is treated as atomic
    and duplicates keep their first occurrence.
    """
    list_type = schema.list_type if schema is not None else "atomic"
    if list_type == "atomic":
        return None
    steps: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        try:
            step = _item_step(item, schema, list_type)
        except _Unkeyable as problem:
            if strict:
                raise bad_request(f"{_path_string(path)}: element {index}: {problem}") from None
            return None
        if step in seen:
            if strict:
                raise bad_request(f"{_path_string(path)}: duplicate entries for key {_path_string((step,))}")
            continue
        seen.add(step)
        steps.append((step, item))
    return steps


def _field_set(value: Any, schema: SchemaLookup | None, strict: bool) -> set[Path]:
    """Every leaf field and list/map item of ``value``: what applying it claims."""
    owned: set[Path] = set()

    def collect(node: Any, node_schema: SchemaLookup | None, path: Path) -> None:
        if isinstance(node, dict):
            if not node or (node_schema is not None and node_schema.map_is_atomic):
                if path:
                    owned.add(path)
                return
            for name, child in node.items():
                child_path = (*path, "f:" + name)
                collect(child, _field_of(node_schema, name), child_path)
                if node_schema is None or not node_schema.declares(name):
                    owned.add(child_path)
        elif isinstance(node, list):
            steps = _list_steps(node, node_schema, path, strict)
            if not node or steps is None:
                owned.add(path)
                return
            for step, item in steps:
                collect(item, _items_of(node_schema), (*path, step))
                owned.add((*path, step))
        else:
            owned.add(path)

    collect(value, schema, ())
    return owned


_ABSENT = object()


@dataclass
class _Changes:
    """What changed between two versions of an object, as field paths."""

    added: set[Path]
    removed: set[Path]
    modified: set[Path]


def _compare(old: Any, new: Any, schema: SchemaLookup | None) -> _Changes:
    changes = _Changes(set(), set(), set())

    def leaf(before: Any, after: Any, path: Path) -> None:
        if before is _ABSENT:
            changes.added.add(path)
        elif after is _ABSENT:
            changes.removed.add(path)
        elif not _same(before, after):
            changes.modified.add(path)

    def walk(before: Any, after: Any, node_schema: SchemaLookup | None, path: Path, is_entry: bool) -> None:
        present = [value for value in (before, after) if value is not _ABSENT]
        if isinstance(present[0], dict) and all(isinstance(value, dict) for value in present):
            if (node_schema is not None and node_schema.map_is_atomic) or not any(present):
                return leaf(before, after, path)
            old_map = before if before is not _ABSENT else {}
            new_map = after if after is not _ABSENT else {}
            for name in [*old_map, *(name for name in new_map if name not in old_map)]:
                walk(old_map.get(name, _ABSENT), new_map.get(name, _ABSENT), _field_of(node_schema, name),
                     (*path, "f:" + name), node_schema is None or not node_schema.declares(name))
            tracks_itself = is_entry or node_schema is None or not node_schema.is_struct
        elif isinstance(present[0], list) and all(isinstance(value, list) for value in present):
            old_steps = _list_steps(before, node_schema, path, False) if before is not _ABSENT else []
            new_steps = _list_steps(after, node_schema, path, False) if after is not _ABSENT else []
            if old_steps is None or new_steps is None or not any(present):
                return leaf(before, after, path)
            old_items, new_items = dict(old_steps), dict(new_steps)
            for step in [*old_items, *(step for step in new_items if step not in old_items)]:
                walk(old_items.get(step, _ABSENT), new_items.get(step, _ABSENT), _items_of(node_schema),
                     (*path, step), True)
            tracks_itself = is_entry
        else:
            return leaf(before, after, path)
        if path and tracks_itself and (before is _ABSENT or after is _ABSENT):
            leaf(before, after, path)

    walk(old, new, schema, (), False)
    return changes


# ---------------------------------------------------------------------------
# Server-side apply
# ---------------------------------------------------------------------------

_UNOWNED_METADATA = frozenset({
    "f:name", "f:namespace", "f:uid", "f:resourceVersion", "f:generation", "f:creationTimestamp",
    "f:deletionTimestamp", "f:deletionGracePeriodSeconds", "f:selfLink", "f:managedFields",
})
"""Metadata the server sets or that names the object: never owned, never pruned."""

_SERVER_SET_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "selfLink", "managedFields")

BEFORE_FIRST_APPLY = "before-first-apply"
"""Manager that takes the fields of an object that had no managedFields when first applied."""

LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
KUBECTL_MANAGER = "kubectl"
"""The one manager whose applies upgrade objects from client-side apply, as in kube-apiserver."""


@dataclass(frozen=True)
class ManagedFieldsEntry:
    """One ``metadata.managedFields`` entry: a manager's fields for one operation."""

    manager: str
    operation: str
    api_version: str
    time: str | None
    fields: FieldSet
    subresource: str = ""

    @property
    def identity(self) -> tuple[str, str, str]:
        return self.manager, self.operation, self.subresource

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"manager": self.manager, "operation": self.operation,
                                 "apiVersion": self.api_version}
        if self.time is not None:
            entry["time"] = self.time
        entry["fieldsType"] = "FieldsV1"
        entry["fieldsV1"] = paths_to_fields_v1(self.fields)
        if self.subresource:
            entry["subresource"] = self.subresource
        return entry

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ManagedFieldsEntry:
        fields_v1 = raw.get("fieldsV1")
        return cls(manager=str(raw.get("manager", "")), operation=str(raw.get("operation", "Update")),
                   api_version=str(raw.get("apiVersion", "")), time=raw.get("time"),
                   fields=fields_v1_to_paths(fields_v1) if isinstance(fields_v1, Mapping) else frozenset(),
                   subresource=str(raw.get("subresource", "") or ""))

    def describe(self) -> str:
        """The manager as kube-apiserver names it in a conflict."""
        described = json.dumps(self.manager, ensure_ascii=False)
        if self.subresource:
            described += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            described += f" using {self.api_version}"
        return described


def decode_managed_fields(obj: Mapping[str, Any] | None) -> list[ManagedFieldsEntry]:
    """The managedFields entries of ``obj``; duplicates of one identity are joined."""
    raw_entries = ((obj or {}).get("metadata") or {}).get("managedFields") or []
    joined: dict[tuple[str, str, str], ManagedFieldsEntry] = {}
    for raw in raw_entries:
        if not isinstance(raw, Mapping) or not raw.get("manager") and not raw.get("fieldsV1"):
            continue
        entry = ManagedFieldsEntry.from_dict(raw)
        if entry.identity in joined:
            earlier = joined[entry.identity]
            entry = ManagedFieldsEntry(earlier.manager, earlier.operation, earlier.api_version, earlier.time,
                                       earlier.fields | entry.fields, earlier.subresource)
        joined[entry.identity] = entry
    return list(joined.values())


def _ownable(subresource: str, status_subresource: bool) -> Callable[[Path], bool]:
    """Which paths a write through ``subresource`` can own."""
    def ownable(path: Path) -> bool:
        if not path:
            return False
        if subresource == "status":
            return path[0] == "f:status"
        if path[0] in ("f:apiVersion", "f:kind") or path == ("f:metadata",):
            return False
        if path[0] == "f:metadata" and path[1] in _UNOWNED_METADATA:
            return False
        return not (status_subresource and path[0] == "f:status")
    return ownable


def _only(paths: Iterable[Path], ownable: Callable[[Path], bool]) -> frozenset[Path]:
    return frozenset(path for path in paths if ownable(path))


def _without_managed_fields(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    """A deep copy of ``obj`` without ``metadata.managedFields`` ({} for none)."""
    if obj is None:
        return {}
    metadata = obj.get("metadata")
    shallow = dict(obj)
    if isinstance(metadata, dict):
        shallow["metadata"] = {key: value for key, value in metadata.items() if key != "managedFields"}
    return json_copy(shallow)


def _with_managed_fields(obj: dict[str, Any], entries: list[ManagedFieldsEntry]) -> dict[str, Any]:
    if not entries and not isinstance(obj.get("metadata"), dict):
        return obj
    metadata = obj.setdefault("metadata", {})
    metadata.pop("managedFields", None)
    if entries:
        ordered = sorted(entries, key=lambda entry: (entry.operation, entry.time or "", entry.manager,
                                                     entry.api_version, entry.subresource))
        metadata["managedFields"] = [entry.to_dict() for entry in ordered]
    return obj


def _applied_configuration(applied: Mapping[str, Any], live: Mapping[str, Any] | None, subresource: str,
                           status_subresource: bool) -> dict[str, Any]:
    """What of the applied body takes part: no server-set metadata, status only where it belongs."""
    if not isinstance(applied, Mapping):
        raise bad_request("apply patch must be an object")
    for member in ("apiVersion", "kind"):
        if not applied.get(member):
            raise bad_request(f"Object '{'Kind' if member == 'kind' else 'apiVersion'}' is missing in apply patch")
    metadata = applied.get("metadata") if isinstance(applied.get("metadata"), Mapping) else {}
    if metadata.get("managedFields") is not None:
        raise bad_request("metadata.managedFields must be nil")
    configuration = json_copy(dict(applied))
    kept_metadata = {key: value for key, value in json_copy(dict(metadata)).items()
                     if key not in _SERVER_SET_METADATA and not (live is not None and key in ("name", "namespace"))}
    if subresource == "status":
        configuration = {key: configuration[key] for key in ("apiVersion", "kind", "status") if key in configuration}
        kept_metadata = {}
    elif status_subresource:
        configuration.pop("status", None)
    configuration["metadata"] = kept_metadata
    if not kept_metadata:
        del configuration["metadata"]
    return configuration


def _apply_merge(live: Any, applied: Any, schema: SchemaLookup | None, path: Path) -> Any:
    """Merge an applied value into a live one; ``_ABSENT`` when ``applied`` is null."""
    if applied is None:
        return _ABSENT
    if isinstance(applied, dict) and not (schema is not None and schema.map_is_atomic):
        merged = dict(live) if isinstance(live, dict) else {}
        for name, value in applied.items():
            result = _apply_merge(merged.get(name, _ABSENT), value, _field_of(schema, name), (*path, "f:" + name))
            if result is _ABSENT:
                merged.pop(name, None)
            else:
                merged[name] = result
        return merged
    if isinstance(applied, list):
        applied_steps = _list_steps(applied, schema, path, strict=True)
        if applied_steps is not None:
            live_steps = _list_steps(live, schema, path, strict=False) if isinstance(live, list) else []
            return _merge_lists(live_steps or [], applied_steps, _items_of(schema), path)
    return json_copy(applied)


def _merge_lists(live: list[tuple[str, Any]], applied: list[tuple[str, Any]], item_schema: SchemaLookup | None,
                 path: Path) -> list:
    """Merge keyed lists like structured-merge-diff: items the config lists come in the
    config's order; items only the live object has keep their place among them."""
    live_items, applied_items = dict(live), dict(applied)
    live_order, applied_order = [step for step, _ in live], [step for step, _ in applied]
    shared = deque(step for step in applied_order if step in live_items)
    next_shared = shared.popleft() if shared else None
    merged: list = []
    done: set[str] = set()

    def take(step: str) -> None:
        result = _apply_merge(live_items.get(step, _ABSENT), applied_items[step], item_schema, (*path, step))
        if result is not _ABSENT:
            merged.append(result)
        done.add(step)

    left = right = 0
    while left < len(live_order) or right < len(applied_order):
        if left < len(live_order) and right < len(applied_order):
            step = live_order[left]
            if step == applied_order[right]:
                take(step)
                left, right = left + 1, right + 1
                next_shared = shared.popleft() if shared else None
                continue
            if step in applied_items and next_shared is not None and next_shared != step:
                left += 1
                continue
        if left < len(live_order):
            step = live_order[left]
            if step not in applied_items:
                merged.append(live_items[step])
                left += 1
                continue
            if step in done:
                left += 1
                continue
        if right < len(applied_order):
            step = applied_order[right]
            take(step)
            right += 1
            if next_shared == step:
                next_shared = shared.popleft() if shared else None
    return merged


def _remove_paths(obj: dict[str, Any], paths: Iterable[Path], schema: SchemaLookup | None,
                  keep: frozenset[Path]) -> None:
    """Remove owned fields and items in place; containers left empty by that go too,
    unless a manager owns the container itself (what clients see on a real server,
    where empty maps and lists are omitted). Every target is found before anything
    moves, since removing a key field would make its list item impossible to find."""
    located = [(path, trail) for path in sorted(paths, key=len)
               if (trail := _locate(obj, path, schema)) is not None]
    for path, trail in located:
        depth = len(trail) - 1
        while depth >= 1:
            container = trail[depth - 1][0]
            if not _detach(container, trail[depth]):
                break
            depth -= 1
            if container or depth == 0 or path[:depth] in keep or path[:depth] == ("f:metadata",):
                break


def _detach(container: Any, step: tuple[Any, Any]) -> bool:
    """Remove one located value from its container; False if it is no longer there."""
    value, selector = step
    if isinstance(container, dict):
        if selector in container and container[selector] is value:
            del container[selector]
            return True
        return False
    for index, item in enumerate(container):
        if item is value:
            del container[index]
            return True
    return False


def _locate(obj: Any, path: Path, schema: SchemaLookup | None) -> list[tuple[Any, Any]] | None:
    """[(value, selector in parent)] from the root to ``path``; ``None`` if absent."""
    trail: list[tuple[Any, Any]] = [(obj, None)]
    node, node_schema = obj, schema
    for step in path:
        if step.startswith("f:") and isinstance(node, dict) and step[2:] in node:
            selector = step[2:]
            node, node_schema = node[selector], _field_of(node_schema, selector)
        elif step[:2] in ("k:", "v:") and isinstance(node, list):
            steps = _list_steps(node, node_schema, (), strict=False) or []
            position = next((index for index, item in enumerate(node)
                             if any(found == step and candidate is item for found, candidate in steps)), None)
            if position is None:
                return None
            selector = position
            node, node_schema = node[position], _items_of(node_schema)
        else:
            return None
        trail.append((node, selector))
    return trail


def _conflict_error(conflicts: Mapping[ManagedFieldsEntry, frozenset[Path]]) -> ApiError:
    pairs = [(entry, path) for entry in sorted(conflicts, key=ManagedFieldsEntry.describe)
             for path in sorted(conflicts[entry])]
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {entry.describe()}",
               "field": _path_string(path)} for entry, path in pairs]
    if len(pairs) == 1:
        entry, path = pairs[0]
        message = f"Apply failed with 1 conflict: conflict with {entry.describe()}: {_path_string(path)}"
    else:
        lines = []
        for entry in sorted(conflicts, key=ManagedFieldsEntry.describe):
            lines.append(f"conflicts with {entry.describe()}:")
            lines.extend(f"- {_path_string(path)}" for path in sorted(conflicts[entry]))
        message = f"Apply failed with {len(pairs)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


def _client_side_applied(live: Mapping[str, Any], schema: SchemaLookup | None,
                         ownable: Callable[[Path], bool]) -> frozenset[Path]:
    """Fields that ``kubectl apply`` (client side) last applied and still hold that value.

    kube-apiserver lets ``kubectl apply --server-side`` take these over without a
    conflict, so switching an object from client-side to server-side apply works.
    """
    annotation = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED_ANNOTATION)
    try:
        last_applied = json.loads(annotation) if isinstance(annotation, str) else None
    except ValueError:
        return frozenset()
    if not isinstance(last_applied, dict):
        return frozenset()
    differences = _compare(last_applied, live, schema)
    return _only(_field_set(last_applied, schema, strict=False), ownable) - differences.modified - differences.removed


def _sync_last_applied(obj: dict[str, Any], applied: Mapping[str, Any]) -> None:
    """Keep an existing last-applied annotation equal to what ``kubectl`` now applies."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    if not isinstance(annotations, dict) or LAST_APPLIED_ANNOTATION not in annotations:
        return
    configuration = json_copy(dict(applied))
    applied_annotations = (configuration.get("metadata") or {}).get("annotations")
    if isinstance(applied_annotations, dict):
        applied_annotations.pop(LAST_APPLIED_ANNOTATION, None)
    annotations[LAST_APPLIED_ANNOTATION] = _compact_json(configuration) + "\n"


def _first_apply_owner(live: Mapping[str, Any], schema: SchemaLookup | None, now: str,
                       ownable: Callable[[Path], bool]) -> ManagedFieldsEntry:
    """An object nobody has claimed yet: its fields go to ``before-first-apply``, so a
    first apply neither takes nor prunes them silently."""
    changes = _compare({}, _without_managed_fields(live), schema)
    return ManagedFieldsEntry(BEFORE_FIRST_APPLY, "Update", str(live.get("apiVersion", "")), now,
                              _only(changes.added | changes.modified, ownable))


def server_side_apply(live: dict | None, applied: dict, manager: str, force: bool,
                      schema: SchemaLookup | None, now: str, *, subresource: str = "",
                      status_subresource: bool = True) -> dict:
    """Apply ``applied`` (an apply-patch body, parsed) as ``manager``; create when ``live`` is None.

    The configuration merges into the live object; fields ``manager`` applied before
    and no longer lists are removed unless another manager owns them; a changed
    field that another manager owns raises 409 Conflict naming each one, unless
    ``force`` moves the ownership. Re-applying the same configuration returns an
    object equal to ``live`` (entry times included). ``schema`` is the kind's
    ``SchemaLookup`` or ``CRDSchemaLookup`` (``None``: maps merge, lists are atomic).
    A main-resource apply ignores ``status`` when the kind has a status subresource;
    ``subresource="status"`` applies only ``status``. Server-set metadata (uid,
    resourceVersion, ...) comes from ``live``; preconditions are the caller's.
    As in kube-apiserver, the manager ``kubectl`` may take over fields that
    ``kubectl apply`` (client side) last applied, and keeps an existing
    last-applied-configuration annotation in step.
    """
    ownable = _ownable(subresource, status_subresource)
    configuration = _applied_configuration(applied, live, subresource, status_subresource)
    entries = decode_managed_fields(live)
    if live is not None and not entries:
        entries = [entry for entry in [_first_apply_owner(live, schema, now, ownable)] if entry.fields]
    identity = (manager, "Apply", subresource)
    mine = next((entry for entry in entries if entry.identity == identity), None)
    others = [entry for entry in entries if entry.identity != identity]

    base = _without_managed_fields(live)
    merged = _apply_merge(json_copy(base), configuration, schema, ())
    applied_fields = _only(_field_set(configuration, schema, strict=True), ownable)
    owned_by_others = frozenset().union(*(entry.fields for entry in others))
    previously_applied = mine.fields if mine is not None else frozenset()
    # Only what the merged object really holds as a field or item is pruned: a list
    # applied as [] and now applied with items is no longer a leaf to remove.
    present = _field_set(merged, schema, strict=False)
    _remove_paths(merged, (previously_applied & present) - applied_fields - owned_by_others, schema,
                  keep=applied_fields | owned_by_others)

    changes = _compare(base, merged, schema)
    removed = _only(changes.removed, ownable)
    changed = _only(changes.added | changes.modified, ownable) | (removed & applied_fields)
    conflicts = {entry: entry.fields & changed for entry in others if entry.fields & changed}
    if conflicts and not force:
        allowed = _client_side_applied(base, schema, ownable) if manager == KUBECTL_MANAGER else frozenset()
        remaining = {entry: paths - allowed for entry, paths in conflicts.items() if paths - allowed}
        if remaining:
            raise _conflict_error(remaining)
    if manager == KUBECTL_MANAGER:
        _sync_last_applied(merged, applied)

    kept = [ManagedFieldsEntry(entry.manager, entry.operation, entry.api_version, entry.time,
                               entry.fields - changed - removed, entry.subresource) for entry in others]
    if applied_fields:
        unchanged = live is not None and _same(base, merged)
        time = mine.time if mine is not None and unchanged else now
        kept.append(ManagedFieldsEntry(manager, "Apply", str(applied["apiVersion"]), time, applied_fields,
                                       subresource))
    return _with_managed_fields(merged, [entry for entry in kept if entry.fields])


def record_update(old: dict | None, new: dict, manager: str, now: str, schema: SchemaLookup | None, *,
                  subresource: str = "", status_subresource: bool = True) -> dict:
    """``new`` with managedFields updated for a create/update/patch by ``manager``.

    The manager (operation Update) takes every field the write added or changed,
    from whoever owned it; fields the write removed leave every manager. Like
    kube-apiserver, managedFields sent in ``new`` replace the recorded ones (``[{}]``
    clears them) except through a subresource; when ``new`` carries none, ``old``'s
    are kept. A write that changes nothing leaves the entries (and times) alone.
    """
    ownable = _ownable(subresource, status_subresource)
    entries = _starting_entries(old, new, subresource)
    changes = _compare(_without_managed_fields(old), _without_managed_fields(new), schema)
    taken = _only(changes.added | changes.modified, ownable)
    removed = _only(changes.removed, ownable)
    identity = (manager, "Update", subresource)
    mine = next((entry for entry in entries if entry.identity == identity), None)
    kept = [ManagedFieldsEntry(entry.manager, entry.operation, entry.api_version, entry.time,
                               entry.fields - taken - removed, entry.subresource)
            for entry in entries if entry.identity != identity]
    previous = (mine.fields - removed) if mine is not None else frozenset()
    if taken:
        kept.append(ManagedFieldsEntry(manager, "Update", str(new.get("apiVersion", "")), now,
                                       previous | taken, subresource))
    elif mine is not None:
        kept.append(ManagedFieldsEntry(mine.manager, mine.operation, mine.api_version, mine.time, previous,
                                       subresource))
    return _with_managed_fields(_without_managed_fields(new), [entry for entry in kept if entry.fields])


def _starting_entries(old: dict | None, new: dict, subresource: str) -> list[ManagedFieldsEntry]:
    """The managedFields an update starts from (kube-apiserver's decodeLiveOrNew)."""
    if subresource:
        return decode_managed_fields(old)
    sent = ((new.get("metadata") or {}).get("managedFields"))
    if isinstance(sent, list) and len(sent) == 1 and sent[0] == {}:
        return []
    return decode_managed_fields(new) or decode_managed_fields(old)
