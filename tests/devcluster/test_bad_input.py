"""Bad requests get the Status a real kube-apiserver sends, and leave the server serving.

Each row sends one malformed or invalid request over raw HTTP (or through
kubectl) and checks the status code, ``kind: Status``, its ``reason`` and
``code``, and that the ``message`` says what is wrong. Where kube-apiserver
itself answers a client's mistake with 500 (a non-numeric resourceVersion:
kubernetes/kubernetes#101350, #139485), the local server answers 400
BadRequest, as the fix proposed upstream does, so that clients do not retry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from trireme.devcluster.testing import wait_for

Obj = dict[str, Any]
Run = Callable[..., Any]

GROUP = "badinput.example.com"
CRD_NAME = f"gadgets.{GROUP}"
JSON = "application/json"
YAML = "application/yaml"


@dataclass
class Ctx:
    """What the rows' paths and bodies refer to: a namespace with known objects."""

    url: str
    ns: str
    stale_rv: str = ""
    keeper: Obj = field(default_factory=dict)


@pytest.fixture(scope="module")
def ctx(background_cluster: Any) -> Iterator[Ctx]:
    url = background_cluster.cluster.url
    ns = f"bad-{uuid.uuid4().hex[:6]}"
    session = requests.Session()

    def post(path: str, body: Obj) -> Obj:
        response = session.post(url + path, json=body)
        assert response.status_code == 201, response.text
        return response.json()

    post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    keeper = post(f"/api/v1/namespaces/{ns}/configmaps",
                  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keeper"}, "data": {"k": "v"}})
    target = post(f"/api/v1/namespaces/{ns}/configmaps",
                  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "target"}, "data": {"n": "1"}})
    moved = session.patch(f"{url}/api/v1/namespaces/{ns}/configmaps/target", data=json.dumps({"data": {"n": "2"}}),
                          headers={"Content-Type": "application/merge-patch+json"})
    assert moved.status_code == 200, moved.text
    post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", gadget_crd())
    wait_for(lambda: session.get(f"{url}/apis/{GROUP}/v1").status_code == 200, what="the gadget CRD to be served")
    try:
        yield Ctx(url, ns, stale_rv=target["metadata"]["resourceVersion"], keeper=keeper)
    finally:
        session.delete(f"{url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
        session.delete(f"{url}/api/v1/namespaces/{ns}")
        session.close()


def gadget_crd() -> Obj:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "replicas": {"type": "integer", "minimum": 0}, "size": {"type": "string", "enum": ["small", "large"]}}}}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": CRD_NAME},
            "spec": {"group": GROUP, "scope": "Namespaced",
                     "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": schema}}]}}


def configmap(name: str, **extra: Any) -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **extra}).encode()


def namespace(name: str) -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}).encode()


def update_target(rv: Callable[[Ctx], str]) -> Callable[[Ctx], bytes]:
    return lambda c: json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "target", "resourceVersion": rv(c)},
                                 "data": {"n": "3"}}).encode()


def oversized(ctx: Ctx) -> bytes:
    return configmap("huge", data={"blob": "x" * (3 * 1024 * 1024 + 10)})


def oversized_chunks(ctx: Ctx) -> Iterator[bytes]:
    """The same body without a Content-Length: sent in chunks."""
    body = oversized(ctx)
    for start in range(0, len(body), 256 * 1024):
        yield body[start:start + 256 * 1024]


NS = "/api/v1/namespaces/{ns}"
CMS = NS + "/configmaps"
GADGETS = "/apis/" + GROUP + "/v1/namespaces/{ns}/gadgets"
NOT_FOUND = "the server could not find the requested resource"


@dataclass
class Case:
    method: str
    path: str
    code: int
    reason: str
    says: tuple[str, ...]
    """Fragments the Status message contains (each matched case-insensitively)."""
    body: bytes | Callable[[Ctx], Any] | None = None
    content_type: str = JSON
    field: str | None = None
    """For 422 Invalid: the field ``details.causes[]`` names."""


