"""``trireme bench throughput``: how many placements per second the planner makes on one core.

A simulated cluster of N nodes and M pending pods, both drawn like the openb trace: node
shapes (CPU, memory, GPUs, model) and pod shapes (CPU, memory, GPU count, GPU share)
are sampled from the trace's CSV files when they are given, otherwise from the
distribution constants below, taken from the same files (the 15 node shapes of
``openb_node_list_gpu_node.csv``; the 40 most common task shapes of
``openb_pod_list_default.csv``, 91 % of its tasks, plus its most common multi-GPU
shapes). All M pods go to ``plan`` as one batch, as the operator hands it a cycle's
pending pods; the time covers planning only, not building the inputs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trireme.benchmarks.openb import TraceNode, TraceTask, read_nodes, read_tasks
from trireme.scheduler.cluster import ClusterSnapshot
from trireme.scheduler.plan import plan
from trireme.scheduler.policies import DEFAULT_POLICY, POLICY_NAMES, make_policy

NODE_SHAPES: tuple[tuple[int, int, int, str, int], ...] = (
    # cpu_milli, memory_mib, GPUs, model, nodes in the trace
    (96000, 393216, 8, "G2", 549), (104000, 524288, 2, "T4", 387), (16000, 122880, 2, "P100", 107),
    (128000, 786432, 8, "G3", 39), (32000, 131072, 4, "V100M16", 28), (64000, 262144, 2, "P100", 22),
    (96000, 786432, 8, "V100M32", 21), (8000, 32768, 1, "V100M16", 19), (96000, 393216, 4, "T4", 17),
    (48000, 376832, 4, "V100M32", 9), (64000, 262144, 8, "V100M16", 7), (8000, 61440, 1, "P100", 3),
    (8000, 61440, 2, "P100", 2), (128000, 1048576, 1, "A10", 2), (82000, 344064, 8, "V100M16", 1),
)
"""The openb cluster's node shapes and how many nodes of each it has."""

TASK_SHAPES: tuple[tuple[int, int, int, int, int], ...] = (
    # cpu_milli, memory_mib, num_gpu, gpu_milli (share of each GPU), tasks in the default trace
    (3152, 5600, 1, 810, 1047), (11300, 49152, 1, 1000, 857), (11400, 48128, 1, 1000, 534),
    (3152, 5600, 1, 1000, 470), (11908, 47104, 1, 470, 388), (12500, 57344, 0, 0, 364),
    (8000, 30517, 1, 470, 360), (32000, 49152, 0, 0, 284), (18708, 64512, 1, 1000, 255),
    (11908, 47104, 1, 650, 237), (9810, 41560, 1, 1000, 195), (8000, 30517, 0, 0, 163),
    (12000, 24576, 1, 1000, 158), (15700, 58368, 1, 1000, 158), (11908, 47104, 1, 1000, 153),
    (15400, 51200, 0, 0, 120), (4000, 22888, 1, 320, 111), (16000, 32768, 1, 1000, 108),
    (8000, 16384, 1, 1000, 104), (4000, 24576, 1, 1000, 104), (12000, 16384, 1, 1000, 99),
    (16500, 51200, 0, 0, 95), (14200, 58368, 1, 1000, 93), (4000, 30517, 1, 230, 84),
    (24200, 93184, 1, 1000, 84), (4000, 15258, 1, 320, 78), (3152, 5600, 1, 590, 75),
    (8000, 30517, 1, 320, 72), (4152, 10600, 1, 550, 72), (11400, 77824, 1, 1000, 65),
    (8000, 32768, 1, 1000, 55), (4000, 15258, 1, 160, 53), (6000, 6144, 1, 460, 51),
    (11900, 77824, 1, 1000, 51), (4152, 10600, 1, 370, 45), (12000, 15360, 1, 1000, 44),
    (4000, 30517, 1, 320, 43), (8200, 33792, 1, 1000, 41), (4000, 31250, 1, 1000, 40),
    (15200, 80896, 1, 1000, 36),
    (88000, 327680, 8, 1000, 18), (64200, 263168, 8, 1000, 18), (32200, 132096, 4, 1000, 9),
    (16200, 66560, 2, 1000, 7),
)
"""The default trace's most common task shapes and how many tasks of each it has."""


