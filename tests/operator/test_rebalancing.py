"""The rebalancer's I/O glue against an in-memory cluster, with fake time and fake Triton probes.

The fragmented cluster of every test: two nodes of two GPUs, a service ``web`` with one replica on
GPU 0 of each, and a pending replica of ``tp`` that needs both GPUs of one node. Each test steps the
rebalancer the way the resync pass does and checks what it wrote: the new replica created and
bound to the freed node's neighbour, the old one drained only after the new one serves and deleted
only when idle, a move abandoned when its replica never serves, stale plans dropped, budgets kept.
The plans themselves are ``scheduler.rebalance``'s and are tested there.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client
from trireme.operator.draining import Drainer
from trireme.operator.rebalancing import Rebalancer
from trireme.operator.reconcile import (DRAINING_ANNOTATION, MOVED_AT_ANNOTATION, REPLACES_ANNOTATION, SERVING_LABEL,
                                        counted_pods)
from trireme.operator.scheduling import ClusterObjects
from trireme.operator.settings import OperatorSettings
from trireme.scheduler.cycle import Bind

START = 1_700_000_000.0
SETTINGS = OperatorSettings(rebalance_interval_s=10.0, rebalance_max_moves=2, move_timeout_s=120.0,
                            min_move_interval_s=600.0, drain_grace_s=3.0, drain_timeout_s=60.0)


def service(name: str, gpus: int, tensor: int = 1) -> dict[str, Any]:
    return {"apiVersion": "serving.trireme.io/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1},
            "spec": {"models": [{"name": "simple"}], "modelRepository": {"uri": "/srv/models"}, "replicas": 1,
                     "gpus": {"count": gpus}, "parallelism": {"tensorParallel": tensor}}}


def node(name: str, gpus: int = 2) -> dict[str, Any]:
    room = {"nvidia.com/gpu": str(gpus), "cpu": "16", "memory": "64Gi", "pods": "110"}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {}},
            "status": {"allocatable": dict(room), "capacity": dict(room),
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(owner: str, index: int, gpus: int, node_name: str | None = None, gpu_indices: str = "",
        ready: bool = True) -> dict[str, Any]:
    name = f"{owner}-r{index}"
    meta: dict[str, Any] = {
        "name": name, "namespace": "ns", "uid": f"uid-{name}", "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {"app.kubernetes.io/managed-by": "trireme", "serving.trireme.io/service": owner,
                   "serving.trireme.io/replica": str(index), SERVING_LABEL: "true"},
        "annotations": {"trireme.io/gpus": gpu_indices} if gpu_indices else {},
        "ownerReferences": [{"apiVersion": "serving.trireme.io/v1alpha1", "kind": "InferenceService",
                             "name": owner, "uid": f"uid-{owner}", "controller": True}]}
    container = {"name": "triton", "image": "triton", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
    spec: dict[str, Any] = {"schedulerName": "trireme", "containers": [container]}
    if node_name:
        spec["nodeName"] = node_name
    status = {"podIP": f"10.0.0.{index + 1}" if node_name else "",
              "conditions": [{"type": "Ready", "status": "True" if ready and node_name else "False"}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


@dataclass
class FakeCluster:
    """The API calls the rebalancer makes, on a dict of pods: what ``SchedulingLoop`` and ``CoreV1Api``
    would read and write. ``taken_between`` adds pods between the plan's read and the fresh one."""

    pods: dict[str, dict[str, Any]]
    services: dict[str, dict[str, Any]]
    budgets: dict[str, int]
    nodes: list[dict[str, Any]] = field(default_factory=lambda: [node("a"), node("b")])
    reads: int = 0
    taken_between: list[dict[str, Any]] = field(default_factory=list)
    scheduler_name: str = "trireme"
    default_policy: str = "trireme"
    bound: list[Bind] = field(default_factory=list)

    # -- SchedulingLoop ---------------------------------------------------------------------------------
    def read(self, extra: Iterable[Mapping[str, Any]] = ()) -> ClusterObjects:
        self.reads += 1
        if self.reads == 3 and self.taken_between:  # step's read, the plan's read, then the fresh one
            for item in self.taken_between:
                self.pods[item["metadata"]["name"]] = item
        return ClusterObjects(copy.deepcopy(self.nodes), copy.deepcopy(list(self.pods.values())),
                              copy.deepcopy(self.services), dict(self.budgets))

    read_replicas = read  # this small cluster holds nothing else

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        yield

    def bind(self, namespace: str, name: str, decision: Bind) -> None:
        self.bound.append(decision)
        found = self.pods[name]
        found["spec"]["nodeName"] = decision.node
        found["metadata"].setdefault("annotations", {})["trireme.io/gpus"] = ",".join(map(str, decision.gpu_indices))

    def is_pending_here(self, item: Mapping[str, Any]) -> bool:
        return not item["spec"].get("nodeName") and not item["metadata"].get("deletionTimestamp")

    # -- CoreV1Api --------------------------------------------------------------------------------------
    def create_namespaced_pod(self, namespace: str, body: dict[str, Any], **_: Any) -> None:
        created = copy.deepcopy(body)
        created["metadata"]["uid"] = f"uid-{created['metadata']['name']}"
        created["status"] = {"conditions": [{"type": "Ready", "status": "False"}]}
        self.pods[created["metadata"]["name"]] = created

    def patch_namespaced_pod(self, name: str, namespace: str, body: dict[str, Any], **_: Any) -> None:
        meta = self.pods[name]["metadata"]
        for key in ("labels", "annotations"):
            for k, v in (body["metadata"].get(key) or {}).items():
                if v is None:
                    meta.setdefault(key, {}).pop(k, None)
                else:
                    meta.setdefault(key, {})[k] = v

    def patch_namespaced_pod_status(self, name: str, namespace: str, body: dict[str, Any], **_: Any) -> None:
        self.pods[name]["status"].update(body["status"])

    def delete_namespaced_pod(self, name: str, namespace: str, **_: Any) -> None:
        self.pods.pop(name, None)

    def serve(self, name: str) -> None:
        """The pod's Triton came up: Ready, with an address."""
        self.pods[name]["status"] = {"podIP": "10.0.1.9", "conditions": [{"type": "Ready", "status": "True"}]}


