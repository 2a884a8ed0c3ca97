"""The autoscaling benchmark's simulator and command: every request is accounted for, the baselines
behave as defined, and `trireme bench autoscale` prints its table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from trireme.benchmarks import autoscale as bench
from trireme.cli import main
from trireme.scheduler.autoscale import Dispatch

TRACE = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces" / "AzureLLMInferenceTrace_conv.csv"


def write_trace(path: Path, seconds: int = 900, seed: int = 7) -> Path:
    """A request trace whose rate ramps from 1 to 4 per second and back, in the Azure format."""
    rng = np.random.default_rng(seed)
    rows, t = ["TIMESTAMP,ContextTokens,GeneratedTokens"], 0.0
    while t < seconds:
        rate = 1.0 + 3.0 * np.sin(np.pi * t / seconds) ** 2
        t += rng.exponential(1.0 / rate)
        rows.append(f"{t:.4f},{rng.integers(50, 2000)},{rng.integers(5, 400)}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_load_amplifies_and_keeps_the_window(tmp_path: Path) -> None:
    trace = bench.load_trace(write_trace(tmp_path / "t.csv"))
    setting = bench.Setting("t", speedup=2.0, copies=3, startup_s=10.0)
    load = bench.amplify(trace, setting, seed=1)
    assert len(load.arrivals) == 3 * len(trace.times)
    assert np.all(np.diff(load.arrivals) >= 0)
    assert load.arrivals[0] >= 0 and load.arrivals[-1] <= trace.times[-1] / 2 + 1e-9
    assert np.all(load.service >= 0.02)


@pytest.mark.parametrize("dispatch", ["pooled", "round-robin", "random"])
def test_every_request_is_served_or_missed_and_oracle_beats_static(tmp_path: Path, dispatch: str) -> None:
    trace = bench.load_trace(write_trace(tmp_path / "t.csv"))
    setting = bench.Setting("t", speedup=1.0, copies=4, startup_s=20.0)
    outcomes = bench.run_one(trace, setting, seed=3, slo_ms=100.0, dispatch=dispatch, timeline=True)
    assert set(outcomes) == set(bench.POLICIES)
    load = bench.amplify(trace, setting, 3)
    for outcome in outcomes.values():
        assert outcome.served + outcome.missed_unstarted == len(load.arrivals)
        assert outcome.requests == int(load.counted.sum())
        assert 0 <= outcome.met <= outcome.requests
        assert outcome.gpu_seconds > 0 and outcome.timeline
    assert outcomes["oracle"].gpu_seconds < outcomes["static"].gpu_seconds
    assert outcomes["static"].scale_events == 0
    if dispatch == "pooled":
        assert outcomes["oracle"].attainment >= 0.98
        assert outcomes["trireme"].attainment >= 0.98


def test_behind_a_random_split_the_per_replica_model_keeps_the_objective(tmp_path: Path) -> None:
    """The benchmark tells Trireme how requests are dispatched (spec.autoscaling.dispatch): sized for
    replicas that each queue on their own, it meets the objective where a pooled model falls short."""
    trace = bench.load_trace(write_trace(tmp_path / "t.csv"))
    setting = bench.Setting("t", speedup=1.0, copies=12, startup_s=20.0)
    load = bench.amplify(trace, setting, 3)
    counts = bench.oracle_counts(load, 0.1)
    start = bench.PlanPolicy("oracle", counts, setting.startup_s).count_at(0.0)
    told = {dispatch: bench.simulate(load, bench.TriremePolicy(100.0, dispatch), setting.startup_s, start, 0.1,
                                     "random")
            for dispatch in Dispatch}
    assert told[Dispatch.PER_REPLICA].attainment >= 0.99
    assert told[Dispatch.POOLED].attainment < 0.95
    assert told[Dispatch.PER_REPLICA].gpu_seconds > told[Dispatch.POOLED].gpu_seconds
    assert told[Dispatch.AUTO].attainment >= 0.99  # it finds out from the replicas' gauges


def test_told_auto_behind_a_gateway_is_told_pooled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Behind a load-aware gateway no request ever waits beside a free slot: ``--tell auto`` gives the very
    figures of ``pooled``."""
    trace = write_trace(tmp_path / "t.csv", seconds=400)
    args = ["bench", "autoscale", "--trace", str(trace), "--settings", "5x-start10", "--seeds", "1", "--workers",
            "1", "--json"]
    assert main(args) == 0
    told_pooled = json.loads(capsys.readouterr().out)
    assert main(args + ["--tell", "auto"]) == 0
    told_auto = json.loads(capsys.readouterr().out)
    assert told_auto["told"] == "auto" and told_pooled["told"] == "match"
    assert told_auto["policies"] == told_pooled["policies"]


def test_oracle_plan_covers_a_burst() -> None:
    arrivals = np.concatenate([np.linspace(0, 9.9, 20), np.linspace(10, 19.9, 600)])
    load = bench.Load(arrivals, np.full(len(arrivals), 0.2), np.ones(len(arrivals), bool), 20.0, 0.0)
    counts = bench.oracle_counts(load, 0.1)
    assert counts[0] <= 2 and counts[1] >= 60 * 0.2 / bench.SLOTS
    plan = bench.PlanPolicy("oracle", counts, startup_s=10.0)
    assert plan.count_at(0.0) == counts[:2].max()  # launched a start-up delay early


