"""What the demo shows: the cluster as a few plain records, and how they are drawn.

The demo reads nodes, pods, InferenceServices and Events from the API server; this
module turns those objects into small frozen records (``Frame``) and draws a frame
with rich: nodes × GPUs with the replica holding each GPU (one colour per service),
the services and their replicas, what the autoscaler decided and why (from the
service's status), the load generator's rate and latency, Triton's own figures from
Prometheus, and the latest Events. Building and drawing are pure
functions of their inputs, so a frame renders the same in the live terminal, in a
test, or in a recorded console.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from trireme.loadgen import LoadSnapshot

GPU_ANNOTATION = "trireme.io/gpus"
SERVICE_LABEL = "serving.trireme.io/service"
SERVING_LABEL = "serving.trireme.io/serving"
"""The autoscaler turns this pod label "false" to take a replica out of the Service before deleting it."""
PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_green", "bright_magenta")
MAX_NODE_ROWS = 16
MAX_REPLICA_ROWS = 16
EVENT_ROWS = 8


@dataclass(frozen=True)
class NodeView:
    name: str
    gpus: int
    product: str = ""
    ready: bool = True
    schedulable: bool = True


@dataclass(frozen=True)
class ReplicaView:
    """One pod: of an InferenceService when ``service`` is set, else any pod holding GPUs."""

    name: str
    service: str
    state: str
    """Pending, Unschedulable, Starting, Running, Ready, Draining or Terminating."""
    node: str | None = None
    gpus: tuple[int, ...] = ()
    ip: str | None = None
    message: str = ""
    restarts: int = 0


@dataclass(frozen=True)
class AutoscalerView:
    """A service's ``spec.autoscaling`` and the latest decision in ``status.autoscaler``."""

    min_replicas: int
    max_replicas: int
    signal: str
    target: float | None = None
    latency_slo_ms: int | None = None
    action: str = ""
    """scale-up, scale-down, steady or hold; empty before the first decision."""
    reason: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    """status.autoscaler.metrics: requestRate, queueTimeMilliseconds, pendingRequests, neededReplicas..."""
    draining: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceView:
    name: str
    desired: int
    """status.desiredReplicas once the operator wrote it (the autoscaler's count), else spec.replicas."""
    replicas: int
    ready: int
    gpus_per_replica: int | None = None
    problem: str = ""
    """Why it is not all ready or placed (the Scheduled condition's message), if anything is wrong."""
    autoscaler: AutoscalerView | None = None
    """Set when ``spec.autoscaling`` is enabled."""


@dataclass(frozen=True)
class EventView:
    at: datetime | None
    type: str
    reason: str
    object: str
    message: str
    count: int = 1
    sequence: int = 0
    """The Event's resourceVersion: orders Events written within the same second."""


@dataclass(frozen=True)
class TritonFigures:
    """Per-pod figures Triton reports through Prometheus: inference rate and queue time."""

    rate: Mapping[str, float] = field(default_factory=dict)
    queue_ms: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterView:
    nodes: tuple[NodeView, ...] = ()
    services: tuple[ServiceView, ...] = ()
    replicas: tuple[ReplicaView, ...] = ()
    events: tuple[EventView, ...] = ()

    def service(self, name: str) -> ServiceView | None:
        return next((s for s in self.services if s.name == name), None)

    def replicas_of(self, service: str) -> list[ReplicaView]:
        return [r for r in self.replicas if r.service == service]

    @classmethod
    def from_objects(cls, nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]],
                     services: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]]) -> ClusterView:
        """The view of API objects as the API server returns them (dicts)."""
        return cls(nodes=tuple(sorted((_node(n) for n in nodes), key=lambda n: n.name)),
                   services=tuple(sorted((_service(s) for s in services), key=lambda s: s.name)),
                   replicas=tuple(sorted((_replica(p) for p in pods if _shown(p)),
                                         key=lambda r: (r.service, _natural(r.name)))),
                   events=tuple(sorted((_event(e) for e in events), key=_event_order)))


@dataclass(frozen=True)
class Frame:
    """Everything one screen shows."""

    cluster: ClusterView
    elapsed_s: float = 0.0
    step: str = ""
    """What the scenario is doing or waiting for."""
    follow: str = ""
    """The command that shows the same cluster from another terminal."""
    load: LoadSnapshot | None = None
    triton: TritonFigures | None = None
    prometheus_problem: str | None = None
    """Why Triton's figures are missing (Prometheus not running), if they are."""
    notes: tuple[str, ...] = ()


