"""How many replicas a service needs: the autoscaler's decisions, as pure functions.

The operator scrapes Triton's counters and gauges through Prometheus and the benchmark
(``trireme bench autoscale``) produces the same samples from a simulation; both call
:func:`decide` with them, the current replica count, the settings and the state returned by
the previous call. Time is an argument, never read from a clock, so the same code runs on
fake time in tests, on simulated time in the benchmark and on wall time in the operator.

Why this shape:

* **A capacity model instead of a ratio.** HPA multiplies the replica count by
  ``metric / target`` and creeps towards the answer over several periods. Here every
  decision measures the arrival rate and the mean service time from the counters, treats the
  replicas as one pool of ``replicas × slots`` servers (Triton runs ``slots`` requests at once
  per replica behind a load-aware gateway) and asks the Erlang-C formula for the fewest servers
  that keep the share of requests waiting longer than the target under a small budget; behind a
  plain Service (``Dispatch.PER_REPLICA``) each replica is its own queue instead, and with
  ``Dispatch.AUTO`` the replicas' own gauges tell which (requests waiting at one replica while
  another has a free slot never happen behind a load-aware gateway). One decision jumps to the
  count the load needs.
* **Learned, not configured.** Service time, concurrency per replica and the replicas' start-up
  delay come from the service's own metrics (:class:`CapacityModel`), as does a correction of
  the queueing formula against the queue time actually observed; the only input a user must
  give is the objective.
* **Ahead by the start-up delay.** A replica asked for now serves only after it starts, so the
  arrival rate is forecast over that horizon from its recent trend, and a replica is kept
  rather than removed when it would probably be needed again before a new one could start (the
  scale-down window defaults to three quarters of the learned start-up delay). When a scale-down
  is undone while requests queue (the replicas were asked for again before a new one could have
  started), the window doubles, up to four times, and shrinks back over ten minutes: a load whose
  bursts come back sooner than a replica starts keeps its replicas through the gaps.
* **Headroom from the service's own burstiness; steps followed at once.** Scaling up sizes for the
  forecast plus one standard error of the rate level; the error comes from how much the 5 s rates scatter
  from one scrape to the next, so a bursty service keeps more spare capacity than a smooth one. When the
  two newest scrapes are more than twice the tolerance away from the forecast, the load has stepped: a
  rise is sized for at once, and a fall replaces the forecast, so the scale-down window starts counting
  from the drop instead of from when the 30 s level has caught up with it. The forecast never runs more
  than the tolerance ahead of the newest rate: a minute's rise carried a start-up delay ahead mostly
  overshoots. Scaling down needs the tolerance below the forecast and never goes under what scaling up
  asks for.
* **Never worse on bad data.** Missing, stale, NaN/Inf, negative, reset or duplicated series
  give a *hold*: the count never goes down on metrics that cannot be trusted, and the caller
  reports MetricsAvailable=False.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

__all__ = [
    "AutoscalerSettings", "AutoscalerState", "CapacityModel", "Decision", "Dispatch", "MetricSample", "Observed",
    "ScaleDownPolicy", "ScaleUpPolicy", "Signal", "choose_scale_down_victim", "decide", "effective_dispatch",
    "replicas_for_queue_time", "servers_for_queue_time", "stranded_requests",
]


class Signal(StrEnum):
    """The metric the autoscaler keeps at its target (the same names as the InferenceService API)."""

    QUEUE_TIME = "queueTime"
    """Queue time in ms: replicas are sized by the capacity model so requests wait less than the target."""
    PENDING_REQUESTS = "pendingRequests"
    """Requests waiting or running per ready replica (HPA-style ratio)."""
    REQUEST_RATE = "requestRate"
    """Requests per second per replica (HPA-style ratio)."""
    GPU_UTILIZATION = "gpuUtilization"
    """Average GPU utilisation of the replicas in percent (HPA-style ratio)."""


class Dispatch(StrEnum):
    """How requests reach the replicas, which decides how much queueing a replica count gives."""

    POOLED = "pooled"
    """Requests wait in one queue and go to whichever replica has a free slot first (a load-aware gateway
    sending each request to the replica with the fewest outstanding): the replicas' slots act as one pool."""
    PER_REPLICA = "perReplica"
    """Each request picks a replica when it arrives and waits in that replica's queue (a plain Kubernetes
    Service: random or round-robin per request or connection): each replica queues on its own, so the same
    load needs more replicas than pooled."""
    AUTO = "auto"
    """Pooled until the replicas' own gauges show otherwise: once requests have waited at one replica while
    another had a free slot (which a load-aware gateway never lets happen) in ``stranded_scrapes`` scrapes
    within ``stranded_window_s``, per replica from then on (:func:`stranded_requests`)."""


# -- inputs ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSample:
    """One scrape of one service, summed over its replicas, as Prometheus returns it.

    Counters are cumulative (they only grow, except when they reset); gauges are instantaneous.
    ``None`` means the query returned nothing. ``several_series`` names the metrics whose query
    returned more than one series (a label set that does not aggregate to one service): such a
    sample is not trusted.
    """

    time: float
    """Scrape time in seconds (any epoch, the same as ``now``)."""
    pending_requests: float | None
    """Requests waiting or running (gauge)."""
    request_success: float | None
    """Completed requests (counter, like nv_inference_request_success)."""
    queue_duration_us: float | None
    """Sum of the time requests waited in the queue, µs (counter, like nv_inference_queue_duration_us)."""
    compute_duration_us: float | None
    """Sum of the time requests were computed, µs (counter, like nv_inference_compute_infer_duration_us)."""
    ready_replicas: float | None
    """Replicas serving (gauge)."""
    starting_replicas: float | None = 0.0
    """Replicas launched but not ready yet (gauge)."""
    gpu_utilization: float | None = None
    """Average GPU utilisation of the ready replicas in percent (gauge); optional."""
    several_series: tuple[str, ...] = ()
    """Metrics whose query returned several series."""
    replica_pending: tuple[float, ...] | None = None
    """Requests waiting or running on each ready replica (gauges), optional: with ``Dispatch.AUTO`` they show
    whether requests wait at one replica while another has a free slot."""

    REQUIRED = ("pending_requests", "request_success", "queue_duration_us", "compute_duration_us",
                "ready_replicas", "starting_replicas")


