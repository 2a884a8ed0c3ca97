"""The autoscaler's I/O: Triton's load from Prometheus in, a replica count, drains and Events out.

Every decision is made by ``scheduler.autoscale.decide``; this module only feeds it and carries out
what it says, so the benchmark measures the same decisions the operator makes. Per autoscaled
service, once every ``autoscale_interval_s``, ``Autoscaler.step`` reads the replicas' counters
(``loadmetrics``), folds them into a ``MetricSample``, keeps a bounded history, asks ``decide`` and
keeps the result in memory for ``reconcile``, which writes it into status together with everything
else (one writer of status, so conditions are never overwritten by a second patch). The count goes
to ``status.desiredReplicas`` only, never into the spec, so GitOps tools see no drift.

Why the pieces look the way they do:

* **Counters that survive membership changes.** Summing cumulative counters over the replicas that
  happen to be scraped makes a jump whenever a replica joins (its whole history at once) and a drop
  when one leaves. The sample's counters are therefore accumulated from per-replica increments: a
  replica that appears contributes from its first reading on, a reset contributes its new value.
* **Ask the scheduler first.** Before asking for more replicas, the new pods are simulated on the
  cluster as it is (``SchedulingLoop.simulate``, the real scheduling cycle, preemption included); the
  count is capped at what fits and Scheduled=False says what is missing, instead of Pending pods.
* **Hold on bad data.** A failed reading or a *hold* decision never lowers the count. After
  ``metrics_unavailable_after_s`` MetricsAvailable turns False with an Event; the next good reading
  turns it back.
* **Drain, then delete.** A scale-down takes the least-loaded replica out of the Service (its pods'
  ``serving.trireme.io/serving`` label turns "false"), waits at least ``drain_grace_s`` for load
  balancers to notice and until Triton reports its queue empty with no request completing between two
  probes (or ``drain_timeout_s``), then deletes it (``draining.Drainer``, shared with the rebalancer).
  Pod names stay stable, so the replica indices come from the live pods (``reconcile.replica_indices``).
* **Quiet status.** ``status.autoscaler`` shows a decision until one says something new (another
  action, count limit or drain, a metric off by more than 10 %) or ``autoscaler_status_refresh_s`` has
  passed: a status write every five seconds per service would wake every watcher of every service.

It runs inside the resync pass, after the leadership check, so a standby replica never scales.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes import client

from trireme.operator.api import Autoscaling, InferenceService, InvalidInferenceService
from trireme.operator.draining import Drainer, Probe, rfc3339, triton_probe
from trireme.operator.loadmetrics import (MetricsUnavailable, PrometheusSettings, Query, ServiceLoad, prometheus_query,
                                          read_service_load)
from trireme.operator.reconcile import (REPLICA_LABEL, AutoscalerReport, MetricsObservation, counted_pods,
                                        desired_replica_count, is_draining, pod_is_ready, replica_pods,
                                        selector_string)
from trireme.operator.settings import OperatorSettings
from trireme.scheduler.autoscale import (AutoscalerSettings, AutoscalerState, Decision, Dispatch, MetricSample,
                                         ScaleDownPolicy, ScaleUpPolicy, Signal, choose_scale_down_victim, decide)
from trireme.scheduler.cycle import Bind, Preempt

log = logging.getLogger(__name__)

EventSink = Callable[[Mapping[str, Any], str, str, str], None]
"""Records an Event: (involved object, type "Normal"/"Warning", reason, message)."""
Simulate = Callable[[list[dict[str, Any]]], Mapping[str, Any]]
"""``SchedulingLoop.simulate``: decisions for pods not created yet, by ``namespace/name``."""

HISTORY_S = 150.0
"""Samples older than this are dropped: ``decide`` looks back over its trend window (60 s) plus its
staleness limit (30 s); the rest is slack for a slower interval."""
MERGE = "application/merge-patch+json"
PER_REPLICA_SEEN = (
    "requests waited at one replica while another had a free slot in {scrapes} scrapes within {window:.0f}s: "
    "clients reach the replicas through a per-request split such as a plain Service, not a load-aware gateway. "
    "Replicas are sized as queueing each on its own from now on (spec.autoscaling.dispatch: auto); set it to "
    "pooled or perReplica to choose")
"""The Event message when ``dispatch: auto`` sees the replicas queueing on their own."""


def autoscaler_settings(spec: Autoscaling) -> AutoscalerSettings:
    """The decision settings for a service's ``spec.autoscaling``: objective, bounds and behaviour from the
    spec, everything else ``AutoscalerSettings``' defaults (learned from the service's own metrics)."""
    up, down = spec.behavior.scale_up, spec.behavior.scale_down
    max_replicas = spec.max_replicas or spec.min_replicas
    return AutoscalerSettings(
        min_replicas=spec.min_replicas, max_replicas=max_replicas, signal=Signal(str(spec.signal)),
        target=spec.effective_target(), dispatch=Dispatch(str(spec.dispatch)),
        latency_slo_ms=float(spec.latency_slo_milliseconds) if spec.latency_slo_milliseconds else None,
        scale_up=replace(ScaleUpPolicy(), stabilization_window_s=float(up.stabilization_window_seconds),
                         period_s=float(up.period_seconds), **_change(up.max_change)),
        scale_down=replace(ScaleDownPolicy(), stabilization_window_s=float(down.stabilization_window_seconds),
                           period_s=float(down.period_seconds), **_change(down.max_change)))


def _change(value: int | str) -> dict[str, Any]:
    """``maxChange`` (a count, or "N%" of the replicas with at least one) as the policy's two limits."""
    if isinstance(value, str) and value.endswith("%"):
        return {"max_change_replicas": 1, "max_change_percent": float(value[:-1])}
    return {"max_change_replicas": int(value), "max_change_percent": 0.0}


