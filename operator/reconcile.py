"""What an InferenceService should look like in the cluster, as plain objects.

The functions here turn a parsed InferenceService into the pods, Service and
PodDisruptionBudget it owns, compare desired pods with existing ones, and compute
the status to report. They do no I/O, so the handlers stay thin and every rule is
tested with tables; the handlers only send what these functions return.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from trireme.operator.api import (API_VERSION, KIND, TRITON_GRPC_PORT, TRITON_HTTP_PORT, TRITON_METRICS_PORT,
                                  ConditionStatus, ConditionType, InferenceService)
from trireme.scheduler.kube import GPU_ANNOTATION, GPU_RESOURCE, gpu_indices

FIELD_MANAGER = "trireme"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "trireme"
SERVICE_LABEL = "serving.trireme.io/service"
REPLICA_LABEL = "serving.trireme.io/replica"
STAGE_LABEL = "serving.trireme.io/stage"
SERVING_LABEL = "serving.trireme.io/serving"
"""Pod label the Service selects on ("true"): the autoscaler sets it to "false" to take a replica out of
the Service before deleting it, so no new request reaches a replica about to go."""
DRAINING_ANNOTATION = "serving.trireme.io/draining-since"
"""Pod annotation: when the autoscaler took the replica out of the Service (RFC 3339)."""
REPLACES_ANNOTATION = "serving.trireme.io/replaces"
"""Pod annotation on the new replica of a move (make-before-break): the uid of the pod it replaces. While
that pod lives, the two count as one replica; the annotation is removed when the move is done."""
MOVE_REASON_ANNOTATION = "serving.trireme.io/move-reason"
"""Pod annotation on the new replica of a move: why the rebalancer moved the replica."""
MOVED_AT_ANNOTATION = "serving.trireme.io/moved-at"
"""Pod annotation on the new replica of a move: when the move started (RFC 3339), for the move's timeout
and the least time between two moves of one replica."""
PRODUCTS_ANNOTATION = "serving.trireme.io/gpu-products"
"""Pod annotation listing the GPU products the pod accepts ("A,B"); absent means any."""
TEMPLATE_ANNOTATION = "serving.trireme.io/template-hash"
"""Pod annotation with a digest of everything the service's spec put into the pod: a pod whose digest
differs from the current one was made from an older spec and is replaced (within the disruption budget)."""
SHARE_ANNOTATION = "serving.trireme.io/gpu-share"
"""Pod annotation with the share of one GPU the pod needs (a fraction or an amount of memory)."""
MODELS_MOUNT = "/models"
MODELS_VOLUME = "model-repository"
CONTAINER = "triton"


# -- names and labels ------------------------------------------------------------------------------------


def pod_name(service: str, replica: int, stage: int = 0, stages: int = 1) -> str:
    """Stable pod name: ``<service>-r<replica>``, with ``-p<stage>`` when a replica has several stages."""
    return f"{service}-r{replica}" + (f"-p{stage}" if stages > 1 else "")


def selector_labels(service: str) -> dict[str, str]:
    """Labels that select every pod of ``service``."""
    return {MANAGED_BY_LABEL: MANAGED_BY, SERVICE_LABEL: service}


def selector_string(service: str) -> str:
    """The selector in string form (status.selector, for the scale subresource)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(service).items())


def endpoint(service: str, namespace: str) -> str:
    """In-cluster HTTP endpoint of the service."""
    return f"{service}.{namespace}.svc:{TRITON_HTTP_PORT}"


def owner_reference(tis: InferenceService) -> dict[str, Any]:
    """The controller owner reference that lets garbage collection remove what a service owns."""
    return {"apiVersion": API_VERSION, "kind": KIND, "name": tis.metadata.name, "uid": tis.metadata.uid,
            "controller": True, "blockOwnerDeletion": True}


def _metadata(tis: InferenceService, name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": tis.metadata.namespace,
            "labels": {**selector_labels(tis.metadata.name or ""), **(labels or {})},
            "ownerReferences": [owner_reference(tis)]}


# -- pods ------------------------------------------------------------------------------------------------