@dataclass
class Harness:
    cluster: FakeCluster
    rebalancer: Rebalancer
    clock: list[float]
    events: list[tuple[str, str, str, str]]
    triton: dict[str, tuple[float, float]]
    models_ready: set[str]
    steps: list[str]

    def step(self, advance: float = 0.0) -> list[Any]:
        self.clock[0] += advance
        return self.rebalancer.step()

    def reasons(self) -> list[tuple[str, str]]:
        return [(owner, reason) for owner, _, reason, _ in self.events]


def fragmented(**budgets: int) -> FakeCluster:
    pods = [pod("web", 0, 1, "a", "0"), pod("web", 1, 1, "b", "0"), pod("tp", 0, 2)]
    return FakeCluster({p["metadata"]["name"]: p for p in pods},
                       {"ns/web": service("web", 1), "ns/tp": service("tp", 2, tensor=2)},
                       {"ns/web": 1, "ns/tp": 1, **{f"ns/{k}": v for k, v in budgets.items()}})


def harness_for(cluster: FakeCluster, settings: OperatorSettings = SETTINGS) -> Harness:
    clock = [START]
    events: list[tuple[str, str, str, str]] = []
    triton: dict[str, tuple[float, float]] = {}
    ready: set[str] = set()
    steps: list[str] = []
    drainer = Drainer(cluster, settings, probe=lambda ip, timeout: triton.get(ip, (0.0, 0.0)))  # type: ignore[arg-type]
    rebalancer = Rebalancer(client.ApiClient(), settings, cluster,  # type: ignore[arg-type]
                            lambda obj, kind, reason, message: events.append((obj["metadata"]["name"], kind, reason,
                                                                               message)),
                            lambda pods, models, timeout: {p["metadata"]["name"] for p in pods} & ready,
                            drainer, clock=lambda: clock[0], observe=steps.append)
    rebalancer.core = cluster  # type: ignore[assignment]  # every API call goes to the fake cluster
    return Harness(cluster, rebalancer, clock, events, triton, ready, steps)


@pytest.fixture
def harness() -> Harness:
    return harness_for(fragmented())