CASES = [
    pytest.param(Case("POST", CMS, 400, "BadRequest", ("json",), b'{"apiVersion": "v1", "kind": '),
                 id="malformed-json"),
    pytest.param(Case("POST", CMS, 400, "BadRequest", ("yaml",),
                      b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [unclosed\n", YAML), id="malformed-yaml"),
    pytest.param(Case("POST", CMS, 400, "BadRequest", ("ConfigMap", "list"), b"[1, 2]"), id="body-is-a-list"),
    pytest.param(Case("POST", CMS, 400, "BadRequest", ("ConfigMap", "str"), b'"a configmap"'),
                 id="body-is-a-string"),
    pytest.param(Case("POST", CMS, 400, "BadRequest", ("ConfigMap", "str"), b"just words\n", YAML),
                 id="yaml-body-is-a-string"),
    pytest.param(Case("POST", CMS, 400, "BadRequest", ("empty",), b""), id="empty-body"),
    pytest.param(Case("GET", "/api/v1/gizmos", 404, "NotFound", (NOT_FOUND,)), id="unknown-resource"),
    pytest.param(Case("GET", NS + "/gizmos", 404, "NotFound", (NOT_FOUND,)), id="unknown-namespaced-resource"),
    pytest.param(Case("GET", "/apis/nope.example.com/v1/things", 404, "NotFound", (NOT_FOUND,)),
                 id="unknown-group"),
    pytest.param(Case("GET", "/apis/nope.example.com", 404, "NotFound", (NOT_FOUND,)), id="unknown-group-root"),
    pytest.param(Case("GET", "/apis/apps/v9/deployments", 404, "NotFound", (NOT_FOUND,)), id="unknown-version"),
    pytest.param(Case("GET", CMS + "/keeper/gizmo", 404, "NotFound", (NOT_FOUND,)), id="unknown-subresource"),
    pytest.param(Case("GET", CMS + "/missing", 404, "NotFound", ('configmaps "missing" not found',)),
                 id="missing-object"),
    pytest.param(Case("POST", "/api/v1/namespaces/no-such-ns/configmaps", 404, "NotFound",
                      ('namespaces "no-such-ns" not found',), configmap("c")), id="missing-namespace"),
    pytest.param(Case("POST", CMS, 422, "Invalid", ('ConfigMap "Upper" is invalid', "metadata.name",
                                                    "RFC 1123 subdomain"), configmap("Upper"), field="metadata.name"),
                 id="namespaced-name-uppercase"),
    pytest.param(Case("POST", CMS, 422, "Invalid", ('ConfigMap "under_score" is invalid', "RFC 1123 subdomain"),
                      configmap("under_score"), field="metadata.name"), id="namespaced-name-underscore"),
    pytest.param(Case("POST", CMS, 422, "Invalid", ("is invalid", "must be no more than 253 characters"),
                      configmap("a" * 254), field="metadata.name"), id="namespaced-name-too-long"),
    pytest.param(Case("POST", CMS, 422, "Invalid", ("metadata.name", "Required value"),
                      json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}).encode(),
                      field="metadata.name"), id="namespaced-name-missing"),
    pytest.param(Case("POST", "/api/v1/namespaces", 422, "Invalid", ('Namespace "Upper" is invalid',
                                                                    "RFC 1123 label"),
                      namespace("Upper"), field="metadata.name"), id="cluster-scoped-name-uppercase"),
    pytest.param(Case("POST", "/api/v1/namespaces", 422, "Invalid", ('Namespace "under_score" is invalid',
                                                                    "RFC 1123 label"),
                      namespace("under_score"), field="metadata.name"), id="cluster-scoped-name-underscore"),
    pytest.param(Case("POST", "/api/v1/namespaces", 422, "Invalid", ("is invalid",
                                                                    "must be no more than 63 characters"),
                      namespace("a" * 64), field="metadata.name"), id="cluster-scoped-name-too-long"),
    pytest.param(Case("POST", CMS, 400, "BadRequest", ("Secret", "ConfigMap"),
                      json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}).encode()),
                 id="wrong-kind"),
    pytest.param(Case("POST", CMS, 400, "BadRequest",
                      ("the API version in the data (apps/v1) does not match the expected API version (v1)",),
                      json.dumps({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "a"}}).encode()),
                 id="wrong-api-version"),
    pytest.param(Case("PUT", CMS + "/target", 400, "BadRequest", ("does not match the name on the URL",),
                      configmap("other")), id="name-differs-from-url"),
    pytest.param(Case("POST", CMS, 400, "BadRequest", ("namespace of the provided object does not match",),
                      json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": "x", "namespace": "elsewhere"}}).encode()),
                 id="namespace-differs-from-url"),
    pytest.param(Case("PUT", CMS + "/target", 409, "Conflict", ('Operation cannot be fulfilled on configmaps "target"',
                                                                "the object has been modified"),
                      update_target(lambda c: c.stale_rv)), id="stale-resource-version"),
    pytest.param(Case("PUT", CMS + "/target", 400, "BadRequest", ("resourceVersion", '"abc"'),
                      update_target(lambda c: "abc")), id="put-non-numeric-resource-version"),
    pytest.param(Case("GET", CMS + "?watch=1&resourceVersion=abc", 400, "BadRequest", ("resourceVersion", "abc")),
                 id="watch-non-numeric-resource-version"),
    pytest.param(Case("GET", CMS + "?resourceVersion=abc", 400, "BadRequest", ("resourceVersion", "abc")),
                 id="list-non-numeric-resource-version"),
    pytest.param(Case("GET", CMS + "?watch=1&timeoutSeconds=soon", 400, "BadRequest", ("timeoutSeconds", "soon")),
                 id="watch-non-numeric-timeout"),
    pytest.param(Case("POST", CMS, 413, "RequestEntityTooLarge", ("too large", "limit is 3145728"), oversized),
                 id="oversized-body"),
    pytest.param(Case("POST", CMS, 413, "RequestEntityTooLarge", ("too large", "limit is 3145728"),
                      oversized_chunks), id="oversized-chunked-body"),
    pytest.param(Case("PATCH", CMS + "/target", 415, "UnsupportedMediaType",
                      ("unknown format", "application/merge-patch+json"), b'{"data": {}}', "text/plain"),
                 id="unsupported-patch-type"),
    pytest.param(Case("PATCH", GADGETS + "/any", 415, "UnsupportedMediaType",
                      ("unknown format", "application/merge-patch+json"), b'{"spec": {}}',
                      "application/strategic-merge-patch+json"), id="strategic-merge-on-custom-resource"),
    pytest.param(Case("PATCH", CMS + "/target", 400, "BadRequest", ("fieldManager is required",),
                      configmap("target"), "application/apply-patch+yaml"), id="apply-without-field-manager"),
    pytest.param(Case("GET", CMS + "?labelSelector=app%20in%20web", 400, "BadRequest",
                      ("unable to parse requirement",)), id="label-selector-set-without-parentheses"),
    pytest.param(Case("GET", CMS + "?labelSelector=-app%3Dweb", 400, "BadRequest", ("-app", "name part")),
                 id="label-selector-bad-key"),
    pytest.param(Case("GET", CMS + "?labelSelector=app%3Dweb,", 400, "BadRequest", ("identifier",)),
                 id="label-selector-trailing-comma"),
    pytest.param(Case("GET", CMS + "?fieldSelector=spec.color%3Dred", 400, "BadRequest",
                      ("field label not supported: spec.color",)), id="field-selector-unknown-field"),
    pytest.param(Case("POST", GADGETS, 422, "Invalid", ('Gadget.badinput.example.com "g1" is invalid',
                                                        "spec.replicas"),
                      json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "Gadget", "metadata": {"name": "g1"},
                                  "spec": {"replicas": "three"}}).encode(), field="spec.replicas"),
                 id="custom-resource-wrong-type"),
    pytest.param(Case("POST", GADGETS, 422, "Invalid", ("spec.size", "Unsupported value", '"medium"'),
                      json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "Gadget", "metadata": {"name": "g2"},
                                  "spec": {"size": "medium"}}).encode(), field="spec.size"),
                 id="custom-resource-not-in-enum"),
    pytest.param(Case("GET", CMS + "?limit=abc", 400, "BadRequest", ("limit", "abc")), id="limit-not-a-number"),
    pytest.param(Case("GET", CMS + "?continue=not-a-token", 400, "BadRequest", ("continue",)),
                 id="garbled-continue-token"),
    pytest.param(Case("POST", CMS + "/keeper", 405, "MethodNotAllowed", ("POST",), configmap("keeper")),
                 id="post-to-a-named-object"),
    pytest.param(Case("POST", CMS + "?dryRun=Some", 400, "BadRequest", ("dryRun",), configmap("dry")),
                 id="bad-dry-run"),
    pytest.param(Case("POST", CMS + "?fieldValidation=Loose", 400, "BadRequest", ("fieldValidation",),
                      configmap("fv")), id="bad-field-validation"),
]