# -- from API objects ---------------------------------------------------------------------------------


def _node(obj: Mapping[str, Any]) -> NodeView:
    labels = obj["metadata"].get("labels") or {}
    capacity = (obj.get("status") or {}).get("capacity") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in (obj.get("status") or {}).get("conditions") or [])
    return NodeView(name=obj["metadata"]["name"], gpus=int(capacity.get("nvidia.com/gpu", 0) or 0),
                    product=labels.get("nvidia.com/gpu.product", ""), ready=ready,
                    schedulable=not (obj.get("spec") or {}).get("unschedulable"))


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


def _shown(pod: Mapping[str, Any]) -> bool:
    return bool((pod["metadata"].get("labels") or {}).get(SERVICE_LABEL)
                or (pod["metadata"].get("annotations") or {}).get(GPU_ANNOTATION))


def _replica(pod: Mapping[str, Any]) -> ReplicaView:
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    node = spec.get("nodeName")
    scheduled = _condition(pod, "PodScheduled")
    message = ""
    if meta.get("deletionTimestamp"):
        state = "Terminating"
    elif (meta.get("labels") or {}).get(SERVING_LABEL) == "false":
        state = "Draining"
    elif not node:
        unschedulable = scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
        state = "Unschedulable" if unschedulable else "Pending"
        message = scheduled.get("message", "") if unschedulable else ""
    elif _condition(pod, "Ready").get("status") == "True":
        state = "Ready"
    elif status.get("phase") == "Running":
        state = "Running"
    else:
        state = "Starting"
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] != "ContainerCreating":
            message = f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    gpus = tuple(int(i) for i in str((meta.get("annotations") or {}).get(GPU_ANNOTATION, "")).split(",")
                 if i.strip().isdigit()) if node else ()
    restarts = sum(int(cs.get("restartCount", 0)) for cs in status.get("containerStatuses") or [])
    return ReplicaView(name=meta["name"], service=(meta.get("labels") or {}).get(SERVICE_LABEL, ""), state=state,
                       node=node, gpus=gpus, ip=status.get("podIP"), message=message, restarts=restarts)


def _service(obj: Mapping[str, Any]) -> ServiceView:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    scheduled, ready = _condition(obj, "Scheduled"), _condition(obj, "Ready")
    problem = ""
    if scheduled.get("status") == "False" and scheduled.get("reason") in ("Unschedulable", "InsufficientGPUs"):
        problem = scheduled.get("message", "")
    elif ready.get("status") == "False" and ready.get("reason") == "InvalidSpec":
        problem = ready.get("message", "")
    desired = status.get("desiredReplicas")
    return ServiceView(name=obj["metadata"]["name"],
                       desired=int((spec.get("replicas", 0) if desired is None else desired) or 0),
                       replicas=int(status.get("replicas", 0) or 0), ready=int(status.get("readyReplicas", 0) or 0),
                       gpus_per_replica=(spec.get("gpus") or {}).get("count"), problem=problem,
                       autoscaler=autoscaler_view(spec.get("autoscaling") or {}, status.get("autoscaler") or {}))


def autoscaler_view(spec: Mapping[str, Any], status: Mapping[str, Any]) -> AutoscalerView | None:
    """A service's ``spec.autoscaling`` and ``status.autoscaler`` (dicts); None when autoscaling is off."""
    if not spec.get("enabled"):
        return None
    low = int(spec.get("minReplicas", 1) or 1)
    metrics = {str(k): float(v) for k, v in (status.get("metrics") or {}).items() if isinstance(v, (int, float))}
    return AutoscalerView(min_replicas=low, max_replicas=int(spec.get("maxReplicas") or low),
                          signal=str(spec.get("signal") or "queueTime"), target=spec.get("target"),
                          latency_slo_ms=spec.get("latencySLOMilliseconds"), action=str(status.get("action") or ""),
                          reason=str(status.get("reason") or ""), metrics=metrics,
                          draining=tuple(status.get("draining") or ()))


def _event(obj: Mapping[str, Any]) -> EventView:
    involved = obj.get("involvedObject") or {}
    stamp = obj.get("lastTimestamp") or obj.get("eventTime") or obj["metadata"].get("creationTimestamp")
    kind = str(involved.get("kind", ""))
    short = {"InferenceService": "tis", "Pod": "pod"}.get(kind, kind.lower())
    version = str(obj["metadata"].get("resourceVersion") or "")
    return EventView(at=_parse_time(stamp), type=obj.get("type") or "Normal", reason=obj.get("reason") or "",
                     object=f"{short}/{involved.get('name', '')}", message=obj.get("message") or "",
                     count=int(obj.get("count") or 1), sequence=int(version) if version.isdigit() else 0)


