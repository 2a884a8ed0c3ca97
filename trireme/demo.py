"""``trireme demo``: the whole of Trireme, running, in one command.

One process starts the local cluster (API server, GPU nodes, a kubelet running
real ``tritonserver`` processes, Prometheus), installs the CRDs, runs the operator
on its own thread with the local Prometheus and short autoscaling intervals,
applies the sample InferenceService with ``spec.autoscaling`` enabled and a second
one that fits nowhere, and sends real inferences to the ready replicas. A short
scenario (``scaling_steps``) then changes only the load, low to high to low; the
replica count follows from the operator's autoscaler. Then two more services
fragment the GPUs (``defragmentation_steps``): one whose replicas are spread over
the nodes, and one whose replica needs a whole node, which the rebalancer makes
room for by moving a replica, make-before-break. Placement, scaling and moves can
be watched as they happen: live in the terminal, or as progress lines and a
summary with ``--headless``, whose exit status says whether the service scaled out
under load and back in after it, and whether the rebalancer made room, without a
failed request. Without Prometheus the autoscaler has nothing to read, so the same
story scales the service by script instead. Ctrl-C (or ``--duration``) stops
everything it started, and it checks that no process is left behind.
"""

from __future__ import annotations

import collections
import copy
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

if TYPE_CHECKING:  # the demo's own modules load numpy and rich: imported when the demo runs
    from trireme.loadgen import LoadGenerator, LoadSnapshot
    from trireme.view import ClusterView, Frame, ServiceView, TritonFigures

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serving.trireme.io", "v1alpha1", "inferenceservices"
RUN_MARKER = "TRIREME_DEMO_RUN"
"""Environment variable set to a fresh id in the demo's process; every process it starts
(Triton, its Python stubs, Prometheus) inherits it, which is how leftovers are found."""


class DemoError(RuntimeError):
    """The demo cannot start or cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class DemoSettings:
    """What ``trireme demo`` runs."""

    profile: Path | None = None
    """Node pools; None: examples/clusters/dgx-2x8.yaml (two 8-GPU nodes leave room to see placement)."""
    kubeconfig: Path = Path("kubeconfig")
    """Written at start so kubectl can follow along from another terminal."""
    duration_s: float | None = None
    """Stop after this long. None: run until Ctrl-C; headless runs until the scenario has played out."""
    headless: bool = False
    """Progress lines and a summary instead of the live view."""
    rate: float = 10.0
    """Base load in inferences per second; the scenario's peak is three times this."""
    hold_s: float = 8.0
    """Seconds of peak load on ``PEAK_REPLICAS`` replicas before the load eases."""
    autoscale_interval_s: float = 1.0
    """The operator's ``--autoscale-interval``: a decision every second (Prometheus scrapes every two)."""
    drain_grace_s: float = 3.0
    """The operator's ``--drain-grace``: longer than the load generator's one-second refresh of the
    endpoints, so a draining replica receives no new request before it is deleted."""
    service_time_ms: int = 40
    """Time the sample model holds each request (its ``delay_ms``): one replica then serves about
    25 inferences per second, so the peak load visibly saturates one replica and not three."""
    namespace: str = "default"
    """Where the InferenceServices go; the kubeconfig's default namespace, so ``kubectl get tis`` shows them."""
    refresh_s: float = 0.5
    """View refresh and scenario tick: twice a second is smooth and cheap on two cores."""
    prometheus_every_s: float = 2.0
    """How often Triton's figures are read from Prometheus (its scrape interval)."""
    headless_limit_s: float = 300.0
    """Headless without ``duration_s`` gives up after this long, naming the step it was waiting for."""
    prometheus: bool = True
    """Start Prometheus when it is installed."""
    pod_cidr: str = "127.2.0.0/16"
    """Pod IPs (each Triton listens on ports 8000-8002 of its own): a range apart from the one
    ``trireme devcluster up`` and the test suite use (127.1.x.y), so they can run side by side; when
    it is taken (another demo runs), the next free 127.N.0.0/16."""
    work_dir: Path | None = None
    """Logs, the model repository copy and Prometheus data; None: a fresh temporary directory."""


# -- the scenario -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetRate:
    """Change the load generator's target rate."""

    rate: float
    why: str


@dataclass(frozen=True)
class Scale:
    """Set a service's replicas through the scale subresource, as ``kubectl scale tis/NAME --replicas=N``
    (only in the scripted story: with autoscaling the operator decides)."""

    service: str
    replicas: int
    why: str


@dataclass(frozen=True)
class Apply:
    """Create an InferenceService (or update its spec), as ``kubectl apply -f``."""

    body: Mapping[str, Any]
    why: str


Action = SetRate | Scale | Apply


@dataclass(frozen=True)
class Step:
    """Wait until ``reached(view, seconds_in_step)`` holds, then act."""

    waiting_for: str
    reached: Callable[[ClusterView, float], bool]
    then: tuple[Action, ...] = ()
    goal: str = ""
    """What reaching this step shows, when it is part of what the demo must show (headless exits 0 only
    if every goal was reached)."""


