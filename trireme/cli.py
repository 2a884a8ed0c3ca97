"""The ``trireme`` command: one entry point for everything a user runs.

Subcommands are grouped by what they act on; ``devcluster`` runs the local
cluster, ``crds`` writes the CustomResourceDefinitions generated from the API
models. Later parts of Trireme (the operator, benchmarks) add their own
subcommands here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path


def _devcluster_up(args: argparse.Namespace) -> int:
    from trireme.devcluster.cluster import ClusterSettings, LocalCluster
    from trireme.devcluster.kubelet import KubeletSettings
    from trireme.devcluster.profile import ProfileError, load_profile

    try:
        profile = load_profile(args.profile) if args.profile else None
    except (ProfileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = ClusterSettings(
        profile=profile, host=args.host, port=args.port, kubeconfig=Path(args.kubeconfig).resolve(),
        state_file=Path(args.state_file).resolve() if args.state_file else None,
        work_dir=Path(args.work_dir).resolve() if args.work_dir else None,
        prometheus=not args.no_prometheus,
        kubelet=KubeletSettings(mode=args.kubelet, simulated_start_delay_s=args.start_delay))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with LocalCluster(settings) as cluster:
            nodes = list(cluster.store.items(("", "nodes")))
            gpus = sum(int(n["status"]["capacity"].get("nvidia.com/gpu", 0)) for n in nodes)
            print(f"local cluster up: API server {cluster.url}")
            print(f"  kubeconfig   {cluster.kubeconfig_path}   (export KUBECONFIG={cluster.kubeconfig_path})")
            print(f"  nodes        {len(nodes)} with {gpus} GPUs, kubelet in {args.kubelet} mode")
            if cluster.prometheus_url:
                print(f"  prometheus   {cluster.prometheus_url}")
            else:
                print(f"  prometheus   not running: {cluster.prometheus_problem}")
            if settings.state_file:
                print(f"  state        {settings.state_file}")
            print(f"  work dir     {cluster.work_dir}")
            print("Ctrl-C stops everything it started.", flush=True)
            await stop.wait()
            print("stopping...", flush=True)
        print("stopped.")

    asyncio.run(run())
    return 0


def _devcluster_profile_from_openb(args: argparse.Namespace) -> int:
    from trireme.devcluster.profile import write_openb_profile

    try:
        profile = write_openb_profile(args.csv, args.output)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {profile.node_count} nodes, {profile.gpu_count} GPUs in {len(profile.pools)} pools")
    return 0


def _bench_devcluster(args: argparse.Namespace) -> int:
    from trireme.devcluster.bench import BenchSettings, result_json, run_benchmark

    settings = BenchSettings(nodes=args.nodes, pods=args.pods, list_pods=args.list_pods, watchers=args.watchers,
                             write_rate=args.rate, write_seconds=args.seconds)
    result = asyncio.run(run_benchmark(settings, quiet=args.json))
    print(result_json(result) if args.json else result.table())
    return 0


def _bench_binding(args: argparse.Namespace) -> int:
    from trireme.benchmarks.binding import BindingSettings, run_binding_benchmark

    logging.getLogger("trireme.operator").setLevel(logging.WARNING)  # one line per binding otherwise
    result = asyncio.run(run_binding_benchmark(BindingSettings(nodes=args.nodes, pods=args.pods), quiet=args.json))
    print(result.to_json() if args.json else result.table())
    return 0


def _crds(args: argparse.Namespace) -> int:
    from trireme.operator.crdgen import SchemaError, stale_files, write_crds

    also = [Path(args.chart_crds_dir)]
    try:
        if args.check:
            stale = stale_files(Path(args.output_dir), also)
            for path in stale:
                print(f"{path} is out of date: run `trireme crds`", file=sys.stderr)
            return 1 if stale else 0
        for path in write_crds(Path(args.output_dir), also):
            print(f"wrote {path}")
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace) -> int:
    from trireme.operator.handlers import run
    from trireme.operator.settings import OperatorSettings

    try:
        settings = OperatorSettings.from_sources(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.log_level:
        logging.getLogger().setLevel(args.log_level.upper())
    if not args.verbose and args.log_level != "debug":  # kopf reports every timer run at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    asyncio.run(run(settings))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trireme", description="Run NVIDIA Triton fleets on Kubernetes GPU clusters.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("devcluster", help="the local cluster: API server, GPU nodes, kubelet, Prometheus")
    dev_commands = dev.add_subparsers(dest="devcluster_command", required=True)
    up = dev_commands.add_parser("up", help="start the local cluster in the foreground (Ctrl-C stops it)")
    up.add_argument("--profile", help="node pools (YAML), e.g. examples/clusters/dgx-2x8.yaml")
    up.add_argument("--kubeconfig", default="./kubeconfig", help="where to write the kubeconfig (default ./kubeconfig)")
    up.add_argument("--host", default="127.0.0.1", help="API server address (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=0, help="API server port (default: a free one)")
    up.add_argument("--state-file", help="keep objects in this file across restarts of the local cluster")
    up.add_argument("--work-dir", help="logs and Prometheus data (default: a temporary directory)")
    up.add_argument("--kubelet", choices=("process", "simulated"), default="process",
                    help="process: Triton pods run real tritonserver processes; simulated: no processes")
    up.add_argument("--start-delay", type=float, default=0.5,
                    help="seconds until a pod without a process is Running (default 0.5)")
    up.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    up.set_defaults(func=_devcluster_up)

    openb = dev_commands.add_parser("profile-from-openb", help="write a node profile from the openb node list CSV")
    openb.add_argument("csv", help="openb_node_list_gpu_node.csv")
    openb.add_argument("-o", "--output", required=True, help="profile YAML to write")
    openb.set_defaults(func=_devcluster_profile_from_openb)

    bench = commands.add_parser("bench", help="benchmarks that print a table")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True)
    dev_bench = bench_commands.add_parser(
        "devcluster", help="the local cluster at scale: memory, kubectl get latency, write rate, watch delay")
    dev_bench.add_argument("--nodes", type=int, default=5000, help="simulated nodes (default 5000)")
    dev_bench.add_argument("--pods", type=int, default=50_000, help="running pods held (default 50000)")
    dev_bench.add_argument("--list-pods", type=int, default=10_000,
                           help="pods present when timing kubectl get pods -A (default 10000)")
    dev_bench.add_argument("--watchers", type=int, default=10, help="watchers during the write test (default 10)")
    dev_bench.add_argument("--rate", type=float, default=500, help="target writes per second (default 500)")
    dev_bench.add_argument("--seconds", type=float, default=20, help="length of the write test (default 20)")
    dev_bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    dev_bench.set_defaults(func=_bench_devcluster)
    from trireme.benchmarks import autoscale as bench_autoscale

    autoscale = bench_commands.add_parser(
        "autoscale", help="autoscaling policies on a replayed request trace: SLO attainment and GPU-seconds")
    bench_autoscale.add_arguments(autoscale)
    autoscale.set_defaults(func=bench_autoscale.main)
    binding = bench_commands.add_parser(
        "binding", help="pods bound per second end to end: the scheduling loop against the local cluster over HTTP")
    binding.add_argument("--nodes", type=int, default=5000, help="simulated nodes of 8 GPUs (default 5000)")
    binding.add_argument("--pods", type=int, default=5000, help="pending pods to bind, one GPU each (default 5000)")
    binding.add_argument("--json", action="store_true", help="print the figures as JSON")
    binding.set_defaults(func=_bench_binding)
    from trireme.benchmarks import placement as bench_placement, throughput as bench_throughput

    placement = bench_commands.add_parser(
        "placement", help="replay the openb GPU trace with the FGD paper's protocol: unallocated GPUs per policy")
    bench_placement.add_arguments(placement)
    placement.set_defaults(func=bench_placement.main)
    from trireme.benchmarks import rebalance as bench_rebalance

    rebalance = bench_commands.add_parser(
        "rebalance", help="the openb trace with churn near full: unallocated GPUs with and without the rebalancer")
    bench_rebalance.add_arguments(rebalance)
    rebalance.set_defaults(func=bench_rebalance.main)
    throughput = bench_commands.add_parser("throughput", help="placements per second of the planner on one core")
    bench_throughput.add_arguments(throughput)
    throughput.set_defaults(func=bench_throughput.main)

    from trireme.operator.settings import add_arguments

    run = commands.add_parser("run", help="run the operator against the current kubeconfig or in-cluster config")
    add_arguments(run)
    run.set_defaults(func=_run)

    from trireme.demo import add_arguments as add_demo_arguments

    add_demo_arguments(commands.add_parser(
        "demo", help="Trireme live: local cluster, operator, a sample service under load, scaling and placement"))

    crds = commands.add_parser("crds", help="write the CustomResourceDefinitions generated from the API models")
    crds.add_argument("--output-dir", default="crds", help="folder to write them to (default crds/)")
    crds.add_argument("--chart-crds-dir", default="charts/trireme/crds",
                      help="also write them here when the folder exists (default charts/trireme/crds/)")
    crds.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 when a written file differs from the models")
    crds.set_defaults(func=_crds)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        try:
            return int(args.func(args))
        except ModuleNotFoundError as exc:
            if exc.name not in _DEVCLUSTER_MODULES:
                raise
            print(f"error: the local cluster needs packages that are not installed ({exc.name}): "
                  "pip install 'trireme[devcluster]'", file=sys.stderr)
            return 2
    return 130


_DEVCLUSTER_MODULES = {"orjson", "fastjsonschema", "jsonpatch", "kubernetes_validate", "celpy", "pytriton", "numpy"}
"""Top-level modules of the ``devcluster`` extra (see pyproject.toml)."""


if __name__ == "__main__":
    sys.exit(main())
