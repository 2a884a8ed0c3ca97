"""Helpers for tests that drive a cluster: bounded waiting on conditions, the operator
as its own process, and the Triton processes left running.

End-to-end tests wait for the cluster to converge, never for a fixed time: a
condition is polled until it holds or a deadline passes, so tests are as fast
as the cluster allows and still pass on a loaded two-core machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``condition()`` until it returns something truthy and return that; raise
    ``AssertionError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


@contextmanager
def private_cluster(profile: Mapping[str, Any], work: Path, kubelet: str = "simulated") -> Iterator[Any]:
    """A local cluster of its own for a test module (no Prometheus), from a profile given as data: for
    tests that change nodes or need every GPU free. Yields the started ``BackgroundCluster``."""
    import yaml

    from .background import BackgroundCluster
    from .cluster import ClusterSettings
    from .kubelet import KubeletSettings

    path = work / "profile.yaml"
    path.write_text(yaml.safe_dump(dict(profile)))
    handle = BackgroundCluster(ClusterSettings(profile=path, work_dir=work, prometheus=False,
                                               kubelet=KubeletSettings(mode=kubelet, simulated_start_delay_s=0.1)))
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()


@contextmanager
def scratch_namespace(kubectl: Callable[..., Any], prefix: str) -> Iterator[str]:
    """A namespace with a fresh name (``<prefix>-<8 hex>``) for the block; deleted afterwards without
    waiting (callers that need its pods gone wait for that themselves)."""
    import uuid

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def kubectl_runner(kubeconfig: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run(*args, input=None, check=True, timeout=60)``: kubectl against ``kubeconfig``; a failure raises
    AssertionError with kubectl's output when ``check``. Skips the calling test without kubectl."""
    binary = required_tool("kubectl")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def run(*args: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([binary, *args], input=input, capture_output=True, text=True, env=env,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stderr}{result.stdout}")
        return result
    return run


def required_tool(name: str) -> str:
    """``installed_tool``, or skip the calling test with the command that installs it."""
    import pytest  # only tests call this

    found = installed_tool(name)
    if not found:
        pytest.skip(f"{name} is not installed: run scripts/install-tools.sh")
    return found


def installed_tool(name: str) -> str | None:
    """Path of a command-line tool (kubectl, helm, hadolint), preferring the one in this
    Python's virtualenv, where ``scripts/install-tools.sh`` puts them."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def free_port() -> int:
    """A TCP port nothing listens on now, on the loopback address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tritonserver_pids(models: Path) -> list[int]:
    """Process ids of the ``tritonserver`` processes serving the model repository ``models``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "tritonserver" in cmdline and str(models) in cmdline:
            found.append(int(entry.name))
    return found


class OperatorProcess:
    """``trireme run`` as its own process, watching ``namespace`` (the whole cluster when empty), with
    its log in ``work`` and its metrics and probes on free ports; ``extra`` flags are appended."""

    def __init__(self, kubeconfig: Path, namespace: str, work: Path, *extra: str, name: str = "operator") -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        self.args = [str(Path(sys.executable).parent / "trireme"), "run", "--reconcile-interval", "0.5",
                     "--metrics-port", str(self.metrics_port), "--health-port", str(self.health_port), *extra]
        if namespace:
            self.args[2:2] = ["--namespace", namespace]
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.work = work
        self.log_path = work / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(self.args, cwd=self.work, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; returns once the process is gone."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def get(self, path: str) -> tuple[int, str]:
        """GET ``path`` from the operator's metrics (/metrics) or health port (/healthz, /readyz)."""
        port = self.metrics_port if path == "/metrics" else self.health_port
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, sample: str) -> float:
        """The value of one sample line of /metrics (``name{labels}``), 0 when absent."""
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0
