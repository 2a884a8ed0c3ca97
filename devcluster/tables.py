"""``kubectl get`` output: meta.k8s.io/v1 Table objects, as kube-apiserver's printers build them.

kubectl asks for ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and
prints the columns the server returns, so what ``kubectl get pods`` shows is
decided here. The server always fills the wide (priority 1) columns; kubectl
shows them with ``-o wide``. Column sets and cell rules follow kube-apiserver's
built-in printers (a pod's Status is its phase unless a container says
CrashLoopBackOff, ContainerCreating, Terminating...). Custom resources use their
CRD version's ``additionalPrinterColumns`` (a JSONPath subset) after Name.
Ages read like kubectl's ``HumanDuration`` (``5s``, ``3m2s``, ``2d3h``) against
a ``now`` passed in, so tables are testable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from . import errors

__all__ = [
    "CREATION_TIMESTAMP_DESCRIPTION",
    "Column",
    "NAME_DESCRIPTION",
    "TablePrinter",
    "age",
    "human_duration",
    "jsonpath_values",
    "printer_for",
    "to_table",
]

NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources may "
    "allow a client to request the generation of an appropriate name automatically. Name is primarily intended "
    "for creation idempotence and configuration definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names")
CREATION_TIMESTAMP_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not "
    "guaranteed to be set in happens-before order across separate operations. Clients may not set this value. "
    "It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. "
    "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata")

Obj = dict[str, Any]


@dataclass(frozen=True)
class Column:
    """A TableColumnDefinition; priority 1 columns are the ``-o wide`` ones."""

    name: str
    type: str = "string"
    description: str = ""
    priority: int = 0
    format: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description, "priority": self.priority}


NAME = Column("Name", format="name", description=NAME_DESCRIPTION)
AGE = Column("Age", description=CREATION_TIMESTAMP_DESCRIPTION)


# -- time ---------------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """kubectl's ``duration.HumanDuration``: coarse, two units at most."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 60 * 2:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime; None when absent, zero or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    if parsed.year <= 1:
        return None
    return parsed


def age(timestamp: Any, now: datetime) -> str:
    """``translateTimestampSince``: ``<unknown>`` without a timestamp, else how long ago."""
    when = parse_time(timestamp)
    if when is None:
        return "<unknown>"
    return human_duration((now - when).total_seconds())


def _rfc3339(timestamp: Any) -> str:
    when = parse_time(timestamp)
    if when is None:
        return "0001-01-01T00:00:00Z"
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- small helpers the printers share --------------------------------------------------------------


def _get(obj: Any, *path: str | int) -> Any:
    for part in path:
        if isinstance(part, int):
            obj = obj[part] if isinstance(obj, list) and -len(obj) <= part < len(obj) else None
        else:
            obj = obj.get(part) if isinstance(obj, dict) else None
        if obj is None:
            return None
    return obj


