"""Which operator replica acts when several run: kopf peering, read the way kopf reads it.

Leader election is kopf peering. Every replica writes a keep-alive (its priority, when it was
last seen, for how long that holds) into the ``status`` of a peering object (ClusterKopfPeering
when the operator watches the whole cluster, KopfPeering in each watched namespace otherwise).
kopf pauses its watches and handlers in a replica while another live replica has a higher
priority, and pauses every replica that shares its priority with another (so priorities must
be distinct: ``OperatorSettings.from_sources`` draws a random one when none is given).

The periodic resync (``handlers.resync``) is not a kopf handler, so kopf cannot pause it: before
each pass it asks ``Leadership.acting``, which reads the same peering objects and applies the
same rule. A replica that cannot read them does not act; that is the safe side.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trireme.operator.settings import OperatorSettings

log = logging.getLogger(__name__)

PEERING_GROUP = "kopf.dev"
PEERING_VERSION = "v1"
CLUSTER_PEERINGS = "clusterkopfpeerings"
NAMESPACED_PEERINGS = "kopfpeerings"


@dataclass(frozen=True)
class Peer:
    """One replica's keep-alive in a peering object."""

    identity: str
    priority: int
    lastseen: datetime
    lifetime: timedelta

    def alive(self, now: datetime) -> bool:
        return self.lastseen + self.lifetime > now


def peers(status: Mapping[str, Any] | None, now: datetime) -> list[Peer]:
    """The keep-alives in a peering object's status (entries kopf cannot parse are skipped, as kopf does)."""
    found = []
    for identity, entry in (status or {}).items():
        if not isinstance(entry, Mapping):
            continue
        try:
            seen = entry.get("lastseen")
            lastseen = datetime.fromisoformat(str(seen).replace("Z", "+00:00")) if seen else now
            if lastseen.tzinfo is None:
                lastseen = lastseen.replace(tzinfo=UTC)
            found.append(Peer(str(identity), int(entry.get("priority", 0)), lastseen,
                              timedelta(seconds=int(entry.get("lifetime", 60)))))
        except (TypeError, ValueError):
            continue
    return found


def blockers(found: Iterable[Peer], identity: str, priority: int, now: datetime) -> list[Peer]:
    """Live peers that make kopf pause this replica: a higher priority, or the same one."""
    return [p for p in found if p.identity != identity and p.alive(now) and p.priority >= priority]


def own_identity(environ: Mapping[str, str] | None = None) -> str:
    """This replica's name in peering objects: the pod's name in a cluster, else user@host/pid/random."""
    environ = os.environ if environ is None else environ
    pod = environ.get("POD_NAME") or environ.get("POD_ID")
    if pod:
        return pod
    return f"{getpass.getuser()}@{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


class Leadership:
    """Answers "may this replica act now?" from the peering objects."""

    def __init__(self, api: client.ApiClient, settings: OperatorSettings, identity: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.settings = settings
        self.identity = identity
        self._acting: bool | None = None

    def acting(self, now: datetime | None = None) -> bool:
        """True in standalone mode; with peering, True when no live peer has a priority at least ours."""
        if self.settings.standalone:
            self._changed(True, "standalone, no leader election")
            return True
        now = now or datetime.now(UTC)
        found: list[Peer] = []
        try:
            for status in self._statuses():
                found += peers(status, now)
        except (ApiException, OSError, ValueError) as exc:
            self._changed(False, f"the peering object {self.settings.peering!r} cannot be read ({exc})")
            return False
        blocking = blockers(found, self.identity, self.settings.priority, now)
        if blocking:
            names = ", ".join(f"{p.identity} (priority {p.priority})" for p in blocking)
            self._changed(False, f"standing by for {names}")
            return False
        self._changed(True, f"acting with priority {self.settings.priority}")
        return True

    def _statuses(self) -> list[Mapping[str, Any] | None]:
        name = self.settings.peering
        if not self.settings.namespaces:
            response = self.custom.get_cluster_custom_object(PEERING_GROUP, PEERING_VERSION, CLUSTER_PEERINGS, name,
                                                             _preload_content=False)
            return [json.loads(response.data).get("status")]
        statuses = []
        for namespace in self.settings.namespaces:
            response = self.custom.get_namespaced_custom_object(PEERING_GROUP, PEERING_VERSION, namespace,
                                                                NAMESPACED_PEERINGS, name, _preload_content=False)
            statuses.append(json.loads(response.data).get("status"))
        return statuses

    def _changed(self, acting: bool, why: str) -> None:
        if acting != self._acting:
            log.info("resync %s: %s", "resumed" if acting else "paused", why)
        self._acting = acting
