"""kopf handlers: turn each InferenceService into its pods, Service and PodDisruptionBudget.

One function, ``converge``, runs on create, update, resume and on a timer, so a
restart at any point converges to the same objects: it reads what exists, creates
what is missing, deletes what is surplus, schedules pending pods and reports. It
never writes an InferenceService's spec, only its status; what it owns it applies
server-side with its own field manager, so re-applying a manifest is a no-op.
Invalid objects get Ready=False with the field named and a Warning Event, and
nothing else is touched. Deletion needs no handler: owner references let garbage
collection remove the pods, Service and PodDisruptionBudget.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import tritonclient.http as triton_http
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trireme.operator.api import GROUP, PLURAL, TRITON_HTTP_PORT, VERSION, InferenceService, InvalidInferenceService
from trireme.operator.binder import Binder
from trireme.operator.reconcile import (FIELD_MANAGER, desired_pdb, desired_pods, desired_service, invalid_status,
                                        pod_changes, pod_is_ready, selector_string, service_status)
from trireme.operator.settings import OperatorSettings
from trireme.scheduler.firstfit import Bind, Unschedulable

log = logging.getLogger(__name__)
APPLY = "application/apply-patch+yaml"


def configure(memo: kopf.Memo, kopf_settings: kopf.OperatorSettings, settings: OperatorSettings,
              api: client.ApiClient) -> None:
    """Put what the handlers need into kopf's memo, and keep kopf's bookkeeping out of status."""
    memo.settings = settings
    memo.api = api
    memo.binder = Binder(api, settings.scheduler_name)
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    kopf_settings.posting.level = logging.WARNING
    kopf_settings.watching.server_timeout = 60


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Register the InferenceService handlers with ``registry``."""
    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(GROUP, VERSION, PLURAL, registry=registry, id="converge")(converge)
    kopf.timer(GROUP, VERSION, PLURAL, registry=registry, id="periodic", interval=settings.reconcile_interval_s,
               idle=None, sharp=False)(converge)


def converge(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Bring one InferenceService's owned objects and status to what its spec asks for."""
    now = datetime.now(UTC)
    raw = {"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": dict(body["metadata"]),
           "spec": dict(body.get("spec") or {}), "status": _known_status(body.get("status") or {})}
    try:
        tis = InferenceService.from_api(raw)
    except InvalidInferenceService as exc:
        _report_invalid(body, patch, str(exc), now)
        return
    settings: OperatorSettings = memo.settings
    core = client.CoreV1Api(memo.api)
    _apply_service(memo.api, desired_service(tis))
    _apply_pdb(memo.api, desired_pdb(tis))
    namespace = tis.metadata.namespace or ""
    pods = _service_pods(core, namespace, tis.metadata.name or "")
    changes = pod_changes(desired_pods(tis, settings.scheduler_name), pods)
    for pod in changes.create:
        _create_pod(core, namespace, pod)
    for name in changes.delete:
        _delete_pod(core, namespace, name)
    if changes.create or changes.delete:
        pods = _service_pods(core, namespace, tis.metadata.name or "")
    recorded = _known_unschedulable(pods, {})
    outcomes = memo.binder.schedule(pods)
    for outcome in outcomes:
        if isinstance(outcome.decision, Bind):
            kopf.event(body, type="Normal", reason="Scheduled",
                       message=f"pod {outcome.pod} bound to node {outcome.decision.node}, "
                               f"GPUs {list(outcome.decision.gpu_indices)}")
        elif recorded.get(outcome.pod) != outcome.decision.reason:
            kopf.warn(body, reason="FailedScheduling", message=f"pod {outcome.pod}: {outcome.decision.reason}")
    if any(isinstance(o.decision, Bind) for o in outcomes):
        pods = _service_pods(core, namespace, tis.metadata.name or "")
    unschedulable = {o.pod: o.decision.reason for o in outcomes if isinstance(o.decision, Unschedulable)}
    unschedulable |= _known_unschedulable(pods, unschedulable)
    ready = models_ready(pods, [m.name for m in tis.spec.models], settings.triton_timeout_s)
    status = service_status(tis, pods, ready, unschedulable, now)
    _report(body, patch, status)


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
             "endpoint", "selector"}
    return {k: v for k, v in status.items() if k in known}


def _report_invalid(body: kopf.Body, patch: kopf.Patch, message: str, now: datetime) -> None:
    previous = list((body.get("status") or {}).get("conditions") or [])
    status = invalid_status(message, body["metadata"].get("generation"), previous, now)
    before = next((c for c in previous if c.get("type") == "Ready"), {})
    if before.get("reason") != "InvalidSpec" or before.get("message") != message:
        kopf.warn(body, reason="InvalidSpec", message=message)
    _report(body, patch, status)


def _report(body: kopf.Body, patch: kopf.Patch, status: dict[str, Any]) -> None:
    """Write ``status`` when it differs from what the object shows (no writes when nothing changed)."""
    current = dict(body.get("status") or {})
    if any(current.get(key) != value for key, value in status.items()):
        for key, value in status.items():
            patch.status[key] = value


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


def _known_unschedulable(pods: Iterable[Mapping[str, Any]], fresh: Mapping[str, str]) -> dict[str, str]:
    """Reasons recorded on pending pods by earlier cycles (PodScheduled=False), for pods not decided now."""
    found = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        if name in fresh or (pod.get("spec") or {}).get("nodeName"):
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


async def run(settings: OperatorSettings, stop_flag: Any = None) -> None:
    """Run the operator until stopped (SIGINT/SIGTERM, or ``stop_flag``).

    Leader election uses kopf peering rather than a Lease: kopf already pauses its watches and
    handlers while a peer of higher priority is alive, so nothing of Trireme's runs in a paused
    replica. With ``settings.standalone`` (the default, for one replica) there is no peering; with
    ``settings.peering`` set, the replica with the highest priority acts. Peering needs the KopfPeering
    (or, cluster-wide, ClusterKopfPeering) CRD and a peering object of that name.
    """
    api = api_client()
    registry = kopf.OperatorRegistry()
    kopf_settings = kopf.OperatorSettings()
    memo = kopf.Memo()
    configure(memo, kopf_settings, settings, api)
    register(registry, settings)
    kopf.on.login(registry=registry)(kopf.login_via_client)
    try:
        await kopf.operator(registry=registry, settings=kopf_settings, memo=memo,
                            standalone=settings.standalone,
                            peering_name=None if settings.standalone else settings.peering,
                            priority=settings.priority, clusterwide=not settings.namespaces,
                            namespaces=settings.namespaces, stop_flag=stop_flag,
                            liveness_endpoint=(f"http://0.0.0.0:{settings.metrics_port}/healthz"
                                               if settings.metrics_port else None))
    finally:
        api.close()
