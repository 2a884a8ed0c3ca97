"""The operator's settings, in one documented place.

Each field says why its default is what it is. Values come from ``trireme run``
flags, then ``TRIREME_*`` environment variables (what a Deployment sets), then the
defaults here.
"""

from __future__ import annotations

import argparse
import os
import secrets
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
    default_policy: str = "trireme"
    """Placement policy of the InferenceServices that do not name one (spec.scheduling.policy): one of
    spread, binpack, bestfit, fgd, trireme. Trireme's own policy by default: it leaves the fewest GPUs
    stranded (docs/benchmarks.md)."""
    prometheus_url: str = "http://prometheus:9090"
    """Where Triton's metrics are read from (the autoscaler and rebalancer use it); the in-cluster
    name of a kube-prometheus install."""
    prometheus_token_file: str = ""
    """File holding a bearer token sent with every Prometheus query (a projected ServiceAccount token when
    Prometheus sits behind kube-rbac-proxy); empty sends none. Read at each query, so rotation works."""
    prometheus_ca_file: str = ""
    """CA bundle that signs Prometheus' TLS certificate; empty trusts the system's CAs."""
    prometheus_timeout_s: float = 5.0
    """Timeout of one Prometheus query: long enough for a loaded Prometheus, short enough that a hung one
    cannot stall the resync pass for long (a reading is several queries)."""
    prometheus_namespace_label: str = "namespace"
    """Label carrying a series' pod namespace: ``namespace`` with kube-prometheus PodMonitors and
    ServiceMonitors and with the local cluster; change it when relabelling names it otherwise."""
    prometheus_pod_label: str = "pod"
    """Label carrying a series' pod name: ``pod`` with kube-prometheus and the local cluster."""
    autoscale_interval_s: float = 5.0
    """How often the autoscaler reads each autoscaled service's load and decides. Five seconds: a
    Prometheus scrape interval or less, so every decision sees new data without querying Prometheus on
    every resync pass."""
    autoscaler_status_refresh_s: float = 60.0
    """How long ``status.autoscaler`` may go on showing an earlier decision while the decisions since
    agree with it: same action, count limit and drains, and no metric it shows moved by more than 10 %.
    Every status write wakes every watcher of the object (``kubectl get -w``, GitOps controllers,
    dashboards), and a decision every five seconds would otherwise be a write every five seconds per
    service even when nothing happens. A change of the count is always written at once."""
    metrics_unavailable_after_s: float = 30.0
    """How long metrics may be missing or untrusted before MetricsAvailable turns False with an Event.
    Replicas are held (never lowered) from the first bad reading; the delay only keeps one missed scrape
    or a freshly started replica not yet scraped from being reported as an outage."""
    drain_grace_s: float = 5.0
    """A replica taken out of the Service for a scale-down is deleted no sooner than this: the time
    kube-proxy, load balancers and client-side balancers need to stop sending it new requests."""
    drain_timeout_s: float = 60.0
    """A draining replica is deleted after this long even if Triton still reports requests in flight (or
    cannot be asked): longer than any sane request, short enough that a stuck replica does not hold GPUs."""
    rebalance_interval_s: float = 30.0
    """How often the rebalancer plans moves (defragmenting for replicas that fit nowhere, spreading a
    service's bunched replicas); 0 turns it off. Thirty seconds: each move starts a replica and loads its
    model, so planning more often than moves can finish only re-plans the same moves. Moves in flight
    advance on every resync pass, whatever this interval."""
    rebalance_max_moves: int = 2
    """Moves in flight at once over the whole cluster, and the most one planning may start: each holds
    the GPUs of two copies of a replica until the old one is drained, so a few at a time bound the
    capacity a rebalancing costs."""
    move_timeout_s: float = 600.0
    """A move whose new replica is not serving (pod Ready, every model ready in Triton) this long after it
    was created is abandoned: the new pod is deleted with a Warning Event and the old one keeps serving.
    Ten minutes covers pulling a large image and loading a large model."""
    min_move_interval_s: float = 600.0
    """Least time between two moves of one replica: a replica moved back and forth serves nothing while
    its model loads."""
    reconcile_interval_s: float = 2.0
    """How often the resync pass reconciles every InferenceService even without a change: picks up pod
    readiness, binds pods that became placeable, and repairs drift. Two seconds keeps user-visible
    latency low at the cost of one InferenceService list, and one read and one pod list per service,
    per interval. The liveness probe fails when a pass has not completed for ten intervals (at least
    a minute)."""
    triton_timeout_s: float = 1.0
    """Timeout of one Triton model-readiness check: short, so one hung replica cannot stall a cycle."""
    metrics_port: int = 0
    """Port of the operator's own Prometheus metrics (``/metrics``). 0, the default outside a cluster,
    serves nothing, so several operators can run side by side; the chart sets 9090. Probes are on
    ``health_port``, apart from metrics as in controller-runtime, so a Service or ServiceMonitor can
    publish metrics without publishing the probes."""
    health_port: int = 0
    """Port of the probes: ``/healthz`` (liveness: the resync loop has completed a pass recently, so a
    hung operator is restarted) and ``/readyz`` (readiness: kopf has started its watches). Trireme
    serves these itself rather than with kopf's liveness endpoint, which only shows that the event
    loop answers. 0 serves nothing; the chart sets 8081. Equal to ``metrics_port``, one server
    serves all three paths."""
    standalone: bool = True
    """Run without leader election. The default because it needs nothing installed and is correct
    for the single operator replica a Deployment runs; see ``peering`` for more replicas."""
    peering: str = ""
    """Name of the kopf peering object used for leader election between operator replicas; setting it
    turns ``standalone`` off. Needs kopf's peering CRD and object: KopfPeering (kopf.dev/v1) in the
    watched namespace, or ClusterKopfPeering when watching the whole cluster."""
    priority: int = 0
    """kopf peering priority of this replica: the replica with the highest priority acts and the others
    pause. kopf pauses *every* replica that shares its priority with another, so values must be
    distinct: with ``peering`` set and no priority given, ``from_sources`` draws a random one from
    1 .. 2**31-1 (two replicas collide with a chance of about one in a billion), which lets one
    Deployment template serve every replica."""

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
        if values.get("peering") and "priority" not in values:
            values["priority"] = random_priority()
        return cls(**values)  # type: ignore[arg-type]