@dataclass
class _Memory:
    """What the autoscaler remembers about one service between steps (lost on restart, by design:
    a new operator starts by holding the count it finds in status)."""

    uid: str
    samples: deque[MetricSample] = field(default_factory=deque)
    state: AutoscalerState | None = None
    desired: int | None = None
    decided_at: float | None = None
    scaled_at: float | None = None
    counters: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per pod, the raw counters of the latest reading."""
    totals: dict[str, float] = field(default_factory=dict)
    """The service's counters, accumulated from per-pod increments."""
    seen: set[str] = field(default_factory=set)
    """Pods that had metrics in an earlier reading."""
    load: ServiceLoad | None = None
    unavailable_since: float | None = None
    unavailable_reported: bool = False
    observation: MetricsObservation | None = None
    capacity: str | None = None
    capacity_limit: int | None = None
    status: dict[str, Any] = field(default_factory=dict)
    status_at: float | None = None
    """When ``status`` was last replaced (it is kept while later decisions agree with it)."""


class Autoscaler:
    """Runs the autoscaler for every autoscaled service of one operator; thread-safe."""

    def __init__(self, api: client.ApiClient, settings: OperatorSettings, simulate: Simulate,
                 record_event: EventSink, query: Query | None = None, clock: Callable[[], float] = time.time,
                 probe: Probe = triton_probe, drainer: Drainer | None = None) -> None:
        self.core = client.CoreV1Api(api)
        self.settings = settings
        self.prometheus = PrometheusSettings(
            url=settings.prometheus_url, bearer_token_file=settings.prometheus_token_file,
            ca_file=settings.prometheus_ca_file, timeout_s=settings.prometheus_timeout_s,
            namespace_label=settings.prometheus_namespace_label, pod_label=settings.prometheus_pod_label)
        self.query = query or prometheus_query(self.prometheus)
        self.simulate = simulate
        self.record_event = record_event
        self.clock = clock
        self.drainer = drainer or Drainer(self.core, settings, probe)
        self._memory: dict[tuple[str, str], _Memory] = {}
        self._lock = threading.Lock()

    # -- what reconcile reads ----------------------------------------------------------------------------

    def report(self, namespace: str, name: str, uid: str | None = None) -> AutoscalerReport | None:
        """The latest decision for the service, or None before the first one (since this process started)."""
        with self._lock:
            memory = self._memory.get((namespace, name))
        if memory is None or memory.desired is None or (uid is not None and memory.uid != uid):
            return None
        return AutoscalerReport(memory.desired, dict(memory.status), memory.observation, memory.capacity)

    def forget(self, keep: Iterable[tuple[str, str]]) -> None:
        """Drop the memory of services not in ``keep`` (deleted, or no longer autoscaled)."""
        keep = set(keep)
        with self._lock:
            for key in [k for k in self._memory if k not in keep]:
                del self._memory[key]

    # -- one step ----------------------------------------------------------------------------------------

    def step(self, obj: Mapping[str, Any]) -> None:
        """Advance drains of the service and, when its interval has passed, decide its replica count."""
        try:
            tis = InferenceService.from_api({**obj, "status": None})
        except InvalidInferenceService:
            return  # reconcile reports the invalid spec
        status = obj.get("status") or {}
        namespace, name = tis.metadata.namespace or "", tis.metadata.name or ""
        if not tis.spec.autoscaling.enabled:
            with self._lock:
                self._memory.pop((namespace, name), None)
            return
        with self._lock:
            memory = self._memory.get((namespace, name))
            if memory is None or memory.uid != tis.metadata.uid:
                memory = self._memory[namespace, name] = _Memory(uid=tis.metadata.uid or "")
        now = self.clock()
        pods = counted_pods(self._pods(namespace, name))  # the rebalancer drains the old half of a move
        self._advance_drains(obj, pods, now)
        if memory.decided_at is not None and now - memory.decided_at < self.settings.autoscale_interval_s - 1e-6:
            return
        memory.decided_at = now
        if memory.desired is None and _autoscaler_status(status) is not None:
            # a restarted operator goes on from the count it reported (and holds it until it has data)
            known = InferenceService.from_api({**obj, "status": _autoscaler_status(status)})
            memory.desired = desired_replica_count(known)
        self._decide(obj, tis, memory, [p for p in pods if not p["metadata"].get("deletionTimestamp")], now)

    def _decide(self, obj: Mapping[str, Any], tis: InferenceService, memory: _Memory,
                pods: list[dict[str, Any]], now: float) -> None:
        settings = autoscaler_settings(tis.spec.autoscaling)
        replicas = _replicas(pods)
        serving = {i: members for i, members in replicas.items() if not any(is_draining(p) for p in members)}
        ready = [i for i, members in serving.items() if _replica_ready(members, tis)]
        current = len(serving)
        problem = self._read(tis, memory, pods, now, len(ready), current - len(ready))
        if problem is None:
            seen_before = memory.state is not None and memory.state.seen_per_replica
            decision = decide(list(memory.samples), now, current, settings, memory.state)
            memory.state = decision.state
            if decision.state.seen_per_replica and not seen_before:
                self.record_event(obj, "Normal", "PerReplicaQueueing", PER_REPLICA_SEEN.format(
                    scrapes=settings.stranded_scrapes, window=settings.stranded_window_s))
            if not decision.metrics_available:
                problem = decision.reason
        else:
            decision = None
        bounded = max(settings.min_replicas, min(settings.max_replicas, current))
        before = memory.desired if memory.desired is not None else bounded
        if decision is None or not decision.metrics_available:
            wanted = max(current, before)
            wanted = max(settings.min_replicas, min(settings.max_replicas, wanted))
            # decide's own hold already says what it holds; a failed reading is said here
            reason = problem if problem.startswith("holding ") else f"holding {_count(wanted)}: {problem}"
            action = "hold"
        else:
            wanted, action, reason = decision.desired_replicas, decision.action, decision.reason
        self._metrics_state(obj, memory, problem, now)
        wanted, limit = self._fit(obj, tis, memory, pods, replicas, serving, wanted)
        if decision is not None and memory.state is not None and limit is not None:
            memory.state = replace(memory.state, desired=wanted)
        if wanted < current:
            self._drain(memory, serving, ready, current - wanted, now)
        elif wanted > current:
            self._undrain(replicas, serving, wanted - current)
        if wanted != before:
            verb = "ScaledUp" if wanted > before else "ScaledDown"
            self.record_event(obj, "Normal", verb, f"{before} → {wanted} replicas: {reason}")
            memory.scaled_at = now
            log.info("%s/%s: %s from %d to %d: %s", tis.metadata.namespace, tis.metadata.name, verb, before, wanted,
                     reason)
        memory.desired = wanted
        block = self._status_block(memory, decision, action, reason, limit, pods, now)
        if memory.status_at is None or now - memory.status_at >= self.settings.autoscaler_status_refresh_s - 1e-6 \
                or status_differs(memory.status, block):
            memory.status, memory.status_at = block, now

    # -- reading the load ----------------------------------------------------------------------------------

    def _read(self, tis: InferenceService, memory: _Memory, pods: Sequence[Mapping[str, Any]], now: float,
              ready: int, starting: int) -> str | None:
        """Append a sample to the history; the problem when there is none to append."""
        namespace, name = tis.metadata.namespace or "", tis.metadata.name or ""
        readable = sorted(p["metadata"]["name"] for p in pods
                          if pod_is_ready(p) and (p.get("status") or {}).get("podIP"))
        try:
            load = self._load(namespace, name, readable, memory, now)
        except MetricsUnavailable as exc:
            return str(exc)
        memory.load = load
        totals = memory.totals
        for replica in load.replicas:
            previous = memory.counters.get(replica.pod)
            for counter, value in replica.counters.items():
                base = previous.get(counter) if previous else None
                # a new replica counts from its first reading; a counter that went down was reset
                step = 0.0 if base is None else value if value < base else value - base
                totals[counter] = totals.get(counter, 0.0) + step
            memory.counters[replica.pod] = dict(replica.counters)
        memory.counters = {pod: values for pod, values in memory.counters.items() if pod in readable}
        memory.seen = {replica.pod for replica in load.replicas}
        utilisation = [r.gpu_utilization for r in load.replicas if r.gpu_utilization is not None]
        memory.samples.append(MetricSample(
            time=load.at, pending_requests=load.in_flight, request_success=totals.get("success", 0.0),
            queue_duration_us=totals.get("queue_us", 0.0), compute_duration_us=totals.get("compute_us", 0.0),
            ready_replicas=float(ready), starting_replicas=float(starting),
            gpu_utilization=100.0 * sum(utilisation) / len(utilisation) if utilisation else None,
            # one pod per replica: with pipeline stages, a stage's queue says little about where requests go
            replica_pending=(tuple(r.in_flight for r in load.replicas)
                             if tis.spec.parallelism.pipeline_parallel == 1 else None)))
        while memory.samples and memory.samples[0].time < now - HISTORY_S:
            memory.samples.popleft()
        return None

    def _load(self, namespace: str, name: str, pods: list[str], memory: _Memory, now: float) -> ServiceLoad:
        """The pods' load; a replica not scraped yet (new since the last reading) is left out rather than
        failing the reading, and counts from its first reading on."""
        try:
            return read_service_load(self.query, self.prometheus, namespace, name, pods, now)
        except MetricsUnavailable:
            known = [p for p in pods if p in memory.seen]
            if not known or known == pods:
                raise
            return read_service_load(self.query, self.prometheus, namespace, name, known, now)

    def _metrics_state(self, obj: Mapping[str, Any], memory: _Memory, problem: str | None, now: float) -> None:
        """MetricsAvailable, with an Event when it turns False after the threshold and when it recovers."""
        if problem is None:
            if memory.unavailable_reported:
                self.record_event(obj, "Normal", "MetricsAvailable", "metrics are read again; autoscaling resumes")
            memory.unavailable_since, memory.unavailable_reported = None, False
            load = memory.load
            count = len(load.replicas) if load else 0
            memory.observation = MetricsObservation(True, "MetricsRead",
                                                    f"current metrics of {count} replicas read from Prometheus")
            return
        if memory.unavailable_since is None:
            memory.unavailable_since = now
        if now - memory.unavailable_since + 1e-6 < self.settings.metrics_unavailable_after_s:
            return
        message = (f"no usable metrics for {now - memory.unavailable_since:.0f}s, replicas held: {problem}")[:4000]
        if not memory.unavailable_reported:
            self.record_event(obj, "Warning", "MetricsUnavailable", message)
            memory.unavailable_reported = True
        memory.observation = MetricsObservation(False, "MetricsUnavailable", message)

    # -- capacity ------------------------------------------------------------------------------------------

    def _fit(self, obj: Mapping[str, Any], tis: InferenceService, memory: _Memory, pods: Sequence[Mapping[str, Any]],
             replicas: Mapping[int, list[dict[str, Any]]], serving: Mapping[int, list[dict[str, Any]]],
             wanted: int) -> tuple[int, int | None]:
        """``wanted`` capped at what the cluster can place now, and the cap (None when all fit)."""
        draining = len(replicas) - len(serving)
        extra = wanted - len(serving) - draining  # draining replicas come back before new ones are made
        if extra <= 0:
            self._capacity(obj, memory, None, None)
            return wanted, None
        free = (i for i in range(len(replicas) + extra + 1) if i not in replicas)
        candidates = [(index, replica_pods(tis, index, self.settings.scheduler_name))
                      for index in (next(free) for _ in range(extra))]
        decisions = self.simulate([pod for _, members in candidates for pod in members])
        fits, why = 0, ""
        for _, members in candidates:
            made = [decisions.get(f"{p['metadata']['namespace']}/{p['metadata']['name']}") for p in members]
            if all(isinstance(d, (Bind, Preempt)) for d in made):
                fits += 1
                continue
            why = next((getattr(d, "reason", "") for d in made if not isinstance(d, (Bind, Preempt))), "")
            break
        if fits == extra:
            self._capacity(obj, memory, None, None)
            return wanted, None
        limit = len(serving) + draining + fits
        message = (f"the load needs {wanted} replicas but the free GPUs place {limit}: {why}"
                   if why else f"the load needs {wanted} replicas but the free GPUs place {limit}")
        self._capacity(obj, memory, message, limit)
        return max(limit, len(serving)), limit

    def _capacity(self, obj: Mapping[str, Any], memory: _Memory, message: str | None, limit: int | None) -> None:
        if limit is not None and limit != memory.capacity_limit:
            self.record_event(obj, "Warning", "InsufficientGPUs", message or "")
        memory.capacity, memory.capacity_limit = message, limit

    # -- scale-down: drain, then delete ----------------------------------------------------------------------

    def _drain(self, memory: _Memory, serving: Mapping[int, list[dict[str, Any]]], ready: Sequence[int], count: int,
               now: float) -> None:
        """Take ``count`` replicas out of the Service: ones not serving yet first (the newest), then the
        least loaded."""
        load = {r.pod: r.in_flight for r in (memory.load.replicas if memory.load else ())}
        candidates = dict(serving)
        chosen = []
        for _ in range(count):
            starting = sorted((i for i in candidates if i not in ready), reverse=True)
            if starting:
                index = starting[0]
            else:
                loads = {str(i): sum(load.get(p["metadata"]["name"], 0.0) for p in members)
                         for i, members in candidates.items()}
                index = int(choose_scale_down_victim(loads))
            chosen.append(index)
            del candidates[index]
        for index in chosen:
            for pod in serving[index]:
                self.drainer.start(pod, now)

    def _undrain(self, replicas: Mapping[int, list[dict[str, Any]]], serving: Mapping[int, list[dict[str, Any]]],
                 count: int) -> None:
        """Put draining replicas back into the Service: cheaper than starting new ones."""
        back = sorted((i for i in replicas if i not in serving))[:count]
        for index in back:
            for pod in replicas[index]:
                self.drainer.restore(pod)

    def _advance_drains(self, obj: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], now: float) -> None:
        """Delete every draining replica whose pods are all idle (or past the drain timeout)."""
        replicas = _replicas([p for p in pods if not p["metadata"].get("deletionTimestamp")])
        for index, members in sorted(replicas.items()):
            if not all(is_draining(p) for p in members):
                continue
            if not all(self.drainer.drained(pod, now) for pod in members):
                continue
            for pod in members:
                self.drainer.delete(pod)
            self.record_event(obj, "Normal", "Drained",
                              f"replica {index} ({', '.join(p['metadata']['name'] for p in members)}) "
                              f"drained and deleted")

    # -- helpers ---------------------------------------------------------------------------------------------

    def _pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        response = self.core.list_namespaced_pod(namespace, label_selector=selector_string(name),
                                                 _preload_content=False)
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    def _status_block(self, memory: _Memory, decision: Decision | None, action: str, reason: str,
                      limit: int | None, pods: Sequence[Mapping[str, Any]], now: float) -> dict[str, Any]:
        block: dict[str, Any] = {"action": action, "reason": reason[:4000], "lastDecisionTime": rfc3339(now)}
        if memory.scaled_at is not None:
            block["lastScaleTime"] = rfc3339(memory.scaled_at)
        if limit is not None:
            block["capacityLimitedTo"] = limit
        draining = sorted(p["metadata"]["name"] for p in pods if is_draining(p))
        if draining:
            block["draining"] = draining
        if decision is not None:
            seen = decision.observed
            values = {"requestRate": seen.arrival_rate, "forecastRequestRate": seen.forecast_rate,
                      "queueTimeMilliseconds": seen.queue_time_ms, "computeTimeMilliseconds": seen.service_time_ms,
                      "pendingRequests": seen.pending_requests, "signalValue": seen.signal_value,
                      "neededReplicas": seen.needed_replicas}
            block["metrics"] = {k: round(float(v), 3) for k, v in values.items() if math.isfinite(v) and v >= 0}
        return block