class Scenario:
    """A list of steps played in order, one tick at a time. This is the one place that decides the load
    in the demo (and, in the scripted story only, the replica count)."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)
        self.index = 0
        self._step_started: float | None = None

    @property
    def done(self) -> bool:
        return self.index >= len(self.steps)

    @property
    def current(self) -> str:
        if self.done:
            return "played out; steady load until stopped"
        return f"waiting for {self.steps[self.index].waiting_for}"

    @property
    def goals(self) -> list[str]:
        return [s.goal for s in self.steps if s.goal]

    @property
    def missed_goals(self) -> list[str]:
        """The goals not reached yet, in order."""
        return [s.waiting_for for s in self.steps[self.index:] if s.goal]

    @property
    def goal_reached(self) -> bool:
        """Whether every goal step was reached."""
        return not self.missed_goals

    def advance(self, view: ClusterView, now: float) -> list[Action]:
        """The actions due at ``now`` (monotonic seconds) given the cluster ``view``."""
        actions: list[Action] = []
        while not self.done:
            if self._step_started is None:
                self._step_started = now
            step = self.steps[self.index]
            if not step.reached(view, now - self._step_started):
                break
            actions.extend(step.then)
            self.index += 1
            self._step_started = now
        return actions


def ready_replicas(service: str, count: int) -> Callable[[ClusterView, float], bool]:
    """Exactly ``count`` replicas of ``service`` wanted, running and ready (none still going away)."""
    def check(view: ClusterView, _: float) -> bool:
        tis = view.service(service)
        return (tis is not None and tis.desired == count and tis.ready == count
                and len(view.replicas_of(service)) == count)
    return check


def at_least_ready(service: str, count: int) -> Callable[[ClusterView, float], bool]:
    def check(view: ClusterView, _: float) -> bool:
        tis = view.service(service)
        return tis is not None and tis.ready >= count
    return check


def autoscaler_steady(service: str, count: int, rate: float) -> Callable[[ClusterView, float], bool]:
    """``count`` ready replicas, and the autoscaler sees at least half of ``rate`` arriving and keeps
    the count (a decision before the first scrapes sees no load at all)."""
    ready = ready_replicas(service, count)

    def check(view: ClusterView, elapsed: float) -> bool:
        tis = view.service(service)
        auto = tis.autoscaler if tis is not None else None
        return (ready(view, elapsed) and auto is not None and auto.action == "steady"
                and auto.metrics.get("requestRate", 0.0) >= rate / 2)
    return check


def after(seconds: float) -> Callable[[ClusterView, float], bool]:
    return lambda _view, elapsed: elapsed >= seconds


PEAK_REPLICAS = 3
"""What the peak load (three times the base) asks of the autoscaler: its maxReplicas."""


def demo_autoscaling(base_rate: float, service_time_ms: int) -> dict[str, Any]:
    """The sample service's ``spec.autoscaling`` for the demo.

    The signal is Triton's request rate against a target of 1.2 × the base rate per replica: the base
    load needs one replica and the peak (three times the base) needs ``PEAK_REPLICAS``, half a replica
    more than it would take at the target. On the local cluster's CPU model the rate is exact, where
    pending requests are a 0-or-1 snapshot of evenly paced requests and GPU utilisation does not exist.
    The autoscaler averages the rate over 30 seconds, so the latency objective (2.5 × the model's
    service time) is what adds replicas within seconds of the overload; the 15-second scale-down window
    holds them until the rate's average has caught up with the peak (tests/demo/test_scenario.py plays
    this on the autoscaler's own decisions), and the rate decides when the load has eased. The other
    windows and periods are short so the demo stays short.
    """
    return {"enabled": True, "minReplicas": 1, "maxReplicas": PEAK_REPLICAS, "signal": "requestRate",
            "target": round(1.2 * base_rate, 3), "latencySLOMilliseconds": int(2.5 * service_time_ms),
            "behavior": {"scaleUp": {"maxChange": PEAK_REPLICAS, "periodSeconds": 15},
                         "scaleDown": {"stabilizationWindowSeconds": 15, "maxChange": 1, "periodSeconds": 5}}}


def scaling_story(service: str, base_rate: float, peak_replicas: int = PEAK_REPLICAS, hold_s: float = 8.0,
                  autoscaled: bool = True) -> Scenario:
    """The scaling part of the demo on its own (see ``scaling_steps``)."""
    return Scenario(scaling_steps(service, base_rate, peak_replicas, hold_s, autoscaled))


def scaling_steps(service: str, base_rate: float, peak_replicas: int = PEAK_REPLICAS, hold_s: float = 8.0,
                  autoscaled: bool = True) -> list[Step]:
    """Low load until ``service`` serves on one replica (``autoscaled``: with its autoscaler steady),
    three times that until it runs ``peak_replicas`` ready replicas and has held them ``hold_s``, then
    low again until it is back to one replica. With ``autoscaled`` only the load changes and the
    operator's autoscaler decides the replicas; without it (no Prometheus, so no metrics to decide
    from) the demo scales the service itself with the load, as ``kubectl scale`` would."""
    peak = base_rate * 3
    up: tuple[Action, ...] = (SetRate(peak, f"load steps up: {base_rate:g} → {peak:g} inferences/s"),)
    down: tuple[Action, ...] = (SetRate(base_rate, f"load eases: {peak:g} → {base_rate:g} inferences/s"),)
    if autoscaled:
        start = Step(f"{service} to serve {base_rate:g}/s on 1 replica, its autoscaler steady",
                     autoscaler_steady(service, 1, base_rate), up)
        who = "the autoscaler to scale"
    else:
        start = Step(f"the first replica of {service} to be ready", at_least_ready(service, 1),
                     up + (Scale(service, peak_replicas, f"load stepped up to {peak:g}/s"),))
        down += (Scale(service, 1, f"load eased to {base_rate:g}/s"),)
        who = "the demo to scale"
    return [
        start,
        Step(f"{who} {service} out to {peak_replicas} ready replicas", ready_replicas(service, peak_replicas),
             goal=f"{service} scaled out to {peak_replicas} ready replicas under load"),
        Step(f"{hold_s:g} s of peak load on {peak_replicas} replicas", after(hold_s), down),
        Step(f"{who} {service} back in to 1 ready replica", ready_replicas(service, 1),
             goal="back in to 1 ready replica after it"),
    ]


def defragmentation_steps(spread: Mapping[str, Any], whole_node: Mapping[str, Any]) -> list[Step]:
    """Apply ``spread`` (replicas placed one per node, so each node has a GPU taken), then, once they are
    ready, ``whole_node`` (one replica needing every GPU of a node): it fits nowhere until the rebalancer
    moves a replica of ``spread`` next to another, starting the new replica before the old one leaves."""
    mover, waiting = spread["metadata"]["name"], whole_node["metadata"]["name"]
    gpus = whole_node["spec"]["gpus"]["count"]
    count = spread["spec"]["replicas"]
    return [
        Step("the scaling story to end", after(0.0),
             (Apply(spread, f"{mover}: {count} replicas of 1 GPU, spread over the nodes"),)),
        Step(f"{count} replicas of {mover} ready", ready_replicas(mover, count),
             (Apply(whole_node, f"{waiting}: {gpus} GPUs on one node, more than any node has free"),)),
        Step(f"the rebalancer to move a replica of {mover} so that {waiting} fits", moved_for(waiting, mover),
             goal=f"{waiting} ({gpus} GPUs on one node) ready after the rebalancer moved a replica of {mover}"),
    ]


def moved_for(service: str, mover: str) -> Callable[[ClusterView, float], bool]:
    """``service`` has a ready replica, and a move of a replica of ``mover`` has finished (its Moved
    Event: the new replica served before the old one was drained and deleted)."""
    def check(view: ClusterView, _: float) -> bool:
        tis = view.service(service)
        moved = any(e.reason == "Moved" and e.object == f"tis/{mover}" for e in view.events)
        return moved and tis is not None and tis.ready >= 1
    return check


# -- files of the repository -------------------------------------------------------------------------------


def project_path(relative: str) -> Path:
    """A file of the Trireme repository (examples, CRDs): from the working directory, else next to
    the installed package (an editable install or a checkout)."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = base / relative
        if candidate.exists():
            return candidate.resolve()
    raise DemoError(f"cannot find {relative}: run `trireme demo` from the Trireme repository")


