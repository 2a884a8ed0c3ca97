"""``kubectl get`` tables: column sets, cells and ages as kube-apiserver's printers produce them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trireme.devcluster.crd import CustomResourceVersion
from trireme.devcluster.errors import ApiError
from trireme.devcluster.tables import (
    PRINTERS,
    human_duration,
    jsonpath_values,
    printer_for,
    selector_string,
    to_table,
)

Obj = dict[str, Any]
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cells(kind: str, obj: Obj, columns: list[Obj] | None = None) -> list[Any]:
    (row,) = to_table([obj], kind, columns, now=NOW)["rows"]
    return row["cells"]


def header(kind: str, columns: list[Obj] | None = None) -> list[str]:
    return [c["name"] for c in to_table([], kind, columns, now=NOW)["columnDefinitions"]]


# -- ages ---------------------------------------------------------------------------------------------------

DURATIONS = [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (5, "5s"), (119, "119s"), (120, "2m"), (182, "3m2s"),
    (599, "9m59s"), (600, "10m"), (3 * 3600 - 1, "179m"), (3 * 3600, "3h"), (3 * 3600 + 300, "3h5m"),
    (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"), (51 * 3600, "2d3h"), (8 * 86400, "8d"),
    (400 * 86400, "400d"), (730 * 86400, "2y"), (740 * 86400, "2y10d"), (9 * 365 * 86400, "9y"),
]


@pytest.mark.parametrize(("seconds", "text"), DURATIONS, ids=[t for _, t in DURATIONS])
def test_human_duration_reads_like_kubectl(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@given(st.floats(min_value=0, max_value=20 * 365 * 86400))
def test_human_duration_has_at_most_two_units(seconds: float) -> None:
    assert re.fullmatch(r"\d+[smhdy](\d+[smhd])?", human_duration(seconds))


# -- pods ---------------------------------------------------------------------------------------------------


def pod(phase: str = "Running", statuses: list[Obj] | None = None, **extra: Any) -> Obj:
    obj: Obj = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "triton-0", "namespace": "default", "creationTimestamp": ago(182)},
        "spec": {"containers": [{"name": "triton", "image": "triton:24.01"}], "nodeName": "gpu-1"},
        "status": {"phase": phase, "podIP": "10.0.0.7",
                   "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}],
                   "containerStatuses": statuses if statuses is not None else [
                       {"name": "triton", "ready": True, "restartCount": 0, "state": {"running": {}}}]},
    }
    for key, value in extra.items():
        section, _, name = key.partition("__")
        obj[section][name] = value
    return obj


def waiting(reason: str, restarts: int = 0) -> Obj:
    return {"name": "triton", "ready": False, "restartCount": restarts, "state": {"waiting": {"reason": reason}}}


POD_STATUS_CASES: list[tuple[str, Obj, str, str]] = [
    ("running", pod(), "1/1", "Running"),
    ("pending without statuses", pod("Pending", []), "0/1", "Pending"),
    ("container creating", pod("Pending", [waiting("ContainerCreating")]), "0/1", "ContainerCreating"),
    ("crash loop", pod("Running", [waiting("CrashLoopBackOff", 4)]), "0/1", "CrashLoopBackOff"),
    ("completed", pod("Succeeded", [{"name": "triton", "restartCount": 0,
                                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]),
     "0/1", "Completed"),
    ("exit code without reason", pod("Failed", [{"name": "triton", "state": {"terminated": {"exitCode": 3}}}]),
     "0/1", "ExitCode:3"),
    ("signal", pod("Failed", [{"name": "triton", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]),
     "0/1", "Signal:9"),
    ("terminating", pod(metadata__deletionTimestamp=ago(1)), "1/1", "Terminating"),
    ("node lost", pod(metadata__deletionTimestamp=ago(1), status__reason="NodeLost"), "1/1", "Unknown"),
    ("evicted", pod("Failed", [], status__reason="Evicted"), "0/1", "Evicted"),
    ("scheduling gated", pod("Pending", [], status__conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]), "0/1", "SchedulingGated"),
    ("init container waiting", pod("Pending", [waiting("PodInitializing")],
                                   spec__initContainers=[{"name": "fetch", "image": "x"}],
                                   status__conditions=[],
                                   status__initContainerStatuses=[{"name": "fetch", "state": {"running": {}}}]),
     "0/1", "Init:0/1"),
    ("init container crashing", pod("Pending", [], spec__initContainers=[{"name": "fetch", "image": "x"}],
                                    status__conditions=[],
                                    status__initContainerStatuses=[
                                        {"name": "fetch", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]),
     "0/1", "Init:CrashLoopBackOff"),
    ("sidecars count as containers", pod(spec__initContainers=[{"name": "proxy", "restartPolicy": "Always"}],
                                         status__initContainerStatuses=[{"name": "proxy", "started": True,
                                                                         "ready": True, "state": {"running": {}}}]),
     "2/2", "Running"),
    ("completed but still running", pod("Running", [
        {"name": "a", "ready": True, "state": {"running": {}}},
        {"name": "b", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
        status__conditions=[{"type": "Ready", "status": "False"}]), "1/1", "NotReady"),
]


@pytest.mark.parametrize(("obj", "ready", "status"), [c[1:] for c in POD_STATUS_CASES],
                         ids=[c[0] for c in POD_STATUS_CASES])
def test_pod_ready_and_status(obj: Obj, ready: str, status: str) -> None:
    row = cells("Pod", obj)
    assert (row[1].split("/")[0], row[2]) == (ready.split("/")[0], status)


def test_pod_columns_and_wide_cells() -> None:
    table = to_table([pod()], "Pod", None, {"resourceVersion": "41"}, now=NOW)
    assert [(c["name"], c["priority"]) for c in table["columnDefinitions"]] == [
        ("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0),
        ("IP", 1), ("Node", 1), ("Nominated Node", 1), ("Readiness Gates", 1)]
    assert table["rows"][0]["cells"] == ["triton-0", "1/1", "Running", "0", "3m2s", "10.0.0.7", "gpu-1", "<none>",
                                         "<none>"]
    assert table["metadata"] == {"resourceVersion": "41"}
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"


def test_pod_restarts_say_when_the_last_one_was() -> None:
    status = {"name": "triton", "ready": True, "restartCount": 2, "state": {"running": {}},
              "lastState": {"terminated": {"finishedAt": ago(65)}}}
    assert cells("Pod", pod(statuses=[status]))[3] == "2 (65s ago)"


def test_pod_readiness_gates_and_unscheduled() -> None:
    obj = pod(spec__readinessGates=[{"conditionType": "trireme.io/model-ready"}])
    obj["spec"].pop("nodeName")
    obj["status"].pop("podIP")
    obj["status"]["conditions"].append({"type": "trireme.io/model-ready", "status": "True"})
    assert cells("Pod", obj)[5:] == ["<none>", "<none>", "<none>", "1/1"]


def test_finished_pods_carry_a_completed_row_condition() -> None:
    (row,) = to_table([pod("Succeeded", [])], "Pod", now=NOW)["rows"]
    assert row["conditions"] == [{"type": "Completed", "status": "True", "reason": "Succeeded",
                                  "message": "The pod has completed successfully."}]
    assert "conditions" not in to_table([pod()], "Pod", now=NOW)["rows"][0]


# -- nodes --------------------------------------------------------------------------------------------------


def node(ready: str | None = "True", unschedulable: bool = False, labels: Obj | None = None) -> Obj:
    conditions = [{"type": "Ready", "status": ready}] if ready is not None else []
    return {"metadata": {"name": "gpu-1", "creationTimestamp": ago(3 * 86400 + 3 * 3600), "labels": labels or {}},
            "spec": {"unschedulable": unschedulable},
            "status": {"conditions": conditions,
                       "nodeInfo": {"kubeletVersion": "v1.37.0", "osImage": "Ubuntu 24.04",
                                    "kernelVersion": "6.8.0", "containerRuntimeVersion": "containerd://2.0"},
                       "addresses": [{"type": "InternalIP", "address": "127.0.1.1"}]}}


NODE_CASES: list[tuple[str, Obj, str, str]] = [
    ("ready", node(), "Ready", "<none>"),
    ("not ready", node("False"), "NotReady", "<none>"),
    ("unknown", node(None), "Unknown", "<none>"),
    ("cordoned", node(unschedulable=True), "Ready,SchedulingDisabled", "<none>"),
    ("roles", node(labels={"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/gpu": "",
                           "kubernetes.io/role": "inference"}), "Ready", "gpu,inference,worker"),
]


@pytest.mark.parametrize(("obj", "status", "roles"), [c[1:] for c in NODE_CASES], ids=[c[0] for c in NODE_CASES])
def test_node_status_and_roles(obj: Obj, status: str, roles: str) -> None:
    row = cells("Node", obj)
    assert row[:5] == ["gpu-1", status, roles, "3d3h", "v1.37.0"]
    assert row[5:] == ["127.0.1.1", "<none>", "Ubuntu 24.04", "6.8.0", "containerd://2.0"]


def test_node_columns() -> None:
    assert header("Node") == ["Name", "Status", "Roles", "Age", "Version", "Internal-IP", "External-IP", "OS-Image",
                              "Kernel-Version", "Container-Runtime"]


# -- other built-in kinds -----------------------------------------------------------------------------------

META = {"name": "x", "namespace": "default", "creationTimestamp": ago(30)}
BUILTIN_CASES: list[tuple[str, str, Obj, list[str], list[Any]]] = [
    ("namespace", "Namespace", {"metadata": META, "status": {"phase": "Active"}},
     ["Name", "Status", "Age"], ["x", "Active", "30s"]),
    ("cluster ip service", "Service", {"metadata": META, "spec": {
        "type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": {"b": "2", "a": "1"},
        "ports": [{"port": 8000, "protocol": "TCP"}, {"port": 8001, "protocol": "TCP"}]}},
     ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"],
     ["x", "ClusterIP", "10.96.0.10", "<none>", "8000/TCP,8001/TCP", "30s", "a=1,b=2"]),
    ("node port service", "Service", {"metadata": META, "spec": {
        "type": "NodePort", "clusterIP": "10.96.0.11", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}},
     None, ["x", "NodePort", "10.96.0.11", "<none>", "80:30080/TCP", "30s", "<none>"]),
    ("pending load balancer", "Service", {"metadata": META, "spec": {"type": "LoadBalancer", "clusterIP": "None"}},
     None, ["x", "LoadBalancer", "None", "<pending>", "<none>", "30s", "<none>"]),
    ("external name", "Service", {"metadata": META, "spec": {"type": "ExternalName", "externalName": "a.example"}},
     None, ["x", "ExternalName", "<none>", "a.example", "<none>", "30s", "<none>"]),
    ("deployment", "Deployment", {"metadata": META, "spec": {
        "replicas": 3, "selector": {"matchLabels": {"app": "t"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["b", "a"]}]},
        "template": {"spec": {"containers": [{"name": "a", "image": "ia"}, {"name": "b", "image": "ib"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}},
     ["Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"],
     ["x", "2/3", 3, 2, "30s", "a,b", "ia,ib", "app=t,tier in (a,b)"]),
    ("configmap", "ConfigMap", {"metadata": META, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}},
     ["Name", "Data", "Age"], ["x", 3, "30s"]),
    ("secret", "Secret", {"metadata": META, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}},
     ["Name", "Type", "Data", "Age"], ["x", "kubernetes.io/tls", 2, "30s"]),
    ("lease", "Lease", {"metadata": META, "spec": {"holderIdentity": "trireme-7f"}},
     ["Name", "Holder", "Age"], ["x", "trireme-7f", "30s"]),
    ("pdb", "PodDisruptionBudget", {"metadata": META, "spec": {"minAvailable": "50%"},
                                    "status": {"disruptionsAllowed": 1}},
     ["Name", "Min Available", "Max Unavailable", "Allowed Disruptions", "Age"], ["x", "50%", "N/A", 1, "30s"]),
    ("endpoints", "Endpoints", {"metadata": META, "subsets": [{
        "addresses": [{"ip": f"10.0.0.{i}"} for i in range(1, 6)], "ports": [{"port": 8000}]}]},
     ["Name", "Endpoints", "Age"], ["x", "10.0.0.1:8000,10.0.0.2:8000,10.0.0.3:8000 + 2 more...", "30s"]),
    ("endpoints none", "Endpoints", {"metadata": META}, None, ["x", "<none>", "30s"]),
    ("event", "Event", {"metadata": META, "type": "Warning", "reason": "FailedScheduling",
                        "message": " no GPU fits \n", "involvedObject": {"kind": "Pod", "name": "triton-0"},
                        "source": {"component": "trireme"}, "firstTimestamp": ago(600), "lastTimestamp": ago(90),
                        "count": 4},
     ["Last Seen", "Type", "Reason", "Object", "Subobject", "Source", "Message", "First Seen", "Count", "Name"],
     ["90s", "Warning", "FailedScheduling", "pod/triton-0", "", "trireme", "no GPU fits", "10m", 4, "x"]),
    ("events.k8s.io event", "Event", {"metadata": META, "type": "Normal", "reason": "Placed", "note": "on gpu-1",
                                      "regarding": {"kind": "InferenceService", "name": "llm"},
                                      "reportingController": "trireme", "reportingInstance": "trireme-0",
                                      "eventTime": "2030-01-02T03:03:05.000000Z"},
     None, ["60s", "Normal", "Placed", "inferenceservice/llm", "", "trireme, trireme-0", "on gpu-1", "60s", 1, "x"]),
    ("crd", "CustomResourceDefinition", {"metadata": {"name": "widgets.example.com",
                                                       "creationTimestamp": "2024-05-06T07:08:09Z"}},
     ["Name", "Created At"], ["widgets.example.com", "2024-05-06T07:08:09Z"]),
    ("priority class", "PriorityClass", {"metadata": META, "value": 1000, "globalDefault": False},
     ["Name", "Value", "Global-Default", "Age"], ["x", 1000, False, "30s"]),
    ("role binding", "RoleBinding", {"metadata": META, "roleRef": {"kind": "Role", "name": "trireme"},
                                     "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "sys"}]},
     ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"], ["x", "Role/trireme", "30s", "", "", "sys/op"]),
    ("anything else", "ControllerRevision", {"metadata": META}, ["Name", "Age"], ["x", "30s"]),
    ("no timestamp", "ControllerRevision", {"metadata": {"name": "x"}}, None, ["x", "<unknown>"]),
]


@pytest.mark.parametrize(("kind", "obj", "columns", "row"), [c[1:] for c in BUILTIN_CASES],
                         ids=[c[0] for c in BUILTIN_CASES])
def test_builtin_printers(kind: str, obj: Obj, columns: list[str] | None, row: list[Any]) -> None:
    if columns is not None:
        assert header(kind) == columns
    assert cells(kind, obj) == row


def test_plural_resource_names_find_the_same_printer() -> None:
    assert printer_for("pods") is PRINTERS["Pod"] and printer_for("poddisruptionbudgets") is \
        PRINTERS["PodDisruptionBudget"] and printer_for("endpoints") is PRINTERS["Endpoints"]


SELECTORS = [
    ({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2"),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}, {"key": "cpu", "operator": "DoesNotExist"},
                           {"key": "zone", "operator": "NotIn", "values": ["b", "a"]}]},
     "!cpu,gpu,zone notin (a,b)"),
    ({}, ""),
]


@pytest.mark.parametrize(("selector", "text"), SELECTORS, ids=["labels", "expressions", "empty"])
def test_selector_strings(selector: Obj, text: str) -> None:
    assert selector_string(selector) == text


# -- custom resources ----------------------------------------------------------------------------------------

COLUMNS = [
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Share", "type": "number", "jsonPath": ".spec.share", "priority": 1},
    {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.models[0].name", "description": "The first model."},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
    {"name": "Started", "type": "date", "jsonPath": ".status.startedAt"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

SERVICE: Obj = {
    "apiVersion": "serving.trireme.io/v1alpha1", "kind": "InferenceService",
    "metadata": {"name": "llm", "namespace": "default", "creationTimestamp": ago(7200), "uid": "u1"},
    "spec": {"replicas": 3, "share": 1, "paused": False, "models": [{"name": "llama"}]},
    "status": {"conditions": [{"type": "Progressing", "status": "False"}, {"type": "Ready", "status": "True"}],
               "startedAt": "not a time"},
}


def test_custom_resource_columns_follow_the_crd() -> None:
    table = to_table([SERVICE], "InferenceService", COLUMNS, {"resourceVersion": "9"}, now=NOW)
    assert [(c["name"], c["type"], c["priority"]) for c in table["columnDefinitions"]] == [
        ("Name", "string", 0), ("Replicas", "integer", 0), ("Ready", "string", 0), ("Share", "number", 1),
        ("Paused", "boolean", 0), ("Model", "string", 0), ("Endpoint", "string", 0), ("Started", "date", 0),
        ("Age", "date", 0)]
    assert table["columnDefinitions"][1]["description"] == \
        "Custom resource definition column (in JSONPath format): .spec.replicas"
    assert table["columnDefinitions"][5]["description"] == "The first model."
    assert table["rows"][0]["cells"] == ["llm", 3, "True", 1.0, False, "llama", None, "<invalid>", "120m"]


def test_a_crd_without_columns_gets_name_and_age() -> None:
    crd = {"metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "widgets", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    columns = CustomResourceVersion(crd, "v1").additional_printer_columns()
    assert header("Widget", columns) == ["Name", "Age"]
    assert cells("Widget", SERVICE, columns) == ["llm", "120m"]


JSONPATHS = [
    (".spec.replicas", [3]),
    ("{.spec.models[*].name}", ["llama"]),
    (".status.conditions[?(@.status=='False')].type", ["Progressing"]),
    (".status.conditions[-1].type", ["Ready"]),
    (".metadata['name']", ["llm"]),
    (".spec.missing.deeper", []),
    (".status.conditions[5]", []),
]


@pytest.mark.parametrize(("path", "values"), JSONPATHS, ids=[p for p, _ in JSONPATHS])
def test_jsonpath_subset(path: str, values: list[Any]) -> None:
    assert jsonpath_values(SERVICE, path) == values


def test_jsonpath_escaped_dots_in_keys() -> None:
    obj = {"metadata": {"labels": {"app.kubernetes.io/name": "triton"}}}
    assert jsonpath_values(obj, r".metadata.labels.app\.kubernetes\.io/name") == ["triton"]


# -- what each row carries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("include", "expected"), [
    ("Metadata", {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": SERVICE["metadata"]}),
    ("", {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": SERVICE["metadata"]}),
    ("Object", SERVICE),
    ("None", None),
], ids=["metadata", "default", "object", "none"])
def test_include_object(include: str, expected: Obj | None) -> None:
    (row,) = to_table([SERVICE], "InferenceService", COLUMNS, {}, include, now=NOW)["rows"]
    assert row.get("object") == expected


def test_an_unknown_include_object_is_a_bad_request() -> None:
    with pytest.raises(ApiError) as exc:
        to_table([SERVICE], "InferenceService", COLUMNS, {}, "Everything", now=NOW)
    assert exc.value.code == 400 and exc.value.message == 'unrecognized includeObject value: "Everything"'


def test_list_metadata_is_copied_and_nothing_else() -> None:
    table = to_table([], "Pod", None, {"resourceVersion": "12", "continue": "abc", "remainingItemCount": 3,
                                      "selfLink": "/x"}, now=NOW)
    assert table["metadata"] == {"resourceVersion": "12", "continue": "abc", "remainingItemCount": 3}
    assert table["rows"] == []


# -- robustness ---------------------------------------------------------------------------------------------

_KEYS = st.sampled_from([
    "metadata", "spec", "status", "name", "containers", "containerStatuses", "state", "waiting", "terminated",
    "running", "reason", "restartCount", "conditions", "type", "ports", "port", "subsets", "addresses", "ip",
    "labels", "selector", "matchLabels", "data", "creationTimestamp", "replicas", "initContainers",
    "initContainerStatuses", "lastState", "finishedAt", "phase", "nodeInfo", "involvedObject", "roleRef"])
_SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4) | st.just("2024-01-01T00:00:00Z")
_VALUES = st.recursive(_SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(_KEYS, c, max_size=4),
                       max_leaves=16)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(PRINTERS)), st.dictionaries(_KEYS, _VALUES, max_size=5))
def test_printers_never_fail_on_odd_objects(kind: str, obj: Obj) -> None:
    (row,) = to_table([obj], kind, now=NOW)["rows"]
    assert len(row["cells"]) == len(PRINTERS[kind].columns)