def _parse_time(stamp: Any) -> datetime | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None


def _event_order(event: EventView) -> tuple[datetime, int, str]:
    return (event.at or datetime.min.replace(tzinfo=timezone.utc), event.sequence, event.reason)


def _natural(name: str) -> tuple[Any, ...]:
    """``simple-r10`` after ``simple-r9``."""
    head, _, tail = name.rpartition("-r")
    return (head, int(tail)) if tail.isdigit() else (name, -1)


# -- drawing ----------------------------------------------------------------------------------------------


def colours(services: Iterable[str]) -> dict[str, str]:
    """One colour per service, stable for a given set of names."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(services)))}


STATE_STYLES = {"Ready": "bold green", "Running": "yellow", "Starting": "yellow", "Pending": "dim",
                "Unschedulable": "bold red", "Draining": "cyan", "Terminating": "magenta"}
ACTION_STYLES = {"scale-up": "bold green", "scale-down": "bold cyan", "steady": "", "hold": "bold yellow"}
EVENT_STYLES = {"ScaledUp": "bold green", "ScaledDown": "bold cyan", "Drained": "cyan", "InsufficientGPUs": "bold red",
                "MetricsUnavailable": "bold red", "MetricsAvailable": "green"}
"""The autoscaler's Events stand out among the scheduling ones."""
SIGNALS = {"requestRate": ("request rate", "/s per replica"), "queueTime": ("queue time", " ms"),
           "pendingRequests": ("pending requests", " per replica"), "gpuUtilization": ("GPU utilisation", " %")}
METRICS = (("requestRate", "{:.1f} req/s"), ("queueTimeMilliseconds", "queue {:.1f} ms"),
           ("computeTimeMilliseconds", "compute {:.1f} ms"), ("pendingRequests", "pending {:g}"),
           ("signalValue", "signal {:.2f}"), ("neededReplicas", "needs {:g}"))
"""status.autoscaler.metrics as the view prints them, in this order."""


def render(frame: Frame) -> RenderableType:
    """The whole screen for ``frame``."""
    names = [s.name for s in frame.cluster.services] + [r.service or r.name for r in frame.cluster.replicas]
    palette = colours(names)
    parts: list[RenderableType] = [_header(frame), _gpus(frame.cluster, palette), _services(frame.cluster, palette)]
    if any(s.autoscaler for s in frame.cluster.services):
        parts.append(_autoscalers(frame.cluster, palette))
    parts += [_replicas(frame, palette), _load(frame), _events(frame.cluster)]
    return Group(*parts)


def _header(frame: Frame) -> RenderableType:
    minutes, seconds = divmod(int(frame.elapsed_s), 60)
    text = Text.assemble(("Trireme demo", "bold"), f"  {minutes:02d}:{seconds:02d}  ",
                         ("scenario: ", "dim"), frame.step or "-")
    if frame.follow:
        text.append("\nfollow along: ", style="dim")
        text.append(frame.follow)
    for note in frame.notes:
        text.append(f"\n{note}", style="yellow")
    text.append("\nCtrl-C stops everything", style="dim")
    return Panel(text, border_style="blue")


