"""The operator's reconcile and resync against kmock, a Kubernetes API mock by kopf's author.

Each table row seeds the mock with an InferenceService, its pods and nodes, runs one
``reconcile`` (what the kopf handlers and the periodic resync both call) and checks the
requests it made: server-side apply of the Service and PodDisruptionBudget with the
``trireme`` field manager, pods created with stable names and never twice, surplus pods
deleted highest replica first, no write to an InferenceService's spec, the status patch,
and the Events. API errors are injected as kmock reactions; the resync loop runs on
looptime's fake clock, so its intervals cost no real time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp.test_utils
import aiohttp.web
import attrs
import kmock
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from trireme.operator.api import InferenceService
from trireme.operator.handlers import Context, reconcile, record_event, resync, resync_pass
from trireme.operator.leadership import Leadership
from trireme.operator.metrics import Health, OperatorMetrics
from trireme.operator.reconcile import desired_pdb, desired_service
from trireme.operator.settings import OperatorSettings

TIS = kmock.resource("serving.trireme.io/v1alpha1/inferenceservices")
PODS = kmock.resource("v1/pods")
SERVICES = kmock.resource("v1/services")
PDBS = kmock.resource("policy/v1/poddisruptionbudgets")
NODES = kmock.resource("v1/nodes")
EVENTS = kmock.resource("v1/events")
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the two API behaviours the operator relies on: a server-side apply
    creates a missing object, and a Binding sets the pod's node and annotations."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback["post", kmock.subresource("binding")] << {"apiVersion": "v1", "kind": "Status",
                                                                 "status": "Success", "code": 201}

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.name:
            key = (request.resource, request.namespace, request.name)
            if request.method == kmock.method.PATCH and _content_type(request) == APPLY and key not in self.objects:
                self.objects[key] = {"metadata": {"name": request.name, "namespace": request.namespace}}
            elif request.subresource == "binding" and key in self.objects:
                binding = request.data
                self.objects[key].patch({"spec": {"nodeName": binding["target"]["name"]},
                                         "metadata": {"annotations": binding["metadata"].get("annotations", {})}})
        return await super()._handle(request)


def _content_type(request: kmock.Request) -> str | None:
    return next((v for k, v in request.headers.items() if k.lower() == "content-type"), None)


# aiohttp cancels a request's handler when its client goes, so the server's task streaming a watch
# ends with the watcher rather than outliving the test
CANCELLING_SERVER = functools.partial(aiohttp.test_utils.RawTestServer, handler_cancellation=True)
pytestmark = pytest.mark.kmock(cls=ClusterEmulator, server_cls=CANCELLING_SERVER)


def body(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "serving.trireme.io/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": "svc", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": {"models": [{"name": "simple"}], "modelRepository": {"uri": "/srv/models"}, **spec}}


def pod(name: str, node: str | None = None, gpus: str = "") -> dict[str, Any]:
    replica = name.split("-r", 1)[1]
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z",
                            "labels": {"app.kubernetes.io/managed-by": "trireme", "serving.trireme.io/service": "svc",
                                       "serving.trireme.io/replica": replica}}
    if gpus:
        meta["annotations"] = {"trireme.io/gpus": gpus}
    container = {"name": "triton", "image": "triton", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    spec: dict[str, Any] = {"schedulerName": "trireme", "containers": [container]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def node(name: str, gpus: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {}},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}, "capacity": {"nvidia.com/gpu": str(gpus)},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


@pytest.fixture
def cluster(kmock: ClusterEmulator) -> Iterator[ClusterEmulator]:
    for resource in (PODS, SERVICES, PDBS, NODES, EVENTS, TIS):
        kmock.resources[resource] = {}
    yield kmock


@pytest.fixture
def context(cluster: ClusterEmulator) -> Iterator[Context]:
    configuration = client.Configuration()
    configuration.host = str(cluster.url).rstrip("/")
    api = client.ApiClient(configuration)
    yield Context.create(OperatorSettings(namespaces=("ns",)), api, OperatorMetrics(), identity="test")
    api.close()


def seed(cluster: ClusterEmulator, obj: dict[str, Any], pods: list[dict[str, Any]] = (),  # type: ignore[assignment]
         nodes: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
    cluster.objects[TIS, "ns", "svc"] = obj
    for item in pods:
        cluster.objects[PODS, "ns", item["metadata"]["name"]] = item
    for item in nodes:
        cluster.objects[NODES, None, item["metadata"]["name"]] = item


def requests(cluster: ClusterEmulator, method: str, resource: kmock.resource,
             subresource: str | None = None) -> list[kmock.Request]:
    return [r for r in cluster[method, resource] if r.subresource == subresource]


def posted_events(cluster: ClusterEmulator) -> list[tuple[str, str]]:
    return [(r.data["type"], r.data["reason"]) for r in requests(cluster, "post", EVENTS)]


def stored(cluster: ClusterEmulator) -> dict[str, Any]:
    return json.loads(json.dumps(cluster.objects[TIS, "ns", "svc"].raw))


def sample(metrics: OperatorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# -- one reconcile ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A service as the cluster holds it, and what one reconcile must do about it."""

    id: str
    spec: dict[str, Any]
    pods: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bound: dict[str, str] = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)
    scheduled: tuple[str, str] = ("True", "AllPodsPlaced")


