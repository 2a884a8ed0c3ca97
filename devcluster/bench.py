"""Scale benchmark of the local cluster: memory, list latency, write rate and watch delay.

Runs the local cluster as its own process (simulated kubelet, no Prometheus) and
drives it over HTTP from this one, so the figures include the JSON, HTTP and
watch fan-out costs real clients pay:

- memory (RSS of the cluster process) holding N nodes and M running pods;
- ``kubectl get pods -A`` over the first L pods (kubectl pages by 500);
- writes per second sustained at a target rate with W watchers connected, and
  the delay from a write's start to its watch event at each watcher (p50/p99).

``trireme bench devcluster`` prints the table; ``--json`` prints the numbers.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from .aio import interrupt
from .cluster import free_port


@dataclass
class BenchSettings:
    """What the benchmark builds and how hard it pushes."""

    nodes: int = 5000
    """Nodes in the simulated cluster (8 GPUs each)."""
    pods: int = 50_000
    """Running pods held when memory is measured."""
    list_pods: int = 10_000
    """Pods present when ``kubectl get pods -A`` is timed."""
    watchers: int = 10
    """Watch connections open during the write test."""
    write_rate: float = 500.0
    """Target writes per second in the write test."""
    write_seconds: float = 20.0
    """Length of the write test."""
    concurrency: int = 32
    """Requests in flight while filling the cluster with pods."""


@dataclass
class BenchResult:
    settings: BenchSettings
    rss_mib_empty: float = 0.0
    rss_mib_full: float = 0.0
    fill_pods_per_s: float = 0.0
    kubectl_get_s: list[float] = field(default_factory=list)
    kubectl_get_unpaged_s: list[float] = field(default_factory=list)
    list_server_s: float = 0.0
    writes_per_s: float = 0.0
    write_latency_ms_p50: float = 0.0
    write_latency_ms_p99: float = 0.0
    watch_delay_ms_p50: float = 0.0
    watch_delay_ms_p99: float = 0.0
    watch_events_missed: int = 0

    def table(self) -> str:
        s = self.settings
        rows = [
            ("nodes / pods held", f"{s.nodes:,} / {s.pods:,}", ""),
            ("memory, empty cluster (RSS)", f"{self.rss_mib_empty:,.0f} MiB", ""),
            ("memory, all pods running (RSS)", f"{self.rss_mib_full:,.0f} MiB", "target <= 2048 MiB"),
            ("pods created and bound over HTTP", f"{self.fill_pods_per_s:,.0f} /s", ""),
            (f"kubectl get pods -A, {s.list_pods:,} pods, pages of 500 (median of {len(self.kubectl_get_s)})",
             _median_s(self.kubectl_get_s), f"target < 2 s; {_client_throttle_s(s.list_pods):.1f} s of it is "
             "kubectl's own rate limit"),
            ("kubectl get pods -A --chunk-size=0 (one request)", _median_s(self.kubectl_get_unpaged_s),
             "target < 2 s"),
            ("  of which the server: all pages as Tables", f"{self.list_server_s:.2f} s", ""),
            (f"pod writes sustained (target {s.write_rate:.0f}/s, {s.write_seconds:.0f} s)",
             f"{self.writes_per_s:,.0f} /s", "target >= 500/s"),
            ("write latency p50 / p99", f"{self.write_latency_ms_p50:.1f} / {self.write_latency_ms_p99:.1f} ms", ""),
            (f"watch delivery to {s.watchers} watchers p50 / p99",
             f"{self.watch_delay_ms_p50:.1f} / {self.watch_delay_ms_p99:.1f} ms", "target p99 < 50 ms"),
            ("watch events missed", str(self.watch_events_missed), "must be 0"),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"{'measure':<{width}}  {'result':>20}  note", "-" * (width + 40)]
        lines += [f"{name:<{width}}  {value:>20}  {note}" for name, value, note in rows]
        return "\n".join(lines)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _profile(nodes: int) -> dict[str, Any]:
    return {"name": "bench", "pools": [{
        "name": "gpu", "count": nodes, "gpus": 8, "gpuProduct": "NVIDIA-A100-SXM4-80GB", "gpuMemoryMiB": 81920,
        "cpu": "128", "memory": "1Ti", "maxPods": 110}]}


def _pod(name: str, node: str, gpus: int = 1) -> dict[str, Any]:
    resources = {"limits": {"nvidia.com/gpu": gpus}} if gpus else {"requests": {"cpu": "1", "memory": "2Gi"}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "bench", "trireme.io/service": name.rsplit("-", 1)[0]}},
            "spec": {"nodeName": node, "schedulerName": "trireme",
                     "containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:24.08-py3",
                                     "resources": resources,
                                     "ports": [{"containerPort": 8000, "name": "http"}]}]}}


class _Progress:
    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"  {message}", file=sys.stderr, flush=True)


async def _wait_ready(session: aiohttp.ClientSession, url: str, process: subprocess.Popen[bytes],
                      timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the local cluster exited with {process.returncode}")
        try:
            async with session.get(f"{url}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError("the local cluster did not come up")


async def _create_pods(session: aiohttp.ClientSession, url: str, first: int, last: int, nodes: int,
                       concurrency: int, progress: _Progress) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(first, last):
        queue.put_nowait(i)
    started = time.monotonic()
    done = [0]

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            # one GPU each while the cluster has GPUs left (8 per node), then CPU-only pods
            body = _pod(f"svc{i // 8}-{i % 8}", f"gpu-{i % nodes:0{len(str(nodes - 1))}d}",
                        gpus=1 if i < nodes * 8 else 0)
            async with session.post(f"{url}/api/v1/namespaces/bench/pods", json=body) as response:
                if response.status != 201:
                    raise RuntimeError(f"pod create failed: {response.status} {await response.text()}")
            done[0] += 1
            if done[0] % 5000 == 0:
                progress(f"{first + done[0]:,} pods created")
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (last - first) / (time.monotonic() - started)


async def _wait_running(session: aiohttp.ClientSession, url: str, timeout_s: float = 600) -> None:
    """Wait until no pod of the benchmark is anything but Running (a Failed one is an error)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with session.get(f"{url}/api/v1/namespaces/bench/pods",
                               params={"fieldSelector": "status.phase!=Running", "limit": "1"}) as response:
            waiting = (await response.json())["items"]
        if not waiting:
            return
        if waiting[0]["status"].get("phase") == "Failed":
            raise RuntimeError(f"pod {waiting[0]['metadata']['name']} failed: {waiting[0]['status'].get('message')}")
        await asyncio.sleep(0.5)
    raise TimeoutError(f"pods not running after {timeout_s}s")


