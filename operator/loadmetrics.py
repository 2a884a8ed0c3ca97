"""Triton's load, read from Prometheus: every PromQL query the operator sends lives here.

The autoscaler and the rebalancer decide from what Triton itself counts
(``nv_inference_*`` counters and gauges, ``nv_gpu_*`` where a GPU is present),
scraped by whatever Prometheus the cluster runs: kube-prometheus with a PodMonitor,
or the local cluster's file discovery. Series are matched by the namespace and pod
labels (their names are settings) and the replicas' stable pod names, so no
particular relabelling of pod labels is needed.

A missing metric is an error, never zero: an empty result, NaN or Inf, several
series where one is expected, a series without the pod label, or samples older
than ``stale_after_s`` raise ``MetricsUnavailable`` with a message saying what is
wrong. The caller then holds the replica count (it never scales down on bad data)
and reports MetricsAvailable=False.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COUNTERS = {
    "success": "nv_inference_request_success",
    "failure": "nv_inference_request_failure",
    "queue_us": "nv_inference_queue_duration_us",
    "compute_us": "nv_inference_compute_infer_duration_us",
}
"""Triton's cumulative counters, by the name the rest of Trireme uses for them."""
PENDING = "nv_inference_pending_request_count"
"""Requests waiting for a model instance (a gauge). Triton counts a request from when it is enqueued until a
backend is about to execute it: those running are not in it."""
GPU_UTILIZATION = "nv_gpu_utilization"
"""Share of time the GPU was busy, 0–1 (a gauge; absent when Triton runs without a GPU)."""


@dataclass(frozen=True)
class PrometheusSettings:
    """How to reach Prometheus and how its series are labelled."""

    url: str = "http://prometheus:9090"
    """Prometheus' base URL; the in-cluster name of a kube-prometheus install."""
    bearer_token_file: str = ""
    """File holding a bearer token sent with every query (for example a projected ServiceAccount token
    when Prometheus sits behind kube-rbac-proxy); empty sends none. Read at each query, so a rotated
    token is picked up."""
    ca_file: str = ""
    """CA bundle that signs Prometheus' TLS certificate; empty uses the system's."""
    insecure_skip_tls_verify: bool = False
    """Skip TLS verification: only for testing, never the default."""
    timeout_s: float = 5.0
    """Timeout of one query. Five seconds: long enough for a loaded Prometheus, short enough that a hung
    one cannot stall a control cycle for long."""
    namespace_label: str = "namespace"
    """Label carrying the pod's namespace: ``namespace`` with kube-prometheus PodMonitors and
    ServiceMonitors and with the local cluster."""
    pod_label: str = "pod"
    """Label carrying the pod's name: ``pod`` with kube-prometheus and the local cluster."""
    rate_window_s: int = 60
    """Window of ``rate()``: at least four scrapes at the usual 15 s interval, so one missed scrape does
    not distort the rate."""
    stale_after_s: float = 60.0
    """Samples older than this are stale: the replica stopped being scraped, so its last values say
    nothing about its load now."""


class MetricsUnavailable(RuntimeError):
    """Prometheus did not give a usable answer; the message says what is wrong and where to look."""


@dataclass(frozen=True)
class ReplicaLoad:
    """What Triton on one pod reports, at one instant."""

    pod: str
    counters: Mapping[str, float]
    """Cumulative values of ``COUNTERS`` (by their short names)."""
    rates: Mapping[str, float]
    """Per-second rates of ``COUNTERS`` over ``rate_window_s``."""
    pending: float
    """Requests waiting for a model instance (Triton's pending count: not those running)."""
    sample_age_s: float
    """Age of the pod's newest sample."""
    gpu_utilization: float | None = None
    """Mean utilisation of the pod's GPUs, 0–1; None without a GPU."""

    @property
    def requests_per_s(self) -> float:
        return self.rates["success"] + self.rates["failure"]

    @property
    def in_flight(self) -> float:
        """Requests waiting or running: the pending count plus the requests in compute, which Triton has no
        gauge for and are taken as their mean over the rate window (compute seconds per second)."""
        return self.pending + self.rates["compute_us"] / 1e6

    @property
    def queue_ms_per_request(self) -> float:
        """Mean queue time per completed request over the window; 0 when nothing completed."""
        return _per_request_ms(self.rates["queue_us"], self.rates["success"])

    @property
    def compute_ms_per_request(self) -> float:
        """Mean compute time per completed request over the window; 0 when nothing completed."""
        return _per_request_ms(self.rates["compute_us"], self.rates["success"])


