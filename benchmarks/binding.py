"""End-to-end binding throughput: pods created over HTTP until the operator's scheduling loop
has bound them, on a large local cluster.

The in-process placement benchmark measures the scheduler alone; this one adds everything a
real cluster costs: listing every node and pod each cycle, one Binding request per pod, the
PodScheduled writes, JSON and HTTP. The local cluster runs as its own process (simulated
kubelet); pods are created by concurrent clients while the loop, the same ``SchedulingLoop``
the operator runs, binds them in a thread. Reported: pods bound per second from the first
creation to the last binding, creation→binding latency (p50/p99), and how a cycle's time
splits between reading the cluster, deciding and writing.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from kubernetes import config

from trireme.devcluster.bench import ClusterProcess, percentile
from trireme.operator.scheduling import SchedulingLoop
from trireme.scheduler.cycle import Bind

NAMESPACE = "bench"


@dataclass(frozen=True)
class BindingSettings:
    """Size of the run."""

    nodes: int = 5000
    """Nodes of 8 GPUs each (the scale of kube-scheduler's own 5,000-node performance tests)."""
    pods: int = 5000
    """Pods created, one GPU each; all fit."""
    concurrency: int = 16
    """Clients creating pods at once."""
    timeout_s: float = 600.0
    """Give up when the pods are not all bound by then."""


@dataclass
class BindingResult:
    settings: BindingSettings
    bound: int = 0
    seconds: float = 0.0
    latency_ms: list[float] = field(default_factory=list, repr=False)
    cycles: int = 0
    read_s: float = 0.0
    decide_s: float = 0.0
    act_s: float = 0.0

    @property
    def pods_per_s(self) -> float:
        return self.bound / self.seconds if self.seconds else 0.0

    def percentile_ms(self, pct: float) -> float:
        return percentile(self.latency_ms, pct) if self.latency_ms else 0.0

    @property
    def decide_pods_per_s(self) -> float:
        """Placements per second of the deciding step alone, inside this run."""
        return self.bound / self.decide_s if self.decide_s else 0.0

    def table(self) -> str:
        s = self.settings
        total = self.read_s + self.decide_s + self.act_s or 1.0
        rows = [
            ("nodes / pods", f"{s.nodes:,} / {s.pods:,}"),
            ("pods bound, creation to binding", f"{self.pods_per_s:,.0f} /s ({self.bound:,} in {self.seconds:.1f} s)"),
            ("creation→binding latency p50 / p99", f"{self.percentile_ms(50):,.0f} / {self.percentile_ms(99):,.0f} ms"),
            ("scheduling cycles", f"{self.cycles:,}"),
            ("cycle time: read cluster / decide / bind", f"{self.read_s / total:.0%} / {self.decide_s / total:.0%} / "
                                                         f"{self.act_s / total:.0%}"),
            ("decide step alone", f"{self.decide_pods_per_s:,.0f} placements/s"),
        ]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def to_json(self) -> str:
        return json.dumps({"settings": asdict(self.settings), "pods_bound": self.bound, "seconds": self.seconds,
                           "pods_per_s": self.pods_per_s, "latency_ms_p50": self.percentile_ms(50),
                           "latency_ms_p99": self.percentile_ms(99), "cycles": self.cycles,
                           "read_s": self.read_s, "decide_s": self.decide_s, "act_s": self.act_s,
                           "decide_placements_per_s": self.decide_pods_per_s}, indent=2)


def profile(nodes: int) -> dict[str, Any]:
    return {"name": "binding-bench", "pools": [{
        "name": "gpu", "count": nodes, "gpus": 8, "gpuProduct": "NVIDIA-A100-SXM4-80GB", "gpuMemoryMiB": 81920,
        "cpu": "128", "memory": "1Ti", "maxPods": 110}]}


def pending_pod(index: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{index:06d}"},
            "spec": {"schedulerName": "trireme",
                     "containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:24.08-py3",
                                     "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}


async def run_binding_benchmark(settings: BindingSettings, quiet: bool = False) -> BindingResult:
    def progress(message: str) -> None:
        if not quiet:
            print(f"  {message}", file=sys.stderr, flush=True)

    result = BindingResult(settings)
    progress(f"starting the local cluster with {settings.nodes:,} nodes")
    async with ClusterProcess(profile(settings.nodes)) as cluster:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=settings.concurrency + 4)) as session:
            async with session.post(f"{cluster.url}/api/v1/namespaces",
                                    json={"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": NAMESPACE}}) as response:
                response.raise_for_status()
            api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
            created: dict[str, float] = {}
            bound: dict[str, float] = {}
            stop = threading.Event()
            loop = SchedulingLoop(api, "trireme", namespaces=(NAMESPACE,))

            failures: list[BaseException] = []

            def schedule() -> None:
                try:
                    place_all()
                except BaseException as exc:  # reported by the benchmark, not lost in a thread
                    failures.append(exc)

            def place_all() -> None:
                while not stop.is_set() and len(bound) < settings.pods:
                    outcomes = loop.run()
                    now = time.monotonic()
                    for outcome in outcomes:
                        if isinstance(outcome.decision, Bind):
                            bound[outcome.name] = now
                    if outcomes:
                        result.cycles += 1
                        timings = loop.last_cycle
                        result.read_s += timings.read_s
                        result.decide_s += timings.decide_s
                        result.act_s += timings.act_s
                        progress(f"{len(bound):,} of {settings.pods:,} pods bound")
                    else:
                        stop.wait(0.01)

            progress(f"creating {settings.pods:,} pods while the scheduling loop binds them")
            scheduler = threading.Thread(target=schedule, name="scheduling-loop", daemon=True)
            scheduler.start()
            try:
                await _create(session, cluster.url, settings, created)
                deadline = time.monotonic() + settings.timeout_s
                while scheduler.is_alive() and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await asyncio.to_thread(scheduler.join, 60)
                api.close()
    if failures:
        raise RuntimeError(f"the scheduling loop failed: {failures[0]!r}") from failures[0]
    if len(bound) < settings.pods:
        raise TimeoutError(f"only {len(bound)} of {settings.pods} pods were bound in {settings.timeout_s:.0f} s")
    result.bound = len(bound)
    result.seconds = max(bound.values()) - min(created.values())
    result.latency_ms = [(bound[name] - created[name]) * 1000 for name in bound if name in created]
    return result


async def _create(session: aiohttp.ClientSession, url: str, settings: BindingSettings,
                  created: dict[str, float]) -> None:
    indices = iter(range(settings.pods))

    async def worker() -> None:
        for index in indices:
            body = pending_pod(index)
            created[body["metadata"]["name"]] = time.monotonic()
            async with session.post(f"{url}/api/v1/namespaces/{NAMESPACE}/pods", json=body) as response:
                if response.status != 201:
                    raise RuntimeError(f"pod create failed: {response.status} {await response.text()}")

    await asyncio.gather(*(worker() for _ in range(settings.concurrency)))
