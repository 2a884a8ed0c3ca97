"""Properties of every policy on random small clusters: nothing is over-allocated, a
filtered-out node is never chosen, plans are deterministic and idempotent, gangs are
all or nothing, tensor-parallel pods stay in one NVLink island, and bad input gives an
Unschedulable rather than an exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trireme.scheduler.cluster import MILLI, BoundPod, ClusterSnapshot, Taint, node_state
from trireme.scheduler.plan import Bind, Unschedulable, plan
from trireme.scheduler.plugins import FILTERS, first_reason
from trireme.scheduler.policies import POLICY_NAMES, make_policy
from trireme.scheduler.requests import Gang, PodRequest
from trireme.scheduler.kube import Toleration

PRODUCTS = ("A100", "T4")
ISLANDS = {8: ([0, 1, 2, 3], [4, 5, 6, 7]), 4: ([0, 1], [2, 3])}


@st.composite
def clusters(draw: st.DrawFn) -> ClusterSnapshot:
    states = {}
    for index in range(draw(st.integers(1, 5))):
        gpus = draw(st.sampled_from([0, 1, 2, 4, 8]))
        states[f"n{index}"] = node_state(
            gpus=gpus, product=draw(st.sampled_from(PRODUCTS)) if gpus else "", gpu_memory_mib=16384,
            cpu_milli=draw(st.sampled_from([4000, 16000, 64000])), memory_mib=draw(st.sampled_from([8192, 65536])),
            max_pods=draw(st.integers(1, 6)), islands=ISLANDS.get(gpus, ()) if draw(st.booleans()) else (),
            taints=(Taint("dedicated", "x"),) if draw(st.integers(0, 4)) == 0 else (),
            cordoned=draw(st.integers(0, 6)) == 0, ready=draw(st.integers(0, 6)) != 0,
            labels={"topology.trireme.io/rack": draw(st.sampled_from("ab"))})
    return ClusterSnapshot.of(states)


@st.composite
def pod_requests(draw: st.DrawFn, name: str) -> PodRequest:
    kind = draw(st.sampled_from(["cpu", "share", "memory-share", "whole", "tp"]))
    gpus = {"cpu": 0, "share": 1, "memory-share": 1, "whole": draw(st.integers(1, 4)),
            "tp": draw(st.sampled_from([2, 4]))}[kind]
    return PodRequest(
        pod=name, cpu_milli=draw(st.sampled_from([0, 500, 4000, 20000])),
        memory_mib=draw(st.sampled_from([0, 1024, 16384])), gpus=gpus,
        gpu_milli=draw(st.integers(1, MILLI)) if kind == "share" else 0,
        gpu_memory_mib=draw(st.sampled_from([2048, 8192, 16384])) if kind == "memory-share" else 0,
        products=draw(st.sampled_from([(), ("A100",), ("T4", "A100")])),
        tolerations=(Toleration("dedicated", "Exists"),) if draw(st.booleans()) else (),
        tensor_parallel=gpus if kind == "tp" else 1, service="svc", spread=draw(st.integers(0, 3)) == 0)


@st.composite
def workloads(draw: st.DrawFn) -> list[PodRequest | Gang]:
    requests: list[PodRequest | Gang] = []
    for index in range(draw(st.integers(1, 12))):
        if draw(st.integers(0, 5)) == 0:
            members = tuple(draw(pod_requests(f"ns/g{index}-{m}")) for m in range(draw(st.integers(2, 3))))
            requests.append(Gang(f"g{index}", members))
        else:
            requests.append(draw(pod_requests(f"ns/p{index}")))
    return requests


def members(requests: list[PodRequest | Gang]) -> dict[str, PodRequest]:
    return {m.pod: m for r in requests for m in (r.members if isinstance(r, Gang) else (r,))}


COMMON = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@COMMON
@given(snapshot=clusters(), requests=workloads(), policy=st.sampled_from(POLICY_NAMES))
def test_plans_are_sound(snapshot: ClusterSnapshot, requests: list[PodRequest | Gang], policy: str) -> None:
    result = plan(snapshot, requests, make_policy(policy, seed=3))
    by_pod = members(requests)
    assert sorted(d.pod for d in result.decisions) == sorted(by_pod)
    # nothing over-allocated, and the snapshot after the plan accounts for exactly the binds
    for name, state in result.snapshot.states.items():
        assert all(0 <= free <= MILLI for free in state.gpu_free_milli)
        assert state.cpu_free_milli >= 0 and state.memory_free_mib >= 0 and state.pods_free >= 0
    # every bind went to a node that passed every filter in the snapshot it was made on
    replay = snapshot
    for decision in result.decisions:
        if isinstance(decision, Bind):
            request = by_pod[decision.pod]
            state = replay.states[decision.node]
            assert first_reason(state, request, FILTERS) is None
            if request.tensor_parallel > 1 and state.islands:
                assert any(set(decision.gpu_indices) <= set(island) for island in state.islands)
            assert len(decision.gpu_indices) == request.gpus_needed()
            milli = request.milli_on(state) if decision.gpu_indices else 0
            replay = replay.with_bound(BoundPod(decision.pod, decision.node, decision.gpu_indices, milli,
                                                request.cpu_milli, request.memory_mib, request.service))
    assert replay.states == result.snapshot.states
    # gangs: all members bound or none
    for request in requests:
        if isinstance(request, Gang):
            kinds = {type(result.decision(m.pod)) for m in request.members}
            assert len(kinds) == 1
    # spread: replicas of one service asking to spread share no node (gang members are stages of one
    # replica, placed together on purpose)
    singles = {r.pod for r in requests if isinstance(r, PodRequest) and r.spread}
    spread_nodes = [d.node for d in result.binds if d.pod in singles]
    assert len(spread_nodes) == len(set(spread_nodes))


@COMMON
@given(snapshot=clusters(), requests=workloads(), policy=st.sampled_from(POLICY_NAMES))
def test_plans_are_deterministic_and_idempotent(snapshot: ClusterSnapshot, requests: list[PodRequest | Gang],
                                                policy: str) -> None:
    first = plan(snapshot, requests, make_policy(policy, seed=5))
    assert plan(snapshot, requests, make_policy(policy, seed=5)) == first
    again = plan(first.snapshot, requests, make_policy(policy, seed=5))
    assert again.snapshot == first.snapshot
    assert again.binds == first.binds


BAD_NUMBERS = st.one_of(st.integers(-5, -1), st.just(float("nan")), st.just(float("inf")), st.just("12"),
                        st.none(), st.integers(0, 10**12))


@COMMON
@given(snapshot=clusters(), cpu=BAD_NUMBERS, memory=BAD_NUMBERS, gpus=BAD_NUMBERS, milli=BAD_NUMBERS,
       tp=st.integers(-2, 9), node_cpu=BAD_NUMBERS, node_gpus=BAD_NUMBERS)
def test_bad_input_is_unschedulable_not_an_exception(snapshot: ClusterSnapshot, cpu: object, memory: object,
                                                    gpus: object, milli: object, tp: int, node_cpu: object,
                                                    node_gpus: object) -> None:
    states = dict(snapshot.states)
    states["weird"] = node_state(gpus=node_gpus, cpu_milli=node_cpu, memory_mib=1024)  # type: ignore[arg-type]
    request = PodRequest("ns/bad", cpu_milli=cpu, memory_mib=memory, gpus=gpus, gpu_milli=milli,  # type: ignore[arg-type]
                         tensor_parallel=tp)
    for policy in ("trireme", "fgd", "spread"):
        result = plan(ClusterSnapshot.of(states), [request, Gang("g", (request,))], policy)
        assert all(isinstance(d, (Bind, Unschedulable)) for d in result.decisions)
        for decision in result.unschedulable:
            assert decision.reason