def _gpus(cluster: ClusterView, palette: Mapping[str, str]) -> RenderableType:
    holders: dict[tuple[str, int], list[ReplicaView]] = {}
    for replica in cluster.replicas:
        if replica.node:
            for index in replica.gpus:
                holders.setdefault((replica.node or "", index), []).append(replica)
    width = max((n.gpus for n in cluster.nodes), default=0)
    table = Table(box=None, padding=(0, 1), show_edge=False, pad_edge=False)
    table.add_column("node", no_wrap=True)
    table.add_column("GPU product", no_wrap=True, style="dim")
    for index in range(width):
        table.add_column(str(index), justify="center", no_wrap=True, min_width=3)
    busy = [n for n in cluster.nodes if any((n.name, i) in holders for i in range(n.gpus))]
    idle = [n for n in cluster.nodes if n not in busy]
    shown = (busy + idle)[:MAX_NODE_ROWS]
    for node in sorted(shown, key=lambda n: n.name):
        name = Text(node.name, style="" if node.ready and node.schedulable else "red")
        if not node.ready:
            name.append(" NotReady", style="red")
        elif not node.schedulable:
            name.append(" cordoned", style="red")
        cells: list[Text] = []
        for index in range(width):
            if index >= node.gpus:
                cells.append(Text(""))
                continue
            held = holders.get((node.name, index), [])
            if not held:
                cells.append(Text("·", style="dim"))
                continue
            first = held[0]
            label = _replica_label(first) + ("+" if len(held) > 1 else "")
            style = palette.get(first.service or first.name, "white")
            cells.append(Text(label, style=f"{style} reverse" if first.state == "Ready" else style))
        table.add_row(name, node.product or "-", *cells)
    hidden = len(cluster.nodes) - len(shown)
    if not cluster.nodes:
        table.add_row(Text("no nodes", style="dim"))
    used = sum(len(r.gpus) for r in cluster.replicas if r.node)
    total = sum(n.gpus for n in cluster.nodes)
    title = f"GPUs  {used}/{total} held" + (f"  ({hidden} idle nodes not shown)" if hidden > 0 else "")
    legend = Text("  ".join(f"■ {name}" for name in palette) + "   (filled: replica ready)", style="dim")
    for name, colour in palette.items():
        legend.highlight_words([f"■ {name}"], style=colour)
    return Panel(Group(table, legend), title=title, title_align="left", border_style="blue")


def _replica_label(replica: ReplicaView) -> str:
    head, _, tail = replica.name.rpartition("-r")
    return f"r{tail}" if head == replica.service and tail else replica.name[:6]


def _services(cluster: ClusterView, palette: Mapping[str, str]) -> RenderableType:
    table = Table(box=None, padding=(0, 1), show_edge=False, pad_edge=False)
    for column in ("service", "ready/desired", "scaling", "GPUs each", "problem"):
        table.add_column(column, no_wrap=column != "problem")
    for service in cluster.services:
        ready_style = "green" if service.ready >= service.desired > 0 else "yellow"
        auto = service.autoscaler
        table.add_row(Text(service.name, style=palette.get(service.name, "")),
                      Text(f"{service.ready}/{service.desired}", style=ready_style),
                      f"autoscaler {auto.min_replicas}-{auto.max_replicas}" if auto else "spec.replicas",
                      "-" if service.gpus_per_replica is None else str(service.gpus_per_replica),
                      Text(service.problem, style="red"))
    if not cluster.services:
        table.add_row(Text("no InferenceServices yet", style="dim"))
    return Panel(table, title="InferenceServices", title_align="left", border_style="blue")


def objective(auto: AutoscalerView) -> str:
    """What the autoscaler holds the service to: ``request rate, target 12/s per replica; latency under 100 ms``."""
    name, unit = SIGNALS.get(auto.signal, (auto.signal, ""))
    text = f"{name}, target {auto.target:g}{unit}" if auto.target is not None else f"{name}, default target"
    return text + (f"; mean latency under {auto.latency_slo_ms} ms" if auto.latency_slo_ms else "")


def metrics_text(metrics: Mapping[str, float]) -> str:
    """``28.1 req/s · queue 250.0 ms · ... · needs 3``: the figures behind a decision."""
    return " · ".join(form.format(metrics[key]) for key, form in METRICS if key in metrics) or "-"


def _autoscalers(cluster: ClusterView, palette: Mapping[str, str]) -> RenderableType:
    table = Table(box=None, padding=(0, 1), show_edge=False, pad_edge=False, show_header=False)
    table.add_column("label", no_wrap=True, style="dim")
    table.add_column("value", overflow="fold")
    for service in cluster.services:
        auto = service.autoscaler
        if auto is None:
            continue
        decision = Text()
        decision.append(service.name, style=f"bold {palette.get(service.name, '')}".strip())
        if auto.action:
            decision.append(f"  {auto.action}", style=ACTION_STYLES.get(auto.action, ""))
            decision.append(f" → desiredReplicas {service.desired}")
        else:
            decision.append("  no decision yet (it needs two readings of Triton's metrics)", style="dim")
        table.add_row("decision", decision)
        table.add_row("rule", Text(f"{auto.min_replicas}-{auto.max_replicas} replicas, {objective(auto)}",
                                   style="dim"))
        if auto.reason:
            table.add_row("why", auto.reason)
            table.add_row("metrics", metrics_text(auto.metrics))
        if auto.draining:
            table.add_row("draining", Text(", ".join(auto.draining), style="cyan"))
    return Panel(table, title="Autoscaler (status.autoscaler)", title_align="left", border_style="blue")


