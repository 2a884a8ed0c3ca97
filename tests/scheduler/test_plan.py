"""Plans: where each policy puts pods, why a pod fits nowhere, gangs, tensor parallelism,
spreading replicas, bad input, and snapshots read from API objects and from JSON."""

from __future__ import annotations

import json
import math

import pytest
from trireme.scheduler.cluster import (
    BoundPod, ClusterSnapshot, NodeState, Taint, cluster_from_objects, node_state, parse_cpu_milli, parse_memory_mib,
    parse_share)
from trireme.scheduler.fragmentation import TaskShape
from trireme.scheduler.plan import Bind, Unschedulable, plan
from trireme.scheduler.policies import POLICY_NAMES, make_policy
from trireme.scheduler.requests import Gang, PodRequest, request_from_pod

A100 = "NVIDIA-A100-SXM4-80GB"
T4 = "Tesla-T4"


def node(gpus: int = 8, product: str = A100, **kw: object) -> NodeState:
    return node_state(gpus=gpus, product=product, gpu_memory_mib=81920 if product == A100 else 16384,
                      cpu_milli=kw.pop("cpu_milli", 64000), memory_mib=kw.pop("memory_mib", 262144),
                      **kw)  # type: ignore[arg-type]


def cluster(**nodes: NodeState) -> ClusterSnapshot:
    return ClusterSnapshot.of(nodes)


def used(snapshot: ClusterSnapshot, name: str, share: int, *gpus: int) -> ClusterSnapshot:
    return snapshot.with_bound(BoundPod(f"other/{name}-{gpus}", name, gpus, share))


def req(pod: str = "ns/p", **kw: object) -> PodRequest:
    return PodRequest(pod=pod, **kw)  # type: ignore[arg-type]


# a: 8 idle GPUs; b: GPU 0 has 0.4 free, the rest idle; c: two GPUs, both idle
MIXED = used(cluster(a=node(), b=node(), c=node(gpus=2)), "b", 600, 0)
POLICY_CASES = [
    ("firstfit-share", "firstfit", MIXED, req(gpus=1, gpu_milli=300), Bind("ns/p", "a", (0,))),
    ("bestfit-share-least-left", "bestfit", MIXED, req(gpus=1, gpu_milli=300), Bind("ns/p", "c", (0,))),
    ("bestfit-share-tightest-gpu", "bestfit", used(cluster(b=node()), "b", 600, 0), req(gpus=1, gpu_milli=300),
     Bind("ns/p", "b", (0,))),
    ("binpack-share", "binpack", MIXED, req(gpus=1, gpu_milli=300), Bind("ns/p", "c", (0,))),
    ("spread-share-emptiest", "spread", MIXED, req(gpus=1, gpu_milli=300), Bind("ns/p", "a", (0,))),
    ("fgd-share-fills-sliver", "fgd", MIXED, req(gpus=1, gpu_milli=300), Bind("ns/p", "b", (0,))),
    ("trireme-share-fills-sliver", "trireme", MIXED, req(gpus=1, gpu_milli=300), Bind("ns/p", "b", (0,))),
    ("bestfit-whole-small-node", "bestfit", MIXED, req(gpus=2), Bind("ns/p", "c", (0, 1))),
    ("spread-whole-emptiest", "spread", MIXED, req(gpus=2), Bind("ns/p", "a", (0, 1))),
]

WORKLOAD = [TaskShape(8000, 300, 1, (), 16384), TaskShape(16000, 1000, 1, (), 32768),
            TaskShape(32000, 1000, 2, (), 65536)]


@pytest.mark.parametrize(("policy", "snapshot", "request_", "expected"), [c[1:] for c in POLICY_CASES],
                         ids=[c[0] for c in POLICY_CASES])
def test_policy_places(policy: str, snapshot: ClusterSnapshot, request_: PodRequest, expected: Bind) -> None:
    result = plan(snapshot, [request_], make_policy(policy, WORKLOAD, seed=1))
    assert result.decisions == (expected,)


