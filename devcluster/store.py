"""Versioned in-memory object storage with a watch history: the local etcd.

Objects are plain dicts and are never mutated once stored (every write stores a
new dict), so lists, watch events and readers can share them without copies.
Every write takes the next value of one cluster-wide resourceVersion counter and
is appended to a bounded history from which watches resume; a watch asking for a
version older than the history holds gets 410 Gone, as from etcd compaction.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import collections
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import ApiError

log = logging.getLogger(__name__)

_LAST = "\U0010ffff"  # sorts after every name
StoreKey = tuple[str, str]
"""(API group, plural resource name): objects of all versions of a kind share one key."""
ObjectKey = tuple[str, str]
"""(namespace or "", name)."""


@dataclass(frozen=True)
class Event:
    """One committed change. ``obj`` is the new state (the last state for DELETED)."""

    type: str  # ADDED, MODIFIED, DELETED
    key: StoreKey
    obj: dict[str, Any]
    old: dict[str, Any] | None
    rv: int


@dataclass
class StoreSettings:
    """How much the store remembers."""

    history_size: int = 25_000
    """Events kept for watch resumption (410 Gone beyond). A real API server's watch
    cache holds about 75 s of history; at the 500 writes/s the local cluster
    targets this is 50 s. Every event keeps the object version it wrote alive, so
    the history is most of the memory beyond the objects themselves."""
    watcher_queue_size: int = 100_000
    """Events buffered per watcher before it is dropped as too slow (it reconnects)."""


class Watcher:
    """A subscription to changes of one resource (optionally one namespace)."""

    def __init__(self, store: Store, key: StoreKey, namespace: str | None,
                 predicate: Callable[[dict[str, Any]], bool] | None, queue_size: int):
        self.store = store
        self.key = key
        self.namespace = namespace
        self.predicate = predicate
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(queue_size)
        self.closed = False

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace", "") != self.namespace:
            return False
        return self.predicate is None or self.predicate(obj)

    def translate(self, event: Event) -> Event | None:
        """The event as this watcher sees it: an object entering or leaving the
        selector's view is ADDED or DELETED, like a real watch with selectors."""
        new_in = self.matches(event.obj) if event.type != "DELETED" else False
        old_in = self.matches(event.old) if event.type == "MODIFIED" else False
        if event.type == "DELETED":
            return event if self.matches(event.obj) else None
        if event.type == "ADDED":
            return event if new_in else None
        if new_in and old_in:
            return event
        if new_in:
            return Event("ADDED", event.key, event.obj, event.old, event.rv)
        if old_in:
            return Event("DELETED", event.key, event.obj, event.old, event.rv)
        return None

    def offer(self, event: Event) -> None:
        seen = self.translate(event)
        if seen is None or self.closed:
            return
        try:
            self.queue.put_nowait(seen)
        except asyncio.QueueFull:
            log.warning("watcher of %s fell %d events behind; closing it", self.key, self.queue.qsize())
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.store._unsubscribe(self)
            try:
                self.queue.put_nowait(None)
            except asyncio.QueueFull:
                pass


