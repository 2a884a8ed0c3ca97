"""kopf handlers and the periodic resync: turn each InferenceService into its pods, Service and PodDisruptionBudget.

One function, ``reconcile``, runs on create, update and resume (kopf handlers) and from a
periodic resync, so a restart at any point converges to the same objects: it reads what
exists, creates what is missing, deletes what is surplus, schedules pending pods and
reports. It never writes an InferenceService's spec, only its status; what it owns it
applies server-side with its own field manager, so re-applying a manifest is a no-op.
Invalid objects get Ready=False with the field named and a Warning Event, and nothing else
is touched. Status and Events are written by ``reconcile`` itself, so both paths report the
same way.

Deletion needs no handler and no finalizer: owner references let garbage collection remove
the pods, Service and PodDisruptionBudget, so deleting an InferenceService never waits for
the operator, healthy or not. That is why the periodic pass is a resync task of Trireme's
own and not a ``kopf.timer``: kopf adds a finalizer to every object a timer or daemon
serves, and removes it only when a healthy operator stops the timer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
import tritonclient.http as triton_http
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trireme.operator import metrics as operator_metrics
from trireme.operator.api import GROUP, PLURAL, TRITON_HTTP_PORT, VERSION, InferenceService, InvalidInferenceService
from trireme.operator.autoscaling import Autoscaler
from trireme.operator.draining import Drainer
from trireme.operator.loadmetrics import read_gpu_utilization
from trireme.operator.leadership import Leadership, own_identity
from trireme.operator.metrics import Health, OperatorMetrics
from trireme.operator.reconcile import (FIELD_MANAGER, REPLICA_LABEL, SERVING_LABEL,
                                        counted_pods, desired_pdb, desired_pods, desired_replica_count,
                                        desired_service, disruptions_allowed, drain_first, invalid_status,
                                        is_draining, pod_changes, pod_is_ready, pods_to_label_serving, replica_index,
                                        replica_indices, selector_string, service_status)
from trireme.operator.rebalancing import Rebalancer
from trireme.operator.scheduling import SchedulingLoop
from trireme.operator.settings import OperatorSettings

log = logging.getLogger(__name__)
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
COMPONENT = "trireme"


@dataclass(frozen=True)
class Context:
    """What a reconcile needs: settings, the API client, the scheduling loop, the metrics, the autoscaler
    and the rebalancer."""

    settings: OperatorSettings
    api: client.ApiClient
    scheduling: SchedulingLoop
    metrics: OperatorMetrics
    identity: str = COMPONENT
    autoscaler: Autoscaler | None = None
    rebalancer: Rebalancer | None = None
    drainer: Drainer | None = None
    """Drains the replicas a reconcile removes from a service without autoscaling (the autoscaler drains
    its own); None deletes them at once."""

    @classmethod
    def create(cls, settings: OperatorSettings, api: client.ApiClient, metrics: OperatorMetrics | None = None,
               identity: str = COMPONENT) -> Context:
        """A context whose scheduling loop reports every scheduling attempt to ``metrics`` and posts
        Events as this replica, named ``identity``."""
        metrics = metrics or OperatorMetrics()
        loop = SchedulingLoop(api, settings.scheduler_name, settings.namespaces, observe=metrics.scheduling_attempt,
                              default_policy=settings.default_policy)

        def events(obj: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
            record_event(context, obj, kind, reason, message)

        drainer = Drainer(client.CoreV1Api(api), settings)
        autoscaler = Autoscaler(api, settings, loop.simulate, events, drainer=drainer)

        def utilisation(at: float) -> Mapping[tuple[str, str], float]:
            return read_gpu_utilization(autoscaler.query, autoscaler.prometheus, at)

        context = cls(settings, api, loop, metrics, identity, autoscaler,
                      Rebalancer(api, settings, loop, events, models_ready, drainer, observe=metrics.move,
                                 utilisation=utilisation), drainer)
        loop.record_event = events
        return context


def configure(memo: kopf.Memo, kopf_settings: kopf.OperatorSettings, context: Context) -> None:
    """Put what the handlers need into kopf's memo, and keep kopf's bookkeeping out of status."""
    memo.context = context
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    kopf_settings.posting.level = logging.WARNING
    kopf_settings.watching.server_timeout = 60


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the InferenceService handlers with ``registry``: none of them needs a finalizer."""
    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(GROUP, VERSION, PLURAL, registry=registry, id="converge")(converge)


