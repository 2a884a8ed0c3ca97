"""A real Prometheus that scrapes the local cluster's Triton pods.

Trireme's autoscaler and rebalancer read Triton metrics through Prometheus with
the labels a Kubernetes cluster gives them (``namespace``, ``pod``, ``node`` and
the pod's labels). Locally there is no Kubernetes service discovery, so the
kubelet writes the running pods to a file-based discovery file with the same
``__meta_kubernetes_*`` labels Kubernetes SD would produce, and the generated
scrape config relabels them the way kube-prometheus does. Queries written for a
real cluster therefore work unchanged against the local one.

Prometheus is optional: without the binary the local cluster runs, only without
metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import yaml

MISSING_PROMETHEUS = (
    "Prometheus is not installed: install it with `apt-get install prometheus` "
    "(Debian/Ubuntu) or put the `prometheus` binary on PATH; the local cluster "
    "runs without it, only without metrics"
)

INVALID_LABEL_CHARACTERS = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True)
class PrometheusSettings:
    """How the local cluster runs Prometheus."""

    binary: str | None = None
    """The ``prometheus`` executable; None looks it up on PATH."""

    scrape_interval_s: float = 2.0
    """Short, so that tests and the autoscaler see load changes within seconds
    (clusters typically use 15-30 s)."""

    scrape_timeout_s: float = 1.0
    """A loopback scrape takes milliseconds; capped at the scrape interval."""

    file_sd_refresh_s: float = 5.0
    """Backstop re-read of the targets file; changes are normally picked up at
    once through inotify."""

    retention: str = "2h"
    """Local runs are short; keep the TSDB small."""

    job_name: str = "triton"
    """The ``job`` label of Triton series, as in a typical ServiceMonitor."""

    metrics_port: int = 8002
    """Triton's metrics port on every pod IP."""

    ready_timeout_s: float = 30.0
    """Prometheus is ready in about a second with an empty TSDB."""

    stop_grace_s: float = 10.0
    """Time to flush the head block on SIGTERM before SIGKILL."""


class PodTarget(NamedTuple):
    """A running pod whose Triton metrics Prometheus should scrape."""

    namespace: str
    name: str
    ip: str
    node: str
    labels: Mapping[str, str]


class PrometheusError(RuntimeError):
    """Prometheus is missing, failed to start, or did not become ready."""


def find_prometheus(binary: str | None = None) -> str | None:
    """The path of the ``prometheus`` executable, or None when it is not installed."""
    return shutil.which(binary or "prometheus")


def sanitize_label_name(name: str) -> str:
    """A Kubernetes label key as Prometheus' Kubernetes SD writes it into a label name."""
    return INVALID_LABEL_CHARACTERS.sub("_", name)


def prometheus_duration(seconds: float) -> str:
    """A Prometheus duration string: whole seconds as ``Ns``, otherwise ``Nms``."""
    if seconds <= 0:
        raise ValueError(f"a Prometheus duration must be positive, got {seconds}")
    milliseconds = round(seconds * 1000)
    if milliseconds == 0:
        raise ValueError(f"{seconds}s is below Prometheus' 1ms resolution")
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def target_group(pod: PodTarget, metrics_port: int = 8002) -> dict[str, Any]:
    """One file_sd target group for a pod, labelled like Kubernetes pod SD."""
    labels = {
        "__meta_kubernetes_namespace": pod.namespace,
        "__meta_kubernetes_pod_name": pod.name,
        "__meta_kubernetes_pod_ip": pod.ip,
        "__meta_kubernetes_pod_node_name": pod.node,
        "__meta_kubernetes_pod_container_port_number": str(metrics_port),
    }
    for key, value in sorted(pod.labels.items()):
        labels[f"__meta_kubernetes_pod_label_{sanitize_label_name(key)}"] = value
        labels[f"__meta_kubernetes_pod_labelpresent_{sanitize_label_name(key)}"] = "true"
    return {"targets": [f"{pod.ip}:{metrics_port}"], "labels": labels}


def relabel_configs() -> list[dict[str, Any]]:
    """Turn Kubernetes SD meta labels into ``namespace``, ``pod``, ``node`` and pod labels."""
    return [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
        {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
    ]


def config_document(
    scrape_interval_s: float,
    targets_file: Path,
    *,
    settings: PrometheusSettings = PrometheusSettings(),
) -> dict[str, Any]:
    """The Prometheus configuration: one job scraping the pods in ``targets_file``."""
    interval = prometheus_duration(scrape_interval_s)
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": settings.job_name,
                "scrape_interval": interval,
                "scrape_timeout": prometheus_duration(min(settings.scrape_timeout_s, scrape_interval_s)),
                "file_sd_configs": [
                    {"files": [str(targets_file)], "refresh_interval": prometheus_duration(settings.file_sd_refresh_s)}
                ],
                "relabel_configs": relabel_configs(),
            }
        ],
    }