def _replicas(frame: Frame, palette: Mapping[str, str]) -> RenderableType:
    cluster, triton = frame.cluster, frame.triton
    table = Table(box=None, padding=(0, 1), show_edge=False, pad_edge=False)
    for column in ("replica", "state", "node", "GPUs", "pod IP", "Triton req/s", "queue ms", ""):
        table.add_column(column, no_wrap=column != "", justify="right" if column in ("Triton req/s", "queue ms")
                         else "left")
    for replica in cluster.replicas[:MAX_REPLICA_ROWS]:
        rate = triton.rate.get(replica.name) if triton else None
        queue = triton.queue_ms.get(replica.name) if triton else None
        note = replica.message or (f"{replica.restarts} restarts" if replica.restarts else "")
        table.add_row(Text(replica.name, style=palette.get(replica.service or replica.name, "")),
                      Text(replica.state, style=STATE_STYLES.get(replica.state, "")), replica.node or "-",
                      ",".join(map(str, replica.gpus)) or "-", replica.ip or "-",
                      "-" if rate is None else f"{rate:.1f}", "-" if queue is None else f"{queue:.1f}",
                      Text(note, style="red" if replica.state == "Unschedulable" else "dim", overflow="fold"))
    hidden = len(cluster.replicas) - MAX_REPLICA_ROWS
    if hidden > 0:
        table.add_row(Text(f"… {hidden} more", style="dim"))
    if not cluster.replicas:
        table.add_row(Text("no replicas yet", style="dim"))
    return Panel(table, title="Replicas", title_align="left", border_style="blue")


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _load(frame: Frame) -> RenderableType:
    load = frame.load
    text = Text()
    if load is None:
        text.append("load generator not started", style="dim")
    else:
        text.append("load  ", style="bold")
        text.append(f"target {load.target_rate:.0f} req/s   sent {load.rate:.1f} req/s   "
                    f"p50 {_fmt_ms(load.p50_ms)}   p99 {_fmt_ms(load.p99_ms)}   "
                    f"endpoints {load.endpoints}\n")
        text.append("total ", style="bold")
        text.append(f"{load.succeeded} ok   ")
        text.append(f"{load.failed} failed", style="red" if load.failed else "")
        text.append(f"   {load.retried} retried on another replica   "
                    f"p50 {_fmt_ms(load.total_p50_ms)}   p99 {_fmt_ms(load.total_p99_ms)}")
        if load.last_error:
            text.append(f"\nlast error: {load.last_error}", style="red")
    text.append("\n")
    if frame.prometheus_problem:
        text.append(f"Triton metrics: {frame.prometheus_problem}", style="yellow")
    elif frame.triton is not None:
        total = sum(frame.triton.rate.values())
        text.append("Triton (Prometheus) ", style="bold")
        text.append(f"{total:.1f} inferences/s over {len(frame.triton.rate)} replicas "
                    "(nv_inference_request_success)")
    else:
        text.append("Triton metrics: waiting for Prometheus", style="dim")
    return Panel(text, title="Traffic", title_align="left", border_style="blue")


def _events(cluster: ClusterView) -> RenderableType:
    table = Table(box=None, padding=(0, 1), show_edge=False, pad_edge=False)
    for column in ("time", "type", "reason", "object", "message"):
        table.add_column(column, no_wrap=column != "message")
    for event in cluster.events[-EVENT_ROWS:]:
        stamp = event.at.astimezone().strftime("%H:%M:%S") if event.at else "-"
        count = f" (×{event.count})" if event.count > 1 else ""
        table.add_row(stamp, Text(event.type, style="red" if event.type == "Warning" else "dim"),
                      Text(event.reason, style=EVENT_STYLES.get(event.reason, "")), event.object,
                      Text(event.message + count, overflow="fold"))
    if not cluster.events:
        table.add_row(Text("no events yet", style="dim"))
    return Panel(table, title="Recent events", title_align="left", border_style="blue")


def summary_lines(cluster: ClusterView) -> Sequence[str]:
    """Placements as plain lines: ``simple-r0  dgx-0  GPUs 0`` (for the headless summary)."""
    return [f"{r.name:<16} {r.state:<13} {r.node or '-':<12} GPUs {','.join(map(str, r.gpus)) or '-'}"
            for r in cluster.replicas]


__all__ = ["AutoscalerView", "ClusterView", "EventView", "Frame", "NodeView", "ReplicaView", "ServiceView",
           "TritonFigures", "autoscaler_view", "colours", "metrics_text", "objective", "render", "summary_lines"]
