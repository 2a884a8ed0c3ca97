"""The HTTP face of the local API server.

Parses Kubernetes REST paths (``/api/v1/namespaces/ns/pods/name/status``,
``/apis/group/version/...``), request bodies and query parameters, then calls
the registry. Serves discovery, OpenAPI, lists with paging, watches (with
bookmarks, resume and 410 Gone), Table output for ``kubectl get``, pod logs and
subresources, and turns every error into the ``Status`` object a real server
sends. Real clients (kubectl, helm, kopf, the kubernetes client) connect here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import unquote

import orjson
import yaml
from aiohttp import web

from . import protobuf, tables
from .errors import ApiError, bad_request
from .openapi import OpenAPIDocs, ResourceDoc, accepts_json
from .registry import DeleteOptions, Registry, WriteOptions
from .resources import VERBS_ALL, ResourceType
from .selectors import combine, field_predicate, label_predicate
from .store import Event

log = logging.getLogger(__name__)

KUBE_VERSION = {"major": "1", "minor": "37", "gitVersion": "v1.37.0-trireme", "gitCommit": "0" * 40,
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25",
                "compiler": "gc", "platform": "linux/amd64"}

def _protobuf_field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (payloads here are far below 128 bytes)."""
    return bytes([number << 3 | 2, len(payload)]) + payload


_EMPTY_V2_PROTOBUF = (_protobuf_field(1, b"2.0")  # openapi.v2.Document: swagger
                      + _protobuf_field(2, _protobuf_field(1, b"Kubernetes") + _protobuf_field(2, b"v1.37.0"))  # info
                      + _protobuf_field(8, b""))  # paths
"""An OpenAPI v2 document with no definitions, in gnostic's protobuf encoding."""

PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply-cbor",
}


@dataclass
class ServerSettings:
    """HTTP behaviour of the local API server."""

    max_body_bytes: int = 3 * 1024 * 1024
    """kube-apiserver's limit on request bodies (3 MiB); larger bodies get 413."""
    bookmark_interval_s: float = 10.0
    """How often watches that allow bookmarks get one. kube-apiserver sends them
    about once a minute; more often here so that clients resume from recent
    versions after the local cluster's shorter history."""
    default_watch_timeout_s: float = 1800.0
    """Watches without timeoutSeconds end after this (kube-apiserver: 30–60 min)."""


class LogSource(Protocol):
    """Where ``kubectl logs`` reads from: the kubelet."""

    def read_logs(self, namespace: str, pod: str, container: str | None, follow: bool,
                  tail_lines: int | None, previous: bool) -> AsyncIterator[bytes]: ...


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def _split_path(path: str) -> list[str]:
    return [unquote(p) for p in path.strip("/").split("/") if p]


