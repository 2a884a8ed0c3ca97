"""``trireme bench rebalance``: does rebalancing leave fewer GPUs idle on a cluster under churn?

The placement benchmark follows the FGD paper: tasks only arrive. Fragmentation that a
rebalancer can repair comes from departures, so this one replays the openb trace with its
own creation and deletion times, on the paper's cluster, twice with one policy and one
arrival stream: once as placement alone, once with the rebalancer defragmenting for tasks
that fit nowhere. Both runs go through the same ``place`` and ``defragment`` the operator
uses.

The load. The trace spans 149 days at a fraction of a percent of the cluster, and most of
its GPU-seconds belong to a few tasks that run for months, so replaying it as it is would
never fill the cluster, and compressing its times alone would only pile up the long tasks
pass after pass. Three documented changes make it run near full, with churn:

- arrival times are divided by a compression factor ``k``, and the compressed gap between
  two arrivals is cut to at most ``max_gap_s`` (the trace's idle stretches, weeks with a
  handful of tasks, would otherwise empty the cluster between its bursts);
- each task keeps its own lifetime (deletion − creation, real seconds) up to
  ``max_lifetime_s``: a longer-lived task leaves then, and its copy in a later pass takes
  its place, so the load settles instead of growing with every pass;
- the trace is replayed ``passes`` times back to back; the first ``warmup_passes`` (longer
  than ``max_lifetime_s``) are the warm-up, the rest are measured.

``k`` is found by bisection so that the offered load (GPUs asked for by the tasks that have
arrived and not yet left, placed or not, as a share of the cluster's GPUs, sampled at every
arrival) averages ``target_load`` (default 105 %) over the measured arrivals. The output
states ``k`` and the offered load's range.

What happens. Each arrival is placed once with the policy; one that fits nowhere is
dropped (the paper's rule), unless the rebalancer finds moves that make it fit: then the
moves are made and the task placed. Moves are paid from an allowance that grows by
``move_rate`` per 100 successful placements (default 2), so the run stays within that
rate by construction; each replica waits ``min_move_interval_s`` between moves. Moves go
where they buy the most GPUs: to multi-GPU tasks, up to ``moves_per_gpu`` per GPU (an
8-GPU task needs a node emptied, and it holds eight GPUs once in); tasks of one GPU or
less only with what is saved beyond ``small_task_reserve`` (by default never). Moves still
unspent when ``consolidate_when_saved`` are saved go to consolidation: one empties a
lightly used GPU into the spare room of others after a placement. With ``hold_s``, an 8-GPU
task that the saved moves cannot place starts emptying a node with them and that node is held
for the next one (off by default: it did not pay on the openb trace). A task leaves at its
arrival time plus its lifetime, wherever it runs by then.

The rebalancer runs from the first arrival (``rebalance_in_warmup``), so that each run is
measured in its own steady state; the moves it has saved when the warm-up ends are dropped,
so the measured window spends only what it earns there.

Reported per seed and as the median over seeds, over the measured arrivals only:
unallocated GPU % (100 − allocated share of the cluster's GPUs, sampled after every
arrival, as the paper records), placements, failures, and moves per 100 placements, the
last also over the whole replay.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from trireme.benchmarks.openb import TraceNode, TraceTask, capacity_milli, cluster, read_nodes
from trireme.benchmarks.placement import parse_seeds
from trireme.scheduler.cluster import BoundPod, ClusterSnapshot
from trireme.scheduler.plan import Bind, place, select
from trireme.scheduler.policies import DEFAULT_POLICY, POLICY_NAMES, make_policy
from trireme.scheduler.rebalance import (
    Budgets, Movable, Move, RebalanceSettings, consolidate, defragment, prepare, unbound)
from trireme.scheduler.requests import PodRequest


@dataclass(frozen=True)
class TimedTask:
    """A trace task with the times the trace gives it, in seconds."""

    task: TraceTask
    creation: int
    deletion: int

    @property
    def lifetime(self) -> int:
        return max(0, self.deletion - self.creation)


@dataclass(frozen=True)
class RebalanceBenchSettings:
    """One run of the benchmark (both modes, every seed)."""

    nodes_csv: Path
    pods_csv: Path
    policy: str = DEFAULT_POLICY
    seeds: tuple[int, ...] = (42, 43, 44)
    """Seeds name the nodes in the paper's per-seed random order (its tie-break) and seed the
    policy; arrivals come from the trace's times and are the same for every seed."""
    passes: int = 6
    """Times the trace is replayed back to back."""
    warmup_passes: int = 3
    """Passes before measuring: the cluster fills and the first long-lived tasks leave
    (together longer than ``max_lifetime_s`` at the default load)."""
    max_lifetime_s: float = 3600.0
    """Longest time a task stays: 80 % of the trace's tasks leave sooner on their own; the
    long-running rest leave after an hour and come back with the next pass."""
    max_gap_s: float = 0.5
    """Longest compressed gap between two arrivals (about three times the usual gap inside the
    trace's bursts at the default load)."""
    target_load: float = 1.05
    """Offered load the arrival compression is tuned to, averaged over the measured passes:
    slightly above the cluster's GPUs, so placement always has tasks it cannot fit."""
    move_rate: float = 2.0
    """Moves allowed per 100 successful placements, earned as placements happen."""
    max_moves_per_defrag: int = 4
    """Moves one defragmentation may make for a task of one GPU or less (and the least for any
    task); a task that needs more waits for departures instead."""
    moves_per_gpu: float = 2.0
    """A multi-GPU task may take up to this many moves per GPU it asks for (16 for an 8-GPU task):
    moves are spent where each buys the most GPUs, and an 8-GPU task, which needs a node emptied,
    is the one that fails most often and holds the most (see docs/benchmarks.md)."""
    small_task_reserve: float | None = None
    """Moves kept for multi-GPU tasks: a task of one GPU or less is defragmented only with what the
    allowance holds beyond this many. None: such tasks are never defragmented (on the openb trace
    the moves they take buy fewer GPUs than the same moves spent on 8-GPU tasks)."""
    candidate_nodes: int = 256
    """Nodes a defragmentation simulates emptying, cheapest first (``RebalanceSettings``): on a
    full cluster most nodes that few moves would clear for an 8-GPU task have nowhere to put
    those pods, so the search goes deeper than the operator's default."""
    max_saved_moves: int = 80
    """Most moves the allowance may save up: 8-GPU tasks arrive in runs (the trace has 16 alike
    within about 100 compressed seconds), and moves saved in quiet stretches are spent there, still
    at ``move_rate`` over the run."""
    consolidate_when_saved: float | None = None
    """With this many moves saved, spend one on consolidation (emptying a lightly used GPU) after a
    placement; None (the default): moves go only to tasks that fail to place, where they bought
    more (see docs/benchmarks.md)."""
    rebalance_in_warmup: bool = True
    """The rebalancer runs from the first arrival, earning and spending moves in the warm-up as in
    the measured passes, so that both runs are measured in their own steady state (tasks placed
    by defragmentation stay up to ``max_lifetime_s``, longer than the measured window takes to
    fill). The moves saved when measuring starts are dropped: the measured window spends only what
    it earns. False: the rebalancer starts with the measurement, from nothing saved."""
    min_move_interval_s: float = 600.0
    """Seconds of simulated time before a moved task may move again."""
    hold_s: float | None = None
    """A task asking for ``hold_gpus`` GPUs or more that fails, and that the moves saved cannot
    make room for, starts emptying the node cheapest to clear with what is saved
    (``scheduler.rebalance.prepare``), and that node is held for such tasks this many simulated
    seconds: smaller arrivals go elsewhere while they fit elsewhere, moved pods never go there,
    and the next large task finds it emptier (the operator's pending replica waits, and each
    cycle moves more for it, as Kubernetes' nominated node). The hold ends when a large task
    takes the node. None: no holds."""
    hold_gpus: int = 8
    """GPUs a task asks for at least, for a node to be held for it (a node emptied)."""
    max_holds: int = 1
    """Nodes held at once: with this many held, a failing large task works on those only."""
    task_limit: int | None = None
    """Replay only the first N arrivals (a quick check)."""
    workers: int = 1
    """Processes replaying (seed, mode) runs in parallel."""