def _dict(value: Any) -> Obj:
    """A mapping field, or an empty one when it is absent or not a mapping."""
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[Obj]:
    """The mapping items of a list field (an absent or malformed list has none)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _strings(value: Any) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _name(obj: Obj) -> str:
    return _meta(obj).get("name", "")


def _obj_age(obj: Obj, now: datetime) -> str:
    return age(_meta(obj).get("creationTimestamp"), now)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def format_labels(labels: dict[str, Any] | None) -> str:
    """``labels.FormatLabels``: sorted ``k=v`` pairs, or ``<none>``."""
    if not labels:
        return "<none>"
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def selector_string(selector: dict[str, Any] | None) -> str:
    """A LabelSelector the way ``labels.Selector.String()`` prints it (requirements sorted by key)."""
    if not isinstance(selector, dict):
        return ""
    requirements: list[tuple[str, str]] = []
    for key, value in _dict(selector.get("matchLabels")).items():
        requirements.append((key, f"{key}={value}"))
    for expr in _dicts(selector.get("matchExpressions")):
        key, op = expr.get("key", ""), expr.get("operator", "")
        values = ",".join(sorted(_strings(expr.get("values"))))
        text = {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                "Exists": key, "DoesNotExist": f"!{key}"}.get(op, key)
        requirements.append((key, text))
    return ",".join(text for _, text in sorted(requirements, key=lambda r: r[0]))


def _containers_and_images(pod_spec: Any) -> list[str]:
    containers = _dicts(_get(pod_spec, "containers"))
    return [",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)]


def _int_or_string(value: Any) -> str:
    return str(value) if value is not None else "N/A"


# -- pods --------------------------------------------------------------------------------------------


def _is_restartable_init(container: Any) -> bool:
    return isinstance(container, dict) and container.get("restartPolicy") == "Always"


def _condition_true(status: Obj, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in _dicts(status.get("conditions")))


def _later(current: datetime | None, candidate: Any) -> datetime | None:
    when = parse_time(candidate)
    if when is not None and (current is None or when > current):
        return when
    return current


@dataclass
class _PodState:
    """What printPod accumulates while it reads container statuses."""

    reason: str
    restarts: int = 0
    ready: int = 0
    last_restart: datetime | None = None


def _init_reason(pod: Obj, state: _PodState, init_specs: dict[str, Obj]) -> bool:
    """Walk init container statuses; True while the pod is still initializing."""
    status = _dict(pod.get("status"))
    sidecar_restarts, sidecar_last = 0, None
    initializing = False
    total_init = len(_dicts(_get(pod, "spec", "initContainers")))
    for i, container in enumerate(_dicts(status.get("initContainerStatuses"))):
        state.restarts += _int(container.get("restartCount"))
        finished = _get(container, "lastState", "terminated", "finishedAt")
        state.last_restart = _later(state.last_restart, finished)
        restartable = _is_restartable_init(init_specs.get(container.get("name", "")))
        if restartable:
            sidecar_restarts += _int(container.get("restartCount"))
            sidecar_last = _later(sidecar_last, finished)
        terminated = _get(container, "state", "terminated")
        waiting = _get(container, "state", "waiting")
        if terminated is not None and _int(terminated.get("exitCode")) == 0:
            continue
        if restartable and container.get("started"):
            if container.get("ready"):
                state.ready += 1
            continue
        if terminated is not None:
            if terminated.get("reason"):
                state.reason = "Init:" + terminated["reason"]
            elif _int(terminated.get("signal")):
                state.reason = f"Init:Signal:{terminated['signal']}"
            else:
                state.reason = f"Init:ExitCode:{_int(terminated.get('exitCode'))}"
        elif waiting is not None and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            state.reason = "Init:" + waiting["reason"]
        else:
            state.reason = f"Init:{i}/{total_init}"
        initializing = True
        break
    if not initializing or _condition_true(status, "Initialized"):
        state.restarts, state.last_restart = sidecar_restarts, sidecar_last
        return False
    return True


def _container_reason(pod: Obj, state: _PodState) -> None:
    """Container statuses, last to first, as printPod reads them."""
    status = _dict(pod.get("status"))
    has_running = False
    for container in reversed(_dicts(status.get("containerStatuses"))):
        state.restarts += _int(container.get("restartCount"))
        state.last_restart = _later(state.last_restart, _get(container, "lastState", "terminated", "finishedAt"))
        waiting = _get(container, "state", "waiting")
        terminated = _get(container, "state", "terminated")
        if waiting is not None and waiting.get("reason"):
            state.reason = waiting["reason"]
        elif terminated is not None and terminated.get("reason"):
            state.reason = terminated["reason"]
        elif terminated is not None:
            signal = _int(terminated.get("signal"))
            state.reason = f"Signal:{signal}" if signal else f"ExitCode:{_int(terminated.get('exitCode'))}"
        elif container.get("ready") and _get(container, "state", "running") is not None:
            has_running = True
            state.ready += 1
    if state.reason == "Completed" and has_running:
        state.reason = "Running" if _condition_true(status, "Ready") else "NotReady"


def pod_status(pod: Obj) -> tuple[str, int, int, datetime | None]:
    """(Status column, ready containers, restarts, last restart) for a pod, as ``kubectl get pods`` shows them."""
    status = _dict(pod.get("status"))
    phase = status.get("phase") or ""
    state = _PodState(reason=status.get("reason") or phase)
    for condition in _dicts(status.get("conditions")):
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            state.reason = "SchedulingGated"
    init_specs = {c.get("name", ""): c for c in _dicts(_get(pod, "spec", "initContainers"))}
    if not _init_reason(pod, state, init_specs):
        _container_reason(pod, state)
    deleting = bool(_meta(pod).get("deletionTimestamp"))
    if deleting and status.get("reason") == "NodeLost":
        state.reason = "Unknown"
    elif deleting and phase not in ("Succeeded", "Failed"):
        state.reason = "Terminating"
    return state.reason, state.ready, state.restarts, state.last_restart


def _pod_cells(pod: Obj, now: datetime) -> list[Any]:
    reason, ready, restarts, last_restart = pod_status(pod)
    spec, status = _dict(pod.get("spec")), _dict(pod.get("status"))
    total = len(_dicts(spec.get("containers"))) + sum(
        1 for c in _dicts(spec.get("initContainers")) if _is_restartable_init(c))
    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    pod_ip = (_get(status, "podIPs", 0, "ip") or status.get("podIP") or "<none>")
    gates = _dicts(spec.get("readinessGates"))
    gates_text = "<none>"
    if gates:
        true = sum(1 for gate in gates if _condition_true(status, gate.get("conditionType", "")))
        gates_text = f"{true}/{len(gates)}"
    return [_name(pod), f"{ready}/{total}", reason, restarts_text, _obj_age(pod, now),
            pod_ip, spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>", gates_text]


def _pod_conditions(pod: Obj) -> list[dict[str, Any]]:
    phase = _get(pod, "status", "phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded",
                 "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]
    return []


# -- nodes ---------------------------------------------------------------------------------------


def node_status(node: Obj) -> str:
    """``Ready``, ``NotReady``, ``Unknown``, with ``,SchedulingDisabled`` when cordoned."""
    ready = [c for c in _dicts(_get(node, "status", "conditions")) if c.get("type") == "Ready"]
    status = ["Ready" if ready[-1].get("status") == "True" else "NotReady"] if ready else ["Unknown"]
    if _get(node, "spec", "unschedulable"):
        status.append("SchedulingDisabled")
    return ",".join(status)


def node_roles(node: Obj) -> str:
    roles = set()
    for key, value in _dict(_meta(node).get("labels")).items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key[len("node-role.kubernetes.io/"):]
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(roles)) or "<none>"


def _node_address(node: Obj, kind: str) -> str:
    for address in _dicts(_get(node, "status", "addresses")):
        if address.get("type") == kind:
            return address.get("address", "")
    return "<none>"


def _node_cells(node: Obj, now: datetime) -> list[Any]:
    info = _dict(_get(node, "status", "nodeInfo"))
    return [_name(node), node_status(node), node_roles(node), _obj_age(node, now), info.get("kubeletVersion", ""),
            _node_address(node, "InternalIP"), _node_address(node, "ExternalIP"),
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


# -- services and endpoints ----------------------------------------------------------------------------


def _service_external_ip(svc: Obj) -> str:
    spec = _dict(svc.get("spec"))
    kind = spec.get("type") or "ClusterIP"
    external = _strings(spec.get("externalIPs"))
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if kind == "LoadBalancer":
        ingress = _dicts(_get(svc, "status", "loadBalancer", "ingress"))
        addresses = [i.get("ip") or i.get("hostname") or "" for i in ingress]
        addresses = [a for a in addresses if a] + list(external)
        return ",".join(addresses) if addresses else "<pending>"
    if kind == "ExternalName":
        return spec.get("externalName", "")
    return "<unknown>"


def _service_ports(ports: Iterable[Obj]) -> str:
    pieces = []
    for port in ports:
        protocol = port.get("protocol") or "TCP"
        if _int(port.get("nodePort")) > 0:
            pieces.append(f"{port.get('port')}:{port['nodePort']}/{protocol}")
        else:
            pieces.append(f"{port.get('port')}/{protocol}")
    return ",".join(pieces) or "<none>"


def _service_cells(svc: Obj, now: datetime) -> list[Any]:
    spec = _dict(svc.get("spec"))
    cluster_ip = (spec.get("clusterIPs") or [spec.get("clusterIP")])[0] or "<none>"
    return [_name(svc), spec.get("type") or "ClusterIP", cluster_ip, _service_external_ip(svc),
            _service_ports(_dicts(spec.get("ports"))), _obj_age(svc, now), format_labels(spec.get("selector"))]


def format_endpoints(endpoints: Obj, limit: int = 3) -> str:
    """Up to three ``ip:port`` addresses, then ``+ N more...``."""
    subsets = _dicts(endpoints.get("subsets"))
    if not subsets:
        return "<none>"
    shown: list[str] = []
    count, more = 0, False
    for subset in subsets:
        addresses = _dicts(subset.get("addresses"))
        ports = subset.get("ports") or [None]
        for port in ports:
            count += len(addresses)
            for address in addresses:
                if len(shown) == limit:
                    more = True
                    break
                ip = address.get("ip", "")
                if port is None:
                    shown.append(ip)
                else:
                    host = f"[{ip}]" if ":" in ip else ip
                    shown.append(f"{host}:{port.get('port')}")
    text = ",".join(shown)
    return f"{text} + {count - limit} more..." if more else text


# -- everything else ---------------------------------------------------------------------------------------


def _deployment_cells(obj: Obj, now: datetime) -> list[Any]:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    desired = spec.get("replicas", 1)
    return [_name(obj), f"{_int(status.get('readyReplicas'))}/{_int(desired)}", _int(status.get("updatedReplicas")),
            _int(status.get("availableReplicas")), _obj_age(obj, now),
            *_containers_and_images(_get(spec, "template", "spec")), selector_string(spec.get("selector"))]


def _replicaset_cells(obj: Obj, now: datetime) -> list[Any]:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    return [_name(obj), _int(spec.get("replicas", 1)), _int(status.get("replicas")),
            _int(status.get("readyReplicas")), _obj_age(obj, now),
            *_containers_and_images(_get(spec, "template", "spec")), selector_string(spec.get("selector"))]


def _statefulset_cells(obj: Obj, now: datetime) -> list[Any]:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    return [_name(obj), f"{_int(status.get('readyReplicas'))}/{_int(spec.get('replicas', 1))}", _obj_age(obj, now),
            *_containers_and_images(_get(spec, "template", "spec"))]


def _daemonset_cells(obj: Obj, now: datetime) -> list[Any]:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    return [_name(obj), _int(status.get("desiredNumberScheduled")), _int(status.get("currentNumberScheduled")),
            _int(status.get("numberReady")), _int(status.get("updatedNumberScheduled")),
            _int(status.get("numberAvailable")), format_labels(_get(spec, "template", "spec", "nodeSelector")),
            _obj_age(obj, now), *_containers_and_images(_get(spec, "template", "spec")),
            selector_string(spec.get("selector"))]


def _event_time(event: Obj, *keys: str) -> Any:
    return next((event[k] for k in keys if event.get(k)), None)


def _event_cells(event: Obj, now: datetime) -> list[Any]:
    first_seen = _event_time(event, "firstTimestamp", "deprecatedFirstTimestamp")
    first = age(first_seen, now) if first_seen else age(event.get("eventTime"), now)
    last_seen = _event_time(event, "lastTimestamp", "deprecatedLastTimestamp")
    last = age(last_seen, now) if last_seen else first
    count = _int(event.get("count") or event.get("deprecatedCount"))
    series = event.get("series")
    if isinstance(series, dict):
        last = age(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1
    involved = _dict(event.get("involvedObject") or event.get("regarding"))
    kind = str(involved.get("kind", "")).lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = _dict(event.get("source") or event.get("deprecatedSource"))
    component = source.get("component") or event.get("reportingController") or ""
    host = source.get("host") or event.get("reportingInstance") or ""
    message = event.get("message") if event.get("message") is not None else event.get("note", "")
    return [last, event.get("type", ""), event.get("reason", ""), target, involved.get("fieldPath", ""),
            f"{component}, {host}" if host else component, str(message or "").strip(), first, count, _name(event)]


def _pdb_cells(obj: Obj, now: datetime) -> list[Any]:
    spec = _dict(obj.get("spec"))
    return [_name(obj), _int_or_string(spec.get("minAvailable")), _int_or_string(spec.get("maxUnavailable")),
            _int(_get(obj, "status", "disruptionsAllowed")), _obj_age(obj, now)]


def _binding_cells(obj: Obj, now: datetime) -> list[Any]:
    subjects = _dicts(obj.get("subjects"))
    ref = _dict(obj.get("roleRef"))

    def names(kind: str) -> str:
        chosen = [s for s in subjects if s.get("kind") == kind]
        if kind == "ServiceAccount":
            return ",".join(f"{s.get('namespace', '')}/{s.get('name', '')}" for s in chosen)
        return ",".join(s.get("name", "") for s in chosen)

    return [_name(obj), f"{ref.get('kind', '')}/{ref.get('name', '')}", _obj_age(obj, now),
            names("User"), names("Group"), names("ServiceAccount")]


@dataclass(frozen=True)
class TablePrinter:
    """The columns of one kind and how to fill a row's cells (and row conditions) from an object."""

    columns: tuple[Column, ...]
    cells: Callable[[Obj, datetime], list[Any]]
    conditions: Callable[[Obj], list[dict[str, Any]]] | None = None


