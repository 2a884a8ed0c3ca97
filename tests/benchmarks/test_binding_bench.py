"""The end-to-end binding benchmark runs at a small size: every pod it creates is bound by the
scheduling loop, and the figures add up."""

from __future__ import annotations

import asyncio
import json

from trireme.benchmarks.binding import BindingSettings, run_binding_benchmark
from trireme.cli import main


def test_every_pod_is_bound_and_the_figures_add_up() -> None:
    result = asyncio.run(run_binding_benchmark(BindingSettings(nodes=20, pods=40, concurrency=4), quiet=True))
    assert result.bound == 40 and len(result.latency_ms) == 40
    assert all(latency >= 0 for latency in result.latency_ms)
    assert result.pods_per_s > 0 and result.cycles >= 1
    assert result.percentile_ms(50) <= result.percentile_ms(99)
    assert "pods bound, creation to binding" in result.table()


def test_the_command_prints_json(capsys) -> None:
    assert main(["bench", "binding", "--nodes", "5", "--pods", "10", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["pods_bound"] == 10 and figures["settings"]["nodes"] == 5
