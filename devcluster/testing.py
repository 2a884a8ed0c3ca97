"""Helpers for tests that drive a cluster: bounded waiting on conditions.

End-to-end tests wait for the cluster to converge, never for a fixed time: a
condition is polled until it holds or a deadline passes, so tests are as fast
as the cluster allows and still pass on a loaded two-core machine.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``condition()`` until it returns something truthy and return that; raise
    ``AssertionError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def required_tool(name: str) -> str:
    """``installed_tool``, or skip the calling test with the command that installs it."""
    import pytest  # only tests call this

    found = installed_tool(name)
    if not found:
        pytest.skip(f"{name} is not installed: run scripts/install-tools.sh")
    return found


def installed_tool(name: str) -> str | None:
    """Path of a command-line tool (kubectl, helm, hadolint), preferring the one in this
    Python's virtualenv, where ``scripts/install-tools.sh`` puts them."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