UNSCHEDULABLE_CASES = [
    ("largest-block", cluster(a=node(gpus=2), b=node(gpus=2, product=T4)), req(gpus=3, products=(A100,)),
     f"needs 3× {A100} on one node; largest free block is 2 (nodes left out: 1 other GPU product)"),
    ("left-out-counts", cluster(a=node(cordoned=True), b=node(cordoned=True), c=node(ready=False),
                                d=node(taints=(Taint("k", "v"),)), e=node(gpus=1)), req(gpus=2),
     "needs 2× GPU on one node; largest free block is 1 (nodes left out: 2 cordoned, 1 not ready, "
     "1 taint not tolerated)"),
    ("share-too-big", used(cluster(a=node(gpus=1)), "a", 800, 0), req(gpus=1, gpu_milli=500),
     "needs 0.5 of one GPU; the most free on one GPU is 0.2 of a GPU"),
    ("cpu-short", cluster(a=node(cpu_milli=1000)), req(gpus=1, cpu_milli=2000),
     "needs 1× GPU on one node; largest free block is 8 (nodes left out: 1 not enough CPU)"),
    ("tp-island", cluster(a=node(islands=[[0, 1, 2, 3], [4, 5, 6, 7]])), req(gpus=8, tensor_parallel=8),
     "needs 8× GPU in one NVLink island; largest free block is 0 (nodes left out: 1 NVLink islands too small)"),
    ("tp-groups", used(cluster(a=node(islands=[[0, 1, 2, 3], [4, 5, 6, 7]])), "a", 1000, 0, 4),
     req(gpus=8, tensor_parallel=4),
     "needs 8× GPU on one node in groups of 4, each group in one NVLink island; largest free block is 3"),
    ("cpu-only", cluster(a=node(memory_mib=10)), req(memory_mib=20),
     "needs 0m CPU and 20 MiB memory; no node has them free (nodes left out: 1 not enough memory)"),
    ("empty-cluster", cluster(), req(gpus=1), "needs 1× GPU on one node; largest free block is 0"),
    ("negative-cpu", cluster(a=node()), req(cpu_milli=-1), "bad request: cpu -1"),
    ("share-over-one", cluster(a=node()), req(gpus=1, gpu_milli=1500),
     "bad request: a GPU share of 1500 milli-GPUs is more than one GPU"),
    ("tp-mismatch", cluster(a=node()), req(gpus=2, tensor_parallel=4),
     "bad request: tensor parallel degree 4 with 2 GPUs"),
    ("nan-node", cluster(a=node(cpu_milli=math.nan)), req(gpus=1),
     "needs 1× GPU on one node; largest free block is 0 (nodes left out: 1 bad capacity cpu_milli=nan)"),
    ("unknown-product", cluster(a=node()), req(gpus=1, products=("H900",)),
     "needs 1× H900 on one node; largest free block is 0 (nodes left out: 1 other GPU product)"),
]


@pytest.mark.parametrize(("snapshot", "request_", "reason"), [c[1:] for c in UNSCHEDULABLE_CASES],
                         ids=[c[0] for c in UNSCHEDULABLE_CASES])
@pytest.mark.parametrize("policy", ["trireme", "fgd", "spread"])
def test_unschedulable_says_why(snapshot: ClusterSnapshot, request_: PodRequest, reason: str, policy: str) -> None:
    assert plan(snapshot, [request_], policy).decisions == (Unschedulable("ns/p", reason),)


@pytest.mark.parametrize("policy", ["fgd", "trireme"])
def test_fragmentation_aware_policies_keep_whole_nodes_for_whole_node_tasks(policy: str) -> None:
    workload = [TaskShape(8000, 1000, 2, (), 16384), TaskShape(64000, 1000, 8, (), 65536)]
    snapshot = cluster(a=node(), c=node(gpus=2))
    assert plan(snapshot, [req(gpus=2)], make_policy(policy, workload)).decisions == (Bind("ns/p", "c", (0, 1)),)


def test_trireme_sends_cpu_heavy_work_to_cpu_rich_nodes() -> None:
    # GPU tasks need 16 CPUs per GPU: node a (64 CPUs for 8 GPUs) will run out of CPU first.
    workload = [TaskShape(16000, 1000, 1, (), 1024)]
    snapshot = cluster(a=node(cpu_milli=64000), b=node(cpu_milli=512000))
    cpu_only = req(cpu_milli=16000)
    assert plan(snapshot, [cpu_only], make_policy("trireme", workload)).decisions[0].node == "b"  # type: ignore[union-attr]
    assert plan(snapshot, [cpu_only], make_policy("fgd", workload)).decisions[0].node == "a"  # type: ignore[union-attr]


def test_random_is_seeded() -> None:
    requests = [req(f"ns/p{i}", gpus=1, gpu_milli=100 * (i % 9 + 1)) for i in range(20)]
    first = plan(MIXED, requests, make_policy("random", seed=7))
    assert first == plan(MIXED, requests, make_policy("random", seed=7))
    assert first != plan(MIXED, requests, make_policy("random", seed=8))