def write_config(
    directory: Path,
    scrape_interval_s: float,
    targets_file: Path,
    *,
    settings: PrometheusSettings = PrometheusSettings(),
) -> Path:
    """Write ``prometheus.yml`` into ``directory``; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    document = config_document(scrape_interval_s, targets_file, settings=settings)
    path = directory / "prometheus.yml"
    write_atomically(path, yaml.safe_dump(document, sort_keys=False))
    return path


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one rename, so a reader never sees half a file."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class TargetsFile:
    """The file_sd JSON listing the running pods; created empty.

    Prometheus notices a rewrite at once (inotify) but its discovery manager
    passes target changes on at most every 5 s, so a new pod is scraped about
    5 s plus one scrape interval after it is listed.
    """

    def __init__(self, path: Path, metrics_port: int = 8002) -> None:
        self.path = path
        self.metrics_port = metrics_port
        self._written: str | None = None
        if not path.exists():
            self.set_pods([])

    def set_pods(self, pods: Iterable[PodTarget | tuple[str, str, str, str, Mapping[str, str]]]) -> bool:
        """Make the file list exactly ``pods`` (namespace, name, ip, node, labels).

        Pods without an IP are left out. Returns whether the file changed.
        """
        targets = sorted((PodTarget(*pod) for pod in pods if pod[2]), key=lambda pod: (pod.namespace, pod.name))
        text = json.dumps([target_group(pod, self.metrics_port) for pod in targets], indent=1)
        if text == self._written:
            return False
        write_atomically(self.path, text)
        self._written = text
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def prometheus_command(binary: str, config: Path, storage: Path, port: int, settings: PrometheusSettings) -> list[str]:
    """The argv of a Prometheus listening on 127.0.0.1:``port``."""
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--storage.tsdb.retention.time={settings.retention}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
    ]


def signal_quietly(process: asyncio.subprocess.Process, signum: int) -> None:
    """Signal a process that may have exited already."""
    if process.returncode is None:
        try:
            process.send_signal(signum)
        except ProcessLookupError:
            pass


class PrometheusProcess:
    """One Prometheus on 127.0.0.1 with its config, targets file and TSDB in a folder.

    The folder is a fresh temporary one unless ``directory`` is given; a
    temporary folder is removed by ``stop``.
    """

    def __init__(
        self,
        port: int,
        *,
        settings: PrometheusSettings = PrometheusSettings(),
        directory: Path | None = None,
    ) -> None:
        self.port = port
        self.settings = settings
        self._own_directory = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="trireme-prometheus-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.targets = TargetsFile(self.directory / "targets.json", settings.metrics_port)
        self.log_path = self.directory / "prometheus.log"
        self._process: asyncio.subprocess.Process | None = None
        self.started_at: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    async def start(self) -> None:
        """Launch Prometheus; returns once the process exists (not when ready)."""
        binary = find_prometheus(self.settings.binary)
        if binary is None:
            raise PrometheusError(MISSING_PROMETHEUS)
        config = write_config(self.directory, self.settings.scrape_interval_s, self.targets.path, settings=self.settings)
        argv = prometheus_command(binary, config, self.directory / "data", self.port, self.settings)
        with open(self.log_path, "ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.monotonic()

    async def wait_ready(self, timeout: float | None = None) -> float:
        """Wait for ``/-/ready``; returns the seconds since ``start``.

        Raises :class:`PrometheusError` with the end of its log if Prometheus
        exits or is not ready in time.
        """
        process = self._require_started()
        timeout = self.settings.ready_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        exited = asyncio.ensure_future(process.wait())
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
                while not exited.done():
                    try:
                        async with session.get(f"{self.url}/-/ready") as response:
                            if response.status == 200:
                                return time.monotonic() - (self.started_at or deadline)
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        pass
                    if time.monotonic() >= deadline:
                        raise PrometheusError(f"Prometheus not ready after {timeout:.1f}s; log:\n{self._log_tail()}")
                    await asyncio.wait({exited}, timeout=0.1)
            raise PrometheusError(f"Prometheus exited with status {process.returncode}; log:\n{self._log_tail()}")
        finally:
            exited.cancel()

    async def reload(self) -> None:
        """Make Prometheus re-read its config (``POST /-/reload``)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.post(f"{self.url}/-/reload") as response:
                if response.status != 200:
                    raise PrometheusError(f"reload failed: {response.status} {await response.text()}")

    async def stop(self, grace_s: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL after ``grace_s``; removes a temporary folder."""
        process = self._process
        try:
            if process is not None:
                grace = self.settings.stop_grace_s if grace_s is None else grace_s
                signal_quietly(process, signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), grace)
                except asyncio.TimeoutError:
                    signal_quietly(process, signal.SIGKILL)
                return await process.wait()
            return None
        finally:
            if self._own_directory:
                shutil.rmtree(self.directory, ignore_errors=True)

    def _require_started(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise PrometheusError("Prometheus was never started")
        return self._process

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
