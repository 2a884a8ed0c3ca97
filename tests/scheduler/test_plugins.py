"""Filters, GPU choosers and scores, one table each: what a node in a given state answers
for a given request."""

from __future__ import annotations

import pytest
from trireme.scheduler.cluster import NodeState, Taint, node_state
from trireme.scheduler.plugins import (
    best_fit, emptiest_gpu, gpu_product_accepted, gpus_big_enough, gpus_fit, least_allocated, lowest_index,
    most_allocated, node_affinity_matches, node_selector_matches, node_usable, resources_fit, taints_tolerated,
    tightest_gpu)
from trireme.scheduler.requests import NodeSelectorTerm, PodRequest, Requirement
from trireme.scheduler.kube import Toleration

A100 = "NVIDIA-A100-SXM4-80GB"


def gpu_node(gpus: int = 8, free: tuple[int, ...] | None = None, **kw: object) -> NodeState:
    state = node_state(gpus=gpus, product=kw.pop("product", A100), gpu_memory_mib=kw.pop("gpu_memory_mib", 81920),
                       cpu_milli=kw.pop("cpu_milli", 64000), memory_mib=kw.pop("memory_mib", 262144),
                       **kw)  # type: ignore[arg-type]
    if free is not None:
        from dataclasses import replace
        state = replace(state, gpu_free_milli=free)
    return state


def req(**kw: object) -> PodRequest:
    return PodRequest(pod="ns/p", **kw)  # type: ignore[arg-type]


def term(*requirements: Requirement) -> NodeSelectorTerm:
    return NodeSelectorTerm(requirements)


