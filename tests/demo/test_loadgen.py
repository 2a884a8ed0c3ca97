"""The load generator's bookkeeping on fake time: rates, latency percentiles, pacing."""

from __future__ import annotations

import pytest

from trireme.loadgen import LatencyHistogram, LoadStats, Pacer, percentile


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("values, q, expected", [
    pytest.param([], 50, None, id="empty"),
    pytest.param([5.0], 99, 5.0, id="one"),
    pytest.param([float(i) for i in range(1, 101)], 50, 50.0, id="median-of-100"),
    pytest.param([float(i) for i in range(1, 101)], 99, 99.0, id="p99-of-100"),
    pytest.param([1.0, 2.0, 3.0], 100, 3.0, id="max"),
])
def test_nearest_rank_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_recent_figures_cover_the_window_only() -> None:
    clock = FakeClock()
    stats = LoadStats(window_s=10.0, clock=clock)
    for _ in range(50):  # 5 s at 10/s, each 40 ms
        clock.advance(0.1)
        stats.record(0.040, True, "a:8000")
    snap = stats.snapshot(target_rate=10, endpoints=1)
    assert snap.rate == pytest.approx(10.0)  # 50 answers over the 5 s elapsed so far
    assert snap.p50_ms == pytest.approx(40.0) and snap.p99_ms == pytest.approx(40.0)
    for _ in range(100):  # then 10 s at 10/s, 300 ms each: the first samples leave the window
        clock.advance(0.1)
        stats.record(0.300, True, "b:8000")
    snap = stats.snapshot()
    assert snap.p50_ms == pytest.approx(300.0) and snap.rate == pytest.approx(10.0)
    assert snap.succeeded == snap.sent == 150 and snap.failed == 0
    assert snap.by_endpoint == {"a:8000": 50, "b:8000": 100}
    # whole-run percentiles come from the histogram, within its 2 % buckets
    assert snap.total_p50_ms == pytest.approx(300.0, rel=0.02)
    assert snap.total_p99_ms == pytest.approx(300.0, rel=0.02)
    clock.advance(30)
    idle = stats.snapshot()
    assert idle.rate == 0 and idle.p50_ms is None and idle.total_p50_ms is not None


def test_failures_retries_and_errors_are_counted_apart() -> None:
    clock = FakeClock()
    stats = LoadStats(clock=clock)
    clock.advance(1)
    stats.record(0.01, False, "a:8000", retried=True)  # failed on a, sent again elsewhere
    stats.record(0.05, True, "b:8000")
    stats.record(0.02, False, "b:8000", error="b:8000: connection refused")
    snap = stats.snapshot()
    assert (snap.sent, snap.succeeded, snap.failed, snap.retried) == (3, 1, 1, 1)
    assert snap.last_error == "b:8000: connection refused"
    assert snap.p50_ms == pytest.approx(50.0)  # only answered requests have a latency that counts


def test_the_histogram_is_accurate_over_a_wide_range() -> None:
    histogram = LatencyHistogram()
    values = [0.001 * i for i in range(1, 1001)]  # 1 ms .. 1 s
    for value in values:
        histogram.add(value)
    for q in (50, 90, 99):
        assert histogram.percentile(q) == pytest.approx(percentile(values, q), rel=0.02)
    assert LatencyHistogram().percentile(50) is None


def test_the_pacer_spaces_sends_and_never_bursts_to_catch_up() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(rate=10, clock=clock, max_lag_s=1.0)
    assert [pacer.next_send() for _ in range(3)] == pytest.approx([0.0, 0.1, 0.2])
    clock.advance(5.0)  # every worker was busy for 5 s
    assert pacer.next_send() == pytest.approx(5.0)
    assert pacer.next_send() == pytest.approx(5.1)
    pacer.rate = 20
    assert pacer.next_send() == pytest.approx(5.2)
    assert pacer.next_send() == pytest.approx(5.25)
    pacer.rate = 0
    assert pacer.next_send() is None
