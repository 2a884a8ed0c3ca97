"""The kinds the local API server serves, built-in and custom.

One ``ResourceType`` per (group, version, plural): what discovery lists, which
URL paths exist, which subresources and verbs apply, and which OpenAPI
definition describes it. CustomResourceDefinitions add entries at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VERBS_ALL = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """A served resource. ``group`` is "" for the core (legacy) group."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    categories: tuple[str, ...] = ()
    definition: str | None = None
    """OpenAPI definition name (``io.k8s.api.core.v1.Pod``); None for custom resources."""
    crd_name: str | None = None
    """``<plural>.<group>`` of the CustomResourceDefinition that serves it, if any."""
    storage_version: str = ""
    """The version objects are stored in (custom resources with several versions)."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def store_key(self) -> tuple[str, str]:
        """Objects are stored per (group, plural), whatever version they were written in."""
        return (self.group, self.plural)

    @property
    def base_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


def _core(plural: str, kind: str, namespaced: bool = True, short: tuple[str, ...] = (),
          sub: tuple[str, ...] = (), cats: tuple[str, ...] = ()) -> ResourceType:
    return ResourceType("", "v1", plural, kind, namespaced, short, frozenset(sub), cats,
                        f"io.k8s.api.core.v1.{kind}")


def _grp(group: str, version: str, plural: str, kind: str, definition: str, namespaced: bool = True,
         short: tuple[str, ...] = (), sub: tuple[str, ...] = (), cats: tuple[str, ...] = ()) -> ResourceType:
    return ResourceType(group, version, plural, kind, namespaced, short, frozenset(sub), cats, definition)


BUILTIN_RESOURCES: tuple[ResourceType, ...] = (
    _core("namespaces", "Namespace", False, ("ns",), ("status", "finalize")),
    _core("nodes", "Node", False, ("no",), ("status",)),
    _core("pods", "Pod", True, ("po",), ("status", "binding", "eviction", "log"), ("all",)),
    _core("services", "Service", True, ("svc",), ("status",), ("all",)),
    _core("endpoints", "Endpoints", True, ("ep",)),
    _core("configmaps", "ConfigMap", True, ("cm",)),
    _core("secrets", "Secret", True),
    _core("serviceaccounts", "ServiceAccount", True, ("sa",)),
    _core("events", "Event", True, ("ev",)),
    _core("persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), ("status",)),
    _core("resourcequotas", "ResourceQuota", True, ("quota",), ("status",)),
    _core("limitranges", "LimitRange", True, ("limits",)),
    _grp("apps", "v1", "deployments", "Deployment", "io.k8s.api.apps.v1.Deployment", True, ("deploy",),
         ("status", "scale"), ("all",)),
    _grp("apps", "v1", "replicasets", "ReplicaSet", "io.k8s.api.apps.v1.ReplicaSet", True, ("rs",),
         ("status", "scale"), ("all",)),
    _grp("apps", "v1", "statefulsets", "StatefulSet", "io.k8s.api.apps.v1.StatefulSet", True, ("sts",),
         ("status", "scale"), ("all",)),
    _grp("apps", "v1", "daemonsets", "DaemonSet", "io.k8s.api.apps.v1.DaemonSet", True, ("ds",),
         ("status",), ("all",)),
    _grp("batch", "v1", "jobs", "Job", "io.k8s.api.batch.v1.Job", True, (), ("status",), ("all",)),
    _grp("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", "io.k8s.api.discovery.v1.EndpointSlice"),
    _grp("events.k8s.io", "v1", "events", "Event", "io.k8s.api.events.v1.Event", True, ("ev",)),
    _grp("coordination.k8s.io", "v1", "leases", "Lease", "io.k8s.api.coordination.v1.Lease"),
    _grp("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget",
         "io.k8s.api.policy.v1.PodDisruptionBudget", True, ("pdb",), ("status",)),
    _grp("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass",
         "io.k8s.api.scheduling.v1.PriorityClass", False, ("pc",)),
    _grp("rbac.authorization.k8s.io", "v1", "roles", "Role", "io.k8s.api.rbac.v1.Role"),
    _grp("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", "io.k8s.api.rbac.v1.RoleBinding"),
    _grp("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", "io.k8s.api.rbac.v1.ClusterRole", False),
    _grp("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding",
         "io.k8s.api.rbac.v1.ClusterRoleBinding", False),
    _grp("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy",
         "io.k8s.api.networking.v1.NetworkPolicy", True, ("netpol",)),
    _grp("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler",
         "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler", True, ("hpa",), ("status",), ("all",)),
    _grp("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
         "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition", False,
         ("crd", "crds"), ("status",)),
)
"""Kinds served from start-up. Only pods, nodes, namespaces, services, endpoints,
PDBs, events and leases have behaviour here (kubelet, controllers, eviction);
the others are stored so that charts and manifests apply as they would on a real
cluster (deployments, RBAC: stored, not run or enforced)."""