@dataclass(frozen=True)
class ThroughputSettings:
    """One run: cluster and batch sizes, the policy, and where shapes come from."""

    nodes: int = 1213
    pods: int = 5000
    policy: str = DEFAULT_POLICY
    seed: int = 42
    nodes_csv: Path | None = None
    pods_csv: Path | None = None


@dataclass(frozen=True)
class ThroughputResult:
    policy: str
    nodes: int
    pods: int
    placed: int
    seconds: float

    @property
    def placements_per_s(self) -> float:
        return self.pods / self.seconds if self.seconds > 0 else float("inf")

    def to_json(self) -> dict[str, object]:
        return {"policy": self.policy, "nodes": self.nodes, "pods": self.pods,
                "placements_per_s": round(self.placements_per_s, 1)}


def _sample_nodes(settings: ThroughputSettings, rng: random.Random) -> list[TraceNode]:
    if settings.nodes_csv:
        pool = read_nodes(settings.nodes_csv)
        return [pool[rng.randrange(len(pool))] for _ in range(settings.nodes)]
    shapes = rng.choices(NODE_SHAPES, weights=[s[4] for s in NODE_SHAPES], k=settings.nodes)
    return [TraceNode(f"node-{i:05d}", cpu, memory, gpus, model) for i, (cpu, memory, gpus, model, _) in
            enumerate(shapes)]


def _sample_tasks(settings: ThroughputSettings, rng: random.Random) -> list[TraceTask]:
    if settings.pods_csv:
        pool = read_tasks(settings.pods_csv)
        return [pool[rng.randrange(len(pool))] for _ in range(settings.pods)]
    shapes = rng.choices(TASK_SHAPES, weights=[s[4] for s in TASK_SHAPES], k=settings.pods)
    return [TraceTask(f"task-{i:06d}", cpu, memory, gpus, milli) for i, (cpu, memory, gpus, milli, _) in
            enumerate(shapes)]


def run(settings: ThroughputSettings) -> ThroughputResult:
    """Plan ``settings.pods`` sampled pods on ``settings.nodes`` sampled nodes, timed."""
    rng = random.Random(settings.seed)
    nodes = _sample_nodes(settings, rng)
    tasks = _sample_tasks(settings, rng)
    snapshot = ClusterSnapshot.of({f"node-{i:05d}": node.state() for i, node in enumerate(nodes)})
    policy = make_policy(settings.policy, [t.shape() for t in tasks], seed=settings.seed)
    requests = [task.request(f"bench/{task.name}-{i}") for i, task in enumerate(tasks)]
    started = time.perf_counter()
    result = plan(snapshot, requests, policy)
    seconds = time.perf_counter() - started
    return ThroughputResult(settings.policy, settings.nodes, settings.pods, len(result.binds), seconds)


def table(results: Sequence[ThroughputResult]) -> str:
    lines = ["policy       nodes     pods   placed   seconds   placements/s"]
    for r in results:
        lines.append(f"{r.policy:<10}{r.nodes:>8}{r.pods:>9}{r.placed:>9}{r.seconds:>10.2f}"
                     f"{r.placements_per_s:>15.0f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trireme bench throughput``."""
    parser.add_argument("--nodes", type=int, default=1213, help="simulated nodes (default 1213, the openb cluster)")
    parser.add_argument("--pods", type=int, default=5000, help="pending pods planned in one batch (default 5000)")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help=f"one of {', '.join(POLICY_NAMES)} "
                        f"(default {DEFAULT_POLICY})")
    parser.add_argument("--seed", type=int, default=42, help="seed of the sampled shapes (default 42)")
    parser.add_argument("--nodes-csv", help="sample node shapes from this openb node list (default: built-in)")
    parser.add_argument("--pods-csv", help="sample pod shapes from this openb task list (default: built-in)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def main(args: argparse.Namespace) -> int:
    """The ``trireme bench throughput`` command (arguments from ``trireme.cli``)."""
    if args.policy not in POLICY_NAMES or args.nodes < 1 or args.pods < 1:
        print(f"error: --nodes and --pods must be positive and --policy one of {', '.join(POLICY_NAMES)}",
              file=sys.stderr)
        return 2
    settings = ThroughputSettings(nodes=args.nodes, pods=args.pods, policy=args.policy, seed=args.seed,
                                  nodes_csv=Path(args.nodes_csv) if args.nodes_csv else None,
                                  pods_csv=Path(args.pods_csv) if args.pods_csv else None)
    result = run(settings)
    print(json.dumps(result.to_json()) if args.json else table([result]))
    return 0
