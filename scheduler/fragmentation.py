"""GPU fragmentation: how much idle GPU capacity a node leaves unusable for the expected tasks.

This is the measure behind Fragmentation Gradient Descent (Weng et al., "Beware of
Fragmentation", USENIX ATC 2023), which Trireme's ``fgd`` policy follows exactly and
its own ``trireme`` policy extends. The workload is summarised by "typical" task shapes
(CPU, GPU share, GPU count, acceptable products), each weighted by its share of the
workload. For one shape, a node's idle GPU capacity counts as fragmented when the node
cannot host that shape at all (wrong product, too little CPU, not enough GPUs with
room) or, when it can, the part left on GPUs too small for the shape. A CPU-only shape
counts all idle GPU capacity as fragmented. A node's fragmentation is the weighted sum
over shapes; a good placement is one that grows it least.

Tensor parallelism adds a constraint the paper's measure does not know: a shape whose GPUs
work in groups needs each group inside one NVLink island. With islands counted, a node's
idle GPUs outside islands that still hold a whole group are fragmented for such a shape,
so a single-GPU task is steered to an island that is already broken rather than breaking
the last whole one.

``FragmentationSettings`` picks the variant: the paper's (the most popular shapes
covering 95 % of tasks, memory ignored) or Trireme's (every shape, memory counted, and
the GPU capacity a node will strand because its CPU or memory runs out first).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from trireme.scheduler.cluster import MILLI, NodeState


@dataclass(frozen=True)
class TaskShape:
    """A typical task: what one task of this kind asks for, and its weight in the workload."""

    cpu_milli: int
    gpu_milli: int
    """Share of each GPU it uses: 1..1000, 1000 for whole GPUs; 0 for CPU-only tasks."""
    gpus: int
    products: tuple[str, ...] = ()
    memory_mib: int = 0
    weight: float = 1.0
    tensor_parallel: int = 1
    """GPUs of one tensor-parallel group, which must share an NVLink island; 1: no constraint."""


@dataclass(frozen=True)
class FragmentationSettings:
    """How typical shapes are drawn from a workload, and what fragmentation counts.

    The defaults are the paper's, so ``FragmentationSettings()`` reproduces FGD.
    """

    coverage: float = 0.95
    """Most popular shapes first until this share of the workload is covered (the paper: 95 %)."""
    count_memory: bool = False
    """Count a node that lacks the memory for a shape as unable to host it (the paper ignores memory)."""
    stranding_weight: float = 0.0
    """Weight of the GPU capacity a node is expected to strand in the long run because its CPU or
    memory runs out first: idle GPU milli beyond what its free CPU (memory) can feed at the
    workload's CPU (memory) per GPU milli. 0 (the paper) ignores it."""
    count_islands: bool = False
    """On a node with NVLink islands, a tensor-parallel shape can use only the idle GPUs of islands
    that hold at least one of its groups (the scheduler's own rule); the rest count as fragmented for
    it. False (the paper) treats every idle GPU alike."""


def typical_shapes(tasks: Iterable[TaskShape], settings: FragmentationSettings = FragmentationSettings()
                   ) -> tuple[TaskShape, ...]:
    """The typical shapes of a workload, each weighted by its share of the whole workload.

    Tasks with equal (cpu, gpu share, GPU count, products[, memory][, tensor-parallel group]) are one shape; shapes
    are taken most popular first (ties in a fixed order) until ``coverage`` of the workload
    is covered; weights are shares of the whole workload, so they sum to at most 1.
    """
    counts: Counter[tuple[int, int, int, tuple[str, ...], int, int]] = Counter()
    for task in tasks:
        key = (task.cpu_milli, task.gpu_milli, task.gpus, task.products,
               task.memory_mib if settings.count_memory else 0,
               task.tensor_parallel if settings.count_islands else 1)
        counts[key] += task.weight
    total = sum(counts.values())
    if total <= 0:
        return ()
    shapes: list[TaskShape] = []
    covered = 0.0
    for key, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if covered >= settings.coverage * total:
            break
        cpu, milli, gpus, products, memory, tensor_parallel = key
        shapes.append(TaskShape(cpu, milli, gpus, products, memory, count / total, tensor_parallel))
        covered += count
    return tuple(shapes)


