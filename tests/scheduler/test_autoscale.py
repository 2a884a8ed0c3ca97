"""The autoscaler's decisions: jumps to the count the load needs, headroom for bursty load and steps, tolerance,
rate limits, bounds, the ratio signals, and holding (never shrinking) on metrics it cannot trust.
Time is an argument everywhere: these tests run on fake time."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
from trireme.scheduler.autoscale import (
    AutoscalerSettings, AutoscalerState, Decision, Dispatch, MetricSample, ScaleDownPolicy, Signal,
    choose_scale_down_victim, decide, effective_dispatch, replicas_for_queue_time, servers_for_queue_time,
    stranded_requests,
)

SETTINGS = AutoscalerSettings.for_queue_time(100, max_replicas=32, slots_per_replica=4)
SERVICE_S = 0.3


@dataclass
class Feed:
    """A service seen through 5 s scrapes: counters grow with the load given for each step."""

    time: float = 0.0
    done: float = 0.0
    queue_us: float = 0.0
    compute_us: float = 0.0

    def __post_init__(self) -> None:
        self.samples: list[MetricSample] = []

    def step(self, rate: float, ready: int, *, queue_ms: float = 0.0, service_s: float = SERVICE_S,
             pending: float | None = None, starting: int = 0, gpu: float | None = None, seconds: float = 5.0,
             **override: object) -> MetricSample:
        self.time += seconds
        completed = rate * seconds
        self.done += completed
        self.queue_us += completed * queue_ms * 1000
        self.compute_us += completed * service_s * 1e6
        in_flight = rate * service_s if pending is None else pending
        sample = MetricSample(self.time, in_flight, self.done, self.queue_us, self.compute_us, float(ready),
                              float(starting), gpu)
        sample = replace(sample, **override)  # type: ignore[arg-type]
        self.samples.append(sample)
        return sample

    def steady(self, rate: float, ready: int, steps: int = 13, **kw: object) -> list[MetricSample]:
        for _ in range(steps):
            self.step(rate, ready, **kw)  # type: ignore[arg-type]
        return self.samples


def replicas_for(rate: float, settings: AutoscalerSettings = SETTINGS) -> int:
    servers = servers_for_queue_time(rate, SERVICE_S, settings.target / 1000, settings.miss_budget)
    return math.ceil(servers / 4)


def decide_on(samples: list[MetricSample], current: int, settings: AutoscalerSettings = SETTINGS,
              state: AutoscalerState | None = None, now: float | None = None) -> Decision:
    return decide(samples, samples[-1].time if now is None else now, current, settings, state)


# -- the queueing model ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "service", "target", "budget", "expected"), [
    pytest.param(0.0, 0.3, 0.1, 0.01, 0, id="no-load-no-servers"),
    pytest.param(10.0, 0.1, 0.1, 0.01, 4, id="one-erlang-needs-four"),
    pytest.param(100.0, 0.3, 0.1, 0.01, 38, id="thirty-erlangs"),
    pytest.param(100.0, 0.3, 0.1, 0.001, 41, id="tighter-budget-more-servers"),
    pytest.param(100.0, 0.3, 0.5, 0.01, 33, id="looser-target-fewer-servers"),
])
def test_servers_for_queue_time(rate: float, service: float, target: float, budget: float, expected: int) -> None:
    assert servers_for_queue_time(rate, service, target, budget) == expected


@pytest.mark.parametrize(("rate", "spread", "target", "expected"), [
    pytest.param(100.0, 0.0, 0.1, 38, id="no-spread-is-the-point-estimate"),
    pytest.param(100.0, 5.0, 0.1, 39, id="spread-adds-a-server-at-a-tight-target"),
    pytest.param(100.0, 0.0, 0.5, 33, id="loose-target-point-estimate"),
    pytest.param(100.0, 5.0, 0.5, 35, id="spread-adds-more-at-a-loose-target"),
    pytest.param(100.0, 50.0, 0.1, 74, id="a-rate-that-may-run-far-higher-needs-far-more"),
])
def test_servers_for_an_uncertain_rate(rate: float, spread: float, target: float, expected: int) -> None:
    assert servers_for_queue_time(rate, 0.3, target, 0.01, rate_spread=spread) == expected


def test_more_load_never_needs_fewer_servers() -> None:
    counts = [servers_for_queue_time(rate, 0.3, 0.1, 0.01) for rate in range(1, 200, 7)]
    assert counts == sorted(counts)


@pytest.mark.parametrize(("rate", "dispatch", "factor", "expected"), [
    pytest.param(100.0, Dispatch.POOLED, 1.0, 10, id="pooled-is-servers-over-slots"),
    pytest.param(100.0, Dispatch.PER_REPLICA, 1.0, 28, id="per-replica-queues-need-far-more"),
    pytest.param(100.0, Dispatch.PER_REPLICA, 0.15, 13, id="per-replica-calibrated-to-short-waits"),
    pytest.param(10.0, Dispatch.POOLED, 1.0, 2, id="pooled-small-load"),
    pytest.param(10.0, Dispatch.PER_REPLICA, 1.0, 3, id="per-replica-small-load"),
    pytest.param(0.0, Dispatch.PER_REPLICA, 1.0, 0, id="no-load-no-replicas"),
])
def test_replicas_for_queue_time(rate: float, dispatch: Dispatch, factor: float, expected: int) -> None:
    assert replicas_for_queue_time(rate, 0.3, 0.1, 0.01, 4, dispatch, factor) == expected


def test_pooled_replicas_are_the_servers_in_whole_replicas() -> None:
    for rate in range(1, 300, 11):
        assert replicas_for_queue_time(rate, 0.3, 0.1, 0.01, 4) == math.ceil(
            servers_for_queue_time(rate, 0.3, 0.1, 0.01) / 4)


def test_per_replica_dispatch_scales_further_and_learns_shorter_waits() -> None:
    """The same load behind a plain Service (each replica queues on its own) needs more replicas, and when the
    replicas' queues turn out far shorter than random splitting predicts (round-robin), the calibration may
    learn a factor below what pooled dispatch allows."""
    per_replica = replace(SETTINGS, dispatch=Dispatch.PER_REPLICA)
    feed = Feed()
    samples = feed.steady(100.0, 14, steps=12, queue_ms=0.0)
    split, pooled = decide_on(samples, 14, per_replica), decide_on(samples, 14)
    assert split.observed.needed_replicas > pooled.observed.needed_replicas
    assert "each replica queueing on its own" in split.reason and "on its own" not in pooled.reason
    state_pooled = state_split = None
    for _ in range(60):
        feed.step(100.0, 12, queue_ms=0.2)
        state_pooled = decide_on(feed.samples, 12, SETTINGS, state_pooled).state
        state_split = decide_on(feed.samples, 12, per_replica, state_split).state
    assert state_pooled.capacity.queue_factor >= 0.5 - 1e-9
    assert state_split.capacity.queue_factor < 0.5


@pytest.mark.parametrize(("pending", "slots", "expected"), [
    pytest.param((4, 4, 4), 4, 0, id="all-busy-none-waiting"),
    pytest.param((6, 6, 6), 4, 0, id="all-waiting-no-free-slot"),
    pytest.param((1, 2, 0), 4, 0, id="free-slots-none-waiting"),
    pytest.param((7, 1), 4, 3, id="three-waiting-three-free"),
    pytest.param((9, 3), 4, 1, id="five-waiting-one-free"),
    pytest.param((5.5, 2.5, 4), 4, 1.5, id="in-flight-as-means"),
    pytest.param((), 4, 0, id="no-replicas"),
])
def test_stranded_requests(pending: tuple[float, ...], slots: float, expected: float) -> None:
    assert stranded_requests(pending, slots) == pytest.approx(expected)


AUTO = replace(SETTINGS, dispatch=Dispatch.AUTO)
STRANDED = (7.0, 1.0, 4.0)
"""Per-replica in-flight requests where three wait at one replica beside three free slots at another."""
BALANCED = (4.0, 4.0, 4.0)


@pytest.mark.parametrize(("pattern", "seen"), [
    pytest.param([STRANDED] * 3, True, id="three-scrapes-in-a-row"),
    pytest.param([STRANDED, BALANCED] * 3, True, id="three-within-a-minute"),
    pytest.param([STRANDED] * 2 + [BALANCED] * 10, False, id="two-are-not-enough"),
    pytest.param(([STRANDED] + [BALANCED] * 6) * 3, False, id="three-spread-over-two-minutes"),
    pytest.param([BALANCED] * 12, False, id="a-gateway-never-strands"),
    pytest.param([None] * 12, False, id="no-per-replica-gauges"),
])
def test_auto_dispatch_switches_once_requests_wait_beside_free_slots(pattern: list, seen: bool) -> None:
    """``auto`` sizes as pooled until the replicas' gauges show requests waiting at one replica while another has
    a free slot in three scrapes within a minute; then per replica, saying so, with the calibration started
    over."""
    feed = Feed()
    state = decide_on(feed.steady(40.0, 3, steps=13, queue_ms=0.0), 3, AUTO).state
    state = replace(state, capacity=replace(state.capacity, queue_factor=1.7, queue_evidence=50.0))
    decision = None
    for pending in pattern:
        feed.step(40.0, 3, replica_pending=pending)
        decision = decide_on(feed.samples, 3, AUTO, state)
        state = decision.state
    assert decision is not None and state.seen_per_replica is seen
    assert effective_dispatch(AUTO, state) is (Dispatch.PER_REPLICA if seen else Dispatch.POOLED)
    assert decision.observed.dispatch == ("perReplica" if seen else "pooled")
    assert ("requests were seen waiting at one replica while another had a free slot" in decision.reason) is seen
    if seen:
        assert state.capacity.queue_factor == pytest.approx(1.0, abs=0.05)  # the pooled model's error forgotten
        per_replica = decide_on(feed.samples, 3, replace(SETTINGS, dispatch=Dispatch.PER_REPLICA))
        assert decision.observed.needed_replicas == per_replica.observed.needed_replicas
    else:
        assert decision.observed.needed_replicas == decide_on(feed.samples, 3, SETTINGS, state).observed.needed_replicas


def test_auto_dispatch_is_pooled_exactly_until_it_sees_otherwise() -> None:
    """Without stranded requests ``auto`` decides exactly as ``pooled`` on every step of a ramp."""
    feed = Feed()
    auto_state = pooled_state = None
    for step in range(40):
        rate = 20.0 + 3.0 * step
        feed.step(rate, 6, queue_ms=5.0, replica_pending=(rate * SERVICE_S / 6,) * 6)
        auto = decide_on(feed.samples, 6, AUTO, auto_state)
        pooled = decide_on(feed.samples, 6, SETTINGS, pooled_state)
        auto_state, pooled_state = auto.state, pooled.state
        assert (auto.desired_replicas, auto.reason) == (pooled.desired_replicas, pooled.reason)
    assert not auto_state.seen_per_replica


@pytest.mark.parametrize(("learned", "seen"), [(None, False), (0.5, True), (1.0, True), (4.0, False)],
                         ids=["unknown-slots-no-judgement", "half-a-slot-counts-as-one", "one-slot", "four-slots"])
def test_auto_dispatch_judges_with_the_slots_decide_sizes_for(learned: float | None, seen: bool) -> None:
    """Without the slots in the settings, the learned concurrency judges, rounded as sizing rounds it (at least
    one): behind a split, busy ÷ ready learns less than a replica's slots, as some replicas idle."""
    learning = replace(AUTO, slots_per_replica=None)
    feed = Feed()
    state = decide_on(feed.steady(10.0, 2, steps=13), 2, learning).state
    state = replace(state, capacity=replace(state.capacity, slots_per_replica=learned))
    for _ in range(3):
        feed.step(10.0, 2, replica_pending=(3.0, 0.0))  # two waiting at one replica while the other idles
        state = decide_on(feed.samples, 2, learning, state).state
    assert state.seen_per_replica is seen


