"""Small process and task helpers shared by the local cluster's parts.

Stopping things is where leaks come from: a cancelled task must be awaited so
its cleanup runs, and a child process must get its chance to exit cleanly
before it is killed. One copy of each, used everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until its cleanup has run."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def interrupt(process: subprocess.Popen[Any], timeout_s: float) -> int:
    """Ctrl-C a child process, as a user would; kill it if it has not exited within
    ``timeout_s``. Returns its exit status."""
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
