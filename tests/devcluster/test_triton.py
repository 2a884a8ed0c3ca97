"""Tests for launching real Triton servers for the local kubelet.

Command and environment generation, model repository URIs and the backends
cache are checked as tables against a fake wheel layout; the ``e2e`` tests start
a real ``tritonserver`` from the installed wheel on a loopback IP of its own.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trireme.devcluster.triton import (
    TritonExited,
    TritonInstallation,
    TritonNotInstalled,
    TritonProcess,
    TritonSettings,
    live_processes_in_group,
    model_repository_from_uri,
    pick_free_loopback_ip,
    ports_are_free,
    prepare_backends,
    prepend_path,
    split_model_repository_args,
    tail_of,
    triton_command,
)

SAMPLE_MODELS = Path(__file__).resolve().parents[2] / "examples" / "models"
"""Served from a copy: the Python backend writes ``__pycache__`` next to ``model.py``."""
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def fake_installation(root: Path, stub_versions: tuple[str, ...] = (PYTHON_VERSION,)) -> TritonInstallation:
    """The wheel's layout with placeholder files, so tests need not copy the real one."""
    server = root / "pytriton" / "tritonserver"
    (server / "bin").mkdir(parents=True)
    (server / "bin" / "tritonserver").write_text("binary")
    (server / "backends" / "python").mkdir(parents=True)
    (server / "backends" / "python" / "libtriton_python.so").write_text("backend")
    for version in stub_versions:
        (server / "python_backend_stubs" / version).mkdir(parents=True)
        (server / "python_backend_stubs" / version / "triton_python_backend_stub").write_text(f"stub {version}")
    return TritonInstallation(
        binary=server / "bin" / "tritonserver",
        libraries=root / "nvidia_pytriton.libs",
        backends=server / "backends",
        python_stubs=server / "python_backend_stubs",
        caches=server / "caches",
        version="9.9.9",
    )


# --- model repository URIs ---------------------------------------------------------

ACCEPTED_URIS = [
    ("absolute path", lambda root: str(root / "models")),
    ("path object", lambda root: root / "models"),
    ("file URL", lambda root: (root / "models").as_uri()),
    ("file URL for localhost", lambda root: f"file://localhost{root / 'models'}"),
    ("trailing slash", lambda root: f"{root / 'models'}/"),
    ("relative path", lambda root: "models"),
]


@pytest.mark.parametrize(("uri_of",), [(uri_of,) for _, uri_of in ACCEPTED_URIS], ids=[i for i, _ in ACCEPTED_URIS])
def test_local_model_repositories_resolve_to_their_folder(tmp_path, monkeypatch, uri_of):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    assert model_repository_from_uri(uri_of(tmp_path)) == (tmp_path / "models").resolve()


REJECTED_URIS = [
    ("s3", "s3://bucket/models", ["s3://", "aws s3 sync", "file://"]),
    ("gcs", "gs://bucket/models", ["gs://", "gcloud storage cp", "file://"]),
    ("azure", "as://account/container/models", ["as://", "local folder"]),
    ("https", "https://example.com/models", ["https://", "download"]),
    ("unknown scheme", "hdfs://namenode/models", ["hdfs://", "local folder"]),
    ("remote file host", "file://otherhost/models", ["otherhost"]),
    ("missing folder", "{root}/absent", ["is not a directory"]),
    ("a file, not a folder", "{root}/file.txt", ["is not a directory"]),
]


@pytest.mark.parametrize(("uri", "phrases"), [(u, p) for _, u, p in REJECTED_URIS], ids=[i for i, _, _ in REJECTED_URIS])
def test_unreadable_model_repositories_are_rejected_with_a_way_out(tmp_path, uri, phrases):
    (tmp_path / "file.txt").write_text("not a repository")
    with pytest.raises(ValueError) as error:
        model_repository_from_uri(uri.format(root=tmp_path))
    for phrase in phrases:
        assert phrase in str(error.value)


segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=12
).filter(lambda s: s not in (".", ".."))


@given(st.lists(segment, min_size=1, max_size=4))
def test_a_path_and_its_file_url_name_the_same_repository(segments):
    path = Path("/nonexistent-trireme-root", *segments)
    assert model_repository_from_uri(path.as_uri(), must_exist=False) == path
    assert model_repository_from_uri(str(path), must_exist=False) == path