@dataclass(frozen=True)
class ScaleUpPolicy:
    """How fast replicas are added."""

    stabilization_window_s: float = 0.0
    """Acts on the lowest recommendation of this window. 0: at once, because a missing replica costs
    requests while a spare one only costs GPU time until the scale-down window ends."""
    max_change_replicas: int = 4
    """Replicas that may always be added per period (as HPA: max(100 %, 4 pods))."""
    max_change_percent: float = 100.0
    """Or this share of the replicas at the start of the period, whichever is more: doubling per
    period follows any realistic ramp while bounding a runaway from a wrong metric."""
    period_s: float = 15.0
    """Length of the rate-limit period."""


@dataclass(frozen=True)
class ScaleDownPolicy:
    """How fast replicas are removed."""

    stabilization_window_s: float | None = None
    """Acts on the highest recommendation of this window. ``None``: ``startup_share`` of the learned
    start-up delay of a replica (at least ``min_window_s``): removing a replica that is needed again
    sooner than a new one could start saves nothing and risks the objective."""
    min_window_s: float = 30.0
    """Lower bound of the automatic window: a few scrapes, so one noisy rate does not remove replicas."""
    startup_share: float = 0.75
    """The automatic window is this share of the learned start-up delay. The whole delay would be the
    break-even (a replica removed and needed again within it saves nothing); the forecast already looks a
    start-up delay ahead, so three quarters of it is enough of the past to trust a drop."""
    max_window_growth: float = 4.0
    """The automatic window doubles, up to this factor, each time a scale-down is undone: replicas asked for
    again within a start-up delay plus the window while requests queued (``growth_queue_share``). A load
    whose bursts come back sooner than a replica can start (so every scale-down between them costs the next
    burst) then keeps its replicas through the gaps, as HPA's five-minute window would, while a load whose
    scale-downs hold keeps the short window. 1: the window never grows."""
    growth_queue_share: float = 0.2
    """A scale-up undoes a scale-down only when the mean queue time over the rate window is at least this
    share of the objective (the queueTime target, or ``latency_slo_ms`` for the other signals): replicas
    added back while nobody waited cost nothing but the start, and the usual ups and downs of a load around
    a replica boundary must not grow the window."""
    growth_memory_s: float = 600.0
    """A grown window shrinks back towards the base with this time constant: ten minutes without undone
    scale-downs and the service is trusted to have calmed down."""
    max_change_replicas: int = 2
    """Replicas that may always be removed per period."""
    max_change_percent: float = 25.0
    """Or this share of the replicas at the start of the period, whichever is more: a drop in load is
    followed within a minute or two, while a metric glitch cannot empty the service."""
    period_s: float = 15.0
    """Length of the rate-limit period."""


@dataclass(frozen=True)
class AutoscalerSettings:
    """Everything a decision depends on besides metrics and state.

    :meth:`for_queue_time` is the one configuration the benchmark uses: its only input is the
    queue-time objective.
    """

    min_replicas: int = 1
    """Fewest replicas."""
    max_replicas: int = 32
    """Most replicas."""
    signal: Signal = Signal.QUEUE_TIME
    """The metric kept at the target."""
    target: float = 100.0
    """Target in the signal's unit. For queueTime, the queue time (ms) requests should stay under:
    replicas are sized so at most ``miss_budget`` of requests wait longer, which holds the average far
    below it."""
    miss_budget: float = 0.01
    """Share of requests the capacity model lets wait longer than a queueTime target when the rate is as
    forecast: the usual 99 % objective. Forecast errors go both ways, and the scale-down window and
    hysteresis (``tolerance``) keep spare replicas most of the time, so the share realised is lower."""
    latency_slo_ms: float | None = None
    """Average time per request (queue + compute) the service should stay under; when the observed
    average exceeds it, replicas are added whatever the signal says."""
    tolerance: float = 0.1
    """Relative change of the signal (or of demand, for queueTime) ignored, as HPA's 10 %: keeps the
    count still when load moves a little around a boundary."""
    slots_per_replica: int | None = None
    """Requests a replica serves at once (Triton instance count), when known from the model config;
    otherwise learned from the metrics (busy concurrency per replica while requests queue)."""
    gpu_utilization_guard: float = 90.0
    """GPU utilisation (%) above which replicas are never removed, whatever the signal says."""
    stale_after_s: float = 30.0
    """The newest sample must be at most this old: six missed 5 s scrapes mean the data is not current."""
    rate_window_s: float = 30.0
    """Window of the arrival-rate level: six 5 s scrapes (a 2 % error at 100 req/s), while the trend term
    makes up for the 15 s it lags on a ramp."""
    trend_window_s: float = 60.0
    """Window over which the arrival-rate trend is fitted: long enough that one noisy scrape does not
    make a trend, short enough to see a ramp within a minute."""
    calibration_prior: float = 20.0
    """Weight, in request-seconds of predicted waiting, of the queueing model before any evidence: a few
    minutes of moderate load before the learned correction moves far from 1."""
    calibration_memory: float = 200.0
    """Evidence is capped at this weight so the correction keeps following the service (tens of minutes)."""
    trend_confidence: float = 1.0
    """Standard errors taken off the fitted trend before it is used: Poisson noise in 5 s rates makes
    slopes that, stretched over a minute's horizon, would otherwise add replicas for nothing."""
    forecast_cap: float | None = 0.1
    """How far the forecast may run ahead of the newest rate (the rate of the last ``surge_window_s``, or
    the level when that is higher), as a share of it; ``None``: no cap. A trend fitted over a minute and
    carried a start-up delay ahead mostly overshoots on real traffic, where a minute's rise is as often a
    burst that ends as a ramp that goes on; while a ramp does go on, the newest rate keeps rising and
    every decision raises the cap with it (a rise beyond the band is sized for at once). The tolerance's
    10 %: within it the forecast moves the count no more than noise would."""
    rate_confidence: float = 1.25
    """Scale of the arrival rate's uncertainty that scaling up sizes for (scaling down never goes below
    that count): the miss share is averaged over a normal spread of the rate of this many standard
    deviations (:func:`servers_for_queue_time`), rather than sized for the forecast alone. The deviation
    has two parts, both from the scrape-to-scrape scatter of the 5 s rates over the trend window: the
    level's standard error, and how far the average of one forecast horizon of arrivals strays from the
    level. A bursty service (scatter well beyond Poisson noise) thus keeps more headroom than a smooth
    one, a short start-up delay (few seconds to average bursts over) more than a long one, and a loose
    queue-time target, whose queueing headroom is thin, gains more from it than a tight one; a ramp or a
    step of the load does not count as scatter. A replica too few costs requests until the next one is
    ready, a replica too many only GPU time until the scale-down window ends. 1.25 rather than 1: averaging
    a tight target's miss share over ±1 deviation adds less than the one standard error of the level that
    was added to the rate before, and lost requests on the longest ramps (docs/benchmarks.md)."""
    surge_window_s: float = 10.0
    """When the arrival rate of the scrape intervals that began within this window (two 5 s scrapes) is more
    than twice the tolerance away from the forecast, the load has stepped. Up: scaling up sizes for the newest
    rate at once instead of after the rate window has caught up with it. Down: the newest rate replaces the
    forecast, so the scale-down window runs from the drop, not from when the 30 s level shows it (a fall is
    judged against the level carried to the newest scrape by the trend). One glitching scrape cannot do either
    on its own, and a fall still has to last the whole scale-down window. Smaller changes are left to the level: inside the band where the
    count is held still, acting on a 10 s rate would add a replica on one burst and remove it on the level
    (flapping). At the rates where one replica matters (tens of requests per second) a 10 s rate is within a
    few percent."""
    dispatch: Dispatch = Dispatch.POOLED
    """How requests reach the replicas (queueTime): the queueing model sizes one pool of ``replicas × slots``
    servers, or that many replicas each serving its share of the arrivals on its own slots; ``auto``: pooled
    until the replicas' gauges show requests waiting beside free slots."""
    stranded_scrapes: int = 3
    """``Dispatch.AUTO``: scrapes, within ``stranded_window_s``, in which requests waited at one replica while
    another had a free slot, after which the replicas are sized as queueing on their own. More than one, so
    that a scrape which caught the replicas' gauges a moment apart cannot do it alone."""
    stranded_window_s: float = 60.0
    """``Dispatch.AUTO``: the window those scrapes must fall in."""
    startup_delay_prior_s: float = 30.0
    """Start-up delay assumed until one has been observed."""
    decision_lag_s: float = 5.0
    """Added to the forecast horizon: one scrape interval, until the next decision can correct this one."""
    scale_up: ScaleUpPolicy = ScaleUpPolicy()
    scale_down: ScaleDownPolicy = ScaleDownPolicy()

    @classmethod
    def for_queue_time(cls, target_ms: float, *, min_replicas: int = 1, max_replicas: int = 32,
                       slots_per_replica: int | None = None, dispatch: Dispatch = Dispatch.POOLED
                       ) -> AutoscalerSettings:
        """The fixed configuration: queueTime signal, everything else learned or defaulted (``dispatch`` says
        how requests reach the replicas, as the spec does)."""
        return cls(min_replicas=min_replicas, max_replicas=max_replicas, signal=Signal.QUEUE_TIME,
                   target=target_ms, slots_per_replica=slots_per_replica, dispatch=dispatch)


