"""Object semantics of the API server, independent of HTTP.

What kube-apiserver's generic registry and per-kind strategies do: name and
namespace checks, uid/generation/creationTimestamp, defaults for the kinds with
behaviour, CRD schema validation and defaulting, status and scale
subresources, the four patch types, optimistic concurrency, finalizers and
graceful deletion, binding and PDB-aware eviction. The HTTP layer
(``server.py``) parses requests and calls into this; the kubelet and the
controllers call it directly, so every writer goes through the same rules.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .jsonutil import json_copy
from . import crd as crdlib
from . import patch as patchlib
from .errors import ApiError, Cause, already_exists, bad_request, conflict, invalid, not_found
from .resources import BUILTIN_RESOURCES, ResourceType
from .selectors import (DNS1123_SUBDOMAIN, combine, field_predicate, label_key_problem, label_predicate,
                        label_value_problem, match_label_selector)
from .store import Store, decode_continue, encode_continue

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                  "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                  "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
              "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
              "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")

# kinds whose names must be DNS labels (the rest: DNS subdomains)
_LABEL_NAMED_KINDS = {"Namespace", "Service"}
_SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_NOT_OWNED_METADATA = ("resourceVersion", "uid", "generation", "creationTimestamp", "selfLink",
                       "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields")

Obj = dict[str, Any]


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WriteOptions:
    """Per-request options of writes (query parameters of the HTTP request)."""

    manager: str = "unknown"
    dry_run: bool = False
    field_validation: str = "Warn"  # Strict | Warn | Ignore
    force: bool = False
    warnings: list[str] = field(default_factory=list)
    """Filled by the write with warnings for the client (HTTP ``Warning`` headers)."""


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None  # Background | Foreground | Orphan
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False


@dataclass
class ListResult:
    items: list[Obj]
    resource_version: int
    continue_token: str | None
    remaining: int | None


class Registry:
    """Every served resource and the rules for writing it."""

    def __init__(self, store: Store, clock: Callable[[], datetime] | None = None):
        self.store = store
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._crd_versions: dict[tuple[str, str, str], crdlib.CustomResourceVersion] = {}
        self._cluster_ips = ipaddress.ip_network("10.96.0.0/16").hosts()
        self.on_types_changed: list[Callable[[], None]] = []
        for rt in BUILTIN_RESOURCES:
            self._types[(rt.group, rt.version, rt.plural)] = rt
        for crd in list(store.items(("apiextensions.k8s.io", "customresourcedefinitions"))):
            self._serve_crd(crd)
        self._ensure_system_namespaces()

    # -- resource types ----------------------------------------------------------

    def resource_types(self) -> list[ResourceType]:
        return list(self._types.values())

    def resolve(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self._types.get((group, version, plural))
        if rt is None:
            gv = f"{group}/{version}" if group else version
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural} in {gv})",
                           {"group": group, "kind": plural})
        return rt

    def kind_type(self, api_version: str, kind: str) -> ResourceType | None:
        for rt in self._types.values():
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        return None

    def _serve_crd(self, crd: Obj) -> None:
        spec = crd["spec"]
        group, names = spec["group"], spec["names"]
        storage = next((v["name"] for v in spec["versions"] if v.get("storage")), spec["versions"][0]["name"])
        self._unserve_crd(crd["metadata"]["name"])
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            sub = version.get("subresources") or {}
            rt = ResourceType(group, version["name"], names["plural"], names["kind"],
                              spec.get("scope", "Namespaced") == "Namespaced", tuple(names.get("shortNames") or ()),
                              frozenset(k for k in ("status", "scale") if k in sub),
                              tuple(names.get("categories") or ()), None, crd["metadata"]["name"], storage)
            self._types[(group, version["name"], names["plural"])] = rt
            self._crd_versions[(group, version["name"], names["plural"])] = crdlib.CustomResourceVersion(crd, version["name"])
        for callback in self.on_types_changed:
            callback()

    def _unserve_crd(self, crd_name: str) -> None:
        gone = [k for k, rt in self._types.items() if rt.crd_name == crd_name]
        for k in gone:
            del self._types[k]
            self._crd_versions.pop(k, None)
        if gone:
            for callback in self.on_types_changed:
                callback()

    def crd_version(self, rt: ResourceType) -> crdlib.CustomResourceVersion | None:
        return self._crd_versions.get((rt.group, rt.version, rt.plural))

    def _ensure_system_namespaces(self) -> None:
        key = ("", "namespaces")
        for name in _SYSTEM_NAMESPACES:
            if self.store.get(key, "", name) is None:
                self.create(self.resolve("", "v1", "namespaces"), "",
                            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                            WriteOptions(manager="devcluster"))

    # -- reads -----------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.get(rt.store_key, namespace if rt.namespaced else "", name)
        if obj is None:
            raise not_found(rt.plural, name, rt.group)
        return self._as_version(rt, obj)

    def list(self, rt: ResourceType, namespace: str | None, label_selector: str | None = None,
             field_selector: str | None = None, limit: int | None = None,
             continue_token: str | None = None) -> ListResult:
        predicate = combine(label_predicate(label_selector), field_predicate(field_selector, rt.kind))
        start_after = None
        list_rv = self.store.resource_version
        if continue_token:
            list_rv, start_after = decode_continue(continue_token)
            self.store.check_rv_available(list_rv)
        items: list[Obj] = []
        next_token = None
        remaining = None
        scope = namespace if rt.namespaced else None
        more = False
        for obj in self.store.items(rt.store_key, scope, after=start_after):
            if predicate is not None and not predicate(obj):
                continue
            if limit and len(items) >= limit:
                more = True
                break
            items.append(obj)
        if more:
            last = items[-1]["metadata"]
            last_key = (last.get("namespace", ""), last["name"])
            next_token = encode_continue(list_rv, last_key)
            # kube-apiserver counts what is left only when no selector filters it
            remaining = None if predicate is not None else self.store.count_after(rt.store_key, scope, last_key)
        if rt.crd_name and rt.version != rt.storage_version:
            items = [self._as_version(rt, o) for o in items]
        return ListResult(items, list_rv, next_token, remaining)

    def _as_version(self, rt: ResourceType, obj: Obj) -> Obj:
        """Objects are stored in one version; CRDs without conversion webhooks convert
        with ``None`` strategy: only apiVersion changes."""
        if rt.crd_name and obj.get("apiVersion") != rt.api_version:
            return {**obj, "apiVersion": rt.api_version}
        return obj

    # -- writes ----------------------------------------------------------------

    def _now(self) -> str:
        return rfc3339(self.clock())

    def _check_namespace(self, rt: ResourceType, namespace: str, obj: Obj) -> str:
        if not rt.namespaced:
            return ""
        body_ns = obj["metadata"].get("namespace")
        if body_ns and namespace and body_ns != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                              f"request ({body_ns!r} vs {namespace!r})")
        namespace = namespace or body_ns or ""
        if not namespace:
            raise bad_request(f"{rt.kind} is namespaced: the request needs a namespace")
        ns = self.store.get(("", "namespaces"), "", namespace)
        if ns is None:
            raise not_found("namespaces", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden", f'{rt.plural} "{obj["metadata"].get("name", "")}" is forbidden: '
                           f"unable to create new content in namespace {namespace} because it is being terminated",
                           {"name": obj["metadata"].get("name", ""), "kind": rt.plural,
                            "causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace",
                                        "message": f"namespace {namespace} is being terminated"}]})
        return namespace

    def _check_body_kind(self, rt: ResourceType, obj: Obj) -> None:
        if not isinstance(obj, dict):
            raise bad_request(f"the body of the request must be a {rt.kind} object, got {type(obj).__name__}")
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if kind and kind != rt.kind:
            raise bad_request(f"the API version in the data ({api_version}) does not match the expected API version "
                              f"({rt.api_version})" if api_version and api_version != rt.api_version
                              else f"kind {kind!r} in the body does not match the resource {rt.plural} ({rt.kind})")
        if api_version and api_version != rt.api_version:
            raise bad_request(f"the API version in the data ({api_version}) does not match the expected API version "
                              f"({rt.api_version})")
        meta = obj.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise bad_request("metadata must be an object")

    def _validate_metadata(self, rt: ResourceType, obj: Obj) -> list[Cause]:
        meta = obj["metadata"]
        causes = []
        name = meta.get("name", "")
        if not name:
            causes.append(Cause("metadata.name", "Required value: name or generateName is required",
                                "FieldValueRequired"))
        else:
            causes += [Cause("metadata.name", f'Invalid value: "{name}": {problem}')
                       for problem in _name_problems(name, rt.kind in _LABEL_NAMED_KINDS)]
        for field_name in ("labels", "annotations"):
            values = meta.get(field_name)
            if values is None:
                continue
            if not isinstance(values, dict):
                causes.append(Cause(f"metadata.{field_name}", "Invalid value: must be a map of strings"))
                continue
            for k, v in values.items():
                if not isinstance(v, str):
                    causes.append(Cause(f"metadata.{field_name}", f'Invalid value: "{k}": values must be strings'))
                elif field_name == "labels" and (problem := label_value_problem(v)):
                    causes.append(Cause("metadata.labels", f'Invalid value: "{v}": {problem}'))
                if problem := label_key_problem(k):
                    causes.append(Cause(f"metadata.{field_name}", f'Invalid value: "{k}": {problem}'))
        return causes

    def _validate(self, rt: ResourceType, obj: Obj, old: Obj | None, opts: WriteOptions) -> Obj:
        """Schema checks, pruning and defaulting for a full object about to be stored."""
        causes = self._validate_metadata(rt, obj)
        name = obj["metadata"].get("name", "")
        crdv = self.crd_version(rt)
        if crdv is not None:
            unknown = crdv.unknown_fields(obj) if hasattr(crdv, "unknown_fields") else []
            self._report_unknown(unknown, opts)
            if causes:
                raise invalid(rt.kind, name, causes, rt.group)
            return crdv.validate(obj, old)
        from . import openapi  # late import: the OpenAPI definitions load on first use
        if rt.definition:
            if opts.field_validation != "Ignore":
                self._report_unknown(openapi.unknown_fields(obj, rt.api_version, rt.kind), opts)
            causes += openapi.validate_builtin(obj, rt.api_version, rt.kind)
        if rt.kind == "CustomResourceDefinition":
            crdlib.check_crd(obj)
        if causes:
            raise invalid(rt.kind, name, causes, rt.group)
        return obj

    def _report_unknown(self, unknown: list[str], opts: WriteOptions) -> None:
        if not unknown or opts.field_validation == "Ignore":
            return
        if opts.field_validation == "Strict":
            raise bad_request("strict decoding error: " + ", ".join(f'unknown field "{f}"' for f in unknown))
        opts.warnings.extend(f'unknown field "{f}"' for f in unknown)

    def create(self, rt: ResourceType, namespace: str, body: Obj, opts: WriteOptions) -> Obj:
        self._check_body_kind(rt, body)
        obj = json_copy(body)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        namespace = self._check_namespace(rt, namespace, obj)
        if rt.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self._now()
        meta["generation"] = 1
        if "status" in rt.subresources and rt.crd_name:
            obj.pop("status", None)
        self._apply_defaults(rt, obj, None)
        obj = self._validate(rt, obj, None, opts)
        if self.store.get(rt.store_key, namespace, meta["name"]) is not None:
            raise already_exists(rt.plural, meta["name"], rt.group)
        obj = patchlib.record_update(None, obj, opts.manager, self._now(), self._schema_lookup(rt))
        if opts.dry_run:
            return obj
        stored = self.store.create(rt.store_key, self._to_storage(rt, obj))
        if rt.kind == "CustomResourceDefinition":
            self._crd_created(stored)
        return self._as_version(rt, stored)

    def _to_storage(self, rt: ResourceType, obj: Obj) -> Obj:
        if rt.crd_name and rt.version != rt.storage_version:
            return {**obj, "apiVersion": f"{rt.group}/{rt.storage_version}"}
        return obj

    def _schema_lookup(self, rt: ResourceType) -> Any:
        crdv = self.crd_version(rt)
        if crdv is not None:
            return patchlib.CRDSchemaLookup(crdv.schema)
        return patchlib.SchemaLookup.for_kind(rt.api_version, rt.kind)

    def _crd_created(self, crd: Obj) -> None:
        self._serve_crd(crd)
        status = {"conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": self._now()},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": self._now()}],
            "acceptedNames": crd["spec"]["names"],
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")]}
        self.store.update(("apiextensions.k8s.io", "customresourcedefinitions"), {**crd, "status": status})

    def update(self, rt: ResourceType, namespace: str, name: str, body: Obj, opts: WriteOptions,
               subresource: str | None = None, check_rv: bool = True) -> Obj:
        """PUT semantics: replace the object (or only its status for the status subresource)."""
        self._check_body_kind(rt, body)
        namespace = namespace if rt.namespaced else ""
        old = self.store.get(rt.store_key, namespace, name)
        body_meta = body.get("metadata") or {}
        if body_meta.get("name") and body_meta["name"] != name:
            raise bad_request(f"the name of the object ({body_meta['name']}) does not match the name on the URL ({name})")
        if old is None:
            if subresource is None and rt.kind not in ("Pod",):
                return self.create(rt, namespace, {**body, "metadata": {**body_meta, "name": name}}, opts)
            raise not_found(rt.plural, name, rt.group)
        expect_rv = _resource_version(body_meta.get("resourceVersion")) if check_rv else None
        if expect_rv and expect_rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, name, "the object has been modified; please apply your changes to the "
                           "latest version and try again", rt.group)
        return self._write(rt, old, body, opts, subresource, expect_rv)

    def _write(self, rt: ResourceType, old: Obj, body: Obj, opts: WriteOptions,
               subresource: str | None, expect_rv: str | None, record_managed: bool = True) -> Obj:
        """Store ``body`` as the new state of ``old``. ``record_managed`` False: an apply
        already computed ``managedFields``."""
        new = json_copy(body)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        meta = new.setdefault("metadata", {})
        old_meta = old["metadata"]
        for k in ("name", "namespace", "uid", "creationTimestamp", "generation",
                  "deletionTimestamp", "deletionGracePeriodSeconds"):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        if subresource == "status":
            # only status changes through the status subresource
            new = {**json_copy(self._as_version(rt, old)), "status": new.get("status")}
            if new["status"] is None:
                new.pop("status")
            new["metadata"] = {**old_meta, "resourceVersion": old_meta["resourceVersion"]}
        elif "status" in rt.subresources:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        self._apply_defaults(rt, new, old)
        if subresource is None and self._spec_changed(old, new):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        new = self._validate(rt, new, old, opts)
        if record_managed:
            new = patchlib.record_update(old, new, opts.manager, self._now(), self._schema_lookup(rt))
        if self._same(old, new):
            return self._as_version(rt, old)  # a no-op write does not bump resourceVersion
        if opts.dry_run:
            return new
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and self._deletable_now(rt, new):
            stored = self.store.delete(rt.store_key, meta.get("namespace", ""), meta["name"])
            self._after_delete(rt, stored)
            return self._as_version(rt, stored)
        stored = self.store.update(rt.store_key, self._to_storage(rt, new), expect_rv)
        if rt.kind == "CustomResourceDefinition":
            self._serve_crd(stored)
        return self._as_version(rt, stored)

    @staticmethod
    def _spec_changed(old: Obj, new: Obj) -> bool:
        skip = {"metadata", "status", "apiVersion", "kind"}
        keys = (set(old) | set(new)) - skip
        return any(old.get(k) != new.get(k) for k in keys)

    @staticmethod
    def _same(old: Obj, new: Obj) -> bool:
        strip = lambda o: {**o, "metadata": {k: v for k, v in o["metadata"].items()  # noqa: E731
                                             if k not in ("resourceVersion", "managedFields")}}
        if strip(old) != strip(new):
            return False
        managed = lambda o: [{k: v for k, v in e.items() if k != "time"}  # noqa: E731
                             for e in o["metadata"].get("managedFields") or []]
        return managed(old) == managed(new)

    def patch(self, rt: ResourceType, namespace: str, name: str, patch_type: str, patch: Any,
              opts: WriteOptions, subresource: str | None = None) -> Obj:
        namespace = namespace if rt.namespaced else ""
        old = self.store.get(rt.store_key, namespace, name)
        schema = self._schema_lookup(rt)
        if patch_type == "strategic" and (schema is None or rt.crd_name):
            # the patch type is refused before the object is looked up, as by kube-apiserver
            raise ApiError(415, "UnsupportedMediaType",
                           "the body of the request was in an unknown format - accepted media types include: "
                           "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")
        if patch_type == "apply":
            if not isinstance(patch, dict):
                raise bad_request("an apply patch must be an object")
            self._check_body_kind(rt, patch)
            if not patch.get("apiVersion") or not patch.get("kind"):
                raise bad_request("apiVersion and kind must be set in an apply patch")
            if old is None:
                if subresource:
                    raise not_found(rt.plural, name, rt.group)
                applied = patchlib.server_side_apply(None, patch, opts.manager, opts.force, schema, self._now())
                applied.setdefault("metadata", {})["name"] = name
                return self._create_applied(rt, namespace, applied, opts)
            current = self._as_version(rt, old)
            result = patchlib.server_side_apply(current, patch, opts.manager, opts.force, schema, self._now())
            return self._write_patched(rt, old, result, opts, subresource, managed_set=True)
        if old is None:
            raise not_found(rt.plural, name, rt.group)
        current = self._as_version(rt, old)
        if patch_type == "merge":
            result = patchlib.merge_patch(current, patch)
        elif patch_type == "json":
            result = patchlib.json_patch(current, patch)
        elif patch_type == "strategic":
            result = patchlib.strategic_merge_patch(current, patch, schema)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {patch_type!r}")
        if not isinstance(result, dict):
            raise bad_request("the patch turned the object into something that is not an object")
        return self._write_patched(rt, old, result, opts, subresource)

    def _create_applied(self, rt: ResourceType, namespace: str, obj: Obj, opts: WriteOptions) -> Obj:
        managed = obj["metadata"].get("managedFields")
        created = self.create(rt, namespace, obj, WriteOptions(opts.manager, True, opts.field_validation,
                                                               warnings=opts.warnings))
        created["metadata"]["managedFields"] = managed
        if opts.dry_run:
            return created
        created["metadata"].pop("resourceVersion", None)
        stored = self.store.create(rt.store_key, self._to_storage(rt, created))
        if rt.kind == "CustomResourceDefinition":
            self._crd_created(stored)
        return self._as_version(rt, stored)

    def _write_patched(self, rt: ResourceType, old: Obj, result: Obj, opts: WriteOptions,
                       subresource: str | None, managed_set: bool = False) -> Obj:
        meta = result.setdefault("metadata", {}) if isinstance(result.get("metadata"), dict) else None
        if meta is None:
            raise bad_request("metadata must be an object")
        expect_rv = _resource_version(meta.get("resourceVersion"))
        if expect_rv and expect_rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, old["metadata"]["name"], "the object has been modified; please apply your "
                           "changes to the latest version and try again", rt.group)
        return self._write(rt, old, result, opts, subresource, None, record_managed=not managed_set)

    # -- delete ----------------------------------------------------------------

    def _deletable_now(self, rt: ResourceType, obj: Obj) -> bool:
        """Pods on a node wait for the kubelet to confirm termination."""
        if rt.kind != "Pod":
            return True
        if not (obj.get("spec") or {}).get("nodeName"):
            return True
        if obj["metadata"].get("deletionGracePeriodSeconds") == 0:
            return True
        return (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")

    def delete(self, rt: ResourceType, namespace: str, name: str, opts: DeleteOptions) -> Obj:
        namespace = namespace if rt.namespaced else ""
        old = self.store.get(rt.store_key, namespace, name)
        if old is None:
            raise not_found(rt.plural, name, rt.group)
        meta = old["metadata"]
        if opts.precondition_uid and opts.precondition_uid != meta.get("uid"):
            raise conflict(rt.plural, name, f"Precondition failed: UID in precondition: {opts.precondition_uid}, "
                           f"UID in object meta: {meta.get('uid')}", rt.group)
        if _resource_version(opts.precondition_rv) and opts.precondition_rv != meta.get("resourceVersion"):
            raise conflict(rt.plural, name, "Precondition failed: ResourceVersion in precondition: "
                           f"{opts.precondition_rv}, ResourceVersion in object meta: {meta.get('resourceVersion')}",
                           rt.group)
        if opts.dry_run:
            return self._as_version(rt, old)
        finalizers = list(meta.get("finalizers") or [])
        policy = opts.propagation_policy
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        grace = self._grace_period(rt, old, opts)
        if rt.kind == "Namespace":
            return self._delete_namespace(rt, old)
        if finalizers or grace:
            if meta.get("deletionTimestamp"):
                if rt.kind == "Pod" and opts.grace_period_seconds == 0:
                    # force deletion of a terminating pod
                    new_meta = {**meta, "deletionGracePeriodSeconds": 0}
                    if not finalizers:
                        stored = self.store.delete(rt.store_key, namespace, name)
                        self._after_delete(rt, stored)
                        return self._as_version(rt, stored)
                    return self._as_version(rt, self.store.update(rt.store_key, {**old, "metadata": new_meta}))
                return self._as_version(rt, old)
            new_meta = {**meta, "finalizers": finalizers, "deletionTimestamp": self._now(),
                        "deletionGracePeriodSeconds": grace or 0}
            if not finalizers:
                new_meta.pop("finalizers")
            return self._as_version(rt, self.store.update(rt.store_key, {**old, "metadata": new_meta}))
        stored = self.store.delete(rt.store_key, namespace, name)
        self._after_delete(rt, stored)
        return self._as_version(rt, stored)

    def _grace_period(self, rt: ResourceType, obj: Obj, opts: DeleteOptions) -> int:
        if rt.kind != "Pod":
            return 0
        spec = obj.get("spec") or {}
        if not spec.get("nodeName") or (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        if opts.grace_period_seconds is not None:
            return max(0, opts.grace_period_seconds)
        return int(spec.get("terminationGracePeriodSeconds", 30))

    def _after_delete(self, rt: ResourceType, obj: Obj) -> None:
        if rt.kind == "CustomResourceDefinition":
            self._unserve_crd(obj["metadata"]["name"])
            spec = obj["spec"]
            key = (spec["group"], spec["names"]["plural"])
            for item in list(self.store.items(key)):
                self.store.delete(key, item["metadata"].get("namespace", ""), item["metadata"]["name"])

    def _delete_namespace(self, rt: ResourceType, ns: Obj) -> Obj:
        if ns["metadata"]["name"] in _SYSTEM_NAMESPACES[:2] or ns["metadata"]["name"] == "kube-public":
            raise ApiError(403, "Forbidden", f'namespaces "{ns["metadata"]["name"]}" is forbidden: this namespace '
                           "may not be deleted")
        if ns["metadata"].get("deletionTimestamp"):
            return ns
        new = {**ns, "metadata": {**ns["metadata"], "deletionTimestamp": self._now()},
               "status": {**(ns.get("status") or {}), "phase": "Terminating"}}
        return self.store.update(rt.store_key, new)

    def finish_namespace(self, name: str) -> None:
        """Called by the namespace controller once the namespace is empty."""
        ns = self.store.get(("", "namespaces"), "", name)
        if ns is not None and ns["metadata"].get("deletionTimestamp") and not ns["metadata"].get("finalizers"):
            self.store.delete(("", "namespaces"), "", name)

    def delete_collection(self, rt: ResourceType, namespace: str | None, label_selector: str | None,
                          field_selector: str | None, opts: DeleteOptions) -> list[Obj]:
        result = self.list(rt, namespace, label_selector, field_selector)
        deleted = []
        for obj in result.items:
            try:
                deleted.append(self.delete(rt, obj["metadata"].get("namespace", ""), obj["metadata"]["name"], opts))
            except ApiError as exc:
                if exc.code != 404:
                    raise
        return deleted

    # -- subresources ----------------------------------------------------------

    def get_scale(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.get(rt, namespace, name)
        crdv = self.crd_version(rt)
        if crdv is not None:
            scale = crdv.get_scale(obj)
        else:
            spec, status = obj.get("spec") or {}, obj.get("status") or {}
            scale = {"apiVersion": "autoscaling/v1", "kind": "Scale",
                     "spec": {"replicas": spec.get("replicas", 1)},
                     "status": {"replicas": status.get("replicas", 0),
                                "selector": _selector_string((spec.get("selector") or {}))}}
        meta = obj["metadata"]
        scale["metadata"] = {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta["uid"],
                             "resourceVersion": meta["resourceVersion"],
                             "creationTimestamp": meta.get("creationTimestamp")}
        return scale

    def set_scale(self, rt: ResourceType, namespace: str, name: str, scale: Obj, opts: WriteOptions) -> Obj:
        if not isinstance(scale, dict) or not isinstance(scale.get("spec"), dict):
            raise bad_request("the body must be an autoscaling/v1 Scale with spec.replicas")
        replicas = scale["spec"].get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid("Scale", name, [Cause("spec.replicas", f"Invalid value: {replicas!r}: must be greater "
                                                "than or equal to 0")], "autoscaling")
        old = self.store.get(rt.store_key, namespace if rt.namespaced else "", name)
        if old is None:
            raise not_found(rt.plural, name, rt.group)
        expect = (scale.get("metadata") or {}).get("resourceVersion")
        if expect and expect != old["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, name, "the object has been modified; please apply your changes to the "
                           "latest version and try again", rt.group)
        crdv = self.crd_version(rt)
        current = self._as_version(rt, old)
        if crdv is not None:
            new = crdv.set_scale_replicas(current, replicas)
        else:
            new = {**current, "spec": {**(current.get("spec") or {}), "replicas": replicas}}
        self._write(rt, old, new, opts, None, None)
        return self.get_scale(rt, namespace, name)

    def bind(self, namespace: str, name: str, binding: Obj, opts: WriteOptions) -> Obj:
        """POST pods/<name>/binding: assign a node, copying the Binding's annotations."""
        rt = self.resolve("", "v1", "pods")
        pod = self.store.get(rt.store_key, namespace, name)
        if pod is None:
            raise not_found("pods", name)
        target = (binding or {}).get("target") or {}
        node_name = target.get("name")
        if not node_name:
            raise invalid("Binding", name, [Cause("target.name", "Required value: a node name is required",
                                                  "FieldValueRequired")])
        if target.get("kind", "Node") != "Node":
            raise invalid("Binding", name, [Cause("target.kind", f'Unsupported value: "{target.get("kind")}": '
                                                  'supported values: "Node"', "FieldValueNotSupported")])
        uid = ((binding.get("metadata") or {}).get("uid"))
        if uid and uid != pod["metadata"]["uid"]:
            raise conflict("pods", name, "the UID in the binding does not match the pod's")
        if pod["metadata"].get("deletionTimestamp"):
            raise conflict("pods", name, "the pod is being deleted")
        if (pod.get("spec") or {}).get("nodeName"):
            raise conflict("pods", name, f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"')
        if self.store.get(("", "nodes"), "", node_name) is None:
            raise not_found("nodes", node_name)
        annotations = {**(pod["metadata"].get("annotations") or {}),
                       **((binding.get("metadata") or {}).get("annotations") or {})}
        conditions = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") != "PodScheduled"]
        conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                           "lastTransitionTime": self._now()})
        new = {**pod, "metadata": {**pod["metadata"], "annotations": annotations},
               "spec": {**pod["spec"], "nodeName": node_name},
               "status": {**(pod.get("status") or {}), "conditions": conditions}}
        if opts.dry_run:
            return new
        self.store.update(rt.store_key, new)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def evict(self, namespace: str, name: str, eviction: Obj, opts: WriteOptions) -> Obj:
        """POST pods/<name>/eviction: delete unless a PodDisruptionBudget forbids it (429)."""
        rt = self.resolve("", "v1", "pods")
        pod = self.store.get(rt.store_key, namespace, name)
        if pod is None:
            raise not_found("pods", name)
        pdb_key = ("policy", "poddisruptionbudgets")
        labels = pod["metadata"].get("labels") or {}
        pod_ready = _pod_ready(pod)
        if not pod["metadata"].get("deletionTimestamp") and pod_ready:
            for pdb in self.store.items(pdb_key, namespace):
                if not match_label_selector((pdb.get("spec") or {}).get("selector"), labels):
                    continue
                status = pdb.get("status") or {}
                allowed = int(status.get("disruptionsAllowed", 0))
                if allowed < 1:
                    raise ApiError(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's "
                                   "disruption budget.",
                                   {"causes": [{"reason": "DisruptionBudget", "message":
                                                f"The disruption budget {pdb['metadata']['name']} needs "
                                                f"{status.get('desiredHealthy', 0)} healthy pods and has "
                                                f"{status.get('currentHealthy', 0)} currently"}]})
                if not opts.dry_run:
                    disrupted = {**(status.get("disruptedPods") or {}), name: self._now()}
                    self.store.update(pdb_key, {**pdb, "status": {**status, "disruptionsAllowed": allowed - 1,
                                                                   "disruptedPods": disrupted}})
        delete_opts = DeleteOptions(dry_run=opts.dry_run)
        spec_opts = (eviction or {}).get("deleteOptions") or {}
        if "gracePeriodSeconds" in spec_opts:
            delete_opts.grace_period_seconds = spec_opts["gracePeriodSeconds"]
        self.delete(rt, namespace, name, delete_opts)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # -- defaults --------------------------------------------------------------

    def _apply_defaults(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        defaults = _DEFAULTERS.get(rt.kind) if not rt.crd_name else None
        if defaults is not None:
            defaults(self, obj, old)

    def record_event(self, involved: Obj, reason: str, message: str, component: str, type_: str = "Normal") -> None:
        """A core/v1 Event about ``involved``, as the cluster's own components write them
        (``kubectl describe`` lists them). Repeats of the same reason and message on the
        same object bump ``count`` instead of adding another Event."""
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        rt = self.resolve("", "v1", "events")
        name = f"{meta['name']}.{uuid.uuid5(uuid.NAMESPACE_OID, meta['uid'] + reason + message).hex[:16]}"
        now = self._now()
        existing = self.store.get(rt.store_key, namespace, name)
        if existing is not None:
            self.update(rt, namespace, name, {**existing, "count": int(existing.get("count", 1)) + 1,
                                              "lastTimestamp": now}, WriteOptions(manager=component), check_rv=False)
            return
        event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": namespace},
                 "involvedObject": {"apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"),
                                    "name": meta["name"], "namespace": meta.get("namespace"), "uid": meta["uid"],
                                    "resourceVersion": meta.get("resourceVersion")},
                 "reason": reason, "message": message, "type": type_, "count": 1,
                 "source": {"component": component}, "firstTimestamp": now, "lastTimestamp": now,
                 "reportingComponent": component, "reportingInstance": component}
        self.create(rt, namespace, event, WriteOptions(manager=component))

    def allocate_cluster_ip(self) -> str:
        """The next free address of the service range, skipping those stored Services
        hold (a cluster loaded from a state file has allocated some already)."""
        used = {(svc.get("spec") or {}).get("clusterIP") for svc in self.store.items(("", "services"))}
        while (ip := str(next(self._cluster_ips))) in used:
            pass
        return ip


