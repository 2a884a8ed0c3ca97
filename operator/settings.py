"""The operator's settings, in one documented place.

Each field says why its default is what it is. Values come from ``trireme run``
flags, then ``TRIREME_*`` environment variables (what a Deployment sets), then the
defaults here.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class OperatorSettings:
    """How the operator runs."""

    namespaces: tuple[str, ...] = ()
    """Namespaces whose InferenceServices are served; empty means all (cluster-wide). A namespaced
    install lists its own namespace here and needs only a Role."""
    scheduler_name: str = "trireme"
    """The ``schedulerName`` of the pods the operator creates and binds. Pods with any other name are
    left to their own schedulers (but the GPUs they hold are still counted)."""
    prometheus_url: str = "http://prometheus:9090"
    """Where Triton's metrics are read from (the autoscaler and rebalancer use it); the in-cluster
    name of a kube-prometheus install."""
    reconcile_interval_s: float = 2.0
    """How often every InferenceService is reconciled even without a change: picks up pod readiness,
    binds pods that became placeable, and repairs drift. Two seconds keeps user-visible latency low at
    the cost of one pod list per service per interval."""
    triton_timeout_s: float = 1.0
    """Timeout of one Triton model-readiness check: short, so one hung replica cannot stall a cycle."""
    metrics_port: int = 0
    """Port of the operator's health endpoint (``/healthz``, for liveness probes; its own
    Prometheus metrics will be served there too). 0, the default outside a cluster, serves
    nothing, so several operators can run side by side; the chart sets 9090."""
    standalone: bool = True
    """Run without leader election. The default because it needs nothing installed and is correct
    for the single operator replica a Deployment runs; see ``peering`` for more replicas."""
    peering: str = ""
    """Name of the kopf peering object used for leader election between operator replicas; setting it
    turns ``standalone`` off. Needs kopf's peering CRD and object: KopfPeering (kopf.dev/v1) in the
    watched namespace, or ClusterKopfPeering when watching the whole cluster."""
    priority: int = 0
    """kopf peering priority of this replica: the replica with the highest priority acts and the others
    pause; give each replica a distinct value so two never both act."""

    @classmethod
    def from_sources(cls, args: argparse.Namespace | None = None,
                     environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """Flags (attributes of ``args`` that are not None) over ``TRIREME_<FIELD>`` variables over defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for item in fields(cls):
            raw = getattr(args, item.name, None) if args is not None else None
            if raw is None:
                raw = environ.get(f"TRIREME_{item.name.upper()}")
            if raw is None:
                continue
            values[item.name] = _convert(item.name, item.type, raw)
        if values.get("peering") and "standalone" not in values:
            values["standalone"] = False
        return cls(**values)  # type: ignore[arg-type]


def _convert(name: str, kind: object, raw: object) -> object:
    kind = str(kind)
    if "tuple" in kind:
        items = raw.split(",") if isinstance(raw, str) else list(raw)  # type: ignore[arg-type]
        return tuple(i.strip() for i in items if i and i.strip())
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name}: {raw!r} is not a boolean")
    if kind == "int":
        return int(raw)  # type: ignore[arg-type]
    if kind == "float":
        return float(raw)  # type: ignore[arg-type]
    return str(raw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``trireme run`` flags; each defaults to None so environment variables and defaults apply."""
    parser.add_argument("--namespace", dest="namespaces", action="append",
                        help="serve InferenceServices in this namespace (repeatable; default: all)")
    parser.add_argument("--scheduler-name", dest="scheduler_name", help="schedulerName of the pods (default trireme)")
    parser.add_argument("--prometheus-url", dest="prometheus_url", help="Prometheus base URL")
    parser.add_argument("--reconcile-interval", dest="reconcile_interval_s", type=float,
                        help="seconds between periodic reconciles (default 2)")
    parser.add_argument("--metrics-port", dest="metrics_port", type=int, help="operator metrics port (0: off)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--standalone", dest="standalone", action="store_const", const=True,
                      help="no leader election (the default)")
    mode.add_argument("--peering", dest="peering", help="kopf peering name: leader election between replicas")
    parser.add_argument("--priority", dest="priority", type=int, help="peering priority of this replica")
    parser.add_argument("--log-level", dest="log_level", choices=("debug", "info", "warning", "error"),
                        help="log level (default info)")
