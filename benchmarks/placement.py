"""``trireme bench placement``: replay the openb trace with the FGD paper's protocol.

Each task of the inflated, shuffled trace is planned once, in order, on the snapshot
the earlier ones left, by the same ``place`` the operator's planner uses; a task that
fits nowhere is dropped. After each task the allocated share of the cluster's GPUs is
recorded; the figure at X % arrived is the mean allocation over the tasks whose
arrived GPU demand rounds to X % of capacity, and the reported value is the median over
seeds of 100 − that allocation: the share of GPUs left unallocated.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from trireme.benchmarks.openb import TraceNode, TraceTask, arrivals, capacity_milli, cluster, read_nodes, read_tasks
from trireme.scheduler.plan import Bind, place
from trireme.scheduler.policies import POLICY_NAMES, make_policy

REPORTED_ARRIVED = (95, 100, 110, 120, 130)
"""Arrived GPU demand (% of capacity) at which the table reports unallocated GPUs."""


@dataclass(frozen=True)
class PlacementSettings:
    """One run of the benchmark."""

    nodes_csv: Path
    pods_csv: Path
    policies: tuple[str, ...]
    seeds: tuple[int, ...] = tuple(range(42, 52))
    """The paper's seeds."""
    workers: int = 1
    task_limit: int | None = None
    """Replay only the first N arrivals (a quick check; figures past that point are missing)."""
    inflation: float = 1.3
    """Arrivals stop when the summed GPU request would pass this multiple of capacity (the paper: 1.3)."""


@dataclass
class SeedRun:
    """One replay: allocation per arrived percentage, and time spent placing."""

    policy: str
    seed: int
    allocated_by_arrived: dict[int, float]
    placements: int
    tasks: int
    seconds: float


@dataclass
class PolicyResult:
    """Medians over seeds for one policy."""

    policy: str
    seeds: list[int]
    unallocated_gpu_pct: dict[str, float]
    allocated_curve: dict[int, float] = field(repr=False)
    placements_per_s: float

    def to_json(self) -> dict[str, object]:
        return {"policy": self.policy, "seeds": self.seeds, "unallocated_gpu_pct": self.unallocated_gpu_pct,
                "placements_per_s": round(self.placements_per_s, 1)}


def replay(nodes: Sequence[TraceNode], trace: Sequence[TraceTask], policy_name: str, seed: int,
           task_limit: int | None = None, inflation: float = 1.3) -> SeedRun:
    """Replay ``trace`` (name-sorted tasks) on ``nodes`` with one policy and seed."""
    capacity = capacity_milli(nodes)
    order = arrivals(trace, capacity, seed, inflation)[:task_limit]
    snapshot = cluster(nodes, seed)
    policy = make_policy(policy_name, [t.shape() for t in trace], seed=seed)
    requests = [task.request(f"{task.name}#{i}") for i, task in enumerate(order)]
    fresh: dict = {}
    arrived = used = 0
    sums: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    placements = 0
    started = time.perf_counter()
    for task, request in zip(order, requests):
        decision, snapshot = place(snapshot, request, policy, fresh, explain_failure=False)
        arrived += task.gpu_request_milli
        if isinstance(decision, Bind):
            placements += 1
            used += task.gpu_request_milli
        bucket = math.floor(arrived * 100 / capacity + 0.5)
        sums[bucket] += used * 100 / capacity
        counts[bucket] += 1
    seconds = time.perf_counter() - started
    return SeedRun(policy_name, seed, {b: sums[b] / counts[b] for b in sorted(sums)}, placements, len(order),
                   seconds)


def _replay_job(job: tuple[Path, Path, str, int, int | None, float]) -> SeedRun:
    nodes_csv, pods_csv, policy, seed, limit, inflation = job
    return replay(read_nodes(nodes_csv), read_tasks(pods_csv), policy, seed, limit, inflation)


def run(settings: PlacementSettings, progress: Callable[[str], None] | None = None) -> list[PolicyResult]:
    """Every (policy, seed) replay, in parallel over ``workers`` processes; medians per policy."""
    jobs = [(settings.nodes_csv, settings.pods_csv, policy, seed, settings.task_limit, settings.inflation)
            for policy in settings.policies for seed in settings.seeds]
    runs: list[SeedRun] = []

    def done(result: SeedRun) -> None:
        runs.append(result)
        if progress:
            progress(f"[{len(runs)}/{len(jobs)}] {result.policy} seed {result.seed}: "
                     f"{100 - result.allocated_by_arrived.get(max(result.allocated_by_arrived), 0):.2f} % "
                     f"unallocated at the end, {result.tasks / result.seconds:.0f} placements/s")

    if settings.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(settings.workers) as pool:
            for result in pool.map(_replay_job, jobs):
                done(result)
    else:
        nodes, trace = read_nodes(settings.nodes_csv), read_tasks(settings.pods_csv)
        for _, _, policy, seed, limit, inflation in jobs:
            done(replay(nodes, trace, policy, seed, limit, inflation))
    return [summarise(policy, [r for r in runs if r.policy == policy]) for policy in settings.policies]


