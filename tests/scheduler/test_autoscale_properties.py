"""Properties of the autoscaler that must hold for any metrics: bounds, never shrinking on bad data,
no flapping when load wavers around a boundary (fake time throughout), and replica counts that grow with load
and with its uncertainty."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trireme.scheduler.autoscale import (AutoscalerSettings, Dispatch, MetricSample, decide, replicas_for_queue_time,
                                         servers_for_queue_time)

GAUGE = st.one_of(st.none(), st.sampled_from([math.nan, math.inf, -math.inf, -1.0]), st.floats(0, 1e6))


@st.composite
def scrape_series(draw: st.DrawFn) -> list[MetricSample]:
    """Plausible counters with arbitrary glitches: NaN, None, negative or huge values, resets."""
    count = draw(st.integers(0, 14))
    samples, done, queue, compute = [], 0.0, 0.0, 0.0
    for i in range(count):
        done += draw(st.floats(0, 2000))
        queue += draw(st.floats(0, 1e9))
        compute += draw(st.floats(0, 1e9))
        sample = MetricSample(5.0 * (i + 1), draw(st.floats(0, 5000)), done, queue, compute,
                              float(draw(st.integers(0, 40))), float(draw(st.integers(0, 8))))
        if draw(st.booleans()) and draw(st.booleans()):
            field = draw(st.sampled_from(MetricSample.REQUIRED))
            sample = replace(sample, **{field: draw(GAUGE)})
        samples.append(sample)
    return samples


BOUNDS = st.tuples(st.integers(1, 8), st.integers(0, 30)).map(lambda t: (t[0], t[0] + t[1]))


@given(samples=scrape_series(), gauges=st.lists(st.lists(GAUGE.filter(lambda g: g is not None), max_size=6),
                                                 min_size=14, max_size=14),
       current=st.integers(1, 40))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_auto_dispatch_takes_any_per_replica_gauges(samples: list[MetricSample], gauges: list[list[float]],
                                                    current: int) -> None:
    """Whatever the per-replica gauges say (NaN, infinities, negatives, none), ``auto`` decides within the bounds,
    and only finite, non-negative gauges can make it size per replica."""
    auto = AutoscalerSettings.for_queue_time(100, max_replicas=32, slots_per_replica=4, dispatch=Dispatch.AUTO)
    samples = [replace(s, replica_pending=tuple(g)) for s, g in zip(samples, gauges)]
    decision = decide(samples, samples[-1].time if samples else 0.0, current, auto)
    assert 1 <= decision.desired_replicas <= 32 or decision.desired_replicas == current
    if decision.state.seen_per_replica:
        assert sum(all(math.isfinite(p) and p >= 0 for p in s.replica_pending or ()) for s in samples) >= 3


@given(samples=scrape_series(), bounds=BOUNDS, current=st.integers(1, 40), slo=st.floats(1, 5000))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_never_outside_the_bounds(samples: list[MetricSample], bounds: tuple[int, int], current: int,
                                  slo: float) -> None:
    lo, hi = bounds
    current = max(lo, min(hi, current))
    config = AutoscalerSettings.for_queue_time(slo, min_replicas=lo, max_replicas=hi)
    now = samples[-1].time if samples else 0.0
    decision = decide(samples, now, current, config, None)
    assert lo <= decision.desired_replicas <= hi
    if not decision.metrics_available:
        assert decision.desired_replicas >= current


@given(rate=st.floats(1, 400), current=st.integers(1, 32),
       bad=st.sampled_from(MetricSample.REQUIRED), value=st.sampled_from([None, math.nan, math.inf, -1.0]),
       stale=st.booleans())
@settings(max_examples=100, deadline=None)
def test_bad_metrics_never_decrease(rate: float, current: int, bad: str, value: float | None, stale: bool) -> None:
    config = AutoscalerSettings.for_queue_time(100, slots_per_replica=4)
    samples = [MetricSample(5.0 * i, rate * 0.3, rate * 5 * i, 0.0, rate * 5 * i * 3e5, float(current), 0.0)
               for i in range(1, 14)]
    first = decide(samples, samples[-1].time, current, config, None)
    if stale:
        now = samples[-1].time + 120.0
    else:
        samples[-1] = replace(samples[-1], **{bad: value})
        now = samples[-1].time
    held = decide(samples, now, first.desired_replicas, config, first.state)
    assert not held.metrics_available and held.action == "hold"
    assert held.desired_replicas >= first.desired_replicas


@given(low=st.floats(20, 150), swing=st.floats(0.02, 0.3), half_period=st.integers(1, 5))
@settings(max_examples=40, deadline=None)
def test_flapping_load_changes_at_most_once_per_window(low: float, swing: float, half_period: int) -> None:
    """Load alternating every ``half_period`` scrapes (shorter than the down window) between two levels
    never makes the count turn around within a window: no removal soon after an addition and no
    addition soon after a removal (steps in the same direction may follow each other)."""
    config = AutoscalerSettings.for_queue_time(100, slots_per_replica=4)
    samples: list[MetricSample] = []
    done = compute = 0.0
    current, state, changes = 8, None, []
    for i in range(1, 121):  # ten minutes
        rate = low * (1 + swing) if (i // half_period) % 2 else low
        done += rate * 5
        compute += rate * 5 * 0.3e6
        samples.append(MetricSample(5.0 * i, rate * 0.3, done, 0.0, compute, float(current), 0.0))
        decision = decide(samples[-20:], 5.0 * i, current, config, state)
        state = decision.state
        if decision.desired_replicas != current:
            changes.append((5.0 * i, current, decision.desired_replicas))
        current = decision.desired_replicas
    window = config.scale_down.min_window_s
    settled = [c for c in changes if c[0] > 60.0]  # the first minute settles from an arbitrary count
    for (t1, a1, b1), (t2, a2, b2) in zip(settled, settled[1:]):
        if (b1 > a1) != (b2 > a2):
            assert t2 - t1 >= window, changes
    assert len(settled) <= 2 * (600 - 60) / window


@given(rate=st.floats(1.0, 300.0), spread=st.floats(0.0, 50.0), more=st.floats(0.0, 50.0),
       target=st.sampled_from([0.05, 0.1, 0.25, 0.5]))
def test_more_uncertainty_never_needs_fewer_servers(rate: float, spread: float, more: float, target: float) -> None:
    fewer = servers_for_queue_time(rate, 0.3, target, 0.01, rate_spread=spread)
    assert servers_for_queue_time(rate, 0.3, target, 0.01, rate_spread=spread + more) >= fewer >= \
        servers_for_queue_time(rate, 0.3, target, 0.01)


@given(rate=st.floats(0.1, 300.0), spread=st.floats(0.0, 30.0), slots=st.integers(1, 8),
       target=st.sampled_from([0.05, 0.1, 0.25, 0.5]))
def test_separate_queues_never_need_fewer_replicas_than_one_pool(rate: float, spread: float, slots: int,
                                                                  target: float) -> None:
    """Pooling only helps: replicas queueing on their own never get by with fewer than one shared queue."""
    pooled = replicas_for_queue_time(rate, 0.3, target, 0.01, slots, Dispatch.POOLED, rate_spread=spread)
    assert replicas_for_queue_time(rate, 0.3, target, 0.01, slots, Dispatch.PER_REPLICA, rate_spread=spread) >= pooled