SPLIT_ARGS = [
    ("none", ["--log-verbose=1"], [], ["--log-verbose=1"]),
    ("equals form", ["--model-repository=s3://b/m", "--strict-model-config=false"], ["s3://b/m"], ["--strict-model-config=false"]),
    ("separate value", ["--model-repository", "/models", "--log-info=true"], ["/models"], ["--log-info=true"]),
    ("model-store alias", ["--model-store=/a"], ["/a"], []),
    ("several", ["--model-repository=/a", "--model-store", "/b"], ["/a", "/b"], []),
]


@pytest.mark.parametrize(("args", "repositories", "others"), [c[1:] for c in SPLIT_ARGS], ids=[c[0] for c in SPLIT_ARGS])
def test_model_repositories_are_taken_out_of_container_args(args, repositories, others):
    assert split_model_repository_args(args) == (repositories, others)


def test_a_model_repository_flag_without_value_is_an_error():
    with pytest.raises(ValueError, match="needs a value"):
        split_model_repository_args(["--log-verbose=1", "--model-repository"])


# --- command and environment -------------------------------------------------------

IP = "127.0.3.7"
ADDRESS_FLAGS = [
    f"--http-address={IP}",
    "--http-port=8000",
    f"--grpc-address={IP}",
    "--grpc-port=8001",
    f"--metrics-address={IP}",
    "--metrics-port=8002",
]
CPU_ONLY_FLAGS = ["--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0", "--allow-gpu-metrics=false"]

COMMANDS = [
    ("cpu-only defaults", TritonSettings(), [], CPU_ONLY_FLAGS + ["--strict-readiness=true", "--exit-timeout-secs=30"], []),
    ("gpu keeps its memory pools", TritonSettings(gpu=True), [], [], CPU_ONLY_FLAGS),
    ("custom ports", TritonSettings(http_port=9000, grpc_port=9001, metrics_port=9002), [], ["--http-port=9000", "--grpc-port=9001", "--metrics-port=9002"], ["--http-port=8000"]),
    ("settings become flags", TritonSettings(exit_timeout_s=5, metrics_interval_ms=250, log_verbose=1, strict_readiness=False), [], ["--exit-timeout-secs=5", "--metrics-interval-ms=250", "--log-verbose=1", "--strict-readiness=false"], []),
    ("extra args are passed on", TritonSettings(), ["--model-control-mode=explicit", "--load-model=simple"], ["--model-control-mode=explicit", "--load-model=simple"], []),
]


