"""The building blocks of placement policies: filters, scores and GPU choosers.

Contracts (as in kube-scheduler's framework, made pure):

- A **filter** is ``(node, request) -> reason | None``: None when ``node`` may take the
  pod, else a short reason a user can act on ("cordoned", "not enough CPU"). It sees
  only the node's state and the request, never the node's name or other nodes, so its
  answer holds for every node in that state and is cached per state.
- A **GPU chooser** is ``(node, request) -> gpu indices | None``: which GPUs of a node
  that passed the filters the pod takes (() for a pod without GPUs), or None when none
  fit. Whole-GPU pods take GPUs no pod holds a share of.
- A **score** is ``(node, request, gpus) -> number``: how good it is to place the pod
  on ``node`` using ``gpus``; higher is better. Scores are compared only between nodes
  that passed every filter; ties go to the node whose name sorts first.

Filters are listed in ``FILTERS`` in the order their reasons are reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from trireme.scheduler.cluster import MILLI, NodeState
from trireme.scheduler.requests import PodRequest

Filter = Callable[[NodeState, PodRequest], str | None]
GpuChooser = Callable[[NodeState, PodRequest], tuple[int, ...] | None]
Score = Callable[[NodeState, PodRequest, tuple[int, ...]], float]

# --- filters --------------------------------------------------------------------------
# Reasons that describe the node whatever it runs ("left out") come before reasons of
# capacity; ``plan`` reports the former as "nodes left out".


def node_usable(node: NodeState, request: PodRequest) -> str | None:
    """The node's own data is valid, it is Ready and not cordoned."""
    if node.problem:
        return node.problem
    if not node.ready:
        return "not ready"
    if node.cordoned:
        return "cordoned"
    return None


def taints_tolerated(node: NodeState, request: PodRequest) -> str | None:
    """Every NoSchedule/NoExecute taint of the node is tolerated (PreferNoSchedule is soft)."""
    return None if request.tolerates(node) else "taint not tolerated"


def node_selector_matches(node: NodeState, request: PodRequest) -> str | None:
    """Every ``nodeSelector`` label has the asked value."""
    for key, value in request.node_selector:
        if node.label(key) != value:
            return "node selector does not match"
    return None


def node_affinity_matches(node: NodeState, request: PodRequest) -> str | None:
    """Required node affinity: one of the terms matches (no terms: any node)."""
    if request.affinity and not any(term.matches(node) for term in request.affinity):
        return "node affinity does not match"
    return None


def gpu_product_accepted(node: NodeState, request: PodRequest) -> str | None:
    """A GPU pod needs a node with GPUs of a product it accepts."""
    if not request.gpus_needed():
        return None
    if not node.gpu_count:
        return "no GPUs"
    if request.products and node.product not in request.products:
        return "other GPU product"
    if request.gpu_memory_mib and node.gpu_memory_mib <= 0:
        return "GPU memory unknown"
    return None


def gpus_big_enough(node: NodeState, request: PodRequest) -> str | None:
    """The node has enough GPUs, of enough memory, to ever hold the pod (empty)."""
    if request.gpus_needed() > node.gpu_count:
        return "too few GPUs"
    if request.tensor_parallel > 1 and node.islands and _groups(map(len, node.islands), request) < request.gpus:
        return "NVLink islands too small"
    if request.milli_on(node) > MILLI:
        return "GPU memory too small"
    return None


def resources_fit(node: NodeState, request: PodRequest) -> str | None:
    """Free CPU, memory and pod slots cover the request."""
    if node.pods_free < 1:
        return "pod limit reached"
    if request.cpu_milli > node.cpu_free_milli:
        return "not enough CPU"
    if request.memory_mib > node.memory_free_mib:
        return "not enough memory"
    return None