def send(ctx: Ctx, case: Case) -> requests.Response:
    body = case.body(ctx) if callable(case.body) else case.body
    return requests.request(case.method, ctx.url + case.path.format(ns=ctx.ns), data=body,
                            headers={"Content-Type": case.content_type, "Accept": JSON}, timeout=30)


@pytest.mark.parametrize("case", CASES)
def test_bad_request_gets_a_status(ctx: Ctx, case: Case) -> None:
    response = send(ctx, case)
    assert response.status_code == case.code, response.text
    assert response.headers["Content-Type"].startswith(JSON)
    status = response.json()
    assert (status["kind"], status["apiVersion"], status["status"]) == ("Status", "v1", "Failure"), status
    assert (status["code"], status["reason"]) == (case.code, case.reason), status
    message = status["message"].lower()
    for fragment in case.says:
        assert fragment.lower() in message, status["message"]
    if case.field is not None:
        assert case.field in [c["field"] for c in status["details"]["causes"]], status


@pytest.mark.parametrize("chunked", [pytest.param(False, id="content-length"),
                                     pytest.param(True, id="chunked")])
def test_large_valid_body_is_accepted(ctx: Ctx, chunked: bool) -> None:
    """A body below the limit but larger than what one read of the socket returns."""
    name = f"large-{'chunked' if chunked else 'sized'}"
    body = configmap(name, data={"blob": "x" * (2 * 1024 * 1024)})
    data: Any = iter([body[i:i + 64 * 1024] for i in range(0, len(body), 64 * 1024)]) if chunked else body
    response = requests.post(ctx.url + CMS.format(ns=ctx.ns), data=data, headers={"Content-Type": JSON}, timeout=30)
    try:
        assert response.status_code == 201, response.text[:300]
    finally:
        requests.delete(ctx.url + CMS.format(ns=ctx.ns) + "/" + name, timeout=10)


