"""Shared fixtures: a local cluster for the whole session, and clients for it.

The cluster runs in a background thread with the tiny profile and the process
kubelet (Triton images run real tritonserver processes; other pods run without
a process) and, when installed, Prometheus. ``TRIREME_E2E_KUBECONFIG`` points
the client tests at another cluster instead.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trireme.devcluster.testing import kubectl_runner, required_tool

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def background_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from trireme.devcluster.background import BackgroundCluster
    from trireme.devcluster.cluster import ClusterSettings
    from trireme.devcluster.kubelet import KubeletSettings

    work = tmp_path_factory.mktemp("devcluster")
    settings = ClusterSettings(profile=ROOT / "examples" / "clusters" / "tiny.yaml", work_dir=work,
                               kubelet=KubeletSettings(mode="process", simulated_start_delay_s=0.2))
    handle = BackgroundCluster(settings)
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def kubeconfig(background_cluster: object) -> Path:
    external = os.environ.get("TRIREME_E2E_KUBECONFIG")
    if external:
        return Path(external)
    return background_cluster.cluster.kubeconfig_path  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[object]:
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    return kubectl_runner(kubeconfig)


@pytest.fixture(scope="session")
def helm(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess[str]]:
    binary = required_tool("helm")
    home = tmp_path_factory.mktemp("helm-home")

    def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
               "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
        result = subprocess.run([binary, *args], capture_output=True, text=True, env=env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
        return result
    return run
