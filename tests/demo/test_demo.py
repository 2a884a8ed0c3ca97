"""``trireme demo --headless`` end to end: a real local cluster, the operator, Triton replicas
and Prometheus in one process; the demo changes only the load, the operator's autoscaler scales the
service out and back in, the rebalancer moves a replica to make room for one that needs a whole node,
and the run must serve without a failure, summarise and leave no process behind."""

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


@pytest.mark.timeout(300)
def test_headless_demo_scales_serves_and_leaves_nothing_behind(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    output = tmp_path / "demo.out"
    command = [str(Path(sys.executable).parent / "trireme"), "demo", "--headless", "--duration", "220",
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
            demo.wait(timeout=240)
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait()
    text = output.read_text()
    log = (tmp_path / "work" / "trireme-demo.log")
    assert demo.returncode == 0, text + (log.read_text()[-4000:] if log.exists() else "")
    assert f"follow it    kubectl --kubeconfig {tmp_path / 'kubeconfig'} get tis" in text
    assert ("result: OK: simple scaled out to 3 ready replicas under load, then back in to 1 ready replica "
            "after it") in text

    succeeded, failed = map(int, re.search(r"(\d+) succeeded, (\d+) failed", text).groups())
    assert succeeded > 0 and failed == 0
    spread = re.search(r"^  per replica\s+(.*)", text, re.M).group(1)
    assert spread.count(":8000 ") == 3, spread  # the load followed the replicas as they came
    history = re.search(r"^  replicas\s+simple: (.*)", text, re.M).group(1)
    assert re.search(r"1/1 at [\d.]+s .*3/3 at [\d.]+s .*1/1 at [\d.]+s", history), history
    # the operator's autoscaler decided from Triton's metrics (its Events say so); the demo changed the load
    assert re.search(r"event ScaledUp tis/simple: [12] → 3 replicas: scale-up to 3: ", text), text
    assert re.search(r"event ScaledDown tis/simple: 2 → 1 replicas: scale-down to 1: requests per second", text)
    assert re.search(r"autoscaler\s+simple at [\d.]+s: scale-(up|down), desiredReplicas \d: ", text)
    assert "scenario: scaled" not in text and "event Scaled " not in text
    assert "scenario: load steps up: 10 → 30 inferences/s" in text and "scenario: load eases" in text
    reasons = dict(re.findall(r"(\w+) (\d+)", re.search(r"events\s+\d+ \((.*)\)", text).group(1)))
    assert int(reasons.get("Drained", 0)) >= 2, reasons  # the extra replicas were drained before deletion
    placed = dict(re.findall(r"placed\s+(simple-r\d) on (\S+, GPUs \S+)", text))
    assert sorted(placed) == ["simple-r0", "simple-r1", "simple-r2"]
    assert len(set(placed.values())) == 3  # three different GPUs
    assert "unschedulable  large: large-r0: needs 8× GPU on one node" in text
    assert "FailedScheduling" in text
    # then the rebalancer makes room for a replica needing a whole node, moving one replica make-before-break
    assert "then wide (4 GPUs on one node) ready after the rebalancer moved a replica of batch;" in text
    moved = re.search(r"event Moved tis/batch: pod (batch-r\d) serves on node (\S+); pod (batch-r\d) on node (\S+) "
                      r"drained and deleted", text)
    assert moved, text
    new_pod, new_node, old_pod, old_node = moved.groups()
    assert re.search(rf"event Moving tis/batch: pod {old_pod} moves from node {old_node} to node {new_node}", text)
    assert re.search(rf"event Defragmenting tis/wide: making room on node {old_node} ", text)
    assert text.index(f"Started pod/{new_pod}") < text.index(f"Killing pod/{old_pod}")
    assert re.search(rf"placed\s+wide-r0 on {old_node}, GPUs 0,1,2,3$", text, re.M)
    assert "unschedulable  wide" not in text

    assert marked_processes(MARK, mark) == []
    assert "no process left behind" in text
