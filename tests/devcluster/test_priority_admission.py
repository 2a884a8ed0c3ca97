"""Priority admission, as kube-apiserver's plugin does it: a new pod takes its priority from its
PriorityClass, or from the globalDefault class; an unknown class is refused."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from trireme.devcluster.testing import scratch_namespace

Kubectl = Callable[..., Any]


def pod(name: str, class_name: str | None = None) -> str:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox:1"}]}
    if class_name:
        spec["priorityClassName"] = class_name
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def priority_class(name: str, value: int, global_default: bool = False) -> str:
    return json.dumps({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
                       "value": value, "globalDefault": global_default, "preemptionPolicy": "Never"})


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    with scratch_namespace(kubectl, "prio") as name:
        yield name


def test_priority_comes_from_the_class(kubectl: Kubectl, namespace: str) -> None:
    high = f"high-{namespace}"
    kubectl("apply", "-f", "-", input=priority_class(high, 1000))
    try:
        kubectl("apply", "-n", namespace, "-f", "-", input=pod("p", high))
        spec = json.loads(kubectl("get", "pod", "-n", namespace, "p", "-o", "json").stdout)["spec"]
        assert (spec["priority"], spec["preemptionPolicy"]) == (1000, "Never")
    finally:
        kubectl("delete", "priorityclass", high, check=False)


def test_an_unknown_class_is_refused(kubectl: Kubectl, namespace: str) -> None:
    result = kubectl("apply", "-n", namespace, "-f", "-", input=pod("p", "no-such-class"), check=False)
    assert result.returncode != 0
    assert "no PriorityClass with name no-such-class was found" in result.stderr


def test_without_a_class_priority_is_zero(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=pod("p"))
    spec = json.loads(kubectl("get", "pod", "-n", namespace, "p", "-o", "json").stdout)["spec"]
    assert spec["priority"] == 0 and "priorityClassName" not in spec


def test_the_global_default_class_applies_to_pods_without_one(kubectl: Kubectl, namespace: str) -> None:
    default = f"default-{namespace}"
    kubectl("apply", "-f", "-", input=priority_class(default, 7, global_default=True))
    try:
        kubectl("apply", "-n", namespace, "-f", "-", input=pod("p"))
        spec = json.loads(kubectl("get", "pod", "-n", namespace, "p", "-o", "json").stdout)["spec"]
        assert (spec["priority"], spec["priorityClassName"]) == (7, default)
    finally:
        kubectl("delete", "priorityclass", default, check=False)
