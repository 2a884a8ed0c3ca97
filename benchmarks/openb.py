"""The openb GPU cluster trace (Alibaba, as used by the FGD paper), read into scheduler types.

The placement benchmarks replay it with the paper's protocol (see
``../shared/data/README.md``): the GPU nodes of ``openb_node_list_gpu_node.csv`` in a
random order drawn per seed, and the tasks of an ``openb_pod_list_*.csv`` file,
shuffled per seed and topped up with tasks drawn with replacement until the summed GPU
request reaches 130 % of the cluster's GPUs. Nothing here is specific to a policy.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trireme.scheduler.cluster import DEFAULT_MAX_PODS, MILLI, ClusterSnapshot, NodeState, node_state
from trireme.scheduler.fragmentation import TaskShape, shape_of
from trireme.scheduler.requests import PodRequest

MODEL_LABEL = "trireme.io/openb-model"
"""Label carrying the trace's GPU model code on the benchmark's nodes."""


@dataclass(frozen=True)
class TraceNode:
    """One row of an openb node list."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str

    def state(self) -> NodeState:
        return node_state(gpus=self.gpus, product=self.model, cpu_milli=self.cpu_milli, memory_mib=self.memory_mib,
                          max_pods=DEFAULT_MAX_PODS)


@dataclass(frozen=True)
class TraceTask:
    """One row of an openb pod list: ``gpu_milli`` is the share of each of its ``num_gpu`` GPUs."""

    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int
    gpu_spec: tuple[str, ...] = ()

    @property
    def gpu_request_milli(self) -> int:
        """The task's GPU demand as the paper counts it: num_gpu × gpu_milli."""
        return self.num_gpu * self.gpu_milli

    def request(self, pod: str) -> PodRequest:
        """The scheduler request for this task, as pod ``pod``."""
        shared = self.num_gpu == 1 and 0 < self.gpu_milli < MILLI
        return PodRequest(pod=pod, cpu_milli=self.cpu_milli, memory_mib=self.memory_mib,
                          gpus=self.num_gpu if self.gpu_milli else 0, gpu_milli=self.gpu_milli if shared else 0,
                          products=self.gpu_spec)

    def shape(self) -> TaskShape:
        return shape_of(self.cpu_milli, self.num_gpu if self.gpu_milli else 0, self.gpu_milli, self.gpu_spec,
                        self.memory_mib)


def read_nodes(path: str | Path) -> list[TraceNode]:
    """GPU nodes of an openb node list (CPU-only rows are skipped: the paper's cluster has GPUs only)."""
    nodes = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            gpus = int(row["gpu"] or 0)
            if gpus:
                nodes.append(TraceNode(row["sn"], int(row["cpu_milli"]), int(row["memory_mib"]), gpus,
                                       row.get("model") or ""))
    return nodes


def read_tasks(path: str | Path) -> list[TraceTask]:
    """Tasks of an openb pod list, sorted by name (the paper's starting order)."""
    tasks = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            spec = tuple(s for s in (row.get("gpu_spec") or "").split("|") if s)
            tasks.append(TraceTask(row["name"], int(row["cpu_milli"]), int(row["memory_mib"]), int(row["num_gpu"]),
                                   int(row["gpu_milli"]), spec))
    tasks.sort(key=lambda t: t.name)
    return tasks


def capacity_milli(nodes: Sequence[TraceNode]) -> int:
    return sum(n.gpus for n in nodes) * MILLI


def arrivals(tasks: Sequence[TraceTask], capacity: int, seed: int, inflation: float = 1.3) -> list[TraceTask]:
    """The paper's arrival order: the name-sorted trace shuffled with ``seed``, then tasks drawn
    uniformly with replacement from it until the next would push the summed GPU request past
    ``inflation`` × ``capacity``."""
    rng = random.Random(seed)
    order = list(tasks)
    rng.shuffle(order)
    total = sum(t.gpu_request_milli for t in order)
    limit = inflation * capacity
    while tasks:
        extra = tasks[rng.randrange(len(tasks))]
        if total + extra.gpu_request_milli > limit:
            break
        order.append(extra)
        total += extra.gpu_request_milli
    return order


def node_order(nodes: Sequence[TraceNode], seed: int) -> list[str]:
    """Per-seed names that sort in a random order: the paper's tie-break (a random prefix per node)."""
    rng = random.Random(f"node-order-{seed}")
    ranks = list(range(len(nodes)))
    rng.shuffle(ranks)
    width = len(str(len(nodes)))
    return [f"{rank:0{width}d}-{node.name}" for rank, node in zip(ranks, nodes)]


def cluster(nodes: Sequence[TraceNode], seed: int) -> ClusterSnapshot:
    """The empty cluster with the per-seed node names."""
    return ClusterSnapshot.of({name: node.state() for name, node in zip(node_order(nodes, seed), nodes)})
