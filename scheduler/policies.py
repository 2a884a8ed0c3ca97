"""Placement policies: filters, a GPU chooser and a score, composed under one name.

- ``spread``   kube-scheduler's default: least allocated and balanced nodes first.
- ``binpack``  the fullest node first (CPU, memory and GPU).
- ``bestfit``  the FGD paper's BestFit baseline: least CPU and GPU left, tightest GPU.
- ``fgd``      the paper's Fragmentation Gradient Descent, as its simulator computes it.
- ``random``   a uniformly random feasible node and GPU, seeded (a benchmark baseline).
- ``firstfit`` the first node by name and its lowest GPUs.
- ``trireme``  Trireme's default: fragmentation gradient descent that also counts memory,
  every task shape, and GPUs a node will strand when its CPU or memory runs out first
  (``TriremeSettings``); it keeps NVLink islands whole.

A policy evaluates a node state once per request shape and caches the answer, so a
cluster of many identical nodes costs little; caches are bounded. Evaluations depend
only on the state and the request, never on a node's name: ties go to the name that
sorts first, outside the policy.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from trireme.scheduler.cluster import MILLI, ClusterSnapshot, NodeState
from trireme.scheduler.fragmentation import Fragmentation, FragmentationSettings, TaskShape, shape_of, typical_shapes
from trireme.scheduler.plugins import (
    FILTERS, Filter, GpuChooser, Score, best_fit, constant, emptiest_gpu, first_reason, least_allocated,
    lowest_index, most_allocated, tightest_gpu)
from trireme.scheduler.requests import PodRequest

Evaluation = tuple[str | None, float, tuple[int, ...] | None]
"""(reason the node is filtered out or None, score, GPUs the pod would take)."""


@dataclass
class Policy:
    """A named composition of filters, a GPU chooser and a score.

    ``uniform_random`` replaces "highest score" by "a uniformly random feasible node and a
    random GPU with room", drawn from ``rng`` (the ``random`` baseline).
    """

    name: str
    score: Score
    choose_gpus: GpuChooser
    filters: tuple[Filter, ...] = FILTERS
    uniform_random: bool = False
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    _tokens: dict[tuple[object, ...], object] = field(default_factory=dict, repr=False)

    def token(self, request: PodRequest) -> object:
        """The key under which node states memoise this policy's evaluations of requests shaped like
        ``request`` (``NodeState.memo``): the memo lives and dies with the states."""
        token = self._tokens.get(request.shape)
        if token is None:
            token = self._tokens[request.shape] = object()
        return token

    def cached_evaluation(self, node: NodeState, request: PodRequest, token: object | None = None) -> Evaluation:
        """``evaluate``, memoised on ``node``."""
        token = token or self.token(request)
        evaluation = node.memo.get(token)
        if evaluation is None:
            evaluation = node.memo[token] = self.evaluate(node, request)
        return evaluation

    def evaluate(self, node: NodeState, request: PodRequest) -> Evaluation:
        """Filter ``node``, choose its GPUs and score them (uncached; see ``cached_evaluation``)."""
        reason = first_reason(node, request, self.filters)
        if reason is not None:
            return reason, 0.0, None
        gpus = self.choose_gpus(node, request)
        if gpus is None:
            return "no GPUs fit", 0.0, None
        return None, self.score(node, request, gpus), gpus

    def random_gpus(self, node: NodeState, request: PodRequest) -> tuple[int, ...] | None:
        """For ``uniform_random``: a random GPU with room for a share; whole GPUs as first fit."""
        if request.shared:
            milli = request.milli_on(node)
            room = [i for i, free in enumerate(node.gpu_free_milli) if free >= milli]
            return (self.rng.choice(room),) if room else None
        return lowest_index(node, request)


class FragmentationGradient:
    """Fragmentation Gradient Descent: the score of a placement is how little it grows the node's
    fragmentation, as the paper computes it: ``int(100 · sigmoid((before − after) / scale))``.

    The integer score is deliberate: placements whose fragmentation changes by similar
    amounts tie, and ties go to the node whose name sorts first, which packs work onto
    the same nodes and keeps the others whole. (Scoring by the raw change instead spreads
    work thin: on the openb trace it leaves 8.6 % of GPUs idle rather than 4.7 %.)

    A share goes to the GPU where the score is best; among equal scores the lowest index
    (the paper) or, with ``tightest_on_ties``, the fullest GPU. Whole GPUs go to the lowest
    idle indices (the paper) or, with ``tightest_on_ties``, to the NVLink islands with the
    fewest idle GPUs, keeping large islands whole.
    """

    def __init__(self, fragmentation: Fragmentation, scale: float = 1000.0, tightest_on_ties: bool = False) -> None:
        self.fragmentation = fragmentation
        self.scale = scale
        self.tightest_on_ties = tightest_on_ties

    def _value(self, before: float, after: float) -> float:
        x = (before - after) / self.scale
        if x < -700:
            return 0.0
        return float(int(1.0 / (1.0 + math.exp(-x)) * 100))

    def choose(self, node: NodeState, request: PodRequest) -> tuple[int, ...] | None:
        if not request.shared:
            return tightest_gpu(node, request) if self.tightest_on_ties else lowest_index(node, request)
        milli = request.milli_on(node)
        before = self.fragmentation.of(node)
        best, best_value, tried = None, 0.0, set()
        for i, free in enumerate(node.gpu_free_milli):
            if free < milli or free in tried:  # equal free shares give equal multisets after
                continue
            tried.add(free)
            value = self._value(before, self.fragmentation.after(node, (i,), milli, request.cpu_milli,
                                                                  request.memory_mib))
            if self.tightest_on_ties:
                value -= free / (MILLI + 1)  # below one score point: only decides ties
            if best is None or value > best_value:
                best, best_value = i, value
        return None if best is None else (best,)

    def score(self, node: NodeState, request: PodRequest, gpus: tuple[int, ...]) -> float:
        milli = request.milli_on(node) if gpus else 0
        before = self.fragmentation.of(node)
        return self._value(before, self.fragmentation.after(node, gpus, milli, request.cpu_milli, request.memory_mib))


# --- the policies ---------------------------------------------------------------------

POLICY_NAMES = ("trireme", "fgd", "bestfit", "binpack", "spread", "firstfit", "random")
"""Every policy ``make_policy`` builds, Trireme's default first."""
DEFAULT_POLICY = "trireme"