@dataclass
class ModeRun:
    """One replay, with or without the rebalancer."""

    rebalance: bool
    seed: int
    unallocated_pct: float
    placements: int
    failures: int
    moves: int
    defragmentations: int
    seconds: float
    warmup_placements: int = 0
    warmup_moves: int = 0
    """Placements and moves in the warm-up (moves only when the rebalancer runs there)."""
    curve: list[tuple[float, float]] = field(repr=False, default_factory=list)
    """(simulated hours, unallocated %) at sampled arrivals, for the plot."""

    @property
    def moves_per_100(self) -> float:
        return 100.0 * self.moves / max(self.placements, 1)

    @property
    def moves_per_100_whole(self) -> float:
        """Moves per 100 placements over the whole replay, warm-up included."""
        return 100.0 * (self.moves + self.warmup_moves) / max(self.placements + self.warmup_placements, 1)

    def to_json(self) -> dict[str, object]:
        return {"seed": self.seed, "unallocated_gpu_pct": round(self.unallocated_pct, 3),
                "placements": self.placements, "failed": self.failures, "moves": self.moves,
                "moves_per_100_placements": round(self.moves_per_100, 3),
                "warmup_moves": self.warmup_moves,
                "moves_per_100_placements_whole_replay": round(self.moves_per_100_whole, 3),
                "defragmentations": self.defragmentations, "seconds": round(self.seconds, 1)}