# -- state -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapacityModel:
    """What one replica of this service can do, learned from its own metrics."""

    service_time_s: float | None = None
    """Mean compute time per request (compute-time sum / completions), smoothed."""
    slots_per_replica: float | None = None
    """Busy concurrency per ready replica seen while requests queued: how many run at once."""
    startup_delay_s: float | None = None
    """Seconds from launch to ready, the most of the recent observations."""
    startup_observations: tuple[float, ...] = ()
    """Recent start-up delays, newest last (the model uses their median)."""
    queue_factor: float = 1.0
    """Observed mean queue time ÷ the queueing model's prediction (smoothed; >1: the model is
    optimistic for this service, <1: pessimistic, e.g. service times less variable than exponential)."""
    queue_evidence: float = 0.0
    """Weight of the evidence behind ``queue_factor`` (predicted waiting, request-seconds)."""


@dataclass(frozen=True)
class AutoscalerState:
    """Everything the autoscaler remembers between decisions; returned with each decision."""

    recommendations: tuple[tuple[float, int, int], ...] = ()
    """(time, replicas for scaling up, replicas for scaling down) recommended by recent decisions, for the
    stabilisation windows."""
    changes: tuple[tuple[float, int, int], ...] = ()
    """(time, from, to) of recent changes of the desired count, for the rate limits."""
    last_scale_up: float | None = None
    last_scale_down: float | None = None
    desired: int | None = None
    """The count of the last decision."""
    first_decision: float | None = None
    """Time of the first decision with trusted metrics: until a scale-down window has passed since, the
    history is too short to show that lower demand lasts (after an operator restart, say)."""
    capacity: CapacityModel = CapacityModel()
    last_sample_time: float | None = None
    """Newest sample already folded into the capacity model."""
    launches: tuple[float, ...] = ()
    """Times of this autoscaler's scale-ups, one per replica added and not yet seen ready, oldest first."""
    last_ready: float | None = None
    last_starting: float | None = None
    window_growth: float = 1.0
    """Factor of the automatic scale-down window (``ScaleDownPolicy.max_window_growth``)."""
    window_growth_at: float | None = None
    """When ``window_growth`` was last updated (it decays from there)."""
    undone_scale_down: float | None = None
    """Time of the last scale-down already counted as undone (each counts once)."""
    stranded_at: tuple[float, ...] = ()
    """``Dispatch.AUTO``: times of recent scrapes in which requests waited beside a free slot."""
    seen_per_replica: bool = False
    """``Dispatch.AUTO``: the replicas were seen queueing on their own; sized per replica from then on."""


@dataclass(frozen=True)
class Observed:
    """The metric values a decision used (for the reason, status and events)."""

    arrival_rate: float = math.nan
    """Requests per second arriving, over the rate window."""
    arrival_trend: float = 0.0
    """Change of the arrival rate, requests per second per second."""
    forecast_rate: float = math.nan
    """Arrival rate expected at the forecast horizon."""
    service_time_ms: float = math.nan
    queue_time_ms: float = math.nan
    """Mean queue time per request completed in the rate window."""
    pending_requests: float = math.nan
    ready_replicas: float = math.nan
    starting_replicas: float = math.nan
    slots_per_replica: float = math.nan
    startup_delay_s: float = math.nan
    horizon_s: float = math.nan
    signal_value: float = math.nan
    """The signal in its own unit (queueTime: mean queue time in ms)."""
    needed_replicas: float = math.nan
    """Replicas the capacity model (or the signal ratio) asks for before windows and limits."""
    sizing_rate: float = math.nan
    """queueTime: the arrival rate scaling up sized for (the forecast, or the newest rate after a fall or
    after a rise)."""
    rate_spread: float = math.nan
    """queueTime: standard deviation of that rate the miss share was averaged over (req/s)."""
    dispatch: str = ""
    """queueTime: the dispatch the replicas were sized for, ``pooled`` or ``perReplica`` (with ``auto``, what
    the gauges have shown so far)."""