def test_spread_keeps_replicas_apart() -> None:
    snapshot = cluster(a=node(), b=node())
    replicas = [req(f"ns/r{i}", gpus=1, service="svc", spread=True) for i in range(3)]
    decisions = plan(snapshot, replicas, "binpack").decisions
    assert [d.node for d in decisions[:2]] == ["a", "b"]  # type: ignore[union-attr]
    assert decisions[2] == Unschedulable("ns/r2", "needs 1× GPU on one node; largest free block is 7 "
                                                  "(nodes left out: 2 already run a replica of svc)")


RACKED = {f"{rack}{i}": node(gpus=4, labels={"topology.trireme.io/rack": rack}) for rack in "xy" for i in range(2)}


def test_gang_lands_on_fewest_nodes_in_one_rack() -> None:
    snapshot = used(cluster(**RACKED), "x0", 1000, 0)
    gang = Gang("g", tuple(req(f"ns/s{i}", gpus=2) for i in range(4)))
    result = plan(snapshot, [gang], "trireme")
    nodes = {d.node for d in result.decisions}  # type: ignore[union-attr]
    assert len(nodes) == 2 and len({n[0] for n in nodes}) == 1
    assert all(isinstance(d, Bind) for d in result.decisions)


def test_gang_is_all_or_nothing() -> None:
    snapshot = cluster(**RACKED)
    gang = Gang("g", tuple(req(f"ns/s{i}", gpus=4) for i in range(5)))
    result = plan(snapshot, [gang], "trireme")
    assert all(isinstance(d, Unschedulable) for d in result.decisions) and len(result.decisions) == 5
    assert result.snapshot.states == snapshot.states
    assert "gang g of 5 pods does not fit together" in result.decisions[0].reason  # type: ignore[union-attr]


def test_replanning_an_applied_plan_changes_nothing() -> None:
    snapshot = MIXED
    requests = [req(f"ns/p{i}", gpus=i % 3, gpu_milli=300 if i % 3 == 1 else 0, cpu_milli=1000) for i in range(8)]
    first = plan(snapshot, requests, "trireme")
    again = plan(first.snapshot, requests, "trireme")
    assert again.decisions == first.decisions
    assert again.snapshot == first.snapshot


def test_higher_priority_goes_first() -> None:
    result = plan(cluster(a=node(gpus=1)), [req("ns/low", gpus=1), req("ns/high", gpus=1, priority=10)], "trireme")
    assert result.decisions[0] == Bind("ns/high", "a", (0,))
    assert isinstance(result.decisions[1], Unschedulable)


def test_unknown_policy_name() -> None:
    with pytest.raises(ValueError, match="unknown placement policy"):
        make_policy("best")
    assert set(POLICY_NAMES) >= {"spread", "binpack", "bestfit", "fgd", "random", "trireme"}


def test_snapshot_json_round_trip() -> None:
    snapshot = plan(cluster(**RACKED, t=node(gpus=2, product=T4, taints=(Taint("k", "v", "NoExecute"),),
                                               islands=[[0], [1]])),
                    [req("ns/a", gpus=2, cpu_milli=100), req("ns/b", gpus=1, gpu_milli=250, service="s")],
                    "trireme").snapshot
    again = ClusterSnapshot.from_json(json.loads(json.dumps(snapshot.to_json())))
    assert again == snapshot
    assert again.groups == snapshot.groups
    assert plan(again, [req("ns/c", gpus=3)], "trireme") == plan(snapshot, [req("ns/c", gpus=3)], "trireme")


def test_placing_shares_one_state_between_identical_nodes() -> None:
    snapshot = cluster(a=node(), b=node(), c=node())
    assert len(snapshot.groups) == 1
    after = plan(snapshot, [req(gpus=1)], "firstfit").snapshot
    assert after.groups[after.states["b"]] == ("b", "c")
    assert after.states["b"] is snapshot.states["b"]


# --- from API objects -----------------------------------------------------------------