def model_repository(uri: str) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``--model-repository`` value for ``uri`` with the volumes and mounts it needs.

    Local paths and file:// URLs become a read-only hostPath volume at /models; pvc://claim/path a
    read-only PersistentVolumeClaim at /models; s3:// and gs:// are Triton's own and pass through.
    """
    scheme, _, rest = uri.partition("://") if "://" in uri else ("", "", uri)
    mount = [{"name": MODELS_VOLUME, "mountPath": MODELS_MOUNT, "readOnly": True}]
    if scheme in ("", "file"):
        return MODELS_MOUNT, [{"name": MODELS_VOLUME, "hostPath": {"path": rest, "type": "Directory"}}], mount
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        volume = {"name": MODELS_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        return f"{MODELS_MOUNT}/{path}".rstrip("/"), [volume], mount
    return uri, [], []


def triton_args(tis: InferenceService, repository: str) -> list[str]:
    """tritonserver flags: repository, explicit model loading, ports, then the user's own."""
    spec = tis.spec
    return ([f"--model-repository={repository}", "--model-control-mode=explicit"]
            + [f"--load-model={m.name}" for m in spec.models]
            + [f"--http-port={TRITON_HTTP_PORT}", f"--grpc-port={TRITON_GRPC_PORT}",
               f"--metrics-port={TRITON_METRICS_PORT}"]
            + list(spec.runtime.args))


def _probe(path: str, period_s: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period_s, "failureThreshold": failures}


def _resources(tis: InferenceService, gpus_per_pod: int) -> dict[str, Any]:
    wanted = tis.spec.runtime.resources
    requests = _amounts(wanted.requests.model_dump() if wanted.requests else {})
    limits = _amounts(wanted.limits.model_dump() if wanted.limits else {})
    if gpus_per_pod:
        limits[GPU_RESOURCE] = str(gpus_per_pod)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _amounts(values: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None}