def test_a_move_is_make_before_break(harness: Harness) -> None:
    cluster = harness.cluster
    (started,) = harness.step()
    new = cluster.pods[started.new_pod]
    old_name = started.move.pod.partition("/")[2]
    assert started.new_pod == "web-r2"  # a new replica index: the old pod keeps its name until it goes
    assert new["spec"]["nodeName"] == started.move.to_node != started.move.from_node
    assert new["metadata"]["annotations"][REPLACES_ANNOTATION] == f"uid-{old_name}"
    assert new["metadata"]["annotations"][MOVED_AT_ANNOTATION] == "2023-11-14T22:13:20Z"
    assert new["metadata"]["annotations"]["trireme.io/gpus"] == "1"
    assert cluster.pods["tp-r0"]["status"]["nominatedNodeName"] == started.move.from_node
    assert harness.reasons() == [("web", "Moving"), ("tp", "Defragmenting")]
    assert "defragment" in harness.events[0][3]
    # the new replica is not counted while the old one serves: reconcile sees two replicas, not three
    assert sorted(p["metadata"]["name"] for p in counted_pods(cluster.pods.values())
                  if p["metadata"]["name"].startswith("web")) == ["web-r0", "web-r1"]

    harness.step(advance=5.0)  # not serving yet: the old one stays in the Service
    assert cluster.pods[old_name]["metadata"]["labels"][SERVING_LABEL] == "true"
    cluster.serve("web-r2")
    harness.models_ready.add("web-r2")
    harness.step(advance=1.0)  # serving: the old one leaves the Service and drains
    old = cluster.pods[old_name]
    assert old["metadata"]["labels"][SERVING_LABEL] == "false" and old["metadata"]["annotations"][DRAINING_ANNOTATION]
    assert sorted(p["metadata"]["name"] for p in counted_pods(cluster.pods.values())
                  if p["metadata"]["name"].startswith("web")) == sorted({"web-r0", "web-r1", "web-r2"} - {old_name})
    harness.triton[old["status"]["podIP"]] = (1.0, 50.0)  # still answering a request
    harness.step(advance=4.0)
    harness.triton[old["status"]["podIP"]] = (0.0, 51.0)
    harness.step(advance=1.0)
    assert old_name in cluster.pods  # a request completed since the last probe: not idle yet
    harness.step(advance=1.0)  # idle between two probes, past the grace period: deleted
    assert old_name not in cluster.pods
    assert REPLACES_ANNOTATION not in cluster.pods["web-r2"]["metadata"]["annotations"]
    assert harness.reasons()[-1] == ("web", "Moved")
    assert cluster.bound == [Bind("ns/web-r2", started.move.to_node, (1,))]
    assert harness.steps == ["started", "done"]


def test_a_replacement_that_never_serves_is_abandoned() -> None:
    harness = harness_for(fragmented(), dataclasses.replace(SETTINGS, rebalance_interval_s=150.0))
    (started,) = harness.step()
    harness.step(advance=60.0)
    assert started.new_pod in harness.cluster.pods
    harness.step(advance=61.0)  # past the move timeout (120 s)
    assert started.new_pod not in harness.cluster.pods
    assert harness.reasons()[-1] == ("web", "MoveFailed")
    assert all(p["metadata"]["labels"][SERVING_LABEL] == "true" for p in harness.cluster.pods.values())
    (again,) = harness.step(advance=30.0)  # the next plan moves the other replica: the attempt counts as a move
    assert again.move.pod != started.move.pod
    assert harness.steps == ["started", "abandoned", "started"]


def test_a_failed_replacement_puts_a_draining_original_back() -> None:
    harness = harness_for(fragmented())
    (started,) = harness.step()
    harness.cluster.serve(started.new_pod)
    harness.models_ready.add(started.new_pod)
    harness.step(advance=1.0)
    old_name = started.move.pod.partition("/")[2]
    assert harness.cluster.pods[old_name]["metadata"]["labels"][SERVING_LABEL] == "false"
    harness.cluster.pods[started.new_pod]["status"] = {"phase": "Failed", "conditions": []}
    harness.triton[harness.cluster.pods[old_name]["status"]["podIP"]] = (2.0, 0.0)  # busy: not drained yet
    harness.step(advance=1.0)
    assert started.new_pod not in harness.cluster.pods
    assert harness.cluster.pods[old_name]["metadata"]["labels"][SERVING_LABEL] == "true"
    assert harness.reasons()[-1] == ("web", "MoveFailed")


STALE_CASES = [
    # another pod took the target GPU between the plan and the fresh read
    ("target-taken", [pod("other", 0, 1, "a", "1"), pod("other", 1, 1, "b", "1")]),
]


