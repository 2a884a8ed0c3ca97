"""``trireme demo --headless`` end to end: a real local cluster, the operator, Triton replicas
and Prometheus in one process; the run must scale, serve, summarise and leave no process behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from trireme.demo import marked_processes
from trireme.devcluster.testing import wait_for

ROOT = Path(__file__).resolve().parents[2]
PROFILE = Path(__file__).resolve().parent / "two-small-nodes.yaml"
MARK = "TRIREME_DEMO_TEST"
"""Set in the demo's environment: every process it starts inherits it, so leftovers can be found."""

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(150)
def test_headless_demo_scales_serves_and_leaves_nothing_behind(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    output = tmp_path / "demo.out"
    command = [str(Path(sys.executable).parent / "trireme"), "demo", "--headless", "--duration", "120",
               "--profile", str(PROFILE), "--kubeconfig", str(tmp_path / "kubeconfig"),
               "--work-dir", str(tmp_path / "work")]
    with output.open("w") as out:
        demo = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, MARK: mark, "PYTHONSAFEPATH": "1"})
        try:
            # the leftover check below means something only if the mark reaches Triton
            wait_for(lambda: demo.poll() is not None
                     or any("tritonserver" in cmd for _, cmd in marked_processes(MARK, mark)),
                     timeout=90, interval=0.2, what="a tritonserver started by the demo")
            demo.wait(timeout=130)
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait()
    text = output.read_text()
    log = (tmp_path / "work" / "trireme-demo.log")
    assert demo.returncode == 0, text + (log.read_text()[-4000:] if log.exists() else "")
    assert f"follow it    kubectl --kubeconfig {tmp_path / 'kubeconfig'} get tis" in text
    assert "result: OK: reached 3 ready replicas of simple" in text

    succeeded, failed = map(int, re.search(r"(\d+) succeeded, (\d+) failed", text).groups())
    assert succeeded > 0 and failed <= max(2, 0.02 * succeeded)
    spread = re.search(r"per replica\s+(.*)", text).group(1)
    assert spread.count(":8000 ") == 3, spread  # the load followed the replicas as they came
    history = re.search(r"replicas\s+simple: (.*)", text).group(1)
    assert re.search(r"1/1 at [\d.]+s .*3/3 at [\d.]+s .*2/2 at [\d.]+s", history), history
    placed = dict(re.findall(r"placed\s+(simple-r\d) on (\S+, GPUs \S+)", text))
    assert sorted(placed) == ["simple-r0", "simple-r1", "simple-r2"]
    assert len(set(placed.values())) == 3  # three different GPUs
    assert "unschedulable  large: large-r0: needs 4× GPU on one node" in text
    assert re.search(r"events\s+\d+ \(.*Scaled 2", text)
    assert "FailedScheduling" in text

    assert marked_processes(MARK, mark) == []
    assert "no process left behind" in text