def replica_pods(tis: InferenceService, replica: int, scheduler_name: str) -> list[dict[str, Any]]:
    """The pods of replica ``replica``: one per pipeline stage."""
    spec = tis.spec
    stages = spec.parallelism.pipeline_parallel
    gpus_per_pod = spec.gpus.count // stages if spec.gpus.count else 0
    repository, volumes, mounts = model_repository(spec.model_repository.uri)
    annotations = {}
    if spec.gpus.products:
        annotations[PRODUCTS_ANNOTATION] = ",".join(spec.gpus.products)
    if spec.gpus.shared:
        annotations[SHARE_ANNOTATION] = str(spec.gpus.fraction if spec.gpus.fraction is not None else spec.gpus.memory)
    container: dict[str, Any] = {
        "name": CONTAINER, "image": spec.runtime.image, "command": ["tritonserver"],
        "args": triton_args(tis, repository),
        "ports": [{"name": "http", "containerPort": TRITON_HTTP_PORT, "protocol": "TCP"},
                  {"name": "grpc", "containerPort": TRITON_GRPC_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": TRITON_METRICS_PORT, "protocol": "TCP"}],
        "readinessProbe": _probe("/v2/health/ready", 2, 3),
        "livenessProbe": {**_probe("/v2/health/live", 10, 6), "initialDelaySeconds": 10},
    }
    if spec.runtime.image_pull_policy:
        container["imagePullPolicy"] = str(spec.runtime.image_pull_policy)
    if spec.runtime.env:
        container["env"] = [e.to_api() for e in spec.runtime.env]
    resources = _resources(tis, gpus_per_pod)
    if resources:
        container["resources"] = resources
    if mounts:
        container["volumeMounts"] = mounts
    pod_spec: dict[str, Any] = {"schedulerName": scheduler_name, "containers": [container]}
    if volumes:
        pod_spec["volumes"] = volumes
    scheduling = spec.scheduling
    if scheduling.node_selector:
        pod_spec["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        pod_spec["tolerations"] = [t.to_api() for t in scheduling.tolerations]
    if scheduling.affinity is not None and scheduling.affinity.to_api():
        pod_spec["affinity"] = scheduling.affinity.to_api()
    if spec.priority.class_name:
        pod_spec["priorityClassName"] = spec.priority.class_name
    annotations[TEMPLATE_ANNOTATION] = template_hash(pod_spec, annotations)
    pods = []
    for stage in range(stages):
        labels = ({REPLICA_LABEL: str(replica), SERVING_LABEL: "true"}
                  | ({STAGE_LABEL: str(stage)} if stages > 1 else {}))
        metadata = _metadata(tis, pod_name(tis.metadata.name or "", replica, stage, stages), labels)
        metadata["annotations"] = dict(annotations)
        pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec})
    return pods


def template_hash(pod_spec: Mapping[str, Any], annotations: Mapping[str, str]) -> str:
    """A short digest of a replica pod's spec and Trireme's annotations (not its name or labels)."""
    text = json.dumps({"spec": pod_spec, "annotations": dict(annotations)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def desired_pods(tis: InferenceService, scheduler_name: str,
                 replicas: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """Every pod of every replica in ``replicas`` (by default 0 .. spec.replicas-1)."""
    indices = range(tis.spec.replicas) if replicas is None else sorted(set(replicas))
    return [pod for replica in indices for pod in replica_pods(tis, replica, scheduler_name)]


def desired_replica_count(tis: InferenceService) -> int:
    """Replicas wanted now: spec.replicas, or with autoscaling the autoscaler's count from status.

    Until the autoscaler has decided (a new service, or an operator that just started), the count is
    spec.replicas within the autoscaler's bounds, or the count already reported, whichever is known.
    """
    autoscaling = tis.spec.autoscaling
    if not autoscaling.enabled:
        return tis.spec.replicas
    status = tis.status
    wanted = status.desired_replicas if status is not None and status.autoscaler is not None else tis.spec.replicas
    return max(autoscaling.min_replicas, min(autoscaling.max_replicas or wanted, wanted))


def is_draining(pod: Mapping[str, Any]) -> bool:
    """Whether the autoscaler took the pod out of the Service to remove it."""
    return (pod["metadata"].get("labels") or {}).get(SERVING_LABEL) == "false"


@dataclass(frozen=True)
class MoveInFlight:
    """A replica being moved: ``new`` (made on the target node) replaces ``old``, which still exists.

    Until the new pod serves, the old one is the replica and the new one is not counted; once the old
    one is taken out of the Service to drain, the new one is the replica and the old one is leaving."""

    new: Mapping[str, Any]
    old: Mapping[str, Any]

    @property
    def leaving(self) -> Mapping[str, Any]:
        """The pod of the two that does not count as the replica now."""
        return self.old if is_draining(self.old) else self.new


def moves_in_flight(pods: Iterable[Mapping[str, Any]]) -> list[MoveInFlight]:
    """The moves under way among ``pods``: live pods naming, in ``REPLACES_ANNOTATION``, a live pod."""
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    by_uid = {p["metadata"].get("uid"): p for p in live if p["metadata"].get("uid")}
    found = []
    for pod in live:
        old = by_uid.get((pod["metadata"].get("annotations") or {}).get(REPLACES_ANNOTATION))
        if old is not None and old is not pod:
            found.append(MoveInFlight(pod, old))
    return sorted(found, key=lambda m: m.new["metadata"]["name"])


def counted_pods(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``pods`` less the half of each move in flight that is not the replica now, so that a replica being
    moved counts once everywhere replicas are counted (scaling, rolling replacement, status)."""
    pods = list(pods)
    leaving = {id(move.leaving) for move in moves_in_flight(pods)}
    return [p for p in pods if id(p) not in leaving]


def replica_indices(pods: Iterable[Mapping[str, Any]], wanted: int, autoscaled: bool,
                    taken: Iterable[int] = ()) -> list[int]:
    """The replica indices to keep or create so that ``wanted`` replicas serve.

    Pod names are stable, so a replica removed from the middle leaves a gap: the indices come from the
    live replicas rather than 0 .. wanted-1, and new replicas take the lowest free indices. With
    autoscaling, replicas are removed only by the autoscaler's drain, so every live replica is kept
    (draining ones too, until the drain deletes them) and replicas that serve are added up to
    ``wanted``. Without it, the lowest ``wanted`` live replicas are kept and the rest are surplus.
    ``taken`` are indices new replicas must not use (those of pods left out of ``pods``: the uncounted
    half of a move).
    """
    live: dict[int, bool] = {}
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        index = replica_index(pod)
        if index >= 0:
            live[index] = live.get(index, False) or (autoscaled and is_draining(pod))
    if autoscaled:
        keep = set(live)
        serving = sum(1 for draining in live.values() if not draining)
    else:
        keep = set(sorted(live)[:wanted])
        serving = len(keep)
    taken = set(taken)
    free = (i for i in itertools.count() if i not in live and i not in taken)
    for _ in range(max(0, wanted - serving)):
        keep.add(next(free))
    return sorted(keep)


def pods_to_label_serving(pods: Iterable[Mapping[str, Any]], autoscaled: bool) -> list[str]:
    """Live pods that must carry ``SERVING_LABEL=true`` and do not: pods made before the label existed,
    and, once autoscaling is off, pods a drain had taken out of the Service (nothing deletes them now)."""
    found = []
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        label = (pod["metadata"].get("labels") or {}).get(SERVING_LABEL)
        if label != "true" and not (autoscaled and label == "false"):
            found.append(pod["metadata"]["name"])
    return sorted(found)


@dataclass(frozen=True)
class PodChanges:
    """Pods to create (full objects) and to delete (names, highest replica first)."""

    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)


def pod_changes(desired: Sequence[Mapping[str, Any]], existing: Iterable[Mapping[str, Any]],
                may_disrupt: int = 0) -> PodChanges:
    """Create what is desired and missing; delete existing pods of the service that are not desired.

    A pod made from an older spec (its template hash differs from the desired pod's) is deleted to be
    recreated from the current one: at once when it is not ready (it serves nothing, and a broken spec
    must be fixable), and for ready pods at most ``may_disrupt`` of them per call, highest replica
    first. Pods without a template hash (made before Trireme recorded one) are left alone. Pods
    already being deleted are neither recreated nor deleted again until they are gone.
    """
    existing = list(existing)
    names = {p["metadata"]["name"] for p in existing}
    wanted = {p["metadata"]["name"]: p for p in desired}
    create = [dict(p) for p in desired if p["metadata"]["name"] not in names]
    live = [p for p in existing if not p["metadata"].get("deletionTimestamp")]
    surplus = [p for p in live if p["metadata"]["name"] not in wanted]
    outdated = [p for p in live if p["metadata"]["name"] in wanted and _outdated(p, wanted[p["metadata"]["name"]])]
    outdated.sort(key=lambda p: (replica_index(p), p["metadata"]["name"]), reverse=True)
    idle = [p for p in outdated if not pod_is_ready(p)]
    serving = [p for p in outdated if pod_is_ready(p)][:max(0, may_disrupt)]
    delete = sorted(surplus, key=lambda p: (replica_index(p), p["metadata"]["name"]), reverse=True) + idle + serving
    return PodChanges(create, [p["metadata"]["name"] for p in delete])


def drain_first(pods: Iterable[Mapping[str, Any]], delete: Iterable[str], autoscaled: bool) -> list[str]:
    """Of the pods to ``delete``, those to drain before deleting: without autoscaling, every Ready one (a
    surplus replica, or one made from an older spec), so no request in flight or on its way fails. With
    autoscaling, the autoscaler drains what it removes and counts draining replicas as gone, so a spec
    change replaces pods at once, within the disruption budget."""
    if autoscaled:
        return []
    delete = set(delete)
    return sorted(p["metadata"]["name"] for p in pods
                  if p["metadata"]["name"] in delete and pod_is_ready(p) and not p["metadata"].get("deletionTimestamp"))


def _outdated(pod: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    have = (pod["metadata"].get("annotations") or {}).get(TEMPLATE_ANNOTATION)
    return have is not None and have != desired["metadata"]["annotations"][TEMPLATE_ANNOTATION]


def disruptions_allowed(tis: InferenceService, pods: Iterable[Mapping[str, Any]], wanted: int) -> int:
    """Ready pods that may be taken down now for a spec change: the disruption budget's maxUnavailable
    (a count, or a percentage of ``wanted`` replicas rounded up) less the replicas not ready now."""
    budget = tis.spec.disruption_budget.max_unavailable
    if isinstance(budget, str):
        allowed = -(-wanted * int(budget.rstrip("%")) // 100)
    else:
        allowed = int(budget)
    ready = {replica_index(p) for p in pods if pod_is_ready(p) and not p["metadata"].get("deletionTimestamp")}
    return max(0, allowed - max(0, wanted - len(ready)))


def replica_index(pod: Mapping[str, Any]) -> int:
    """The pod's replica index (its ``REPLICA_LABEL``), -1 when it has none."""
    try:
        return int((pod["metadata"].get("labels") or {}).get(REPLICA_LABEL, -1))
    except ValueError:
        return -1


# -- Service and PodDisruptionBudget ---------------------------------------------------------------------


def desired_service(tis: InferenceService) -> dict[str, Any]:
    """The Service in front of the replicas (ClusterIP; only ready pods get traffic, and no draining one)."""
    selector = {**selector_labels(tis.metadata.name or ""), SERVING_LABEL: "true"}
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(tis, tis.metadata.name or ""),
            "spec": {"type": "ClusterIP", "selector": selector,
                     "ports": [{"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
                               for name, port in (("http", TRITON_HTTP_PORT), ("grpc", TRITON_GRPC_PORT),
                                                  ("metrics", TRITON_METRICS_PORT))]}}


def desired_pdb(tis: InferenceService) -> dict[str, Any]:
    """The PodDisruptionBudget: evictions respect spec.disruptionBudget.maxUnavailable."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _metadata(tis, tis.metadata.name or ""),
            "spec": {"maxUnavailable": tis.spec.disruption_budget.max_unavailable,
                     "selector": {"matchLabels": selector_labels(tis.metadata.name or "")}}}


# -- status ----------------------------------------------------------------------------------------------


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's Ready condition is True."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def condition(kind: ConditionType, holds: bool | ConditionStatus, reason: str, message: str, generation: int | None,
              previous: Iterable[Mapping[str, Any]], now: datetime) -> dict[str, Any]:
    """A status condition; lastTransitionTime is kept from ``previous`` unless the status changed.

    ``holds`` is True or False, or ConditionStatus.UNKNOWN when the operator cannot tell.
    """
    status = holds if isinstance(holds, ConditionStatus) else ConditionStatus.TRUE if holds else ConditionStatus.FALSE
    before = next((c for c in previous if c.get("type") == kind), None)
    changed = before is None or before.get("status") != status
    since = now.isoformat().replace("+00:00", "Z") if changed else before["lastTransitionTime"]
    result = {"type": str(kind), "status": str(status), "reason": reason, "message": message,
              "lastTransitionTime": since}
    if generation is not None:
        result["observedGeneration"] = generation
    return result


CRASH_LOOP_REASONS = frozenset({"CrashLoopBackOff"})
"""Container waiting reasons that mean a replica keeps failing rather than still starting."""


@dataclass(frozen=True)
class MetricsObservation:
    """What the autoscaler found when it last read a service's metrics (MetricsAvailable).

    The autoscaler fills it in; until it reads metrics for a service, ``None`` is passed and
    the condition says why nothing was read.
    """

    available: bool
    reason: str
    message: str


@dataclass(frozen=True)
class AutoscalerReport:
    """What the autoscaler contributes to a service's status: its count, why, and what it found.

    ``capacity`` is set when the load asks for more replicas than the free GPUs can place; it says what
    is missing and turns Scheduled False instead of leaving pods Pending.
    """

    desired_replicas: int
    status: Mapping[str, Any]
    """The ``status.autoscaler`` block (API field names)."""
    metrics: MetricsObservation | None = None
    capacity: str | None = None


def crash_looping(pods: Iterable[Mapping[str, Any]]) -> list[str]:
    """``pod/container`` of every container that waits to restart after failing again and again."""
    found = []
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in CRASH_LOOP_REASONS:
                found.append(f"{pod['metadata']['name']}/{status.get('name', '')}")
    return found


def degraded_condition(tis: InferenceService, pods: Sequence[Mapping[str, Any]], models_ready: set[str],
                       ready_replicas: int, previous: Sequence[Mapping[str, Any]], now: datetime,
                       desired: int | None = None) -> dict[str, Any]:
    """Degraded: the service serves less than it did, or a replica keeps failing.

    True when a container crash-loops; when Triton answers on a Ready pod but reports a model not
    ready; or when fewer replicas are ready than were before (``status.readyReplicas``) and than are
    desired, which stays True until every desired replica is ready again. A service that is still
    coming up, or scaling up, is Progressing, not Degraded.
    """
    generation = tis.metadata.generation
    desired = desired_replica_count(tis) if desired is None else desired
    loops = crash_looping(pods)
    if loops:
        return condition(ConditionType.DEGRADED, True, "CrashLoopBackOff",
                         f"restarting after repeated failures: {', '.join(sorted(loops))}", generation, previous, now)
    unloaded = sorted(p["metadata"]["name"] for p in pods
                      if pod_is_ready(p) and p["metadata"]["name"] not in models_ready)
    if unloaded:
        return condition(ConditionType.DEGRADED, True, "ModelNotReady",
                         f"Triton reports a model of {', '.join(m.name for m in tis.spec.models)} not ready on "
                         f"{', '.join(unloaded)}", generation, previous, now)
    before = next((c for c in previous if c.get("type") == ConditionType.DEGRADED), {})
    served = tis.status.ready_replicas if tis.status else 0
    lost = ready_replicas < min(desired, served)
    still = before.get("status") == ConditionStatus.TRUE and ready_replicas < desired
    if lost or still:
        return condition(ConditionType.DEGRADED, True, "ReplicasUnavailable",
                         f"{ready_replicas} of {desired} replicas ready: a replica that served is not ready now",
                         generation, previous, now)
    return condition(ConditionType.DEGRADED, False, "AsExpected", "no replica lost or failing", generation,
                     previous, now)


def metrics_condition(tis: InferenceService, observation: MetricsObservation | None,
                      previous: Sequence[Mapping[str, Any]], now: datetime) -> dict[str, Any]:
    """MetricsAvailable: whether the autoscaler reads current metrics for the service.

    Unknown while nothing is read: autoscaling is off (AutoscalingDisabled), or no reading has been
    made yet (NotRead). Otherwise the autoscaler's ``observation`` decides.
    """
    generation = tis.metadata.generation
    if not tis.spec.autoscaling.enabled:
        return condition(ConditionType.METRICS_AVAILABLE, ConditionStatus.UNKNOWN, "AutoscalingDisabled",
                         "spec.autoscaling.enabled is false: no metrics are read", generation, previous, now)
    if observation is None:
        return condition(ConditionType.METRICS_AVAILABLE, ConditionStatus.UNKNOWN, "NotRead",
                         "the autoscaler has not read metrics for this service yet", generation, previous, now)
    return condition(ConditionType.METRICS_AVAILABLE, observation.available, observation.reason, observation.message,
                     generation, previous, now)


def service_status(tis: InferenceService, pods: Iterable[Mapping[str, Any]], models_ready: set[str],
                   unschedulable: Mapping[str, str], now: datetime,
                   metrics: MetricsObservation | None = None,
                   autoscaler: AutoscalerReport | None = None) -> dict[str, Any]:
    """The status to report.

    ``pods`` are the service's existing pods; ``models_ready`` names the pods on which Triton reports
    every model ready; ``unschedulable`` maps pending pod names to why they fit nowhere; ``metrics`` is
    the autoscaler's last reading, if any, and ``autoscaler`` its latest decision (which overrides
    ``metrics`` and the count in the object's status).
    """
    if autoscaler is not None and tis.spec.autoscaling.enabled:
        metrics = autoscaler.metrics
    name, namespace, generation = tis.metadata.name or "", tis.metadata.namespace or "", tis.metadata.generation
    previous = (tis.status.model_dump(by_alias=True, mode="json")["conditions"] if tis.status else [])
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    by_replica: dict[int, list[Mapping[str, Any]]] = {}
    for pod in live:
        by_replica.setdefault(replica_index(pod), []).append(pod)
    stages = tis.spec.parallelism.pipeline_parallel
    placements, ready_replicas = [], 0
    for replica in sorted(r for r in by_replica if r >= 0):
        members = sorted(by_replica[replica], key=lambda p: p["metadata"]["name"])
        ready = len(members) == stages and all(pod_is_ready(p) and p["metadata"]["name"] in models_ready
                                               for p in members)
        ready_replicas += ready
        placements.append({"replica": replica, "ready": ready, "pods": [_pod_placement(p) for p in members]})
    desired = (autoscaler.desired_replicas if autoscaler is not None and tis.spec.autoscaling.enabled
               else desired_replica_count(tis))
    serving = [p for p in live if not (tis.spec.autoscaling.enabled and is_draining(p))]
    pending = [p["metadata"]["name"] for p in live if not (p.get("spec") or {}).get("nodeName")]
    stuck = [f"{pod}: {unschedulable[pod]}" for pod in pending if pod in unschedulable]
    if stuck:
        scheduled = condition(ConditionType.SCHEDULED, False, "Unschedulable", "; ".join(stuck), generation,
                              previous, now)
    elif pending or len(serving) < desired * stages:
        scheduled = condition(ConditionType.SCHEDULED, False, "Pending",
                              f"{len(pending) + max(0, desired * stages - len(serving))} pods waiting for placement",
                              generation, previous, now)
    elif autoscaler is not None and autoscaler.capacity and tis.spec.autoscaling.enabled:
        scheduled = condition(ConditionType.SCHEDULED, False, "InsufficientGPUs", autoscaler.capacity, generation,
                              previous, now)
    else:
        scheduled = condition(ConditionType.SCHEDULED, True, "AllPodsPlaced", f"{len(live)} pods placed on GPUs",
                              generation, previous, now)
    all_ready = ready_replicas >= desired and len(placements) >= desired
    ready_condition = condition(ConditionType.READY, all_ready, "AllReplicasReady" if all_ready else "ReplicasNotReady",
                                f"{ready_replicas} of {desired} replicas ready", generation, previous, now)
    progressing = condition(ConditionType.PROGRESSING, not all_ready, "Reconciling" if not all_ready else "Stable",
                            f"moving to {desired} ready replicas" if not all_ready else "no change under way",
                            generation, previous, now)
    degraded = degraded_condition(tis, live, models_ready, ready_replicas, previous, now, desired)
    status = {"observedGeneration": generation, "replicas": len(placements), "readyReplicas": ready_replicas,
              "desiredReplicas": desired, "placements": placements,
              "conditions": [ready_condition, scheduled, progressing, degraded,
                             metrics_condition(tis, metrics, previous, now)],
              "endpoint": endpoint(name, namespace), "selector": selector_string(name)}
    if tis.spec.autoscaling.enabled:
        status["autoscaler"] = dict(autoscaler.status) if autoscaler is not None else (
            tis.status.autoscaler.model_dump(by_alias=True, mode="json", exclude_none=True)
            if tis.status and tis.status.autoscaler else None)
    elif tis.status is not None and tis.status.autoscaler is not None:
        status["autoscaler"] = None  # autoscaling turned off: the old decision no longer applies
    return status


def invalid_status(message: str, generation: int | None, previous: Iterable[Mapping[str, Any]],
                   now: datetime) -> dict[str, Any]:
    """The status of an object whose spec cannot be served: Ready=False, reason InvalidSpec."""
    return {"observedGeneration": generation,
            "conditions": [condition(ConditionType.READY, False, "InvalidSpec", message, generation, previous, now)]}


def _pod_placement(pod: Mapping[str, Any]) -> dict[str, Any]:
    placement: dict[str, Any] = {"name": pod["metadata"]["name"]}
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        placement["node"] = node
        placement["gpus"] = list(gpu_indices((pod["metadata"].get("annotations") or {}).get(GPU_ANNOTATION, "")))
    return placement