PRESENT_COUNTS = np.array([3, 5, 2, 8, 4, 4])
"""The oracle's need per 10 s window in the present-knowing cases below."""


@pytest.mark.parametrize(("now", "headroom", "hold_s", "expected"), [
    (0.0, 0.0, 0.0, 3),      # the first window's need, not the next one's (no foresight)
    (9.9, 0.0, 0.0, 3),
    (10.0, 0.0, 0.0, 5),     # a window's need is known as soon as it begins
    (25.0, 0.0, 0.0, 2),
    (25.0, 0.0, 10.0, 5),    # the highest of the last 10 s: windows 1 and 2
    (25.0, 0.0, 30.0, 5),    # the hold cannot reach before the first window
    (45.0, 0.25, 0.0, 5),    # 4 × 1.25 = 5 exactly: no rounding up past it
    (45.0, 0.2, 0.0, 5),     # 4 × 1.2 = 4.8, rounded up
    (35.0, 0.1, 0.0, 9),     # 8 × 1.1 = 8.8
    (500.0, 0.0, 0.0, 4),    # past the plan: the last window's need
], ids=["first-window", "end-of-first", "next-window-begins", "third", "hold-10s", "hold-before-start",
        "exact-headroom", "headroom-rounds-up", "headroom-on-peak", "past-the-plan"])
def test_present_knowing_reference_counts(now: float, headroom: float, hold_s: float, expected: int) -> None:
    policy = bench.PresentPolicy(PRESENT_COUNTS, startup_s=60.0, headroom=headroom, hold_s=hold_s)
    assert policy.count_at(now) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("0.15", (0.15, 0.0)), ("0.05/30", (0.05, 30.0)), ("0", (0.0, 0.0)),
    ("x", None), ("0.1/y", None), ("-0.1", None), ("0.1/900", None), ("3", None),
], ids=["headroom", "headroom-and-hold", "zero", "not-a-number", "bad-hold", "negative", "hold-too-long",
        "headroom-too-large"])
def test_parse_present(text: str, expected: tuple[float, float] | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="--present"):
            bench.parse_present(text)
    else:
        assert bench.parse_present(text) == expected


def test_present_knowing_references_run_beside_the_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    """``--present`` adds references to the table and the JSON without touching the others or the goals; more
    headroom never costs less."""
    trace = write_trace(tmp_path / "t.csv", seconds=400)
    args = ["bench", "autoscale", "--trace", str(trace), "--settings", "1x-start30", "--seeds", "1", "--workers",
            "1"]
    assert main(args + ["--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(args + ["--json", "--present", "0.1", "--present", "0.5/20"]) == 0
    with_references = json.loads(capsys.readouterr().out)
    policies = with_references["policies"]
    assert list(policies) == [*bench.POLICIES, "present+10%", "present+50%/20s"]
    for policy in bench.POLICIES:
        assert policies[policy] == plain["policies"][policy]
    assert (policies["present+50%/20s"]["1x-start30"]["gpu_seconds"]
            > policies["present+10%"]["1x-start30"]["gpu_seconds"])
    assert bench.goals(with_references) == bench.goals(plain)
    assert main(args + ["--present", "0.1/20"]) == 0
    assert "present+10%/20s" in capsys.readouterr().out
    assert main(args + ["--present", "lots"]) == 2
    assert "HEADROOM[/HOLD_S]" in capsys.readouterr().err


def test_cli_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = write_trace(tmp_path / "t.csv", seconds=400)
    plot = tmp_path / "plot.png"
    code = main(["bench", "autoscale", "--trace", str(trace), "--settings", "5x-start10", "--seeds", "1",
                 "--workers", "1", "--json", "--plot", str(plot)])
    out = capsys.readouterr()
    assert code == 0
    summary = json.loads(out.out)
    assert summary["slo_ms"] == 100.0 and summary["settings"] == ["5x-start10"]
    for policy in bench.POLICIES:
        row = summary["policies"][policy]["5x-start10"]
        assert set(row) == {"slo_attainment", "lowest_attainment", "p99_queue_ms", "gpu_seconds", "oracle_ratio",
                            "scale_events"}
        assert row["lowest_attainment"] == pytest.approx(row["slo_attainment"])  # one seed
    assert summary["policies"]["oracle"]["5x-start10"]["oracle_ratio"] == pytest.approx(1.0)
    assert plot.stat().st_size > 0 and "[1/1]" in out.err


def test_cli_table_and_bad_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = write_trace(tmp_path / "t.csv", seconds=300)
    assert main(["bench", "autoscale", "--trace", str(trace), "--settings", "5x-start30", "--seeds", "2",
                 "--workers", "1"]) == 0
    assert "trireme" in capsys.readouterr().out
    assert main(["bench", "autoscale", "--trace", str(trace), "--settings", "9x"]) == 2


@pytest.mark.skipif(not TRACE.exists(), reason="shared benchmark data not present")
def test_azure_trace_one_setting() -> None:
    outcomes = bench.run_one(bench.load_trace(TRACE), bench.SETTINGS[3], seed=1, slo_ms=100.0)
    assert outcomes["oracle"].attainment >= 0.99
    assert outcomes["trireme"].attainment >= 0.99
    assert outcomes["trireme"].gpu_seconds < outcomes["static"].gpu_seconds
