"""The demo's screen, drawn from a fixed cluster state into a recorded console."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from trireme.loadgen import LoadSnapshot
from trireme.view import ClusterView, Frame, TritonFigures, colours, render, summary_lines


def node(name: str, gpus: int, ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}},
            "status": {"capacity": {"nvidia.com/gpu": str(gpus)},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "Unknown"}]}}


def pod(name: str, service: str, node_name: str | None = None, gpus: str = "", ready: bool = False,
        phase: str = "Pending", unschedulable: str = "", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "labels": {"serving.trireme.io/service": service}}
    if gpus:
        meta["annotations"] = {"trireme.io/gpus": gpus}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:10Z"
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if unschedulable:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                           "message": unschedulable})
    return {"metadata": meta, "spec": {"nodeName": node_name} if node_name else {},
            "status": {"phase": phase, "conditions": conditions,
                       "podIP": f"127.2.0.{name[-1]}" if node_name else None}}


def tis(name: str, replicas: int, ready: int, gpus: int, unschedulable: str = "") -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready >= replicas else "False", "reason": "x"}]
    if unschedulable:
        conditions.append({"type": "Scheduled", "status": "False", "reason": "Unschedulable",
                           "message": unschedulable})
    return {"metadata": {"name": name}, "spec": {"replicas": replicas, "gpus": {"count": gpus}},
            "status": {"replicas": replicas, "readyReplicas": ready, "conditions": conditions}}


def event(at: str, reason: str, kind: str, name: str, message: str, type_: str = "Normal") -> dict[str, Any]:
    return {"metadata": {"name": f"{name}.{reason}"}, "involvedObject": {"kind": kind, "name": name},
            "reason": reason, "message": message, "type": type_, "lastTimestamp": at}


NO_FIT = "large-r0: needs 4× GPU on one node; largest free block is 1"
STATE = ClusterView.from_objects(
    nodes=[node("small-1", 2), node("small-0", 2)],
    pods=[pod("simple-r0", "simple", "small-0", "0", ready=True, phase="Running"),
          pod("simple-r1", "simple", "small-0", "1", phase="Running"),
          pod("simple-r2", "simple", "small-1", "0", deleting=True, phase="Running"),
          pod("large-r0", "large", unschedulable="needs 4× GPU on one node; largest free block is 1")],
    services=[tis("simple", 3, 1, 1), tis("large", 1, 0, 4, unschedulable=NO_FIT)],
    events=[event("2026-01-01T00:00:03Z", "Scheduled", "InferenceService", "simple",
                  "pod simple-r1 bound to node small-0, GPUs [1]"),
            event("2026-01-01T00:00:01Z", "Scheduled", "InferenceService", "simple",
                  "pod simple-r0 bound to node small-0, GPUs [0]"),
            event("2026-01-01T00:00:02Z", "FailedScheduling", "InferenceService", "large",
                  f"pod {NO_FIT}", "Warning")])
LOAD = LoadSnapshot(target_rate=30, rate=29.5, p50_ms=42.0, p99_ms=310.5, sent=120, succeeded=118, failed=1,
                    retried=1, total_p50_ms=41.0, total_p99_ms=300.0, endpoints=1, by_endpoint={"127.2.0.0:8000": 118})


def draw(frame: Frame, width: int = 160) -> str:
    console = Console(record=True, width=width, force_terminal=True, color_system="truecolor")
    console.print(render(frame))
    return console.export_text()


def test_the_state_is_read_from_api_objects() -> None:
    assert [n.name for n in STATE.nodes] == ["small-0", "small-1"]
    assert [(r.name, r.state, r.node, r.gpus) for r in STATE.replicas] == [
        ("large-r0", "Unschedulable", None, ()),
        ("simple-r0", "Ready", "small-0", (0,)),
        ("simple-r1", "Running", "small-0", (1,)),
        ("simple-r2", "Terminating", "small-1", (0,))]
    assert STATE.service("large").problem == NO_FIT
    assert [e.reason for e in STATE.events] == ["Scheduled", "FailedScheduling", "Scheduled"]  # oldest first


def test_a_frame_shows_gpus_replicas_load_and_events() -> None:
    frame = Frame(cluster=STATE, elapsed_s=75, step="waiting for 3 ready replicas of simple",
                  follow="kubectl --kubeconfig ./kubeconfig get tis", load=LOAD,
                  triton=TritonFigures(rate={"simple-r0": 29.0}, queue_ms={"simple-r0": 250.0}))
    text = draw(frame)
    lines = text.splitlines()
    assert "01:15" in text and "waiting for 3 ready replicas of simple" in text
    assert "kubectl --kubeconfig ./kubeconfig get tis" in text
    gpu_row = next(line for line in lines if line.startswith("│ small-0"))
    assert gpu_row.split()[3:5] == ["r0", "r1"]  # node, product, then one cell per GPU
    assert "r2" in next(line for line in lines if line.startswith("│ small-1"))  # still held while terminating
    assert "GPUs  3/4 held" in text
    assert "1/3" in text and NO_FIT in text
    row = next(line for line in lines if "simple-r0" in line and "Ready" in line)
    assert "small-0" in row and "29.0" in row and "250.0" in row
    assert "Terminating" in text and "Unschedulable" in text
    assert "target 30 req/s" in text and "p50 42.0 ms" in text and "p99 310.5 ms" in text
    assert "1 failed" in text and "1 retried" in text
    assert "29.0 inferences/s over 1 replicas" in text
    events = [line for line in lines if "Scheduled" in line and "bound to node" in line]
    assert len(events) == 2 and "simple-r0" in events[0]  # in time order
    assert any("FailedScheduling" in line for line in lines)


@pytest.mark.parametrize("problem, expected", [
    pytest.param("Prometheus is not running (not installed)", "Triton metrics: Prometheus is not running",
                 id="without-prometheus"),
    pytest.param(None, "Triton metrics: waiting for Prometheus", id="before-the-first-scrape"),
])
def test_missing_metrics_are_explained(problem: str | None, expected: str) -> None:
    assert expected in draw(Frame(cluster=STATE, load=LOAD, prometheus_problem=problem))


def test_an_empty_cluster_renders() -> None:
    text = draw(Frame(cluster=ClusterView()))
    assert "no nodes" in text and "no replicas yet" in text and "no events yet" in text
    assert "load generator not started" in text


def test_each_service_keeps_its_colour() -> None:
    assert colours(["simple", "large"]) == colours(["large", "simple", "simple"])
    assert len(set(colours(["a", "b", "c"]).values())) == 3


def test_summary_lines_list_placements() -> None:
    assert summary_lines(STATE)[1].split() == ["simple-r0", "Ready", "small-0", "GPUs", "0"]


AUTOSCALING = {"enabled": True, "minReplicas": 1, "maxReplicas": 3, "signal": "requestRate", "target": 12,
               "latencySLOMilliseconds": 100}
DECISION = {"action": "scale-up", "reason": "scale-up to 3: mean latency 180 ms exceeds the objective 100 ms",
            "lastDecisionTime": "2026-01-01T00:00:09Z", "draining": ["simple-r2"],
            "metrics": {"requestRate": 28.14, "queueTimeMilliseconds": 250.0, "pendingRequests": 8,
                        "neededReplicas": 3}}


def autoscaled(spec_replicas: int = 1, **status: Any) -> dict[str, Any]:
    obj = tis("simple", spec_replicas, 1, 1)
    obj["spec"]["autoscaling"] = AUTOSCALING
    obj["status"].update(status)
    return obj


@pytest.mark.parametrize("obj, desired, action", [
    pytest.param(tis("simple", 2, 2, 1), 2, None, id="fixed-count-from-the-spec"),
    pytest.param(autoscaled(1), 1, "", id="autoscaled-before-the-operator-wrote-status"),
    pytest.param(autoscaled(1, desiredReplicas=3, autoscaler=DECISION), 3, "scale-up", id="the-autoscaler-decides"),
    pytest.param(autoscaled(1, desiredReplicas=0), 0, "", id="a-zero-in-status-is-a-count"),
])
def test_desired_replicas_come_from_status(obj: dict[str, Any], desired: int, action: str | None) -> None:
    service = ClusterView.from_objects([], [], [obj], []).services[0]
    assert service.desired == desired
    assert (service.autoscaler.action if service.autoscaler else None) == action


@pytest.mark.parametrize("labels, deleting, state", [
    pytest.param({"serving.trireme.io/serving": "true"}, False, "Ready", id="serving"),
    pytest.param({"serving.trireme.io/serving": "false"}, False, "Draining", id="taken-out-of-the-service"),
    pytest.param({"serving.trireme.io/serving": "false"}, True, "Terminating", id="drained-and-deleted"),
])
def test_a_draining_replica_is_shown_as_such(labels: dict[str, str], deleting: bool, state: str) -> None:
    obj = pod("simple-r1", "simple", "small-0", "1", ready=True, phase="Running", deleting=deleting)
    obj["metadata"]["labels"].update(labels)
    assert ClusterView.from_objects([], [obj], [], []).replicas[0].state == state


def test_insufficient_gpus_is_a_problem_of_the_service() -> None:
    obj = autoscaled(1, desiredReplicas=2, conditions=[
        {"type": "Scheduled", "status": "False", "reason": "InsufficientGPUs",
         "message": "the load needs 3 replicas but the free GPUs place 2"}])
    assert ClusterView.from_objects([], [], [obj], []).service("simple").problem.startswith("the load needs 3")


def test_the_autoscaler_panel_shows_the_decision_why_and_the_metrics() -> None:
    cluster = ClusterView.from_objects(
        nodes=[node("small-0", 2)],
        pods=[pod("simple-r0", "simple", "small-0", "0", ready=True, phase="Running")],
        services=[autoscaled(1, desiredReplicas=3, autoscaler=DECISION), tis("large", 1, 0, 4)],
        events=[event("2026-01-01T00:00:09Z", "ScaledUp", "InferenceService", "simple",
                      "1 → 3 replicas: scale-up to 3: mean latency 180 ms exceeds the objective 100 ms"),
                event("2026-01-01T00:00:20Z", "Drained", "InferenceService", "simple",
                      "replica 2 (simple-r2) drained and deleted")])
    text = draw(Frame(cluster=cluster, load=LOAD))
    lines = text.splitlines()
    assert "Autoscaler (status.autoscaler)" in text
    decision = next(line for line in lines if "decision" in line)
    assert "scale-up → desiredReplicas 3" in decision
    assert "1-3 replicas, request rate, target 12/s per replica; mean latency under 100 ms" in text
    assert "mean latency 180 ms exceeds the objective 100 ms" in next(line for line in lines if "why" in line)
    assert "28.1 req/s · queue 250.0 ms · pending 8 · needs 3" in text
    assert "simple-r2" in next(line for line in lines if "draining" in line)
    assert "1/3" in next(line for line in lines if "autoscaler 1-3" in line)
    assert "spec.replicas" in next(line for line in lines if line.startswith("│ large"))
    assert any("ScaledUp" in line for line in lines) and any("Drained" in line for line in lines)


def test_without_autoscaled_services_there_is_no_autoscaler_panel() -> None:
    assert "Autoscaler" not in draw(Frame(cluster=STATE))