class Fragmentation:
    """A node's fragmentation for a fixed set of typical shapes, memoised per node state.

    ``of(state)`` is the weighted fragmented GPU milli of ``state``; ``after(state, gpus,
    milli, cpu, memory)`` is the same after a hypothetical placement. Results depend only
    on (product, free CPU, free memory when counted, free GPU shares as a multiset, and the
    idle GPUs per NVLink island when islands count), so the memo is keyed by that and shared
    by every node in that condition.
    """

    def __init__(self, shapes: tuple[TaskShape, ...], settings: FragmentationSettings = FragmentationSettings(),
                 memo_limit: int = 500_000) -> None:
        self.shapes = shapes
        self.settings = settings
        gpu_demand = sum(s.weight * s.gpus * s.gpu_milli for s in shapes)
        self.cpu_per_gpu_milli = sum(s.weight * s.cpu_milli for s in shapes) / gpu_demand if gpu_demand else 0.0
        self.memory_per_gpu_milli = sum(s.weight * s.memory_mib for s in shapes) / gpu_demand if gpu_demand else 0.0
        self._islands_matter = settings.count_islands and any(s.tensor_parallel > 1 for s in shapes)
        self._memo: dict[tuple[object, ...], float] = {}
        self._memo_limit = memo_limit

    def of(self, node: NodeState) -> float:
        return self.measure(node.product, node.cpu_free_milli, node.memory_free_mib, node.gpu_free_milli,
                            node.islands)

    def after(self, node: NodeState, gpus: Iterable[int], milli: int, cpu_milli: int, memory_mib: int) -> float:
        free = list(node.gpu_free_milli)
        for index in gpus:
            free[index] -= milli
        return self.measure(node.product, node.cpu_free_milli - cpu_milli, node.memory_free_mib - memory_mib,
                            tuple(free), node.islands)

    def measure(self, product: str, cpu_free: int, memory_free: int, gpu_free: tuple[int, ...],
                islands: tuple[tuple[int, ...], ...] = ()) -> float:
        memory_key = memory_free if self.settings.count_memory else 0
        idle_per_island = (tuple(sorted(sum(1 for i in island if gpu_free[i] == MILLI) for island in islands))
                           if islands and self._islands_matter else None)
        key = (product, cpu_free, memory_key, tuple(sorted(gpu_free)), idle_per_island)
        value = self._memo.get(key)
        if value is None:
            if len(self._memo) >= self._memo_limit:
                self._memo.clear()
            value = self._memo[key] = self._compute(product, cpu_free, memory_free, key[3], idle_per_island)
        return value

    def _compute(self, product: str, cpu_free: int, memory_free: int, gpu_free: tuple[int, ...],
                 idle_per_island: tuple[int, ...] | None) -> float:
        idle = sum(gpu_free)
        if idle == 0:
            return 0.0
        count_memory = self.settings.count_memory
        total = 0.0
        for shape in self.shapes:
            if shape.gpus == 0 or (shape.products and product not in shape.products):
                total += shape.weight * idle
                continue
            if cpu_free < shape.cpu_milli or (count_memory and memory_free < shape.memory_mib):
                total += shape.weight * idle
                continue
            if idle_per_island is not None and shape.tensor_parallel > 1:
                # Whole GPUs in groups: only islands holding a group have room, and only whole groups count.
                group = shape.tensor_parallel
                usable = sum(n for n in idle_per_island if n >= group)
                hosted = sum(n // group for n in idle_per_island) * group
                total += shape.weight * (idle if hosted < shape.gpus else idle - usable * MILLI)
                continue
            milli = shape.gpu_milli
            with_room = 0
            stranded = 0
            for free in gpu_free:
                if free >= milli:
                    with_room += 1
                else:
                    stranded += free
            total += shape.weight * (idle if with_room < shape.gpus else stranded)
        if self.settings.stranding_weight and self.cpu_per_gpu_milli:
            fed = cpu_free / self.cpu_per_gpu_milli
            if count_memory and self.memory_per_gpu_milli:
                fed = min(fed, memory_free / self.memory_per_gpu_milli)
            total += self.settings.stranding_weight * max(0.0, idle - fed)
        return total


def shape_of(cpu_milli: int, gpus: int, gpu_milli: int, products: tuple[str, ...] = (), memory_mib: int = 0,
             tensor_parallel: int = 1) -> TaskShape:
    """A task's shape from its request: a share of one GPU, whole GPUs (in tensor-parallel groups of
    ``tensor_parallel``), or none."""
    if gpus == 0 and gpu_milli == 0:
        return TaskShape(cpu_milli, 0, 0, products, memory_mib)
    if gpu_milli and gpu_milli < MILLI and gpus <= 1:
        return TaskShape(cpu_milli, gpu_milli, 1, products, memory_mib)
    group = tensor_parallel if gpus > 1 and tensor_parallel > 1 else 1
    return TaskShape(cpu_milli, MILLI, max(gpus, 1), products, memory_mib, tensor_parallel=group)