@dataclass(frozen=True)
class ServiceLoad:
    """Every replica's load at one instant (``at``, seconds since the epoch)."""

    at: float
    replicas: tuple[ReplicaLoad, ...] = field(default=())

    def total(self, counter: str) -> float:
        """Sum of one counter over the replicas."""
        return sum(r.counters[counter] for r in self.replicas)

    def rate(self, counter: str) -> float:
        """Sum of one counter's rate over the replicas."""
        return sum(r.rates[counter] for r in self.replicas)

    @property
    def pending(self) -> float:
        return sum(r.pending for r in self.replicas)

    @property
    def in_flight(self) -> float:
        return sum(r.in_flight for r in self.replicas)

    @property
    def requests_per_s(self) -> float:
        return sum(r.requests_per_s for r in self.replicas)

    @property
    def queue_ms_per_request(self) -> float:
        return _per_request_ms(self.rate("queue_us"), self.rate("success"))

    @property
    def compute_ms_per_request(self) -> float:
        return _per_request_ms(self.rate("compute_us"), self.rate("success"))


def _per_request_ms(us_per_s: float, requests_per_s: float) -> float:
    return us_per_s / requests_per_s / 1000.0 if requests_per_s > 0 else 0.0


# -- PromQL ----------------------------------------------------------------------------------------------


def replica_pod_pattern(service: str) -> str:
    """Regular expression of the replica pod names of ``service`` (``<service>-r<i>[-p<j>]``)."""
    return re.escape(service) + r"-r[0-9]+(-p[0-9]+)?"


def selector(settings: PrometheusSettings, namespace: str, service: str) -> str:
    """The label matchers of one service's replica pods."""
    pattern = replica_pod_pattern(service).replace("\\", "\\\\")
    return f'{{{settings.namespace_label}="{namespace}",{settings.pod_label}=~"{pattern}"}}'


def queries(settings: PrometheusSettings, namespace: str, service: str) -> dict[str, str]:
    """Every query for one service, by name; each answers one series per pod."""
    match, by = selector(settings, namespace, service), f"sum by ({settings.pod_label})"
    window = f"{settings.rate_window_s}s"
    result = {}
    for name, metric in COUNTERS.items():
        result[name] = f"{by} ({metric}{match})"
        result[f"rate:{name}"] = f"{by} (rate({metric}{match}[{window}]))"
    result["pending"] = f"{by} ({PENDING}{match})"
    result["age"] = f"time() - max by ({settings.pod_label}) (timestamp({COUNTERS['success']}{match}))"
    result["gpu_utilization"] = f"avg by ({settings.pod_label}) ({GPU_UTILIZATION}{match})"
    return result


# -- reading ---------------------------------------------------------------------------------------------

Query = Callable[[str, float], list[dict[str, Any]]]
"""Runs one instant query at a time (seconds since the epoch) and returns Prometheus' ``result`` list."""


def prometheus_query(settings: PrometheusSettings) -> Query:
    """A ``Query`` over HTTP with prometheus-api-client, authenticated and verified as ``settings`` say."""
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    verify: bool | str = not settings.insecure_skip_tls_verify and (settings.ca_file or True)
    # No retries: the client's default retries a 5xx three times with back-off, which turns one query to a
    # Prometheus that answers 503 into several seconds; the next control cycle is the retry.
    no_retry = Retry(total=0, raise_on_status=False)

    def run(promql: str, at: float) -> list[dict[str, Any]]:
        headers = {}
        if settings.bearer_token_file:
            headers["Authorization"] = "Bearer " + Path(settings.bearer_token_file).read_text().strip()
        connection = PrometheusConnect(settings.url, headers=headers, disable_ssl=not verify,
                                       timeout=settings.timeout_s, retry=no_retry)
        if isinstance(verify, str):
            connection._session.verify = verify
        try:
            return connection.custom_query(promql, params={"time": f"{at:.3f}"})
        except Exception as exc:  # connection refused, timeout, HTTP error: all mean "no data"
            raise MetricsUnavailable(f"Prometheus at {settings.url} did not answer: {exc}") from exc
        finally:
            connection._session.close()

    return run


