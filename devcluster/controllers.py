"""The control-plane controllers a real cluster runs beside the API server.

Garbage collection by ownerReferences (background, foreground, orphan),
namespace deletion, pod garbage collection when a node is deleted, Endpoints for
Services from ready pods, and PodDisruptionBudget status (which eviction reads).
They react to store events through one work queue, so a write never recurses
into another write, and they write through the registry like any client.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from .aio import cancel_and_wait
from .errors import ApiError
from .registry import DeleteOptions, Registry, WriteOptions
from .selectors import match_label_selector
from .store import Event, StoreKey

log = logging.getLogger(__name__)

PODS: StoreKey = ("", "pods")
SERVICES: StoreKey = ("", "services")
ENDPOINTS: StoreKey = ("", "endpoints")
PDBS: StoreKey = ("policy", "poddisruptionbudgets")
NAMESPACES: StoreKey = ("", "namespaces")
NODES: StoreKey = ("", "nodes")

CONTROLLER_MANAGER = "devcluster-controller-manager"


def _as_controller() -> WriteOptions:
    """Options for a controller's write (fresh each time: writes collect warnings)."""
    return WriteOptions(manager=CONTROLLER_MANAGER)
DEFAULT_SCHEDULER = "default-scheduler"


@dataclass(frozen=True)
class ObjectRef:
    key: StoreKey
    namespace: str
    name: str


@dataclass
class ControllerSettings:
    """Timing of the controllers."""

    retry_interval_s: float = 0.5
    """How soon a namespace or foreground deletion that is still waiting on
    finalizers or terminating pods is looked at again."""