def _client_throttle_s(pods: int, page: int = 500, burst: int = 10, qps: float = 5.0) -> float:
    """The least time kubectl waits on its client-side rate limiter (client-go's default
    5 requests/s after a burst of 10) to fetch ``pods`` in pages, whatever the server."""
    pages = -(-pods // page)
    return max(0, pages - burst) / qps


def _median_s(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s" if values else "-"


async def _time_server_list(session: aiohttp.ClientSession, url: str) -> float:
    """Server time to serve every page of ``kubectl get pods -A`` (Table, 500 per page)."""
    headers = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
    started = time.monotonic()
    token = ""
    while True:
        params = {"limit": "500", **({"continue": token} if token else {})}
        async with session.get(f"{url}/api/v1/pods", params=params, headers=headers) as response:
            data = await response.read()
        token = json.loads(data)["metadata"].get("continue") or ""
        if not token:
            return time.monotonic() - started


def _time_kubectl_get(kubeconfig: Path, expected: int, extra: tuple[str, ...] = (), runs: int = 3) -> list[float]:
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if kubectl is None:
        return []
    times = []
    for _ in range(runs):
        started = time.monotonic()
        result = subprocess.run([kubectl, "get", "pods", "-A", *extra],
                                env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                                capture_output=True, text=True, check=True)
        times.append(time.monotonic() - started)
        lines = result.stdout.count("\n") - 1
        if lines < expected:
            raise RuntimeError(f"kubectl listed {lines} pods, expected {expected}")
    return times


async def _write_test(session: aiohttp.ClientSession, url: str, settings: BenchSettings,
                      result: BenchResult) -> None:
    async with session.post(f"{url}/api/v1/namespaces",
                            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-w"}}) as r:
        r.raise_for_status()
    async with session.get(f"{url}/api/v1/namespaces/bench-w/pods") as r:
        rv = (await r.json())["metadata"]["resourceVersion"]
    total = int(settings.write_rate * settings.write_seconds)
    sent_at: dict[str, float] = {}
    delays: list[float] = []
    seen = [0] * settings.watchers

    async def watch(index: int) -> None:
        params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": str(int(settings.write_seconds) + 30)}
        async with session.get(f"{url}/api/v1/namespaces/bench-w/pods", params=params,
                               timeout=aiohttp.ClientTimeout(total=None)) as response:
            async for line in response.content:
                now = time.monotonic()
                event = json.loads(line)
                name = event["object"]["metadata"]["name"]
                delays.append((now - sent_at[name]) * 1000)
                seen[index] += 1
                if seen[index] >= total:
                    return

    watch_tasks = [asyncio.create_task(watch(i)) for i in range(settings.watchers)]
    await asyncio.sleep(0.5)
    latencies: list[float] = []
    interval = 1.0 / settings.write_rate
    started = time.monotonic()
    in_flight: set[asyncio.Task[None]] = set()

    async def write(i: int) -> None:
        name = f"w{i}"
        sent_at[name] = time.monotonic()
        body = _pod(name, "")
        del body["spec"]["nodeName"]  # pending: waiting for the scheduler, so only this write happens
        async with session.post(f"{url}/api/v1/namespaces/bench-w/pods", json=body) as response:
            if response.status != 201:
                raise RuntimeError(f"write failed: {response.status}")
        latencies.append((time.monotonic() - sent_at[name]) * 1000)

    for i in range(total):
        target = started + i * interval
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(write(i))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    elapsed = time.monotonic() - started
    try:
        await asyncio.wait_for(asyncio.gather(*watch_tasks), timeout=30)
    except asyncio.TimeoutError:
        for task in watch_tasks:
            task.cancel()
    result.writes_per_s = total / elapsed
    result.write_latency_ms_p50 = percentile(latencies, 50)
    result.write_latency_ms_p99 = percentile(latencies, 99)
    result.watch_delay_ms_p50 = percentile(delays, 50)
    result.watch_delay_ms_p99 = percentile(delays, 99)
    result.watch_events_missed = total * settings.watchers - sum(seen)


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile of ``values`` (nearest rank); NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


class ClusterProcess:
    """The local cluster as its own process (simulated kubelet, no Prometheus), for benchmarks that
    drive it over HTTP: ``async with ClusterProcess(profile) as cluster`` gives ``url``, ``kubeconfig``
    and ``process``; leaving the block stops it and removes its work folder."""

    def __init__(self, profile: dict[str, Any], start_delay_s: float = 0.2) -> None:
        self.profile = profile
        self.start_delay_s = start_delay_s
        self.work = Path(tempfile.mkdtemp(prefix="trireme-bench-"))
        self.kubeconfig = self.work / "kubeconfig"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> ClusterProcess:
        profile = self.work / "profile.yaml"
        profile.write_text(yaml.safe_dump(self.profile))
        command = [sys.executable, "-c", "import sys; from trireme.cli import main; sys.exit(main())",
                   "devcluster", "up", "--profile", str(profile), "--kubeconfig", str(self.kubeconfig),
                   "--port", str(self.port), "--kubelet", "simulated", "--start-delay", str(self.start_delay_s),
                   "--no-prometheus", "--work-dir", str(self.work)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=open(self.work / "cluster.log", "wb"),
                                        env={**os.environ, "PYTHONSAFEPATH": "1"})
        try:
            async with aiohttp.ClientSession() as session:
                await _wait_ready(session, self.url, self.process)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.process is not None:
            interrupt(self.process, timeout_s=60)
        shutil.rmtree(self.work, ignore_errors=True)


async def run_benchmark(settings: BenchSettings, quiet: bool = False) -> BenchResult:
    progress = _Progress(quiet)
    result = BenchResult(settings)
    progress(f"starting the local cluster with {settings.nodes:,} nodes")
    async with ClusterProcess(_profile(settings.nodes)) as cluster:
        url, process, kubeconfig = cluster.url, cluster.process, cluster.kubeconfig
        assert process is not None
        connector = aiohttp.TCPConnector(limit=settings.concurrency + settings.watchers + 8)
        async with aiohttp.ClientSession(connector=connector) as session:
            result.rss_mib_empty = _rss_mib(process.pid)
            async with session.post(f"{url}/api/v1/namespaces",
                                    json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}) as r:
                r.raise_for_status()
            first = min(settings.list_pods, settings.pods)
            progress(f"creating {first:,} bound pods")
            rate = await _create_pods(session, url, 0, first, settings.nodes, settings.concurrency, progress)
            await _wait_running(session, url)
            progress(f"timing kubectl get pods -A over {first:,} pods")
            result.kubectl_get_s = _time_kubectl_get(kubeconfig, first)
            result.kubectl_get_unpaged_s = _time_kubectl_get(kubeconfig, first, ("--chunk-size=0",))
            result.list_server_s = await _time_server_list(session, url)
            progress(f"writing {settings.write_rate:.0f}/s for {settings.write_seconds:.0f} s "
                     f"with {settings.watchers} watchers")
            await _write_test(session, url, settings, result)
            if settings.pods > first:
                progress(f"creating {settings.pods - first:,} more pods")
                rate2 = await _create_pods(session, url, first, settings.pods, settings.nodes,
                                           settings.concurrency, progress)
                rate = (rate * first + rate2 * (settings.pods - first)) / settings.pods
                await _wait_running(session, url)
            result.fill_pods_per_s = rate
            result.rss_mib_full = _rss_mib(process.pid)
    return result


def result_json(result: BenchResult) -> str:
    return json.dumps({**asdict(result), "settings": asdict(result.settings)}, indent=2)