def test_a_set_dispatch_ignores_the_gauges() -> None:
    feed = Feed()
    feed.steady(40.0, 3, steps=13)
    state = None
    for _ in range(6):
        feed.step(40.0, 3, replica_pending=STRANDED)
        state = decide_on(feed.samples, 3, SETTINGS, state).state
    assert not state.seen_per_replica and effective_dispatch(SETTINGS, state) is Dispatch.POOLED


# -- decisions on good metrics ---------------------------------------------------------------------------------

STEADY = replicas_for(100.0)


@pytest.mark.parametrize(("name", "rate", "current", "expected_action", "expected"), [
    ("steady-at-needed-count", 100.0, STEADY, "steady", STEADY),
    ("jumps-to-needed-in-one-decision", 100.0, STEADY - 3, "scale-up", STEADY),
    ("small-drop-within-tolerance-stays", 100.0 * 0.95, STEADY, "steady", STEADY),
    ("drop-waits-for-window", 40.0, STEADY, "steady", STEADY),
    ("no-scale-down-before-a-window-of-history", 0.0, STEADY, "steady", STEADY),
    ("above-max-is-max", 2000.0, 20, "scale-up", 32),
])
def test_decisions(name: str, rate: float, current: int, expected_action: str, expected: int) -> None:
    decision = decide_on(Feed().steady(rate, current), current)
    assert (decision.action, decision.desired_replicas) == (expected_action, expected), decision.reason
    assert decision.metrics_available