@dataclass
class Target:
    """A parsed resource URL."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_path: bool = False


class ApiServer:
    """aiohttp application serving the Kubernetes REST API over a ``Registry``."""

    def __init__(self, registry: Registry, settings: ServerSettings | None = None,
                 log_source: LogSource | None = None):
        self.registry = registry
        self.settings = settings or ServerSettings()
        self.log_source = log_source
        self._openapi: OpenAPIDocs | None = None
        registry.on_types_changed.append(self._types_changed)
        self.app = web.Application(client_max_size=self.settings.max_body_bytes * 4,
                                   middlewares=[self._errors])
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._watch_tasks: set[asyncio.Task[Any]] = set()

    def _types_changed(self) -> None:
        self._openapi = None

    @property
    def openapi(self) -> OpenAPIDocs:
        if self._openapi is None:
            docs = []
            for rt in self.registry.resource_types():
                crdv = self.registry.crd_version(rt)
                docs.append(ResourceDoc(rt.group, rt.version, rt.kind, rt.plural, rt.namespaced,
                                        set(rt.subresources), rt.definition,
                                        crdv.schema if crdv is not None else None))
            self._openapi = OpenAPIDocs(docs)
        return self._openapi

    # -- plumbing --------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return _json(exc.to_status(), status=exc.code)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # never let one bad request take the server down
            log.exception("internal error serving %s %s", request.method, request.path)
            return _json(ApiError(500, "InternalError", f"Internal error occurred: {exc}").to_status(), status=500)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = _split_path(request.path)
        if not parts:
            return _json({"paths": sorted(self._root_paths())})
        head = parts[0]
        if head in ("healthz", "readyz", "livez"):
            return web.Response(text="ok")
        if head == "version":
            return _json(KUBE_VERSION)
        if head == "openapi":
            return self._serve_openapi(request, parts[1:])
        if head == "api":
            if len(parts) == 1:
                return _json({"kind": "APIVersions", "versions": ["v1"],
                              "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                              "serverAddress": request.host}]})
            if len(parts) == 2:
                return _json(self._resource_list("", parts[1]))
            return await self._resource_request(request, "", parts[1], parts[2:])
        if head == "apis":
            if len(parts) == 1:
                return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups()})
            if len(parts) == 2:
                group = next((g for g in self._groups() if g["name"] == parts[1]), None)
                if group is None:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                return _json({"kind": "APIGroup", "apiVersion": "v1", **group})
            if len(parts) == 3:
                return _json(self._resource_list(parts[1], parts[2]))
            return await self._resource_request(request, parts[1], parts[2], parts[3:])
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _root_paths(self) -> set[str]:
        paths = {"/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version", "/openapi/v2",
                 "/openapi/v3"}
        for rt in self.registry.resource_types():
            if rt.group:
                paths.add(f"/apis/{rt.group}")
                paths.add(f"/apis/{rt.group}/{rt.version}")
        return paths

    # -- discovery -------------------------------------------------------------

    def _groups(self) -> list[dict[str, Any]]:
        versions: dict[str, list[str]] = {}
        for rt in self.registry.resource_types():
            if rt.group and rt.version not in versions.setdefault(rt.group, []):
                versions[rt.group].append(rt.version)
        groups = []
        for group in sorted(versions, key=lambda g: (not g.endswith(".k8s.io") and "." in g, g)):
            vs = sorted(versions[group], key=_version_priority, reverse=True)
            groups.append({"name": group,
                           "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in vs],
                           "preferredVersion": {"groupVersion": f"{group}/{vs[0]}", "version": vs[0]}})
        return groups

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        types = [rt for rt in self.registry.resource_types() if rt.group == group and rt.version == version]
        if not types:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources: list[dict[str, Any]] = []
        for rt in sorted(types, key=lambda r: r.plural):
            entry: dict[str, Any] = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                                     "kind": rt.kind, "verbs": list(VERBS_ALL)}
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            for sub in sorted(rt.subresources):
                sub_kind, verbs = {
                    "status": (rt.kind, ["get", "patch", "update"]),
                    "scale": ("Scale", ["get", "patch", "update"]),
                    "binding": ("Binding", ["create"]),
                    "eviction": ("Eviction", ["create"]),
                    "log": ("Pod", ["get"]),
                    "finalize": (rt.kind, ["update"]),
                }[sub]
                sub_entry: dict[str, Any] = {"name": f"{rt.plural}/{sub}", "singularName": "",
                                             "namespaced": rt.namespaced, "kind": sub_kind, "verbs": verbs}
                if sub == "scale":
                    sub_entry.update(group="autoscaling", version="v1")
                if sub == "eviction":
                    sub_entry.update(group="policy", version="v1")
                resources.append(sub_entry)
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    def _serve_openapi(self, request: web.Request, rest: list[str]) -> web.Response:
        """OpenAPI documents with ETags. v2 is served in full as JSON; asked for as
        protobuf (kubectl's fallback for kinds the v3 documents lack, such as a
        mistyped kind) it is an empty document, so that kubectl goes on to report
        the unknown kind itself, as it does against kube-apiserver."""
        docs = self.openapi
        if rest == ["v2"]:
            if not accepts_json(request.headers.get("Accept")):
                return web.Response(body=_EMPTY_V2_PROTOBUF, content_type="application/octet-stream")
            return self._cached_document(request, docs.v2(), docs.v2_etag())
        if rest == ["v3"]:
            return _json(docs.v3_index())
        if rest and rest[0] == "v3":
            path = "/".join(rest[1:])
            doc, etag = docs.v3(path), docs.v3_etag(path)
            if doc is not None and etag is not None:
                asked = request.query.get("hash")
                if asked and asked != etag:
                    raise web.HTTPMovedPermanently(f"/openapi/v3/{path}?hash={etag}")
                extra = {"Cache-Control": "public, immutable", "Vary": "Accept"} if asked else {}
                return self._cached_document(request, doc, etag, extra)
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    @staticmethod
    def _cached_document(request: web.Request, body: bytes, etag: str,
                         extra: dict[str, str] | None = None) -> web.Response:
        headers = {"ETag": f'"{etag}"', **(extra or {})}
        if request.headers.get("If-None-Match", "").strip('"') == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="application/json", headers=headers)

    # -- resources -------------------------------------------------------------

    def _parse_target(self, group: str, version: str, rest: list[str]) -> Target:
        watch_path = False
        if rest and rest[0] == "watch":
            watch_path, rest = True, rest[1:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and not (group == "" and len(rest) == 3
                                                               and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = self.registry.resolve(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in rt.subresources:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({rt.plural}/{sub})")
        if namespace is not None and not rt.namespaced:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({rt.plural} is "
                           "cluster-scoped)")
        return Target(rt, namespace, name, sub, watch_path)

    async def _resource_request(self, request: web.Request, group: str, version: str,
                                rest: list[str]) -> web.StreamResponse:
        if group == "" and request.method == "POST" and len(rest) == 3 and rest[0] == "namespaces" \
                and rest[2] == "bindings":
            # the Binding resource: POST namespaces/<ns>/bindings with the pod's name in metadata
            body = await self._read_body(request)
            pod = ((body or {}).get("metadata") or {}).get("name", "") if isinstance(body, dict) else ""
            return _json(self.registry.bind(rest[1], pod, body, self._write_options(request)), status=201)
        t = self._parse_target(group, version, rest)
        q = request.query
        method = request.method
        if method == "GET":
            if q.get("resourceVersion"):
                _parse_rv(q["resourceVersion"])  # a malformed version is the client's mistake: 400
            if t.watch_path or _truthy(q.get("watch")):
                return await self._watch(request, t)
            if t.name is None:
                return self._list(request, t)
            if t.subresource == "log":
                return await self._logs(request, t)
            if t.subresource == "scale":
                return _json(self.registry.get_scale(t.rt, t.namespace or "", t.name))
            obj = self.registry.get(t.rt, t.namespace or "", t.name)
            return self._object_response(request, t.rt, obj)
        if method == "POST":
            body = await self._read_body(request)
            opts = self._write_options(request)
            if t.subresource == "binding" and t.name:
                return _json(self.registry.bind(t.namespace or "", t.name, body, opts), status=201)
            if t.subresource == "eviction" and t.name:
                return _json(self.registry.evict(t.namespace or "", t.name, body, opts), status=201)
            if t.name is not None:
                raise ApiError(405, "MethodNotAllowed", f"POST is not supported on {t.rt.plural}/{t.name}")
            obj = self.registry.create(t.rt, t.namespace or "", body, opts)
            return self._written(obj, 201, opts)
        if method == "PUT":
            if t.name is None:
                raise ApiError(405, "MethodNotAllowed", "PUT needs an object name")
            body = await self._read_body(request)
            opts = self._write_options(request)
            if t.subresource == "scale":
                return _json(self.registry.set_scale(t.rt, t.namespace or "", t.name, body, opts))
            sub = "status" if t.subresource == "status" else None
            obj = self.registry.update(t.rt, t.namespace or "", t.name, body, opts, sub)
            return self._written(obj, 200, opts)
        if method == "PATCH":
            if t.name is None:
                raise ApiError(405, "MethodNotAllowed", "PATCH needs an object name")
            patch_type = PATCH_TYPES.get(request.content_type)
            if patch_type is None or patch_type == "apply-cbor":
                raise ApiError(415, "UnsupportedMediaType",
                               f"the body of the request was in an unknown format - accepted media types include: "
                               f"{', '.join(k for k in PATCH_TYPES if not k.endswith('cbor'))}")
            body = await self._read_body(request, yaml_ok=patch_type == "apply")
            opts = self._write_options(request)
            if patch_type == "apply" and not q.get("fieldManager"):
                raise bad_request("PATCH, application/apply-patch+yaml: fieldManager is required for apply requests")
            if t.subresource == "scale":
                return _json(self._patch_scale(t, patch_type, body, opts))
            sub = "status" if t.subresource == "status" else None
            obj = self.registry.patch(t.rt, t.namespace or "", t.name, patch_type, body, opts, sub)
            return self._written(obj, 200, opts)
        if method == "DELETE":
            body = await self._read_body(request, optional=True)
            dopts = self._delete_options(request, body)
            if t.name is None:
                items = self.registry.delete_collection(t.rt, t.namespace, q.get("labelSelector"),
                                                        q.get("fieldSelector"), dopts)
                return _json(self._list_body(t.rt, items, self.registry.store.resource_version, None, None))
            obj = self.registry.delete(t.rt, t.namespace or "", t.name, dopts)
            return _json(obj)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    def _patch_scale(self, t: Target, patch_type: str, body: Any, opts: WriteOptions) -> dict[str, Any]:
        from . import patch as patchlib
        current = self.registry.get_scale(t.rt, t.namespace or "", t.name or "")
        if patch_type == "json":
            new = patchlib.json_patch(current, body)
        elif patch_type in ("merge", "strategic"):
            new = patchlib.merge_patch(current, body)
        else:
            new = patchlib.merge_patch(current, {"spec": (body or {}).get("spec", {})})
        return self.registry.set_scale(t.rt, t.namespace or "", t.name or "", new, opts)

    @staticmethod
    def _written(obj: dict[str, Any], status: int, opts: WriteOptions) -> web.Response:
        headers = None
        if opts.warnings:
            headers = {"Warning": ", ".join('299 - "{}"'.format(w.replace('"', '\\"')) for w in opts.warnings)}
        return _json(obj, status=status, headers=headers)

    def _write_options(self, request: web.Request) -> WriteOptions:
        q = request.query
        manager = q.get("fieldManager") or _manager_from_agent(request.headers.get("User-Agent", ""))
        validation = q.get("fieldValidation", "Warn")
        if validation not in ("Strict", "Warn", "Ignore"):
            raise bad_request(f"fieldValidation must be one of Strict, Warn, Ignore (got {validation!r})")
        dry_run = q.get("dryRun")
        if dry_run not in (None, "", "All"):
            raise bad_request(f"dryRun must be All (got {dry_run!r})")
        return WriteOptions(manager=manager, dry_run=dry_run == "All", field_validation=validation,
                            force=_truthy(q.get("force")))

    def _delete_options(self, request: web.Request, body: Any) -> DeleteOptions:
        q = request.query
        opts = DeleteOptions()
        if isinstance(body, dict):
            opts.grace_period_seconds = body.get("gracePeriodSeconds")
            opts.propagation_policy = body.get("propagationPolicy")
            if body.get("orphanDependents") is True:
                opts.propagation_policy = "Orphan"
            pre = body.get("preconditions") or {}
            opts.precondition_uid, opts.precondition_rv = pre.get("uid"), pre.get("resourceVersion")
            opts.dry_run = "All" in (body.get("dryRun") or [])
        if "gracePeriodSeconds" in q:
            opts.grace_period_seconds = _int_param(q, "gracePeriodSeconds")
        if q.get("propagationPolicy"):
            opts.propagation_policy = q["propagationPolicy"]
        if opts.propagation_policy not in (None, "Background", "Foreground", "Orphan"):
            raise bad_request(f"propagationPolicy must be Background, Foreground or Orphan "
                              f"(got {opts.propagation_policy!r})")
        opts.dry_run = opts.dry_run or q.get("dryRun") == "All"
        return opts

    async def _read_body(self, request: web.Request, yaml_ok: bool = False, optional: bool = False) -> Any:
        if request.content_length and request.content_length > self.settings.max_body_bytes:
            raise ApiError(413, "RequestEntityTooLarge",
                           f"Request entity too large: limit is {self.settings.max_body_bytes}")
        chunks, size = [], 0
        while chunk := await request.content.read(1 << 16):
            size += len(chunk)
            if size > self.settings.max_body_bytes:
                raise ApiError(413, "RequestEntityTooLarge",
                               f"Request entity too large: limit is {self.settings.max_body_bytes}")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            if optional:
                return None
            raise bad_request("the request body is empty: send the object as JSON or YAML")
        ctype = request.content_type
        if ctype == protobuf.MEDIA_TYPE:
            return protobuf.decode_body(raw)
        if "protobuf" in ctype or "cbor" in ctype:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format "
                           f"({ctype}) - accepted media types include: application/json, application/yaml")
        try:
            if yaml_ok or "yaml" in ctype:
                return yaml.safe_load(raw)
            return orjson.loads(raw)
        except (orjson.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
            kind = "yaml" if (yaml_ok or "yaml" in ctype) else "json"
            raise bad_request(f"the request body is not valid {kind}: {str(exc).splitlines()[0]}") from None

    # -- responses for reads ---------------------------------------------------

    def _wants_table(self, request: web.Request) -> bool:
        accept = request.headers.get("Accept", "")
        first = accept.split(",")[0]
        return "as=Table" in first

    def _include_object(self, request: web.Request) -> str:
        return request.query.get("includeObject", "Metadata")

    def _object_response(self, request: web.Request, rt: ResourceType, obj: dict[str, Any]) -> web.Response:
        if self._wants_table(request):
            return _json(self._table(rt, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]},
                                     self._include_object(request)))
        return _json(obj)

    def _table(self, rt: ResourceType, items: list[dict[str, Any]], list_meta: dict[str, Any],
               include_object: str, with_columns: bool = True) -> dict[str, Any]:
        crdv = self.registry.crd_version(rt)
        columns = crdv.additional_printer_columns() if crdv is not None else None
        table = tables.to_table(items, rt.kind, columns, list_meta, include_object,
                                now=datetime.now(timezone.utc))
        if not with_columns:
            table["columnDefinitions"] = None
        return table

    def _list(self, request: web.Request, t: Target) -> web.Response:
        q = request.query
        result = self.registry.list(t.rt, t.namespace, q.get("labelSelector"), q.get("fieldSelector"),
                                    _int_param(q, "limit"), q.get("continue"))
        if self._wants_table(request):
            meta: dict[str, Any] = {"resourceVersion": str(result.resource_version)}
            if result.continue_token:
                meta["continue"] = result.continue_token
                meta["remainingItemCount"] = result.remaining
            return _json(self._table(t.rt, result.items, meta, self._include_object(request)))
        return _json(self._list_body(t.rt, result.items, result.resource_version, result.continue_token,
                                     result.remaining))

    @staticmethod
    def _list_body(rt: ResourceType, items: list[dict[str, Any]], rv: int, cont: str | None,
                   remaining: int | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if cont:
            meta["continue"] = cont
            meta["remainingItemCount"] = remaining
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": items}

    # -- watch -----------------------------------------------------------------

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        fsel = q.get("fieldSelector")
        if t.name is not None:
            name_sel = f"metadata.name={t.name}"
            fsel = f"{fsel},{name_sel}" if fsel else name_sel
        predicate = combine(label_predicate(q.get("labelSelector")), field_predicate(fsel, t.rt.kind))
        rv_param = q.get("resourceVersion")
        send_initial = _truthy(q.get("sendInitialEvents"))
        since = None if (not rv_param or rv_param == "0" or send_initial) else _parse_rv(rv_param)
        bookmarks = _truthy(q.get("allowWatchBookmarks"))
        timeout = _int_param(q, "timeoutSeconds")
        deadline = time.monotonic() + (timeout if timeout is not None else self.settings.default_watch_timeout_s)
        table = self._wants_table(request)
        include_object = self._include_object(request)

        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                           "Cache-Control": "no-cache, private"})
        store = self.registry.store
        try:
            watcher, replay = store.watch(t.rt.store_key, t.namespace if t.rt.namespaced else None, since, predicate)
        except ApiError as exc:
            if exc.code != 410:
                raise
            await response.prepare(request)
            await response.write(orjson.dumps({"type": "ERROR", "object": exc.to_status()}) + b"\n")
            await response.write_eof()
            return response
        await response.prepare(request)
        first_table = [True]

        def encode(event: Event) -> bytes:
            obj = self.registry._as_version(t.rt, event.obj)
            if table:
                obj = self._table(t.rt, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]},
                                  include_object, with_columns=first_table[0])
                first_table[0] = False
            return orjson.dumps({"type": event.type, "object": obj}) + b"\n"

        def bookmark(initial_end: bool = False) -> bytes:
            meta: dict[str, Any] = {"resourceVersion": str(store.resource_version)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            return orjson.dumps({"type": "BOOKMARK", "object": {"kind": t.rt.kind, "apiVersion": t.rt.api_version,
                                                                "metadata": meta}}) + b"\n"
        try:
            if replay:
                await response.write(b"".join(encode(e) for e in replay))
            if send_initial and bookmarks:
                await response.write(bookmark(initial_end=True))
            next_bookmark = time.monotonic() + self.settings.bookmark_interval_s
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                wait = min(deadline, next_bookmark) - now if bookmarks else deadline - now
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), timeout=max(0.0, wait))
                except asyncio.TimeoutError:
                    if bookmarks and time.monotonic() >= next_bookmark:
                        await response.write(bookmark())
                        next_bookmark = time.monotonic() + self.settings.bookmark_interval_s
                    continue
                if event is None:  # the watcher fell too far behind
                    break
                batch = [event]
                while not watcher.queue.empty() and len(batch) < 500:
                    nxt = watcher.queue.get_nowait()
                    if nxt is None:
                        break
                    batch.append(nxt)
                await response.write(b"".join(encode(e) for e in batch))
            if bookmarks:
                await response.write(bookmark())
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            watcher.close()
        return response

    # -- logs ------------------------------------------------------------------

    async def _logs(self, request: web.Request, t: Target) -> web.StreamResponse:
        pod = self.registry.get(t.rt, t.namespace or "", t.name or "")
        q = request.query
        container = q.get("container")
        containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        if container and container not in containers:
            raise bad_request(f"container {container} is not valid for pod {t.name}")
        if not container and len(containers) > 1:
            raise bad_request(f"a container name must be specified for pod {t.name}, choose one of: {containers}")
        if self.log_source is None or not (pod.get("spec") or {}).get("nodeName"):
            raise bad_request(f'container "{container or (containers[0] if containers else "")}" in pod '
                              f'"{t.name}" is waiting to start: ContainerCreating')
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        try:
            async for chunk in self.log_source.read_logs(t.namespace or "", t.name or "", container,
                                                         _truthy(q.get("follow")), _int_param(q, "tailLines"),
                                                         _truthy(q.get("previous"))):
                await response.write(chunk)
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def _int_param(q: Any, name: str) -> int | None:
    value = q.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{name} must be an integer (got {value!r})") from None


def _parse_rv(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"resourceVersion must be a number (got {value!r})") from None


def _manager_from_agent(agent: str) -> str:
    """kube-apiserver names the default field manager after the client's User-Agent."""
    return (agent.split("/")[0] or "unknown")[:128]


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version order: GA > beta > alpha, then by number (v2 > v1 > v1beta2)."""
    import re
    m = re.match(r"^v(\d+)(?:(alpha|beta)(\d+))?$", version)
    if not m:
        return (-1, 0, 0)
    major, stage, minor = m.groups()
    return ({None: 3, "beta": 2, "alpha": 1}[stage], int(major), int(minor or 0))