def _wide(name: str, description: str = "", type_: str = "string") -> Column:
    return Column(name, type_, description, priority=1)


def _simple(*columns: Column, cells: Callable[[Obj, datetime], list[Any]]) -> TablePrinter:
    return TablePrinter(columns, cells)


_CONTAINERS = _wide("Containers", "Names of each container in the template.")
_IMAGES = _wide("Images", "Images referenced by each container in the template.")
_SELECTOR = _wide("Selector", "Label selector for pods.")

PRINTERS: dict[str, TablePrinter] = {
    "Pod": TablePrinter((
        NAME,
        Column("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
        Column("Status", description="The aggregate status of the containers in this pod."),
        Column("Restarts", description="The number of times the containers in this pod have been restarted and "
                                       "when the last container in this pod has restarted."),
        AGE,
        _wide("IP", "podIP address allocated to the pod."),
        _wide("Node", "NodeName indicates in which node this pod is scheduled."),
        _wide("Nominated Node", "nominatedNodeName is set when this pod preempts other pods on the node."),
        _wide("Readiness Gates", "If specified, all readiness gates will be evaluated for pod readiness."),
    ), _pod_cells, _pod_conditions),
    "Node": TablePrinter((
        NAME,
        Column("Status", description="The status of the node"),
        Column("Roles", description="The roles of the node"),
        AGE,
        Column("Version", description="Kubelet Version reported by the node."),
        _wide("Internal-IP", "List of addresses reachable to the node."),
        _wide("External-IP", "List of addresses reachable to the node."),
        _wide("OS-Image", "OS Image reported by the node from /etc/os-release."),
        _wide("Kernel-Version", "Kernel Version reported by the node from 'uname -r'."),
        _wide("Container-Runtime", "ContainerRuntime Version reported by the node through runtime remote API."),
    ), _node_cells),
    "Namespace": _simple(NAME, Column("Status", description="The status of the namespace"), AGE,
                         cells=lambda o, now: [_name(o), _get(o, "status", "phase") or "", _obj_age(o, now)]),
    "Service": TablePrinter((
        NAME,
        Column("Type", description="type determines how the Service is exposed."),
        Column("Cluster-IP", description="clusterIP is the IP address of the service."),
        Column("External-IP", description="externalIPs is a list of IP addresses for which nodes in the cluster "
                                          "will also accept traffic for this service."),
        Column("Port(s)", description="The list of ports that are exposed by this service."),
        AGE,
        _wide("Selector", "Route service traffic to pods with label keys and values matching this selector."),
    ), _service_cells),
    "Endpoints": _simple(NAME, Column("Endpoints", description="The set of all endpoints is the union of all "
                                                               "subsets."), AGE,
                         cells=lambda o, now: [_name(o), format_endpoints(o), _obj_age(o, now)]),
    "Deployment": TablePrinter((
        NAME,
        Column("Ready", description="Number of the pod with ready state"),
        Column("Up-to-date", "integer", "Total number of non-terminated pods targeted by this deployment that have "
                                        "the desired template spec."),
        Column("Available", "integer", "Total number of available pods (ready for at least minReadySeconds) "
                                       "targeted by this deployment."),
        AGE, _CONTAINERS, _IMAGES, _SELECTOR,
    ), _deployment_cells),
    "ReplicaSet": TablePrinter((
        NAME,
        Column("Desired", "integer", "Number of desired pods."),
        Column("Current", "integer", "Replicas is the most recently observed number of replicas."),
        Column("Ready", "integer", "The number of ready replicas for this replica set."),
        AGE, _CONTAINERS, _IMAGES, _SELECTOR,
    ), _replicaset_cells),
    "StatefulSet": TablePrinter((
        NAME, Column("Ready", description="Number of the pod with ready state"), AGE, _CONTAINERS, _IMAGES,
    ), _statefulset_cells),
    "DaemonSet": TablePrinter((
        NAME,
        Column("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
        Column("Current", "integer", "The number of nodes that are running at least 1 daemon pod."),
        Column("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or "
                                   "more of the daemon pod running and ready."),
        Column("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
        Column("Available", "integer", "The number of nodes that should be running the daemon pod and have one or "
                                       "more of the daemon pod running and available."),
        Column("Node Selector", description="NodeSelector is a selector which must be true for the pod to fit on "
                                            "a node."),
        AGE, _CONTAINERS, _IMAGES, _SELECTOR,
    ), _daemonset_cells),
    "ConfigMap": _simple(NAME, Column("Data", description="Data contains the configuration data."), AGE,
                         cells=lambda o, now: [_name(o), len(_dict(o.get("data"))) + len(_dict(o.get("binaryData"))),
                                               _obj_age(o, now)]),
    "Secret": _simple(NAME, Column("Type", description="Used to facilitate programmatic handling of secret data."),
                      Column("Data", description="Data contains the secret data."), AGE,
                      cells=lambda o, now: [_name(o), o.get("type") or "Opaque", len(_dict(o.get("data"))),
                                            _obj_age(o, now)]),
    "ServiceAccount": _simple(NAME, Column("Secrets", description="Secrets is a list of the secrets in the same "
                                                                  "namespace that pods running using this "
                                                                  "ServiceAccount are allowed to use."), AGE,
                              cells=lambda o, now: [_name(o), len(_dicts(o.get("secrets"))), _obj_age(o, now)]),
    "Event": TablePrinter((
        Column("Last Seen", description="The time at which the most recent occurrence of this event was recorded."),
        Column("Type", description="Type of this event (Normal, Warning), new types could be added in the future"),
        Column("Reason", description="This should be a short, machine understandable string that gives the reason "
                                     "for the transition into the object's current status."),
        Column("Object", description="The object that this event is about."),
        _wide("Subobject", "If referring to a piece of an object instead of an entire object, this string should "
                           "contain a valid JSON/Go field access statement."),
        _wide("Source", "The component reporting this event. Should be a short machine understandable string."),
        Column("Message", description="A human-readable description of the status of this operation."),
        _wide("First Seen", "The time at which the event was first recorded. (Time of server receipt is in "
                            "TypeMeta.)"),
        _wide("Count", "The number of times this event has occurred."),
        Column("Name", format="name", description=NAME_DESCRIPTION, priority=1),
    ), _event_cells),
    "Lease": _simple(NAME, Column("Holder", description="holderIdentity contains the identity of the holder of a "
                                                        "current lease."), AGE,
                     cells=lambda o, now: [_name(o), _get(o, "spec", "holderIdentity") or "", _obj_age(o, now)]),
    "PodDisruptionBudget": _simple(
        NAME,
        Column("Min Available", description="The minimum number of pods that must be available."),
        Column("Max Unavailable", description="The maximum number of pods that may be unavailable."),
        Column("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
        AGE, cells=_pdb_cells),
    "PriorityClass": _simple(
        NAME, Column("Value", "integer", "value represents the integer value of this priority class."),
        Column("Global-Default", "boolean", "globalDefault specifies whether this PriorityClass should be considered "
                                            "as the default priority."), AGE,
        cells=lambda o, now: [_name(o), _int(o.get("value")), bool(o.get("globalDefault")), _obj_age(o, now)]),
    "Role": _simple(NAME, Column("Created At", description="Time at which the role was created"),
                    cells=lambda o, now: [_name(o), _rfc3339(_meta(o).get("creationTimestamp"))]),
    "ClusterRole": _simple(NAME, Column("Created At", description="Time at which the role was created"),
                           cells=lambda o, now: [_name(o), _rfc3339(_meta(o).get("creationTimestamp"))]),
    "RoleBinding": _simple(NAME, Column("Role", description="RoleRef can reference a Role in the current namespace "
                                                            "or a ClusterRole in the global namespace."), AGE,
                           _wide("Users", "Users in the roleBinding"), _wide("Groups", "Groups in the roleBinding"),
                           _wide("ServiceAccounts", "ServiceAccounts in the roleBinding"), cells=_binding_cells),
    "ClusterRoleBinding": _simple(NAME, Column("Role", description="RoleRef can only reference the current "
                                                                   "ClusterRole in the global namespace."), AGE,
                                  _wide("Users", "Users in the clusterRoleBinding"),
                                  _wide("Groups", "Groups in the clusterRoleBinding"),
                                  _wide("ServiceAccounts", "ServiceAccounts in the clusterRoleBinding"),
                                  cells=_binding_cells),
    "CustomResourceDefinition": _simple(
        NAME, Column("Created At", "date", CREATION_TIMESTAMP_DESCRIPTION),
        cells=lambda o, now: [_name(o), _rfc3339(_meta(o).get("creationTimestamp"))]),
}
"""Built-in printers by kind; any kind not here gets Name and Age."""

DEFAULT_PRINTER = _simple(NAME, AGE, cells=lambda o, now: [_name(o), _obj_age(o, now)])

_BY_PLURAL = {kind.lower() + ("es" if kind.endswith("s") else "s"): kind for kind in PRINTERS}
_BY_PLURAL.update({"endpoints": "Endpoints", "priorityclasses": "PriorityClass", "events": "Event",
                   "poddisruptionbudgets": "PodDisruptionBudget", "leases": "Lease"})


def printer_for(resource_kind: str) -> TablePrinter:
    """The printer for a kind (``Pod``) or plural resource name (``pods``)."""
    printer = PRINTERS.get(resource_kind)
    if printer is None:
        printer = PRINTERS.get(_BY_PLURAL.get(resource_kind.lower(), ""), DEFAULT_PRINTER)
    return printer


# -- custom resource columns: the JSONPath subset CRDs use ------------------------------------------------------


@dataclass(frozen=True)
class _Filter:
    path: tuple[Any, ...]
    op: str
    literal: Any


_FILTER = re.compile(r"^\?\(\s*@((?:\.[^\s=!<>]+)*)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*\)$")


@lru_cache(maxsize=512)
def _parse_jsonpath(expression: str) -> tuple[Any, ...]:
    """Steps of a ``.a.b[0]['c'][*][?(@.k=="v")]`` path: names, indexes, '*' and filters."""
    text = expression.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    steps: list[Any] = []
    i = 0
    while i < len(text):
        if text[i] == ".":
            i += 1
            start, name = i, []
            while i < len(text) and text[i] not in ".[":
                if text[i] == "\\" and i + 1 < len(text):
                    i += 1
                name.append(text[i])
                i += 1
            if i > start:
                steps.append("".join(name))
        elif text[i] == "[":
            end = _closing_bracket(text, i)
            steps.append(_bracket_step(text[i + 1:end].strip()))
            i = end + 1
        else:
            raise ValueError(f"unrecognized JSONPath {expression!r}")
    return tuple(steps)


def _closing_bracket(text: str, start: int) -> int:
    depth, quote = 0, ""
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unterminated [ in JSONPath {text!r}")


def _bracket_step(inner: str) -> Any:
    if inner == "*":
        return "*"
    if inner[:1] in "'\"" and inner[-1:] == inner[:1]:
        return inner[1:-1]
    if re.fullmatch(r"-?\d+", inner):
        return int(inner)
    match = _FILTER.match(inner)
    if match:
        path = _parse_jsonpath(match.group(1)) if match.group(1) else ()
        literal = _literal(match.group(3)) if match.group(3) is not None else None
        return _Filter(path, match.group(2) or "exists", literal)
    raise ValueError(f"unsupported JSONPath step [{inner}]")


def _literal(text: str) -> Any:
    text = text.strip()
    if text[:1] in "'\"" and text[-1:] == text[:1]:
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        return text


def _matches(value: Any, test: _Filter) -> bool:
    found = _walk([value], test.path)
    if test.op == "exists":
        return bool(found)
    if not found:
        return False
    left, right = found[0], test.literal
    try:
        return {"==": left == right, "!=": left != right, "<": left < right, ">": left > right,
                "<=": left <= right, ">=": left >= right}[test.op]
    except TypeError:
        return False


def _walk(values: list[Any], steps: tuple[Any, ...]) -> list[Any]:
    for step in steps:
        found: list[Any] = []
        for value in values:
            if isinstance(step, str) and step != "*":
                if isinstance(value, dict) and step in value:
                    found.append(value[step])
            elif isinstance(step, int):
                if isinstance(value, list) and -len(value) <= step < len(value):
                    found.append(value[step])
            elif step == "*":
                found.extend(value.values() if isinstance(value, dict) else value if isinstance(value, list) else [])
            elif isinstance(step, _Filter) and isinstance(value, list):
                found.extend(item for item in value if _matches(item, step))
        values = found
    return values


def jsonpath_values(obj: Any, expression: str) -> list[Any]:
    """Every value a CRD column's JSONPath selects (missing keys select nothing)."""
    return _walk([obj], _parse_jsonpath(expression))


def _print_json_value(value: Any) -> str:
    """JSONPath ``PrintResults``: text for scalars, compact JSON for objects and arrays."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def _custom_cell(column: dict[str, Any], obj: Obj, now: datetime) -> Any:
    """``cellForJSONValue``: the first value the column's path selects, typed as the column says."""
    try:
        found = jsonpath_values(obj, column.get("jsonPath", ""))
    except ValueError:
        return None
    if not found or found[0] is None:
        return None
    value, kind = found[0], column.get("type", "string")
    if kind == "string":
        return _print_json_value(value)
    if kind == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "date" and isinstance(value, str):
        when = _date_cell(value, now)
        return when if when is not None else "<invalid>"
    return None


def _date_cell(value: str, now: datetime) -> str | None:
    """``ConvertToHumanReadableDateType``: an age, ``<unknown>`` for the zero time, None when unreadable."""
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return "<unknown>" if parsed.year <= 1 else human_duration((now - parsed).total_seconds())


def _custom_printer(columns: list[dict[str, Any]]) -> TablePrinter:
    definitions = [NAME] + [
        Column(c.get("name", ""), c.get("type", "string"),
               c.get("description") or f"Custom resource definition column (in JSONPath format): {c.get('jsonPath')}",
               int(c.get("priority") or 0), c.get("format", "")) for c in columns]

    def cells(obj: Obj, now: datetime) -> list[Any]:
        return [_name(obj)] + [_custom_cell(c, obj, now) for c in columns]

    return TablePrinter(tuple(definitions), cells)


# -- the Table ------------------------------------------------------------------------------------------------


def _row_object(obj: Obj, include_object: str, api_version: str) -> dict[str, Any] | None:
    if include_object in ("Metadata", ""):
        return {"kind": "PartialObjectMetadata", "apiVersion": api_version, "metadata": _meta(obj)}
    if include_object == "Object":
        return obj
    return None


def to_table(objects: list[Obj], resource_kind: str, columns: list[dict[str, Any]] | None = None,
             list_meta: dict[str, Any] | None = None, include_object: str = "Metadata", *,
             now: datetime | None = None, api_version: str = "meta.k8s.io/v1") -> dict[str, Any]:
    """A Table for ``objects`` of one kind.

    ``columns`` are a custom resource's additionalPrinterColumns (None for
    built-in kinds, which use kube-apiserver's printers); ``list_meta`` gives
    the table's resourceVersion/continue/remainingItemCount; ``include_object``
    is the request's includeObject (Metadata, Object or None).
    """
    if include_object not in ("Metadata", "", "Object", "None"):
        raise errors.bad_request(f'unrecognized includeObject value: "{include_object}"')
    now = now if now is not None else datetime.now(timezone.utc)
    printer = _custom_printer(columns) if columns is not None else printer_for(resource_kind)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": printer.cells(obj, now)}
        conditions = printer.conditions(obj) if printer.conditions is not None else []
        if conditions:
            row["conditions"] = conditions
        row_object = _row_object(obj, include_object, api_version)
        if row_object is not None:
            row["object"] = row_object
        rows.append(row)
    meta = {k: v for k, v in (list_meta or {}).items()
            if k in ("resourceVersion", "continue", "remainingItemCount") and v not in (None, "")}
    return {"kind": "Table", "apiVersion": api_version, "metadata": meta,
            "columnDefinitions": [c.to_dict() for c in printer.columns], "rows": rows}