def _resource_version(value: Any) -> Any:
    """A resourceVersion a client sent to compare with the stored one. Versions are
    numbers here; anything else is a malformed request (400), not a conflict."""
    if value in (None, "") or (isinstance(value, str) and value.isascii() and value.isdigit()):
        return value
    raise bad_request(f'metadata.resourceVersion: Invalid value: "{value}": must be a resourceVersion the server '
                      "returned (an unsigned integer)")


def _name_problems(name: str, dns_label: bool) -> list[str]:
    """Why ``name`` is not a DNS-1123 label (``dns_label``) or subdomain, as kube-apiserver words it."""
    limit, pattern, message = (63, _DNS1123_LABEL, _LABEL_MSG) if dns_label else \
        (253, DNS1123_SUBDOMAIN, _SUBDOMAIN_MSG)
    problems = [f"must be no more than {limit} characters"] if len(name) > limit else []
    if not pattern.match(name):
        problems.append(message)
    return problems


def _selector_string(selector: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr["operator"], expr["key"], ",".join(expr.get("values") or [])
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[op])
    return ",".join(parts)


def _pod_ready(pod: Obj) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _default_pod(registry: Registry, pod: Obj, old: Obj | None) -> None:
    spec = pod.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("enableServiceLinks", True)
    if old is None:
        _admit_priority(registry, pod, spec)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if not isinstance(container, dict):
            continue
        image = str(container.get("image", ""))
        container.setdefault("imagePullPolicy", "Always" if image.endswith(":latest") or ":" not in image
                             else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
    if old is None:
        pod["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
        if spec.get("nodeName"):
            pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                            "lastTransitionTime": registry._now()}]