def converge(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The kopf handler: reconcile the object kopf saw."""
    reconcile(memo.context, body)


def reconcile(context: Context, obj: Mapping[str, Any]) -> None:
    """Bring one InferenceService's owned objects and status to what its spec asks for."""
    started = time.monotonic()
    result = "error"
    try:
        result = _reconcile(context, obj)
    finally:
        context.metrics.reconciled(result, time.monotonic() - started)


def _reconcile(context: Context, body: Mapping[str, Any]) -> str:
    now = datetime.now(UTC)
    raw = {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": dict(body["metadata"]),
           "spec": dict(body.get("spec") or {}), "status": _known_status(body.get("status") or {})}
    try:
        tis = InferenceService.from_api(raw)
    except InvalidInferenceService as exc:
        _report_invalid(context, body, str(exc), now)
        return "invalid"
    settings = context.settings
    core = client.CoreV1Api(context.api)
    namespace, name = tis.metadata.namespace or "", tis.metadata.name or ""
    autoscaled = tis.spec.autoscaling.enabled
    report = context.autoscaler.report(namespace, name, tis.metadata.uid) if context.autoscaler and autoscaled \
        else None
    every = _service_pods(core, namespace, name)
    pods = counted_pods(every)  # a replica being moved counts once; the rebalancer owns the other half
    wanted = report.desired_replicas if report is not None else desired_replica_count(tis)
    indices = replica_indices(pods, wanted, autoscaled, taken=map(replica_index, every))
    changes = pod_changes(desired_pods(tis, settings.scheduler_name, indices), pods,
                          disruptions_allowed(tis, pods, wanted))
    drain = drain_first(pods, changes.delete, autoscaled) if context.drainer is not None else []
    # pods get the label the Service selects on before the Service does (pods made by an older operator)
    for pod_name in pods_to_label_serving([p for p in pods if p["metadata"]["name"] not in changes.delete],
                                          autoscaled):
        _label_serving(core, namespace, pod_name)
    _apply_service(context.api, desired_service(tis))
    _apply_pdb(context.api, desired_pdb(tis))
    for pod in changes.create:
        _create_pod(core, namespace, pod)
    for pod_name in changes.delete:
        if pod_name not in drain:
            _delete_pod(core, namespace, pod_name)
    _drain(context, [p for p in pods if p["metadata"]["name"] in drain])
    if changes.create or changes.delete:
        pods = counted_pods(_service_pods(core, namespace, name))
    if _schedule(context, pods):
        pods = counted_pods(_service_pods(core, namespace, name))
    unschedulable = _known_unschedulable(pods)
    ready = models_ready(pods, [m.name for m in tis.spec.models], settings.triton_timeout_s)
    status = service_status(tis, pods, ready, unschedulable, now, autoscaler=report)
    context.metrics.pending(namespace, name, _pending_replicas(pods))
    _report(context, body, status)
    return "ok"


def _drain(context: Context, pods: Iterable[Mapping[str, Any]]) -> None:
    """Take each pod out of the Service; delete the ones that have drained (``draining.Drainer``)."""
    now = time.time()
    for pod in pods:
        assert context.drainer is not None
        if not is_draining(pod):
            context.drainer.start(pod, now)
        elif context.drainer.drained(pod, now):
            context.drainer.delete(pod)


def _schedule(context: Context, pods: list[dict[str, Any]]) -> bool:
    """When the service has pods waiting for a node, run a scheduling cycle (for every pending pod of the
    cluster; the loop posts the Events) and say whether one ran."""
    if not any(not (p.get("spec") or {}).get("nodeName") and not p["metadata"].get("deletionTimestamp")
               for p in pods):
        return False
    started = time.monotonic()
    try:
        context.scheduling.run()
    finally:
        context.metrics.scheduling_cycle_took(time.monotonic() - started)
    return True


def _pending_replicas(pods: Iterable[Mapping[str, Any]]) -> int:
    """Replicas with at least one live pod not bound to a node."""
    return len({(p["metadata"].get("labels") or {}).get(REPLICA_LABEL, p["metadata"]["name"]) for p in pods
                if not (p.get("spec") or {}).get("nodeName") and not p["metadata"].get("deletionTimestamp")})


def models_ready(pods: Iterable[Mapping[str, Any]], models: list[str], timeout_s: float) -> set[str]:
    """Names of the Ready pods on which Triton reports every model ready; pods without an IP are skipped."""
    ready = set()
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or not pod_is_ready(pod):
            continue
        try:
            triton = triton_http.InferenceServerClient(f"{ip}:{TRITON_HTTP_PORT}", connection_timeout=timeout_s,
                                                       network_timeout=timeout_s)
            try:
                if all(triton.is_model_ready(model) for model in models):
                    ready.add(pod["metadata"]["name"])
            finally:
                triton.close()
        except Exception as exc:  # an unreachable replica is simply not ready
            log.debug("Triton of pod %s is not answering: %s", pod["metadata"]["name"], exc)
    return ready


# -- helpers ---------------------------------------------------------------------------------------------


def _known_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status fields the models know (kopf may keep its own bookkeeping next to them)."""
    known = {"observedGeneration", "replicas", "readyReplicas", "desiredReplicas", "placements", "conditions",
             "endpoint", "selector", "autoscaler"}
    return {k: v for k, v in status.items() if k in known}


def _report_invalid(context: Context, body: Mapping[str, Any], message: str, now: datetime) -> None:
    previous = list((body.get("status") or {}).get("conditions") or [])
    status = invalid_status(message, body["metadata"].get("generation"), previous, now)
    before = next((c for c in previous if c.get("type") == "Ready"), {})
    if before.get("reason") != "InvalidSpec" or before.get("message") != message:
        record_event(context, body, "Warning", "InvalidSpec", message)
    _report(context, body, status)


def _report(context: Context, body: Mapping[str, Any], status: dict[str, Any]) -> None:
    """Merge-patch ``status`` onto the status subresource when it differs from what the object shows."""
    current = dict(body.get("status") or {})
    if all(current.get(key) == value for key, value in status.items()):
        return
    meta = body["metadata"]
    try:
        client.CustomObjectsApi(context.api).patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": status}, _content_type=MERGE,
            _preload_content=False)
    except ApiException as exc:
        if exc.status != 404:  # deleted meanwhile: nothing to report on
            raise


def record_event(context: Context, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    """Post a core/v1 Event about the InferenceService; a failure to post is logged, never raised."""
    meta = body["metadata"]
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    event = {"apiVersion": "v1", "kind": "Event",
             "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
             "involvedObject": {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": meta["name"],
                                "namespace": meta["namespace"], "uid": meta.get("uid")},
             "type": kind, "reason": reason, "message": message[:1024],
             "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
             "reportingInstance": context.identity[:128], "firstTimestamp": now, "lastTimestamp": now, "count": 1}
    try:
        client.CoreV1Api(context.api).create_namespaced_event(meta["namespace"], event, _preload_content=False)
    except (ApiException, OSError) as exc:
        log.warning("could not post event %s about %s/%s: %s", reason, meta["namespace"], meta["name"], exc)


def _apply_service(api: client.ApiClient, obj: dict[str, Any]) -> None:
    """Server-side apply the Service with Trireme's field manager."""
    client.CoreV1Api(api).patch_namespaced_service(
        obj["metadata"]["name"], obj["metadata"]["namespace"], obj, field_manager=FIELD_MANAGER, force=True,
        _content_type=APPLY, _preload_content=False)


def _apply_pdb(api: client.ApiClient, obj: dict[str, Any]) -> None:
    """Server-side apply the PodDisruptionBudget with Trireme's field manager."""
    client.PolicyV1Api(api).patch_namespaced_pod_disruption_budget(
        obj["metadata"]["name"], obj["metadata"]["namespace"], obj, field_manager=FIELD_MANAGER, force=True,
        _content_type=APPLY, _preload_content=False)


def _service_pods(core: client.CoreV1Api, namespace: str, service: str) -> list[dict[str, Any]]:
    response = core.list_namespaced_pod(namespace, label_selector=selector_string(service), _preload_content=False)
    return json.loads(response.data)["items"]


def _label_serving(core: client.CoreV1Api, namespace: str, name: str) -> None:
    try:
        core.patch_namespaced_pod(name, namespace, {"metadata": {"labels": {SERVING_LABEL: "true"}}},
                                  _content_type=MERGE, _preload_content=False)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _create_pod(core: client.CoreV1Api, namespace: str, pod: dict[str, Any]) -> None:
    try:
        core.create_namespaced_pod(namespace, pod, _preload_content=False)
        log.info("created pod %s/%s", namespace, pod["metadata"]["name"])
    except ApiException as exc:
        if exc.status != 409:  # already there: another cycle created it
            raise


def _delete_pod(core: client.CoreV1Api, namespace: str, name: str) -> None:
    try:
        core.delete_namespaced_pod(name, namespace, _preload_content=False)
        log.info("deleted surplus pod %s/%s", namespace, name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _known_unschedulable(pods: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Why each pending pod waits, as the scheduling loop recorded it (PodScheduled=False)."""
    found = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        if (pod.get("spec") or {}).get("nodeName"):
            continue
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("message"):
                found[name] = cond["message"]
    return found


# -- running ---------------------------------------------------------------------------------------------


def api_client() -> client.ApiClient:
    """A Kubernetes client: in-cluster configuration inside a pod, else the current kubeconfig."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def list_services(context: Context) -> list[dict[str, Any]]:
    """Every InferenceService the operator serves: in its namespaces, or in all of them."""
    custom = client.CustomObjectsApi(context.api)
    namespaces = context.settings.namespaces
    if not namespaces:
        response = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _preload_content=False)
        return json.loads(response.data)["items"]
    found: list[dict[str, Any]] = []
    for namespace in namespaces:
        response = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _preload_content=False)
        found += json.loads(response.data)["items"]
    return found


def resync_pass(context: Context, leadership: Leadership) -> int:
    """One periodic pass: when this replica acts, reconcile every InferenceService not being deleted.

    Picks up what no watch event announces (pod readiness, GPUs freed elsewhere, drift). Each
    service is read again just before its reconcile, so a service deleted since the list gets no
    new pods that would outlive it. One service's failure is logged and does not stop the others.
    Returns how many were reconciled.
    """
    acting = leadership.acting()
    context.metrics.leader.set(1 if acting else 0)
    if not acting:
        return 0
    services = list_services(context)
    context.metrics.forget_services((s["metadata"].get("namespace", ""), s["metadata"]["name"]) for s in services)
    if context.autoscaler is not None:
        context.autoscaler.forget((s["metadata"].get("namespace", ""), s["metadata"]["name"]) for s in services)
    done = 0
    for listed in services:
        obj = listed
        try:
            obj = _fresh(context, listed)  # the list may be a pass old: never act for a deleted service
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                continue
            if context.autoscaler is not None:
                _autoscale(context, obj)
            reconcile(context, obj)
            done += 1
        except Exception:  # one broken service must not starve the others; the next pass retries it
            log.exception("reconciling %s/%s failed", obj["metadata"].get("namespace"), obj["metadata"]["name"])
    if context.rebalancer is not None:
        try:
            context.rebalancer.step()
        except Exception:  # the API server away for a moment: moves are kept on the pods, the next pass goes on
            log.exception("rebalancing failed")
    return done


def _autoscale(context: Context, obj: Mapping[str, Any]) -> None:
    """The autoscaler's step for one service; its failure is logged and the reconcile still runs."""
    try:
        context.autoscaler.step(obj)  # type: ignore[union-attr]
    except Exception:  # the API server or Prometheus away for a moment: the next pass retries
        log.exception("autoscaling %s/%s failed", obj["metadata"].get("namespace"), obj["metadata"]["name"])


def _fresh(context: Context, listed: Mapping[str, Any]) -> dict[str, Any] | None:
    """The object as it is now, or None when it is gone (or was replaced by one of the same name)."""
    meta = listed["metadata"]
    try:
        response = client.CustomObjectsApi(context.api).get_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    obj: dict[str, Any] = json.loads(response.data)
    return obj if obj["metadata"].get("uid") == meta.get("uid") else None


async def resync(context: Context, leadership: Leadership, health: Health, stop: asyncio.Event) -> None:
    """Run ``resync_pass`` every ``reconcile_interval_s`` seconds until ``stop`` is set."""
    interval = context.settings.reconcile_interval_s
    while not stop.is_set():
        try:
            await asyncio.to_thread(resync_pass, context, leadership)
        except Exception as exc:  # the API server away for a moment: try again next pass
            log.warning("resync pass failed: %s", exc)
        health.passed()
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass


async def run(settings: OperatorSettings, stop_flag: Any = None) -> None:
    """Run the operator until stopped (SIGINT/SIGTERM, or ``stop_flag``: an asyncio or threading Event).

    Leader election uses kopf peering rather than a Lease: kopf already pauses its watches and
    handlers while a peer of higher priority is alive, so nothing of Trireme's runs in a paused
    replica, and ``Leadership`` holds the resync to the same rule. With ``settings.standalone`` (the
    default, for one replica) there is no peering; with ``settings.peering`` set, the replica with
    the highest priority acts. Peering needs the KopfPeering (or, cluster-wide, ClusterKopfPeering)
    CRD and a peering object of that name; the chart installs both when leader election is on.

    Next to kopf run the resync task and Trireme's HTTP endpoints (``metrics.serve``): /metrics on
    ``settings.metrics_port``, /healthz and /readyz on ``settings.health_port``.
    """
    api = api_client()
    identity = own_identity()
    metrics = OperatorMetrics()
    context = Context.create(settings, api, metrics, identity)
    leadership = Leadership(api, settings, identity)
    health = Health(stall_after_s=max(60.0, 10 * settings.reconcile_interval_s))
    registry = kopf.OperatorRegistry()
    kopf_settings = kopf.OperatorSettings()
    memo = kopf.Memo()
    configure(memo, kopf_settings, context)
    register(registry)
    kopf.on.login(registry=registry)(kopf.login_via_client)
    ready = asyncio.Event()
    stop = asyncio.Event()

    async def mark_ready() -> None:
        await ready.wait()
        health.ready = True

    try:
        async with operator_metrics.serve(metrics, health, settings.metrics_port, settings.health_port):
            # created before kopf starts, so kopf's shutdown leaves them to us
            background = [asyncio.create_task(mark_ready(), name="readiness"),
                          asyncio.create_task(resync(context, leadership, health, stop), name="resync")]
            try:
                await kopf.operator(registry=registry, settings=kopf_settings, memo=memo,
                                    standalone=settings.standalone,
                                    peering_name=None if settings.standalone else settings.peering,
                                    priority=settings.priority, identity=identity,
                                    clusterwide=not settings.namespaces, namespaces=settings.namespaces,
                                    stop_flag=stop_flag, ready_flag=ready)
            finally:
                stop.set()
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
    finally:
        api.close()
