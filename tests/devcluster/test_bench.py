"""The scale benchmark runs end to end at a small size: every pod it creates
runs, every watcher sees every write, and the table names every measure. The
figures themselves are the benchmark's business (docs/benchmarks.md), not a
test's: a loaded CI machine must not fail on timing."""

from __future__ import annotations

import asyncio
import json

from trireme.devcluster.bench import BenchSettings, result_json, run_benchmark


def test_small_benchmark_runs_and_loses_no_watch_event() -> None:
    settings = BenchSettings(nodes=20, pods=300, list_pods=200, watchers=3, write_rate=100, write_seconds=1)
    result = asyncio.run(run_benchmark(settings, quiet=True))
    assert result.watch_events_missed == 0
    assert result.writes_per_s > 0 and result.fill_pods_per_s > 0
    assert len(result.kubectl_get_s) == 3 and len(result.kubectl_get_unpaged_s) == 3
    assert result.rss_mib_full > result.rss_mib_empty > 0
    table = result.table()
    for measure in ("memory, all pods running", "kubectl get pods -A", "pod writes sustained", "watch delivery"):
        assert measure in table
    assert json.loads(result_json(result))["settings"]["nodes"] == 20