def node_object(name: str, gpus: int = 4, **annotations: str) -> dict:
    return {"metadata": {"name": name, "annotations": annotations,
                         "labels": {"nvidia.com/gpu.product": A100, "nvidia.com/gpu.memory": "81920"}},
            "spec": {},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "16", "memory": "64Gi", "pods": "10"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod_object(name: str, node_name: str | None = "n", gpus: int = 0, annotations: dict | None = None,
               cpu: str = "500m", memory: str = "1Gi", phase: str = "Running", **spec: object) -> dict:
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    return {"metadata": {"name": name, "namespace": "ns", "annotations": annotations or {},
                         "labels": {"serving.trireme.io/service": "svc"}},
            "spec": {"nodeName": node_name, **spec, "containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}}]},
            "status": {"phase": phase}}


OBJECT_CASES = [
    ("whole-annotated", [pod_object("p", gpus=2, annotations={"trireme.io/gpus": "1,3"})], (1000, 0, 1000, 0)),
    ("share-fraction", [pod_object("p", annotations={"trireme.io/gpus": "2", "serving.trireme.io/gpu-share": "0.25"})],
     (1000, 1000, 750, 1000)),
    ("share-memory", [pod_object("p", annotations={"trireme.io/gpus": "0", "serving.trireme.io/gpu-share": "40Gi"})],
     (500, 1000, 1000, 1000)),
    ("two-shares-one-gpu", [pod_object(f"p{i}", annotations={"trireme.io/gpus": "1",
                                                              "serving.trireme.io/gpu-share": "0.5"})
                            for i in range(2)], (1000, 0, 1000, 1000)),
    ("unannotated-whole", [pod_object("p", gpus=1, annotations={"trireme.io/gpus": "0"}), pod_object("q", gpus=2)],
     (0, 0, 0, 1000)),
    ("finished-holds-nothing", [pod_object("p", gpus=4, phase="Succeeded")], (1000,) * 4),
    ("unbound-holds-nothing", [pod_object("p", node_name=None, gpus=4)], (1000,) * 4),
]


@pytest.mark.parametrize(("pods", "free"), [c[1:] for c in OBJECT_CASES], ids=[c[0] for c in OBJECT_CASES])
def test_snapshot_counts_every_bound_pod(pods: list[dict], free: tuple[int, ...]) -> None:
    snapshot = cluster_from_objects([node_object("n")], pods)
    state = snapshot.states["n"]
    assert state.gpu_free_milli == free
    bound = [p for p in pods if p["spec"]["nodeName"] and p["status"]["phase"] == "Running"]
    assert state.cpu_free_milli == 16000 - 500 * len(bound)
    assert state.memory_free_mib == 65536 - 1024 * len(bound)
    assert state.pods_free == 10 - len(bound)


def test_snapshot_reads_islands_and_marks_bad_ones() -> None:
    snapshot = cluster_from_objects([node_object("good", **{"trireme.io/nvlink-islands": "0-1;2-3"}),
                                     node_object("bad", **{"trireme.io/nvlink-islands": "0-x"})], [])
    assert snapshot.states["good"].islands == ((0, 1), (2, 3))
    assert "bad NVLink islands" in snapshot.states["bad"].problem


def test_request_from_pod() -> None:
    pod = pod_object("p", node_name=None, gpus=2, cpu="2", memory="8Gi",
                     annotations={"serving.trireme.io/gpu-products": f"{A100},{T4}"},
                     nodeSelector={"pool": "x"}, tolerations=[{"key": "gpu", "operator": "Exists"}],
                     affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                         {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}})
    request = request_from_pod(pod, spread=True, tensor_parallel=True)
    assert (request.pod, request.cpu_milli, request.memory_mib, request.gpus) == ("ns/p", 2000, 8192, 2)
    assert request.products == (A100, T4) and request.node_selector == (("pool", "x"),)
    assert request.tensor_parallel == 2 and request.service == "svc" and request.spread
    assert request.affinity[0].requirements[0].values == ("a",)
    assert request.tolerations[0].key == "gpu"
    shared = request_from_pod(pod_object("q", None, annotations={"serving.trireme.io/gpu-share": "0.5"}))
    assert (shared.gpus, shared.gpu_milli, shared.shared) == (1, 500, True)


QUANTITY_CASES = [
    ("cpu-milli", parse_cpu_milli, "250m", 250), ("cpu-cores", parse_cpu_milli, "2", 2000),
    ("cpu-float", parse_cpu_milli, 1.5, 1500), ("cpu-bad", parse_cpu_milli, "lots", -1),
    ("cpu-negative", parse_cpu_milli, "-1", -1), ("memory-gi", parse_memory_mib, "10Gi", 10240),
    ("memory-g", parse_memory_mib, "1G", 954), ("memory-bytes", parse_memory_mib, 1048576, 1),
    ("memory-nan", parse_memory_mib, float("nan"), -1),
    ("share-fraction", parse_share, "0.5", (500, 0)), ("share-memory", parse_share, "10Gi", (0, 10240)),
    ("share-too-big", parse_share, "1.5", (0, 0)), ("share-garbage", parse_share, "half", (0, 0)),
]


@pytest.mark.parametrize(("parse", "text", "expected"), [c[1:] for c in QUANTITY_CASES],
                         ids=[c[0] for c in QUANTITY_CASES])
def test_quantities(parse: object, text: object, expected: object) -> None:
    assert parse(text) == expected  # type: ignore[operator]