def prepare_models(target: Path, service_time_ms: int) -> Path:
    """A copy of examples/models whose ``simple`` model holds each request ``service_time_ms``."""
    source = project_path("examples/models")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    config = target / "simple" / "config.pbtxt"
    text = config.read_text()
    changed, found = re.subn(r'(key:\s*"delay_ms"\s*value:\s*\{\s*string_value:\s*")[^"]*(")',
                             rf"\g<1>{int(service_time_ms)}\g<2>", text)
    if not found:
        raise DemoError(f"{config} has no delay_ms parameter to set the service time with")
    config.write_text(changed)
    return target


def sample_services(models: Path, namespace: str, largest_node_gpus: int,
                    autoscaling: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """examples/inferenceservice.yaml pointed at ``models`` (with ``autoscaling`` as its
    ``spec.autoscaling`` when given), and a copy with a fixed replica count that asks for more GPUs on
    one node than any node has."""
    path = project_path("examples/inferenceservice.yaml")
    sample = yaml.safe_load(path.read_text())
    sample.setdefault("metadata", {})["namespace"] = namespace
    sample["spec"]["modelRepository"]["uri"] = f"file://{models}"
    if autoscaling is not None:
        sample["spec"]["autoscaling"] = autoscaling
    large = copy.deepcopy(sample)
    large["metadata"] = {"name": "large", "namespace": namespace}
    large["spec"]["replicas"] = 1
    large["spec"]["gpus"] = {"count": max(2, 2 * largest_node_gpus)}
    large["spec"]["autoscaling"] = {"enabled": False}
    return sample, large


def defragmentation_services(sample: Mapping[str, Any], node_gpus: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copies of ``sample`` for ``defragmentation_steps``, without autoscaling: ``batch``, two replicas of
    one GPU placed by the spread policy, and ``wide``, one replica on all ``node_gpus`` GPUs of one node."""
    namespace = sample["metadata"].get("namespace")
    batch, wide = copy.deepcopy(sample), copy.deepcopy(sample)
    batch["metadata"] = {"name": "batch", "namespace": namespace}
    batch["spec"].update(replicas=2, gpus={"count": 1}, autoscaling={"enabled": False},
                         scheduling={"policy": "spread"})
    wide["metadata"] = {"name": "wide", "namespace": namespace}
    wide["spec"].update(replicas=1, gpus={"count": node_gpus}, autoscaling={"enabled": False})
    return batch, wide


# -- reading the cluster ------------------------------------------------------------------------------------


class ClusterReader:
    """Reads what the view shows from the API server (and Triton's figures from Prometheus)."""

    def __init__(self, api: Any, namespace: str, prometheus_url: str | None) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.prometheus_url = prometheus_url
        self.prometheus_error: str | None = None

    def view(self) -> ClusterView:
        from trireme.view import ClusterView

        nodes = _items(self.core.list_node(_preload_content=False))
        pods = _items(self.core.list_pod_for_all_namespaces(_preload_content=False))
        services = _items(self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                                    _preload_content=False))
        events = _items(self.core.list_namespaced_event(self.namespace, _preload_content=False))
        return ClusterView.from_objects(nodes, pods, services, events)

    def endpoints(self, service: str) -> list[str]:
        """``ip:port`` of the service's ready endpoints (Triton's HTTP port)."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.core.read_namespaced_endpoints(service, self.namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
        found = []
        for subset in json.loads(response.data).get("subsets") or []:
            port = next((p["port"] for p in subset.get("ports") or [] if p.get("name") == "http"), None)
            if port is None:
                continue
            found.extend(f"{a['ip']}:{port}" for a in subset.get("addresses") or [])
        return found

    def triton(self) -> TritonFigures | None:
        """Per-pod inference rate and queue time from Triton's own counters; None without Prometheus."""
        from trireme.view import TritonFigures

        if not self.prometheus_url:
            return None
        selector = f'namespace="{self.namespace}"'
        success = f"sum by (pod) (rate(nv_inference_request_success{{{selector}}}[10s]))"
        queue = f"sum by (pod) (rate(nv_inference_queue_duration_us{{{selector}}}[10s]))"
        try:
            rate = self._query(success)
            queue_us = self._query(queue)
        except Exception as exc:
            self.prometheus_error = f"cannot query Prometheus at {self.prometheus_url}: {exc}"
            return None
        self.prometheus_error = None
        queue_ms = {pod: queue_us[pod] / rate[pod] / 1000.0 for pod in queue_us if rate.get(pod)}
        return TritonFigures(rate=rate, queue_ms=queue_ms)

    def triton_total(self) -> float | None:
        """Successful inferences Triton counted in the last hour, over every replica that ran (None
        without Prometheus)."""
        if not self.prometheus_url:
            return None
        try:
            found = self._query(f'sum(max_over_time(nv_inference_request_success{{namespace="{self.namespace}"}}[1h]))',
                                by="")
        except Exception:
            return None
        return sum(found.values()) if found else 0.0

    def _query(self, query: str, by: str = "pod") -> dict[str, float]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(url, timeout=1.0) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(body.get("error", "query failed"))
        result = {}
        for item in body["data"]["result"]:
            value = float(item["value"][1])
            if not math.isnan(value):
                result[item["metric"].get(by, "") if by else ""] = value
        return result


def _items(response: Any) -> list[dict[str, Any]]:
    return json.loads(response.data)["items"]


def install_crds(api: Any, timeout_s: float = 30.0) -> None:
    """Create (or replace) the CRDs in crds/ and wait until the API serves them."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    extensions = client.ApiextensionsV1Api(api)
    names = []
    for path in sorted(project_path("crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            names.append(doc["metadata"]["name"])
            try:
                extensions.create_custom_resource_definition(doc, _preload_content=False)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                current = json.loads(extensions.read_custom_resource_definition(
                    doc["metadata"]["name"], _preload_content=False).data)
                doc["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                extensions.replace_custom_resource_definition(doc["metadata"]["name"], doc, _preload_content=False)
    deadline = time.monotonic() + timeout_s
    custom = client.CustomObjectsApi(api)
    while True:
        try:
            established = all(any(c.get("type") == "Established" and c.get("status") == "True"
                                  for c in json.loads(extensions.read_custom_resource_definition(
                                      name, _preload_content=False).data).get("status", {}).get("conditions", []))
                              for name in names)
            if established:
                custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
                return
        except ApiException:
            pass
        if time.monotonic() > deadline:
            raise DemoError(f"the CRDs {', '.join(names)} were not served within {timeout_s:g}s")
        time.sleep(0.1)


# -- the operator on its own thread --------------------------------------------------------------------------


class OperatorThread:
    """``trireme run`` in this process: its own thread and event loop, stopped through kopf's stop flag."""

    def __init__(self, namespace: str, prometheus_url: str | None = None, autoscale_interval_s: float = 1.0,
                 drain_grace_s: float = 3.0, rebalance_interval_s: float = 2.0) -> None:
        self.namespace = namespace
        self.rebalance_interval_s = rebalance_interval_s
        self.prometheus_url = prometheus_url
        self.autoscale_interval_s = autoscale_interval_s
        self.drain_grace_s = drain_grace_s
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _main(self) -> None:
        import asyncio

        from trireme.operator.handlers import run
        from trireme.operator.settings import OperatorSettings

        # as `trireme run` with --namespace, --reconcile-interval, --prometheus-url, --autoscale-interval,
        # --drain-grace, --drain-timeout, --metrics-unavailable-after and --rebalance-interval
        settings = OperatorSettings(namespaces=(self.namespace,), reconcile_interval_s=1.0,
                                    autoscale_interval_s=self.autoscale_interval_s, drain_grace_s=self.drain_grace_s,
                                    drain_timeout_s=30.0, metrics_unavailable_after_s=10.0,
                                    rebalance_interval_s=self.rebalance_interval_s,
                                    **({"prometheus_url": self.prometheus_url} if self.prometheus_url else {}))
        try:
            asyncio.run(run(settings, stop_flag=self.stop_flag))
        except BaseException as exc:  # reported by the demo, which then stops
            log.exception("the operator stopped with an error")
            self.error = exc

    def stop(self, timeout_s: float = 30.0) -> bool:
        """True when it stopped within ``timeout_s``."""
        self.stop_flag.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True


# -- processes left behind -------------------------------------------------------------------------------------


def marked_processes(marker: str, value: str) -> list[tuple[int, str]]:
    """(pid, command) of live processes whose environment has ``marker=value``, other than this one."""
    needle = f"{marker}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":  # exited, waiting to be reaped
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append((int(entry.name), command))
    return found


# -- the run ---------------------------------------------------------------------------------------------------


@dataclass
class Record:
    """What happened, for the summary."""

    started: float = field(default_factory=time.monotonic)
    replicas: dict[str, list[tuple[float, int, int]]] = field(default_factory=dict)
    """Per service: (seconds since start, ready, desired) at every change."""
    placements: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    """Every pod ever bound: node and GPU indices."""
    events: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(object, reason, message) -> count, for every Event seen."""
    actions: list[tuple[float, str]] = field(default_factory=list)
    unschedulable: dict[str, str] = field(default_factory=dict)
    decisions: list[tuple[float, str, str, int, str]] = field(default_factory=list)
    """(seconds since start, service, action, desiredReplicas, reason) whenever an autoscaler's action or
    count changed."""

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def observe(self, view: ClusterView) -> list[str]:
        """Take in a view; returns progress lines for what changed."""
        lines = []
        now = self.elapsed()
        for service in view.services:
            history = self.replicas.setdefault(service.name, [])
            if not history or history[-1][1:] != (service.ready, service.desired):
                history.append((now, service.ready, service.desired))
                lines.append(f"{service.name}: {service.ready}/{service.desired} replicas ready")
            if service.problem:
                self.unschedulable[service.name] = service.problem
            else:  # placed since: the summary names only what is still waiting
                self.unschedulable.pop(service.name, None)
            line = self._decision(now, service)
            if line:
                lines.append(line)
        for replica in view.replicas:
            if replica.node and replica.name not in self.placements:
                self.placements[replica.name] = (replica.node, replica.gpus)
            elif replica.node and replica.gpus and not self.placements[replica.name][1]:
                self.placements[replica.name] = (replica.node, replica.gpus)
        for event in view.events:
            key = (event.object, event.reason, event.message)
            if key not in self.events:
                kind = "warning" if event.type == "Warning" else "event"
                lines.append(f"{kind} {event.reason} {event.object}: {event.message}")
            self.events[key] = event.count
        return lines

    def _decision(self, now: float, service: ServiceView) -> str | None:
        """A progress line when the autoscaler of ``service`` changed its action or count."""
        from trireme.view import metrics_text

        auto = service.autoscaler
        if auto is None or not auto.action:
            return None
        last = next((d for d in reversed(self.decisions) if d[1] == service.name), None)
        if last is not None and last[2:4] == (auto.action, service.desired):
            return None
        self.decisions.append((now, service.name, auto.action, service.desired, auto.reason))
        return (f"autoscaler {service.name}: {auto.action}, desiredReplicas {service.desired}: {auto.reason} "
                f"[{metrics_text(auto.metrics)}]")


class Demo:
    """One run of ``trireme demo``."""

    def __init__(self, settings: DemoSettings, out: TextIO | None = None) -> None:
        from trireme.view import ClusterView

        self.settings = settings
        self.out = out
        self.stop_requested = threading.Event()
        self.record = Record()
        self.notes: list[str] = []
        self.problems: list[str] = []
        self.scenario: Scenario | None = None
        self.loadgen: LoadGenerator | None = None
        self.view = ClusterView()
        self.triton: TritonFigures | None = None
        self.triton_total: float | None = None
        self.follow = ""
        self.leftovers: list[tuple[int, str]] = []
        self.final_load: LoadSnapshot | None = None
        self._prometheus_problem: str | None = None
        self._live = self.live_view

    # output

    @property
    def live_view(self) -> bool:
        """Whether the live view is drawn: not headless, and the output is a terminal (written to a file
        or a pipe, the demo prints progress lines instead)."""
        if self.settings.headless:
            return False
        from rich.console import Console

        return Console(file=self.out).is_terminal if self.out else Console().is_terminal

    def say(self, line: str) -> None:
        """A progress line (without the live view) or a log line (with it)."""
        log.info("%s", line)
        if not self._live:
            print(f"[{self.record.elapsed():6.1f}s] {line}", file=self.out, flush=True)

    def frame(self) -> Frame:
        from trireme.view import Frame

        return Frame(cluster=self.view, elapsed_s=self.record.elapsed(),
                     step=self.scenario.current if self.scenario else "starting",
                     follow=self.follow, load=self.loadgen.snapshot() if self.loadgen else None, triton=self.triton,
                     prometheus_problem=self._prometheus_problem, notes=tuple(self.notes))

    # the run

    def run(self) -> int:
        from trireme.devcluster.background import BackgroundCluster
        from trireme.devcluster.cluster import ClusterSettings
        from trireme.devcluster.kubelet import KubeletSettings
        from trireme.devcluster.profile import ProfileError, load_profile
        from trireme.loadgen import LoadGenerator

        settings = self.settings
        profile_path = settings.profile or project_path("examples/clusters/dgx-2x8.yaml")
        try:
            profile = load_profile(profile_path)
        except (ProfileError, OSError) as exc:
            raise DemoError(f"cannot load profile {profile_path}: {exc}") from exc
        work_dir = settings.work_dir or Path(tempfile.mkdtemp(prefix="trireme-demo-"))
        work_dir.mkdir(parents=True, exist_ok=True)
        kubeconfig = settings.kubeconfig.resolve()
        try:
            kubeconfig.parent.mkdir(parents=True, exist_ok=True)
            kubeconfig.touch()
        except OSError as exc:
            raise DemoError(f"cannot write the kubeconfig {kubeconfig}: {exc}") from exc
        models = prepare_models(work_dir / "models", settings.service_time_ms)
        run_id = uuid.uuid4().hex
        os.environ[RUN_MARKER] = run_id
        _use_kubeconfig(kubeconfig)
        cluster_settings = ClusterSettings(profile=profile, kubeconfig=kubeconfig, work_dir=work_dir,
                                           prometheus=settings.prometheus,
                                           kubelet=KubeletSettings(mode="process", log_dir=work_dir / "logs",
                                                                   pod_cidr=settings.pod_cidr))
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        background = BackgroundCluster(cluster_settings)
        operator: OperatorThread | None = None
        try:
            try:
                background.start()
            except (RuntimeError, TimeoutError, OSError) as exc:
                raise DemoError(f"the local cluster did not start: {exc}") from exc
            cluster = background.cluster
            self.follow = f"kubectl --kubeconfig {_shown_path(kubeconfig)} get tis"
            self._announce(cluster, work_dir, profile, kubeconfig)
            from kubernetes import config

            api = config.new_client_from_config(config_file=str(kubeconfig))
            install_crds(api)
            self.say("CRDs installed")
            autoscaled = bool(cluster.prometheus_url)
            operator = OperatorThread(settings.namespace, cluster.prometheus_url, settings.autoscale_interval_s,
                                      settings.drain_grace_s)
            operator.start()
            self.say("operator started (in this process)" + (
                f": autoscaling from {cluster.prometheus_url}, a decision every {settings.autoscale_interval_s:g}s"
                if autoscaled else ""))
            reader = ClusterReader(api, settings.namespace, cluster.prometheus_url)
            node_gpus = [int(n["status"]["capacity"].get("nvidia.com/gpu", 0))
                         for n in cluster.store.items(("", "nodes"))]
            largest = max(node_gpus, default=0)
            autoscaling = demo_autoscaling(settings.rate, settings.service_time_ms)
            sample, large = sample_services(models, settings.namespace, largest, autoscaling if autoscaled else None)
            self._apply(api, sample)
            self._apply(api, large)
            self.say(f"applied InferenceService {sample['metadata']['name']} (model simple, "
                     f"{sample['spec']['replicas']} replica × {sample['spec']['gpus'].get('count', 1)} GPU) and "
                     f"{large['metadata']['name']} ({large['spec']['gpus']['count']} GPUs on one node: fits nowhere)")
            service = sample["metadata"]["name"]
            if autoscaled:
                from trireme.view import autoscaler_view, objective

                rule = autoscaler_view(autoscaling, {})
                assert rule is not None
                self.say(f"{service} autoscales between {rule.min_replicas} and {rule.max_replicas} replicas "
                         f"({objective(rule)}); the demo changes only the load")
            else:
                self.notes.append("without Prometheus the autoscaler has no metrics: the demo scales "
                                  f"{service} itself, as kubectl scale would")
                self.say(self.notes[-1])
            steps = scaling_steps(service, settings.rate, hold_s=settings.hold_s, autoscaled=autoscaled)
            if node_gpus.count(largest) >= 2 and largest >= 3:
                steps += defragmentation_steps(*defragmentation_services(sample, largest))
            else:
                self.notes.append("this cluster is too small for the rebalancing part of the story (it needs two "
                                  "nodes of the most GPUs, at least 3 each): it plays only the scaling part")
                self.say(self.notes[-1])
            self.scenario = Scenario(steps)
            endpoint_reader = ClusterReader(config.new_client_from_config(config_file=str(kubeconfig)),
                                            settings.namespace, None)
            self.loadgen = LoadGenerator(lambda: endpoint_reader.endpoints(service), settings.rate)
            self.loadgen.start()
            self.say(f"load generator started: {settings.rate:g} inferences/s to the ready endpoints of {service}")
            self._loop(api, reader, operator)
            self.triton_total = reader.triton_total()
        finally:
            self._shutdown(background, operator, run_id)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self._verdict()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stop_requested.is_set():  # interrupting the shutdown would leave processes behind
            print("still stopping: Triton replicas and Prometheus get a few seconds to exit", file=sys.stderr,
                  flush=True)
        self.stop_requested.set()

    def _announce(self, cluster: Any, work_dir: Path, profile: Any, kubeconfig: Path) -> None:
        nodes = list(cluster.store.items(("", "nodes")))
        gpus = sum(int(n["status"]["capacity"].get("nvidia.com/gpu", 0)) for n in nodes)
        prometheus = cluster.prometheus_url
        if not prometheus:
            why = cluster.prometheus_problem or "turned off with --no-prometheus"
            self._prometheus_problem = f"Prometheus is not running ({why}); the demo runs without Triton's metrics"
            self.notes.append(self._prometheus_problem)
            prometheus = f"not running: {why}"
        lines = [f"local cluster up: API server {cluster.url}, {len(nodes)} nodes with {gpus} GPUs ({profile.name})",
                 f"  kubeconfig   {kubeconfig}",
                 f"  follow it    {self.follow}",
                 f"  prometheus   {prometheus}",
                 f"  logs         {work_dir}"]
        for line in lines:
            log.info("%s", line)
            print(line, file=self.out, flush=True)

    def _apply(self, api: Any, body: dict[str, Any]) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        custom = client.CustomObjectsApi(api)
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, body["metadata"]["namespace"], PLURAL, body)
        except ApiException as exc:
            if exc.status == 409:
                custom.patch_namespaced_custom_object(GROUP, VERSION, body["metadata"]["namespace"], PLURAL,
                                                      body["metadata"]["name"], {"spec": body["spec"]})
                return
            raise DemoError(f"applying InferenceService {body['metadata']['name']} failed: "
                            f"{_api_message(exc)}") from exc

    def _act(self, api: Any, action: Action) -> None:
        from kubernetes import client

        assert self.loadgen is not None
        if isinstance(action, SetRate):
            self.loadgen.rate = action.rate
            self.say(f"scenario: {action.why}")
            return
        if isinstance(action, Apply):
            self._apply(api, dict(action.body))
            self.say(f"scenario: applied {action.why}")
            return
        custom = client.CustomObjectsApi(api)
        current = custom.get_namespaced_custom_object_scale(GROUP, VERSION, self.settings.namespace, PLURAL,
                                                            action.service)
        before = int((current.get("spec") or {}).get("replicas", 0))
        custom.patch_namespaced_custom_object_scale(GROUP, VERSION, self.settings.namespace, PLURAL, action.service,
                                                    {"spec": {"replicas": action.replicas}})
        message = f"scaled {action.service} from {before} to {action.replicas} replicas: {action.why}"
        self.say(f"scenario: {message}")
        self._post_event(api, action.service, "Scaled", message)

    def _post_event(self, api: Any, service: str, reason: str, message: str) -> None:
        """A Normal Event on the InferenceService, so ``kubectl describe`` and the view show the step."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        custom = client.CustomObjectsApi(api)
        try:
            tis = custom.get_namespaced_custom_object(GROUP, VERSION, self.settings.namespace, PLURAL, service)
            now = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
            client.CoreV1Api(api).create_namespaced_event(self.settings.namespace, {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{service}.", "namespace": self.settings.namespace},
                "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService", "name": service,
                                   "namespace": self.settings.namespace, "uid": tis["metadata"]["uid"]},
                "reason": reason, "message": message, "type": "Normal", "count": 1,
                "source": {"component": "trireme-demo"}, "reportingComponent": "trireme-demo",
                "reportingInstance": "trireme-demo", "firstTimestamp": now, "lastTimestamp": now},
                _preload_content=False)
        except ApiException as exc:  # the view misses a line; the scaling itself happened
            log.warning("event %s on %s not recorded: %s", reason, service, _api_message(exc))

    def _loop(self, api: Any, reader: ClusterReader, operator: OperatorThread) -> None:
        from trireme.view import render

        settings = self.settings
        limit = settings.duration_s if settings.duration_s is not None else (
            settings.headless_limit_s if settings.headless else None)
        live = None
        if self._live:
            from rich.console import Console
            from rich.live import Live

            live = Live(render(self.frame()), console=Console(file=self.out) if self.out else None,
                        auto_refresh=False, screen=True, redirect_stdout=False, redirect_stderr=False)
            live.start()
        next_metrics = 0.0
        read_error: str | None = None
        try:
            while not self.stop_requested.is_set():
                tick = time.monotonic()
                try:
                    self.view = reader.view()
                    read_error = None
                except Exception as exc:  # keep the last view; the API server may be busy for a moment
                    if str(exc) != read_error:
                        log.warning("reading the cluster failed: %s", exc)
                    read_error = str(exc)
                if tick >= next_metrics:
                    self.triton = reader.triton()
                    if reader.prometheus_url:
                        self._prometheus_problem = reader.prometheus_error
                    next_metrics = tick + settings.prometheus_every_s
                for line in self.record.observe(self.view):
                    self.say(line)
                assert self.scenario is not None
                for action in self.scenario.advance(self.view, tick):
                    self.record.actions.append((self.record.elapsed(), getattr(action, "why", "")))
                    self._act(api, action)
                if live is not None:
                    live.update(render(self.frame()), refresh=True)
                if not operator.alive:
                    self.problems.append(f"the operator stopped: {operator.error or 'no error reported'}; "
                                         "see the log in the work directory")
                    return
                if settings.headless and self.scenario.done:
                    self.say("scenario played out")
                    return
                if limit is not None and self.record.elapsed() >= limit:
                    if settings.headless and not self.scenario.done:
                        states = "; ".join(f"{r.name} {r.state}" + (f" ({r.message})" if r.message else "")
                                           for r in self.view.replicas) or "no replicas"
                        self.problems.append(f"stopped after {limit:g}s while {self.scenario.current} "
                                             f"(replicas: {states})")
                    return
                self.stop_requested.wait(max(0.0, settings.refresh_s - (time.monotonic() - tick)))
            self.say("stopping: interrupted")
        finally:
            if live is not None:
                live.stop()
                self._live = False  # from here on, progress goes to the terminal as lines

    def _shutdown(self, background: Any, operator: OperatorThread | None, run_id: str) -> None:
        started = time.monotonic()
        self.say("stopping the load generator, the operator, the Triton replicas and Prometheus")
        if self.loadgen is not None:
            self.loadgen.stop()
            self.final_load = self.loadgen.snapshot()
        if operator is not None and not operator.stop():
            self.problems.append("the operator did not stop within 30 s")
        background.stop()
        leftovers = marked_processes(RUN_MARKER, run_id)
        deadline = time.monotonic() + 5.0
        while leftovers and time.monotonic() < deadline:  # processes still exiting
            time.sleep(0.1)
            leftovers = marked_processes(RUN_MARKER, run_id)
        for pid, _ in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.leftovers = leftovers
        if leftovers:
            self.problems.append(f"{len(leftovers)} processes were left running and have been killed: "
                                 + "; ".join(f"{pid} {cmd[:80]}" for pid, cmd in leftovers))
        log.info("stopped everything in %.1fs", time.monotonic() - started)

    # the outcome

    def _verdict(self) -> int:
        load = self.final_load
        scenario = self.scenario
        failures = list(self.problems)
        if scenario is None:
            failures.append("the demo never started its scenario")
        elif scenario.missed_goals:
            failures.append(f"the demo never reached {scenario.missed_goals[0]}")
        if load is None or load.succeeded == 0:
            failures.append("no inference succeeded")
        elif load.failed:
            failures.append(f"{load.failed} of {load.succeeded + load.failed} inferences failed "
                            f"(last error: {load.last_error})")
        if self.stop_requested.is_set() and not self.settings.headless:
            # the user stopped a live demo whenever they liked: only what went wrong counts
            step = self.scenario.current if self.scenario else "starting"
            self.print_summary(self.problems, stopped=f"stopped with Ctrl-C while {step}")
            return 1 if self.problems else 0
        self.print_summary(failures)
        return 1 if failures else 0

    def print_summary(self, failures: Sequence[str], stopped: str | None = None) -> None:
        from trireme.view import summary_lines

        out = self.out
        load = self.final_load
        elapsed = self.record.elapsed()
        print(f"\nsummary after {elapsed:.1f} s", file=out)
        if load is not None:
            print(f"  inferences     {load.sent} sent: {load.succeeded} succeeded, {load.failed} failed, "
                  f"{load.retried} retried on another replica", file=out)
            print(f"  latency        p50 {_ms(load.total_p50_ms)}, p99 {_ms(load.total_p99_ms)} "
                  f"(whole run, {self.settings.service_time_ms} ms of model time per request)", file=out)
            spread = ", ".join(f"{address} {count}" for address, count in sorted(load.by_endpoint.items()))
            print(f"  per replica    {spread or '-'}", file=out)
        if self.triton_total is not None:
            print(f"  prometheus     Triton counted {self.triton_total:.0f} successful inferences "
                  "(nv_inference_request_success, at its last scrape)", file=out)
        elif self._prometheus_problem:
            print(f"  prometheus     {self._prometheus_problem}", file=out)
        for service, history in sorted(self.record.replicas.items()):
            steps = " → ".join(f"{ready}/{desired} at {at:.1f}s" for at, ready, desired in history)
            print(f"  replicas       {service}: {steps}", file=out)
        for at, service, action, desired, reason in self.record.decisions:
            if action in ("scale-up", "scale-down"):
                print(f"  autoscaler     {service} at {at:.1f}s: {action}, desiredReplicas {desired}: {reason}",
                      file=out)
        for name, (node, gpus) in sorted(self.record.placements.items()):
            print(f"  placed         {name} on {node}, GPUs {','.join(map(str, gpus)) or '-'}", file=out)
        for service, problem in sorted(self.record.unschedulable.items()):
            print(f"  unschedulable  {service}: {problem}", file=out)
        reasons = collections.Counter()
        for (_, reason, _), count in self.record.events.items():
            reasons[reason] += count
        listed = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
        print(f"  events         {sum(reasons.values())} ({listed})", file=out)
        if self.view.replicas:
            print("  final state", file=out)
            for line in summary_lines(self.view):
                print(f"    {line}", file=out)
        if stopped and not failures:
            print(f"result: {stopped}", file=out)
        elif failures:
            print("result: FAILED", file=out)
            for failure in failures:
                print(f"  - {failure}", file=out)
        else:
            goals = ", then ".join(self.scenario.goals) if self.scenario else "the scenario played out"
            print(f"result: OK: {goals}; {load.succeeded if load else 0} inferences succeeded, "
                  f"{load.failed if load else 0} failed", file=out)
        print("everything stopped; no process left behind" if not self.leftovers
              else f"{len(self.leftovers)} leftover processes were killed", file=out, flush=True)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _use_kubeconfig(path: Path) -> None:
    """Make ``path`` the current kubeconfig of this process, for the in-process operator (which, like
    ``trireme run``, loads the current kubeconfig). The kubernetes client reads KUBECONFIG once, when
    it is imported, so its default is set as well."""
    os.environ["KUBECONFIG"] = str(path)
    from kubernetes.config import kube_config

    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(path)


def _api_message(exc: Any) -> str:
    try:
        return json.loads(exc.body).get("message") or str(exc)
    except (TypeError, ValueError, AttributeError):
        return str(exc)


def _shown_path(path: Path) -> str:
    """``./kubeconfig`` when the file is in the working directory, else the absolute path."""
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return f"./{relative}" if len(relative.parts) == 1 else str(relative)


def configure_logging(work_dir_hint: Path | None, verbose: bool) -> Path:
    """Send all logging to a file: the live view owns the terminal, and headless prints its own lines."""
    directory = work_dir_hint or Path(tempfile.gettempdir())
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "trireme-demo.log"
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # kopf reports every timer run at INFO
    return path


def main(settings: DemoSettings, verbose: bool = False) -> int:
    """Run the demo; returns the exit status."""
    work_dir = settings.work_dir or Path(tempfile.mkdtemp(prefix="trireme-demo-"))
    settings = DemoSettings(**{**settings.__dict__, "work_dir": work_dir})
    log_path = configure_logging(work_dir, verbose)
    demo = Demo(settings)
    try:
        return demo.run()
    except DemoError as exc:
        print(f"error: {exc}\n(log: {log_path})", flush=True)
        return 2
    except Exception as exc:
        log.exception("the demo failed")
        print(f"error: the demo failed: {exc}\n(log: {log_path})", flush=True)
        return 1


# -- the command line --------------------------------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    """The ``trireme demo`` flags."""
    parser.add_argument("--profile", type=Path, help="node pools (YAML); default examples/clusters/dgx-2x8.yaml")
    parser.add_argument("--kubeconfig", type=Path, default=Path("kubeconfig"),
                        help="where to write the kubeconfig (default ./kubeconfig)")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after this long (default: until Ctrl-C; headless: once the scenario has "
                             "played out)")
    parser.add_argument("--headless", action="store_true",
                        help="no live view: progress lines and a summary; exit 0 when the service scaled out "
                             "under load and back in after it, with no failed inference")
    parser.add_argument("--rate", type=float, default=DemoSettings.rate, metavar="R",
                        help="base load in inferences per second; the peak is three times this "
                             f"(default {DemoSettings.rate:g})")
    parser.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    parser.add_argument("--work-dir", type=Path,
                        help="logs, model repository and Prometheus data (default: a temporary directory)")
    parser.set_defaults(func=run_from_args)


def run_from_args(args: Any) -> int:
    if args.rate <= 0 or (args.duration is not None and args.duration <= 0):
        print("error: --rate and --duration must be positive", flush=True)
        return 2
    settings = DemoSettings(profile=args.profile, kubeconfig=args.kubeconfig, duration_s=args.duration,
                            headless=args.headless, rate=args.rate, prometheus=not args.no_prometheus,
                            work_dir=args.work_dir.resolve() if args.work_dir else None)
    try:
        import rich  # noqa: F401  the live view
    except ModuleNotFoundError:
        print("error: the demo needs packages that are not installed (rich): pip install 'trireme[devcluster]'",
              flush=True)
        return 2
    return main(settings, verbose=bool(getattr(args, "verbose", False)))