@dataclass(frozen=True)
class Decision:
    """What to do now: the replica count, why, and the state for the next call."""

    desired_replicas: int
    action: str
    """``scale-up``, ``scale-down``, ``steady`` or ``hold`` (metrics not trusted: never decreases)."""
    reason: str
    metrics_available: bool
    observed: Observed
    state: AutoscalerState = field(repr=False)


# -- queueing model ------------------------------------------------------------------------------------------


_NORMAL_POINTS = ((-2.856970013872806, 0.011257411327720689), (-1.355626179974266, 0.22207592200561266),
                  (0.0, 0.5333333333333333), (1.355626179974266, 0.22207592200561266),
                  (2.856970013872806, 0.011257411327720689))
"""5-point Gauss–Hermite rule for the standard normal distribution: (point, weight)."""


def servers_for_queue_time(arrival_rate: float, service_time_s: float, target_s: float, miss_budget: float,
                           queue_factor: float = 1.0, limit: int = 100_000, rate_spread: float = 0.0) -> int:
    """Fewest servers such that at most ``miss_budget`` of requests wait longer than ``target_s``.

    Erlang C for M/M/n: P(wait > t) = C(n, a) · exp(−(n − a)·t / S), with a = λ·S. ``queue_factor``
    stretches the waiting time (M/G/n waits scale with (1 + cv²)/2), as learned by the capacity model.
    ``rate_spread``: standard deviation of the arrival rate when it is not known exactly; the miss share is
    then averaged over a normal distribution of the rate (a rate at or above what the servers can serve
    misses entirely). The count this adds is largest where the queueing headroom is thin — a loose target —
    and smallest where a tight target already keeps many spare servers.
    """
    if arrival_rate <= 0 or service_time_s <= 0:
        return 0
    points = ([(arrival_rate + rate_spread * z, w) for z, w in _NORMAL_POINTS] if rate_spread > 0
              else [(arrival_rate, 1.0)])
    loads = [max(0.0, rate) * service_time_s for rate, _ in points]
    erlang_b = [1.0] * len(points)
    for n in range(1, limit + 1):
        miss = 0.0
        for i, (load, (_, weight)) in enumerate(zip(loads, points)):
            if load <= 0:
                continue
            erlang_b[i] = load * erlang_b[i] / (n + load * erlang_b[i])
            if n <= load:
                miss += weight
                continue
            erlang_c = _erlang_c(n, load, erlang_b[i])
            miss += weight * min(1.0, erlang_c * math.exp(-(n - load) * target_s / (service_time_s * queue_factor)))
        if miss <= miss_budget:
            return n
    return limit


def replicas_for_queue_time(arrival_rate: float, service_time_s: float, target_s: float, miss_budget: float,
                            slots: int, dispatch: Dispatch = Dispatch.POOLED, queue_factor: float = 1.0,
                            limit: int = 10_000, rate_spread: float = 0.0) -> int:
    """Fewest replicas of ``slots`` slots each such that at most ``miss_budget`` of requests wait longer
    than ``target_s`` (see :func:`servers_for_queue_time` for the arguments they share). Pooled: the
    replicas' slots serve one queue. Per replica: each replica is its own M/M/``slots`` queue fed a
    ``1/replicas`` share of the arrivals."""
    if arrival_rate <= 0 or service_time_s <= 0:
        return 0
    if dispatch is Dispatch.POOLED:
        servers = servers_for_queue_time(arrival_rate, service_time_s, target_s, miss_budget, queue_factor,
                                         limit * slots + 1, rate_spread)
        return math.ceil(servers / slots)
    points = ([(arrival_rate + rate_spread * z, w) for z, w in _NORMAL_POINTS] if rate_spread > 0
              else [(arrival_rate, 1.0)])
    for replicas in range(1, limit + 1):
        miss = sum(weight * _miss_share(max(0.0, rate) / replicas * service_time_s, slots,
                                        target_s / (service_time_s * queue_factor))
                   for rate, weight in points)
        if miss <= miss_budget:
            return replicas
    return limit


def _miss_share(load: float, servers: int, target_in_service_times: float) -> float:
    """Share of requests an M/M/``servers`` queue offered ``load`` Erlangs keeps waiting longer than the
    target (given in mean service times): Erlang C · exp(−(n − a)·t)."""
    if load <= 0:
        return 0.0
    if servers <= load:
        return 1.0
    erlang_c = _erlang_c(servers, load, _erlang_b(servers, load))
    return min(1.0, erlang_c * math.exp(-(servers - load) * target_in_service_times))


def _erlang_b(servers: int, load: float) -> float:
    """Erlang B: the share of arrivals that would find all ``servers`` busy with no queue."""
    erlang_b = 1.0
    for n in range(1, servers + 1):
        erlang_b = load * erlang_b / (n + load * erlang_b)
    return erlang_b


def _erlang_c(servers: int, load: float, erlang_b: float) -> float:
    """Erlang C from Erlang B: the share of arrivals that wait (``load`` < ``servers``)."""
    return servers * erlang_b / (servers - load * (1.0 - erlang_b))


def mean_wait_s(arrival_rate: float, service_time_s: float, servers: float) -> float:
    """Mean queue time of M/M/n (Erlang C); infinite when the servers cannot keep up."""
    if arrival_rate <= 0 or service_time_s <= 0:
        return 0.0
    n = int(servers)
    load = arrival_rate * service_time_s
    if n <= load:
        return math.inf
    if n > load + 10 * math.sqrt(load) + 20:  # waiting is negligible this far above the load
        return 0.0
    return _erlang_c(n, load, _erlang_b(n, load)) * service_time_s / (n - load)


# -- dispatch ------------------------------------------------------------------------------------------------


def stranded_requests(replica_pending: Sequence[float], slots: float) -> float:
    """Requests waiting at some replicas that free slots at others could be running now: the lesser of the
    requests beyond ``slots`` and the free slots, summed over the replicas. A load-aware gateway (pooled
    dispatch) keeps it at 0; replicas that each queue on their own (a plain Service) do not."""
    waiting = sum(max(0.0, p - slots) for p in replica_pending)
    free = sum(max(0.0, slots - p) for p in replica_pending)
    return min(waiting, free)


