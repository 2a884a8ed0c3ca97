"""The demo's scenario: which actions come due as the cluster changes, and the autoscaling the demo
configures, checked against the autoscaler's own decisions on synthetic load."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from trireme.demo import (PEAK_REPLICAS, Apply, Scale, Scenario, SetRate, defragmentation_services,
                          defragmentation_steps, demo_autoscaling, sample_services, scaling_story)
from trireme.view import AutoscalerView, ClusterView, EventView, ReplicaView, ServiceView


def view(desired: int, ready: int, pods: int | None = None, action: str = "", rate: float = 0.0) -> ClusterView:
    replicas = tuple(ReplicaView(name=f"simple-r{i}", service="simple", state="Ready" if i < ready else "Starting")
                     for i in range(desired if pods is None else pods))
    auto = AutoscalerView(min_replicas=1, max_replicas=3, signal="requestRate", target=12, action=action,
                          metrics={"requestRate": rate} if action else {})
    return ClusterView(services=(ServiceView("simple", desired=desired, replicas=len(replicas), ready=ready,
                                             autoscaler=auto),),
                       replicas=replicas)


UP = SetRate(30, "load steps up: 10 → 30 inferences/s")
DOWN = SetRate(10, "load eases: 30 → 10 inferences/s")

# (cluster view, seconds since the start, actions due) in order; the autoscaler, not the demo, scales
AUTOSCALED = [
    (view(1, 0), 0.0, []),
    (view(1, 1, action="hold"), 2.0, []),  # no decision from metrics yet
    (view(1, 1, action="steady", rate=0.0), 3.0, []),  # a decision before any load was scraped
    (view(1, 1, action="steady", rate=9.5), 6.0, [UP]),
    (view(2, 1, action="scale-up"), 9.0, []),
    (view(3, 2, action="scale-up"), 10.0, []),
    (view(3, 3, action="steady", rate=29.0), 11.0, []),  # the first goal: scaled out
    (view(3, 3, action="steady", rate=29.0), 18.9, []),  # holding the peak for 8 s
    (view(3, 3, action="steady", rate=29.0), 19.0, [DOWN]),
    (view(2, 2, pods=3, action="scale-down"), 40.0, []),  # the third replica is still draining
    (view(1, 1, pods=2, action="scale-down"), 50.0, []),
    (view(1, 1, action="steady", rate=10.0), 55.0, []),  # the second goal: back to one replica
]

SCRIPTED = [
    (view(1, 0), 0.0, []),
    (view(1, 1), 4.0, [UP, Scale("simple", 3, "load stepped up to 30/s")]),
    (view(3, 2), 6.0, []),
    (view(3, 3), 7.0, []),
    (view(3, 3), 14.9, []),
    (view(3, 3), 15.0, [DOWN, Scale("simple", 1, "load eased to 10/s")]),
    (view(1, 1, pods=2), 16.0, []),
    (view(1, 1), 17.0, []),
]


@pytest.mark.parametrize("autoscaled, timeline", [
    pytest.param(True, AUTOSCALED, id="autoscaled"),
    pytest.param(False, SCRIPTED, id="scripted-without-prometheus"),
])
def test_the_story_scales_out_holds_and_scales_in(autoscaled: bool, timeline: list) -> None:
    story = scaling_story("simple", base_rate=10, peak_replicas=3, hold_s=8, autoscaled=autoscaled)
    assert len(story.missed_goals) == 2
    for cluster, now, due in timeline:
        assert not story.done
        assert story.advance(cluster, now=now) == due, (now, story.current)
        if now < timeline[-1][1]:
            assert not story.goal_reached
    assert story.done and story.goal_reached and story.current.startswith("played out")
    assert story.goals == ["simple scaled out to 3 ready replicas under load", "back in to 1 ready replica after it"]


def test_reaching_the_peak_only_is_not_enough() -> None:
    story = scaling_story("simple", base_rate=10)
    for cluster, now, _ in AUTOSCALED[:7]:
        story.advance(cluster, now=now)
    assert story.missed_goals == ["the autoscaler to scale simple back in to 1 ready replica"]
    assert not story.goal_reached


def test_nothing_happens_without_the_service() -> None:
    story = scaling_story("simple", base_rate=5)
    assert story.advance(ClusterView(), now=100.0) == []
    assert not story.goal_reached and story.index == 0


@pytest.mark.parametrize("rate, service_time_ms, target, slo_ms", [
    pytest.param(10, 40, 12.0, 100, id="default"),
    pytest.param(5, 40, 6.0, 100, id="slower"),
    pytest.param(2.5, 200, 3.0, 500, id="slow-model"),
])
def test_the_target_needs_one_replica_at_the_base_and_all_at_the_peak(rate: float, service_time_ms: int,
                                                                      target: float, slo_ms: int) -> None:
    spec = demo_autoscaling(rate, service_time_ms)
    assert (spec["target"], spec["latencySLOMilliseconds"]) == (target, slo_ms)
    assert math.ceil(rate / spec["target"]) == 1
    assert math.ceil(3 * rate / spec["target"]) == spec["maxReplicas"] == PEAK_REPLICAS


def test_the_sample_services_are_valid_and_only_the_sample_autoscales(tmp_path: Path) -> None:
    from trireme.operator.api import InferenceService

    sample, large = sample_services(tmp_path, "default", largest_node_gpus=2, autoscaling=demo_autoscaling(10, 40))
    parsed = {o["metadata"]["name"]: InferenceService.from_api({**o, "metadata": {**o["metadata"], "uid": "u"}})
              for o in (sample, large)}
    auto = parsed["simple"].spec.autoscaling
    assert auto.enabled and (auto.min_replicas, auto.max_replicas, auto.signal) == (1, 3, "requestRate")
    assert not parsed["large"].spec.autoscaling.enabled and parsed["large"].spec.gpus.count == 4


def test_the_defragmentation_services_are_valid_spread_and_whole_node(tmp_path: Path) -> None:
    from trireme.operator.api import InferenceService

    sample, _ = sample_services(tmp_path, "default", largest_node_gpus=4, autoscaling=demo_autoscaling(10, 40))
    batch, wide = defragmentation_services(sample, node_gpus=4)
    parsed = {o["metadata"]["name"]: InferenceService.from_api({**o, "metadata": {**o["metadata"], "uid": "u"}})
              for o in (batch, wide)}
    assert (parsed["batch"].spec.replicas, parsed["batch"].spec.gpus.count) == (2, 1)
    assert parsed["batch"].spec.scheduling.policy == "spread"
    assert (parsed["wide"].spec.replicas, parsed["wide"].spec.gpus.count) == (1, 4)
    assert not parsed["batch"].spec.autoscaling.enabled and not parsed["wide"].spec.autoscaling.enabled
    assert sample["metadata"]["name"] == "simple" and sample["spec"]["autoscaling"]["enabled"]  # left as it was


def _defrag_view(batch_ready: int, wide_ready: int = 0, moved: bool = False) -> ClusterView:
    services = [ServiceView("batch", desired=2, replicas=2, ready=batch_ready)]
    replicas = [ReplicaView(name=f"batch-r{i}", service="batch", state="Ready" if i < batch_ready else "Starting")
                for i in range(2)]
    services.append(ServiceView("wide", desired=1, replicas=1, ready=wide_ready))
    events = (EventView(at=None, type="Normal", reason="Moved", object="tis/batch", message="moved"),) if moved else ()
    return ClusterView(services=tuple(services), replicas=tuple(replicas), events=events)


def test_the_rebalancing_part_waits_for_a_finished_move(tmp_path: Path) -> None:
    sample, _ = sample_services(tmp_path, "default", largest_node_gpus=4)
    batch, wide = defragmentation_services(sample, node_gpus=4)
    story = Scenario(defragmentation_steps(batch, wide))
    due = story.advance(ClusterView(), now=0.0)
    assert [a.body["metadata"]["name"] for a in due if isinstance(a, Apply)] == ["batch"]
    assert story.advance(_defrag_view(batch_ready=1), now=1.0) == []
    due = story.advance(_defrag_view(batch_ready=2), now=2.0)
    assert [a.body["metadata"]["name"] for a in due if isinstance(a, Apply)] == ["wide"]
    # ready without a move (room was there already) is not what this part shows; a move without wide ready neither
    assert story.advance(_defrag_view(batch_ready=2, wide_ready=1), now=3.0) == [] and not story.goal_reached
    assert story.advance(_defrag_view(batch_ready=2, wide_ready=0, moved=True), now=4.0) == []
    assert not story.goal_reached
    assert story.advance(_defrag_view(batch_ready=2, wide_ready=1, moved=True), now=5.0) == []
    assert story.done and story.goal_reached
    assert story.goals == ["wide (4 GPUs on one node) ready after the rebalancer moved a replica of batch"]


def run_autoscaler(phases: list[tuple[str, float, float]], startup_s: float) -> dict[str, list[int]]:
    """The autoscaler's desiredReplicas every second of each phase of (name, seconds, requests/s) on the
    demo's spec: it decides every second from Triton's counters; a replica serves 25 requests/s (40 ms
    each) and is ready ``startup_s`` after it was asked for; an overloaded service queues requests 280 ms
    (the load generator's eight workers waiting on one replica)."""
    from trireme.operator.api import Autoscaling
    from trireme.operator.autoscaling import autoscaler_settings
    from trireme.scheduler.autoscale import MetricSample, decide

    settings = autoscaler_settings(Autoscaling.model_validate(demo_autoscaling(10, 40)))
    samples: list[MetricSample] = []
    state, now, done, queue_us, compute_us = None, 0.0, 0.0, 0.0, 0.0
    desired, asked = 1, [0.0]
    trace: dict[str, list[int]] = {}
    for name, seconds, rate in phases:
        for _ in range(int(seconds)):
            now += 1.0
            ready = min(desired, sum(1 for at in asked if at <= now - startup_s))
            overloaded = rate > 25.0 * ready
            served = min(rate, 25.0 * ready)
            done, compute_us = done + served, compute_us + served * 40_000
            queue_us += served * 280_000 if overloaded else 0.0
            samples.append(MetricSample(time=now, pending_requests=8.0 if overloaded else 1.0,
                                        request_success=done, queue_duration_us=queue_us,
                                        compute_duration_us=compute_us, ready_replicas=ready,
                                        starting_replicas=desired - ready))
            decision = decide(samples[-150:], now, desired, settings, state)
            state = decision.state
            asked = (asked + [now] * (decision.desired_replicas - desired))[:decision.desired_replicas]
            desired = decision.desired_replicas
            trace.setdefault(name, []).append(desired)
    return trace


@pytest.mark.parametrize("startup_s", [pytest.param(2, id="fast-start"), pytest.param(8, id="slow-start")])
def test_the_autoscaler_follows_the_demo_load_without_flapping(startup_s: float) -> None:
    # the story's phases: low until steady, the peak until 3 replicas are ready and 8 s more (here up to a
    # minute: the latency objective adds the replicas within seconds, the rate keeps them once its 30 s
    # average has caught up, and the scale-down window bridges the two), low again
    trace = run_autoscaler([("low", 20, 10), ("peak", startup_s + 60, 30), ("eased", 60, 10)], startup_s)
    assert set(trace["low"]) == {1}
    peak = trace["peak"]
    assert peak[-1] == 3 and peak == sorted(peak)  # out within seconds, never back in while the load is high
    eased = trace["eased"]
    assert eased == sorted(eased, reverse=True) and eased[-1] == 1  # back in, one replica at a time
    assert eased.index(1) < 50


def test_the_demo_names_the_api_as_the_operator_does() -> None:
    from trireme import demo
    from trireme.operator import api

    assert (demo.GROUP, demo.VERSION, demo.PLURAL) == (api.GROUP, api.VERSION, api.PLURAL)
