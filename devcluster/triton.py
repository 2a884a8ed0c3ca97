"""Real Triton Inference Server processes for the local kubelet.

The local cluster runs each Triton pod as a real ``tritonserver`` from the
``nvidia-pytriton`` wheel, so that readiness, inference, metrics and graceful
termination behave as they do on a GPU cluster. The wheel needs some help to run
outside PyTriton: its shared libraries live in ``nvidia_pytriton.libs``, the
Python backend's stub for the running interpreter has to be copied next to the
backend, and the stub's Python must find numpy (the project's virtualenv goes
first on ``PATH``). Every server binds HTTP, gRPC and metrics to its pod's own
loopback address (127.x.y.z), so all pods keep Triton's standard ports
8000/8001/8002 side by side.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

import aiohttp

MODEL_REPOSITORY_FLAGS = ("--model-repository", "--model-store")
"""Triton's spellings of the model repository option (``--model-store`` is an alias)."""

REMOTE_REPOSITORY_HINTS = {
    "s3": "copy it to a local folder first (e.g. `aws s3 sync s3://bucket/models ./models`)",
    "gs": "copy it to a local folder first (e.g. `gcloud storage cp -r gs://bucket/models ./models`)",
    "as": "copy it to a local folder first (e.g. `az storage blob download-batch`)",
    "http": "download it to a local folder first",
    "https": "download it to a local folder first",
}
"""Remote schemes a real Triton understands, with how to make them local."""


@dataclass(frozen=True)
class TritonSettings:
    """How the local kubelet starts and watches one ``tritonserver``."""

    http_port: int = 8000
    """Triton's standard HTTP port; every pod has its own IP, so all pods share it."""

    grpc_port: int = 8001
    """Triton's standard gRPC port."""

    metrics_port: int = 8002
    """Triton's standard Prometheus metrics port (the scrape target)."""

    gpu: bool = False
    """Whether the server may use CUDA. Without a GPU, the pinned and CUDA memory
    pools and GPU metrics are switched off: they cannot work and only log errors
    (NVML/DCGM) at every start."""

    exit_timeout_s: int = 30
    """How long Triton waits for in-flight requests on SIGTERM (its own default,
    and Kubernetes' default termination grace period)."""

    metrics_interval_ms: int = 1000
    """How often Triton refreshes its utilisation gauges; 1 s (Triton's default is
    2 s) so a local Prometheus scraping every few seconds sees fresh values."""

    strict_readiness: bool = True
    """Ready only once every model is loaded, as readiness probes expect."""

    log_verbose: int = 0
    """Triton's ``--log-verbose`` level; 0 keeps pod logs short."""

    ready_poll_interval_s: float = 0.1
    """How often ``wait_ready`` probes the health endpoint; Triton starts in ~1.5 s."""

    probe_timeout_s: float = 1.0
    """Timeout of one health probe: a loopback answer takes milliseconds."""

    stragglers_timeout_s: float = 5.0
    """How long ``stop`` waits for the killed process group (the Python stubs) to
    vanish, so that the pod's ports are free when it returns."""


@dataclass(frozen=True)
class TritonInstallation:
    """Where the parts of the ``nvidia-pytriton`` wheel are."""

    binary: Path
    libraries: Path
    backends: Path
    python_stubs: Path
    caches: Path
    version: str

    @classmethod
    def from_wheel(cls) -> TritonInstallation:
        """Locate the installed wheel; a clear error if it is missing."""
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonNotInstalled(
                "the `nvidia-pytriton` package is not installed in this Python "
                f"({sys.executable}); install it with `pip install nvidia-pytriton`"
            )
        package = Path(next(iter(spec.submodule_search_locations)))
        server = package / "tritonserver"
        installation = cls(
            binary=server / "bin" / "tritonserver",
            libraries=package.parent / "nvidia_pytriton.libs",
            backends=server / "backends",
            python_stubs=server / "python_backend_stubs",
            caches=server / "caches",
            version=importlib.metadata.version("nvidia-pytriton"),
        )
        if not installation.binary.is_file():
            raise TritonNotInstalled(f"the nvidia-pytriton wheel has no tritonserver at {installation.binary}")
        return installation

    def python_stub(self, python_version: str | None = None) -> Path:
        """The Python backend stub built for ``python_version`` (default: this Python)."""
        version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = self.python_stubs / version / "triton_python_backend_stub"
        if not stub.is_file():
            shipped = sorted(p.name for p in self.python_stubs.iterdir() if p.is_dir())
            raise TritonNotInstalled(
                f"nvidia-pytriton {self.version} ships no Python backend stub for Python "
                f"{version} (it has {', '.join(shipped)}); run the local cluster with one of those"
            )
        return stub