def _groups(island_sizes: Iterable[int], request: PodRequest) -> int:
    """GPUs that islands of these sizes hold in whole tensor-parallel groups of the request."""
    return sum(size // request.tensor_parallel for size in island_sizes) * request.tensor_parallel


def gpus_fit(node: NodeState, request: PodRequest) -> str | None:
    """Enough GPUs with room: one GPU with the share free, or ``gpus`` idle GPUs (for tensor
    parallelism, each group of ``tensor_parallel`` of them in one island)."""
    need = request.gpus_needed()
    if not need:
        return None
    if request.shared:
        milli = request.milli_on(node)
        return None if any(free >= milli for free in node.gpu_free_milli) else "no GPU with that share free"
    if request.tensor_parallel > 1 and node.islands:
        free = node.gpu_free_milli
        if _groups((sum(1 for i in island if free[i] == MILLI) for island in node.islands), request) < need:
            return "not enough idle GPUs in one NVLink island"
        return None
    return None if node.whole_free_gpus >= need else "not enough idle GPUs"


CAPACITY_REASONS = frozenset({"pod limit reached", "not enough CPU", "not enough memory"})
"""Reasons of ``resources_fit``: the node is full, not unsuitable."""
GPU_CAPACITY_REASONS = frozenset({"too few GPUs", "no GPU with that share free", "not enough idle GPUs in one NVLink island",
                                  "not enough idle GPUs", "no GPUs fit"})
"""Reasons of ``gpus_fit``, of ``gpus_big_enough`` for the GPU count and of a GPU chooser finding
nothing: a plan tells them as the largest free block rather than as nodes left out."""

STATIC_FILTERS: tuple[Filter, ...] = (node_usable, taints_tolerated, node_selector_matches, node_affinity_matches,
                                      gpu_product_accepted, gpus_big_enough)
"""Filters that depend on what a node is, not on what runs on it."""
CAPACITY_FILTERS: tuple[Filter, ...] = (resources_fit, gpus_fit)
"""Filters that depend on what is free."""
FILTERS: tuple[Filter, ...] = STATIC_FILTERS + CAPACITY_FILTERS


def first_reason(node: NodeState, request: PodRequest, filters: tuple[Filter, ...] = FILTERS) -> str | None:
    """The reason of the first filter that rejects ``node``, or None when all pass."""
    for check in filters:
        reason = check(node, request)
        if reason is not None:
            return reason
    return None


# --- GPU choosers ---------------------------------------------------------------------


def _idle_by_island(node: NodeState, request: PodRequest, tightest: bool) -> tuple[int, ...] | None:
    """``request.gpus`` idle GPUs, lowest indices first; for tensor parallelism on a node with islands,
    each group of ``tensor_parallel`` from one island (from the islands with the fewest idle GPUs that
    suffice when ``tightest``, else from the first ones): a pod of one group gets one island."""
    free, need = node.gpu_free_milli, request.gpus
    if node.islands and (request.tensor_parallel > 1 or tightest):
        islands = [tuple(i for i in island if free[i] == MILLI) for island in node.islands]
        if request.tensor_parallel > 1:
            size = request.tensor_parallel
            fitting = [idle for idle in islands if len(idle) >= size]
            if tightest:
                fitting.sort(key=lambda idle: (len(idle), idle[0]))
            chosen: list[int] = []
            for idle in fitting:
                chosen += idle[:min(len(idle) // size * size, need - len(chosen))]
                if len(chosen) == need:
                    return tuple(sorted(chosen))
            return None
        # no island constraint: fill the islands with the fewest idle GPUs first, keeping big ones whole
        ordered = [i for idle in sorted((i for i in islands if i), key=lambda idle: (len(idle), idle[0]))
                   for i in idle]
        return tuple(sorted(ordered[:need])) if len(ordered) >= need else None
    idle = [i for i, f in enumerate(free) if f == MILLI]
    return tuple(idle[:need]) if len(idle) >= need else None


def lowest_index(node: NodeState, request: PodRequest) -> tuple[int, ...] | None:
    """The lowest-numbered GPUs that fit (first fit)."""
    if not request.gpus_needed():
        return ()
    if request.shared:
        milli = request.milli_on(node)
        return next(((i,) for i, free in enumerate(node.gpu_free_milli) if free >= milli), None)
    return _idle_by_island(node, request, tightest=False)


def tightest_gpu(node: NodeState, request: PodRequest) -> tuple[int, ...] | None:
    """A share goes to the fullest GPU it fits on (lowest index on ties); whole GPUs fill the
    NVLink islands with the fewest idle GPUs first, so large islands stay whole."""
    if not request.gpus_needed():
        return ()
    if request.shared:
        milli = request.milli_on(node)
        best = None
        for i, free in enumerate(node.gpu_free_milli):
            if free >= milli and (best is None or free < node.gpu_free_milli[best]):
                best = i
        return None if best is None else (best,)
    return _idle_by_island(node, request, tightest=True)


def emptiest_gpu(node: NodeState, request: PodRequest) -> tuple[int, ...] | None:
    """A share goes to the GPU with the most room (lowest index on ties); whole GPUs as first fit."""
    if request.shared:
        milli = request.milli_on(node)
        best = None
        for i, free in enumerate(node.gpu_free_milli):
            if free >= milli and (best is None or free > node.gpu_free_milli[best]):
                best = i
        return None if best is None else (best,)
    return lowest_index(node, request)


# --- scores ---------------------------------------------------------------------------


def _used_fractions(node: NodeState, request: PodRequest, gpus: tuple[int, ...]) -> tuple[float, ...]:
    """CPU, memory and GPU in use after the placement, each as a fraction of the node's capacity."""
    fractions = []
    if node.cpu_milli:
        fractions.append(1 - (node.cpu_free_milli - request.cpu_milli) / node.cpu_milli)
    if node.memory_mib:
        fractions.append(1 - (node.memory_free_mib - request.memory_mib) / node.memory_mib)
    if node.gpu_count:
        taken = request.milli_on(node) * len(gpus)
        fractions.append(1 - (sum(node.gpu_free_milli) - taken) / (MILLI * node.gpu_count))
    return tuple(fractions) or (0.0,)


def least_allocated(node: NodeState, request: PodRequest, gpus: tuple[int, ...]) -> float:
    """kube-scheduler's default: most free capacity left (mean over CPU, memory, GPU) plus balance
    between them (1 − their standard deviation), each 0..100."""
    used = _used_fractions(node, request, gpus)
    mean = sum(used) / len(used)
    spread = math.sqrt(sum((u - mean) ** 2 for u in used) / len(used))
    return 100 * (1 - mean) + 100 * (1 - spread)


def most_allocated(node: NodeState, request: PodRequest, gpus: tuple[int, ...]) -> float:
    """Bin packing: the fullest node after the placement (mean used share of CPU, memory, GPU)."""
    used = _used_fractions(node, request, gpus)
    return 100 * sum(used) / len(used)


BESTFIT_MAX_CPU_MILLI = 128_000
"""The paper's normaliser for CPU left: the largest node of its cluster (128 CPUs)."""
BESTFIT_MAX_GPU_MILLI = 8 * MILLI
"""The paper's normaliser for GPU left: the largest node of its cluster (8 GPUs)."""


def best_fit(node: NodeState, request: PodRequest, gpus: tuple[int, ...]) -> float:
    """The paper's BestFit: 100·(1 − (½·CPU left/128 CPUs + ½·GPU left/8 GPUs)) after the placement,
    truncated to an integer as its simulator does (so nearby nodes tie and go by name)."""
    cpu_left = node.cpu_free_milli - request.cpu_milli
    gpu_left = sum(node.gpu_free_milli) - request.milli_on(node) * len(gpus)
    score = (cpu_left / BESTFIT_MAX_CPU_MILLI * 0.5 + gpu_left / BESTFIT_MAX_GPU_MILLI * 0.5)
    return float(int((1.0 - score) * 100))


def constant(node: NodeState, request: PodRequest, gpus: tuple[int, ...]) -> float:
    """Every node scores the same: the first by name wins (first fit)."""
    return 0.0