class Controllers:
    """All controllers, fed by one listener on the store."""

    def __init__(self, registry: Registry, settings: ControllerSettings | None = None):
        self.registry = registry
        self.store = registry.store
        self.settings = settings or ControllerSettings()
        self._uids: dict[str, ObjectRef] = {}
        self._dependents: dict[str, set[ObjectRef]] = defaultdict(set)
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._pending: set[tuple[str, Any]] = set()
        self._task: asyncio.Task[None] | None = None
        for key in self.store.keys():
            for obj in self.store.items(key):
                self._index(key, obj)
        self.store.add_listener(self._on_event)

    # -- indexing --------------------------------------------------------------

    def _index(self, key: StoreKey, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        ref = ObjectRef(key, meta.get("namespace", ""), meta["name"])
        self._uids[meta["uid"]] = ref
        for owner in meta.get("ownerReferences") or []:
            self._dependents[owner.get("uid", "")].add(ref)

    def _unindex(self, key: StoreKey, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        ref = ObjectRef(key, meta.get("namespace", ""), meta["name"])
        if self._uids.get(meta["uid"]) == ref:
            del self._uids[meta["uid"]]
        for owner in meta.get("ownerReferences") or []:
            self._dependents[owner.get("uid", "")].discard(ref)

    def _enqueue(self, item: tuple[str, Any]) -> None:
        if item not in self._pending:
            self._pending.add(item)
            self._queue.put_nowait(item)

    def _on_event(self, event: Event) -> None:
        if event.old is not None:
            self._unindex(event.key, event.old)
        if event.type != "DELETED":
            self._index(event.key, event.obj)
        meta = event.obj["metadata"]
        namespace = meta.get("namespace", "")
        if event.type == "DELETED":
            self._enqueue(("owner-gone", meta["uid"]))
            if event.key == NODES:
                self._enqueue(("node-gone", meta["name"]))
        elif not meta.get("deletionTimestamp"):
            # An object whose owners are all gone already (created, or given its references, after they were
            # deleted) is collected as if they had gone now.
            owners = [o.get("uid", "") for o in meta.get("ownerReferences") or []]
            if owners and not any(uid in self._uids for uid in owners):
                for uid in owners:
                    self._enqueue(("owner-gone", uid))
        elif meta.get("deletionTimestamp"):
            finalizers = meta.get("finalizers") or []
            if "orphan" in finalizers or "foregroundDeletion" in finalizers:
                self._enqueue(("finalize-owner", (event.key, namespace, meta["name"])))
            if event.key == NAMESPACES:
                self._enqueue(("namespace", meta["name"]))
        if event.key == PODS:
            self._enqueue(("pods-changed", namespace))
            spec = event.obj.get("spec") or {}
            if (event.type == "ADDED" and not spec.get("nodeName")
                    and spec.get("schedulerName", DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER):
                self._enqueue(("schedule", (namespace, meta["name"])))
        elif event.key in (SERVICES, PDBS):
            self._enqueue(("pods-changed", namespace))

    # -- running ---------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="devcluster-controllers")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            self._pending.discard(item)
            try:
                self._handle(item)
            except Exception:
                log.exception("controller failed on %s", item)
            # let the API server serve requests between items
            if self._queue.qsize() % 64 == 0:
                await asyncio.sleep(0)

    def _retry_later(self, item: tuple[str, Any]) -> None:
        asyncio.get_running_loop().call_later(self.settings.retry_interval_s, self._enqueue, item)

    def _handle(self, item: tuple[str, Any]) -> None:
        kind, arg = item
        if kind == "owner-gone":
            self._collect_dependents(arg)
        elif kind == "finalize-owner":
            self._finalize_owner(*arg)
        elif kind == "namespace":
            self._delete_namespace(arg)
        elif kind == "node-gone":
            self._collect_node_pods(arg)
        elif kind == "schedule":
            self._schedule(*arg)
        elif kind == "pods-changed":
            self._sync_endpoints(arg)
            self._sync_pdbs(arg)

    def run_pending(self) -> None:
        """Process everything queued now (for tests without a running loop task)."""
        while not self._queue.empty():
            item = self._queue.get_nowait()
            self._pending.discard(item)
            self._handle(item)

    # -- garbage collection ----------------------------------------------------

    def _delete(self, ref: ObjectRef, opts: DeleteOptions | None = None) -> None:
        rt = self._type_of(ref.key)
        if rt is None:
            return
        try:
            self.registry.delete(rt, ref.namespace, ref.name, opts or DeleteOptions(propagation_policy="Background"))
        except ApiError as exc:
            if exc.code != 404:
                raise

    def _type_of(self, key: StoreKey) -> Any:
        for rt in self.registry.resource_types():
            if rt.store_key == key:
                return rt
        return None

    def _collect_dependents(self, owner_uid: str) -> None:
        for ref in list(self._dependents.get(owner_uid, ())):
            obj = self.store.get(ref.key, ref.namespace, ref.name)
            if obj is None:
                continue
            owners = [o.get("uid") for o in obj["metadata"].get("ownerReferences") or []]
            if all(uid not in self._uids for uid in owners):
                self._delete(ref)
        self._dependents.pop(owner_uid, None)

    def _finalize_owner(self, key: StoreKey, namespace: str, name: str) -> None:
        owner = self.store.get(key, namespace, name)
        if owner is None:
            return
        meta = owner["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        dependents = list(self._dependents.get(meta["uid"], ()))
        if "orphan" in finalizers:
            for ref in dependents:
                dep = self.store.get(ref.key, ref.namespace, ref.name)
                if dep is not None:
                    refs = [o for o in dep["metadata"].get("ownerReferences") or [] if o.get("uid") != meta["uid"]]
                    self._update_meta(ref.key, dep, {"ownerReferences": refs or None})
            finalizers.remove("orphan")
        if "foregroundDeletion" in finalizers:
            if dependents:
                for ref in dependents:
                    self._delete(ref, DeleteOptions(propagation_policy="Foreground"))
                self._retry_later(("finalize-owner", (key, namespace, name)))
                return
            finalizers.remove("foregroundDeletion")
        owner = self.store.get(key, namespace, name)
        if owner is not None:
            self._update_meta(key, owner, {"finalizers": finalizers or None})

    def _update_meta(self, key: StoreKey, obj: dict[str, Any], changes: dict[str, Any]) -> None:
        meta = {k: v for k, v in {**obj["metadata"], **changes}.items() if v is not None}
        rt = self._type_of(key)
        if rt is None:
            return
        try:
            self.registry.update(rt, meta.get("namespace", ""), meta["name"], {**obj, "metadata": meta}, _as_controller(),
                                 check_rv=False)
        except ApiError as exc:
            if exc.code != 404:
                raise

    def _collect_node_pods(self, node: str) -> None:
        for pod in list(self.store.items(PODS)):
            if (pod.get("spec") or {}).get("nodeName") == node:
                meta = pod["metadata"]
                self._delete(ObjectRef(PODS, meta["namespace"], meta["name"]), DeleteOptions(grace_period_seconds=0))

    # -- namespaces ------------------------------------------------------------

    def _delete_namespace(self, name: str) -> None:
        ns = self.store.get(NAMESPACES, "", name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        remaining = 0
        for rt in self.registry.resource_types():
            if not rt.namespaced or rt.version != self._first_version(rt):
                continue
            for obj in list(self.store.items(rt.store_key, name)):
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete(ObjectRef(rt.store_key, name, obj["metadata"]["name"]))
        if remaining:
            self._retry_later(("namespace", name))
            return
        spec = ns.get("spec") or {}
        if spec.get("finalizers"):
            ns = {**ns, "spec": {**spec, "finalizers": []}}
            self.store.update(NAMESPACES, ns)
        self.registry.finish_namespace(name)

    def _first_version(self, rt: Any) -> str:
        """Objects of a resource are stored once, whatever versions serve them."""
        for other in self.registry.resource_types():
            if other.store_key == rt.store_key:
                return other.version
        return rt.version

    # -- the default scheduler ------------------------------------------------------

    def _schedule(self, namespace: str, name: str) -> None:
        """Bind a ``default-scheduler`` pod to the first node it fits, as a stand-in for
        kube-scheduler (pods of other schedulers, such as Trireme's, are left alone).
        A pod that fits nowhere is retried later, with PodScheduled=False saying why."""
        pod = self.store.get(PODS, namespace, name)
        if pod is None or (pod.get("spec") or {}).get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            return
        wanted = _gpu_request(pod)
        used: dict[str, int] = defaultdict(int)
        for other in self.store.items(PODS):
            node_name = (other.get("spec") or {}).get("nodeName")
            if node_name and (other.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                used[node_name] += _gpu_request(other)
        for node in self.store.items(NODES):
            free = int(((node.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu", 0) or 0)
            if _schedulable(node, pod) and free - used[node["metadata"]["name"]] >= wanted:
                binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                           "target": {"kind": "Node", "name": node["metadata"]["name"]}}
                self.registry.bind(namespace, name, binding, WriteOptions(manager=DEFAULT_SCHEDULER))
                self._event(pod, "Scheduled", f"Successfully assigned {namespace}/{name} to "
                                  f"{node['metadata']['name']}")
                return
        self._mark_unschedulable(pod, wanted)
        self._retry_later(("schedule", (namespace, name)))

    def _event(self, pod: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        try:
            self.registry.record_event(pod, reason, message, DEFAULT_SCHEDULER, type_)
        except ApiError as exc:  # best effort, as for kube-scheduler
            log.debug("event %s not recorded: %s", reason, exc)

    def _mark_unschedulable(self, pod: dict[str, Any], wanted: int) -> None:
        nodes = self.store.count(NODES)
        message = (f"0/{nodes} nodes are available: no node is ready, schedulable, tolerated and has "
                   f"{wanted} free nvidia.com/gpu")
        conditions = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") != "PodScheduled"]
        old = next((c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == "PodScheduled"),
                   None)
        if old is not None and old.get("message") == message:
            return
        self._event(pod, "FailedScheduling", message, "Warning")
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                           "lastProbeTime": None, "lastTransitionTime": _transition_time({}, False)})
        rt = self.registry.resolve("", "v1", "pods")
        self.registry.update(rt, pod["metadata"]["namespace"], pod["metadata"]["name"],
                             {**pod, "status": {**(pod.get("status") or {}), "conditions": conditions}},
                             WriteOptions(manager="default-scheduler"), subresource="status", check_rv=False)

    # -- endpoints and disruption budgets ---------------------------------------

    def _sync_endpoints(self, namespace: str) -> None:
        services = list(self.store.items(SERVICES, namespace))
        if not services:
            return
        pods = list(self.store.items(PODS, namespace))
        ep_rt = self.registry.resolve("", "v1", "endpoints")
        for svc in services:
            selector = (svc.get("spec") or {}).get("selector")
            if not selector:
                continue
            subsets = _endpoint_subsets(svc, [p for p in pods if _labels_match(selector, p)])
            name = svc["metadata"]["name"]
            current = self.store.get(ENDPOINTS, namespace, name)
            body = {"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": name, "namespace": namespace,
                                 "labels": svc["metadata"].get("labels") or {}},
                    "subsets": subsets}
            if current is None:
                self.registry.create(ep_rt, namespace, body, _as_controller())
            elif current.get("subsets") != subsets:
                self.registry.update(ep_rt, namespace, name, {**current, "subsets": subsets}, _as_controller(),
                                     check_rv=False)

    def _sync_pdbs(self, namespace: str) -> None:
        pdbs = list(self.store.items(PDBS, namespace))
        if not pdbs:
            return
        pods = [p for p in self.store.items(PODS, namespace) if not p["metadata"].get("deletionTimestamp")]
        rt = self.registry.resolve("policy", "v1", "poddisruptionbudgets")
        for pdb in pdbs:
            spec = pdb.get("spec") or {}
            selected = [p for p in pods if match_label_selector(spec.get("selector"),
                                                                 p["metadata"].get("labels") or {})]
            expected = len(selected)
            healthy = sum(1 for p in selected if _ready(p))
            desired = _desired_healthy(spec, expected)
            old_status = pdb.get("status") or {}
            disrupted = {k: v for k, v in (old_status.get("disruptedPods") or {}).items()
                         if any(p["metadata"]["name"] == k for p in selected)}
            allowed = max(0, healthy - desired - len(disrupted))
            status = {"observedGeneration": pdb["metadata"].get("generation", 1), "currentHealthy": healthy,
                      "desiredHealthy": desired, "expectedPods": expected, "disruptionsAllowed": allowed,
                      "conditions": [{"type": "DisruptionAllowed", "status": "True" if allowed else "False",
                                      "reason": "SufficientPods" if allowed else "InsufficientPods",
                                      "message": "", "observedGeneration": pdb["metadata"].get("generation", 1),
                                      "lastTransitionTime": _transition_time(old_status, allowed > 0)}]}
            if disrupted:
                status["disruptedPods"] = disrupted
            if status != old_status:
                self.registry.update(rt, namespace, pdb["metadata"]["name"], {**pdb, "status": status}, _as_controller(),
                                     subresource="status", check_rv=False)


def _transition_time(old_status: dict[str, Any], allowed: bool) -> str:
    from .registry import rfc3339
    from datetime import datetime, timezone
    for cond in old_status.get("conditions") or []:
        if cond.get("type") == "DisruptionAllowed" and (cond.get("status") == "True") == allowed:
            return cond.get("lastTransitionTime", "")
    return rfc3339(datetime.now(timezone.utc))


def _labels_match(selector: dict[str, str], pod: dict[str, Any]) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _desired_healthy(spec: dict[str, Any], expected: int) -> int:
    def resolve(value: Any, round_up: bool) -> int:
        if isinstance(value, str) and value.endswith("%"):
            share = int(value[:-1]) * expected
            return -(-share // 100) if round_up else share // 100
        return int(value)
    if "minAvailable" in spec:
        return resolve(spec["minAvailable"], round_up=True)
    if "maxUnavailable" in spec:
        return max(0, expected - resolve(spec["maxUnavailable"], round_up=True))
    return expected


def _endpoint_subsets(svc: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ready, not_ready = [], []
    for pod in pods:
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if not ip or pod["metadata"].get("deletionTimestamp"):
            continue
        address = {"ip": ip, "nodeName": (pod.get("spec") or {}).get("nodeName"),
                   "targetRef": {"kind": "Pod", "namespace": pod["metadata"]["namespace"],
                                 "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}}
        (ready if _ready(pod) else not_ready).append(address)
    if not ready and not not_ready:
        return []
    ports = []
    for port in (svc.get("spec") or {}).get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        if isinstance(target, str):
            target = _named_port(pods, target) or port.get("port")
        entry = {"port": target, "protocol": port.get("protocol", "TCP")}
        if port.get("name"):
            entry["name"] = port["name"]
        ports.append(entry)
    subset: dict[str, Any] = {"ports": ports}
    if ready:
        subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
    if not_ready:
        subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
    return [subset]


def _named_port(pods: list[dict[str, Any]], name: str) -> int | None:
    for pod in pods:
        for container in (pod.get("spec") or {}).get("containers") or []:
            for port in container.get("ports") or []:
                if port.get("name") == name:
                    return port.get("containerPort")
    return None


def _gpu_request(pod: dict[str, Any]) -> int:
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        total += int(limits.get("nvidia.com/gpu", 0) or 0)
    return total


def _schedulable(node: dict[str, Any], pod: dict[str, Any]) -> bool:
    spec, pod_spec = node.get("spec") or {}, pod.get("spec") or {}
    if spec.get("unschedulable"):
        return False
    if not any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or []):
        return False
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    tolerations = pod_spec.get("tolerations") or []
    for taint in spec.get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(_tolerates(t, taint) for t in tolerations):
            return False
    return True


def _tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("operator") == "Exists":
        return not toleration.get("key") or toleration["key"] == taint.get("key")
    return toleration.get("key") == taint.get("key") and toleration.get("value", "") == taint.get("value", "")