def _qos_class(spec: Obj) -> str:
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    requests = [c.get("resources", {}).get("requests") or {} for c in containers]
    limits = [c.get("resources", {}).get("limits") or {} for c in containers]
    if not any(requests) and not any(limits):
        return "BestEffort"
    if all(lim.get("cpu") and lim.get("memory") and (not req or req == {k: lim[k] for k in req if k in lim})
           for req, lim in zip(requests, limits)):
        return "Guaranteed"
    return "Burstable"


def _default_service(registry: Registry, svc: Obj, old: Obj | None) -> None:
    spec = svc.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if old is not None and (old.get("spec") or {}).get("clusterIP"):
        spec.setdefault("clusterIP", old["spec"]["clusterIP"])
    if "clusterIP" not in spec:
        spec["clusterIP"] = registry.allocate_cluster_ip()
    if spec["clusterIP"] != "None":
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    svc.setdefault("status", {"loadBalancer": {}})


def _default_namespace(registry: Registry, ns: Obj, old: Obj | None) -> None:
    ns.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    labels = ns["metadata"].setdefault("labels", {})
    labels["kubernetes.io/metadata.name"] = ns["metadata"]["name"]
    if old is None or "status" not in ns:
        ns["status"] = (old or {}).get("status") or {"phase": "Active"}


