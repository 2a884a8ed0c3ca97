"""The local cluster as one object: API server, controllers, nodes, kubelet, Prometheus.

``LocalCluster`` starts the parts in order, writes a kubeconfig that real
clients use unchanged, optionally keeps state in a file across restarts, and
stops everything it started — the same object serves ``trireme devcluster up``,
the end-to-end tests and the scale benchmarks.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from .aio import cancel_and_wait
from .controllers import Controllers
from .errors import ApiError
from .kubelet import Kubelet, KubeletSettings
from .profile import Profile, load_profile, node_objects
from .prometheus import MISSING_PROMETHEUS, PrometheusError, PrometheusProcess, PrometheusSettings, find_prometheus
from .registry import Registry, WriteOptions
from .server import ApiServer, ServerSettings
from .store import Store, StoreSettings

log = logging.getLogger(__name__)

CONTEXT = "trireme-local"


@dataclass
class ClusterSettings:
    """What ``trireme devcluster up`` starts."""

    profile: Profile | Path | None = None
    """Node pools; a path is loaded as a profile YAML. None: no nodes."""
    host: str = "127.0.0.1"
    """Address the API server listens on."""
    port: int = 0
    """API server port; 0 picks a free one (tests run side by side)."""
    kubeconfig: Path | None = None
    """Where to write the kubeconfig; None: a file in the work directory."""
    state_file: Path | None = None
    """Keep every object in this file (saved every ``save_interval_s`` and at stop)
    and load it at start, so the cluster survives its own restart."""
    save_interval_s: float = 2.0
    """How often a changed state is written to ``state_file``."""
    gc_freeze_interval_s: float = 1.0
    """How often objects are moved out of the cyclic garbage collector's reach."""
    work_dir: Path | None = None
    """Logs, Prometheus data and the kubeconfig default here; None: a temporary directory."""
    prometheus: bool = True
    """Start Prometheus when its binary is installed."""
    prometheus_settings: PrometheusSettings = field(default_factory=PrometheusSettings)
    kubelet: KubeletSettings = field(default_factory=KubeletSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def kubeconfig_document(server_url: str, namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": CONTEXT, "cluster": {"server": server_url}}],
            "users": [{"name": CONTEXT, "user": {"token": "trireme-local"}}],
            "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace}}],
            "current-context": CONTEXT}


class LocalCluster:
    """Start with ``async with LocalCluster(settings) as cluster:``."""

    def __init__(self, settings: ClusterSettings | None = None):
        self.settings = settings or ClusterSettings()
        self.work_dir = self.settings.work_dir or Path(tempfile.mkdtemp(prefix="trireme-devcluster-"))
        self.store = Store(self.settings.store)
        self.registry: Registry | None = None
        self.controllers: Controllers | None = None
        self.kubelet: Kubelet | None = None
        self.server: ApiServer | None = None
        self.prometheus: PrometheusProcess | None = None
        self.prometheus_problem: str | None = None
        self._runner: web.AppRunner | None = None
        self._saver: asyncio.Task[None] | None = None
        self._gc_freezer: asyncio.Task[None] | None = None
        self.port = self.settings.port
        self.kubeconfig_path = self.settings.kubeconfig or self.work_dir / "kubeconfig"

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def prometheus_url(self) -> str | None:
        return self.prometheus.url if self.prometheus is not None else None

    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        state = self.settings.state_file
        if state is not None and state.exists():
            self.store.load(state)
            log.info("loaded %s", state)
        self.registry = Registry(self.store)
        self._create_nodes()
        self.controllers = Controllers(self.registry)
        self.controllers.start()
        targets = None
        if self.settings.prometheus:
            targets = await self._start_prometheus()
        kubelet_settings = self.settings.kubelet
        if self.settings.work_dir is None or kubelet_settings.log_dir == KubeletSettings().log_dir:
            kubelet_settings.log_dir = self.work_dir / "logs"
        nodes = {n["metadata"]["name"] for n in self.store.items(("", "nodes"))}
        self.kubelet = Kubelet(self.registry, nodes, kubelet_settings, targets)
        self.kubelet.start()
        self.server = ApiServer(self.registry, self.settings.server, log_source=self.kubelet)
        self._runner = web.AppRunner(self.server.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        if not self.port:
            self.port = free_port(self.settings.host)
        site = web.TCPSite(self._runner, self.settings.host, self.port, backlog=1024, reuse_address=True)
        await site.start()
        self.kubeconfig_path.parent.mkdir(parents=True, exist_ok=True)
        self.kubeconfig_path.write_text(yaml.safe_dump(kubeconfig_document(self.url), sort_keys=False))
        if state is not None:
            self._saver = asyncio.get_running_loop().create_task(self._save_periodically(state))
        self._gc_freezer = asyncio.get_running_loop().create_task(self._freeze_periodically())

    async def _freeze_periodically(self) -> None:
        """Keep stored objects out of the cyclic garbage collector.

        Objects are acyclic JSON trees freed by reference counting; with tens of
        thousands of pods, every full collection would scan millions of them and
        stall requests for a large fraction of a second. Freezing what exists
        moves it out of the collector's generations."""
        while True:
            gc.freeze()
            await asyncio.sleep(self.settings.gc_freeze_interval_s)

    def _create_nodes(self) -> None:
        assert self.registry is not None
        profile = self.settings.profile
        if profile is None:
            return
        if isinstance(profile, (str, Path)):
            profile = load_profile(profile)
        rt = self.registry.resolve("", "v1", "nodes")
        for node in node_objects(profile, now=datetime.now(timezone.utc)):
            try:
                self.registry.create(rt, "", node, WriteOptions(manager="kubelet"))
            except ApiError as exc:
                if exc.code != 409:  # kept from a saved state
                    raise

    async def _start_prometheus(self) -> Any:
        if find_prometheus(self.settings.prometheus_settings.binary) is None:
            self.prometheus_problem = MISSING_PROMETHEUS
            log.warning("%s", MISSING_PROMETHEUS)
            return None
        self.prometheus = PrometheusProcess(free_port(), settings=self.settings.prometheus_settings,
                                            directory=self.work_dir / "prometheus")
        try:
            await self.prometheus.start()
            await self.prometheus.wait_ready()
        except PrometheusError as exc:
            self.prometheus_problem = str(exc)
            log.warning("Prometheus did not start: %s", exc)
            await self.prometheus.stop()
            self.prometheus = None
            return None
        return self.prometheus.targets

    async def _save_periodically(self, state: Path) -> None:
        while True:
            await asyncio.sleep(self.settings.save_interval_s)
            if self.store.dirty:
                await asyncio.to_thread(self.store.save, state)

    async def stop(self) -> None:
        """Stop everything this cluster started; safe to call twice."""
        for task in (self._saver, self._gc_freezer):
            await cancel_and_wait(task)
        self._saver = self._gc_freezer = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.kubelet is not None:
            await self.kubelet.stop()
            self.kubelet = None
        if self.controllers is not None:
            await self.controllers.stop()
            self.controllers = None
        if self.prometheus is not None:
            await self.prometheus.stop()
            self.prometheus = None
        if self.settings.state_file is not None:
            self.store.save(self.settings.state_file)


__all__ = ["ClusterSettings", "LocalCluster", "kubeconfig_document", "MISSING_PROMETHEUS"]
