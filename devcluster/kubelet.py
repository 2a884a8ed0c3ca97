"""The local kubelet: runs the pods bound to the local cluster's nodes.

One kubelet serves every node. In process mode a container whose image is a
Triton image runs as a real ``tritonserver`` on the pod's own loopback IP, with
readiness from Triton's health endpoint, restarts by restartPolicy with
back-off, graceful termination and logs for ``kubectl logs``; other containers
(and every container in simulated mode) run without a process and become ready
after a delay, so thousands of pods cost almost nothing. The kubelet also
assigns GPUs on the node (the device plugin's job), writes pod status, keeps
node conditions, and lists running Triton pods for Prometheus.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .aio import cancel_and_wait
from .errors import ApiError
from .prometheus import PodTarget, TargetsFile
from .registry import DeleteOptions, Registry, WriteOptions, rfc3339
from .store import Event
from .triton import (TritonProcess, TritonSettings, model_repository_from_uri, ports_are_free,
                     split_model_repository_args)

log = logging.getLogger(__name__)

PODS = ("", "pods")
NODES = ("", "nodes")
GPU_RESOURCE = "nvidia.com/gpu"
GPU_ANNOTATION = "trireme.io/gpus"
"""Pod annotation with the node's GPU indices the pod holds (``"0,1"``). A
scheduler sets it through the Binding; the kubelet fills it in when absent."""
CONDITION_ANNOTATION = "devcluster.trireme.io/condition"
"""Node annotation to simulate failures: ``NotReady`` makes the kubelet report the
node as not ready (unreachable taints, its pods not ready); remove it to recover."""

_KUBELET = "kubelet"


@dataclass
class KubeletSettings:
    """How the local kubelet runs pods."""

    mode: str = "process"
    """``process``: Triton containers run as real ``tritonserver`` processes;
    ``simulated``: no process at all (scale tests with thousands of pods)."""
    simulated_start_delay_s: float = 0.5
    """Time from binding to Running/Ready for pods without a process, standing in
    for image pull and container start."""
    triton_image_markers: tuple[str, ...] = ("tritonserver", "triton")
    """A container whose image name contains one of these runs Triton."""
    log_dir: Path = field(default_factory=lambda: Path("/tmp/trireme-devcluster/logs"))
    """Where container logs are written (served by ``kubectl logs``)."""
    probe_period_s: float = 1.0
    """Readiness probe period (Kubernetes' minimum; its default is 10 s)."""
    ready_timeout_s: float = 120.0
    """How long a Triton may take to become ready before it counts as failed to start."""
    backoff_initial_s: float = 1.0
    """First restart back-off; doubles per crash (Kubernetes: 10 s)."""
    backoff_max_s: float = 30.0
    """Back-off cap (Kubernetes: 300 s; shorter here so failure tests are quick)."""
    pod_cidr: str = "127.1.0.0/16"
    """Loopback range pod IPs come from: each pod gets its own 127.x.y.z, so every
    Triton listens on the standard ports 8000-8002. It is the preferred range: one
    that another cluster on this machine holds is passed over (``reserve_pod_range``)."""
    triton: TritonSettings = field(default_factory=TritonSettings)


RESERVATION_PORT = 7999
"""Port a running kubelet holds open on its pod range's network address (127.N.0.0, never a
pod IP): the range is its own while it runs."""


def reserve_pod_range(preferred: str, first: int = 8) -> tuple[str, socket.socket]:
    """A loopback /16 for pod IPs, and the socket that holds it: ``preferred``, or the next
    127.N.0.0/16 that no other cluster on this machine holds and whose first ``first``
    addresses have nothing listening on Triton's ports. Two clusters on one machine (a demo
    next to a test run, two test sessions) would otherwise give their pods the same
    addresses, and one's clients would reach the other's Tritons. Binding the reservation
    port is atomic, so two kubelets starting at once cannot pick the same range."""
    start = ipaddress.ip_network(preferred)
    candidates = [start] + [ipaddress.ip_network(f"127.{n}.0.0/16") for n in range(1, 255)
                            if ipaddress.ip_network(f"127.{n}.0.0/16") != start]
    for network in candidates:
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            holder.bind((str(network.network_address), RESERVATION_PORT))
            holder.listen()
        except OSError:
            holder.close()
            continue
        hosts = network.hosts()
        if all(ports_are_free(str(next(hosts)), (8000, 8001, 8002)) for _ in range(first)):
            return str(network), holder
        holder.close()
    raise RuntimeError("every loopback range 127.N.0.0/16 is held by another cluster or has servers on ports "
                       "8000-8002: stop other local clusters first")


class _IPPool:
    """Pod IPs: each address is held by one pod at a time. Giving one back twice is
    harmless, so every path that ends a pod may release its address."""

    def __init__(self, cidr: str):
        self.cidr = cidr
        self._hosts = ipaddress.ip_network(cidr).hosts()
        self._free: collections.deque[str] = collections.deque()
        self._in_use: set[str] = set()

    def take(self) -> str:
        ip = self._free.popleft() if self._free else str(next(self._hosts))
        self._in_use.add(ip)
        return ip

    def give_back(self, ip: str) -> None:
        if ip in self._in_use:
            self._in_use.discard(ip)
            self._free.append(ip)  # reused last, after every never-used address


@dataclass
class _PodRun:
    """What the kubelet holds for one admitted pod."""

    namespace: str
    name: str
    uid: str
    node: str
    ip: str
    gpus: list[int]
    triton: bool
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    process: TritonProcess | None = None
    restarts: int = 0
    log_paths: list[Path] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


class Kubelet:
    """Runs pods bound to the nodes it serves; writes their status."""

    def __init__(self, registry: Registry, nodes: set[str], settings: KubeletSettings | None = None,
                 targets: TargetsFile | None = None):
        self.registry = registry
        self.store = registry.store
        self.nodes = set(nodes)
        self.settings = settings or KubeletSettings()
        self.targets = targets
        self._runs: dict[str, _PodRun] = {}  # by pod uid
        self._runs_by_node: dict[str, dict[str, _PodRun]] = {}
        self._runs_by_name: dict[tuple[str, str], _PodRun] = {}
        self._ips = _IPPool(self.settings.pod_cidr)
        self._reservation: socket.socket | None = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._not_ready_nodes: set[str] = set()
        self._pods_rt = registry.resolve("", "v1", "pods")
        self._nodes_rt = registry.resolve("", "v1", "nodes")
        self.store.add_listener(self._on_event)

    # -- lifecycle -------------------------------------------------------------

    @property
    def pod_cidr(self) -> str:
        """The range pod IPs come from (known once started)."""
        return self._ips.cidr

    def start(self) -> None:
        cidr, self._reservation = reserve_pod_range(self.settings.pod_cidr)
        self._ips = _IPPool(cidr)
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="devcluster-kubelet")
        for pod in list(self.store.items(PODS)):
            self._events.put_nowait(Event("ADDED", PODS, pod, None, 0))
        for node in list(self.store.items(NODES)):
            self._events.put_nowait(Event("ADDED", NODES, node, None, 0))

    async def stop(self) -> None:
        """Stop every process (SIGTERM with the pods' grace, capped) and the kubelet."""
        await cancel_and_wait(self._task)
        runs = list(self._runs.values())
        await asyncio.gather(*(self._stop_run(run, grace_s=5.0) for run in runs), return_exceptions=True)
        for run in runs:
            self._forget(run.uid)
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None

    def _on_event(self, event: Event) -> None:
        if event.key == PODS or event.key == NODES:
            self._events.put_nowait(event)

    async def _run(self) -> None:
        while True:
            event = await self._events.get()
            try:
                if event.key == NODES:
                    self._node_event(event)
                else:
                    self._pod_event(event)
            except Exception:
                log.exception("kubelet failed on %s of %s", event.type, event.obj["metadata"].get("name"))

    # -- nodes -----------------------------------------------------------------

    def _node_event(self, event: Event) -> None:
        node = event.obj
        name = node["metadata"]["name"]
        if name not in self.nodes:
            return
        if event.type == "DELETED":
            self.nodes.discard(name)
            return
        wants_down = (node["metadata"].get("annotations") or {}).get(CONDITION_ANNOTATION) == "NotReady"
        is_down = _condition(node, "Ready") != "True"
        if wants_down != is_down:
            self._set_node_ready(node, not wants_down)

    def _set_node_ready(self, node: dict[str, Any], ready: bool) -> None:
        name = node["metadata"]["name"]
        now = rfc3339(datetime.now(timezone.utc))
        conditions = [c for c in (node.get("status") or {}).get("conditions") or [] if c["type"] != "Ready"]
        conditions.append({"type": "Ready", "status": "True" if ready else "Unknown",
                           "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                           "message": "kubelet is posting ready status" if ready
                           else "Kubelet stopped posting node status.",
                           "lastHeartbeatTime": now, "lastTransitionTime": now})
        status = {**(node.get("status") or {}), "conditions": conditions}
        taints = [t for t in (node.get("spec") or {}).get("taints") or []
                  if t.get("key") != "node.kubernetes.io/unreachable"]
        if not ready:
            taints += [{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": now},
                       {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": now}]
        spec = {**(node.get("spec") or {}), "taints": taints}
        if not taints:
            spec.pop("taints")
        self.registry.update(self._nodes_rt, "", name, {**node, "spec": spec, "status": status},
                             WriteOptions(manager="node-lifecycle-controller"), check_rv=False)
        fresh = self.store.get(NODES, "", name)
        if fresh is not None:
            self.registry.update(self._nodes_rt, "", name, {**fresh, "status": status},
                                 WriteOptions(manager=_KUBELET), subresource="status", check_rv=False)
        if ready:
            self._not_ready_nodes.discard(name)
        else:
            self._not_ready_nodes.add(name)
        # like the node lifecycle controller: the pods' Ready condition follows the node,
        # their containers' own readiness is kept for when the node is back
        for run in list(self._runs_by_node.get(name, {}).values()):
            self._update_status(run)

    # -- pods ------------------------------------------------------------------

    def _pod_event(self, event: Event) -> None:
        pod = event.obj
        meta = pod["metadata"]
        uid = meta["uid"]
        node = (pod.get("spec") or {}).get("nodeName")
        if event.type == "DELETED":
            run = self._forget(uid)
            if run is not None:
                asyncio.get_running_loop().create_task(self._stop_run(run, grace_s=0))
            return
        if node not in self.nodes:
            return
        run = self._runs.get(uid)
        if meta.get("deletionTimestamp"):
            if run is None:
                self._finish_deletion(meta["namespace"], meta["name"], uid)
            elif not run.stopping.is_set():
                run.stopping.set()
                grace = meta.get("deletionGracePeriodSeconds", 30) or 0
                asyncio.get_running_loop().create_task(self._terminate(run, float(grace)))
            return
        if run is None and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            self._admit(pod)

    def _admit(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        node = self.store.get(NODES, "", spec["nodeName"])
        gpus, problem = self._assign_gpus(pod, node)
        if problem:
            self._fail_admission(pod, problem)
            return
        containers = spec.get("containers") or []
        triton = self.settings.mode == "process" and any(self._is_triton(c) for c in containers)
        run = _PodRun(meta["namespace"], meta["name"], meta["uid"], spec["nodeName"], self._ips.take(), gpus, triton)
        self._remember(run)
        if GPU_ANNOTATION not in (meta.get("annotations") or {}) and gpus:
            self._annotate_gpus(pod, gpus)
        if triton:
            run.task = asyncio.get_running_loop().create_task(self._run_triton(run, pod))
        else:
            run.timer = asyncio.get_running_loop().call_later(self.settings.simulated_start_delay_s,
                                                              self._simulated_started, run)

    def _is_triton(self, container: dict[str, Any]) -> bool:
        image = str(container.get("image", "")).lower()
        return any(marker in image for marker in self.settings.triton_image_markers)

    # GPUs: the device plugin's part

    def gpu_holders(self, node_name: str) -> dict[int, list[str]]:
        """GPU index -> the ``namespace/name`` of pods holding it on ``node_name``."""
        holders: dict[int, list[str]] = {}
        for run in self._runs_by_node.get(node_name, {}).values():
            for index in run.gpus:
                holders.setdefault(index, []).append(f"{run.namespace}/{run.name}")
        return holders

    def _assign_gpus(self, pod: dict[str, Any], node: dict[str, Any] | None) -> tuple[list[int], str | None]:
        wanted = _gpu_request(pod)
        capacity = int(((node or {}).get("status") or {}).get("capacity", {}).get(GPU_RESOURCE, 0) or 0)
        given = (pod["metadata"].get("annotations") or {}).get(GPU_ANNOTATION)
        if given:
            try:
                indices = sorted({int(i) for i in given.split(",") if i.strip()})
            except ValueError:
                return [], f"annotation {GPU_ANNOTATION}={given!r} must list GPU indices like \"0,1\""
            bad = [i for i in indices if not 0 <= i < capacity]
            if bad:
                return [], (f"annotation {GPU_ANNOTATION}={given!r} names GPU {bad[0]}, but node "
                            f"{pod['spec']['nodeName']} has {capacity} GPUs (0-{capacity - 1})")
            return indices, None
        if not wanted:
            return [], None
        held = self.gpu_holders(pod["spec"]["nodeName"])
        free = [i for i in range(capacity) if i not in held]
        if len(free) < wanted:
            return [], (f"Allocate failed due to requested number of devices unavailable for {GPU_RESOURCE}. "
                        f"Requested: {wanted}, Available: {len(free)}")
        return free[:wanted], None

    def _annotate_gpus(self, pod: dict[str, Any], gpus: list[int]) -> None:
        current = self.store.get(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        if current is None:
            return
        annotations = {**(current["metadata"].get("annotations") or {}), GPU_ANNOTATION: ",".join(map(str, gpus))}
        self.registry.update(self._pods_rt, current["metadata"]["namespace"], current["metadata"]["name"],
                             {**current, "metadata": {**current["metadata"], "annotations": annotations}},
                             WriteOptions(manager=_KUBELET), check_rv=False)

    def _event(self, run: _PodRun, reason: str, message: str, type_: str = "Normal") -> None:
        pod = self.store.get(PODS, run.namespace, run.name)
        if pod is not None:
            self._record_event(pod, reason, message, type_)

    def _record_event(self, pod: dict[str, Any], reason: str, message: str, type_: str) -> None:
        """Events are best effort, as for a real kubelet: one that cannot be written
        (its namespace is being deleted) never stops the pod's lifecycle."""
        try:
            self.registry.record_event(pod, reason, message, _KUBELET, type_)
        except ApiError as exc:
            log.debug("event %s for pod %s not recorded: %s", reason, pod["metadata"]["name"], exc)

    def _fail_admission(self, pod: dict[str, Any], message: str) -> None:
        self._write_status(pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"],
                           lambda status: {**status, "phase": "Failed", "reason": "UnexpectedAdmissionError",
                                           "message": message})
        self._record_event(pod, "UnexpectedAdmissionError", message, "Warning")

    # simulated containers

    def _simulated_started(self, run: _PodRun) -> None:
        run.timer = None
        if run.uid in self._runs and not run.stopping.is_set():
            self._update_status(run, ready=True, started=True)

    # Triton containers

    async def _run_triton(self, run: _PodRun, pod: dict[str, Any]) -> None:
        container = next(c for c in pod["spec"]["containers"] if self._is_triton(c))
        try:
            repositories, args = self._triton_args(pod, container)
        except ValueError as exc:
            self._update_status(run, waiting=("CreateContainerConfigError", str(exc)))
            self._event(run, "Failed", f"Error: {exc}", "Warning")
            return
        policy = pod["spec"].get("restartPolicy", "Always")
        backoff = self.settings.backoff_initial_s
        while not run.stopping.is_set():
            log_path = self.settings.log_dir / f"{run.namespace}_{run.name}_{run.uid[:8]}_{container['name']}_{run.restarts}.log"
            run.log_paths.append(log_path)
            env = self._container_env(container, run)
            run.process = TritonProcess([Path(r) for r in repositories], run.ip, log_path, extra_args=args,
                                        settings=self.settings.triton, env=env)
            await run.process.start()
            self._event(run, "Started", f"Started container {container['name']} (tritonserver on {run.ip}, "
                        f"GPUs {','.join(map(str, run.gpus)) or 'none'})")
            started_at = datetime.now(timezone.utc)
            self._update_status(run, started=True, ready=False, started_at=started_at)
            self._publish_targets()
            exit_code = await self._probe_until_exit(run)
            if run.stopping.is_set():
                return
            self._update_status(run, ready=False, terminated=(exit_code, started_at))
            if policy == "Never" or (policy == "OnFailure" and exit_code == 0):
                self._update_status(run, phase="Succeeded" if exit_code == 0 else "Failed")
                return
            run.restarts += 1
            self._event(run, "BackOff", f"Back-off {backoff:.0f}s restarting failed container {container['name']} "
                        f"(exit code {exit_code})", "Warning")
            self._update_status(run, waiting=("CrashLoopBackOff", f"back-off {backoff:.0f}s restarting failed "
                                              f"container={container['name']} pod={run.name}"))
            try:
                await asyncio.wait_for(run.stopping.wait(), timeout=backoff)
                return
            except asyncio.TimeoutError:
                backoff = min(backoff * 2, self.settings.backoff_max_s)

    async def _probe_until_exit(self, run: _PodRun) -> int:
        process = run.process
        assert process is not None
        exited = asyncio.ensure_future(process.wait())
        ready = False
        try:
            while not exited.done():
                now_ready = await process.is_ready()
                if now_ready != ready and not run.stopping.is_set():
                    ready = now_ready
                    self._update_status(run, ready=ready)
                await asyncio.wait({exited}, timeout=self.settings.probe_period_s)
            return exited.result()
        finally:
            if not exited.done():
                exited.cancel()

    def _triton_args(self, pod: dict[str, Any], container: dict[str, Any]) -> tuple[list[str], list[str]]:
        # Triton images run `command + args` through an entrypoint script that execs
        # them; whichever of the two names `tritonserver`, what follows are its flags
        argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        while argv and not argv[0].startswith("-"):
            if os.path.basename(argv.pop(0)) == "tritonserver":
                break
        repositories, others = split_model_repository_args(argv)
        if not repositories:
            raise ValueError(f"container {container['name']!r} runs Triton but has no --model-repository argument: "
                             "add one, e.g. args: [\"--model-repository=/models\"] with a hostPath volume "
                             "mounted at /models, or a file:// URL")
        mounts = _host_mounts(pod, container)
        return [str(model_repository_from_uri(_via_mounts(r, mounts))) for r in repositories], others

    def _container_env(self, container: dict[str, Any], run: _PodRun) -> dict[str, str]:
        env = dict(os.environ)
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
        visible = ",".join(map(str, run.gpus)) if run.gpus else "void"
        env["NVIDIA_VISIBLE_DEVICES"] = visible
        env["CUDA_VISIBLE_DEVICES"] = visible if run.gpus else ""
        return env

    # termination

    async def _terminate(self, run: _PodRun, grace_s: float) -> None:
        self._update_status(run, ready=False)
        if run.triton:
            self._event(run, "Killing", f"Stopping container (grace period {grace_s:.0f}s)")
        await self._stop_run(run, grace_s)
        self._finish_deletion(run.namespace, run.name, run.uid)

    async def _stop_run(self, run: _PodRun, grace_s: float) -> None:
        run.stopping.set()
        if run.timer is not None:
            run.timer.cancel()
        if run.process is not None and run.process.returncode is None:
            try:
                await run.process.stop(grace_s)
            except Exception:
                log.exception("stopping Triton of pod %s/%s", run.namespace, run.name)
        if run.task is not None and not run.task.done():
            run.task.cancel()
        self._ips.give_back(run.ip)
        self._publish_targets()

    def _finish_deletion(self, namespace: str, name: str, uid: str) -> None:
        self._forget(uid)  # its process, if any, has stopped and released the pod IP
        current = self.store.get(PODS, namespace, name)
        if current is None or current["metadata"]["uid"] != uid:
            return
        try:
            self.registry.delete(self._pods_rt, namespace, name, DeleteOptions(grace_period_seconds=0))
        except ApiError as exc:
            if exc.code != 404:
                raise
        self._publish_targets()

    # -- status ----------------------------------------------------------------

    def _update_status(self, run: _PodRun, *, ready: bool | None = None, started: bool | None = None,
                       started_at: datetime | None = None, waiting: tuple[str, str] | None = None,
                       terminated: tuple[int, datetime] | None = None, phase: str | None = None) -> None:
        def change(status: dict[str, Any]) -> dict[str, Any]:
            pod = self.store.get(PODS, run.namespace, run.name)
            assert pod is not None
            now = rfc3339(datetime.now(timezone.utc))
            node = self.store.get(NODES, "", run.node)
            host_ip = _internal_ip(node)
            statuses = _container_statuses(pod, status)
            for cs in statuses:
                cs["restartCount"] = run.restarts
                if started:
                    cs["state"] = {"running": {"startedAt": rfc3339(started_at or datetime.now(timezone.utc))}}
                    cs["started"] = True
                if waiting:
                    cs["state"] = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
                    cs["started"] = False
                if terminated:
                    cs["lastState"] = {"terminated": {"exitCode": terminated[0], "reason": "Error" if terminated[0]
                                                      else "Completed", "startedAt": rfc3339(terminated[1]),
                                                      "finishedAt": now,
                                                      "containerID": cs.get("containerID")}}
                if ready is not None:
                    cs["ready"] = bool(ready) and "running" in cs["state"]
            all_ready = bool(statuses) and all(cs["ready"] for cs in statuses)
            if run.node in self._not_ready_nodes:
                all_ready = False
            new = {**status, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": run.ip,
                   "podIPs": [{"ip": run.ip}], "containerStatuses": statuses,
                   "startTime": status.get("startTime") or now,
                   "phase": phase or ("Running" if any("running" in cs["state"] for cs in statuses)
                                      else status.get("phase", "Pending"))}
            new["conditions"] = _pod_conditions(status.get("conditions") or [], all_ready, now)
            return new
        self._write_status(run.namespace, run.name, run.uid, change)

    def _write_status(self, namespace: str, name: str, uid: str,
                      change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        pod = self.store.get(PODS, namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        status = change(dict(pod.get("status") or {}))
        if status == pod.get("status"):
            return
        try:
            self.registry.update(self._pods_rt, namespace, name, {**pod, "status": status},
                                 WriteOptions(manager=_KUBELET), subresource="status", check_rv=False)
        except ApiError as exc:
            if exc.code != 404:
                raise

    def _publish_targets(self) -> None:
        if self.targets is None:
            return
        pods = []
        for run in self._runs.values():
            if run.triton and run.process is not None and not run.stopping.is_set():
                pod = self.store.get(PODS, run.namespace, run.name)
                labels = (pod or {}).get("metadata", {}).get("labels") or {}
                pods.append(PodTarget(run.namespace, run.name, run.ip, run.node, labels))
        self.targets.set_pods(pods)

    # -- logs (for ``kubectl logs``) ----------------------------------------------

    async def read_logs(self, namespace: str, pod: str, container: str | None, follow: bool,
                        tail_lines: int | None, previous: bool) -> AsyncIterator[bytes]:
        run = self._runs_by_name.get((namespace, pod))
        if run is None or not run.triton:
            if run is not None:
                yield f"(pod {pod} runs without a process in the local cluster; it has no log)\n".encode()
            return
        paths = run.log_paths
        if previous:
            if len(paths) < 2:
                raise ApiError(400, "BadRequest", f'previous terminated container "{container or ""}" in pod '
                               f'"{pod}" not found')
            path = paths[-2]
        elif paths:
            path = paths[-1]
        else:
            return
        async for chunk in _read_file(path, tail_lines, follow and not previous, run):
            yield chunk

    def run_of(self, namespace: str, name: str) -> _PodRun | None:
        return self._runs_by_name.get((namespace, name))

    def _remember(self, run: _PodRun) -> None:
        self._runs[run.uid] = run
        self._runs_by_node.setdefault(run.node, {})[run.uid] = run
        self._runs_by_name[(run.namespace, run.name)] = run

    def _forget(self, uid: str) -> _PodRun | None:
        run = self._runs.pop(uid, None)
        if run is not None:
            self._runs_by_node.get(run.node, {}).pop(uid, None)
            if self._runs_by_name.get((run.namespace, run.name)) is run:
                del self._runs_by_name[(run.namespace, run.name)]
        return run


async def _read_file(path: Path, tail_lines: int | None, follow: bool, run: _PodRun) -> AsyncIterator[bytes]:
    data = path.read_bytes() if path.exists() else b""
    if tail_lines is not None:
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[-tail_lines:]) if tail_lines > 0 else b""
    yield data
    if not follow:
        return
    offset = path.stat().st_size if path.exists() else 0
    while not run.stopping.is_set():
        await asyncio.sleep(0.2)
        if path.exists() and path.stat().st_size > offset:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            yield chunk


def _gpu_request(pod: dict[str, Any]) -> int:
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("limits") or {}).get(GPU_RESOURCE) or (resources.get("requests") or {}).get(GPU_RESOURCE)
        if value:
            total += int(value)
    return total


def _host_mounts(pod: dict[str, Any], container: dict[str, Any]) -> list[tuple[str, str]]:
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["spec"].get("volumes") or [] if v.get("hostPath")}
    return sorted(((m["mountPath"].rstrip("/"), host_paths[m["name"]]) for m in container.get("volumeMounts") or []
                   if m.get("name") in host_paths), key=lambda m: -len(m[0]))


def _via_mounts(path: str, mounts: list[tuple[str, str]]) -> str:
    """A path inside the container, as a path on this machine through hostPath volumes."""
    for mount_path, host_path in mounts:
        if path == mount_path or path.startswith(mount_path + "/"):
            return host_path + path[len(mount_path):]
    return path


def _internal_ip(node: dict[str, Any] | None) -> str:
    for address in ((node or {}).get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return address["address"]
    return "127.0.0.1"


def _condition(obj: dict[str, Any], kind: str) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond.get("status")
    return None


def _container_statuses(pod: dict[str, Any], status: dict[str, Any]) -> list[dict[str, Any]]:
    existing = {cs["name"]: cs for cs in status.get("containerStatuses") or []}
    result = []
    for container in pod["spec"].get("containers") or []:
        cs = dict(existing.get(container["name"]) or {
            "name": container["name"], "image": container.get("image", ""),
            "imageID": f"{container.get('image', '')}@sha256:{uuid.uuid4().hex * 2}",
            "containerID": f"trireme://{uuid.uuid4().hex}", "ready": False, "started": False, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}})
        result.append(cs)
    return result


def _pod_conditions(old: list[dict[str, Any]], ready: bool, now: str) -> list[dict[str, Any]]:
    wanted = {"PodReadyToStartContainers": True, "Initialized": True, "ContainersReady": ready, "Ready": ready,
              "PodScheduled": True}
    by_type = {c["type"]: c for c in old}
    conditions = []
    for kind, value in wanted.items():
        status = "True" if value else "False"
        previous = by_type.get(kind)
        if previous is not None and previous.get("status") == status:
            conditions.append(previous)
        else:
            conditions.append({"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": now})
    return conditions
