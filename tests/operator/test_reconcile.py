"""The objects an InferenceService turns into, the pod changes that reach them, the status
reported, the settings, and the scheduling decisions of one cycle (no cluster needed)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import pytest
from trireme.operator.api import InferenceService
from trireme.operator.reconcile import (MetricsObservation, desired_pdb, desired_pods, desired_service,
                                        disruptions_allowed, invalid_status, model_repository, pod_changes, pod_name,
                                        service_status)
from trireme.operator.settings import OperatorSettings, add_arguments

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = datetime(2026, 1, 2, 4, 0, 0, tzinfo=UTC)


def tis(**spec: Any) -> InferenceService:
    body = {"apiVersion": "serving.trireme.io/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": "svc", "namespace": "ns", "uid": "u-1", "generation": 3},
            "spec": {"models": [{"name": "simple"}], "modelRepository": {"uri": "/srv/models"}, **spec}}
    return InferenceService.from_api(body)


# -- pods ------------------------------------------------------------------------------------------------

NAME_CASES = [("single-stage", (0, 0, 1), "svc-r0"), ("replica-12", (12, 0, 1), "svc-r12"),
              ("pipeline", (1, 2, 3), "svc-r1-p2")]


@pytest.mark.parametrize(("args", "expected"), [c[1:] for c in NAME_CASES], ids=[c[0] for c in NAME_CASES])
def test_pod_name(args: tuple[int, int, int], expected: str) -> None:
    assert pod_name("svc", *args) == expected


REPOSITORY_CASES = [
    ("absolute-path", "/srv/models", "/models", {"hostPath": {"path": "/srv/models", "type": "Directory"}}),
    ("relative-path", "examples/models", "/models", {"hostPath": {"path": "examples/models", "type": "Directory"}}),
    ("file-url", "file:///srv/models", "/models", {"hostPath": {"path": "/srv/models", "type": "Directory"}}),
    ("pvc", "pvc://claim/sub/dir", "/models/sub/dir", {"persistentVolumeClaim": {"claimName": "claim",
                                                                                "readOnly": True}}),
    ("s3-passes-through", "s3://bucket/models", "s3://bucket/models", None),
    ("gs-passes-through", "gs://bucket/models", "gs://bucket/models", None),
]


@pytest.mark.parametrize(("uri", "argument", "volume"), [c[1:] for c in REPOSITORY_CASES],
                         ids=[c[0] for c in REPOSITORY_CASES])
def test_model_repository(uri: str, argument: str, volume: dict[str, Any] | None) -> None:
    value, volumes, mounts = model_repository(uri)
    assert value == argument
    if volume is None:
        assert (volumes, mounts) == ([], [])
    else:
        assert volumes == [{"name": "model-repository", **volume}]
        assert mounts == [{"name": "model-repository", "mountPath": "/models", "readOnly": True}]


def test_replica_pod_is_complete() -> None:
    (pod,) = desired_pods(tis(gpus={"count": 2, "products": ["NVIDIA-A100-SXM4-80GB"]},
                              runtime={"args": ["--log-verbose=1"], "resources": {"requests": {"cpu": "1"}}},
                              scheduling={"nodeSelector": {"pool": "a"},
                                          "tolerations": [{"key": "gpu", "operator": "Exists"}]}), "trireme")
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "svc-r0"
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "trireme", "serving.trireme.io/service": "svc",
                              "serving.trireme.io/replica": "0", "serving.trireme.io/serving": "true"}
    assert meta["ownerReferences"] == [{"apiVersion": "serving.trireme.io/v1alpha1", "kind": "InferenceService",
                                        "name": "svc", "uid": "u-1", "controller": True, "blockOwnerDeletion": True}]
    assert meta["annotations"] == {"serving.trireme.io/gpu-products": "NVIDIA-A100-SXM4-80GB",
                                   "serving.trireme.io/template-hash": meta["annotations"]["serving.trireme.io/template-hash"]}
    assert len(meta["annotations"]["serving.trireme.io/template-hash"]) == 16
    assert spec["schedulerName"] == "trireme"
    assert spec["nodeSelector"] == {"pool": "a"}
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    (container,) = spec["containers"]
    assert container["args"] == ["--model-repository=/models", "--model-control-mode=explicit", "--load-model=simple",
                                 "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002", "--log-verbose=1"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http", 8000), ("grpc", 8001),
                                                                             ("metrics", 8002)]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"] == {"requests": {"cpu": "1"}, "limits": {"nvidia.com/gpu": "2"}}


PODS_CASES = [
    ("replicas", {"replicas": 3}, ["svc-r0", "svc-r1", "svc-r2"], "1"),
    ("zero", {"replicas": 0}, [], None),
    ("pipeline-splits-gpus", {"replicas": 2, "gpus": {"count": 4}, "parallelism": {"pipelineParallel": 2}},
     ["svc-r0-p0", "svc-r0-p1", "svc-r1-p0", "svc-r1-p1"], "2"),
    ("shared-gpu-has-no-whole-gpus", {"gpus": {"fraction": 0.5}}, ["svc-r0"], None),
]


@pytest.mark.parametrize(("spec", "names", "gpus"), [c[1:] for c in PODS_CASES], ids=[c[0] for c in PODS_CASES])
def test_desired_pods(spec: dict[str, Any], names: list[str], gpus: str | None) -> None:
    pods = desired_pods(tis(**spec), "trireme")
    assert [p["metadata"]["name"] for p in pods] == names
    for pod in pods:
        limits = pod["spec"]["containers"][0].get("resources", {}).get("limits", {})
        assert limits.get("nvidia.com/gpu") == gpus


def _existing(name: str, replica: int, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"serving.trireme.io/replica": str(replica)}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


CHANGE_CASES = [
    ("create-missing", 3, [_existing("svc-r1", 1)], ["svc-r0", "svc-r2"], []),
    ("nothing-to-do", 2, [_existing("svc-r0", 0), _existing("svc-r1", 1)], [], []),
    ("delete-highest-first", 1, [_existing("svc-r0", 0), _existing("svc-r2", 2), _existing("svc-r10", 10),
                                  _existing("svc-r1", 1)], [], ["svc-r10", "svc-r2", "svc-r1"]),
    ("being-deleted-is-left-alone", 1, [_existing("svc-r0", 0, True), _existing("svc-r1", 1, True)], [], []),
]


@pytest.mark.parametrize(("replicas", "existing", "create", "delete"), [c[1:] for c in CHANGE_CASES],
                         ids=[c[0] for c in CHANGE_CASES])
def test_pod_changes(replicas: int, existing: list[dict[str, Any]], create: list[str], delete: list[str]) -> None:
    changes = pod_changes(desired_pods(tis(replicas=replicas), "trireme"), existing)
    assert [p["metadata"]["name"] for p in changes.create] == create
    assert changes.delete == delete


CURRENT = desired_pods(tis(replicas=3), "trireme")[0]["metadata"]["annotations"]["serving.trireme.io/template-hash"]


def _made(name: str, replica: int, template: str | None, ready: bool) -> dict[str, Any]:
    pod = _existing(name, replica)
    if template is not None:
        pod["metadata"]["annotations"] = {"serving.trireme.io/template-hash": template}
    pod["status"] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return pod


ROLLOUT_CASES = [
    ("current-pods-stay", [_made(f"svc-r{i}", i, CURRENT, True) for i in range(3)], 1, []),
    ("one-ready-outdated-per-budget-highest-first", [_made(f"svc-r{i}", i, "old", True) for i in range(3)], 1,
     ["svc-r2"]),
    ("budget-of-two", [_made(f"svc-r{i}", i, "old", True) for i in range(3)], 2, ["svc-r2", "svc-r1"]),
    ("no-budget-no-ready-replaced", [_made(f"svc-r{i}", i, "old", True) for i in range(3)], 0, []),
    ("unready-outdated-always-replaced", [_made("svc-r0", 0, "old", False), _made("svc-r1", 1, "old", True),
                                          _made("svc-r2", 2, CURRENT, True)], 0, ["svc-r0"]),
    ("pods-without-a-hash-are-left-alone", [_made(f"svc-r{i}", i, None, True) for i in range(3)], 3, []),
]


@pytest.mark.parametrize(("existing", "may_disrupt", "delete"), [c[1:] for c in ROLLOUT_CASES],
                         ids=[c[0] for c in ROLLOUT_CASES])
def test_a_spec_change_replaces_pods_within_the_budget(existing: list[dict[str, Any]], may_disrupt: int,
                                                       delete: list[str]) -> None:
    changes = pod_changes(desired_pods(tis(replicas=3), "trireme"), existing, may_disrupt)
    assert changes.create == [] and changes.delete == delete


@pytest.mark.parametrize(("budget", "ready", "allowed"), [
    (1, 4, 1), (1, 3, 0), (2, 3, 1), ("50%", 4, 2), ("50%", 3, 1), ("10%", 4, 1), (0, 4, 0),
], ids=["one", "one-already-down", "two-one-down", "half-of-four", "half-one-down", "percent-rounds-up", "zero"])
def test_disruptions_allowed(budget: int | str, ready: int, allowed: int) -> None:
    service = tis(replicas=4, disruptionBudget={"maxUnavailable": budget})
    pods = [_made(f"svc-r{i}", i, CURRENT, i < ready) for i in range(4)]
    assert disruptions_allowed(service, pods, 4) == allowed


def test_a_changed_spec_changes_the_hash() -> None:
    before = desired_pods(tis(), "trireme")[0]["metadata"]["annotations"]["serving.trireme.io/template-hash"]
    after = desired_pods(tis(runtime={"args": ["--log-verbose=1"]}), "trireme")[0]
    assert after["metadata"]["annotations"]["serving.trireme.io/template-hash"] != before
    assert desired_pods(tis(replicas=5), "trireme")[0]["metadata"]["annotations"][
        "serving.trireme.io/template-hash"] == before  # the replica count is not part of a pod


def test_service_and_budget() -> None:
    service, budget = desired_service(tis()), desired_pdb(tis(disruptionBudget={"maxUnavailable": "25%"}))
    selector = {"app.kubernetes.io/managed-by": "trireme", "serving.trireme.io/service": "svc"}
    assert service["spec"]["selector"] == {**selector, "serving.trireme.io/serving": "true"}  # no draining replica
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http", 8000), ("grpc", 8001),
                                                                         ("metrics", 8002)]
    assert budget["spec"] == {"maxUnavailable": "25%", "selector": {"matchLabels": selector}}
    assert service["metadata"]["ownerReferences"][0]["uid"] == budget["metadata"]["ownerReferences"][0]["uid"] == "u-1"


# -- status ----------------------------------------------------------------------------------------------


def _pod(name: str, replica: int, node: str | None = None, gpus: str = "", ready: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"serving.trireme.io/replica": str(replica)},
                         "annotations": {"trireme.io/gpus": gpus} if gpus else {}},
            "spec": {"nodeName": node} if node else {},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


NOT_DEGRADED = ("False", "AsExpected")
NO_AUTOSCALING = ("Unknown", "AutoscalingDisabled")
STATUS_CASES = [
    ("all-ready", 2, [_pod("svc-r0", 0, "n", "0", True), _pod("svc-r1", 1, "n", "1", True)], {"svc-r0", "svc-r1"},
     {}, 2, {"Ready": ("True", "AllReplicasReady"), "Scheduled": ("True", "AllPodsPlaced"),
             "Progressing": ("False", "Stable"), "Degraded": NOT_DEGRADED, "MetricsAvailable": NO_AUTOSCALING}),
    ("pod-ready-but-model-not", 1, [_pod("svc-r0", 0, "n", "0", True)], set(), {}, 0,
     {"Ready": ("False", "ReplicasNotReady"), "Scheduled": ("True", "AllPodsPlaced"),
      "Progressing": ("True", "Reconciling"), "Degraded": ("True", "ModelNotReady"),
      "MetricsAvailable": NO_AUTOSCALING}),
    ("unschedulable", 2, [_pod("svc-r0", 0, "n", "0", True), _pod("svc-r1", 1)], {"svc-r0"},
     {"svc-r1": "needs 1× GPU on one node; largest free block is 0"}, 1,
     {"Ready": ("False", "ReplicasNotReady"), "Scheduled": ("False", "Unschedulable"),
      "Progressing": ("True", "Reconciling"), "Degraded": NOT_DEGRADED, "MetricsAvailable": NO_AUTOSCALING}),
    ("not-created-yet", 1, [], set(), {}, 0,
     {"Ready": ("False", "ReplicasNotReady"), "Scheduled": ("False", "Pending"),
      "Progressing": ("True", "Reconciling"), "Degraded": NOT_DEGRADED, "MetricsAvailable": NO_AUTOSCALING}),
]


@pytest.mark.parametrize(("replicas", "pods", "models_ready", "unschedulable", "ready_replicas", "conditions"),
                         [c[1:] for c in STATUS_CASES], ids=[c[0] for c in STATUS_CASES])
def test_service_status(replicas: int, pods: list[dict[str, Any]], models_ready: set[str],
                        unschedulable: dict[str, str], ready_replicas: int,
                        conditions: dict[str, tuple[str, str]]) -> None:
    status = service_status(tis(replicas=replicas), pods, models_ready, unschedulable, NOW)
    assert status["readyReplicas"] == ready_replicas
    assert status["desiredReplicas"] == replicas
    assert status["replicas"] == len(pods)
    assert _conditions(status) == conditions
    assert all(c["observedGeneration"] == 3 and c["lastTransitionTime"] == "2026-01-02T03:04:05Z"
               for c in status["conditions"])
    assert status["endpoint"] == "svc.ns.svc:8000"
    assert status["selector"] == "app.kubernetes.io/managed-by=trireme,serving.trireme.io/service=svc"
    for reason in unschedulable.values():
        scheduled = next(c for c in status["conditions"] if c["type"] == "Scheduled")
        assert reason in scheduled["message"]


def test_status_placements_and_stable_transition_times() -> None:
    pods = [_pod("svc-r0", 0, "node-a", "2,3", True)]
    first = service_status(tis(), pods, {"svc-r0"}, {}, NOW)
    assert first["placements"] == [{"replica": 0, "ready": True,
                                    "pods": [{"name": "svc-r0", "node": "node-a", "gpus": [2, 3]}]}]
    again = InferenceService.from_api({**tis().to_api(), "metadata": tis().metadata.model_dump(by_alias=True),
                                       "status": first})
    second = service_status(again, pods, {"svc-r0"}, {}, LATER)
    assert second == first  # nothing changed: nothing to write
    third = service_status(again, pods, set(), {}, LATER)
    ready = next(c for c in third["conditions"] if c["type"] == "Ready")
    scheduled = next(c for c in third["conditions"] if c["type"] == "Scheduled")
    assert ready["lastTransitionTime"] == "2026-01-02T04:00:00Z"
    assert scheduled["lastTransitionTime"] == "2026-01-02T03:04:05Z"


def _with_status(service: InferenceService, ready_replicas: int, degraded: str | None = None,
                 ready: str = "False") -> InferenceService:
    """``service`` as it was reported before: readyReplicas, and the Degraded condition when given."""
    conditions = [{"type": "Ready", "status": ready, "reason": "R", "message": "",
                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    if degraded:
        conditions.append({"type": "Degraded", "status": degraded, "reason": "R", "message": "",
                           "lastTransitionTime": "2026-01-01T00:00:00Z"})
    return InferenceService.from_api({**service.to_api(), "metadata": service.metadata.model_dump(by_alias=True),
                                      "status": {"readyReplicas": ready_replicas, "conditions": conditions}})


def _crash_looping(pod: dict[str, Any]) -> dict[str, Any]:
    pod["status"]["containerStatuses"] = [{"name": "triton", "restartCount": 4,
                                           "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]
    return pod


def _ready(*names: str) -> list[dict[str, Any]]:
    return [_pod(name, int(name.rsplit("r", 1)[1]), "n", str(i), True) for i, name in enumerate(names)]


# (id, spec.replicas, readyReplicas before, Degraded before, pods, pods whose models are ready, expected, in message)
DEGRADED_CASES = [
    ("coming-up-is-not-degraded", 2, 0, None, [_pod("svc-r0", 0), _pod("svc-r1", 1)], set(), NOT_DEGRADED, ""),
    ("scaling-up-is-not-degraded", 3, 2, "False", _ready("svc-r0", "svc-r1") + [_pod("svc-r2", 2)],
     {"svc-r0", "svc-r1"}, NOT_DEGRADED, ""),
    ("scaling-down-is-not-degraded", 1, 2, "False", _ready("svc-r0"), {"svc-r0"}, NOT_DEGRADED, ""),
    ("a-serving-replica-is-lost", 2, 2, "False", _ready("svc-r0") + [_pod("svc-r1", 1, "n", "1")], {"svc-r0"},
     ("True", "ReplicasUnavailable"), "1 of 2 replicas ready"),
    ("stays-degraded-until-all-are-back", 2, 1, "True", _ready("svc-r0") + [_pod("svc-r1", 1, "n", "1")],
     {"svc-r0"}, ("True", "ReplicasUnavailable"), "1 of 2 replicas ready"),
    ("recovers-when-all-are-back", 2, 1, "True", _ready("svc-r0", "svc-r1"), {"svc-r0", "svc-r1"}, NOT_DEGRADED, ""),
    ("crash-loop", 1, 0, None, [_crash_looping(_pod("svc-r0", 0, "n", "0"))], set(), ("True", "CrashLoopBackOff"),
     "svc-r0/triton"),
    ("model-not-ready-on-a-ready-pod", 2, 2, "False", _ready("svc-r0", "svc-r1"), {"svc-r0"},
     ("True", "ModelNotReady"), "not ready on svc-r1"),
]


@pytest.mark.parametrize(("replicas", "served", "before", "pods", "models_ready", "expected", "message"),
                         [c[1:] for c in DEGRADED_CASES], ids=[c[0] for c in DEGRADED_CASES])
def test_degraded(replicas: int, served: int, before: str | None, pods: list[dict[str, Any]], models_ready: set[str],
                  expected: tuple[str, str], message: str) -> None:
    service = _with_status(tis(replicas=replicas), served, before, ready="True" if served else "False")
    status = service_status(service, pods, models_ready, {}, LATER)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == expected
    assert message in degraded["message"]
    assert degraded["observedGeneration"] == 3
    changed = before != expected[0]
    assert degraded["lastTransitionTime"] == ("2026-01-02T04:00:00Z" if changed else "2026-01-01T00:00:00Z")


AUTOSCALING = {"enabled": True, "maxReplicas": 4}
METRICS_CASES = [
    ("autoscaling-off", {}, None, ("Unknown", "AutoscalingDisabled")),
    ("not-read-yet", {"autoscaling": AUTOSCALING}, None, ("Unknown", "NotRead")),
    ("read", {"autoscaling": AUTOSCALING}, MetricsObservation(True, "MetricsRead", "queue time 3 ms"),
     ("True", "MetricsRead")),
    ("stale", {"autoscaling": AUTOSCALING}, MetricsObservation(False, "StaleMetrics", "no sample for 5m"),
     ("False", "StaleMetrics")),
]


@pytest.mark.parametrize(("spec", "observation", "expected"), [c[1:] for c in METRICS_CASES],
                         ids=[c[0] for c in METRICS_CASES])
def test_metrics_available(spec: dict[str, Any], observation: MetricsObservation | None,
                           expected: tuple[str, str]) -> None:
    status = service_status(tis(**spec), [], set(), {}, NOW, observation)
    available = next(c for c in status["conditions"] if c["type"] == "MetricsAvailable")
    assert (available["status"], available["reason"]) == expected
    assert available["message"] and available["observedGeneration"] == 3


def test_conditions_follow_kubernetes_conventions() -> None:
    status = service_status(tis(replicas=2), _ready("svc-r0"), {"svc-r0"}, {}, NOW)
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Scheduled", "Progressing", "Degraded",
                                                         "MetricsAvailable"]
    for cond in status["conditions"]:
        assert set(cond) == {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}
        assert cond["status"] in ("True", "False", "Unknown")
    InferenceService.from_api({**tis().to_api(), "status": status})  # the schema accepts what is reported


def test_invalid_status_names_the_field() -> None:
    status = invalid_status("spec.modelRepository.uri: uri must be a local path", 7, [], NOW)
    assert status == {"observedGeneration": 7, "conditions": [{
        "type": "Ready", "status": "False", "reason": "InvalidSpec",
        "message": "spec.modelRepository.uri: uri must be a local path", "lastTransitionTime": "2026-01-02T03:04:05Z",
        "observedGeneration": 7}]}


# -- settings --------------------------------------------------------------------------------------------

SETTINGS_CASES = [
    ("defaults", [], {}, OperatorSettings()),
    ("environment", [], {"TRIREME_NAMESPACES": "a, b", "TRIREME_RECONCILE_INTERVAL_S": "5",
                         "TRIREME_STANDALONE": "false"},
     OperatorSettings(namespaces=("a", "b"), reconcile_interval_s=5.0, standalone=False)),
    ("flags-win", ["--namespace", "x", "--scheduler-name", "mine"], {"TRIREME_NAMESPACES": "a"},
     OperatorSettings(namespaces=("x",), scheduler_name="mine")),
    ("peering-means-not-standalone", ["--peering", "trireme", "--priority", "100"], {},
     OperatorSettings(standalone=False, peering="trireme", priority=100)),
    ("ports", ["--metrics-port", "9090", "--health-port", "8081"], {},
     OperatorSettings(metrics_port=9090, health_port=8081)),
]


@pytest.mark.parametrize(("argv", "environ", "expected"), [c[1:] for c in SETTINGS_CASES],
                         ids=[c[0] for c in SETTINGS_CASES])
def test_settings(argv: list[str], environ: dict[str, str], expected: OperatorSettings) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert OperatorSettings.from_sources(parser.parse_args(argv), environ) == expected


def test_peering_without_a_priority_draws_a_distinct_one() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    drawn = {OperatorSettings.from_sources(parser.parse_args(["--peering", "trireme"]), {}).priority
             for _ in range(20)}
    assert len(drawn) == 20  # kopf pauses every peer that shares its priority with another
    assert all(1 <= p < 2**31 for p in drawn)
    assert OperatorSettings.from_sources(parser.parse_args([]), {}).priority == 0  # standalone: unused


def test_settings_refuse_a_bad_boolean() -> None:
    with pytest.raises(ValueError, match="standalone"):
        OperatorSettings.from_sources(None, {"TRIREME_STANDALONE": "maybe"})
