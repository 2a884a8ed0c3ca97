"""The demo's scripted scenario: which actions come due as the cluster changes."""

from __future__ import annotations

from trireme.demo import Scale, SetRate, scaling_story
from trireme.view import ClusterView, ReplicaView, ServiceView


def view(desired: int, ready: int, pods: int | None = None) -> ClusterView:
    replicas = tuple(ReplicaView(name=f"simple-r{i}", service="simple", state="Ready" if i < ready else "Starting")
                     for i in range(desired if pods is None else pods))
    return ClusterView(services=(ServiceView("simple", desired=desired, replicas=len(replicas), ready=ready),),
                       replicas=replicas)


def test_the_story_scales_out_holds_and_scales_in() -> None:
    story = scaling_story("simple", base_rate=10, peak_replicas=3, settled_replicas=2, hold_s=8)
    assert story.advance(view(1, 0), now=0.0) == []
    assert story.current == "waiting for the first replica of simple to be ready"
    assert story.advance(view(1, 1), now=4.0) == [
        SetRate(30, "load steps up: 10 → 30 inferences/s"), Scale("simple", 3, "load stepped up to 30/s")]
    assert not story.goal_reached
    assert story.advance(view(3, 2), now=6.0) == []
    assert story.advance(view(3, 3), now=7.0) == []
    assert story.goal_reached
    assert story.advance(view(3, 3), now=14.9) == []  # holding the peak for 8 s
    assert story.advance(view(3, 3), now=15.0) == [
        SetRate(10, "load eases: 30 → 10 inferences/s"), Scale("simple", 2, "load eased to 10/s")]
    assert story.advance(view(2, 2, pods=3), now=16.0) == []  # the third replica is still going away
    assert not story.done
    assert story.advance(view(2, 2), now=17.0) == []
    assert story.done and story.current.startswith("played out")


def test_nothing_happens_without_the_service() -> None:
    story = scaling_story("simple", base_rate=5)
    assert story.advance(ClusterView(), now=100.0) == []
    assert not story.goal_reached and story.index == 0


def test_the_demo_names_the_api_as_the_operator_does() -> None:
    from trireme import demo
    from trireme.operator import api

    assert (demo.GROUP, demo.VERSION, demo.PLURAL) == (api.GROUP, api.VERSION, api.PLURAL)


def test_a_taken_pod_range_is_skipped() -> None:
    import socket

    from trireme.demo import pick_pod_cidr

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.200.0.3", 8001))
        listener.listen()
        assert pick_pod_cidr("127.200.0.0/16") != "127.200.0.0/16"