ZONE = {"topology.kubernetes.io/zone": "a", "pool": "x"}
FILTER_CASES = [
    ("usable", node_usable, gpu_node(), req(gpus=1), None),
    ("usable-not-ready", node_usable, gpu_node(ready=False), req(gpus=1), "not ready"),
    ("usable-cordoned", node_usable, gpu_node(cordoned=True), req(gpus=1), "cordoned"),
    ("usable-bad-capacity", node_usable, gpu_node(cpu_milli=-5), req(), "bad capacity cpu_milli=-5"),
    ("usable-nan-capacity", node_usable, gpu_node(memory_mib=float("nan")), req(), "bad capacity memory_mib=nan"),
    ("usable-bad-islands", node_usable, gpu_node(gpus=2, islands=[[0, 5]]), req(),
     "bad NVLink islands [[0, 5]] for 2 GPUs"),
    ("taint-none", taints_tolerated, gpu_node(), req(), None),
    ("taint-blocks", taints_tolerated, gpu_node(taints=(Taint("gpu", "x"),)), req(), "taint not tolerated"),
    ("taint-soft", taints_tolerated, gpu_node(taints=(Taint("gpu", "x", "PreferNoSchedule"),)), req(), None),
    ("taint-tolerated", taints_tolerated, gpu_node(taints=(Taint("gpu", "x", "NoExecute"),)),
     req(tolerations=(Toleration("gpu", "Exists"),)), None),
    ("selector-match", node_selector_matches, gpu_node(labels=ZONE), req(node_selector={"pool": "x"}), None),
    ("selector-miss", node_selector_matches, gpu_node(labels=ZONE), req(node_selector={"pool": "y"}),
     "node selector does not match"),
    ("affinity-none", node_affinity_matches, gpu_node(), req(), None),
    ("affinity-in", node_affinity_matches, gpu_node(labels=ZONE),
     req(affinity=(term(Requirement("pool", "In", ("x", "z"))),)), None),
    ("affinity-notin", node_affinity_matches, gpu_node(labels=ZONE),
     req(affinity=(term(Requirement("pool", "NotIn", ("x",))),)), "node affinity does not match"),
    ("affinity-exists", node_affinity_matches, gpu_node(labels=ZONE),
     req(affinity=(term(Requirement("pool", "Exists")),)), None),
    ("affinity-doesnotexist", node_affinity_matches, gpu_node(labels=ZONE),
     req(affinity=(term(Requirement("pool", "DoesNotExist")),)), "node affinity does not match"),
    ("affinity-terms-ored", node_affinity_matches, gpu_node(labels=ZONE),
     req(affinity=(term(Requirement("pool", "In", ("q",))), term(Requirement("pool", "Exists")))), None),
    ("affinity-requirements-anded", node_affinity_matches, gpu_node(labels=ZONE),
     req(affinity=(term(Requirement("pool", "Exists"), Requirement("rack", "Exists")),)),
     "node affinity does not match"),
    ("product-any", gpu_product_accepted, gpu_node(product="T4"), req(gpus=1), None),
    ("product-other", gpu_product_accepted, gpu_node(product="T4"), req(gpus=1, products=(A100,)),
     "other GPU product"),
    ("product-cpu-pod-anywhere", gpu_product_accepted, gpu_node(gpus=0, product=""), req(cpu_milli=1), None),
    ("product-no-gpus", gpu_product_accepted, gpu_node(gpus=0, product=""), req(gpus=1), "no GPUs"),
    ("big-enough", gpus_big_enough, gpu_node(gpus=4), req(gpus=4), None),
    ("big-too-few", gpus_big_enough, gpu_node(gpus=4), req(gpus=8), "too few GPUs"),
    ("big-island-too-small", gpus_big_enough, gpu_node(islands=[[0, 1, 2, 3], [4, 5, 6, 7]]),
     req(gpus=8, tensor_parallel=8), "NVLink islands too small"),
    ("big-two-groups-two-islands", gpus_big_enough, gpu_node(islands=[[0, 1, 2, 3], [4, 5, 6, 7]]),
     req(gpus=8, tensor_parallel=4), None),
    ("big-groups-do-not-fit-islands", gpus_big_enough, gpu_node(islands=[[0, 1], [2, 3], [4, 5, 6, 7]]),
     req(gpus=6, tensor_parallel=3), "NVLink islands too small"),
    ("big-gpu-memory", gpus_big_enough, gpu_node(gpu_memory_mib=16384), req(gpu_memory_mib=20480),
     "GPU memory too small"),
    ("resources-fit", resources_fit, gpu_node(), req(cpu_milli=64000, memory_mib=262144), None),
    ("resources-cpu", resources_fit, gpu_node(), req(cpu_milli=64001), "not enough CPU"),
    ("resources-memory", resources_fit, gpu_node(), req(memory_mib=262145), "not enough memory"),
    ("resources-pods", resources_fit, gpu_node(max_pods=0), req(), "pod limit reached"),
    ("gpus-share-fits", gpus_fit, gpu_node(gpus=2, free=(100, 600)), req(gpus=1, gpu_milli=500), None),
    ("gpus-share-none", gpus_fit, gpu_node(gpus=2, free=(100, 400)), req(gpus=1, gpu_milli=500),
     "no GPU with that share free"),
    ("gpus-whole-needs-idle", gpus_fit, gpu_node(gpus=2, free=(1000, 999)), req(gpus=2), "not enough idle GPUs"),
    ("gpus-tp-one-island", gpus_fit, gpu_node(gpus=4, free=(1000, 0, 1000, 1000), islands=[[0, 1], [2, 3]]),
     req(gpus=2, tensor_parallel=2), None),
    ("gpus-tp-split", gpus_fit, gpu_node(gpus=4, free=(1000, 0, 1000, 0), islands=[[0, 1], [2, 3]]),
     req(gpus=2, tensor_parallel=2), "not enough idle GPUs in one NVLink island"),
    ("gpus-tp-two-groups-split", gpus_fit,
     gpu_node(free=(1000, 1000, 0, 0, 1000, 0, 1000, 1000), islands=[[0, 1, 2, 3], [4, 5, 6, 7]]),
     req(gpus=4, tensor_parallel=2), None),
    ("gpus-tp-two-groups-no-room", gpus_fit,
     gpu_node(free=(1000, 0, 0, 0, 1000, 1000, 1000, 0), islands=[[0, 1, 2, 3], [4, 5, 6, 7]]),
     req(gpus=4, tensor_parallel=2), "not enough idle GPUs in one NVLink island"),
    ("gpus-tp-no-islands", gpus_fit, gpu_node(gpus=4, free=(1000, 0, 1000, 0)), req(gpus=2, tensor_parallel=2),
     None),
]


@pytest.mark.parametrize(("check", "node", "request_", "expected"), [c[1:] for c in FILTER_CASES],
                         ids=[c[0] for c in FILTER_CASES])
def test_filter(check: object, node: NodeState, request_: PodRequest, expected: str | None) -> None:
    assert check(node, request_) == expected  # type: ignore[operator]