def read_service_load(query: Query, settings: PrometheusSettings, namespace: str, service: str,
                      pods: Sequence[str], at: float) -> ServiceLoad:
    """The load of ``pods`` (the service's running replicas) at ``at``; raises ``MetricsUnavailable``.

    Every pod must have fresh, finite values for every counter; GPU utilisation may be absent.
    """
    if not pods:
        return ServiceLoad(at, ())
    texts = queries(settings, namespace, service)
    answers = {name: _per_pod(query(promql, at), name, settings, namespace, service) for name, promql in texts.items()}
    replicas = []
    for pod in sorted(pods):
        missing = [name for name in texts if name != "gpu_utilization" and pod not in answers[name]]
        if missing:
            raise MetricsUnavailable(
                f"Prometheus has no {', '.join(sorted(missing))} for pod {namespace}/{pod}: check that it "
                f"scrapes the pod's metrics port (8002) and labels series with {settings.namespace_label!r} and "
                f"{settings.pod_label!r}")
        age = answers["age"][pod]
        if age > settings.stale_after_s:
            raise MetricsUnavailable(f"metrics of pod {namespace}/{pod} are stale: newest sample is {age:.0f} s old "
                                     f"(limit {settings.stale_after_s:.0f} s)")
        replicas.append(ReplicaLoad(
            pod=pod, counters={name: answers[name][pod] for name in COUNTERS},
            rates={name: answers[f"rate:{name}"][pod] for name in COUNTERS},
            pending=answers["pending"][pod], sample_age_s=age,
            gpu_utilization=answers["gpu_utilization"].get(pod)))
    return ServiceLoad(at, tuple(replicas))


def read_gpu_utilization(query: Query, settings: PrometheusSettings, at: float) -> dict[tuple[str, str], float]:
    """Mean utilisation (0–1) of each pod's GPUs, by (namespace, pod), for every pod whose Triton reports
    one: the rebalancer's measure of hot nodes. Empty where no Triton runs on a GPU (hot spots are then
    judged by replica counts alone); raises ``MetricsUnavailable`` on an answer it cannot trust."""
    ns, pod = settings.namespace_label, settings.pod_label
    found: dict[tuple[str, str], float] = {}
    for series in query(f"avg by ({ns}, {pod}) ({GPU_UTILIZATION})", at):
        labels = series.get("metric") or {}
        key = (labels.get(ns, ""), labels.get(pod, ""))
        if not all(key):
            raise MetricsUnavailable(f"{GPU_UTILIZATION}: a series lacks the {ns!r} or {pod!r} label ({labels}); "
                                     f"set the label settings to the labels your Prometheus uses")
        try:
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise MetricsUnavailable(f"{GPU_UTILIZATION} of pod {key[0]}/{key[1]}: malformed sample "
                                     f"{series!r}") from exc
        if math.isfinite(value):
            found[key] = min(1.0, max(0.0, value))
    return found


def _per_pod(result: list[dict[str, Any]], name: str, settings: PrometheusSettings, namespace: str,
             service: str) -> dict[str, float]:
    """One finite value per pod from an instant-query result, or ``MetricsUnavailable``."""
    values: dict[str, float] = {}
    for series in result:
        labels = series.get("metric") or {}
        pod = labels.get(settings.pod_label)
        if not pod:
            raise MetricsUnavailable(f"{name} of {namespace}/{service}: a series has no {settings.pod_label!r} "
                                     f"label ({labels}); set the pod label setting to the label your Prometheus uses")
        if pod in values:
            raise MetricsUnavailable(f"{name} of {namespace}/{service}: several series for pod {pod}")
        try:
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise MetricsUnavailable(f"{name} of pod {namespace}/{pod}: malformed sample {series!r}") from exc
        if not math.isfinite(value):
            raise MetricsUnavailable(f"{name} of pod {namespace}/{pod} is {value}, not a number Trireme can use")
        values[pod] = value
    return values