def test_scale_up_rate_limit_doubles_at_most() -> None:
    decision = decide_on(Feed().steady(300.0, 3), 3)
    assert decision.desired_replicas == 7  # max(100 %, 4 replicas) per 15 s
    assert "rate limit" in decision.reason


def test_scale_down_after_window_then_rate_limited() -> None:
    feed = Feed()
    feed.steady(100.0, STEADY)
    state, current = None, STEADY
    for _ in range(12):  # a minute of lower load
        decision = decide_on(feed.samples, current, state=state)
        state, current = decision.state, decision.desired_replicas
        feed.step(20.0, current)
    assert current < STEADY
    downs = [c for c in state.changes if c[2] < c[1]]
    assert downs and all(before - after <= max(2, before // 4) for _, before, after in downs)


def test_scale_down_waits_for_the_learned_start_up_delay() -> None:
    feed, state = Feed(), None

    def step(rate: float, ready: int, starting: int = 0) -> Decision:
        nonlocal state
        feed.step(rate, ready, starting=starting)
        decision = decide_on(feed.samples, ready + starting, state=state)
        state = decision.state
        return decision

    step(50.0, 4)
    added = step(150.0, 4).desired_replicas  # scale-up decided at t=10
    assert added > 4
    for _ in range(11):
        step(150.0, 4, starting=added - 4)
    decision = step(150.0, added)  # seen ready at t=70
    assert decision.state.capacity.startup_delay_s == pytest.approx(60.0)
    for _ in range(8):  # 40 s of low load: the 30 s minimum window would have let go by now
        decision = step(5.0, added)
    assert decision.desired_replicas == added and "stabilising over 45s" in decision.reason  # 0.75 × 60 s


def test_min_replicas_when_idle() -> None:
    settings = replace(SETTINGS, min_replicas=2, scale_down=ScaleDownPolicy(stabilization_window_s=0))
    decision = decide_on(Feed().steady(0.0, 5), 5, settings)
    assert decision.desired_replicas == 3  # 25 % or 2 per period, towards min 2
    feed = Feed(time=100.0)
    later = decide_on(feed.steady(0.0, 2), 2, settings, decision.state)
    assert later.desired_replicas == 2


def test_below_min_goes_to_min_at_once() -> None:
    settings = replace(SETTINGS, min_replicas=4)
    assert decide_on(Feed().steady(0.0, 1), 1, settings).desired_replicas == 4


def test_backlog_adds_replicas() -> None:
    quiet = decide_on(Feed().steady(50.0, 5), 5)
    backlog = decide_on(Feed().steady(50.0, 5, pending=600.0, queue_ms=2000.0), 5)
    assert backlog.desired_replicas > quiet.desired_replicas


def test_rising_load_scales_ahead_of_the_trend() -> None:
    feed = Feed()
    for i in range(13):
        feed.step(40.0 + 5.0 * i, 8)
    decision = decide_on(feed.samples, 8)
    assert decision.observed.forecast_rate > decision.observed.arrival_rate
    assert decision.desired_replicas > replicas_for(decision.observed.arrival_rate)


def test_a_step_in_load_is_sized_on_the_newest_scrapes() -> None:
    feed, current = Feed(), replicas_for(60.0)
    feed.steady(60.0, current)
    feed.step(150.0, current)
    feed.step(150.0, current)
    decision = decide_on(feed.samples, current)
    assert decision.observed.arrival_rate < 100.0  # the 30 s level has not caught up yet
    assert decision.desired_replicas >= replicas_for(150.0)
    lagging = decide_on(feed.samples, current, replace(SETTINGS, surge_window_s=0.0))
    assert lagging.observed.sizing_rate < decision.observed.sizing_rate
    assert lagging.desired_replicas < decision.desired_replicas


def test_a_rise_within_the_tolerance_band_is_left_to_the_level() -> None:
    """Acting on a 10 s rate a little above the forecast would add a replica on one burst and take it
    away on the level: the count would flap."""
    feed = Feed()
    feed.steady(100.0, STEADY)
    feed.step(112.0, STEADY)
    feed.step(112.0, STEADY)
    decision = decide_on(feed.samples, STEADY)
    assert decision.observed.sizing_rate < 112.0


@pytest.mark.parametrize("slope, capped", [
    pytest.param(0.1, False, id="gentle-ramp-carried-a-start-up-delay-ahead"),
    pytest.param(2.0, True, id="steep-rise-capped-above-the-newest-rate"),
])
def test_the_forecast_runs_at_most_the_cap_ahead_of_the_newest_rate(slope: float, capped: bool) -> None:
    feed = Feed()
    for i in range(13):
        feed.step(80.0 + slope * 5.0 * i, STEADY)
    newest = 80.0 + slope * 5.0 * 11.5  # the last two scrape intervals
    decision = decide_on(feed.samples, STEADY)
    uncapped = decide_on(feed.samples, STEADY, replace(SETTINGS, forecast_cap=None))
    assert uncapped.observed.forecast_rate > uncapped.observed.arrival_rate
    if capped:
        assert decision.observed.forecast_rate == pytest.approx(newest * (1 + SETTINGS.forecast_cap), rel=0.01)
        assert uncapped.observed.forecast_rate > decision.observed.forecast_rate
        assert uncapped.desired_replicas > decision.desired_replicas
    else:
        assert decision.observed.forecast_rate == pytest.approx(uncapped.observed.forecast_rate)
        assert decision.observed.forecast_rate > newest


def test_a_fall_starts_the_scale_down_window_at_once() -> None:
    """After an abrupt fall the newest rate replaces the forecast: the 30 s level still remembers the old load,
    but the scale-down window runs from the fall, not from when the level has caught up."""
    feed, current = Feed(), replicas_for(150.0)
    state, window = None, SETTINGS.scale_down.min_window_s
    for _ in range(13):
        feed.step(150.0, current)
        decision = decide_on(feed.samples, current, state=state)
        state = decision.state
    fell_at = feed.time
    while current == replicas_for(150.0) and feed.time < fell_at + 120.0:
        feed.step(50.0, current)
        decision = decide_on(feed.samples, current, state=state)
        state, current = decision.state, decision.desired_replicas
        if feed.time == fell_at + 10.0:
            assert decision.observed.arrival_rate > 100.0  # the level has not caught up yet
            assert decision.observed.sizing_rate < 60.0
            assert decision.action == "steady"  # a fall, too, has to last the whole window
    # The two scrapes that show the fall, then the window; the level alone would take its own 30 s more.
    assert feed.time <= fell_at + 10.0 + window
    assert current < replicas_for(150.0)


def _play(feed: Feed, state: AutoscalerState | None, current: int, rate: float, seconds: float,
          settings: AutoscalerSettings = SETTINGS, **kw: object) -> tuple[AutoscalerState | None, int, list[Decision]]:
    """Decide after every 5 s scrape of ``rate`` for ``seconds``, applying each decision at once."""
    decisions = []
    for _ in range(int(seconds // 5)):
        feed.step(rate, current, **kw)  # type: ignore[arg-type]
        decision = decide_on(feed.samples, current, settings, state)
        state, current = decision.state, decision.desired_replicas
        decisions.append(decision)
    return state, current, decisions


def _first(decisions: list[Decision], action: str) -> int | None:
    """Index of the first decision with ``action`` (one per 5 s)."""
    return next((i for i, d in enumerate(decisions) if d.action == action), None)


@pytest.mark.parametrize("queue_ms, window, grows", [
    pytest.param(60.0, None, True, id="undone-while-requests-queued-doubles-the-window"),
    pytest.param(0.0, None, False, id="undone-without-queueing-leaves-it"),
    pytest.param(60.0, 30.0, False, id="a-window-set-in-the-spec-never-grows"),
])
def test_a_scale_down_undone_while_requests_queue_grows_the_window(queue_ms: float, window: float | None,
                                                                   grows: bool) -> None:
    """Bursts that come back before a replica could start again make every scale-down between them cost the
    next burst: the automatic window grows so the replicas are kept through the gaps."""
    settings = replace(SETTINGS, scale_down=ScaleDownPolicy(stabilization_window_s=window))
    feed, high = Feed(), replicas_for(150.0)
    state, current, _ = _play(feed, None, high, 150.0, 65, settings)
    state, current, before = _play(feed, state, current, 50.0, 90, settings)
    first_drop = _first(before, "scale-down")
    assert first_drop is not None and current < high
    state, current, back = _play(feed, state, current, 150.0, 15, settings, queue_ms=queue_ms)
    assert _first(back, "scale-up") is not None  # the burst is back: replicas asked for again
    assert state is not None and state.window_growth == pytest.approx(2.0 if grows else 1.0, rel=0.05)
    state, current, after = _play(feed, state, current, 50.0, 120, settings)
    second_drop = _first(after, "scale-down")
    assert second_drop is not None
    if grows:  # the next fall has to last twice as long
        assert second_drop >= first_drop + 4  # 20 s or more later (the window, 30 s, about doubled)
        assert "after scale-downs undone while requests queued" in after[second_drop - 1].reason
    else:
        assert abs(second_drop - first_drop) <= 1


def test_a_grown_window_shrinks_back_when_scale_downs_hold() -> None:
    state = AutoscalerState(window_growth=4.0, window_growth_at=0.0)
    feed = Feed(time=600.0)
    feed.steady(100.0, STEADY)
    decision = decide_on(feed.samples, STEADY, state=state)
    # ten minutes later: 1 + 3/e
    assert decision.state.window_growth == pytest.approx(1.0 + 3.0 * math.exp(-(feed.time / 600.0)), rel=1e-6)


def _alternating(swing: float) -> Feed:
    feed = Feed()
    for i in range(13):
        feed.step(100.0 + (swing if i % 2 else -swing), STEADY)
    return feed


def test_bursty_load_gets_headroom_when_scaling_up() -> None:
    smooth, bursty = decide_on(_alternating(0.0).samples, STEADY), decide_on(_alternating(40.0).samples, STEADY)
    assert smooth.action == "steady" and smooth.observed.sizing_rate == pytest.approx(100.0)
    assert smooth.observed.rate_spread == pytest.approx(0.0, abs=1e-9)
    # 5 s rates alternating ±40 around the same level: a scrape-to-scrape scatter of ~80 / (0.6745·√2) req/s.
    assert bursty.observed.rate_spread > 10.0
    assert bursty.action == "scale-up" and bursty.desired_replicas > smooth.desired_replicas
    flat = decide_on(_alternating(40.0).samples, STEADY, replace(SETTINGS, rate_confidence=0.0))
    assert flat.desired_replicas < bursty.desired_replicas


def test_a_short_start_up_delay_keeps_more_headroom_for_bursts() -> None:
    """Arrivals over a short horizon average fewer 5 s rates, so they stray further from the level."""
    samples = _alternating(40.0).samples
    short = decide_on(samples, STEADY, replace(SETTINGS, startup_delay_prior_s=10.0))
    long = decide_on(samples, STEADY, replace(SETTINGS, startup_delay_prior_s=120.0))
    assert short.observed.rate_spread > long.observed.rate_spread
    assert short.desired_replicas >= long.desired_replicas


def test_a_step_of_the_level_is_not_burstiness() -> None:
    feed = Feed()
    feed.steady(100.0, STEADY, steps=7)
    feed.steady(30.0, STEADY, steps=6)  # the drop is inside the trend window
    decision = decide_on(feed.samples, STEADY)
    assert decision.observed.sizing_rate == pytest.approx(decision.observed.forecast_rate)


def test_scale_down_never_below_what_scale_up_would_ask() -> None:
    """Else bursty load flaps: a replica removed on the level comes back on the next burst."""
    settings = replace(SETTINGS, scale_down=ScaleDownPolicy(stabilization_window_s=0))
    for swing in (0.0, 40.0):
        samples = _alternating(swing).samples
        up = decide_on(samples, STEADY, settings)
        above = up.desired_replicas + 4
        down = decide_on(samples, above, settings)
        assert down.action == "scale-down" and up.desired_replicas <= down.desired_replicas < above


@pytest.mark.parametrize(("name", "signal", "target", "kw", "current", "expected"), [
    ("pending-ratio", Signal.PENDING_REQUESTS, 4.0, {"pending": 40.0}, 5, 10),
    ("pending-within-tolerance", Signal.PENDING_REQUESTS, 4.0, {"pending": 21.0}, 5, 5),
    ("request-rate-ratio", Signal.REQUEST_RATE, 10.0, {}, 4, 5),
    ("gpu-ratio", Signal.GPU_UTILIZATION, 60.0, {"gpu": 90.0}, 4, 6),
])
def test_ratio_signals(name: str, signal: Signal, target: float, kw: dict, current: int, expected: int) -> None:
    settings = AutoscalerSettings(signal=signal, target=target, max_replicas=32)
    decision = decide_on(Feed().steady(50.0, current, **kw), current, settings)
    assert decision.desired_replicas == expected, decision.reason


def test_gpu_signal_without_gpu_metric_holds() -> None:
    settings = AutoscalerSettings(signal=Signal.GPU_UTILIZATION, target=60.0)
    decision = decide_on(Feed().steady(50.0, 4), 4, settings)
    assert decision.action == "hold" and not decision.metrics_available


def test_gpu_guard_blocks_scale_down() -> None:
    settings = replace(SETTINGS, scale_down=ScaleDownPolicy(stabilization_window_s=0))
    decision = decide_on(Feed().steady(5.0, 10, gpu=97.0), 10, settings)
    assert decision.desired_replicas == 10 and "GPU utilisation" in decision.reason


def test_latency_objective_overrides_the_signal() -> None:
    settings = AutoscalerSettings(signal=Signal.PENDING_REQUESTS, target=4.0, latency_slo_ms=200.0)
    decision = decide_on(Feed().steady(20.0, 4, pending=16.0, queue_ms=300.0), 4, settings)
    assert decision.desired_replicas >= 5 and "latency" in decision.reason


# -- holding on metrics that cannot be trusted ---------------------------------------------------------------

NAN, INF = math.nan, math.inf


def _corrupt(**fields: object) -> list[MetricSample]:
    samples = Feed().steady(20.0, 10)
    samples[-1] = replace(samples[-1], **fields)  # type: ignore[arg-type]
    return samples


HOLDS = [
    ("no-samples", [], "no samples"),
    ("one-sample", Feed().steady(20.0, 10)[:1], "fewer than two"),
    ("missing-pending", _corrupt(pending_requests=None), "pending_requests missing"),
    ("missing-ready", _corrupt(ready_replicas=None), "ready_replicas missing"),
    ("nan-counter", _corrupt(request_success=NAN), "request_success is nan"),
    ("inf-queue", _corrupt(queue_duration_us=INF), "queue_duration_us is inf"),
    ("negative-gauge", _corrupt(pending_requests=-1.0), "pending_requests is -1"),
    ("several-series", _corrupt(several_series=("request_success",)), "several series"),
    ("nan-gpu", _corrupt(gpu_utilization=NAN), "gpu_utilization is nan"),
]


@pytest.mark.parametrize(("name", "samples", "words"), HOLDS, ids=[h[0] for h in HOLDS])
def test_hold_on_bad_metrics(name: str, samples: list[MetricSample], words: str) -> None:
    decision = decide(samples, 65.0, 10, SETTINGS, None)
    assert decision.action == "hold" and not decision.metrics_available
    assert decision.desired_replicas == 10
    assert words in decision.reason


def test_hold_on_stale_metrics() -> None:
    samples = Feed().steady(20.0, 10)
    decision = decide(samples, samples[-1].time + 31.0, 10, SETTINGS, None)
    assert decision.action == "hold" and "stale" in decision.reason


def test_hold_when_every_counter_reset() -> None:
    samples = Feed().steady(20.0, 10, steps=3)
    samples = [replace(s, request_success=100.0 - i) for i, s in enumerate(samples)]
    assert decide_on(samples, 10).action == "hold"


def test_hold_keeps_a_pending_scale_up() -> None:
    feed = Feed()
    up = decide_on(feed.steady(100.0, STEADY - 3), STEADY - 3)
    held = decide(feed.samples, feed.time + 60.0, STEADY - 3, SETTINGS, up.state)
    assert held.action == "hold" and held.desired_replicas == up.desired_replicas


# -- victims ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("loads", "victim"), [
    pytest.param({"a": 3, "b": 1, "c": 2}, "b", id="least-loaded"),
    pytest.param({"b": 0, "a": 0}, "a", id="ties-by-name"),
    pytest.param([("x", 2.5), ("y", 0.5)], "y", id="pairs"),
])
def test_choose_scale_down_victim(loads: object, victim: str) -> None:
    assert choose_scale_down_victim(loads) == victim  # type: ignore[arg-type]


def test_choose_scale_down_victim_needs_replicas() -> None:
    with pytest.raises(ValueError):
        choose_scale_down_victim({})