CHOOSER_CASES = [
    ("lowest-share", lowest_index, gpu_node(gpus=3, free=(100, 900, 600)), req(gpus=1, gpu_milli=500), (1,)),
    ("lowest-whole", lowest_index, gpu_node(gpus=4, free=(0, 1000, 500, 1000)), req(gpus=2), (1, 3)),
    ("lowest-cpu-only", lowest_index, gpu_node(), req(cpu_milli=10), ()),
    ("tightest-share", tightest_gpu, gpu_node(gpus=3, free=(100, 900, 600)), req(gpus=1, gpu_milli=500), (2,)),
    ("tightest-share-memory", tightest_gpu, gpu_node(gpus=2, free=(1000, 300)),
     req(gpus=1, gpu_memory_mib=20480), (1,)),
    ("tightest-keeps-big-island", tightest_gpu,
     gpu_node(free=(1000, 1000, 1000, 1000, 0, 1000, 0, 0), islands=[[0, 1, 2, 3], [4, 5, 6, 7]]),
     req(gpus=1), (5,)),
    ("tightest-tp-smallest-island", tightest_gpu,
     gpu_node(free=(1000, 1000, 1000, 1000, 0, 1000, 1000, 0), islands=[[0, 1, 2, 3], [4, 5, 6, 7]]),
     req(gpus=2, tensor_parallel=2), (5, 6)),
    ("lowest-tp-first-island", lowest_index,
     gpu_node(free=(1000, 0, 1000, 1000, 1000, 1000, 1000, 1000), islands=[[0, 1, 2, 3], [4, 5, 6, 7]]),
     req(gpus=4, tensor_parallel=4), (4, 5, 6, 7)),
    ("lowest-tp-two-groups-two-islands", lowest_index,
     gpu_node(free=(0, 1000, 1000, 1000, 0, 1000, 1000, 1000), islands=[[0, 1, 2, 3], [4, 5, 6, 7]]),
     req(gpus=4, tensor_parallel=2), (1, 2, 5, 6)),
    ("tightest-tp-two-groups-fullest-islands-first", tightest_gpu,
     gpu_node(free=(1000, 1000, 1000, 1000, 0, 1000, 1000, 0), islands=[[0, 1, 2, 3], [4, 5, 6, 7]]),
     req(gpus=4, tensor_parallel=2), (0, 1, 5, 6)),
    ("tightest-tp-eight-over-two-islands", tightest_gpu,
     gpu_node(islands=[[0, 1, 2, 3], [4, 5, 6, 7]]), req(gpus=8, tensor_parallel=4), tuple(range(8))),
    ("lowest-tp-groups-skip-a-short-island", lowest_index,
     gpu_node(free=(1000, 0, 0, 0, 1000, 1000, 1000, 1000), islands=[[0, 1, 2, 3], [4, 5, 6, 7]]),
     req(gpus=4, tensor_parallel=2), (4, 5, 6, 7)),
    ("emptiest-share", emptiest_gpu, gpu_node(gpus=3, free=(100, 900, 600)), req(gpus=1, gpu_milli=500), (1,)),
    ("no-room", tightest_gpu, gpu_node(gpus=2, free=(100, 200)), req(gpus=1, gpu_milli=500), None),
]


@pytest.mark.parametrize(("choose", "node", "request_", "expected"), [c[1:] for c in CHOOSER_CASES],
                         ids=[c[0] for c in CHOOSER_CASES])
def test_gpu_chooser(choose: object, node: NodeState, request_: PodRequest, expected: object) -> None:
    assert choose(node, request_) == expected  # type: ignore[operator]


EMPTY = gpu_node(gpus=8)
HALF = gpu_node(gpus=8, free=(1000,) * 4 + (0,) * 4)
SCORE_CASES = [
    # (score, request, better node, worse node)
    ("spread-prefers-empty", least_allocated, req(gpus=1, cpu_milli=1000), EMPTY, HALF),
    ("binpack-prefers-full", most_allocated, req(gpus=1, cpu_milli=1000), HALF, EMPTY),
    ("bestfit-prefers-full", best_fit, req(gpus=1, cpu_milli=1000), HALF, EMPTY),
    ("bestfit-counts-cpu", best_fit, req(gpus=1), gpu_node(cpu_milli=8000), gpu_node(cpu_milli=128000)),
]


@pytest.mark.parametrize(("score", "request_", "better", "worse"), [c[1:] for c in SCORE_CASES],
                         ids=[c[0] for c in SCORE_CASES])
def test_score_orders_nodes(score: object, request_: PodRequest, better: NodeState, worse: NodeState) -> None:
    gpus = (0,) if request_.gpus else ()
    assert score(better, request_, gpus) > score(worse, request_, gpus)  # type: ignore[operator]


def test_bestfit_is_the_papers_integer_score() -> None:
    # 1 − (½·(64000−1000)/128000 + ½·(8000−1000)/8000) = 0.316… → 31
    assert best_fit(EMPTY, req(gpus=1, cpu_milli=1000), (0,)) == 31.0