def effective_dispatch(settings: AutoscalerSettings, state: AutoscalerState) -> Dispatch:
    """The dispatch the queueing model sizes for: the setting's, or with ``auto`` what has been seen."""
    if settings.dispatch is Dispatch.AUTO:
        return Dispatch.PER_REPLICA if state.seen_per_replica else Dispatch.POOLED
    return settings.dispatch


def _watch_dispatch(state: AutoscalerState, samples: Sequence[MetricSample], settings: AutoscalerSettings
                    ) -> AutoscalerState:
    """``Dispatch.AUTO``: note the fresh scrapes whose replicas left requests waiting beside a free slot, and
    switch to per-replica sizing once enough fall within the window. The queueing model's calibration starts
    over then: what it learned was the pooled model's error."""
    if settings.dispatch is not Dispatch.AUTO or state.seen_per_replica:
        return state
    slots = _sizing_slots(settings, state.capacity)
    if not slots:
        return state
    seen = state.last_sample_time
    stranded = state.stranded_at + tuple(s.time for s in samples
                                         if (seen is None or s.time > seen) and s.replica_pending
                                         and all(_finite(p) and p >= 0 for p in s.replica_pending)
                                         and stranded_requests(s.replica_pending, slots) >= 1.0)
    newest = samples[-1].time if samples else 0.0
    stranded = tuple(t for t in stranded if t > newest - settings.stranded_window_s - 1e-6)
    if len(stranded) < settings.stranded_scrapes:
        return replace(state, stranded_at=stranded)
    capacity = replace(state.capacity, queue_factor=1.0, queue_evidence=0.0)
    return replace(state, stranded_at=(), seen_per_replica=True, capacity=capacity)


def _sizing_slots(settings: AutoscalerSettings, model: CapacityModel) -> float | None:
    """Slots per replica the queueing model sizes for: the configured count, else the learned concurrency
    rounded to at least one; None while neither is known."""
    if settings.slots_per_replica:
        return float(settings.slots_per_replica)
    learned = model.slots_per_replica
    return float(max(1, round(learned))) if learned else None


# -- victims -------------------------------------------------------------------------------------------------


def choose_scale_down_victim(loads: Mapping[str, float] | Iterable[tuple[str, float]]) -> str:
    """The replica to drain when scaling down: the least loaded (outstanding requests), ties by name.

    It has the fewest requests to finish, so its drain is the shortest and disturbs the fewest users.
    """
    items = list(loads.items()) if isinstance(loads, Mapping) else list(loads)
    if not items:
        raise ValueError("no replicas to choose from")
    return min(items, key=lambda item: (item[1], item[0]))[0]


# -- decisions -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Interval:
    start: float
    end: float
    completions: float
    arrivals: float
    queue_s: float
    compute_s: float
    busy: float
    """Mean requests in service over the interval (compute seconds / length)."""
    queued_at_end: float


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value >= 0


def _problem(samples: Sequence[MetricSample], now: float, settings: AutoscalerSettings) -> str | None:
    """Why the samples cannot be trusted, or None."""
    if len(samples) < 2:
        return "fewer than two samples" if samples else "no samples"
    for sample in samples:
        if sample.several_series:
            return f"several series for {', '.join(sorted(sample.several_series))}"
        for name in MetricSample.REQUIRED:
            value = getattr(sample, name)
            if value is None:
                return f"{name} missing"
            if not _finite(value):
                return f"{name} is {value}"
        if sample.gpu_utilization is not None and not _finite(sample.gpu_utilization):
            return f"gpu_utilization is {sample.gpu_utilization}"
    newest = samples[-1].time
    if not math.isfinite(newest):
        return "sample time is not finite"
    if now - newest > settings.stale_after_s:
        return f"newest sample is {now - newest:.0f}s old (stale after {settings.stale_after_s:.0f}s)"
    if newest > now + settings.stale_after_s:
        return "samples from the future"
    return None


def _intervals(samples: Sequence[MetricSample]) -> list[_Interval]:
    """Increments between consecutive samples; an interval where a counter went down (a reset, or a
    replica's series leaving the sum) is dropped rather than guessed."""
    out = []
    for before, after in zip(samples, samples[1:]):
        dt = after.time - before.time
        if dt <= 0:
            continue
        done = after.request_success - before.request_success  # type: ignore[operator]
        queue_us = after.queue_duration_us - before.queue_duration_us  # type: ignore[operator]
        compute_us = after.compute_duration_us - before.compute_duration_us  # type: ignore[operator]
        if done < 0 or queue_us < 0 or compute_us < 0:
            continue
        pending_change = after.pending_requests - before.pending_requests  # type: ignore[operator]
        busy = compute_us / 1e6 / dt
        out.append(_Interval(before.time, after.time, done, max(0.0, done + pending_change), queue_us / 1e6,
                             compute_us / 1e6, busy, max(0.0, after.pending_requests - busy)))  # type: ignore[operator]
    return out


