"""Protobuf request bodies: what kubectl and helm really send decodes to what they would send as JSON.

The bodies are captured from the real kubectl 1.37 and helm 4 writing to a
local API server; the expected JSON is ``kubectl create ... --dry-run=client
-o json`` for the same command (the same Go object through Go's JSON encoder).
A hypothesis round trip drives the decoder with bodies a small encoder builds
from the same field tables.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from trireme.devcluster import protobuf
from trireme.devcluster.errors import ApiError
from trireme.devcluster.openapi import _catalog
from trireme.devcluster.registry import Registry
from trireme.devcluster.resources import BUILTIN_RESOURCES
from trireme.devcluster.server import ApiServer
from trireme.devcluster.store import Store

CHART = Path(__file__).parent / "charts" / "hello"


# -- a local API server that keeps the raw bodies it was sent --------------------------


@dataclass
class Captured:
    method: str
    path: str
    content_type: str
    raw: bytes


@dataclass
class CaptureServer:
    """The real API server, remembering each request body before decoding it."""

    kubeconfig: Path
    bodies: list[Captured] = field(default_factory=list)

    def protobuf_bodies(self, since: int = 0) -> list[Captured]:
        return [b for b in self.bodies[since:] if b.content_type == protobuf.MEDIA_TYPE]


def _capturing_server(registry: Registry, bodies: list[Captured]) -> ApiServer:
    server = ApiServer(registry)
    read_body = server._read_body

    async def capture(request: web.Request, *args: Any, **kwargs: Any) -> Any:
        raw = await request.content.read()
        bodies.append(Captured(request.method, request.path, request.content_type, raw))
        return await read_body(_Replayed(request, raw), *args, **kwargs)  # type: ignore[arg-type]

    server._read_body = capture  # type: ignore[method-assign]
    return server


class _Replayed:
    """A request whose body, already read, the server's own reader reads again."""

    def __init__(self, request: web.Request, raw: bytes):
        self._request = request
        self.content = self
        self._raw = raw

    async def read(self, limit: int = -1) -> bytes:
        size = len(self._raw) if limit < 0 else limit
        chunk, self._raw = self._raw[:size], self._raw[size:]
        return chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


@pytest.fixture(scope="module")
def capture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaptureServer]:
    bodies: list[Captured] = []
    started = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        server = _capturing_server(Registry(Store()), bodies)
        runner = web.AppRunner(server.app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        state["stop"] = asyncio.Event()
        state["loop"] = asyncio.get_running_loop()
        started.set()
        await state["stop"].wait()
        await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert started.wait(30), "the capture server did not start"
    kubeconfig = tmp_path_factory.mktemp("protobuf") / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": f"http://127.0.0.1:{state['port']}"}}],
        "users": [{"name": "local", "user": {}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "local"}}],
    }))
    try:
        yield CaptureServer(kubeconfig, bodies)
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(30)


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed: run scripts/install-tools.sh")
    return found


Run = Callable[..., subprocess.CompletedProcess[str]]