def _default_deployment(registry: Registry, deploy: Obj, old: Obj | None) -> None:
    spec = deploy.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault("strategy", {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})


def _admit_priority(registry: Registry, pod: Obj, spec: dict[str, Any]) -> None:
    """The Priority admission plugin: a new pod's priority (and preemption policy) come from its
    PriorityClass, else from the class marked globalDefault; an unknown class is forbidden."""
    classes = list(registry.store.items(registry.resolve("scheduling.k8s.io", "v1", "priorityclasses").store_key))
    name = spec.get("priorityClassName")
    if name:
        chosen = next((c for c in classes if c["metadata"]["name"] == name), None)
        if chosen is None:
            raise ApiError(403, "Forbidden", f'pods "{pod["metadata"].get("name", "")}" is forbidden: '
                                             f"no PriorityClass with name {name} was found")
    else:
        chosen = next((c for c in sorted(classes, key=lambda c: c["metadata"]["name"]) if c.get("globalDefault")),
                      None)
    if chosen is not None:
        spec["priority"] = int(chosen.get("value", 0))
        spec.setdefault("preemptionPolicy", chosen.get("preemptionPolicy") or "PreemptLowerPriority")
        if not name:
            spec["priorityClassName"] = chosen["metadata"]["name"]


_DEFAULTERS: dict[str, Callable[[Registry, Obj, Obj | None], None]] = {
    "Pod": _default_pod,
    "Service": _default_service,
    "Namespace": _default_namespace,
    "Deployment": _default_deployment,
}