@dataclass(frozen=True)
class Load:
    """How the trace was compressed, and the offered load it gives over the measured arrivals."""

    compression: float
    arrivals: int
    warmup: int
    offered_mean: float
    offered_min: float
    offered_max: float

    def to_json(self) -> dict[str, object]:
        return {"compression": round(self.compression, 1), "arrivals": self.arrivals, "warmup_arrivals": self.warmup,
                "offered_load_pct": {"mean": round(100 * self.offered_mean, 1),
                                     "min": round(100 * self.offered_min, 1),
                                     "max": round(100 * self.offered_max, 1)}}


def read_timed_tasks(path: str | Path) -> list[TimedTask]:
    """Tasks of an openb pod list with their creation and deletion times, in creation order
    (ties by name). ValueError when the file has no times (the ``multigpu*`` variants)."""
    tasks = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"creation_time", "deletion_time"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path} has no creation_time/deletion_time columns")
        for row in reader:
            spec = tuple(s for s in (row.get("gpu_spec") or "").split("|") if s)
            task = TraceTask(row["name"], int(row["cpu_milli"]), int(row["memory_mib"]), int(row["num_gpu"]),
                             int(row["gpu_milli"]), spec)
            created = int(row["creation_time"] or 0)
            deleted = int(row["deletion_time"] or created)
            tasks.append(TimedTask(task, created, deleted))
    tasks.sort(key=lambda t: (t.creation, t.task.name))
    return tasks


def stream(tasks: Sequence[TimedTask], passes: int) -> list[tuple[int, TimedTask]]:
    """The trace ``passes`` times: (uncompressed arrival time, task), pass ``p`` shifted by ``p`` spans."""
    if not tasks:
        return []
    start = tasks[0].creation
    span = tasks[-1].creation - start + 1
    return [(task.creation - start + p * span, task) for p in range(passes) for task in tasks]


def arrival_times(arrivals: Sequence[tuple[int, TimedTask]], compression: float, max_gap_s: float) -> list[float]:
    """Compressed arrival times: trace gaps divided by ``compression``, each cut to ``max_gap_s``."""
    times = []
    now = 0.0
    previous = arrivals[0][0] if arrivals else 0
    for at, _ in arrivals:
        now += min((at - previous) / compression, max_gap_s)
        previous = at
        times.append(now)
    return times


def offered(arrivals: Sequence[tuple[int, TimedTask]], times: Sequence[float], capacity: int,
            max_lifetime_s: float) -> list[float]:
    """Offered load (share of ``capacity``) just after each arrival."""
    leaving: list[tuple[float, int]] = []
    current = 0
    loads = []
    for now, (_, task) in zip(times, arrivals):
        while leaving and leaving[0][0] <= now:
            current -= heapq.heappop(leaving)[1]
        current += task.task.gpu_request_milli
        heapq.heappush(leaving, (now + min(task.lifetime, max_lifetime_s), task.task.gpu_request_milli))
        loads.append(current / capacity)
    return loads