@pytest.mark.parametrize(("settings", "extra", "present", "absent"), [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_triton_command_flags(tmp_path, settings, extra, present, absent):
    installation = fake_installation(tmp_path)
    argv, _ = triton_command(tmp_path / "models", IP, extra, backends_dir=tmp_path / "b", settings=settings, installation=installation, base_env={})
    assert argv[0] == str(installation.binary)
    assert f"--model-repository={tmp_path / 'models'}" in argv
    assert f"--backend-directory={tmp_path / 'b'}" in argv
    assert f"--cache-directory={installation.caches}" in argv
    for flag in present:
        assert flag in argv
    for flag in absent:
        assert flag not in argv


@pytest.mark.parametrize(
    "extra",
    [["--http-address=0.0.0.0"], ["--http-port=9999", "--metrics-address=0.0.0.0"], ["--grpc-port", "1234"]],
    ids=["address", "port and metrics address", "separate value"],
)
def test_the_pod_ip_and_ports_come_last_so_they_win(tmp_path, extra):
    """Triton takes the last value of a repeated option."""
    argv, _ = triton_command(tmp_path, IP, extra, backends_dir=tmp_path, installation=fake_installation(tmp_path), base_env={})
    assert argv[-len(ADDRESS_FLAGS) :] == ADDRESS_FLAGS
    assert argv[-len(ADDRESS_FLAGS) - len(extra) : -len(ADDRESS_FLAGS)] == extra


def test_several_model_repositories(tmp_path):
    argv, _ = triton_command([tmp_path / "a", tmp_path / "b"], IP, backends_dir=tmp_path, installation=fake_installation(tmp_path), base_env={})
    assert [a for a in argv if a.startswith("--model-repository")] == [f"--model-repository={tmp_path / 'a'}", f"--model-repository={tmp_path / 'b'}"]


ENVIRONMENTS = [
    ("empty", {}, None, None),
    ("keeps the rest", {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/opt/lib", "HOME": "/root"}, "/usr/bin:/bin", "/opt/lib"),
]


@pytest.mark.parametrize(("base", "path_rest", "ld_rest"), [c[1:] for c in ENVIRONMENTS], ids=[c[0] for c in ENVIRONMENTS])
def test_the_venv_and_the_wheel_libraries_go_first(tmp_path, base, path_rest, ld_rest):
    installation = fake_installation(tmp_path)
    _, env = triton_command(tmp_path, IP, backends_dir=tmp_path, installation=installation, base_env=base)
    venv_bin = str(Path(sys.executable).parent)
    assert env["PATH"] == venv_bin + (f":{path_rest}" if path_rest else "")
    assert env["LD_LIBRARY_PATH"] == str(installation.libraries) + (f":{ld_rest}" if ld_rest else "")
    assert {k: v for k, v in env.items() if k not in ("PATH", "LD_LIBRARY_PATH")} == {k: v for k, v in base.items() if k not in ("PATH", "LD_LIBRARY_PATH")}


PREPENDS = [
    ("onto nothing", "/a", None, "/a"),
    ("onto empty", "/a", "", "/a"),
    ("in front", "/a", "/b:/c", "/a:/b:/c"),
    ("not repeated", "/a", "/b:/a:/c", "/a:/b:/c"),
    ("empty entries dropped", "/a", "/b::/c:", "/a:/b:/c"),
]


@pytest.mark.parametrize(("first", "rest", "expected"), [c[1:] for c in PREPENDS], ids=[c[0] for c in PREPENDS])
def test_prepend_path(first, rest, expected):
    assert prepend_path(first, rest) == expected


# --- the backends cache ------------------------------------------------------------


def test_prepared_backends_hold_the_stub_for_this_python(tmp_path):
    installation = fake_installation(tmp_path / "wheel", stub_versions=("3.8", PYTHON_VERSION))
    prepared = prepare_backends(tmp_path / "cache", installation)
    assert (prepared / "python" / "triton_python_backend_stub").read_text() == f"stub {PYTHON_VERSION}"
    assert (prepared / "python" / "libtriton_python.so").is_file()
    assert PYTHON_VERSION in prepared.name and "9.9.9" in prepared.name


def test_prepared_backends_are_reused(tmp_path):
    installation = fake_installation(tmp_path / "wheel")
    first = prepare_backends(tmp_path / "cache", installation)
    marker = first / "python" / "marker"
    marker.write_text("still here")
    assert prepare_backends(tmp_path / "cache", installation) == first
    assert marker.read_text() == "still here"


def test_concurrent_preparations_agree_and_leave_no_staging_folders(tmp_path):
    installation = fake_installation(tmp_path / "wheel")
    results: list[Path] = []
    barrier = threading.Barrier(8)

    def prepare() -> None:
        barrier.wait()
        results.append(prepare_backends(tmp_path / "cache", installation))

    threads = [threading.Thread(target=prepare) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [results[0].name]
    assert (results[0] / "python" / "triton_python_backend_stub").is_file()


def test_a_python_without_stub_is_a_clear_error(tmp_path):
    installation = fake_installation(tmp_path / "wheel", stub_versions=("3.8", "3.9"))
    with pytest.raises(TritonNotInstalled, match=rf"no Python backend stub for Python {PYTHON_VERSION} \(it has 3.8, 3.9\)"):
        prepare_backends(tmp_path / "cache", installation)
    assert not (tmp_path / "cache").exists()


def test_the_installed_wheel_is_found():
    installation = TritonInstallation.from_wheel()
    assert installation.binary.is_file()
    assert installation.libraries.is_dir()
    assert installation.python_stub().is_file()


# --- processes and ports -----------------------------------------------------------


def test_a_bound_port_is_not_free():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not ports_are_free("127.0.0.1", [port])
    assert ports_are_free("127.0.0.1", [port])


def test_picked_loopback_ips_have_free_ports():
    ip = pick_free_loopback_ip()
    assert ip.startswith("127.0.") and ports_are_free(ip, (8000, 8001, 8002))


def test_the_processes_of_a_group_are_listed_until_they_exit():
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert live_processes_in_group(sleeper.pid) == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert live_processes_in_group(sleeper.pid) == []


def test_log_tails_leave_out_startup_tables(tmp_path):
    log = tmp_path / "log"
    log.write_text("E0 failed to load 'bad'\n+----+\n| Model | Status |\n+----+\n\nerror: creating server\n")
    assert tail_of(log) == "E0 failed to load 'bad'\nerror: creating server"
    assert tail_of(tmp_path / "absent") == ""


# --- real servers ------------------------------------------------------------------


def stub_processes(pgid: int) -> list[int]:
    """The Python backend stubs in a Triton's process group."""
    stubs = []
    for pid in live_processes_in_group(pgid):
        try:
            if b"triton_python_backend_stub" in Path(f"/proc/{pid}/cmdline").read_bytes():
                stubs.append(pid)
        except OSError:
            continue
    return stubs


@pytest.fixture(scope="session")
def backends_dir(tmp_path_factory) -> Path:
    return prepare_backends(tmp_path_factory.mktemp("triton-cache"))


@pytest.fixture
async def triton(tmp_path, backends_dir):
    """A Triton serving the sample models, stopped (and its group killed) whatever happens."""
    models = shutil.copytree(SAMPLE_MODELS, tmp_path / "models")
    server = TritonProcess(models, pick_free_loopback_ip(), tmp_path / "triton.log", backends_dir=backends_dir)
    try:
        yield server
    finally:
        if server.pid is not None:
            await server.stop(grace_s=0)
            assert live_processes_in_group(server.pid) == []


def configured_delay_ms() -> float:
    config = (SAMPLE_MODELS / "simple" / "config.pbtxt").read_text()
    return float(re.search(r'key: "delay_ms"\s*value: \{ string_value: "([0-9.]+)" \}', config).group(1))


async def metric_value(url: str, series: str) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            text = await response.text()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in Triton's metrics")


def infer_simple(url: str, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    try:
        inputs = [httpclient.InferInput("INPUT0", first.shape, "FP32"), httpclient.InferInput("INPUT1", second.shape, "FP32")]
        inputs[0].set_data_from_numpy(first)
        inputs[1].set_data_from_numpy(second)
        result = client.infer("simple", inputs)
        return result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")
    finally:
        client.close()


@pytest.mark.e2e
@pytest.mark.parametrize(("grace_s", "returncode"), [(30.0, 0), (0.0, -9)], ids=["graceful", "killed"])
async def test_a_real_triton_serves_the_sample_model_and_leaves_nothing_behind(triton, grace_s, returncode):
    await triton.start()
    ready_after = await triton.wait_ready(timeout=60)
    print(f"Triton ready on {triton.ip} after {ready_after:.2f}s")

    first = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    second = np.array([0.5, 0.5, 4.0], dtype=np.float32)
    total, difference = await asyncio.to_thread(infer_simple, triton.http_url.removeprefix("http://"), first, second)
    np.testing.assert_allclose(total, first + second)
    np.testing.assert_allclose(difference, first - second)
    assert stub_processes(triton.pid), "the model runs in a Python backend stub of the server's group"
    # Triton records a request's statistics just after it answers: poll briefly rather than read once
    series = 'nv_inference_compute_infer_duration_us{model="simple",version="1"}'
    deadline = time.monotonic() + 10
    while (compute_us := await metric_value(triton.metrics_url, series)) == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert compute_us >= configured_delay_ms() * 1000, "the model holds each request for its configured delay"

    started = time.monotonic()
    assert await triton.stop(grace_s=grace_s) == returncode
    print(f"Triton stopped (grace {grace_s}s) in {time.monotonic() - started:.2f}s")
    assert live_processes_in_group(triton.pid) == []
    assert ports_are_free(triton.ip, (8000, 8001, 8002))
    assert not await triton.is_ready()


BROKEN_MODEL_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""
BROKEN_MODEL = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("this model refuses to load")
"""


@pytest.mark.e2e
async def test_a_triton_whose_model_fails_to_load_exits_with_the_reason(tmp_path, backends_dir):
    (tmp_path / "models" / "broken" / "1").mkdir(parents=True)
    (tmp_path / "models" / "broken" / "config.pbtxt").write_text(BROKEN_MODEL_CONFIG)
    (tmp_path / "models" / "broken" / "1" / "model.py").write_text(BROKEN_MODEL)
    server = TritonProcess(tmp_path / "models", pick_free_loopback_ip(), tmp_path / "triton.log", backends_dir=backends_dir)
    await server.start()
    try:
        with pytest.raises(TritonExited, match="this model refuses to load"):
            await server.wait_ready(timeout=60)
        assert server.returncode not in (None, 0)
    finally:
        await server.stop(grace_s=0)
    assert live_processes_in_group(server.pid) == []