_NUMBER = re.compile(r"\d+(?:\.\d+)?")
STATUS_METRIC_TOLERANCE = 0.1
"""Relative change of a metric in ``status.autoscaler.metrics`` that is worth a status write (HPA's 10 %)."""


def status_differs(shown: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether the ``status.autoscaler`` block ``new`` says something ``shown`` does not: another action,
    scale time, count limit or set of draining replicas, another reason while holding (what is wrong has
    changed, not only a number in it, such as the age of the newest sample), or a metric that moved by more than ``STATUS_METRIC_TOLERANCE`` of its value and by more than
    1 in its own unit (a queue time wavering around zero does not count)."""
    keys = ("action", "lastScaleTime", "capacityLimitedTo", "draining")
    if any(shown.get(key) != new.get(key) for key in keys):
        return True
    if new.get("action") == "hold" and _NUMBER.sub("#", shown.get("reason") or "") != \
            _NUMBER.sub("#", new.get("reason") or ""):
        return True
    before, after = shown.get("metrics") or {}, new.get("metrics") or {}
    if before.keys() != after.keys():
        return True
    return any(abs(after[k] - before[k]) > max(STATUS_METRIC_TOLERANCE * abs(before[k]), 1.0) for k in after)


def _count(replicas: int) -> str:
    return f"{replicas} replica" if replicas == 1 else f"{replicas} replicas"


def _replicas(pods: Iterable[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = {}
    for pod in pods:
        try:
            index = int((pod["metadata"].get("labels") or {}).get(REPLICA_LABEL, ""))
        except ValueError:
            continue
        found.setdefault(index, []).append(pod)
    return found


def _replica_ready(members: Sequence[Mapping[str, Any]], tis: InferenceService) -> bool:
    return len(members) == tis.spec.parallelism.pipeline_parallel and all(pod_is_ready(p) for p in members)


def _autoscaler_status(status: Mapping[str, Any]) -> dict[str, Any] | None:
    """The parts of the stored status ``desired_replica_count`` reads, or None when the stored status does
    not come from the autoscaler."""
    if not status.get("autoscaler"):
        return None
    try:
        return {"desiredReplicas": int(status.get("desiredReplicas") or 0),
                "autoscaler": {"action": "hold", "reason": "restored", "lastDecisionTime": rfc3339(0)}}
    except (TypeError, ValueError):
        return None