@pytest.mark.parametrize("taken", [c[1] for c in STALE_CASES], ids=[c[0] for c in STALE_CASES])
def test_a_stale_plan_is_dropped(taken: list[dict[str, Any]]) -> None:
    cluster = fragmented()
    cluster.services["ns/other"] = service("other", 1)
    cluster.taken_between = taken
    harness = harness_for(cluster)
    assert harness.step() == []
    assert not any(n.startswith("web-r2") for n in cluster.pods) and harness.events == []


BUDGET_CASES = [
    ("no-disruption-allowed", {"web": 0}, SETTINGS),
    ("rebalancer-off", {}, OperatorSettings(rebalance_interval_s=0.0)),
    ("no-move-slot", {}, OperatorSettings(rebalance_max_moves=0)),
]


@pytest.mark.parametrize(("budgets", "settings"), [c[1:] for c in BUDGET_CASES], ids=[c[0] for c in BUDGET_CASES])
def test_budgets_hold_moves_back(budgets: dict[str, int], settings: OperatorSettings) -> None:
    harness = harness_for(fragmented(**budgets), settings)
    assert harness.step() == []
    assert sorted(harness.cluster.pods) == ["tp-r0", "web-r0", "web-r1"]


def test_a_hot_node_sheds_a_replica_to_a_cool_one() -> None:
    pods = [pod("web", 0, 1, "a", "0"), pod("db", 0, 1, "a", "1"), pod("web", 1, 1, "b", "0")]
    cluster = FakeCluster({p["metadata"]["name"]: p for p in pods},
                          {"ns/web": service("web", 1), "ns/db": service("db", 1)}, {"ns/web": 1, "ns/db": 1})
    harness = harness_for(cluster)
    harness.rebalancer.utilisation = lambda at: {("ns", "web-r0"): 0.97, ("ns", "db-r0"): 0.95,
                                                 ("ns", "web-r1"): 0.1}
    (started,) = harness.step()
    assert (started.move.from_node, started.move.to_node) == ("a", "b")
    assert started.move.reason.startswith("hot-node")
    harness.rebalancer.utilisation = lambda at: {}  # nothing measured: nothing is hot
    harness.cluster.pods.pop(started.new_pod)
    assert harness.step(advance=SETTINGS.rebalance_interval_s) == []


def test_one_move_at_a_time_per_plan_interval_and_none_while_the_room_clears(harness: Harness) -> None:
    (started,) = harness.step()
    assert harness.step(advance=1.0) == []  # within the interval: only moves in flight advance
    assert harness.step(advance=10.0) == []  # tp waits on the node being cleared: nothing more to move
    assert [n for n in harness.cluster.pods if n.startswith("web")] == ["web-r0", "web-r1", started.new_pod]


def test_a_node_is_cleared_over_several_plans_when_one_may_not_do_it_all() -> None:
    """tp needs the 4 GPUs of node a, where two replicas of web run; web's budget lets one move at a time."""
    pods = [pod("web", 0, 1, "a", "0"), pod("web", 1, 1, "a", "1"), pod("tp", 0, 4)]
    cluster = FakeCluster({p["metadata"]["name"]: p for p in pods},
                          {"ns/web": service("web", 1), "ns/tp": service("tp", 4, tensor=4)},
                          {"ns/web": 1, "ns/tp": 1}, nodes=[node("a", 4), node("b", 2)])
    harness = harness_for(cluster)
    (first,) = harness.step()
    assert (first.move.from_node, first.move.to_node) == ("a", "b")
    assert cluster.pods["tp-r0"]["status"]["nominatedNodeName"] == "a"
    assert harness.reasons() == [("web", "Moving"), ("tp", "Defragmenting")]
    assert harness.events[-1][3].endswith("more moves follow once these are done")
    cluster.serve(first.new_pod)
    harness.models_ready.add(first.new_pod)
    old = first.move.pod.partition("/")[2]
    for _ in range(10):  # drained and deleted within the grace period and two idle probes
        assert harness.step(advance=1.0) == []  # no second move while the first is in flight
        if old not in cluster.pods:
            break
    assert old not in cluster.pods
    (second,) = harness.step(advance=SETTINGS.rebalance_interval_s)
    assert (second.move.from_node, second.move.to_node) == ("a", "b") and second.move.pod != first.move.pod
    assert harness.reasons()[-2:] == [("web", "Moving"), ("tp", "Defragmenting")]
    assert "more moves follow" not in harness.events[-1][3]  # the plan now makes room for tp