def tune_load(tasks: Sequence[TimedTask], capacity: int, settings: RebalanceBenchSettings) -> Load:
    """The compression at which the offered load averages ``target_load`` over the measured arrivals."""
    arrivals = stream(tasks, settings.passes)
    warmup = len(tasks) * min(settings.warmup_passes, settings.passes - 1)

    def loads(k: float) -> list[float]:
        times = arrival_times(arrivals, k, settings.max_gap_s)
        return offered(arrivals, times, capacity, settings.max_lifetime_s)[warmup:] or [0.0]

    low, high = 0.0, 9.0  # log10 of the compression
    for _ in range(30):
        middle = (low + high) / 2
        measured = loads(10 ** middle)
        if sum(measured) / len(measured) < settings.target_load:
            low = middle
        else:
            high = middle
    k = 10 ** ((low + high) / 2)
    measured = loads(k)
    return Load(k, len(arrivals), warmup, sum(measured) / len(measured), min(measured), max(measured))


def replay(nodes: Sequence[TraceNode], tasks: Sequence[TimedTask], load: Load, settings: RebalanceBenchSettings,
           seed: int, with_rebalancer: bool) -> ModeRun:
    """One replay of the compressed stream, with or without defragmentation on failure."""
    capacity = capacity_milli(nodes)
    arrivals = stream(tasks, settings.passes)[:settings.task_limit]
    times = arrival_times(arrivals, load.compression, settings.max_gap_s)
    snapshot = cluster(nodes, seed)
    policy = make_policy(settings.policy, [t.task.shape() for t in tasks], seed=seed)
    most = max(defrag_cap(gpus, settings) for gpus in {t.task.num_gpu for t in tasks} | {1})
    rebalance_settings = RebalanceSettings(max_moves_per_cycle=most, min_move_interval_s=settings.min_move_interval_s,
                                           candidate_nodes=settings.candidate_nodes, max_pods_per_candidate=most)
    starts = 0 if settings.rebalance_in_warmup else load.warmup
    movable: dict[str, Movable] = {}
    last_moved: dict[str, float] = {}
    leaving: list[tuple[float, int, str]] = []
    used = defragmentations = 0
    placed_by = [0, 0]  # warm-up, measured
    moved_by = [0, 0]
    failures = 0
    allowance = 0.0
    total = samples = 0.0
    curve: list[tuple[float, float]] = []
    every = max(1, len(arrivals) // 2000)
    started = time.perf_counter()
    where: dict[str, BoundPod] = {}
    holds: dict[str, float] = {}  # node held for large tasks -> when the hold ends

    def moved(moves: Sequence[Move], now: float) -> None:
        for move in moves:
            last_moved[move.pod] = now
            where[move.pod] = next(b for b in reversed(snapshot.bound) if b.pod == move.pod)
        moved_by[measured] += len(moves)

    for index, (now, (_, timed)) in enumerate(zip(times, arrivals)):
        while leaving and leaving[0][0] <= now:
            _, _, pod = heapq.heappop(leaving)
            gone = where.pop(pod)
            used -= gone.gpu_milli * len(gone.gpu_indices)
            snapshot = unbound(snapshot, pod)
            del movable[pod]
            last_moved.pop(pod, None)
        measured = index >= load.warmup
        if index == load.warmup:
            allowance = 0.0  # the measured window spends only the moves it earns
        active = with_rebalancer and index >= starts
        request = timed.task.request(f"{timed.task.name}#{index}")
        for node in [n for n, until in holds.items() if until <= now]:
            del holds[node]
        large = timed.task.num_gpu >= settings.hold_gpus
        placed: BoundPod | None = None
        if holds and not large:
            chosen = select(snapshot, request, policy, avoid=frozenset(holds))
            if chosen is not None:
                placed = bound_pod(snapshot, request, *chosen)
                snapshot = snapshot.with_bound(placed)
        if placed is None:
            decision, snapshot = place(snapshot, request, policy, {}, explain_failure=False)
            placed = snapshot.bound[-1] if isinstance(decision, Bind) else None
        budget = defrag_budget(timed.task.num_gpu, allowance, settings) if placed is None and active else 0
        if budget >= 1:
            found = defragment(snapshot, request, policy, movable, Budgets(now=now, last_moved=last_moved),
                               rebalance_settings, max_moves=budget, reserved=frozenset(holds))
            if found is not None and found.moves:
                placed = bound_pod(found.snapshot, request, found.node, found.gpu_indices)
                snapshot = found.snapshot.with_bound(placed)
                allowance -= len(found.moves)
                defragmentations += 1 if measured else 0
                moved(found.moves, now)
        if placed is None and active and large and settings.hold_s is not None:
            started_on = prepare(snapshot, request, policy, movable, Budgets(now=now, last_moved=last_moved),
                                 rebalance_settings, max_moves=budget, reserved=frozenset(holds),
                                 nodes=frozenset(holds) if len(holds) >= settings.max_holds else None)
            if started_on is not None:
                snapshot = started_on.snapshot
                allowance -= len(started_on.moves)
                moved(started_on.moves, now)
                holds[started_on.node] = now + settings.hold_s
        if placed is not None and large:
            holds.pop(placed.node, None)
        if placed is None:
            failures += 1 if measured else 0
        else:
            placed_by[measured] += 1
            used += placed.gpu_milli * len(placed.gpu_indices)
            movable[request.pod] = Movable(request)
            where[request.pod] = placed
            heapq.heappush(leaving, (now + min(timed.lifetime, settings.max_lifetime_s), index, request.pod))
            if active:
                allowance = min(allowance + settings.move_rate / 100, settings.max_saved_moves)
                if settings.consolidate_when_saved is not None and allowance >= settings.consolidate_when_saved:
                    packed = consolidate(snapshot, policy, movable, Budgets(now=now, last_moved=last_moved),
                                         rebalance_settings, max_moves=1)
                    snapshot = packed.snapshot
                    allowance -= len(packed.moves)
                    moved(packed.moves, now)
        unallocated = 100.0 * (capacity - used) / capacity
        if measured:
            total += unallocated
            samples += 1
        if index % every == 0:
            curve.append((now / 3600, unallocated))
    return ModeRun(with_rebalancer, seed, total / samples if samples else float("nan"), placed_by[1], failures,
                   moved_by[1], defragmentations, time.perf_counter() - started, curve=curve,
                   warmup_placements=placed_by[0], warmup_moves=moved_by[0])


def bound_pod(snapshot: ClusterSnapshot, request: PodRequest, node: str, gpus: tuple[int, ...]) -> BoundPod:
    """``request`` bound on ``node``/``gpus`` of ``snapshot``, as ``place`` binds it."""
    milli = request.milli_on(snapshot.states[node]) if gpus else 0
    return BoundPod(request.pod, node, gpus, milli, request.cpu_milli, request.memory_mib, request.service)


def defrag_cap(gpus: int, settings: RebalanceBenchSettings) -> int:
    """Moves one defragmentation may make for a task asking for ``gpus`` whole GPUs (0 or 1: a task of
    one GPU or less): ``max_moves_per_defrag``, or ``moves_per_gpu`` per GPU when that is more."""
    if gpus <= 1:
        return settings.max_moves_per_defrag
    return max(settings.max_moves_per_defrag, math.ceil(settings.moves_per_gpu * gpus))


def defrag_budget(gpus: int, allowance: float, settings: RebalanceBenchSettings) -> int:
    """Moves a defragmentation for a task asking for ``gpus`` GPUs may spend now, with ``allowance``
    saved: its cap, within what is saved; for a task of one GPU or less only what is saved beyond
    ``small_task_reserve`` (nothing when that is None). Below 1: no defragmentation."""
    if gpus <= 1:
        if settings.small_task_reserve is None:
            return 0
        allowance -= settings.small_task_reserve
    return max(0, min(math.floor(allowance), defrag_cap(gpus, settings)))


def run(settings: RebalanceBenchSettings, progress: Callable[[str], None] | None = None
        ) -> tuple[Load, list[ModeRun]]:
    """Every seed, without then with the rebalancer, on the same arrivals."""
    nodes, tasks = read_nodes(settings.nodes_csv), read_timed_tasks(settings.pods_csv)
    load = tune_load(tasks, capacity_milli(nodes), settings)
    if progress:
        progress(f"arrival times compressed {load.compression:.0f}×: {load.arrivals} arrivals "
                 f"({settings.passes} passes, the first {load.warmup} warm-up; gaps cut to {settings.max_gap_s:g} s, "
                 f"lifetimes to {settings.max_lifetime_s:g} s), offered load "
                 f"{100 * load.offered_mean:.1f} % of the GPUs on average "
                 f"({100 * load.offered_min:.0f}–{100 * load.offered_max:.0f} %)")
    jobs = [(settings, seed, with_rebalancer) for seed in settings.seeds for with_rebalancer in (False, True)]
    runs: list[ModeRun] = []

    def done(result: ModeRun) -> None:
        runs.append(result)
        if progress:
            progress(f"[{len(runs)}/{len(jobs)}] seed {result.seed} "
                     f"{'with' if result.rebalance else 'without'} rebalancer: "
                     f"{result.unallocated_pct:.2f} % unallocated, {result.moves_per_100:.2f} moves per 100 "
                     f"placements, {result.failures} failed, {result.seconds:.0f} s")

    if settings.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(settings.workers) as pool:
            for result in pool.map(_replay_job, [(job, load) for job in jobs]):
                done(result)
    else:
        for job_settings, seed, with_rebalancer in jobs:
            done(replay(nodes, tasks, load, job_settings, seed, with_rebalancer))
    return load, runs


def _replay_job(job: tuple[tuple[RebalanceBenchSettings, int, bool], Load]) -> ModeRun:
    (settings, seed, with_rebalancer), load = job
    return replay(read_nodes(settings.nodes_csv), read_timed_tasks(settings.pods_csv), load, settings, seed,
                  with_rebalancer)


def summary(settings: RebalanceBenchSettings, load: Load, runs: Sequence[ModeRun]) -> dict[str, object]:
    """Medians over seeds per mode, the relative reduction of unallocated GPUs, and every run."""
    def mode(rebalanced: bool) -> dict[str, float]:
        chosen = [r for r in runs if r.rebalance == rebalanced]
        return {"unallocated_gpu_pct": round(statistics.median(r.unallocated_pct for r in chosen), 3),
                "moves_per_100_placements": round(statistics.median(r.moves_per_100 for r in chosen), 3),
                "moves_per_100_placements_whole_replay":
                    round(statistics.median(r.moves_per_100_whole for r in chosen), 3),
                "placements": statistics.median(r.placements for r in chosen),
                "failed": statistics.median(r.failures for r in chosen)}
    without, with_ = mode(False), mode(True)
    base = without["unallocated_gpu_pct"]
    reduction = 100 * (base - with_["unallocated_gpu_pct"]) / base if base else 0.0
    return {"policy": settings.policy, "seeds": list(settings.seeds), "passes": settings.passes,
            "warmup_passes": settings.warmup_passes, "max_lifetime_s": settings.max_lifetime_s,
            "max_gap_s": settings.max_gap_s,
            "target_load_pct": round(100 * settings.target_load, 1), "move_rate_per_100": settings.move_rate,
            "moves_per_defrag": settings.max_moves_per_defrag, "moves_per_gpu": settings.moves_per_gpu,
            "small_task_reserve": settings.small_task_reserve, "max_saved_moves": settings.max_saved_moves,
            "candidate_nodes": settings.candidate_nodes, "consolidate_when_saved": settings.consolidate_when_saved,
            "rebalance_in_warmup": settings.rebalance_in_warmup, "hold_s": settings.hold_s,
            "max_holds": settings.max_holds,
            "load": load.to_json(), "without_rebalancer": without, "with_rebalancer": with_,
            "unallocated_reduction_pct": round(reduction, 1), "runs": {
                "without_rebalancer": [r.to_json() for r in runs if not r.rebalance],
                "with_rebalancer": [r.to_json() for r in runs if r.rebalance]}}


def table(result: dict[str, object]) -> str:
    """Both modes side by side."""
    load = result["load"]
    assert isinstance(load, dict)
    lines = [f"policy {result['policy']}, seeds {result['seeds']}: trace arrival times compressed "
             f"{load['compression']}× (gaps cut to {result['max_gap_s']} s, lifetimes to "
             f"{result['max_lifetime_s']} s), {load['arrivals']} arrivals, the first {load['warmup_arrivals']} "
             f"warm-up; offered load over the rest {load['offered_load_pct']['mean']} % "
             f"of GPUs (min {load['offered_load_pct']['min']}, max {load['offered_load_pct']['max']})",
             f"{'':<20}{'unallocated GPU %':>19}{'moves/100 placed':>18}{'placed':>9}{'failed':>9}"]
    for name, key in (("without rebalancer", "without_rebalancer"), ("with rebalancer", "with_rebalancer")):
        row = result[key]
        assert isinstance(row, dict)
        lines.append(f"{name:<20}{row['unallocated_gpu_pct']:>19.2f}{row['moves_per_100_placements']:>18.2f}"
                     f"{row['placements']:>9.0f}{row['failed']:>9.0f}")
    lines.append(f"unallocated GPUs {result['unallocated_reduction_pct']} % fewer with the rebalancer "
                 "(median over seeds, mean over the measured arrivals)")
    row = result["with_rebalancer"]
    assert isinstance(row, dict)
    lines.append(f"moves per 100 placements over the whole replay, warm-up included: "
                 f"{row['moves_per_100_placements_whole_replay']:.2f}"
                 f"{'' if result['rebalance_in_warmup'] else ' (the rebalancer starts with the measurement)'}")
    return "\n".join(lines)


def plot(runs: Sequence[ModeRun], path: Path, title: str) -> None:
    """Unallocated GPU % over simulated time, both modes, the first seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    seed = runs[0].seed
    for r in runs:
        if r.seed == seed:
            axes.plot([x for x, _ in r.curve], [y for _, y in r.curve], linewidth=1.0,
                      label="with rebalancer" if r.rebalance else "without rebalancer")
    axes.set_xlabel("simulated time (hours)")
    axes.set_ylabel("unallocated GPUs (% of cluster GPUs)")
    axes.set_title(title)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trireme bench rebalance``."""
    parser.add_argument("--nodes", required=True,
                        help="node list, e.g. ../shared/data/openb/openb_node_list_gpu_node.csv")
    parser.add_argument("--pods", required=True,
                        help="task list with creation/deletion times, "
                             "e.g. ../shared/data/openb/openb_pod_list_default.csv")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help=f"placement policy (default {DEFAULT_POLICY}): "
                        f"{', '.join(POLICY_NAMES)}")
    parser.add_argument("--seeds", default="42-44", help="seeds, a range '42-44' (default) or a list")
    parser.add_argument("--passes", type=int, default=6, help="replays of the trace (default 6)")
    parser.add_argument("--warmup-passes", type=int, default=3, help="passes before measuring (default 3)")
    parser.add_argument("--max-lifetime", type=float, default=3600.0,
                        help="seconds a task stays at most; longer ones leave then (default 3600)")
    parser.add_argument("--max-gap", type=float, default=0.5,
                        help="longest compressed gap between arrivals, seconds (default 0.5)")
    parser.add_argument("--workers", type=int, default=1, help="processes replaying runs in parallel (default 1)")
    parser.add_argument("--load", type=float, default=105.0,
                        help="offered load to tune arrivals to, %% of the cluster's GPUs (default 105)")
    parser.add_argument("--move-rate", type=float, default=2.0, help="moves allowed per 100 placements (default 2)")
    parser.add_argument("--consolidate-when-saved", type=float, default=None,
                        help="spend a saved move on emptying a lightly used GPU once this many are saved "
                             "(default: never, moves go only to tasks that fail to place)")
    parser.add_argument("--no-consolidate", action="store_true",
                        help="never consolidate, whatever --consolidate-when-saved says")
    parser.add_argument("--moves-per-defrag", type=int, default=RebalanceBenchSettings.max_moves_per_defrag,
                        help="moves one defragmentation may make for a task of one GPU or less, and the least for "
                             f"any task (default {RebalanceBenchSettings.max_moves_per_defrag})")
    parser.add_argument("--moves-per-gpu", type=float, default=RebalanceBenchSettings.moves_per_gpu,
                        help="moves a defragmentation may make per GPU of a multi-GPU task "
                             f"(default {RebalanceBenchSettings.moves_per_gpu:g})")
    parser.add_argument("--small-task-reserve", type=float, default=None,
                        help="defragment tasks of one GPU or less too, with moves saved beyond this many "
                             "(default: never)")
    parser.add_argument("--max-saved-moves", type=int, default=RebalanceBenchSettings.max_saved_moves,
                        help=f"most moves saved up (default {RebalanceBenchSettings.max_saved_moves})")
    parser.add_argument("--candidate-nodes", type=int, default=RebalanceBenchSettings.candidate_nodes,
                        help="nodes one defragmentation simulates emptying "
                             f"(default {RebalanceBenchSettings.candidate_nodes})")
    parser.add_argument("--hold", type=float, default=None, metavar="SECONDS",
                        help="an 8-GPU task the saved moves cannot place starts emptying the node cheapest to clear "
                             "with them, and that node is held for 8-GPU tasks this long (default: no holds)")
    parser.add_argument("--max-holds", type=int, default=RebalanceBenchSettings.max_holds,
                        help=f"nodes held at once with --hold (default {RebalanceBenchSettings.max_holds})")
    parser.add_argument("--start-with-measurement", action="store_true",
                        help="the rebalancer starts when the warm-up ends instead of with the first arrival")
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N arrivals (a quick check)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--plot", help="write unallocated GPU %% over time, both modes, to this PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def main(args: argparse.Namespace) -> int:
    """The ``trireme bench rebalance`` command (arguments from ``trireme.cli``)."""
    try:
        if args.policy not in POLICY_NAMES:
            raise ValueError(f"unknown policy {args.policy!r}: choose from {', '.join(POLICY_NAMES)}")
        numbers: tuple[float, ...] = (args.load, args.move_rate, args.max_lifetime, args.max_gap)
        if args.hold is not None:
            numbers += (args.hold,)
        if args.passes < 1 or args.warmup_passes < 0 or not all(math.isfinite(n) and n > 0 for n in numbers):
            raise ValueError("--passes must be at least 1, --warmup-passes not negative, "
                             "--load, --move-rate, --max-lifetime, --max-gap and --hold positive")
        settings = RebalanceBenchSettings(
            nodes_csv=Path(args.nodes), pods_csv=Path(args.pods), policy=args.policy, seeds=parse_seeds(args.seeds),
            passes=args.passes, warmup_passes=args.warmup_passes, max_lifetime_s=args.max_lifetime,
            max_gap_s=args.max_gap, target_load=args.load / 100, move_rate=args.move_rate, task_limit=args.limit,
            max_moves_per_defrag=max(1, args.moves_per_defrag), moves_per_gpu=max(0.0, args.moves_per_gpu),
            small_task_reserve=args.small_task_reserve, max_saved_moves=max(1, args.max_saved_moves),
            candidate_nodes=max(1, args.candidate_nodes),
            consolidate_when_saved=None if args.no_consolidate else args.consolidate_when_saved,
            rebalance_in_warmup=not args.start_with_measurement, workers=max(1, args.workers),
            hold_s=args.hold, max_holds=max(1, args.max_holds))
        for path in (settings.nodes_csv, settings.pods_csv):
            if not path.is_file():
                raise ValueError(f"{path} is not a file")
        say = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
        load, runs = run(settings, say)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = summary(settings, load, runs)
    print(json.dumps(result) if args.json else table(result))
    if args.plot:
        plot(runs, Path(args.plot), f"{settings.pods_csv.stem}, {settings.policy}, seed {runs[0].seed}")
    return 0
