"""``trireme bench autoscale``: Trireme's autoscaler against HPA-like, KEDA-like, static and oracle
scaling on a replayed request trace.

It exists so that a change to the autoscaler is judged by the figures users care about — the share
of requests that meet the queue-time objective and the GPU-seconds paid for it — on the same
arrivals as the usual alternatives, following the protocol in the data README (service-time
model, amplification, start-up delays, 5 s scrapes, the exact baselines). The policies see only
what Prometheus would: counters and gauges scraped every 5 s. Trireme's policy is the operator's
own code, :func:`trireme.scheduler.autoscale.decide`, fed those samples.

The simulation is a discrete-event loop over arrivals, completions, replica start-ups and scrapes:

* a replica serves ``SLOTS`` requests at once and costs GPU time from launch to the end of its
  drain (or to the end of the run);
* dispatch is one pooled FIFO queue with each request sent to the ready replica with the fewest
  outstanding requests (``pooled``), or per-replica queues filled round-robin (``round-robin``) or at
  random (``random``), as a Kubernetes Service spreads requests; Trireme's autoscaler is told which, as
  ``spec.autoscaling.dispatch`` tells it in the operator (``pooled`` / ``perReplica``), or with ``--tell auto``
  finds out from the replicas' in-flight gauges, which every scrape carries;
* scaling down cancels replicas still starting first, then drains the least loaded ready replica
  (:func:`~trireme.scheduler.autoscale.choose_scale_down_victim`).
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import math
import random
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from trireme.scheduler.autoscale import (
    AutoscalerSettings, AutoscalerState, Dispatch, MetricSample, choose_scale_down_victim, decide,
)

SLOTS = 4
"""Requests a replica serves at once (the protocol's Triton instance count)."""
MAX_REPLICAS = 32
"""Most replicas any policy may run (the protocol's cap)."""
SCRAPE_S = 5.0
"""Prometheus scrape interval: the only view of the service a policy gets."""
WARMUP_TRACE_S = 300.0
"""Trace-seconds at the start excluded from every figure (policies settle from the same start)."""
SHIFT_TRACE_S = 30.0
"""Copies of a request are shifted uniformly within ± this many trace-seconds."""
ORACLE_WINDOW_S = 10.0
"""The oracle sizes each window of this length."""
ORACLE_MISS = 0.01
"""Share of a window's arrivals the oracle lets wait longer than the objective."""


# -- load ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """Requests of a trace: arrival (trace-seconds from the first), context and generated tokens."""

    times: np.ndarray
    context: np.ndarray
    generated: np.ndarray


def load_trace(path: str | Path) -> Trace:
    """Read a CSV with columns TIMESTAMP, ContextTokens, GeneratedTokens (the Azure LLM format).

    TIMESTAMP is a date-time or a number of seconds."""
    stamps: list[float] = []
    context: list[int] = []
    generated: list[int] = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            raw = row["TIMESTAMP"].strip()
            try:
                stamps.append(float(raw))
            except ValueError:
                stamps.append(_parse_time(raw))
            context.append(int(row["ContextTokens"]))
            generated.append(int(row["GeneratedTokens"]))
    if not stamps:
        raise ValueError(f"{path}: no requests")
    times = np.asarray(stamps, dtype=float)
    order = np.argsort(times, kind="stable")
    times = times[order] - times[order][0]
    return Trace(times, np.asarray(context)[order], np.asarray(generated)[order])


def _parse_time(raw: str) -> float:
    head, _, frac = raw.partition(".")
    base = datetime.fromisoformat(head).timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def service_seconds(context: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """The protocol's service time: 20 ms + 0.05 ms per context token + 1 ms per generated token."""
    return (20.0 + 0.05 * context + 1.0 * generated) / 1000.0


@dataclass(frozen=True)
class Setting:
    """One benchmark setting: how the trace is replayed and how long a replica takes to start."""

    name: str
    speedup: float
    copies: int
    startup_s: float


SETTINGS = tuple(Setting(f"{label}-start{delay}", speed, copies, float(delay))
                 for label, speed, copies in (("1x", 1.0, 20), ("5x", 5.0, 4)) for delay in (10, 30, 60))
"""The six settings of the protocol: 1x (speed-up 1, ×20) and 5x (speed-up 5, ×4) × start-up 10/30/60 s."""


@dataclass(frozen=True)
class Load:
    """Arrivals of one setting and seed, in simulated seconds, sorted."""

    arrivals: np.ndarray
    service: np.ndarray
    counted: np.ndarray
    """Whether a request is in the figures (its trace time is past the warm-up)."""
    end: float
    """Simulated end of the trace."""
    cutoff: float
    """Simulated time where the figures start."""


def amplify(trace: Trace, setting: Setting, seed: int) -> Load:
    """The trace ×copies (copies shifted ±30 trace-seconds, reflected at the ends, with the tokens of a
    random request), sped up."""
    rng = np.random.default_rng(seed)
    span = float(trace.times[-1])
    times = [trace.times]
    context = [trace.context]
    generated = [trace.generated]
    n = len(trace.times)
    for _ in range(setting.copies - 1):
        shifted = trace.times + rng.uniform(-SHIFT_TRACE_S, SHIFT_TRACE_S, n)
        shifted = np.abs(shifted)
        shifted = np.where(shifted > span, 2 * span - shifted, shifted)
        pick = rng.integers(0, n, n)
        times.append(np.clip(shifted, 0.0, span))
        context.append(trace.context[pick])
        generated.append(trace.generated[pick])
    all_times = np.concatenate(times)
    order = np.argsort(all_times, kind="stable")
    trace_times = all_times[order]
    service = service_seconds(np.concatenate(context)[order], np.concatenate(generated)[order])
    warmup = min(WARMUP_TRACE_S, span / 4)  # tiny traces in tests keep most of their requests
    return Load(trace_times / setting.speedup, service, trace_times >= warmup, span / setting.speedup,
                warmup / setting.speedup)


# -- policies ----------------------------------------------------------------------------------------------


class Policy:
    """A scaling policy: every ``period_s`` it sees the scrapes so far and names a replica count."""

    name = "policy"
    period_s = SCRAPE_S

    def desired(self, now: float, samples: Sequence[MetricSample], current: int) -> int:
        raise NotImplementedError


class TriremePolicy(Policy):
    """Trireme's autoscaler, exactly as the operator calls it."""

    name = "trireme"

    def __init__(self, slo_ms: float, dispatch: Dispatch = Dispatch.POOLED) -> None:
        self.settings = AutoscalerSettings.for_queue_time(slo_ms, max_replicas=MAX_REPLICAS,
                                                          slots_per_replica=SLOTS, dispatch=dispatch)
        self.state = AutoscalerState()
        self.reasons: list[str] = []

    def desired(self, now: float, samples: Sequence[MetricSample], current: int) -> int:
        decision = decide(samples[-20:], now, current, self.settings, self.state)
        self.state = decision.state
        return decision.desired_replicas


class HpaPolicy(Policy):
    """HPA-like: in-flight requests per ready pod, target 0.7 × slots, sync 15 s, tolerance 10 %, up by
    max(100 %, 4 pods) per step, scale-down held 300 s (the highest recommendation of 300 s)."""

    name = "hpa"
    period_s = 15.0

    def __init__(self) -> None:
        self.target = 0.7 * SLOTS
        self.history: deque[tuple[float, int]] = deque()

    def desired(self, now: float, samples: Sequence[MetricSample], current: int) -> int:
        last = samples[-1]
        ready = max(1.0, last.ready_replicas or 0.0)
        ratio = (last.pending_requests or 0.0) / ready / self.target
        recommendation = current if abs(ratio - 1.0) <= 0.1 else math.ceil(ratio * ready - 1e-9)
        return _hpa_behaviour(self.history, now, current, recommendation, 300.0)


class KedaPolicy(Policy):
    """KEDA-like: request rate over 1 min against 70 % of a replica's capacity, polling 30 s, cooldown
    300 s; the HPA it drives applies the same tolerance and scale-up limit."""

    name = "keda"
    period_s = 30.0

    def __init__(self, mean_service_s: float) -> None:
        self.threshold = 0.7 * SLOTS / mean_service_s
        self.history: deque[tuple[float, int]] = deque()

    def desired(self, now: float, samples: Sequence[MetricSample], current: int) -> int:
        window = [s for s in samples if s.time >= now - 60.0 - 1e-6]
        if len(window) < 2:
            return current
        rate = (window[-1].request_success - window[0].request_success) / (window[-1].time - window[0].time)  # type: ignore[operator]
        ratio = rate / self.threshold
        ready = max(1.0, window[-1].ready_replicas or 0.0)
        recommendation = current if abs(ratio / ready - 1.0) <= 0.1 else math.ceil(ratio - 1e-9)
        return _hpa_behaviour(self.history, now, current, recommendation, 300.0)


def _hpa_behaviour(history: deque[tuple[float, int]], now: float, current: int, recommendation: int,
                   down_window: float) -> int:
    recommendation = max(1, min(MAX_REPLICAS, recommendation))
    history.append((now, recommendation))
    while history and history[0][0] <= now - down_window:
        history.popleft()
    if recommendation > current:
        return min(recommendation, max(2 * current, current + 4), MAX_REPLICAS)
    return min(current, max(r for _, r in history))


class PlanPolicy(Policy):
    """Follows a known plan: the oracle (per-window counts, launched a start-up delay early) or static."""

    period_s = SCRAPE_S

    def __init__(self, name: str, counts: np.ndarray, startup_s: float) -> None:
        self.name = name
        self.counts = counts
        self.startup_s = startup_s

    def count_at(self, now: float) -> int:
        first = max(0, int(math.floor(now / ORACLE_WINDOW_S)))
        last = int(math.floor((now + self.startup_s + 1e-9) / ORACLE_WINDOW_S))
        window = self.counts[first:last + 1]
        return int(window.max()) if len(window) else int(self.counts[-1])

    def desired(self, now: float, samples: Sequence[MetricSample], current: int) -> int:
        return self.count_at(now)


class PresentPolicy(PlanPolicy):
    """A reference that knows the present exactly but not the future: the oracle's need of every window that
    has begun (the current one included, so up to one window ahead), the highest of the last ``hold_s``,
    plus ``headroom`` of it (rounded up), launched now, so ready a start-up delay later.

    No policy that sees only metrics knows as much; what this reference pays for its attainment is about
    what the oracle's foresight is worth in a setting."""

    def __init__(self, counts: np.ndarray, startup_s: float, headroom: float, hold_s: float) -> None:
        super().__init__(present_name(headroom, hold_s), counts, startup_s)
        self.headroom = headroom
        self.hold_s = hold_s

    def count_at(self, now: float) -> int:
        last = min(len(self.counts) - 1, max(0, int(math.floor(now / ORACLE_WINDOW_S))))
        first = min(last, max(0, int(math.floor((now - self.hold_s + 1e-9) / ORACLE_WINDOW_S))))
        return int(math.ceil(float(self.counts[first:last + 1].max()) * (1.0 + self.headroom) - 1e-9))


def present_name(headroom: float, hold_s: float) -> str:
    """The table's name of a present-knowing reference: ``present+15%`` or ``present+5%/30s``."""
    return f"present+{100 * headroom:g}%" + (f"/{hold_s:g}s" if hold_s else "")


def parse_present(text: str) -> tuple[float, float]:
    """``HEADROOM[/HOLD_S]`` (``0.15`` or ``0.05/30``) as (headroom, hold seconds)."""
    head, _, hold = text.partition("/")
    try:
        headroom, hold_s = float(head), float(hold or 0.0)
    except ValueError:
        raise ValueError(f"--present {text!r}: give HEADROOM[/HOLD_S], e.g. 0.15 or 0.05/30") from None
    if not (0.0 <= headroom <= 2.0 and 0.0 <= hold_s <= 600.0):
        raise ValueError(f"--present {text!r}: headroom must be 0–2 and hold 0–600 s")
    return headroom, hold_s


def oracle_counts(load: Load, slo_s: float) -> np.ndarray:
    """Per window, the fewest ready replicas such that at most 1 % of the window's arrivals wait longer
    than the objective, on a pooled queue, carrying each window's backlog into the next."""
    windows = int(math.ceil(load.end / ORACLE_WINDOW_S)) + 1
    bounds = np.searchsorted(load.arrivals, np.arange(windows + 1) * ORACLE_WINDOW_S)
    arrivals, service = load.arrivals.tolist(), load.service.tolist()
    slots: list[float] = []
    counts = np.ones(windows, dtype=int)

    def run(n: int, begin: int, end: int, start_time: float, commit: bool) -> tuple[int, list[float]]:
        free = sorted(slots)[: n * SLOTS]
        free += [start_time] * (n * SLOTS - len(free))
        heapq.heapify(free)
        misses = 0
        for i in range(begin, end):
            at = arrivals[i]
            start = heapq.heappop(free)
            if start < at:
                start = at
            elif start - at > slo_s:
                misses += 1
            heapq.heappush(free, start + service[i])
        return misses, free

    for w in range(windows):
        begin, end = int(bounds[w]), int(bounds[w + 1])
        allowed = math.floor(ORACLE_MISS * (end - begin))
        lo, hi = 1, MAX_REPLICAS
        while lo < hi:
            mid = (lo + hi) // 2
            if run(mid, begin, end, w * ORACLE_WINDOW_S, False)[0] <= allowed:
                hi = mid
            else:
                lo = mid + 1
        counts[w] = lo
        slots = run(lo, begin, end, w * ORACLE_WINDOW_S, True)[1]
    return counts


# -- simulation ----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Figures of one policy on one load."""

    policy: str
    requests: int
    met: int
    missed_unstarted: int
    p99_queue_ms: float
    gpu_seconds: float
    scale_events: int
    served: int
    timeline: list[tuple[float, float, int, int, float]] = field(default_factory=list)
    """(time, arrivals per second, ready, starting, mean queue ms) per scrape."""

    @property
    def attainment(self) -> float:
        return self.met / self.requests if self.requests else 1.0


_STARTING, _READY, _DRAINING, _GONE = range(4)


def simulate(load: Load, policy: Policy, startup_s: float, initial: int, slo_s: float,
             dispatch: str = "pooled", timeline: bool = False) -> Outcome:
    """Run one policy over one load; every request is served (late ones count as missed)."""
    arrivals, service = load.arrivals.tolist(), load.service.tolist()
    total = len(arrivals)
    waits = np.full(total, np.inf)
    per_replica = dispatch in ("round-robin", "random")
    pick = random.Random(total)  # random dispatch: one seeded stream per run, so runs repeat exactly
    state: list[int] = []
    launched: list[float] = []
    retired: list[float] = []
    outstanding: list[int] = []
    queues: list[deque[int]] = []
    ready_list: list[int] = []
    starts: list[tuple[float, int]] = []  # heap of (ready time, replica)
    completions: list[tuple[float, int, int]] = []  # heap of (time, replica, request)
    pooled: deque[int] = deque()
    counters = {"success": 0, "queue_us": 0.0, "compute_us": 0.0}
    samples: list[MetricSample] = []
    events = 0
    rr_next = 0
    rows: list[tuple[float, float, int, int, float]] = []
    last_done: list[float] = []

    def launch(now: float, ready_at: float) -> None:
        state.append(_STARTING)
        launched.append(now)
        retired.append(math.inf)
        outstanding.append(0)
        last_done.append(now)
        queues.append(deque())
        heapq.heappush(starts, (ready_at, len(state) - 1))

    def begin(now: float, replica: int, request: int) -> None:
        waits[request] = now - arrivals[request]
        outstanding[replica] += 1
        heapq.heappush(completions, (now + service[request], replica, request))

    def become_ready(now: float, replica: int) -> None:
        state[replica] = _READY
        ready_list.append(replica)
        source = pooled
        while source and outstanding[replica] < SLOTS:
            begin(now, replica, source.popleft())
        if per_replica:
            while pooled:  # requests that arrived while no replica was ready
                queues[replica].append(pooled.popleft())

    def retire_if_idle(now: float, replica: int) -> None:
        if state[replica] == _DRAINING and outstanding[replica] == 0 and not queues[replica]:
            state[replica] = _GONE
            retired[replica] = now

    def scale_to(now: float, wanted: int) -> None:
        nonlocal events
        starting = [r for r, s in enumerate(state) if s == _STARTING]
        current = len(starting) + len(ready_list)
        if wanted == current:
            return
        events += 1
        if wanted > current:
            for _ in range(wanted - current):
                launch(now, now + startup_s)
            return
        for _ in range(current - wanted):
            if starting:
                replica = starting.pop()
                state[replica] = _GONE
                retired[replica] = now
                continue
            if len(ready_list) <= 1:
                break
            loads = {str(r): outstanding[r] + len(queues[r]) for r in ready_list}
            victim = int(choose_scale_down_victim(loads))
            ready_list.remove(victim)
            state[victim] = _DRAINING
            retire_if_idle(now, victim)

    for _ in range(initial):
        launch(-startup_s, 0.0)
    while starts and starts[0][0] <= 0.0:
        become_ready(0.0, heapq.heappop(starts)[1])

    index = 0
    next_scrape = 0.0
    next_decision = policy.period_s
    end = load.end
    last_queue_us, last_success, last_arrivals = 0.0, 0, 0
    while True:
        next_arrival = arrivals[index] if index < total else math.inf
        next_completion = completions[0][0] if completions else math.inf
        next_start = starts[0][0] if starts else math.inf
        tick = next_scrape if next_scrape <= end else math.inf
        now = min(next_arrival, next_completion, next_start, tick)
        if now == math.inf:
            break
        if next_completion == now:
            _, replica, request = heapq.heappop(completions)
            outstanding[replica] -= 1
            last_done[replica] = now
            counters["success"] += 1
            counters["queue_us"] += waits[request] * 1e6
            counters["compute_us"] += service[request] * 1e6
            if per_replica:
                if queues[replica]:
                    begin(now, replica, queues[replica].popleft())
            elif pooled and state[replica] == _READY:
                begin(now, replica, pooled.popleft())
            retire_if_idle(now, replica)
        elif next_start == now:
            _, replica = heapq.heappop(starts)
            if state[replica] == _STARTING:
                become_ready(now, replica)
        elif next_arrival == now:
            request = index
            index += 1
            if not ready_list:
                pooled.append(request)
            elif per_replica:
                if dispatch == "random":
                    replica = ready_list[pick.randrange(len(ready_list))]
                else:
                    replica = ready_list[rr_next % len(ready_list)]
                    rr_next += 1
                if outstanding[replica] < SLOTS:
                    begin(now, replica, request)
                else:
                    queues[replica].append(request)
            else:
                best, fewest = -1, SLOTS
                for replica in ready_list:
                    if outstanding[replica] < fewest:
                        best, fewest = replica, outstanding[replica]
                if best < 0:
                    pooled.append(request)
                else:
                    begin(now, best, request)
        else:
            in_flight = sum(outstanding) + len(pooled) + sum(len(q) for q in queues)
            n_ready = len(ready_list)
            n_starting = sum(1 for s in state if s == _STARTING)
            samples.append(MetricSample(now, float(in_flight), float(counters["success"]), counters["queue_us"],
                                        counters["compute_us"], float(n_ready), float(n_starting),
                                        replica_pending=tuple(float(outstanding[r] + len(queues[r]))
                                                              for r in ready_list)))
            if timeline:
                done = counters["success"] - last_success
                mean_queue = (counters["queue_us"] - last_queue_us) / 1000.0 / done if done else 0.0
                rows.append((now, (index - last_arrivals) / SCRAPE_S, n_ready, n_starting, mean_queue))
                last_queue_us, last_success, last_arrivals = counters["queue_us"], counters["success"], index
            if len(samples) > 64:
                del samples[:32]
            if now >= next_decision - 1e-9 and now > 0:
                next_decision += policy.period_s
                wanted = max(1, min(MAX_REPLICAS, policy.desired(now, samples, n_ready + n_starting)))
                scale_to(now, wanted)
            next_scrape += SCRAPE_S
    for replica, status in enumerate(state):
        if status != _GONE:  # still running at the end: charged to the end of the trace or its last request
            retired[replica] = max(end, last_done[replica])
    gpu = sum(max(0.0, stop - max(start, load.cutoff)) for start, stop in zip(launched, retired))
    counted = load.counted
    counted_waits = waits[counted]
    met = int(np.count_nonzero(counted_waits <= slo_s + 1e-12))
    unstarted = int(np.count_nonzero(~np.isfinite(counted_waits)))
    finite = counted_waits[np.isfinite(counted_waits)]
    p99 = float(np.percentile(finite, 99)) * 1000.0 if len(finite) else math.inf
    return Outcome(policy.name, int(counted.sum()), met, unstarted, p99, gpu, events,
                   int(np.count_nonzero(np.isfinite(waits))), rows)


# -- the benchmark -----------------------------------------------------------------------------------------


POLICIES = ("trireme", "hpa", "keda", "static", "oracle")


def run_one(trace: Trace, setting: Setting, seed: int, slo_ms: float, dispatch: str = "pooled",
            timeline: bool = False, present: Sequence[tuple[float, float]] = (), told: str = "match"
            ) -> dict[str, Outcome]:
    """All policies on one setting and seed, on the same arrivals; ``present``: (headroom, hold seconds) of the
    present-knowing references to add (:class:`PresentPolicy`); ``told``: what Trireme is told of the dispatch,
    ``match`` (the dispatch used) or ``auto`` (find out from the replicas' gauges)."""
    load = amplify(trace, setting, seed)
    slo_s = slo_ms / 1000.0
    counts = oracle_counts(load, slo_s)
    oracle = PlanPolicy("oracle", counts, setting.startup_s)
    static = PlanPolicy("static", np.full_like(counts, counts.max()), setting.startup_s)
    initial = oracle.count_at(0.0)
    told_dispatch = (Dispatch.AUTO if told == "auto" else Dispatch.POOLED if dispatch == "pooled"
                     else Dispatch.PER_REPLICA)  # as spec.autoscaling.dispatch tells the operator
    policies: list[Policy] = [TriremePolicy(slo_ms, told_dispatch), HpaPolicy(),
                              KedaPolicy(float(load.service.mean())), static, oracle]
    policies += [PresentPolicy(counts, setting.startup_s, headroom, hold_s) for headroom, hold_s in present]
    out = {}
    for policy in policies:
        start = int(counts.max()) if policy.name == "static" else initial
        out[policy.name] = simulate(load, policy, setting.startup_s, start, slo_s, dispatch, timeline)
    return out


def _task(args: tuple[Trace, Setting, int, float, str, bool, tuple[tuple[float, float], ...], str]
          ) -> tuple[str, int, dict[str, Outcome]]:
    trace, setting, seed, slo_ms, dispatch, timeline, present, told = args
    return setting.name, seed, run_one(trace, setting, seed, slo_ms, dispatch, timeline, present, told)


def parse_settings(text: str) -> list[Setting]:
    if text == "all":
        return list(SETTINGS)
    by_name = {s.name: s for s in SETTINGS}
    chosen = []
    for name in text.split(","):
        name = name.strip()
        if name not in by_name:
            raise ValueError(f"unknown setting {name!r}: choose from {', '.join(by_name)} or all")
        chosen.append(by_name[name])
    return chosen


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds.extend(range(int(first), int(last or first) + 1))
    return seeds


def run_benchmark(trace_path: str | Path, settings: Sequence[Setting], seeds: Sequence[int], slo_ms: float,
                  dispatch: str = "pooled", workers: int = 2, timeline: bool = False,
                  progress: Callable[[str], None] | None = None, present: Sequence[tuple[float, float]] = (),
                  told: str = "match") -> dict[str, dict[int, dict[str, Outcome]]]:
    """Every setting × seed, all policies; ``{setting: {seed: {policy: Outcome}}}``."""
    trace = load_trace(trace_path)
    tasks = [(trace, s, seed, slo_ms, dispatch, timeline and seed == seeds[0], tuple(present), told)
             for s in settings for seed in seeds]
    results: dict[str, dict[int, dict[str, Outcome]]] = {s.name: {} for s in settings}
    if workers > 1 and len(tasks) > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(min(workers, len(tasks))) as pool:
            for done, (name, seed, outcome) in enumerate(pool.imap_unordered(_task, tasks), 1):
                results[name][seed] = outcome
                if progress:
                    progress(f"[{done}/{len(tasks)}] {name} seed {seed}")
    else:
        for done, task in enumerate(tasks, 1):
            name, seed, outcome = _task(task)
            results[name][seed] = outcome
            if progress:
                progress(f"[{done}/{len(tasks)}] {name} seed {seed}")
    return results


def summarise(results: dict[str, dict[int, dict[str, Outcome]]], slo_ms: float) -> dict:
    """Seed-averaged figures per policy and setting (the ``--json`` document)."""
    names = [*POLICIES, *(p for by_seed in results.values() for outcomes in by_seed.values() for p in outcomes)]
    policies: dict[str, dict[str, dict[str, float]]] = {p: {} for p in dict.fromkeys(names)}
    for name, by_seed in results.items():
        for policy in policies:
            rows = [by_seed[seed][policy] for seed in sorted(by_seed)]
            oracle = [by_seed[seed]["oracle"].gpu_seconds for seed in sorted(by_seed)]
            policies[policy][name] = {
                "slo_attainment": float(np.mean([r.attainment for r in rows])),
                "p99_queue_ms": float(np.mean([r.p99_queue_ms for r in rows])),
                "gpu_seconds": float(np.mean([r.gpu_seconds for r in rows])),
                "oracle_ratio": float(np.mean([r.gpu_seconds / o for r, o in zip(rows, oracle)])),
                "lowest_attainment": float(min(r.attainment for r in rows)),
                "scale_events": float(np.mean([r.scale_events for r in rows])),
            }
    return {"slo_ms": slo_ms, "settings": list(results), "policies": policies}


def goals(summary: dict) -> list[tuple[str, bool]]:
    """The issue's goals, checked on a summary."""
    pol = summary["policies"]
    names = summary["settings"]
    tri = pol["trireme"]
    att = [tri[s]["slo_attainment"] for s in names]
    ratio = [tri[s]["oracle_ratio"] for s in names]
    checks = [
        ("attainment ≥ 99.0 % in every setting", min(att) >= 0.99),
        ("attainment ≥ 99.5 % on average", float(np.mean(att)) >= 0.995),
        ("GPU-seconds ≤ 1.15× oracle in every setting", max(ratio) <= 1.15),
        ("GPU-seconds ≤ 1.10× oracle on average", float(np.mean(ratio)) <= 1.10),
    ]
    for other in ("hpa", "keda"):
        ok = all(tri[s]["slo_attainment"] >= min(pol[other][s]["slo_attainment"], 0.995) - 1e-12
                 and tri[s]["gpu_seconds"] <= 0.85 * pol[other][s]["gpu_seconds"] for s in names)
        checks.append((f"vs {other}: attainment ≥ min(theirs, 99.5 %) at ≤ 0.85× GPU-seconds", ok))
    checks.append(("vs static: ≤ 0.92× GPU-seconds",
                   all(tri[s]["gpu_seconds"] <= 0.92 * pol["static"][s]["gpu_seconds"] for s in names)))
    return checks


def table(summary: dict) -> str:
    width = max(8, *(len(p) for p in summary["policies"]))
    told = "; trireme finds the dispatch out (auto)" if summary.get("told") == "auto" else ""
    lines = [f"queue-time objective {summary['slo_ms']:g} ms; {summary.get('dispatch', 'pooled')} dispatch{told}; "
             f"means over seeds",
             f"{'setting':<12} {'policy':<{width}} {'attainment':>10} {'lowest':>7} {'p99 queue ms':>12} "
             f"{'GPU-s':>9} {'× oracle':>8} {'scale events':>12}"]
    for name in summary["settings"]:
        for policy, rows in summary["policies"].items():
            row = rows[name]
            lines.append(f"{name:<12} {policy:<{width}} {100 * row['slo_attainment']:>9.2f}% "
                         f"{100 * row['lowest_attainment']:>6.2f}% {row['p99_queue_ms']:>12.1f} "
                         f"{row['gpu_seconds']:>9.0f} {row['oracle_ratio']:>8.3f} {row['scale_events']:>12.1f}")
        lines.append("")
    tri = summary["policies"]["trireme"]
    names = summary["settings"]
    lines.append(f"trireme mean: attainment {100 * np.mean([tri[s]['slo_attainment'] for s in names]):.2f}%, "
                 f"× oracle {np.mean([tri[s]['oracle_ratio'] for s in names]):.3f}")
    lines.append("goals (set for a 100 ms objective with pooled dispatch):")
    for text, ok in goals(summary):
        lines.append(f"  [{'x' if ok else ' '}] {text}")
    return "\n".join(lines)


def plot(results: dict[str, dict[int, dict[str, Outcome]]], path: str | Path) -> None:
    """Load, replicas and queue time over time for every policy (first seed of each setting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(3, len(names), figsize=(5 * len(names), 9), squeeze=False, sharex="col")
    for col, name in enumerate(names):
        outcomes = results[name][min(results[name])]
        for policy, outcome in outcomes.items():
            rows = np.asarray(outcome.timeline)
            if not len(rows):
                continue
            if policy == "trireme":
                axes[0][col].plot(rows[:, 0], rows[:, 1], color="grey", lw=0.7)
            axes[1][col].plot(rows[:, 0], rows[:, 2] + rows[:, 3], label=policy, lw=0.9)
            axes[2][col].plot(rows[:, 0], rows[:, 4], label=policy, lw=0.7)
        axes[0][col].set_title(name)
        axes[0][col].set_ylabel("arrivals / s")
        axes[1][col].set_ylabel("replicas (ready + starting)")
        axes[2][col].set_ylabel("mean queue ms per scrape")
        axes[2][col].set_yscale("symlog", linthresh=10)
        axes[2][col].set_xlabel("simulated seconds")
    axes[1][0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``trireme bench autoscale`` (arguments from trireme.cli)."""
    import time as clock

    try:
        settings = parse_settings(args.settings)
        seeds = parse_seeds(args.seeds)
        present = [parse_present(text) for text in args.present or ()]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    began = clock.monotonic()
    try:
        results = run_benchmark(args.trace, settings, seeds, args.slo_ms, args.dispatch,
                                workers=args.workers, timeline=bool(args.plot),
                                progress=lambda line: print(line, file=sys.stderr, flush=True), present=present,
                                told=args.tell)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = summarise(results, args.slo_ms)
    summary["dispatch"] = args.dispatch
    summary["told"] = args.tell
    print(json.dumps(summary, indent=2) if args.json else table(summary))
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    print(f"done in {clock.monotonic() - began:.0f}s", file=sys.stderr)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options, on an argparse parser."""
    add = parser.add_argument
    add("--trace", required=True, help="request trace CSV (TIMESTAMP, ContextTokens, GeneratedTokens)")
    add("--settings", default="all", help="all, or a comma list of 1x-start10 … 5x-start60 (default all)")
    add("--seeds", default="1-5", help="seeds, e.g. 1-5 or 1,3 (default 1-5)")
    add("--slo-ms", type=float, default=100.0, help="queue-time objective in ms (default 100)")
    add("--dispatch", choices=("pooled", "round-robin", "random"), default="pooled",
        help="pooled: one queue, least outstanding first (default); round-robin or random: per-replica queues, "
             "each request to the next or to a random ready replica (as a Kubernetes Service spreads them)")
    add("--tell", choices=("match", "auto"), default="match",
        help="what Trireme's autoscaler is told of the dispatch: match (default) names the one used, as a user "
             "sets spec.autoscaling.dispatch; auto lets it find out from the replicas' gauges")
    add("--present", action="append", metavar="HEADROOM[/HOLD_S]",
        help="add a reference that knows the present need exactly but not the future (the oracle's need of the "
             "windows begun so far, the highest of the last HOLD_S, plus HEADROOM, launched now), e.g. 0.15 or "
             "0.05/30; repeat for several; the goals ignore it")
    add("--workers", type=int, default=2, help="processes (default 2)")
    add("--json", action="store_true", help="print the seed-averaged figures as JSON")
    add("--plot", help="draw load, replicas and queue time over time to this PNG")
