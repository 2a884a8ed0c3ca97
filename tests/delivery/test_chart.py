"""The Helm chart (charts/trireme) as CI and a cluster administrator see it: it lints,
renders for each way it is configured, every rendered manifest is valid Kubernetes 1.37,
its RBAC is exactly the reviewed allowlist and never grants wildcards, Secrets or
privilege escalation, the operator pod meets the restricted Pod Security profile, wrong
values are rejected naming the field, and it installs onto the local cluster."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from trireme.devcluster.testing import required_tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "trireme"
REPOSITORY_CRDS = ROOT / "crds"
ALLOWLIST = Path(__file__).with_name("rbac-allowlist.yaml")
RELEASE = "trireme"
NAMESPACE = "trireme-system"
KUBERNETES_VERSION = "1.37.0"
CRD_NAME = "inferenceservices.serving.trireme.io"
TRITON_POD_LABELS = {"app.kubernetes.io/managed-by": "trireme"}
RBAC_KINDS = {"ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"}
# Kinds Kubernetes itself does not define: their shape is checked by hand below.
CUSTOM_KINDS = {"PodMonitor", "ServiceMonitor", "ClusterKopfPeering", "KopfPeering"}
PEERING_CRDS = ["clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"]

Run = Callable[..., CompletedProcess[str]]
Manifest = dict[str, Any]

WATCHED = ("--set-json", 'watchNamespaces=["team-a","team-b"]')
POD_MONITOR = ("--set", "podMonitor.enabled=true")
SERVICE_MONITOR = ("--set", "serviceMonitor.enabled=true")
LEADER_ELECTION = ("--set", "replicas=2")
EVERY_VALUE = (
    *WATCHED, *POD_MONITOR, *SERVICE_MONITOR,
    "--set", "leaderElection.enabled=true,health.port=8181,serviceMonitor.interval=15s",
    "--set-json", 'serviceMonitor.labels={"release":"prometheus"}',
    "--set", "prometheusUrl=http://prometheus-operated.monitoring.svc:9090,logLevel=debug,image.tag=dev",
    "--set-json", 'imagePullSecrets=[{"name":"registry"}]',
    "--set-json", 'nodeSelector={"node-role.kubernetes.io/control-plane":""}',
    "--set-json", 'tolerations=[{"key":"node-role.kubernetes.io/control-plane","operator":"Exists",'
                  '"effect":"NoSchedule"}]',
    "--set-json", 'affinity={"podAntiAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[{"weight":100,'
                  '"podAffinityTerm":{"topologyKey":"kubernetes.io/hostname","labelSelector":{"matchLabels":'
                  '{"app.kubernetes.io/name":"trireme"}}}}]}}',
    "--set-json", 'podAnnotations={"example.com/owner":"platform"}',
    "--set", "defaultPolicy=fgd,prometheusAuth.tokenAudience=prometheus,prometheusAuth.caConfigMap=prometheus-ca",
    "--set-json", 'autoscaler={"intervalSeconds":2.5,"metricsUnavailableAfterSeconds":45,"drainTimeoutSeconds":90}',
    "--set-json", 'rebalancer={"intervalSeconds":0,"maxMoves":1,"moveTimeoutSeconds":300,"minMoveIntervalSeconds":60}',
    "--set-json", 'podMonitor.labels={"release":"prometheus"}',
)

# How the chart is configured in CI: each is linted, rendered and validated.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "default": (),
    "watched-namespaces": WATCHED,
    "pod-monitor": POD_MONITOR,
    "service-monitor": SERVICE_MONITOR,
    "leader-election": LEADER_ELECTION,
    "leader-election-watched-namespaces": (*LEADER_ELECTION, *WATCHED),
    "every-value": EVERY_VALUE,
}
SCENARIO_IDS = list(SCENARIOS)


# ---------------------------------------------------------------------------- helm

@pytest.fixture(scope="module")
def helm_offline(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """helm for commands that need no cluster (lint, template)."""
    binary = required_tool("helm")
    home = tmp_path_factory.mktemp("helm-offline")
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data"), "KUBECONFIG": str(home / "no-kubeconfig")}

    def run(*args: str, check: bool = True) -> CompletedProcess[str]:
        result = subprocess.run([binary, *args], capture_output=True, text=True, env=env, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
        return result
    return run


@pytest.fixture(scope="module")
def render(helm_offline: Run) -> Callable[..., list[Manifest]]:
    """`helm template` (CRDs included) parsed into manifests, once per set of arguments."""
    cache: dict[tuple[str, ...], list[Manifest]] = {}

    def rendered(*args: str) -> list[Manifest]:
        if args not in cache:
            out = helm_offline("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds",
                               *args).stdout
            cache[args] = [doc for doc in yaml.safe_load_all(out) if doc]
        return cache[args]
    return rendered


def the(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def operator_pod(manifests: list[Manifest]) -> Manifest:
    return the(manifests, "Deployment")["spec"]["template"]


def operator_container(manifests: list[Manifest]) -> Manifest:
    containers = operator_pod(manifests)["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def dig(obj: Mapping[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


# ---------------------------------------------------------------------------- lint and render

@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
@pytest.mark.parametrize("args", SCENARIOS.values(), ids=SCENARIO_IDS)
def test_helm_lint_passes(helm_offline: Run, args: tuple[str, ...], strict: bool) -> None:
    flags = ["--strict"] if strict else []
    out = helm_offline("lint", *flags, str(CHART), *args).stdout
    assert "0 chart(s) failed" in out, out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


CRDS = ["CustomResourceDefinition"] * 3  # InferenceService, and kopf's two peering kinds


@pytest.mark.parametrize("args, kinds", [
    pytest.param(SCENARIOS["default"],
                 ["ClusterRole", "ClusterRoleBinding", *CRDS, "Deployment", "Service", "ServiceAccount"], id="default"),
    pytest.param(SCENARIOS["watched-namespaces"],
                 ["ClusterRole", "ClusterRoleBinding", *CRDS, "Deployment", "Role", "Role", "RoleBinding",
                  "RoleBinding", "Service", "ServiceAccount"], id="watched-namespaces"),
    pytest.param(SCENARIOS["pod-monitor"],
                 ["ClusterRole", "ClusterRoleBinding", *CRDS, "Deployment", "PodMonitor", "Service", "ServiceAccount"],
                 id="pod-monitor"),
    pytest.param(SCENARIOS["service-monitor"],
                 ["ClusterRole", "ClusterRoleBinding", *CRDS, "Deployment", "Service", "ServiceAccount",
                  "ServiceMonitor"], id="service-monitor"),
    pytest.param(SCENARIOS["leader-election"],
                 ["ClusterKopfPeering", "ClusterRole", "ClusterRoleBinding", *CRDS, "Deployment", "Service",
                  "ServiceAccount"], id="leader-election"),
    pytest.param(SCENARIOS["leader-election-watched-namespaces"],
                 ["ClusterRole", "ClusterRoleBinding", *CRDS, "Deployment", "KopfPeering", "KopfPeering", "Role",
                  "Role", "RoleBinding", "RoleBinding", "Service", "ServiceAccount"],
                 id="leader-election-watched-namespaces"),
])
def test_chart_renders_these_objects(render: Callable[..., list[Manifest]], args: tuple[str, ...],
                                     kinds: list[str]) -> None:
    assert sorted(m["kind"] for m in render(*args)) == kinds


@pytest.mark.parametrize("args", SCENARIOS.values(), ids=SCENARIO_IDS)
def test_rendered_manifests_are_valid_kubernetes(render: Callable[..., list[Manifest]], args: tuple[str, ...]) -> None:
    checked = 0
    for manifest in render(*args):
        if manifest["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{manifest['kind']}/{manifest['metadata']['name']}: {exc}") from None
        checked += 1
    assert checked >= 8


@pytest.mark.parametrize("manifest, message", [
    pytest.param({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                  "spec": {"ports": [{"port": "http"}]}}, "is not of type 'integer'", id="wrong-type"),
    pytest.param({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s"}, "secretz": []},
                 "Additional properties", id="unknown-field"),
])
def test_the_kubernetes_schema_check_catches_bad_manifests(manifest: Manifest, message: str) -> None:
    with pytest.raises(kubernetes_validate.ValidationError, match=message):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_chart_crds_are_the_repository_crds() -> None:
    repository = {path.name: path.read_text(encoding="utf-8") for path in REPOSITORY_CRDS.glob("*.yaml")}
    chart = {path.name: path.read_text(encoding="utf-8") for path in (CHART / "crds").glob("*.yaml")}
    assert repository, "crds/ holds no CRD"
    assert sorted(chart) == sorted(repository), \
        "charts/trireme/crds/ and crds/ hold different files: run `trireme crds`"
    for name, text in repository.items():
        assert chart[name] == text, f"charts/trireme/crds/{name} differs from crds/{name}: run `trireme crds`"


# ---------------------------------------------------------------------------- RBAC

def _group(api_group: str) -> str:
    return api_group or "core"


def _role_key(manifest: Manifest) -> str:
    meta = manifest["metadata"]
    where = f"{meta['namespace']}/" if "namespace" in meta else ""
    return f"{manifest['kind']}/{where}{meta['name']}"


def rbac_view(manifests: list[Manifest]) -> dict[str, Any]:
    """The chart's RBAC in the allowlist's shape: roles as {"group/resource": sorted verbs},
    bindings as "roleKind/roleName <- ServiceAccount namespace/name"."""
    roles: dict[str, dict[str, list[str]]] = {}
    bindings: dict[str, str] = {}
    for manifest in manifests:
        if manifest["kind"] in {"ClusterRole", "Role"}:
            grants: dict[str, set[str]] = {}
            for rule in manifest.get("rules") or []:
                assert set(rule) <= {"apiGroups", "resources", "verbs"}, \
                    f"{_role_key(manifest)}: rule keys {sorted(rule)} (resourceNames, nonResourceURLs) " \
                    "need allowlisting"
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        grants.setdefault(f"{_group(group)}/{resource}", set()).update(rule["verbs"])
            roles[_role_key(manifest)] = {key: sorted(verbs) for key, verbs in grants.items()}
        elif manifest["kind"] in {"ClusterRoleBinding", "RoleBinding"}:
            subjects = ", ".join(f"{s['kind']} {s.get('namespace', '')}/{s['name']}" for s in manifest["subjects"])
            role = manifest["roleRef"]
            bindings[_role_key(manifest)] = f"{role['kind']}/{role['name']} <- {subjects}"
    return {"roles": roles, "bindings": bindings}


ALLOWLIST_SCENARIOS = {"all-namespaces": "default", "watched-namespaces": "watched-namespaces",
                       "leader-election": "leader-election",
                       "leader-election-watched-namespaces": "leader-election-watched-namespaces"}
"""Allowlist section -> the chart scenario it describes."""


@pytest.mark.parametrize("scenario", list(ALLOWLIST_SCENARIOS))
def test_rendered_rbac_is_exactly_the_allowlist(render: Callable[..., list[Manifest]], scenario: str) -> None:
    args = SCENARIOS[ALLOWLIST_SCENARIOS[scenario]]
    allowed = yaml.safe_load(ALLOWLIST.read_text(encoding="utf-8"))[scenario]
    allowed["roles"] = {role: {key: sorted(verbs) for key, verbs in grants.items()}
                        for role, grants in allowed["roles"].items()}
    rendered = rbac_view(render(*args))
    assert rendered == allowed, (
        f"the chart's RBAC ({scenario}) differs from {ALLOWLIST.name}; if the change is deliberate, "
        f"update the allowlist to:\n{yaml.safe_dump(rendered, sort_keys=False)}")


FORBIDDEN_VERBS = {"escalate", "bind", "impersonate"}
FORBIDDEN_RESOURCES = {"secrets"}


def forbidden_grants(rules: list[Mapping[str, Any]]) -> list[str]:
    """What in these RBAC rules a least-privilege operator must never hold."""
    problems = []
    for index, rule in enumerate(rules):
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            if any("*" in value for value in rule.get(field) or []):
                problems.append(f"rule {index}: wildcard in {field}")
        resources = {resource.split("/")[0] for resource in rule.get("resources") or []}
        problems += [f"rule {index}: grants {name}" for name in sorted(resources & FORBIDDEN_RESOURCES)]
        problems += [f"rule {index}: verb {verb}" for verb in sorted(set(rule.get("verbs") or []) & FORBIDDEN_VERBS)]
    return problems


@pytest.mark.parametrize("args", SCENARIOS.values(), ids=SCENARIO_IDS)
def test_rbac_has_no_wildcards_secrets_or_escalation(render: Callable[..., list[Manifest]],
                                                     args: tuple[str, ...]) -> None:
    roles = [m for m in render(*args) if m["kind"] in {"ClusterRole", "Role"}]
    assert roles
    for role in roles:
        assert forbidden_grants(role.get("rules") or []) == [], _role_key(role)
        assert "aggregationRule" not in role, _role_key(role)


@pytest.mark.parametrize("rule, problem", [
    pytest.param({"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}, "wildcard in apiGroups",
                 id="any-group"),
    pytest.param({"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}, "wildcard in resources", id="any-resource"),
    pytest.param({"apiGroups": [""], "resources": ["pods/*"], "verbs": ["get"]}, "wildcard in resources",
                 id="any-subresource"),
    pytest.param({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}, "wildcard in verbs", id="any-verb"),
    pytest.param({"nonResourceURLs": ["/api/*"], "verbs": ["get"]}, "wildcard in nonResourceURLs", id="any-url"),
    pytest.param({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}, "grants secrets", id="secrets"),
    pytest.param({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}, "grants secrets",
                 id="secrets-list"),
    pytest.param({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["escalate"]},
                 "verb escalate", id="escalate"),
    pytest.param({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["bind"]},
                 "verb bind", id="bind"),
    pytest.param({"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
                 "verb impersonate", id="impersonate"),
])
def test_the_rbac_check_catches_dangerous_rules(rule: Mapping[str, Any], problem: str) -> None:
    assert any(problem in found for found in forbidden_grants([rule]))


# ---------------------------------------------------------------------------- the operator pod

# The restricted Pod Security profile, as the operator pod must meet it.
POD_SECURITY = [
    ("runAsNonRoot", True),
    ("runAsUser", 65532),
    ("seccompProfile.type", "RuntimeDefault"),
]
CONTAINER_SECURITY = [
    ("allowPrivilegeEscalation", False),
    ("capabilities.drop", ["ALL"]),
    ("capabilities.add", None),
    ("privileged", None),
    ("readOnlyRootFilesystem", True),
    ("runAsNonRoot", True),
    ("runAsUser", 65532),
    ("seccompProfile.type", "RuntimeDefault"),
]
# Host namespaces and host paths the profile forbids.
POD_SPEC_ABSENT = ["hostNetwork", "hostPID", "hostIPC", "hostUsers"]


@pytest.mark.parametrize("field, expected", POD_SECURITY, ids=[f for f, _ in POD_SECURITY])
def test_pod_security_context_is_restricted(render: Callable[..., list[Manifest]], field: str, expected: Any) -> None:
    for args in SCENARIOS.values():
        assert dig(operator_pod(render(*args))["spec"]["securityContext"], field) == expected


@pytest.mark.parametrize("field, expected", CONTAINER_SECURITY, ids=[f for f, _ in CONTAINER_SECURITY])
def test_container_security_context_is_restricted(render: Callable[..., list[Manifest]], field: str,
                                                  expected: Any) -> None:
    for args in SCENARIOS.values():
        assert dig(operator_container(render(*args))["securityContext"], field) == expected


@pytest.mark.parametrize("args", SCENARIOS.values(), ids=SCENARIO_IDS)
def test_pod_uses_no_host_namespaces_ports_or_paths(render: Callable[..., list[Manifest]],
                                                    args: tuple[str, ...]) -> None:
    spec = operator_pod(render(*args))["spec"]
    assert [key for key in POD_SPEC_ABSENT if key in spec] == []
    # the volume types the restricted Pod Security profile allows, and only those the chart needs
    assert all(len(volume) == 2 and set(volume) - {"name"} <= {"emptyDir", "projected", "configMap"}
               for volume in spec["volumes"])
    assert all("hostPort" not in port for port in operator_container(render(*args))["ports"])


def test_read_only_root_has_a_writable_tmp(render: Callable[..., list[Manifest]]) -> None:
    manifests = render()
    mounts = {m["mountPath"]: m["name"] for m in operator_container(manifests)["volumeMounts"]}
    volumes = {v["name"]: v for v in operator_pod(manifests)["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


AUTOSCALER = ["--autoscale-interval=5", "--metrics-unavailable-after=30", "--autoscaler-status-refresh=60",
              "--drain-timeout=60",
              "--rebalance-interval=30", "--rebalance-max-moves=2", "--move-timeout=600", "--min-move-interval=600"]
PORTS = ["--metrics-port=9090", "--health-port=8081"]


@pytest.mark.parametrize("args, expected", [
    pytest.param((), ["run", "--scheduler-name=trireme", "--default-policy=trireme", *AUTOSCALER, *PORTS,
                      "--log-level=info"], id="defaults"),
    pytest.param(WATCHED, ["run", "--namespace=team-a", "--namespace=team-b", "--scheduler-name=trireme",
                           "--default-policy=trireme", *AUTOSCALER, *PORTS,
                           "--log-level=info"], id="watched-namespaces"),
    pytest.param(("--set", "prometheusUrl=http://prometheus.monitoring:9090"),
                 ["run", "--scheduler-name=trireme", "--default-policy=trireme",
                  "--prometheus-url=http://prometheus.monitoring:9090", *AUTOSCALER, *PORTS,
                  "--log-level=info"], id="prometheus-url"),
    pytest.param(("--set", "schedulerName=gpu.example.com,defaultPolicy=binpack,logLevel=debug,metrics.port=9191,health.port=9192"),
                 ["run", "--scheduler-name=gpu.example.com", "--default-policy=binpack", *AUTOSCALER,
                  "--metrics-port=9191", "--health-port=9192",
                  "--log-level=debug"], id="scheduler-policy-log-level-ports"),
    pytest.param(("--set", "prometheusAuth.tokenAudience=prometheus,prometheusAuth.caConfigMap=prom-ca,"
                           "autoscaler.intervalSeconds=2,autoscaler.drainTimeoutSeconds=120,"
                           "rebalancer.intervalSeconds=0"),
                 ["run", "--scheduler-name=trireme", "--default-policy=trireme",
                  "--prometheus-token-file=/var/run/secrets/trireme/prometheus/token",
                  "--prometheus-ca-file=/etc/trireme/prometheus-ca/ca.crt", "--autoscale-interval=2",
                  "--metrics-unavailable-after=30", "--autoscaler-status-refresh=60", "--drain-timeout=120",
                  "--rebalance-interval=0",
                  "--rebalance-max-moves=2", "--move-timeout=600", "--min-move-interval=600", *PORTS,
                  "--log-level=info"],
                 id="prometheus-auth-autoscaler-rebalancer-off"),
    # one flag for every pod: each draws its own random priority at start (kopf pauses equal ones)
    pytest.param(LEADER_ELECTION, ["run", "--scheduler-name=trireme", "--default-policy=trireme", *AUTOSCALER, *PORTS,
                                   "--peering=trireme", "--log-level=info"],
                 id="leader-election"),
    pytest.param(("--set", "leaderElection.enabled=true"),
                 ["run", "--scheduler-name=trireme", "--default-policy=trireme", *AUTOSCALER, *PORTS,
                  "--peering=trireme", "--log-level=info"],
                 id="leader-election-with-one-pod"),
])
def test_operator_args_follow_the_values(render: Callable[..., list[Manifest]], args: tuple[str, ...],
                                         expected: list[str]) -> None:
    container = operator_container(render(*args))
    assert "command" not in container  # the image's ENTRYPOINT is `trireme`
    assert container["args"] == expected


@pytest.mark.parametrize("args, port, health", [
    pytest.param((), 9090, 8081, id="default"),
    pytest.param(("--set", "metrics.port=9191,health.port=9192"), 9191, 9192, id="moved"),
])
def test_metrics_port_probes_and_service_agree(render: Callable[..., list[Manifest]], args: tuple[str, ...],
                                               port: int, health: int) -> None:
    manifests = render(*args)
    container = operator_container(manifests)
    assert container["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"},
                                  {"name": "health", "containerPort": health, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    service = the(manifests, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = operator_pod(manifests)["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert the(manifests, "Deployment")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_operator_knows_its_pod_from_the_downward_api(render: Callable[..., list[Manifest]]) -> None:
    env = {e["name"]: e for e in operator_container(render())["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


@pytest.mark.parametrize("args, field, expected", [
    pytest.param((), "spec.replicas", 1, id="one-replica-by-default"),
    pytest.param(("--set", "replicas=3"), "spec.replicas", 3, id="replicas"),
    pytest.param((), "spec.template.spec.serviceAccountName", RELEASE, id="service-account"),
    pytest.param((), "spec.template.spec.containers.0.image", "trireme:0.1.0", id="image-is-app-version"),
    pytest.param(("--set", "image.repository=registry.example.com/trireme,image.tag=dev"),
                 "spec.template.spec.containers.0.image", "registry.example.com/trireme:dev", id="image"),
    pytest.param(EVERY_VALUE, "spec.template.spec.imagePullSecrets", [{"name": "registry"}], id="pull-secrets"),
    pytest.param(EVERY_VALUE, "spec.template.spec.nodeSelector", {"node-role.kubernetes.io/control-plane": ""},
                 id="node-selector"),
    pytest.param(EVERY_VALUE, "spec.template.metadata.annotations", {"example.com/owner": "platform"},
                 id="pod-annotations"),
    pytest.param((), "spec.template.spec.nodeSelector", None, id="no-node-selector-by-default"),
])
def test_deployment_follows_the_values(render: Callable[..., list[Manifest]], args: tuple[str, ...], field: str,
                                       expected: Any) -> None:
    deployment = the(render(*args), "Deployment")
    value: Any = deployment
    for key in field.split("."):
        value = value[int(key)] if isinstance(value, list) else (value or {}).get(key)
    assert value == expected


# ---------------------------------------------------------------------------- leader election

def test_no_peering_for_one_pod_by_default(render: Callable[..., list[Manifest]]) -> None:
    kinds = {m["kind"] for m in render()}
    assert not kinds & {"ClusterKopfPeering", "KopfPeering"}
    assert not any(a.startswith("--peering") for a in operator_container(render())["args"])


@pytest.mark.parametrize("args, kind, namespaces", [
    pytest.param(LEADER_ELECTION, "ClusterKopfPeering", [None], id="all-namespaces"),
    pytest.param((*LEADER_ELECTION, *WATCHED), "KopfPeering", ["team-a", "team-b"], id="watched-namespaces"),
])
def test_peering_objects_are_the_ones_the_pods_use(render: Callable[..., list[Manifest]], args: tuple[str, ...],
                                                   kind: str, namespaces: list[str | None]) -> None:
    manifests = render(*args)
    peerings = [m for m in manifests if m["kind"] == kind]
    assert [m["metadata"].get("namespace") for m in peerings] == namespaces
    assert {m["apiVersion"] for m in peerings} == {"kopf.dev/v1"}
    flag = next(a for a in operator_container(manifests)["args"] if a.startswith("--peering="))
    assert {m["metadata"]["name"] for m in peerings} == {flag.split("=", 1)[1]}
    crds = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "CustomResourceDefinition"}
    crd = crds[f"{kind.lower()}s.kopf.dev"]
    assert crd["spec"]["scope"] == ("Cluster" if kind == "ClusterKopfPeering" else "Namespaced")
    assert the(manifests, "Deployment")["spec"]["replicas"] == 2


# ---------------------------------------------------------------------------- ServiceMonitor

def test_no_service_monitor_by_default(render: Callable[..., list[Manifest]]) -> None:
    assert [m for m in render() if m["kind"] == "ServiceMonitor"] == []


def test_service_monitor_scrapes_the_metrics_service(render: Callable[..., list[Manifest]]) -> None:
    manifests = render(*EVERY_VALUE)
    monitor, service = the(manifests, "ServiceMonitor"), the(manifests, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]  # the probes are not published


# ---------------------------------------------------------------------------- PodMonitor

def test_no_pod_monitor_by_default(render: Callable[..., list[Manifest]]) -> None:
    assert [m for m in render() if m["kind"] == "PodMonitor"] == []


@pytest.mark.parametrize("args, namespace_selector", [
    pytest.param(POD_MONITOR, {"any": True}, id="all-namespaces"),
    pytest.param((*POD_MONITOR, *WATCHED), {"matchNames": ["team-a", "team-b"]}, id="watched-namespaces"),
])
def test_pod_monitor_selects_the_triton_pods(render: Callable[..., list[Manifest]], args: tuple[str, ...],
                                             namespace_selector: dict[str, Any]) -> None:
    monitor = the(render(*args), "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert set(monitor["spec"]) == {"selector", "namespaceSelector", "podMetricsEndpoints"}
    assert monitor["spec"]["selector"] == {"matchLabels": TRITON_POD_LABELS}
    assert monitor["spec"]["namespaceSelector"] == namespace_selector
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]


def test_pod_monitor_carries_the_extra_labels(render: Callable[..., list[Manifest]]) -> None:
    assert the(render(*EVERY_VALUE), "PodMonitor")["metadata"]["labels"]["release"] == "prometheus"


# ---------------------------------------------------------------------------- values and their schema

@pytest.mark.parametrize("args, message", [
    pytest.param(("--set", "replicas=two"), "/replicas", id="replicas-type"),
    pytest.param(("--set", "replicas=0"), "/replicas", id="replicas-minimum"),
    pytest.param(("--set", "logLevel=loud"), "/logLevel", id="log-level-enum"),
    pytest.param(("--set", "image.pullPolicy=Sometimes"), "/image/pullPolicy", id="pull-policy-enum"),
    pytest.param(("--set-json", 'watchNamespaces=["Team_A"]'), "/watchNamespaces/0", id="namespace-name"),
    pytest.param(("--set-json", 'watchNamespaces=["a","a"]'), "/watchNamespaces", id="namespace-twice"),
    pytest.param(("--set", "metrics.port=80"), "/metrics/port", id="privileged-port"),
    pytest.param(("--set", "health.port=80"), "/health/port", id="privileged-health-port"),
    pytest.param(("--set", "leaderElection.enabled=yes"), "/leaderElection/enabled", id="leader-election-type"),
    pytest.param(("--set", "serviceMonitor.interval=often"), "/serviceMonitor/interval", id="interval-pattern"),
    pytest.param(("--set", "prometheusUrl=prometheus:9090"), "/prometheusUrl", id="url-without-scheme"),
    pytest.param(("--set", "podMonitor.enabled=yes"), "/podMonitor/enabled", id="boolean-type"),
    pytest.param(("--set", "replica=2"), "'replica'", id="unknown-key"),
    pytest.param(("--set", "podMonitor.enable=true"), "'enable'", id="unknown-nested-key"),
    pytest.param(("--set", "resources.requests.gpu=1"), "'gpu'", id="unknown-resource"),
    pytest.param(("--set-json", 'tolerations=[{"key":"a","operator":"Maybe"}]'), "/tolerations/0/operator",
                 id="toleration-operator"),
])
def test_values_schema_rejects_wrong_values_naming_the_field(helm_offline: Run, args: tuple[str, ...],
                                                             message: str) -> None:
    result = helm_offline("template", RELEASE, str(CHART), *args, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


def _declared_keys(schema: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], bool]:
    """Each setting the schema names, mapped to whether the schema names its keys too."""
    found: dict[tuple[str, ...], bool] = {}
    for key, node in schema.get("properties", {}).items():
        found[(*prefix, key)] = "properties" in node
        found.update(_declared_keys(node, (*prefix, key)))
    return found


def _values_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line index of each mapping key in values.yaml, by its path."""
    found: dict[tuple[str, ...], int] = {}
    stack: list[tuple[int, str]] = []
    for index, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = stripped.split(":", 1)[0]
        stack.append((indent, key))
        found[tuple(k for _, k in stack)] = index
    return found


