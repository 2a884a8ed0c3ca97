"""The placement and throughput benchmarks: the paper's protocol on a tiny trace, the CLI
commands end to end at small sizes, and a quick replay of the real openb trace when the
shared data is present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trireme.benchmarks.openb import TraceTask, arrivals, node_order, read_nodes, read_tasks
from trireme.benchmarks.placement import parse_policies, parse_seeds, replay, summarise
from trireme.cli import main

OPENB = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "openb"
"""The openb trace (see ../shared/data/README.md); tests that need it are skipped without it."""

NODES_CSV = """sn,cpu_milli,memory_mib,gpu,model
n-0,32000,131072,4,V100M16
n-1,32000,131072,4,V100M16
n-2,96000,393216,8,G2
n-3,16000,65536,2,T4
"""
PODS_CSV = """name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time
p-0,4000,8192,1,500,,LS,Running,0,1,0
p-1,8000,16384,1,1000,,LS,Running,0,1,0
p-2,2000,4096,0,0,,LS,Running,0,1,0
p-3,16000,65536,4,1000,,LS,Running,0,1,0
p-4,4000,8192,1,250,T4,LS,Running,0,1,0
p-5,4000,8192,1,750,,LS,Running,0,1,0
p-6,8000,16384,2,1000,V100M16|G2,LS,Running,0,1,0
"""


@pytest.fixture
def tiny_trace(tmp_path: Path) -> tuple[Path, Path]:
    nodes, pods = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    nodes.write_text(NODES_CSV)
    pods.write_text(PODS_CSV)
    return nodes, pods


@pytest.fixture
def openb() -> Path:
    if not (OPENB / "openb_node_list_gpu_node.csv").is_file():
        pytest.skip("the openb trace is not in ../shared/data/openb")
    return OPENB


def test_arrivals_follow_the_papers_protocol(tiny_trace: tuple[Path, Path]) -> None:
    tasks = read_tasks(tiny_trace[1])
    capacity = 18_000
    order = arrivals(tasks, capacity, seed=3)
    assert sorted(t.name for t in order[:len(tasks)]) == [t.name for t in tasks]  # a permutation first
    demand = sum(t.gpu_request_milli for t in order)
    assert demand <= 1.3 * capacity < demand + max(t.gpu_request_milli for t in tasks)
    assert order == arrivals(tasks, capacity, seed=3) != arrivals(tasks, capacity, seed=4)
    assert TraceTask("x", 1, 1, 1, 1000).request("p").gpus == 1
    assert TraceTask("x", 1, 1, 1, 300, ("T4",)).request("p").gpu_milli == 300


def test_node_order_is_a_per_seed_permutation(tiny_trace: tuple[Path, Path]) -> None:
    nodes = read_nodes(tiny_trace[0])
    names = node_order(nodes, 42)
    assert [n.split("-", 1)[1] for n in names] == [n.name for n in nodes]
    assert sorted(names) != names or node_order(nodes, 43) != names


@pytest.mark.parametrize("policy", ["trireme", "fgd", "bestfit", "random"])
def test_replay_records_allocation_by_arrived_demand(tiny_trace: tuple[Path, Path], policy: str) -> None:
    run = replay(read_nodes(tiny_trace[0]), read_tasks(tiny_trace[1]), policy, seed=1)
    assert run.tasks >= 7 and 0 < run.placements <= run.tasks
    values = list(run.allocated_by_arrived.values())
    assert all(0 <= v <= 100 for v in values) and values == sorted(values)
    assert max(run.allocated_by_arrived) <= 131
    result = summarise(policy, [run])
    assert set(result.unallocated_gpu_pct) <= {"95", "100", "110", "120", "130"}


def test_option_parsing() -> None:
    assert parse_seeds("42-44,50") == (42, 43, 44, 50)
    assert parse_policies("fgd, trireme") == ("fgd", "trireme")
    assert "trireme" in parse_policies("all")
    with pytest.raises(ValueError, match="unknown policy"):
        parse_policies("fgd,best")


def test_cli_placement_json_and_plot(tiny_trace: tuple[Path, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "allocation.png"
    code = main(["bench", "placement", "--nodes", str(tiny_trace[0]), "--pods", str(tiny_trace[1]),
                 "--policy", "trireme,fgd", "--seeds", "1-2", "--json", "--plot", str(plot)])
    out = capsys.readouterr()
    assert code == 0
    results = json.loads(out.out)
    assert [r["policy"] for r in results] == ["trireme", "fgd"]
    assert all(r["seeds"] == [1, 2] and r["placements_per_s"] > 0 for r in results)
    assert "[4/4]" in out.err
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_cli_placement_table_and_errors(tiny_trace: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "placement", "--nodes", str(tiny_trace[0]), "--pods", str(tiny_trace[1]),
                 "--policy", "bestfit", "--seeds", "7", "--quiet"]) == 0
    assert "bestfit" in capsys.readouterr().out
    assert main(["bench", "placement", "--nodes", "missing.csv", "--pods", str(tiny_trace[1])]) == 2
    assert "missing.csv is not a file" in capsys.readouterr().err


def test_cli_throughput_without_shared_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "throughput", "--nodes", "60", "--pods", "300", "--policy", "fgd", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["policy"], result["nodes"], result["pods"]) == ("fgd", 60, 300)
    assert result["placements_per_s"] > 0
    assert main(["bench", "throughput", "--nodes", "20", "--pods", "50"]) == 0
    assert "placements/s" in capsys.readouterr().out
    assert main(["bench", "throughput", "--nodes", "0"]) == 2


def test_openb_subsample_matches_the_paper_roughly(openb: Path) -> None:
    nodes = read_nodes(openb / "openb_node_list_gpu_node.csv")
    trace = read_tasks(openb / "openb_pod_list_default.csv")
    assert (len(nodes), sum(n.gpus for n in nodes), len(trace)) == (1213, 6212, 8152)
    # the first 3,000 arrivals (about 35 % of the cluster's GPUs asked for) all fit with FGD
    run = replay(nodes, trace, "fgd", seed=42, task_limit=3000)
    assert run.placements == run.tasks
    last = max(run.allocated_by_arrived)
    assert 30 <= last <= 40 and abs(run.allocated_by_arrived[last] - last) < 1


def test_cli_placement_on_openb(openb: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "placement", "--nodes", str(openb / "openb_node_list_gpu_node.csv"),
                 "--pods", str(openb / "openb_pod_list_default.csv"), "--policy", "trireme", "--seeds", "42",
                 "--limit", "1500", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "trireme"