def test_rejected_writes_change_nothing(ctx: Ctx) -> None:
    for case in [p.values[0] for p in CASES if p.values[0].method != "GET"]:
        send(ctx, case)
    names = [c["metadata"]["name"] for c in requests.get(ctx.url + CMS.format(ns=ctx.ns)).json()["items"]]
    assert sorted(names) == ["keeper", "target"]
    assert requests.get(ctx.url + GADGETS.format(ns=ctx.ns)).json()["items"] == []
    target = requests.get(ctx.url + CMS.format(ns=ctx.ns) + "/target").json()
    assert target["data"] == {"n": "2"}


KUBECTL_CASES = [
    pytest.param(["get", "gizmos"], ('the server doesn\'t have a resource type "gizmos"',), id="unknown-resource"),
    pytest.param(["create", "configmap", "Bad_Name"], ('"Bad_Name" is invalid', "metadata.name", "RFC 1123"),
                 id="invalid-name"),
    pytest.param(["create", "namespace", "a" * 64], ("is invalid", "must be no more than 63 characters"),
                 id="cluster-scoped-name-too-long"),
    pytest.param(["get", "configmaps", "-l", "app in web"], ("unable to parse requirement",),
                 id="invalid-label-selector"),
    pytest.param(["get", "configmaps", "--field-selector", "spec.color=red"],
                 ("field label not supported: spec.color",), id="unsupported-field-selector"),
    pytest.param(["get", "configmaps", "missing"], ('configmaps "missing" not found',), id="missing-object"),
    pytest.param(["get", "--raw", "/api/v1/gizmos"], ("NotFound",), id="raw-unknown-resource"),
]


@pytest.mark.parametrize("args, says", KUBECTL_CASES)
def test_kubectl_reports_the_server_error(kubectl: Run, ctx: Ctx, args: list[str], says: tuple[str, ...]) -> None:
    result = kubectl(*args, "-n", ctx.ns, check=False)
    assert result.returncode != 0
    for fragment in says:
        assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("gadget, says", [
    pytest.param({"replicas": "three"}, "spec.replicas: Invalid value", id="wrong-type"),
    pytest.param({"replicas": -1}, "spec.replicas: Invalid value: -1", id="below-minimum"),
    pytest.param({"size": "medium"}, 'spec.size: Unsupported value: "medium"', id="not-in-enum"),
])
def test_kubectl_apply_of_an_invalid_custom_resource(kubectl: Run, ctx: Ctx, gadget: Obj, says: str) -> None:
    manifest = {"apiVersion": f"{GROUP}/v1", "kind": "Gadget", "metadata": {"name": "bad"}, "spec": gadget}
    result = kubectl("apply", "-n", ctx.ns, "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0
    assert says in result.stderr and 'The Gadget "bad" is invalid' in result.stderr, result.stderr


def test_kubectl_replace_with_a_stale_resource_version(kubectl: Run, ctx: Ctx) -> None:
    stale = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "target", "namespace": ctx.ns, "resourceVersion": ctx.stale_rv},
             "data": {"n": "4"}}
    result = kubectl("replace", "-f", "-", input=json.dumps(stale), check=False)
    assert result.returncode != 0
    assert 'Operation cannot be fulfilled on configmaps "target"' in result.stderr, result.stderr


def test_server_still_serves_after_bad_input(ctx: Ctx) -> None:
    for case in [p.values[0] for p in CASES]:
        send(ctx, case)
    version = requests.get(ctx.url + "/version", timeout=10)
    assert version.status_code == 200 and version.json()["major"] == "1"
    keeper = requests.get(ctx.url + CMS.format(ns=ctx.ns) + "/keeper", timeout=10).json()
    assert keeper == ctx.keeper
