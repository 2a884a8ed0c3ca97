"""Leader election as the resync sees it: kopf's peering rule on keep-alives, and ``Leadership``
reading the peering objects from kmock (a Kubernetes API mock)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import kmock
import pytest
from kubernetes import client
from trireme.operator.leadership import Leadership, Peer, blockers, own_identity, peers
from trireme.operator.settings import OperatorSettings

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CLUSTER_PEERINGS = kmock.resource("kopf.dev/v1/clusterkopfpeerings")
PEERINGS = kmock.resource("kopf.dev/v1/kopfpeerings")


def keepalive(priority: int, seconds_ago: int = 1, lifetime: int = 60) -> dict[str, object]:
    return {"priority": priority, "lifetime": lifetime,
            "lastseen": (NOW - timedelta(seconds=seconds_ago)).isoformat()}


# (id, keep-alives in the peering status, our priority, who blocks us)
BLOCKER_CASES = [
    ("alone", {"me": keepalive(100)}, 100, []),
    ("a-lower-peer", {"me": keepalive(100), "b": keepalive(50)}, 100, []),
    ("a-higher-peer", {"me": keepalive(100), "b": keepalive(200)}, 100, ["b"]),
    ("the-same-priority-pauses-both", {"me": keepalive(100), "b": keepalive(100)}, 100, ["b"]),
    ("a-dead-higher-peer", {"b": keepalive(200, seconds_ago=61)}, 100, []),
    ("a-peer-that-left", {"b": keepalive(200, lifetime=0)}, 100, []),
    ("garbage-is-skipped", {"b": "not a keep-alive", "c": {"priority": "high"}}, 100, []),
]


@pytest.mark.parametrize(("status", "priority", "expected"), [c[1:] for c in BLOCKER_CASES],
                         ids=[c[0] for c in BLOCKER_CASES])
def test_blockers_follow_kopfs_rule(status: dict[str, object], priority: int, expected: list[str]) -> None:
    assert [p.identity for p in blockers(peers(status, NOW), "me", priority, NOW)] == expected


def test_keepalives_are_parsed() -> None:
    (peer,) = peers({"b": {"priority": 7, "lifetime": 30, "lastseen": "2026-01-02T03:04:00Z"}}, NOW)
    assert peer == Peer("b", 7, datetime(2026, 1, 2, 3, 4, tzinfo=UTC), timedelta(seconds=30))


@pytest.mark.parametrize(("environ", "expected"),
                         [({"POD_NAME": "trireme-abc"}, "trireme-abc"), ({"POD_ID": "kopf-style"}, "kopf-style")],
                         ids=["pod", "kopf-pod-id"])
def test_identity_is_the_pods_name(environ: dict[str, str], expected: str) -> None:
    assert own_identity(environ) == expected
    assert own_identity({}) != own_identity({})  # two local operators never share an identity


@pytest.fixture
def api(kmock: kmock.KubernetesEmulator) -> Iterator[client.ApiClient]:
    configuration = client.Configuration()
    configuration.host = str(kmock.url).rstrip("/")
    api = client.ApiClient(configuration)
    yield api
    api.close()


def now_keepalive(priority: int) -> dict[str, object]:
    """A keep-alive that holds for the whole test session (the table is built at collection)."""
    return {"priority": priority, "lifetime": 86400, "lastseen": datetime.now(UTC).isoformat()}


# (id, namespaces watched, peering objects: namespace -> status or None (absent), acting)
ACTING_CASES = [
    ("cluster-wide-leader", (), {None: {"me": now_keepalive(200), "b": now_keepalive(100)}}, True),
    ("cluster-wide-standby", (), {None: {"me": now_keepalive(100), "b": now_keepalive(200)}}, False),
    ("no-peering-object", (), {}, False),
    ("namespaced-leader", ("a", "b"), {"a": {"me": now_keepalive(200)}, "b": {}}, True),
    ("standby-in-one-namespace", ("a", "b"), {"a": {}, "b": {"x": now_keepalive(300)}}, False),
]


@pytest.mark.parametrize(("namespaces", "objects", "acting"), [c[1:] for c in ACTING_CASES],
                         ids=[c[0] for c in ACTING_CASES])
async def test_leadership_reads_the_peering_objects(kmock: kmock.KubernetesEmulator, api: client.ApiClient,
                                                    namespaces: tuple[str, ...],
                                                    objects: dict[str | None, dict[str, object]],
                                                    acting: bool) -> None:
    kmock.resources[CLUSTER_PEERINGS] = kmock.ResourceInfo(kind="ClusterKopfPeering", namespaced=False)
    kmock.resources[PEERINGS] = kmock.ResourceInfo(kind="KopfPeering", namespaced=True)
    for namespace, status in objects.items():
        kmock.objects[PEERINGS if namespace else CLUSTER_PEERINGS, namespace, "trireme"] = {
            "metadata": {"name": "trireme", **({"namespace": namespace} if namespace else {})}, "status": status}
    settings = OperatorSettings(namespaces=namespaces, standalone=False, peering="trireme", priority=200)
    leadership = Leadership(api, settings, "me")
    assert await asyncio.to_thread(leadership.acting) is acting
    assert all(r.method == kmock.method.GET for r in kmock)  # deciding writes nothing


def test_standalone_always_acts() -> None:
    assert Leadership(client.ApiClient(), OperatorSettings(), "me").acting() is True