class TritonError(RuntimeError):
    """A Triton server could not be prepared, started or made ready."""


class TritonNotInstalled(TritonError):
    """The ``nvidia-pytriton`` wheel, or a part of it, is missing."""


class TritonExited(TritonError):
    """The server exited while it was expected to run."""


def default_cache_dir() -> Path:
    """Where prepared backends are kept between runs (``$XDG_CACHE_HOME/trireme``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trireme" / "tritonserver"


def prepare_backends(cache_dir: Path, installation: TritonInstallation | None = None) -> Path:
    """A writable copy of the wheel's backends with the Python stub in ``python/``.

    Prepared once per cache dir, wheel version and Python version, then reused.
    The copy is built in a temporary folder and renamed into place, so concurrent
    callers never see a half-copied folder; the loser of a race drops its copy.
    """
    installation = installation or TritonInstallation.from_wheel()
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    prepared = cache_dir / f"backends-pytriton{installation.version}-py{python_version}"
    if (prepared / "python" / "triton_python_backend_stub").is_file():
        return prepared
    stub = installation.python_stub(python_version)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".backends-", dir=cache_dir))
    try:
        copy = staging / "backends"
        shutil.copytree(installation.backends, copy, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, copy / "python" / "triton_python_backend_stub")
        try:
            copy.rename(prepared)
        except OSError:
            if not (prepared / "python" / "triton_python_backend_stub").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return prepared


def model_repository_from_uri(uri: str | os.PathLike[str], *, must_exist: bool = True) -> Path:
    """The local folder a model repository URI names: a path or a ``file://`` URL.

    Relative paths are taken from the current directory; the result is absolute.

    Remote repositories (``s3://``, ``gs://``, ``as://``, ``http(s)://``) are what
    a real Triton reads on a GPU cluster, but the local cluster has no access to
    object stores: the error says how to make such a repository local.
    """
    text = os.fspath(uri)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ValueError(f"model repository {text!r}: a file:// URL must name a local path, not host {parts.netloc!r}")
            path = Path(unquote(parts.path))
        else:
            path = Path(text).expanduser()
        path = path.resolve()
        if must_exist and not path.is_dir():
            raise ValueError(f"model repository {text!r}: {path} is not a directory")
        return path
    hint = REMOTE_REPOSITORY_HINTS.get(scheme, "copy it to a local folder first")
    raise ValueError(
        f"model repository {text!r} uses {scheme}://, which the local cluster cannot read "
        f"(it runs Triton on local folders only): {hint}, then give its path or a file:// URL"
    )


def split_model_repository_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--model-repository``/``--model-store`` values from other Triton args.

    Pod specs usually carry the repository as an argument; the kubelet resolves
    each one with :func:`model_repository_from_uri` and passes the rest on.
    Returns ``(repositories, other_args)``.
    """
    repositories: list[str] = []
    others: list[str] = []
    pending_value = False
    for arg in args:
        if pending_value:
            repositories.append(arg)
            pending_value = False
            continue
        flag, equals, value = arg.partition("=")
        if flag in MODEL_REPOSITORY_FLAGS:
            if equals:
                repositories.append(value)
            else:
                pending_value = True
            continue
        others.append(arg)
    if pending_value:
        raise ValueError(f"{args[-1]} needs a value")
    return repositories, others


def triton_command(
    model_repository: Path | Sequence[Path],
    ip: str,
    extra_args: Sequence[str] = (),
    *,
    backends_dir: Path,
    settings: TritonSettings = TritonSettings(),
    installation: TritonInstallation | None = None,
    base_env: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run one Triton bound to ``ip``.

    ``extra_args`` (a pod's container args) come first; the addresses and ports
    follow them, because Triton takes the last value of a repeated option and the
    pod's IP and ports belong to the kubelet.
    """
    installation = installation or TritonInstallation.from_wheel()
    repositories = [model_repository] if isinstance(model_repository, (str, os.PathLike)) else list(model_repository)
    argv = [str(installation.binary)]
    argv += [f"--model-repository={Path(repository)}" for repository in repositories]
    argv += [
        f"--backend-directory={backends_dir}",
        f"--cache-directory={installation.caches}",
        f"--strict-readiness={str(settings.strict_readiness).lower()}",
        f"--exit-timeout-secs={settings.exit_timeout_s}",
        f"--metrics-interval-ms={settings.metrics_interval_ms}",
        f"--log-verbose={settings.log_verbose}",
    ]
    if not settings.gpu:
        argv += [
            "--pinned-memory-pool-byte-size=0",
            "--cuda-memory-pool-byte-size=0:0",
            "--allow-gpu-metrics=false",
        ]
    argv += list(extra_args)
    argv += [
        f"--http-address={ip}",
        f"--http-port={settings.http_port}",
        f"--grpc-address={ip}",
        f"--grpc-port={settings.grpc_port}",
        f"--metrics-address={ip}",
        f"--metrics-port={settings.metrics_port}",
    ]
    return argv, triton_environment(installation, base_env)


def triton_environment(installation: TritonInstallation, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base_env`` (default: this process's) with the wheel's libraries and this venv's bin first."""
    env = dict(os.environ if base_env is None else base_env)
    env["LD_LIBRARY_PATH"] = prepend_path(str(installation.libraries), env.get("LD_LIBRARY_PATH"))
    env["PATH"] = prepend_path(str(Path(sys.executable).parent), env.get("PATH"))
    return env


def prepend_path(first: str, rest: str | None) -> str:
    """A ``:``-separated search path with ``first`` in front (and not repeated)."""
    entries = [entry for entry in (rest or "").split(os.pathsep) if entry and entry != first]
    return os.pathsep.join([first, *entries])


def ports_are_free(ip: str, ports: Iterable[int]) -> bool:
    """Whether a server could listen on every port of ``ip`` right now.

    ``SO_REUSEADDR`` as servers use it: connections lingering in TIME_WAIT do
    not make a port busy, a listener does.
    """
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((ip, port))
            except OSError:
                return False
    return True


def pick_free_loopback_ip(
    ports: Iterable[int] = (8000, 8001, 8002),
    rng: random.Random | None = None,
    attempts: int = 100,
) -> str:
    """A random 127.0.x.y address on which all ``ports`` are free.

    Linux routes all of 127.0.0.0/8 to the loopback interface, so any such
    address can be bound without configuration.
    """
    rng = rng or random.Random()
    ports = tuple(ports)
    for _ in range(attempts):
        ip = f"127.0.{rng.randint(1, 254)}.{rng.randint(1, 254)}"
        if ports_are_free(ip, ports):
            return ip
    raise TritonError(f"no loopback address with ports {ports} free after {attempts} tries")


def live_processes_in_group(pgid: int) -> list[int]:
    """PIDs in process group ``pgid`` that have not exited (zombies count as gone)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces: fields follow the last ")"
        fields = stat[stat.rindex(")") + 2 :].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def tail_of(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a Triton log, without its start-up tables.

    Triton prints wide tables of backends, models and options; leaving them out
    keeps the model load errors that precede them in an error message.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip() and not line.startswith(("|", "+"))]
    return "\n".join(kept[-lines:])


class TritonProcess:
    """One ``tritonserver`` serving a model repository on a loopback IP.

    It runs in its own process group, so that stopping it also ends the Python
    backend stubs it spawned. Its stdout and stderr are appended to ``log_path``,
    which the kubelet serves as the container's log.
    """

    def __init__(
        self,
        model_repository: Path | Sequence[Path],
        ip: str,
        log_path: Path,
        *,
        extra_args: Sequence[str] = (),
        settings: TritonSettings = TritonSettings(),
        backends_dir: Path | None = None,
        cache_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.model_repository = model_repository
        self.ip = ip
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.settings = settings
        self.backends_dir = backends_dir
        self.cache_dir = cache_dir or default_cache_dir()
        self.env = env
        self._process: asyncio.subprocess.Process | None = None
        self.started_at: float | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.ip}:{self.settings.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{self.ip}:{self.settings.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.ip}:{self.settings.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        """The exit status once the server has exited (negative: killed by that signal)."""
        return self._process.returncode if self._process else None

    async def start(self) -> None:
        """Launch the server; returns once the process exists (not when ready)."""
        if self._process is not None:
            raise TritonError(f"Triton on {self.ip} was already started")
        backends_dir = self.backends_dir or await asyncio.to_thread(prepare_backends, self.cache_dir)
        argv, env = triton_command(
            self.model_repository,
            self.ip,
            self.extra_args,
            backends_dir=backends_dir,
            settings=self.settings,
            base_env=self.env,
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = await spawn_in_own_group(argv, env, log)
        self.started_at = time.monotonic()

    async def is_ready(self, session: aiohttp.ClientSession | None = None) -> bool:
        """One probe of ``/v2/health/ready`` (a readiness probe)."""
        url = f"{self.http_url}/v2/health/ready"
        timeout = aiohttp.ClientTimeout(total=self.settings.probe_timeout_s)
        try:
            if session is None:
                async with aiohttp.ClientSession(timeout=timeout) as own:
                    async with own.get(url) as response:
                        return response.status == 200
            async with session.get(url, timeout=timeout) as response:
                return response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def wait_ready(self, timeout: float) -> float:
        """Wait until Triton reports ready; returns the seconds since ``start``.

        Raises :class:`TritonExited` (with the end of its log) as soon as the
        server exits, and ``TimeoutError`` if it is not ready within ``timeout``.
        """
        process = self._require_started()
        deadline = time.monotonic() + timeout
        exited = asyncio.ensure_future(process.wait())
        try:
            async with aiohttp.ClientSession() as session:
                while not exited.done():
                    if await self.is_ready(session):
                        return time.monotonic() - (self.started_at or deadline)
                    if time.monotonic() >= deadline:
                        raise TimeoutError(
                            f"Triton on {self.ip} not ready after {timeout:.1f}s; log:\n{tail_of(self.log_path)}"
                        )
                    await asyncio.wait({exited}, timeout=self.settings.ready_poll_interval_s)
            raise self._exited_error()
        finally:
            exited.cancel()

    async def wait(self) -> int:
        """Wait for the server to exit; returns its exit status."""
        return await self._require_started().wait()

    async def stop(self, grace_s: float = 30.0) -> int:
        """Terminate gracefully: SIGTERM, ``grace_s`` to finish, then SIGKILL.

        The whole process group is killed at the end, so no Python stub outlives
        the server; returns once none is left. Safe to call more than once.
        """
        process = self._process
        if process is None:
            raise TritonError(f"Triton on {self.ip} was never started")
        if process.returncode is None:
            signal_quietly(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except asyncio.TimeoutError:
                pass
        await kill_group(process.pid, self.settings.stragglers_timeout_s)
        return await process.wait()

    def _require_started(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise TritonError(f"Triton on {self.ip} was never started")
        return self._process

    def _exited_error(self) -> TritonExited:
        return TritonExited(f"Triton on {self.ip} exited with status {self.returncode}; log:\n{tail_of(self.log_path)}")


async def spawn_in_own_group(argv: Sequence[str], env: Mapping[str, str], log: IO[bytes]) -> asyncio.subprocess.Process:
    """Start ``argv`` as the leader of a new session, output to ``log``."""
    return await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )


def signal_quietly(pid: int, signum: int) -> None:
    """Send a signal to one process that may already be gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


async def kill_group(pgid: int, timeout_s: float) -> None:
    """SIGKILL every process of a group and wait (bounded) until none is alive."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while live_processes_in_group(pgid):
        if time.monotonic() >= deadline:
            raise TritonError(f"processes {live_processes_in_group(pgid)} of group {pgid} survived SIGKILL")
        await asyncio.sleep(0.02)
