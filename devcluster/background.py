"""Run a local cluster on its own event loop in a background thread.

Synchronous callers — tests driving kubectl, helm or the kubernetes client,
benchmarks, notebooks — get a running cluster and a kubeconfig without giving
up their own thread, and stop it (and every process it started) in one call.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, TypeVar

from .cluster import ClusterSettings, LocalCluster

T = TypeVar("T")


class BackgroundCluster:
    """``with BackgroundCluster(settings) as cluster: ...`` — ``cluster.kubeconfig_path`` is ready."""

    def __init__(self, settings: ClusterSettings | None = None, start_timeout_s: float = 60.0):
        self.cluster = LocalCluster(settings)
        self.start_timeout_s = start_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> LocalCluster:
        self.start()
        return self.cluster

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="devcluster", daemon=True)
        self._thread.start()
        if not self._started.wait(self.start_timeout_s):
            raise TimeoutError(f"the local cluster did not start within {self.start_timeout_s}s")
        if self._error is not None:
            raise RuntimeError(f"the local cluster failed to start: {self._error}") from self._error

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.cluster.start()
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._started.set()
            await self.cluster.stop()
            return
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await self.cluster.stop()

    def call(self, fn: Callable[[], T], timeout_s: float = 30.0) -> T:
        """Run ``fn`` on the cluster's loop (to touch its objects safely) and return its result."""
        assert self._loop is not None

        async def wrapper() -> T:
            return fn()
        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout_s)

    def run(self, coro: Any, timeout_s: float = 60.0) -> Any:
        """Run a coroutine on the cluster's loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def stop(self, timeout_s: float = 60.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout_s)
            self._thread = None