def _learn(model: CapacityModel, state: AutoscalerState, samples: Sequence[MetricSample],
           intervals: Sequence[_Interval], settings: AutoscalerSettings, dispatch: Dispatch
           ) -> tuple[CapacityModel, AutoscalerState]:
    """Fold samples newer than the state into the capacity model and the start-up tracker; ``dispatch`` is
    the one the queueing model is calibrated for."""
    seen = state.last_sample_time
    fresh = [s for s in samples if seen is None or s.time > seen]
    launches = list(state.launches)
    observations = list(model.startup_observations)
    last_ready, last_starting, last_time = state.last_ready, state.last_starting, seen
    for sample in fresh:
        ready, starting = float(sample.ready_replicas), float(sample.starting_replicas)  # type: ignore[arg-type]
        if last_ready is not None and last_starting is not None:
            # Launch times come from this autoscaler's own scale-ups (``_finish``); a replica seen ready
            # at a scrape became ready since the previous one, so a delay errs long by at most a scrape.
            became_ready = int(round(max(0.0, ready - last_ready)))
            added = sum(1 for t in launches if last_time is not None and last_time <= t < sample.time)
            for _ in range(became_ready):
                if launches and launches[0] < sample.time:
                    observations.append(sample.time - launches.pop(0))
            cancelled = int(round(max(0.0, last_starting + added - became_ready - starting)))
            for _ in range(cancelled):  # scaled down before they were ready: the newest go first
                if launches:
                    launches.pop()
        last_ready, last_starting, last_time = ready, starting, sample.time
    observations = observations[-9:]
    startup = sorted(observations)[len(observations) // 2] if observations else None  # median: robust

    service_time = model.service_time_s
    slots = model.slots_per_replica
    factor, evidence = model.queue_factor, model.queue_evidence
    by_end = {s.time: s for s in samples}
    for interval in intervals:
        if seen is not None and interval.end <= seen:
            continue
        if interval.completions > 0:
            measured = interval.compute_s / interval.completions
            weight = min(1.0, interval.completions / 200.0)
            service_time = measured if service_time is None else service_time + 0.3 * weight * (measured - service_time)
        after = by_end.get(interval.end)
        ready = float(after.ready_replicas) if after else 0.0  # type: ignore[arg-type]
        if after is not None and ready > 0 and interval.queue_s > 0.05 * interval.completions * (service_time or 0) \
                and interval.queued_at_end >= ready:
            per_replica = min(interval.busy / ready, _MAX_SLOTS)
            slots = per_replica if slots is None else max(slots, per_replica)
        # Calibrate the queueing model: predicted vs observed waiting, in request-seconds.
        servers = _servers(ready, slots, settings)
        if service_time and servers and interval.completions > 0 and ready > 0:
            rate = interval.arrivals / (interval.end - interval.start)
            if dispatch is Dispatch.PER_REPLICA:  # each replica waits on its own share
                predicted = mean_wait_s(rate / ready, service_time, servers / ready) * interval.completions
            else:
                predicted = mean_wait_s(rate, service_time, servers) * interval.completions
            if math.isfinite(predicted) and predicted > 0.01 and interval.queued_at_end < servers:
                observed = interval.queue_s
                weight = min(predicted, settings.calibration_memory)
                evidence = min(evidence + weight, settings.calibration_memory)
                step = weight / (evidence + settings.calibration_prior)  # < 1: moves towards, never past
                ratio = min(2.0, max(_QUEUE_FACTOR_FLOOR[dispatch], observed / predicted))
                factor = math.exp(math.log(factor) + step * (math.log(ratio) - math.log(factor)))
    model = replace(model, service_time_s=service_time, slots_per_replica=slots, startup_delay_s=startup,
                    startup_observations=tuple(observations), queue_factor=factor, queue_evidence=evidence)
    state = replace(state, launches=tuple(launches), last_ready=last_ready, last_starting=last_starting,
                    last_sample_time=samples[-1].time if samples else seen)
    return model, state


_QUEUE_FACTOR_FLOOR = {Dispatch.POOLED: 0.5, Dispatch.PER_REPLICA: 0.15}
"""Lowest queue factor the calibration learns. Waits scale with (ca² + cs²)/2 against the model's Poisson
arrivals and exponential service (Allen–Cunneen). Pooled, the arrivals are Poisson (ca² = 1), so no service
is better than half the model. Per replica, the model assumes random splitting, but round-robin makes each
replica's arrivals nearly regular (ca² = 1/replicas): waits can be a small fraction of the model's."""

def _queueing(dispatch: Dispatch, settings: AutoscalerSettings) -> str:
    """How the reason names the dispatch the replicas were sized for."""
    if dispatch is Dispatch.POOLED:
        return ""
    seen = (" (requests were seen waiting at one replica while another had a free slot)"
            if settings.dispatch is Dispatch.AUTO else "")
    return f", each replica queueing on its own{seen},"

_MAX_SLOTS = 256.0
"""Most concurrent requests per replica the model believes it has learned (bounds garbage metrics)."""


def _servers(ready: float, slots: float | None, settings: AutoscalerSettings) -> float:
    per = settings.slots_per_replica or (round(slots) if slots else None)
    return ready * per if per else 0.0


def _slope(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of (time, value) points and its standard error."""
    if len(points) < 3:
        return 0.0, math.inf
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var <= 0:
        return 0.0, math.inf
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / var
    residual = sum((v - mean_v - slope * (t - mean_t)) ** 2 for t, v in points)
    return slope, math.sqrt(residual / (len(points) - 2) / var)


def _scatter(values: Sequence[float]) -> float:
    """Standard deviation of one value around the local level, from the median absolute difference of
    consecutive values (÷ 0.6745·√2 for normal noise): a trend or one step of the level (a ramp or a drop in
    load) moves few differences and leaves it alone, scrape-to-scrape burstiness does not. 0 below 3 values."""
    if len(values) < 3:
        return 0.0
    return statistics.median(abs(b - a) for a, b in zip(values, values[1:])) / (0.6745 * math.sqrt(2.0))


def _significant(slope: float, error: float, confidence: float) -> float:
    """The slope shrunk towards 0 by ``confidence`` standard errors (0 when not significant)."""
    if not math.isfinite(error):
        return 0.0
    if slope > 0:
        return max(0.0, slope - confidence * error)
    return min(0.0, slope + confidence * error)


def _rate_limits(state: AutoscalerState, now: float, current: int, wanted: int,
                 settings: AutoscalerSettings) -> tuple[int, str | None]:
    """Bound ``wanted`` by the per-period change limits (relative to the count at the period's start)."""
    if wanted > current:
        policy = settings.scale_up
        base = _count_at(state, now - policy.period_s, current)
        limit = base + max(policy.max_change_replicas, math.ceil(base * policy.max_change_percent / 100.0))
        if wanted > limit:
            return max(current, limit), f"rate limit: at most {limit} within {policy.period_s:.0f}s"
    elif wanted < current:
        policy2 = settings.scale_down
        base = _count_at(state, now - policy2.period_s, current)
        limit = base - max(policy2.max_change_replicas, math.floor(base * policy2.max_change_percent / 100.0))
        if wanted < limit:
            return min(current, limit), f"rate limit: at least {limit} within {policy2.period_s:.0f}s"
    return wanted, None


def _count_at(state: AutoscalerState, since: float, current: int) -> int:
    """The desired count at ``since``: the ``from`` of the first change after it, else the current."""
    for time, before, _ in state.changes:
        if time > since:
            return before
    return current


def _hold(state: AutoscalerState, current: int, settings: AutoscalerSettings, now: float, reason: str,
          observed: Observed = Observed()) -> Decision:
    keep = max(current, state.desired or 0)
    keep = max(settings.min_replicas, min(keep, max(settings.max_replicas, current)))
    return Decision(keep, "hold", f"holding {keep} replicas: {reason}", False, observed,
                    replace(state, desired=keep))


def decide(samples: Sequence[MetricSample], now: float, current_replicas: int, settings: AutoscalerSettings,
           state: AutoscalerState | None = None) -> Decision:
    """The replica count for one service now.

    ``samples``: the recent scrapes of the service (at least the trend window, oldest first; older ones
    are ignored); ``current_replicas``: the count now asked of Kubernetes (ready + starting);
    ``state``: the previous decision's ``state`` (``None`` the first time).
    """
    state = state or AutoscalerState()
    samples = sorted((s for s in samples if math.isfinite(s.time)), key=lambda s: s.time)
    horizon_back = max(settings.trend_window_s, settings.rate_window_s) + 1e-6
    samples = [s for s in samples if s.time >= now - horizon_back - settings.stale_after_s]
    problem = _problem(samples, now, settings)
    if problem is not None:
        return _hold(state, current_replicas, settings, now, problem)
    intervals = _intervals(samples)
    if not intervals:
        return _hold(state, current_replicas, settings, now, "counters reset in every interval")
    state = _watch_dispatch(state, samples, settings)
    dispatch = effective_dispatch(settings, state)
    model, state = _learn(state.capacity, state, samples, intervals, settings, dispatch)
    state = replace(state, capacity=model)

    newest = samples[-1]
    level_window = [i for i in intervals if i.end > newest.time - settings.rate_window_s - 1e-6]
    span = sum(i.end - i.start for i in level_window)
    arrivals = sum(i.arrivals for i in level_window)
    completions = sum(i.completions for i in level_window)
    rate = arrivals / span if span > 0 else 0.0
    queue_ms = 1000.0 * sum(i.queue_s for i in level_window) / completions if completions else 0.0
    trend_points = [((i.start + i.end) / 2, i.arrivals / (i.end - i.start)) for i in intervals
                    if i.end > newest.time - settings.trend_window_s - 1e-6]
    covered = newest.time - min((i.start for i in intervals), default=newest.time)
    # A trend needs most of its window: a fresh start (or a gap) would stretch a few seconds over minutes.
    seen_enough = covered >= 0.75 * settings.trend_window_s
    raw_trend, trend_error = _slope(trend_points) if seen_enough else (0.0, math.inf)
    trend = _significant(raw_trend, trend_error, settings.trend_confidence)
    # The level averages the intervals of its window: its standard error is the scatter of one interval's
    # rate (Poisson noise plus the service's own burstiness) over the root of their number.
    scatter = _scatter([v for _, v in trend_points]) if seen_enough else 0.0
    level_error = scatter / math.sqrt(len(level_window)) if level_window else 0.0
    surge = [i for i in intervals if i.start > newest.time - settings.surge_window_s - 1e-6]
    surge_span = sum(i.end - i.start for i in surge)
    surge_rate = sum(i.arrivals for i in surge) / surge_span if surge_span > 0 else 0.0
    ready = float(newest.ready_replicas)  # type: ignore[arg-type]
    starting = float(newest.starting_replicas)  # type: ignore[arg-type]
    pending = float(newest.pending_requests)  # type: ignore[arg-type]
    slots = _sizing_slots(settings, model) or 1.0
    startup = model.startup_delay_s if model.startup_delay_s is not None else settings.startup_delay_prior_s
    horizon = startup + settings.decision_lag_s
    # The level lags the newest sample by half its window; the forecast looks ahead over the horizon, but no
    # further than the cap above what the newest scrapes show.
    forecast = max(rate, rate + trend * (horizon + settings.rate_window_s / 2))
    if settings.forecast_cap is not None and surge_span > 0:
        forecast = max(rate, min(forecast, max(rate, surge_rate) * (1 + settings.forecast_cap)))
    service_s = model.service_time_s or 0.0
    observed = Observed(arrival_rate=rate, arrival_trend=trend, forecast_rate=forecast,
                        service_time_ms=service_s * 1000, queue_time_ms=queue_ms, pending_requests=pending,
                        ready_replicas=ready, starting_replicas=starting, slots_per_replica=slots,
                        startup_delay_s=startup, horizon_s=horizon)

    if settings.signal is Signal.QUEUE_TIME:
        backlog = max(0.0, pending - ready * slots)
        target_s = settings.target / 1000.0

        def needed(load_rate: float, spread: float = 0.0) -> int:
            extra = backlog / max(horizon, 10.0)
            return replicas_for_queue_time(load_rate + extra, service_s, target_s, settings.miss_budget, int(slots),
                                           dispatch, model.queue_factor, settings.max_replicas + 1, spread)

        if service_s <= 0:
            need_up = need_down = current_replicas if completions == 0 and pending > 0 else \
                (settings.min_replicas if pending == 0 else current_replicas)
            reason = "no requests completed yet" if pending else "idle"
        else:
            # Up: on the upper side of what the level is known to, and on the newest rate after a step beyond
            # the band the tolerance holds still (fast up); after a fall beyond that band, from the newest rate.
            # Down: only when demand is below what one replica less could serve by the tolerance, and never
            # below what scaling up asks for now.
            band = 2 * settings.tolerance
            # A fall is judged against the level carried to the newest scrape (on a ramp the newest rates are
            # meant to lie below the forecast a start-up delay ahead), a rise against the forecast itself.
            level_now = rate + trend * settings.rate_window_s / 2
            rose = surge_span > 0 and surge_rate > forecast * (1 + band)
            fell = surge_span > 0 and surge_rate < level_now * (1 - band)
            expected = surge_rate if fell else forecast
            sizing_rate = max(expected, surge_rate if rose else 0.0)
            # The coming horizon's arrivals average the scatter of its 5 s rates; the level is only known to
            # its standard error.
            interval_s = span / len(level_window) if level_window else 0.0
            rate_spread = settings.rate_confidence * math.sqrt(level_error ** 2 + scatter ** 2 * interval_s / horizon)
            need_up = needed(sizing_rate, rate_spread)
            need_down = max(need_up, needed(expected * (1 + settings.tolerance)))
            observed = replace(observed, sizing_rate=sizing_rate, rate_spread=rate_spread, dispatch=str(dispatch))
            newest_rate = f", {surge_rate:.1f} in the last {settings.surge_window_s:.0f}s" if rose or fell else ""
            reason = (f"{rate:.1f} req/s (trend {trend:+.2f}/s, {forecast:.1f} expected in {horizon:.0f}s{newest_rate}, "
                      f"sized for {sizing_rate:.1f} ± {rate_spread:.1f}) × {service_s * 1000:.0f} ms on {slots:.0f} slots per "
                      f"replica{_queueing(dispatch, settings)} keeps queue time under {settings.target:.0f} ms")
        observed = replace(observed, signal_value=queue_ms, needed_replicas=need_up)
    else:
        value, per_replica_target, what = _ratio_signal(settings, rate, pending, ready, newest)
        if value is None:
            return _hold(state, current_replicas, settings, now, what, observed)
        base = max(ready, 1.0)
        ratio = value / per_replica_target
        if abs(ratio / base - 1.0) <= settings.tolerance:
            need_up = need_down = current_replicas
        else:
            need_up = need_down = math.ceil(ratio - 1e-9)
        reason = f"{what} {value / base:.2f} per replica against a target of {per_replica_target:.2f}"
        observed = replace(observed, signal_value=value / base, needed_replicas=need_up)

    # The latency objective overrides the signal when it is exceeded.
    if settings.latency_slo_ms and completions > 0:
        latency = 1000.0 * sum(i.queue_s + i.compute_s for i in level_window) / completions
        if latency > settings.latency_slo_ms:
            push = max(current_replicas + 1, math.ceil(current_replicas * latency / settings.latency_slo_ms))
            if push > need_up:
                need_up = need_down = push
                reason = f"mean latency {latency:.0f} ms exceeds the objective {settings.latency_slo_ms:.0f} ms"

    return _finish(state, now, current_replicas, settings, need_up, need_down, reason, observed, newest)


def _ratio_signal(settings: AutoscalerSettings, rate: float, pending: float, ready: float,
                  newest: MetricSample) -> tuple[float | None, float, str]:
    if settings.signal is Signal.PENDING_REQUESTS:
        return pending, settings.target, "pending requests"
    if settings.signal is Signal.REQUEST_RATE:
        return rate, settings.target, "requests per second"
    if newest.gpu_utilization is None:
        return None, settings.target, "gpu_utilization missing"
    return newest.gpu_utilization * max(ready, 1.0), settings.target, "GPU utilisation"


def _window_growth(state: AutoscalerState, now: float, current: int, need_up: int, base_window: float,
                   startup: float, observed: Observed, settings: AutoscalerSettings) -> tuple[AutoscalerState, float]:
    """The automatic scale-down window's growth factor now (``ScaleDownPolicy.max_window_growth``), decayed
    since it was last set and doubled when this decision undoes the last scale-down."""
    policy = settings.scale_down
    growth = state.window_growth
    if state.window_growth_at is not None and growth > 1.0:
        growth = 1.0 + (growth - 1.0) * math.exp(-(now - state.window_growth_at) / policy.growth_memory_s)
    objective_ms = settings.target if settings.signal is Signal.QUEUE_TIME else settings.latency_slo_ms
    undone = (need_up > current and objective_ms is not None
              and state.last_scale_down is not None and state.last_scale_down != state.undone_scale_down
              and now - state.last_scale_down < base_window * growth + startup
              and observed.queue_time_ms >= policy.growth_queue_share * objective_ms)
    if undone:
        growth = min(max(1.0, policy.max_window_growth), growth * 2.0)
    return replace(state, window_growth=growth, window_growth_at=now,
                   undone_scale_down=state.last_scale_down if undone else state.undone_scale_down), growth


def _finish(state: AutoscalerState, now: float, current: int, settings: AutoscalerSettings, need_up: int,
            need_down: int, reason: str, observed: Observed, newest: MetricSample) -> Decision:
    """Apply the stabilisation windows, the GPU guard, the rate limits and the bounds."""
    lo, hi = settings.min_replicas, settings.max_replicas
    need_up = max(lo, min(hi, need_up))
    need_down = max(lo, min(hi, need_down))
    down_window = settings.scale_down.stabilization_window_s
    growth = 1.0
    if down_window is None:
        startup = observed.startup_delay_s if math.isfinite(observed.startup_delay_s) else 0.0
        down_window = max(settings.scale_down.min_window_s, settings.scale_down.startup_share * startup)
        state, growth = _window_growth(state, now, current, need_up, down_window, startup, observed, settings)
        down_window *= growth
    up_window = settings.scale_up.stabilization_window_s
    keep = max(down_window, up_window) + 1e-6
    history = tuple(r for r in state.recommendations if r[0] > now - keep) + ((now, need_up, need_down),)
    if need_up > current:
        # Up: the lowest recommendation of the up window (the newest alone when the window is 0).
        wanted = max(current, min(r[1] for r in history if r[0] > now - up_window - 1e-6))
        if wanted == current:
            reason = f"{reason}; scale-up stabilising over {up_window:.0f}s"
    else:
        # Down: the highest recommendation of the down window, once a whole window has been seen.
        wanted = min(current, max(r[2] for r in history if r[0] > now - down_window - 1e-6))
        first = state.first_decision if state.first_decision is not None else now
        if now - first < down_window - 1e-6:
            wanted = current
        if wanted == current and need_down < current:
            grown = f" (×{growth:.1f} after scale-downs undone while requests queued)" if growth > 1.05 else ""
            reason = f"{reason}; scale-down stabilising over {down_window:.0f}s{grown}"
    guard = newest.gpu_utilization
    if wanted < current and guard is not None and guard > settings.gpu_utilization_guard:
        wanted = current
        reason = f"{reason}; GPU utilisation {guard:.0f}% above {settings.gpu_utilization_guard:.0f}%: not removing"
    if lo <= current <= hi:  # outside the bounds, the bounds win over limits
        wanted, limited = _rate_limits(state, now, current, wanted, settings)
        if limited:
            reason = f"{reason}; {limited}"
    wanted = max(lo, min(hi, wanted))
    action = "scale-up" if wanted > current else "scale-down" if wanted < current else "steady"
    period = max(settings.scale_up.period_s, settings.scale_down.period_s)
    changes = tuple(c for c in state.changes if c[0] > now - period - 1e-6)
    if wanted != current:
        changes += ((now, current, wanted),)
    launches = state.launches + (now,) * max(0, wanted - current)
    new_state = replace(state, recommendations=history, changes=changes, desired=wanted,
                        launches=launches[-4 * max(hi, 1):],
                        first_decision=state.first_decision if state.first_decision is not None else now,
                        last_scale_up=now if wanted > current else state.last_scale_up,
                        last_scale_down=now if wanted < current else state.last_scale_down)
    verb = f"{action} to {wanted}" if action != "steady" else f"steady at {wanted}"
    return Decision(wanted, action, f"{verb}: {reason}", True, observed, new_state)