CASES = [
    Case("new-service-with-no-room", {"replicas": 2}, created=["svc-r0", "svc-r1"],
         events=[("Warning", "FailedScheduling")] * 2, scheduled=("False", "Unschedulable")),
    Case("new-service-is-placed", {"replicas": 1}, nodes=[node("a", 2)], created=["svc-r0"],
         bound={"svc-r0": "a"}, events=[("Normal", "Scheduled")]),
    Case("scale-up-adds-the-next-replica", {"replicas": 2}, pods=[pod("svc-r0", "a", "0")], nodes=[node("a", 2)],
         created=["svc-r1"], bound={"svc-r1": "a"}, events=[("Normal", "Scheduled")]),
    Case("scale-down-removes-the-highest-replicas", {"replicas": 1},
         pods=[pod("svc-r0", "a", "0"), pod("svc-r1", "a", "1"), pod("svc-r2", "b", "0")],
         nodes=[node("a", 2), node("b", 1)], deleted=["svc-r2", "svc-r1"]),
    Case("existing-pods-are-not-created-again", {"replicas": 2},
         pods=[pod("svc-r0", "a", "0"), pod("svc-r1", "a", "1")], nodes=[node("a", 2)]),
    Case("zero-replicas", {"replicas": 0}, pods=[pod("svc-r0", "a", "0")], nodes=[node("a", 2)], deleted=["svc-r0"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_reconcile(cluster: ClusterEmulator, context: Context, case: Case) -> None:
    seed(cluster, body(**case.spec), case.pods, case.nodes)
    await asyncio.to_thread(reconcile, context, body(**case.spec))

    tis = InferenceService.from_api(body(**case.spec))
    for resource, desired in ((SERVICES, desired_service(tis)), (PDBS, desired_pdb(tis))):
        (apply,) = requests(cluster, "patch", resource)
        assert (apply.name, apply.params, _content_type(apply)) == ("svc", {"fieldManager": "trireme", "force": "true"},
                                                                    APPLY)
        assert apply.data == desired
    created = requests(cluster, "post", PODS)
    assert [r.data["metadata"]["name"] for r in created] == case.created
    assert all(r.data["spec"]["schedulerName"] == "trireme" and r.data["metadata"]["ownerReferences"][0]["uid"] == "u-1"
               for r in created)
    assert [r.name for r in requests(cluster, "delete", PODS)] == case.deleted
    assert {r.name: r.data["target"]["name"] for r in requests(cluster, "post", PODS, "binding")} == case.bound
    # the spec is the user's: nothing but the status subresource is written
    assert [(r.method, r.subresource) for r in cluster[TIS] if r.method != kmock.method.GET] == \
        [(kmock.method.PATCH, "status")]
    (status_patch,) = requests(cluster, "patch", TIS, "status")
    assert _content_type(status_patch) == MERGE
    status = status_patch.data["status"]
    assert status["desiredReplicas"] == case.spec["replicas"]
    assert status["observedGeneration"] == 1
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["Scheduled"] == case.scheduled
    assert conditions["MetricsAvailable"] == ("Unknown", "AutoscalingDisabled")
    assert posted_events(cluster) == case.events
    for event in requests(cluster, "post", EVENTS):
        assert event.data["involvedObject"] == {"apiVersion": "serving.trireme.io/v1alpha1",
                                                "kind": "InferenceService", "name": "svc", "namespace": "ns",
                                                "uid": "u-1"}
        assert event.data["reportingComponent"] == "trireme"
    assert sample(context.metrics, "trireme_reconcile_duration_seconds_count", result="ok") == 1
    assert sample(context.metrics, "trireme_scheduling_attempts_total", result="bound") == len(case.bound)
    pending = len(case.created) - len(case.bound)
    assert sample(context.metrics, "trireme_pending_replicas", namespace="ns", service="svc") == pending


async def test_a_second_reconcile_changes_nothing(cluster: ClusterEmulator, context: Context) -> None:
    seed(cluster, body(replicas=2), nodes=[node("a", 1)])
    await asyncio.to_thread(reconcile, context, body(replicas=2))
    # the two pods are bound and marked concurrently: their Events come in either order
    assert sorted(posted_events(cluster)) == [("Normal", "Scheduled"), ("Warning", "FailedScheduling")]
    await asyncio.to_thread(reconcile, context, stored(cluster))  # the object as the first pass left it
    assert len(requests(cluster, "post", PODS)) == 2  # no duplicates
    assert len(requests(cluster, "patch", TIS, "status")) == 1  # the status is already right: no write
    assert len(posted_events(cluster)) == 2  # the same reason is not reported twice
    assert len(requests(cluster, "patch", SERVICES)) == 2  # applying the same object is a no-op for the server


async def test_a_serving_replica_is_drained_before_a_scale_down_deletes_it(cluster: ClusterEmulator) -> None:
    serving = [pod("svc-r0", "a", "0"), pod("svc-r1", "a", "1")]
    for item in serving:
        item["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    seed(cluster, body(replicas=1), serving, [node("a", 2)])
    api = client.ApiClient(client.Configuration(host=str(cluster.url).rstrip("/")))
    context = Context.create(OperatorSettings(namespaces=("ns",), drain_grace_s=0.0), api, OperatorMetrics())
    try:
        await asyncio.to_thread(reconcile, context, body(replicas=1))
        assert requests(cluster, "delete", PODS) == []  # first out of the Service
        (label,) = [r for r in requests(cluster, "patch", PODS) if r.name == "svc-r1"]
        assert label.data["metadata"]["labels"] == {"serving.trireme.io/serving": "false"}
        await asyncio.to_thread(reconcile, context, body(replicas=1))  # unreachable, past the grace: gone
        assert [r.name for r in requests(cluster, "delete", PODS)] == ["svc-r1"]
    finally:
        api.close()


INVALID_CASES = [
    ("unknown-scheme", {"modelRepository": {"uri": "ftp://host/models"}}, "spec.modelRepository.uri"),
    ("two-gpu-kinds", {"gpus": {"count": 1, "fraction": 0.5}}, "spec.gpus"),
    ("replicas-not-a-number", {"replicas": "two"}, "spec.replicas"),
]


@pytest.mark.parametrize(("spec", "field_name"), [c[1:] for c in INVALID_CASES], ids=[c[0] for c in INVALID_CASES])
async def test_an_invalid_spec_is_reported_and_nothing_else_touched(cluster: ClusterEmulator, context: Context,
                                                                  spec: dict[str, Any], field_name: str) -> None:
    seed(cluster, body(**spec))
    await asyncio.to_thread(reconcile, context, body(**spec))
    (status_patch,) = requests(cluster, "patch", TIS, "status")
    (ready,) = status_patch.data["status"]["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert ready["message"].startswith(field_name)
    (event,) = requests(cluster, "post", EVENTS)
    assert (event.data["type"], event.data["reason"], event.data["message"]) == ("Warning", "InvalidSpec",
                                                                                 ready["message"])
    touched = [r for r in cluster if r.resource != TIS and r.resource != EVENTS]
    assert touched == []  # no pods, Service, PodDisruptionBudget or nodes read or written
    assert sample(context.metrics, "trireme_reconcile_duration_seconds_count", result="invalid") == 1
    await asyncio.to_thread(reconcile, context, stored(cluster))
    assert len(requests(cluster, "post", EVENTS)) == 1  # reported once, not on every pass


# -- API errors ------------------------------------------------------------------------------------------

ERROR_CASES = [
    # (id, where, status, reconcile fails)
    ("pod-already-exists-409", ("post", PODS), 409, False),
    ("pod-already-gone-404", ("delete", PODS), 404, False),
    ("bind-conflict-409", ("post", PODS, "binding"), 409, False),
    ("service-apply-500", ("patch", SERVICES), 500, True),
    ("pod-create-500", ("post", PODS), 500, True),
]


@pytest.mark.parametrize(("where", "code", "fails"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
async def test_api_errors(cluster: ClusterEmulator, context: Context, where: tuple[Any, ...], code: int,
                          fails: bool) -> None:
    method, resource, *sub = where
    replicas = 0 if method == "delete" else 1
    seed(cluster, body(replicas=replicas), [pod("svc-r0", "a", "0")] if method == "delete" else [], [node("a", 1)])
    criteria = kmock.subresource(sub[0]) if sub else (lambda request: request.subresource is None)
    cluster[method, resource, criteria] << {"apiVersion": "v1", "kind": "Status", "status": "Failure",
                                            "code": code, "reason": "Injected"} << code
    if fails:
        with pytest.raises(ApiException) as raised:
            await asyncio.to_thread(reconcile, context, body(replicas=replicas))
        assert raised.value.status == code
        assert sample(context.metrics, "trireme_reconcile_duration_seconds_count", result="error") == 1
        assert requests(cluster, "patch", TIS, "status") == []  # nothing half-done is reported as done
    else:
        await asyncio.to_thread(reconcile, context, body(replicas=replicas))
        assert sample(context.metrics, "trireme_reconcile_duration_seconds_count", result="ok") == 1
        assert len(requests(cluster, "patch", TIS, "status")) == 1
    assert sample(context.metrics, "trireme_bind_errors_total") == (1 if sub else 0)


# -- the periodic resync ---------------------------------------------------------------------------------


class AlwaysActing(Leadership):
    def __init__(self) -> None:  # standalone: no peering object to read
        self.passes = 0

    def acting(self, now: Any = None) -> bool:
        self.passes += 1
        return True


@pytest.mark.looptime
async def test_resync_retries_a_failed_service_on_the_next_pass(cluster: ClusterEmulator, context: Context) -> None:
    seed(cluster, body(replicas=1))
    cluster["patch", SERVICES][:1] << {"kind": "Status", "code": 500} << 500  # only the first apply fails
    stop, health = asyncio.Event(), Health(stall_after_s=60, clock=asyncio.get_running_loop().time)
    leadership = AlwaysActing()
    task = asyncio.create_task(resync(context, leadership, health, stop))
    try:
        await asyncio.sleep(context.settings.reconcile_interval_s * 1.5)  # fake time: two passes
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    assert leadership.passes == 2
    assert len(requests(cluster, "patch", SERVICES)) == 2
    assert [r.data["metadata"]["name"] for r in requests(cluster, "post", PODS)] == ["svc-r0"]
    assert sample(context.metrics, "trireme_reconcile_duration_seconds_count", result="error") == 1
    assert sample(context.metrics, "trireme_reconcile_duration_seconds_count", result="ok") == 1
    assert health.alive()


def writes(cluster: ClusterEmulator) -> list[Any]:
    """Requests that changed something (reads of the cluster, the rebalancer's among them, do not)."""
    return [r for r in cluster if r.method != kmock.method.GET]


GONE_CASES = [
    ("deleted-since-the-list", {"apiVersion": "v1", "kind": "Status", "code": 404, "reason": "NotFound"}, 404),
    ("replaced-by-a-namesake", {**body(replicas=1), "metadata": {**body()["metadata"], "uid": "u-2"}}, 200),
]


@pytest.mark.parametrize(("now", "code"), [c[1:] for c in GONE_CASES], ids=[c[0] for c in GONE_CASES])
async def test_resync_never_acts_on_a_stale_list(cluster: ClusterEmulator, context: Context, now: dict[str, Any],
                                                 code: int) -> None:
    seed(cluster, body(replicas=1))
    cluster["get", TIS, kmock.name("svc")] << now << code  # the object read right before reconciling
    assert await asyncio.to_thread(resync_pass, context, AlwaysActing()) == 0
    assert writes(cluster) == []  # no pods, Service or PDB that would outlive it


async def test_resync_skips_services_being_deleted_and_standby_replicas(cluster: ClusterEmulator,
                                                                       context: Context) -> None:
    deleting = body(replicas=1)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    seed(cluster, deleting)
    assert await asyncio.to_thread(resync_pass, context, AlwaysActing()) == 0
    assert writes(cluster) == []

    class StandingBy(AlwaysActing):
        def acting(self, now: Any = None) -> bool:
            return False

    seed(cluster, body(replicas=1))
    assert await asyncio.to_thread(resync_pass, context, StandingBy()) == 0
    assert [r for r in cluster if r.method != kmock.method.GET] == []  # a standby writes nothing
    assert sample(context.metrics, "trireme_leader") == 0


# -- the kopf handlers, in a running kopf operator -------------------------------------------------------


async def test_kopf_runs_the_handlers_and_adds_no_finalizer(cluster: ClusterEmulator, context: Context) -> None:
    """kopf, watching the mock API, hands a new InferenceService to ``converge``; nothing it or Trireme
    does puts a finalizer on the object, so deleting an InferenceService never waits for the operator.
    (That kopf takes off the finalizer an older operator's timer added is tested end to end.)"""
    import kopf
    from trireme.operator.handlers import configure, register

    cluster.resources[TIS] = kmock.ResourceInfo(kind="InferenceService", singular="inferenceservice",
                                                namespaced=True, subresources=["status", "scale"],
                                                verbs=["get", "list", "watch", "patch", "create", "delete"])
    cluster.resources[kmock.resource("v1/namespaces")] = kmock.ResourceInfo(kind="Namespace", namespaced=False,
                                                                            verbs=["list", "watch"])
    seed(cluster, body(replicas=1))
    registry, settings, memo = kopf.OperatorRegistry(), kopf.OperatorSettings(), kopf.Memo()
    configure(memo, settings, context)
    register(registry)
    settings.scanning.disabled = True  # the namespace is named: no need to list namespaces
    settings.queueing.idle_timeout = settings.queueing.exit_timeout = 0.5  # stop promptly
    url = str(cluster.url).rstrip("/")
    kopf.on.login(registry=registry)(lambda **_: kopf.ConnectionInfo(server=url, insecure=True))
    stop = threading.Event()

    def run_kopf() -> None:  # in a loop of its own: kopf stops every task its loop gained since it started
        asyncio.run(kopf.operator(registry=registry, settings=settings, memo=memo, standalone=True,
                                  namespaces=["ns"], stop_flag=stop))

    operator = threading.Thread(target=run_kopf, name="kopf", daemon=True)
    operator.start()
    try:
        async def handled() -> None:  # kopf records a handled change in its annotations, after the handler
            while not requests(cluster, "patch", TIS):
                await asyncio.sleep(0.05)
        await asyncio.wait_for(handled(), timeout=20)
    finally:
        stop.set()
        await asyncio.to_thread(operator.join, 20)
    assert not operator.is_alive()
    assert [r.data["metadata"]["name"] for r in requests(cluster, "post", PODS)] == ["svc-r0"]
    writes = [r for r in cluster[TIS] if r.method != kmock.method.GET]
    assert writes and not any((r.data or {}).get("metadata", {}).get("finalizers") for r in writes)
    assert all(r.subresource == "status" or set(r.data) <= {"metadata"} for r in writes)  # never the spec


# -- the autoscaler inside the resync pass --------------------------------------------------------------


async def test_resync_scales_an_autoscaled_service_through_status_only(cluster: ClusterEmulator,
                                                                      context: Context) -> None:
    """The resync pass runs the autoscaler's step before the reconcile: the count it decides (capped at
    the GPUs the scheduler can place) is written to status, pods are created for it, and the spec is
    never touched."""
    from trireme.operator.autoscaling import Autoscaler
    from trireme.operator.loadmetrics import PrometheusSettings, queries

    spec = {"replicas": 1, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4,
                                           "signal": "pendingRequests", "target": 1,
                                           "behavior": {"scaleUp": {"maxChange": 4}}}}
    ready = pod("svc-r0", "a", "0")
    ready["metadata"]["labels"]["serving.trireme.io/serving"] = "true"
    ready["status"] = {"podIP": "127.0.9.1", "conditions": [{"type": "Ready", "status": "True"}]}
    seed(cluster, body(**spec), [ready], [node("a", 3)])
    texts = queries(PrometheusSettings(), "ns", "svc")

    def prometheus(promql: str, at: float) -> list[dict[str, Any]]:
        name = next(n for n, text in texts.items() if text == promql)
        value = {"pending": "6", "age": "1"}.get(name, "0")
        return [] if name == "gpu_utilization" else [{"metric": {"pod": "svc-r0"}, "value": [at, value]}]

    clock = [1_700_000_000.0]
    autoscaler = Autoscaler(context.api, context.settings, context.scheduling.simulate,
                            lambda obj, kind, reason, message: record_event(context, obj, kind, reason, message),
                            query=prometheus, clock=lambda: clock[0])
    scaled = dataclasses.replace(context, autoscaler=autoscaler)
    for _ in range(2):  # the first reading alone decides nothing
        clock[0] += 5
        assert await asyncio.to_thread(resync_pass, scaled, AlwaysActing()) == 1
    # six requests waiting ask for four replicas (the maximum); the node's three GPUs place three
    assert [r.data["metadata"]["name"] for r in requests(cluster, "post", PODS)] == ["svc-r1", "svc-r2"]
    assert all(r.data["metadata"]["labels"]["serving.trireme.io/serving"] == "true"
               for r in requests(cluster, "post", PODS))
    status = stored(cluster)["status"]
    assert status["desiredReplicas"] == 3 and stored(cluster)["spec"]["replicas"] == 1
    assert status["autoscaler"]["action"] == "scale-up" and status["autoscaler"]["capacityLimitedTo"] == 3
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["MetricsAvailable"] == ("True", "MetricsRead")
    events = posted_events(cluster)
    assert ("Normal", "ScaledUp") in events and ("Warning", "InsufficientGPUs") in events
    assert [(r.method, r.subresource) for r in cluster[TIS] if r.method != kmock.method.GET] == \
        [(kmock.method.PATCH, "status")] * len(requests(cluster, "patch", TIS, "status"))