def random_priority() -> int:
    """A peering priority for a replica that was given none (see ``OperatorSettings.priority``)."""
    return 1 + secrets.randbelow(2**31 - 1)


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
    parser.add_argument("--default-policy", dest="default_policy", choices=("spread", "binpack", "bestfit", "fgd",
                                                                          "trireme"),
                        help="placement policy of services that name none (default trireme)")
    parser.add_argument("--prometheus-url", dest="prometheus_url", help="Prometheus base URL")
    parser.add_argument("--prometheus-token-file", dest="prometheus_token_file",
                        help="file with a bearer token for Prometheus (default: none)")
    parser.add_argument("--prometheus-ca-file", dest="prometheus_ca_file", help="CA bundle of Prometheus' TLS")
    parser.add_argument("--prometheus-timeout", dest="prometheus_timeout_s", type=float,
                        help="seconds one Prometheus query may take (default 5)")
    parser.add_argument("--prometheus-namespace-label", dest="prometheus_namespace_label",
                        help="label naming a series' namespace (default namespace)")
    parser.add_argument("--prometheus-pod-label", dest="prometheus_pod_label",
                        help="label naming a series' pod (default pod)")
    parser.add_argument("--autoscale-interval", dest="autoscale_interval_s", type=float,
                        help="seconds between autoscaling decisions (default 5)")
    parser.add_argument("--autoscaler-status-refresh", dest="autoscaler_status_refresh_s", type=float,
                        help="seconds status.autoscaler may keep showing an earlier decision that still holds "
                             "(default 60)")
    parser.add_argument("--metrics-unavailable-after", dest="metrics_unavailable_after_s", type=float,
                        help="seconds of missing metrics before MetricsAvailable=False (default 30)")
    parser.add_argument("--drain-grace", dest="drain_grace_s", type=float,
                        help="least seconds a replica is out of the Service before deletion (default 5)")
    parser.add_argument("--drain-timeout", dest="drain_timeout_s", type=float,
                        help="most seconds a replica drains before deletion (default 60)")
    parser.add_argument("--rebalance-interval", dest="rebalance_interval_s", type=float,
                        help="seconds between rebalancing plans (default 30; 0 turns the rebalancer off)")
    parser.add_argument("--rebalance-max-moves", dest="rebalance_max_moves", type=int,
                        help="moves in flight at once (default 2)")
    parser.add_argument("--move-timeout", dest="move_timeout_s", type=float,
                        help="seconds a move's new replica may take to serve before the move is abandoned "
                             "(default 600)")
    parser.add_argument("--min-move-interval", dest="min_move_interval_s", type=float,
                        help="least seconds between two moves of one replica (default 600)")
    parser.add_argument("--reconcile-interval", dest="reconcile_interval_s", type=float,
                        help="seconds between periodic reconciles (default 2)")
    parser.add_argument("--metrics-port", dest="metrics_port", type=int, help="port of /metrics (0: off)")
    parser.add_argument("--health-port", dest="health_port", type=int, help="port of /healthz and /readyz (0: off)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--standalone", dest="standalone", action="store_const", const=True,
                      help="no leader election (the default)")
    mode.add_argument("--peering", dest="peering", help="kopf peering name: leader election between replicas")
    parser.add_argument("--priority", dest="priority", type=int,
                        help="peering priority of this replica (default with --peering: random)")
    parser.add_argument("--log-level", dest="log_level", choices=("debug", "info", "warning", "error"),
                        help="log level (default info)")