def _runner(tool: str, server: CaptureServer, home: Path) -> Run:
    binary = _tool(tool)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
               "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
        result = subprocess.run([binary, *args], capture_output=True, text=True, env=env, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
        return result
    return run


@pytest.fixture(scope="module")
def kubectl(capture_server: CaptureServer, tmp_path_factory: pytest.TempPathFactory) -> Run:
    run = _runner("kubectl", capture_server, tmp_path_factory.mktemp("kubectl-home"))
    run("create", "namespace", "demo")
    return run


@pytest.fixture(scope="module")
def helm(capture_server: CaptureServer, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _runner("helm", capture_server, tmp_path_factory.mktemp("helm-home"))


# -- kubectl create: the protobuf body equals the JSON dry run --------------------------


CREATE_COMMANDS = [
    pytest.param(["namespace", "pb-ns"], id="namespace"),
    pytest.param(["configmap", "cm", "--from-literal=a=1", "--from-literal=b=héllo wörld"], id="configmap"),
    pytest.param(["secret", "generic", "sec", "--from-literal=user=admin", "--from-literal=empty="],
                 id="secret-generic"),
    pytest.param(["secret", "docker-registry", "pull", "--docker-server=r.example", "--docker-username=u",
                  "--docker-password=p"], id="secret-docker-registry"),
    pytest.param(["deployment", "web", "--image=nginx:1.27", "--replicas=3", "--port=8080"], id="deployment"),
    pytest.param(["deployment", "multi", "--image=a", "--image=b"], id="deployment-two-images"),
    pytest.param(["deployment", "sleeper", "--image=busybox", "--", "sleep", "3600"], id="deployment-command"),
    pytest.param(["service", "clusterip", "svc", "--tcp=80:8080", "--tcp=443:https"], id="service-clusterip"),
    pytest.param(["service", "nodeport", "np", "--tcp=80:8080", "--node-port=30080"], id="service-nodeport"),
    pytest.param(["service", "clusterip", "headless", "--clusterip=None"], id="service-headless"),
    pytest.param(["priorityclass", "high", "--value=1000", "--description=important",
                  "--preemption-policy=Never"], id="priorityclass"),
    pytest.param(["priorityclass", "low", "--value=-5"], id="priorityclass-negative"),
    pytest.param(["role", "reader", "--verb=get", "--verb=list", "--resource=pods",
                  "--resource=deployments.apps"], id="role"),
    pytest.param(["rolebinding", "rb", "--role=reader", "--user=alice", "--serviceaccount=demo:robot"],
                 id="rolebinding"),
    pytest.param(["clusterrole", "cr", "--verb=get", "--resource=nodes", "--non-resource-url=/healthz"],
                 id="clusterrole"),
    pytest.param(["clusterrole", "agg", "--aggregation-rule=rbac.example/aggregate=true"], id="clusterrole-aggregated"),
    pytest.param(["clusterrolebinding", "crb", "--clusterrole=cr", "--group=devs"], id="clusterrolebinding"),
    pytest.param(["poddisruptionbudget", "pdb", "--selector=app=web", "--min-available=50%"], id="pdb-percent"),
    pytest.param(["poddisruptionbudget", "pdb2", "--selector=app=web", "--max-unavailable=1"], id="pdb-int"),
    pytest.param(["job", "once", "--image=busybox", "--", "echo", "hi"], id="job"),
    pytest.param(["serviceaccount", "robot"], id="serviceaccount"),
    pytest.param(["quota", "q", "--hard=cpu=2,memory=1Gi,pods=10", "--scopes=NotTerminating"], id="quota"),
]


@pytest.mark.parametrize("command", CREATE_COMMANDS)
def test_kubectl_create_body_decodes_to_the_json_kubectl_would_send(
        command: list[str], kubectl: Run, capture_server: CaptureServer) -> None:
    namespace = [] if command[0] in ("namespace", "priorityclass", "clusterrole", "clusterrolebinding") \
        else ["--namespace=demo"]
    dry_run = ["--dry-run=client", "--output=json"]
    expected = json.loads(kubectl(*namespace, *dry_run, "create", *command).stdout)
    before = len(capture_server.bodies)
    kubectl(*namespace, "create", *command)
    sent = capture_server.protobuf_bodies(before)
    assert len(sent) == 1, [(b.method, b.path, b.content_type) for b in capture_server.bodies[before:]]
    protobuf.reset_dropped_fields()
    assert protobuf.decode_body(sent[0].raw) == expected
    assert protobuf.dropped_fields() == {}


def test_configmap_from_a_binary_file_keeps_its_bytes(kubectl: Run, capture_server: CaptureServer,
                                                      tmp_path: Path) -> None:
    blob = bytes(range(256))
    (tmp_path / "blob.bin").write_bytes(blob)
    before = len(capture_server.bodies)
    kubectl("create", "configmap", "binary", "-n", "demo", f"--from-file={tmp_path / 'blob.bin'}")
    [sent] = capture_server.protobuf_bodies(before)
    decoded = protobuf.decode_body(sent.raw)
    assert base64.b64decode(decoded["binaryData"]["blob.bin"]) == blob
    stored = json.loads(kubectl("get", "configmap", "binary", "-n", "demo", "-o", "json").stdout)
    assert stored["binaryData"] == decoded["binaryData"]


def test_eviction_keeps_a_zero_grace_period() -> None:
    delete_options = _varint_field(1, 0) + _bytes_field(2, _bytes_field(1, b"uid-1"))  # gracePeriodSeconds, preconditions
    body = _body("policy/v1", "Eviction", _meta("victim", _bytes_field(3, b"demo")) + _bytes_field(2, delete_options))
    assert protobuf.decode_body(body) == {
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "victim", "namespace": "demo"},
        "deleteOptions": {"gracePeriodSeconds": 0, "preconditions": {"uid": "uid-1"}}}


def _release(secret: dict[str, Any]) -> dict[str, Any]:
    """data.release: JSON's base64 of helm's base64 of the gzipped release JSON."""
    return json.loads(gzip.decompress(base64.b64decode(base64.b64decode(secret["data"]["release"]))))


def test_helm_release_secrets_are_written_updated_and_deleted_in_protobuf(
        helm: Run, kubectl: Run, capture_server: CaptureServer) -> None:
    before = len(capture_server.bodies)
    helm("install", "pbdemo", str(CHART), "-n", "demo")
    [created] = [protobuf.decode_body(b.raw) for b in capture_server.protobuf_bodies(before) if b.method == "POST"]
    assert created["kind"] == "Secret" and created["type"] == "helm.sh/release.v1"
    assert created["metadata"]["labels"] | {"owner": "helm", "name": "pbdemo", "version": "1"} \
        == created["metadata"]["labels"]
    assert _release(created)["name"] == "pbdemo" and _release(created)["namespace"] == "demo"

    before = len(capture_server.bodies)
    helm("upgrade", "pbdemo", str(CHART), "-n", "demo", "--set", "message=bye")
    updates = [protobuf.decode_body(b.raw) for b in capture_server.protobuf_bodies(before) if b.method == "PUT"]
    assert {u["metadata"]["name"]: u["metadata"]["labels"]["status"] for u in updates} == {
        "sh.helm.release.v1.pbdemo.v1": "superseded", "sh.helm.release.v1.pbdemo.v2": "deployed"}
    assert kubectl("get", "configmap", "pbdemo-config", "-n", "demo", "-o", "jsonpath={.data.message}").stdout == "bye"
    assert len(helm("history", "pbdemo", "-n", "demo").stdout.strip().splitlines()) == 3  # header + 2 revisions

    before = len(capture_server.bodies)
    helm("uninstall", "pbdemo", "-n", "demo")
    deletes = [(b.path, protobuf.decode_body(b.raw)) for b in capture_server.protobuf_bodies(before)
               if b.method == "DELETE"]
    assert sorted(deletes, key=lambda d: d[0]) == [
        (f"/api/v1/namespaces/demo/secrets/sh.helm.release.v1.pbdemo.v{n}",
         {"apiVersion": "v1", "kind": "DeleteOptions"}) for n in (1, 2)]
    assert kubectl("get", "secrets", "-n", "demo", "-l", "owner=helm", "-o", "name").stdout == ""


# -- the field tables ----------------------------------------------------------------------


REQUIRED = sorted({rt.definition for rt in BUILTIN_RESOURCES if rt.definition} | {
    "io.k8s.api.policy.v1.Eviction", "io.k8s.api.core.v1.Binding",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions", "io.k8s.api.autoscaling.v1.Scale"})


def _json_names(name: str) -> set[str]:
    names: set[str] = set()
    for row in protobuf.field_table(name).values():
        json_name, go_type = row[0], row[4]
        if json_name == "":
            names |= _json_names(go_type.lstrip("*"))
        elif json_name != "-":
            names.add(json_name)
    return names


@pytest.mark.parametrize("definition", REQUIRED)
def test_served_kinds_have_tables_matching_their_openapi_definition(definition: str) -> None:
    assert definition in protobuf.known_definitions()
    properties = set(_catalog().definitions[definition]["properties"]) - {"apiVersion", "kind"}
    assert _json_names(definition) == properties


@pytest.mark.parametrize("api_version, kind, definition", [
    ("v1", "Namespace", "io.k8s.api.core.v1.Namespace"),
    ("policy/v1", "Eviction", "io.k8s.api.policy.v1.Eviction"),
    ("v1", "DeleteOptions", "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"),
    ("apps/v1", "DeleteOptions", "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition",
     "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"),
    ("example.io/v1", "Widget", None),
], ids=lambda v: str(v))
def test_definition_of(api_version: str, kind: str, definition: str | None) -> None:
    assert protobuf.definition_of(api_version, kind) == definition


# -- hand-built bodies: special types, errors ------------------------------------------------


def _key(number: int, wire: int) -> bytes:
    return _uvarint(number << 3 | wire)


def _uvarint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _uvarint(len(payload)) + payload


def _varint_field(number: int, value: int) -> bytes:
    return _key(number, 0) + _uvarint(value)


def _body(api_version: str, kind: str, raw: bytes, encoding: str = "") -> bytes:
    type_meta = _bytes_field(1, api_version.encode()) + _bytes_field(2, kind.encode())
    envelope = _bytes_field(1, type_meta) + _bytes_field(2, raw)
    if encoding:
        envelope += _bytes_field(3, encoding.encode())
    return protobuf.MAGIC + envelope


def _meta(name: str, *extra: bytes) -> bytes:
    return _bytes_field(1, _bytes_field(1, name.encode()) + b"".join(extra))


def _timestamp(seconds: int, nanos: int = 0) -> bytes:
    return _varint_field(1, seconds) + _varint_field(2, nanos)


def test_times_durations_and_quantities() -> None:
    when = int(datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc).timestamp())
    event = (_meta("ev", _bytes_field(8, _timestamp(when, 999_999_999)))
             + _bytes_field(3, b"Started")
             + _bytes_field(10, _timestamp(when, 123_456_789))  # eventTime: MicroTime
             + _bytes_field(7, _timestamp(when + 60)))  # lastTimestamp
    decoded = protobuf.decode_body(_body("v1", "Event", event))
    assert decoded["metadata"]["creationTimestamp"] == "2026-03-04T05:06:07Z"  # nanoseconds dropped
    assert decoded["eventTime"] == "2026-03-04T05:06:07.123456Z"
    assert decoded["lastTimestamp"] == "2026-03-04T05:07:07Z"
    assert decoded["firstTimestamp"] is None  # a zero Time that is not omitzero: JSON null
    assert decoded["involvedObject"] == {}

    limits = _bytes_field(1, _bytes_field(1, b"cpu") + _bytes_field(2, _bytes_field(1, b"500m")))
    container = _bytes_field(1, b"c") + _bytes_field(8, limits)
    pod = _meta("p") + _bytes_field(2, _bytes_field(2, container))
    decoded = protobuf.decode_body(_body("v1", "Pod", pod))
    assert decoded["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "500m"}}
    assert "creationTimestamp" not in decoded["metadata"]  # omitzero


def test_int_or_string_and_negative_int32() -> None:
    spec = (_bytes_field(1, _varint_field(1, 0) + _varint_field(2, -2 & (1 << 64) - 1))  # minAvailable: -2
            + _bytes_field(3, _varint_field(1, 1) + _bytes_field(3, b"25%")))  # maxUnavailable
    decoded = protobuf.decode_body(_body("policy/v1", "PodDisruptionBudget", _meta("pdb") + _bytes_field(2, spec)))
    assert decoded["spec"] == {"minAvailable": -2, "maxUnavailable": "25%"}


def test_unknown_fields_are_skipped_and_counted() -> None:
    protobuf.reset_dropped_fields()
    body = _body("v1", "Namespace", _meta("ns") + _varint_field(99, 7) + _bytes_field(100, b"later"))
    assert protobuf.decode_body(body) == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"},
                                          "spec": {}, "status": {}}
    assert protobuf.dropped_fields() == {("io.k8s.api.core.v1.Namespace", 99): 1,
                                         ("io.k8s.api.core.v1.Namespace", 100): 1}


@pytest.mark.parametrize("body, code, message", [
    pytest.param(b'{"kind": "Namespace"}', 400, "magic number", id="json-not-protobuf"),
    pytest.param(protobuf.MAGIC + b"\x0a\x80", 400, "truncated varint", id="truncated-varint"),
    pytest.param(protobuf.MAGIC + b"\x0a\x05ab", 400, "runs past the end", id="truncated-bytes"),
    pytest.param(_body("v1", "Namespace", _bytes_field(1, b"\x0b")), 400, "group start", id="group-wire-type"),
    pytest.param(_body("v1", "Namespace", _varint_field(1, 5)), 400, "Namespace.metadata", id="wrong-wire-type"),
    pytest.param(_body("example.io/v1", "Widget", b""), 415, "Widget in example.io/v1", id="custom-kind"),
    pytest.param(_body("v1", "Namespace", b"", encoding="gzip"), 415, "gzip", id="content-encoding"),
    pytest.param(protobuf.MAGIC + _bytes_field(2, b""), 400, "no apiVersion and kind", id="no-type-meta"),
])
def test_bad_bodies_are_rejected(body: bytes, code: int, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        protobuf.decode_body(body)
    assert caught.value.code == code
    assert message in caught.value.message


@pytest.mark.parametrize("nanoseconds, text", [
    (0, "0s"), (1, "1ns"), (1_500, "1.5µs"), (1_000_000, "1ms"), (100_000_000, "100ms"),
    (1_500_000_000, "1.5s"), (90_000_000_000, "1m30s"), (3_600_000_000_000, "1h0m0s"),
    (3_723_004_000_000, "1h2m3.004s"), (-2_000_000_000, "-2s"), (-1_500, "-1.5µs"),
])
def test_go_duration(nanoseconds: int, text: str) -> None:
    assert protobuf.go_duration(nanoseconds) == text


# -- round trip: an encoder built from the same tables --------------------------------------


def _encode_struct(name: str, obj: dict[str, Any]) -> bytes:
    out = b""
    for number, row in protobuf.field_table(name).items():
        json_name, go_type = row[0], row[4].lstrip("*")
        if json_name == "":
            out += _bytes_field(int(number), _encode_struct(go_type, obj))
            continue
        if json_name not in obj or obj[json_name] is None:
            continue
        value = obj[json_name]
        if go_type.startswith("map["):
            value_type = go_type.removeprefix("map[string]")
            for key, item in value.items():
                out += _bytes_field(int(number), _bytes_field(1, key.encode()) + _encode_value(2, value_type, item))
        elif go_type.startswith("[]"):
            out += b"".join(_encode_value(int(number), go_type[2:], item) for item in value)
        else:
            out += _encode_value(int(number), go_type, value)
    return out


def _encode_value(number: int, go_type: str, value: Any) -> bytes:
    if go_type == "string":
        return _bytes_field(number, value.encode())
    if go_type == "bytes":
        return _bytes_field(number, base64.b64decode(value))
    if go_type in ("int", "bool"):
        return _varint_field(number, int(value))
    if go_type == "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
        inner = _varint_field(1, 1) + _bytes_field(3, value.encode()) if isinstance(value, str) \
            else _varint_field(1, 0) + _varint_field(2, value)
        return _bytes_field(number, inner)
    return _bytes_field(number, _encode_struct(go_type, value))


names = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
label_maps = st.dictionaries(names, texts, max_size=4)


def _metadata(namespaced: bool) -> st.SearchStrategy[dict[str, Any]]:
    optional = {"labels": label_maps.filter(bool), "annotations": label_maps.filter(bool),
                "finalizers": st.lists(names, min_size=1, max_size=3), "generateName": names}
    if namespaced:
        optional["namespace"] = names
    return st.fixed_dictionaries({"name": names}, optional=optional)


config_maps = st.fixed_dictionaries({"metadata": _metadata(True)}, optional={
    "data": st.dictionaries(names, texts, max_size=4).filter(bool),
    "binaryData": st.dictionaries(names, st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()),
                                  max_size=3).filter(bool),
    "immutable": st.just(True),
})
priority_classes = st.fixed_dictionaries({
    "metadata": _metadata(False), "value": st.integers(-(2 ** 31), 10 ** 9)},
    optional={"description": texts.filter(bool), "globalDefault": st.just(True),
              "preemptionPolicy": st.sampled_from(["Never", "PreemptLowerPriority"])})
pdbs = st.fixed_dictionaries({"metadata": _metadata(True), "spec": st.fixed_dictionaries({}, optional={
    "minAvailable": st.one_of(st.integers(-(2 ** 31), 2 ** 31 - 1), st.from_regex(r"[0-9]{1,2}%", fullmatch=True)),
    "selector": st.fixed_dictionaries({"matchLabels": label_maps.filter(bool)}),
}), "status": st.fixed_dictionaries({"disruptionsAllowed": st.integers(0, 100),
                                     "currentHealthy": st.integers(0, 100), "desiredHealthy": st.integers(0, 100),
                                     "expectedPods": st.integers(0, 100)})})

ROUND_TRIP_KINDS = [
    ("v1", "ConfigMap", "io.k8s.api.core.v1.ConfigMap", config_maps),
    ("scheduling.k8s.io/v1", "PriorityClass", "io.k8s.api.scheduling.v1.PriorityClass", priority_classes),
    ("policy/v1", "PodDisruptionBudget", "io.k8s.api.policy.v1.PodDisruptionBudget", pdbs),
]


@pytest.mark.parametrize("api_version, kind, definition, objects", ROUND_TRIP_KINDS,
                         ids=[k[1] for k in ROUND_TRIP_KINDS])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_encoded_objects_decode_to_themselves(api_version: str, kind: str, definition: str,
                                              objects: st.SearchStrategy[dict[str, Any]], data: st.DataObject) -> None:
    obj = data.draw(objects)
    decoded = protobuf.decode_body(_body(api_version, kind, _encode_struct(definition, obj)))
    assert decoded == {"apiVersion": api_version, "kind": kind, **obj}


# -- speed ------------------------------------------------------------------------------------


def test_a_deployment_decodes_in_well_under_a_millisecond() -> None:
    container = (_bytes_field(1, b"web") + _bytes_field(2, b"nginx:1.27")
                 + _bytes_field(6, _varint_field(3, 8080) + _bytes_field(4, b"TCP"))
                 + _bytes_field(7, _bytes_field(1, b"MODE") + _bytes_field(2, b"prod")))
    labels = _bytes_field(11, _bytes_field(1, b"app") + _bytes_field(2, b"web"))
    template = _bytes_field(1, labels) + _bytes_field(2, _bytes_field(2, container) * 3)
    spec = _varint_field(1, 3) + _bytes_field(2, _bytes_field(1, _bytes_field(1, b"app") + _bytes_field(2, b"web"))) \
        + _bytes_field(3, template)
    body = _body("apps/v1", "Deployment", _meta("web", labels) + _bytes_field(2, spec))
    protobuf.decode_body(body)
    rounds = 200
    start = time.perf_counter()
    for _ in range(rounds):
        decoded = protobuf.decode_body(body)
    per_body = (time.perf_counter() - start) / rounds
    assert len(decoded["spec"]["template"]["spec"]["containers"]) == 3
    assert per_body < 0.002, f"{per_body * 1e6:.0f} µs per Deployment"
    assert orjson.dumps(decoded)