@dataclass(frozen=True)
class TriremeSettings:
    """Trireme's own fragmentation-aware policy: FGD, with what FGD leaves on the table.

    Each default is a mechanism, not a fit to one trace file; they were checked on every
    openb variant (see docs/benchmarks.md).
    """

    fragmentation: FragmentationSettings = FragmentationSettings(coverage=1.0, count_memory=True,
                                                                 stranding_weight=0.15, count_islands=True)
    """Every task shape of the workload, not only the most popular 95 % (rare multi-GPU tasks still
    count); memory counted (a node short of memory cannot host a shape, whatever its GPUs); and the
    GPU capacity a node will strand because its CPU or memory runs out first, at the workload's
    CPU and memory per GPU, charged at 0.15 of its size: enough to steer CPU-heavy and CPU-only
    tasks to CPU-rich nodes, small next to the GPU slivers fragmentation counts in full. On nodes
    with NVLink islands, a tensor-parallel shape counts only the islands that hold one of its groups
    (the openb trace has neither, so its figures do not move)."""
    scale: float = 3000.0
    """Milli-GPUs of fragmentation change per unit of the sigmoid (the paper: 1000). Coarser buckets
    let more near-equal placements tie and go by name, packing work onto fewer nodes."""
    tightest_on_ties: bool = True
    """Among equally scored GPUs of a node, fill the fullest; keep NVLink islands whole."""


def workload_shapes(requests: Iterable[PodRequest], gpu_memory_mib: int = 0) -> list[TaskShape]:
    """Task shapes of requests (one per request), for the fragmentation-aware policies. A share given
    as memory is counted as that memory's share of a ``gpu_memory_mib`` GPU (the cluster's usual
    one), and left out when that is unknown."""
    shapes = []
    for request in requests:
        if request.problem():
            continue
        if request.gpu_memory_mib:
            if gpu_memory_mib <= 0:
                continue
            milli = min(MILLI, -(-request.gpu_memory_mib * MILLI // gpu_memory_mib))
        else:
            milli = request.gpu_milli or (MILLI if request.gpus else 0)
        shapes.append(shape_of(request.cpu_milli, request.gpus, milli, request.products, request.memory_mib,
                               request.tensor_parallel))
    return shapes


def shapes_from_snapshot(snapshot: ClusterSnapshot, tensor_parallel: Mapping[str, int] | None = None
                         ) -> list[TaskShape]:
    """Task shapes of the pods bound in ``snapshot``: the workload the cluster runs. ``tensor_parallel``
    gives the tensor-parallel group of the replicas of a service (``namespace/name``), so that their
    next replicas count as needing whole NVLink islands; others have none."""
    groups = tensor_parallel or {}
    return [shape_of(pod.cpu_milli, len(pod.gpu_indices), pod.gpu_milli, (), pod.memory_mib,
                     groups.get(f"{pod.pod.partition('/')[0]}/{pod.service}", 1) if pod.service else 1)
            for pod in snapshot.bound]


def make_policy(name: str, workload: Iterable[TaskShape] = (), seed: int = 0,
                trireme: TriremeSettings = TriremeSettings()) -> Policy:
    """The policy called ``name``. ``workload`` (task shapes) feeds ``fgd`` and ``trireme``;
    ``seed`` feeds ``random``. Raises ValueError for an unknown name."""
    if name == "spread":
        return Policy(name, least_allocated, emptiest_gpu)
    if name == "binpack":
        return Policy(name, most_allocated, tightest_gpu)
    if name == "bestfit":
        return Policy(name, best_fit, tightest_gpu)
    if name == "firstfit":
        return Policy(name, constant, lowest_index)
    if name == "random":
        return Policy(name, constant, lowest_index, uniform_random=True, rng=random.Random(seed))
    if name == "fgd":
        gradient = FragmentationGradient(Fragmentation(typical_shapes(workload)))
        return Policy(name, gradient.score, gradient.choose)
    if name == "trireme":
        workload = list(workload)
        fragmentation = Fragmentation(typical_shapes(workload, trireme.fragmentation), trireme.fragmentation)
        gradient = FragmentationGradient(fragmentation, scale=trireme.scale, tightest_on_ties=trireme.tightest_on_ties)
        return Policy(name, gradient.score, gradient.choose)
    raise ValueError(f"unknown placement policy {name!r}: one of {', '.join(POLICY_NAMES)}")