def summarise(policy: str, runs: Sequence[SeedRun]) -> PolicyResult:
    """Medians over seeds of the allocation curve; unallocated = 100 − allocated at the reported points."""
    buckets = sorted({b for r in runs for b in r.allocated_by_arrived})
    curve = {b: statistics.median([r.allocated_by_arrived[b] for r in runs if b in r.allocated_by_arrived])
             for b in buckets}
    unallocated = {str(x): round(100 - curve[x], 2) for x in REPORTED_ARRIVED if x in curve}
    rate = sum(r.tasks for r in runs) / max(sum(r.seconds for r in runs), 1e-9)
    return PolicyResult(policy, sorted(r.seed for r in runs), unallocated, curve, rate)


def table(results: Sequence[PolicyResult]) -> str:
    """Unallocated GPU % per policy at the reported arrived percentages, and placements/s."""
    head = "policy     " + "".join(f"{x:>8}%" for x in REPORTED_ARRIVED) + "   placements/s"
    lines = [f"unallocated GPUs (% of capacity, median over {len(results[0].seeds) if results else 0} seeds) "
             "at arrived GPU demand:", head]
    for r in results:
        cells = "".join(f"{r.unallocated_gpu_pct.get(str(x), float('nan')):>9.2f}" for x in REPORTED_ARRIVED)
        lines.append(f"{r.policy:<11}{cells}   {r.placements_per_s:>12.0f}")
    return "\n".join(lines)


def plot(results: Sequence[PolicyResult], path: Path, title: str) -> None:
    """Allocated GPU % against arrived GPU demand %, one line per policy (the paper's figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for r in results:
        xs = sorted(r.allocated_curve)
        axes.plot(xs, [r.allocated_curve[x] for x in xs], label=r.policy, linewidth=1.4)
    axes.plot([0, 100], [0, 100], color="grey", linewidth=0.6, linestyle=":")
    axes.set_xlabel("arrived GPU demand (% of cluster GPUs)")
    axes.set_ylabel("allocated GPUs (% of cluster GPUs)")
    axes.set_title(title)
    axes.set_xlim(0, 132)
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    inset = axes.inset_axes((0.08, 0.55, 0.4, 0.38))
    for r in results:
        xs = [x for x in sorted(r.allocated_curve) if x >= 90]
        inset.plot(xs, [r.allocated_curve[x] for x in xs], linewidth=1.2)
    inset.set_title("≥ 90 % arrived", fontsize=8)
    inset.tick_params(labelsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse_policies(text: str) -> tuple[str, ...]:
    """``all`` or comma-separated names; ValueError naming an unknown one."""
    if text.strip() == "all":
        return POLICY_NAMES
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown policy {', '.join(unknown) or text!r}: choose from {', '.join(POLICY_NAMES)} or all")
    return names


def parse_seeds(text: str) -> tuple[int, ...]:
    """``42-51`` or ``42,43``; ValueError when malformed."""
    seeds: list[int] = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        seeds.extend(range(int(low), int(high) + 1) if dash else [int(low)])
    if not seeds:
        raise ValueError("no seeds")
    return tuple(seeds)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trireme bench placement``."""
    parser.add_argument("--nodes", required=True, help="node list, e.g. ../shared/data/openb/openb_node_list_gpu_node.csv")
    parser.add_argument("--pods", required=True, help="task list, e.g. ../shared/data/openb/openb_pod_list_default.csv")
    parser.add_argument("--policy", default="all",
                        help=f"comma-separated policies or 'all' (default): {', '.join(POLICY_NAMES)}")
    parser.add_argument("--seeds", default="42-51", help="seeds, a range '42-51' (default, the paper's) or a list")
    parser.add_argument("--workers", type=int, default=1, help="processes replaying seeds in parallel (default 1)")
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N arrivals (a quick check)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--plot", help="write allocation against arrived demand, all policies, to this PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def main(args: argparse.Namespace) -> int:
    """The ``trireme bench placement`` command (arguments from ``trireme.cli``)."""
    try:
        settings = PlacementSettings(
            nodes_csv=Path(args.nodes), pods_csv=Path(args.pods), policies=parse_policies(args.policy),
            seeds=parse_seeds(args.seeds), workers=max(1, args.workers), task_limit=args.limit)
        for path in (settings.nodes_csv, settings.pods_csv):
            if not path.is_file():
                raise ValueError(f"{path} is not a file")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = run(settings, progress=None if args.quiet else lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        payload = [r.to_json() for r in results]
        print(json.dumps(payload[0] if len(payload) == 1 else payload))
    else:
        print(table(results))
    if args.plot:
        plot(results, Path(args.plot), f"{settings.pods_csv.stem}, median over {len(settings.seeds)} seeds")
    return 0