def test_values_yaml_documents_every_setting_the_schema_declares() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    declared = _declared_keys(schema)
    # Settings: keys at the top, and keys inside a setting whose keys the schema names.
    settings = {path: index for path, index in _values_key_lines(text).items()
                if len(path) == 1 or declared.get(path[:-1])}
    assert sorted(set(settings) - set(declared)) == [], "values.yaml has settings the schema does not declare"
    top_level = {path for path in declared if len(path) == 1 and path != ("global",)}
    assert sorted(top_level - set(settings)) == [], "values.yaml lacks settings the schema declares"
    undocumented = [".".join(path) for path, index in settings.items() if not lines[index - 1].lstrip().startswith("#")]
    assert undocumented == []


def test_schema_closes_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))

    def open_objects(node: Mapping[str, Any], where: str) -> Iterator[str]:
        if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
            yield where
        for key, child in node.get("properties", {}).items():
            yield from open_objects(child, f"{where}/{key}")
        for key, child in node.get("definitions", {}).items():
            yield from open_objects(child, f"#/definitions/{key}")
        if isinstance(node.get("items"), Mapping):
            yield from open_objects(node["items"], f"{where}[]")
    assert list(open_objects(schema, "")) == []


# ---------------------------------------------------------------------------- files

def test_every_chart_file_opens_with_a_comment_saying_why() -> None:
    for path in sorted(CHART.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            assert next(iter(json.loads(text))) == "$comment", path
        elif path.parent.name == "templates" or path.name == "NOTES.txt":
            assert text.startswith("{{- /*"), path
        else:
            assert text.startswith("#"), path


def test_chart_versions_match_the_project() -> None:
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]