class Store:
    """All objects of the cluster, keyed by (group, plural) then (namespace, name)."""

    def __init__(self, settings: StoreSettings | None = None):
        self.settings = settings or StoreSettings()
        self._rv = 0
        self._objects: dict[StoreKey, dict[ObjectKey, dict[str, Any]]] = collections.defaultdict(dict)
        self._sorted: dict[StoreKey, list[ObjectKey]] = {}
        self._history: collections.deque[Event] = collections.deque(maxlen=self.settings.history_size)
        self._oldest_rv = 0  # history holds every event with rv > _oldest_rv
        self._watchers: dict[StoreKey, set[Watcher]] = collections.defaultdict(set)
        self._listeners: list[Callable[[Event], None]] = []
        self.dirty = False

    # -- reads ------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, key: StoreKey, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects[key].get((namespace, name))

    def _sorted_keys(self, key: StoreKey) -> list[ObjectKey]:
        """The object keys of a resource in order, kept until an object is added or removed."""
        keys = self._sorted.get(key)
        if keys is None:
            keys = self._sorted[key] = sorted(self._objects.get(key, {}))
        return keys

    def _key_range(self, key: StoreKey, namespace: str | None, after: ObjectKey | None) -> tuple[list[ObjectKey], int, int]:
        keys = self._sorted_keys(key)
        lo, hi = 0, len(keys)
        if namespace is not None:
            lo, hi = bisect.bisect_left(keys, (namespace, "")), bisect.bisect_right(keys, (namespace, _LAST))
        if after is not None:
            lo = max(lo, bisect.bisect_right(keys, after))
        return keys, lo, hi

    def items(self, key: StoreKey, namespace: str | None = None,
              after: ObjectKey | None = None) -> Iterator[dict[str, Any]]:
        """Objects of a resource in (namespace, name) order, optionally of one namespace
        and only those after the key ``after`` (where a list page left off)."""
        bucket = self._objects.get(key, {})
        keys, lo, hi = self._key_range(key, namespace, after)
        for index in range(lo, hi):
            obj = bucket.get(keys[index])
            if obj is not None:  # deleted while a caller iterates
                yield obj

    def count_after(self, key: StoreKey, namespace: str | None, after: ObjectKey) -> int:
        """How many objects follow ``after`` (in one namespace if given)."""
        _, lo, hi = self._key_range(key, namespace, after)
        return hi - lo

    def count(self, key: StoreKey) -> int:
        return len(self._objects.get(key, {}))

    def keys(self) -> list[StoreKey]:
        return [k for k, v in self._objects.items() if v]

    # -- writes -----------------------------------------------------------------

    def _commit(self, etype: str, key: StoreKey, obj: dict[str, Any], old: dict[str, Any] | None) -> Event:
        event = Event(etype, key, obj, old, self._rv)
        if len(self._history) == self._history.maxlen:
            self._oldest_rv = self._history[0].rv
        self._history.append(event)
        self.dirty = True
        for watcher in list(self._watchers.get(key, ())):
            watcher.offer(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a controller's bug must not break a write
                log.exception("store listener failed on %s %s", etype, key)
        return event

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        meta = dict(obj.get("metadata") or {})
        meta["resourceVersion"] = str(self._rv)
        return {**obj, "metadata": meta}

    def create(self, key: StoreKey, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        okey = (meta.get("namespace", ""), meta["name"])
        if okey in self._objects[key]:
            raise ApiError(409, "AlreadyExists", f'{key[1]} "{meta["name"]}" already exists')
        stored = self._stamp(obj)
        self._objects[key][okey] = stored
        self._sorted.pop(key, None)
        self._commit("ADDED", key, stored, None)
        return stored

    def update(self, key: StoreKey, obj: dict[str, Any], expect_rv: str | None = None) -> dict[str, Any]:
        """Replace an object. ``expect_rv``: the write fails with 409 unless it is current."""
        meta = obj["metadata"]
        okey = (meta.get("namespace", ""), meta["name"])
        old = self._objects[key].get(okey)
        if old is None:
            raise ApiError(404, "NotFound", f'{key[1]} "{meta["name"]}" not found')
        if expect_rv is not None and expect_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict",
                           f'Operation cannot be fulfilled on {key[1]} "{meta["name"]}": the object has been '
                           "modified; please apply your changes to the latest version and try again")
        stored = self._stamp(obj)
        self._objects[key][okey] = stored
        self._commit("MODIFIED", key, stored, old)
        return stored

    def delete(self, key: StoreKey, namespace: str, name: str) -> dict[str, Any]:
        old = self._objects[key].pop((namespace, name), None)
        if old is None:
            raise ApiError(404, "NotFound", f'{key[1]} "{name}" not found')
        self._sorted.pop(key, None)
        last = self._stamp(old)
        self._commit("DELETED", key, last, old)
        return last

    # -- watch ------------------------------------------------------------------

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Synchronous in-process subscription to every committed event (controllers)."""
        self._listeners.append(listener)

    def watch(self, key: StoreKey, namespace: str | None, since_rv: int | None,
              predicate: Callable[[dict[str, Any]], bool] | None = None) -> tuple[Watcher, list[Event]]:
        """Subscribe to a resource. Returns the watcher and the events to replay first:
        with ``since_rv`` None, an ADDED event per current object (the initial state);
        else every event after ``since_rv`` (410 Gone when history no longer reaches it)."""
        watcher = Watcher(self, key, namespace, predicate, self.settings.watcher_queue_size)
        if since_rv is None:
            replay = [Event("ADDED", key, obj, None, int(obj["metadata"]["resourceVersion"]))
                      for obj in self.items(key, namespace) if watcher.matches(obj)]
        else:
            if since_rv < self._oldest_rv:
                raise gone(since_rv, self._oldest_rv)
            if since_rv > self._rv:
                # a version from the future (e.g. before a restart without state): a real
                # server waits for it; here nothing newer will come with that number
                raise ApiError(504, "Timeout", f"Too large resource version: {since_rv}, current: {self._rv}",
                               {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                                "retryAfterSeconds": 1})
            replay = [seen for event in self._events_after(since_rv, key)
                      if (seen := watcher.translate(event)) is not None]
        self._watchers[key].add(watcher)
        return watcher, replay

    def _events_after(self, rv: int, key: StoreKey) -> Iterable[Event]:
        if not self._history or self._history[-1].rv <= rv:
            return []
        # history is sorted by rv: bisect on the deque's index
        lo, hi = 0, len(self._history)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._history[mid].rv <= rv:
                lo = mid + 1
            else:
                hi = mid
        return [self._history[i] for i in range(lo, len(self._history)) if self._history[i].key == key]

    def _unsubscribe(self, watcher: Watcher) -> None:
        self._watchers[watcher.key].discard(watcher)

    def check_rv_available(self, rv: int) -> None:
        """For paginated lists: a continue token older than the history is expired."""
        if rv < self._oldest_rv:
            raise ApiError(410, "Expired", "The provided continue parameter is too old to display a consistent "
                           "list result. You can start a new list without the continue parameter.")

    # -- persistence ------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write every object to ``path`` atomically (JSON)."""
        data = {"resourceVersion": self._rv,
                "objects": [{"group": k[0], "resource": k[1], "items": list(v.values())}
                            for k, v in self._objects.items() if v]}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(data))
        os.replace(tmp, path)
        self.dirty = False

    def load(self, path: Path) -> None:
        """Restore objects saved by ``save``; history starts empty at the saved version."""
        data = json.loads(path.read_text())
        self._rv = int(data["resourceVersion"])
        self._oldest_rv = self._rv
        self._sorted.clear()
        for bucket in data["objects"]:
            key = (bucket["group"], bucket["resource"])
            for obj in bucket["items"]:
                self._objects[key][(obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = obj


def gone(asked: int, oldest: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {asked} ({oldest})")


def encode_continue(rv: int, after: ObjectKey) -> str:
    raw = orjson.dumps({"rv": rv, "start": list(after)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, ObjectKey]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded))
        return int(data["rv"]), (str(data["start"][0]), str(data["start"][1]))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ApiError(400, "BadRequest", f"invalid continue token: {exc}") from None