# ---------------------------------------------------------------------------- onto the local cluster

@pytest.fixture
def fresh_namespace(kubectl: Run) -> Iterator[str]:
    name = f"trireme-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.parametrize("watched, replicas", [(False, 1), (True, 1), (True, 2)],
                         ids=["all-namespaces", "watched-namespaces", "leader-election-watched-namespaces"])
def test_helm_install_onto_the_local_cluster(helm: Run, kubectl: Run, fresh_namespace: str, watched: bool,
                                             replicas: int) -> None:
    release = namespace = fresh_namespace  # the release name contains "trireme": objects are named after it
    teams = [f"{namespace}-team-{n}" for n in ("a", "b")] if watched else []
    for team in teams:
        kubectl("create", "namespace", team)
    values = ["--set-json", f"watchNamespaces={json.dumps(teams)}"] if watched else []
    values += ["--set", f"replicas={replicas}"]
    try:
        installed = helm("install", release, str(CHART), "--namespace", namespace, *values).stdout
        assert "kubectl get tis" in installed  # NOTES.txt
        kubectl("get", "crd", CRD_NAME)
        kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=20s")
        kubectl("get", "tis", "--namespace", namespace)
        deployment = json.loads(kubectl("get", "deployment", release, "-n", namespace, "-o", "json").stdout)
        assert deployment["spec"]["replicas"] == replicas
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        kubectl("get", "serviceaccount", release, "-n", namespace)
        kubectl("get", "service", f"{release}-metrics", "-n", namespace)
        kubectl("get", "clusterrole,clusterrolebinding", release)
        for crd in PEERING_CRDS:
            kubectl("get", "crd", crd)
        for team in teams:
            kubectl("get", "role,rolebinding", release, "-n", team)
            peering = kubectl("get", "kopfpeering", release, "-n", team, check=False)
            assert (peering.returncode == 0) == (replicas > 1), peering.stderr
        status = json.loads(helm("status", release, "--namespace", namespace, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed"
    finally:
        helm("uninstall", release, "--namespace", namespace, check=False)
        for team in teams:
            kubectl("delete", "namespace", team, "--wait=false", check=False)
    assert kubectl("get", "deployment", release, "-n", namespace, check=False).returncode != 0
    assert kubectl("get", "clusterrole", release, check=False).returncode != 0
    kubectl("get", "crd", CRD_NAME)  # CRDs outlive the release: uninstalling must not delete InferenceServices
