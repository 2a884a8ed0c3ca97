"""Node profiles: validation messages, the Node objects they become, the openb profile."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client import ApiClient

from trireme.devcluster.profile import (
    ISLANDS_ANNOTATION,
    NodeSystem,
    Pool,
    Profile,
    ProfileError,
    format_nvlink_islands,
    load_profile,
    node_objects,
    parse_nvlink_islands,
    parse_profile,
    profile_from_openb,
    profile_to_yaml,
    write_openb_profile,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "clusters"
OPENB_DIR = ROOT.parent / "shared" / "data" / "openb"
OPENB_GPU_NODES = OPENB_DIR / "openb_node_list_gpu_node.csv"
OPENB_ALL_NODES = OPENB_DIR / "openb_node_list_all_node.csv"
needs_openb = pytest.mark.skipif(not OPENB_GPU_NODES.exists(),
                                 reason=f"the openb trace is not at {OPENB_GPU_NODES} (../shared/data from the repo root)")
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

GPU_POOL: dict[str, Any] = {"name": "gpu", "count": 2, "gpus": 4, "gpuProduct": "Tesla-T4",
                            "gpuMemoryMiB": 15360, "cpu": "8", "memory": "32Gi"}
CPU_POOL: dict[str, Any] = {"name": "cpu", "count": 1, "cpu": 4, "memory": "8Gi"}


def profile_with(*pools: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "test", "pools": [copy.deepcopy(pool) for pool in pools], **top}


def gpu_pool(**changes: Any) -> dict[str, Any]:
    pool = {**GPU_POOL, **changes}
    return {key: value for key, value in pool.items() if value is not None}


def expect_problem(data: dict[str, Any], where: str, fragment: str) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile(data)
    problems = caught.value.problems
    assert any(place == where and fragment in message for place, message in problems), problems
    assert fragment in str(caught.value)


# --- validation ------------------------------------------------------------------------

INVALID = [
    ("islands-overlap", profile_with(gpu_pool(nvlinkIslands=[[0, 1], [1, 2, 3]])),
     "pools[0].nvlinkIslands", "GPU 1 is in more than one island"),
    ("islands-miss-gpus", profile_with(gpu_pool(nvlinkIslands=[[0, 1]])),
     "pools[0].nvlinkIslands", "GPUs 2, 3 are in no island"),
    ("islands-out-of-range", profile_with(gpu_pool(nvlinkIslands=[[0, 1, 2, 3, 4]])),
     "pools[0].nvlinkIslands", "GPU index 4 in island 0 is out of range"),
    ("islands-negative-index", profile_with(gpu_pool(nvlinkIslands=[[-1, 0, 1, 2, 3]])),
     "pools[0].nvlinkIslands", "GPU index -1"),
    ("islands-empty-island", profile_with(gpu_pool(nvlinkIslands=[[0, 1, 2, 3], []])),
     "pools[0].nvlinkIslands", "island 1 is empty"),
    ("islands-without-gpus", profile_with({**CPU_POOL, "nvlinkIslands": [[0]]}),
     "pools[0].nvlinkIslands", "set only for GPU nodes"),
    ("negative-count", profile_with(gpu_pool(count=-1)), "pools[0].count", "greater than or equal to 1"),
    ("zero-count", profile_with(gpu_pool(count=0)), "pools[0].count", "greater than or equal to 1"),
    ("negative-gpus", profile_with(gpu_pool(gpus=-2)), "pools[0].gpus", "greater than or equal to 0"),
    ("negative-max-pods", profile_with(gpu_pool(maxPods=-5)), "pools[0].maxPods", "greater than or equal to 1"),
    ("unknown-pool-field", profile_with(gpu_pool(gpuCount=4)),
     "pools[0].gpuCount", "the fields here are: name, count, namePrefix"),
    ("misspelt-field", profile_with(gpu_pool(gpuProduct=None, gpuProdct="Tesla-T4")),
     "pools[0].gpuProdct", "unknown field; did you mean gpuProduct?"),
    ("unknown-top-field", profile_with(gpu_pool(), nodes=[]), "nodes", "the fields here are: name, pools"),
    ("unknown-taint-field",
     profile_with(gpu_pool(taints=[{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 3}])),
     "pools[0].taints[0].tolerationSeconds", "the fields here are: key, value, effect"),
    ("unknown-topology-field", profile_with(gpu_pool(topology={"building": "b1"})),
     "pools[0].topology.building", "the fields here are: region, zone, rack"),
    ("snake-case-field", profile_with(gpu_pool(gpu_memory_mib=None, gpuMemoryMiB=None, gpu_memory_MiB=1)),
     "pools[0].gpu_memory_MiB", "unknown field"),
    ("bad-taint-effect", profile_with(gpu_pool(taints=[{"key": "a", "effect": "NoRun"}])),
     "pools[0].taints[0].effect", "'NoSchedule', 'PreferNoSchedule' or 'NoExecute'"),
    ("gpu-product-missing", profile_with(gpu_pool(gpuProduct=None)),
     "pools[0].gpuProduct", "required when gpus > 0"),
    ("gpu-memory-missing", profile_with(gpu_pool(gpuMemoryMiB=None)),
     "pools[0].gpuMemoryMiB", "required when gpus > 0"),
    ("gpu-memory-zero", profile_with(gpu_pool(gpuMemoryMiB=0)), "pools[0].gpuMemoryMiB", "positive"),
    ("gpu-product-without-gpus", profile_with({**CPU_POOL, "gpuProduct": "Tesla-T4"}),
     "pools[0].gpuProduct", "set only for GPU nodes, but gpus is 0"),
    ("cpu-missing", profile_with(gpu_pool(cpu=None)), "pools[0].cpu", "required field is missing"),
    ("cpu-not-a-quantity", profile_with(gpu_pool(cpu="lots")), "pools[0].cpu", "not a positive Kubernetes quantity"),
    ("cpu-zero", profile_with(gpu_pool(cpu="0")), "pools[0].cpu", "not a positive Kubernetes quantity"),
    ("cpu-below-millicore", profile_with(gpu_pool(cpu="0.0001")), "pools[0].cpu", "finer than a millicore"),
    ("memory-bad-suffix", profile_with(gpu_pool(memory="512GB")), "pools[0].memory", "e.g. '512Gi'"),
    ("derived-label", profile_with(gpu_pool(labels={"nvidia.com/gpu.product": "x"})),
     "pools[0].labels", "derived from gpuProduct"),
    ("label-bad-key", profile_with(gpu_pool(labels={"a b": "x"})), "pools[0].labels", "label key 'a b'"),
    ("label-number-unquoted", profile_with(gpu_pool(labels={"nvidia.com/gpu.compute.major": 8})),
     "pools[0].labels.nvidia.com/gpu.compute.major", "quote numbers"),
    ("label-trailing-newline", profile_with(gpu_pool(labels={"team": "a\n"})), "pools[0].labels", "value 'a\\n'"),
    ("label-bad-value", profile_with(gpu_pool(labels={"team": "a b"})), "pools[0].labels", "value 'a b'"),
    ("pool-name-uppercase", profile_with(gpu_pool(name="GPU")), "pools[0].name", "must be a DNS label"),
    ("name-prefix-bad", profile_with(gpu_pool(namePrefix="gpu_")), "pools[0].namePrefix", "must be a DNS label"),
    ("node-names-too-long", profile_with(gpu_pool(name="n" * 61, count=100)), "pools[0]", "longer than 63"),
    ("duplicate-pool-names", profile_with(gpu_pool(), gpu_pool()), "", "two pools are named 'gpu'"),
    ("same-node-prefix", profile_with(gpu_pool(), gpu_pool(name="other", namePrefix="gpu")),
     "", "both name their nodes gpu-<index>"),
    ("no-pools", profile_with(), "pools", "at least 1"),
    ("profile-name-bad", profile_with(gpu_pool(), name="My Cluster"), "name", "must be a DNS label"),
]


@pytest.mark.parametrize(("data", "where", "fragment"), [case[1:] for case in INVALID],
                         ids=[case[0] for case in INVALID])
def test_invalid_profiles_name_the_field_and_the_fix(data: dict[str, Any], where: str, fragment: str) -> None:
    expect_problem(data, where, fragment)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile(profile_with(gpu_pool(count=-1, cpu="lots", extra=1)))
    assert {where for where, _ in caught.value.problems} == {"pools[0].count", "pools[0].cpu", "pools[0].extra"}


@pytest.mark.parametrize(("text", "fragment"), [
    ("name: [unclosed", "not valid YAML"),
    ("- just\n- a list\n", "a mapping with 'name' and 'pools'"),
], ids=["broken-yaml", "not-a-mapping"])
def test_load_profile_rejects_files_that_are_not_profiles(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=fragment) as caught:
        load_profile(path)
    assert str(path) in str(caught.value)


VALID_POOLS = [
    ("islands-default-one-island", gpu_pool(), [[0, 1, 2, 3]]),
    ("islands-sorted", gpu_pool(nvlinkIslands=[[3, 2], [1, 0]]), [[0, 1], [2, 3]]),
    ("islands-singletons", gpu_pool(nvlinkIslands=[[0], [1], [2], [3]]), [[0], [1], [2], [3]]),
    ("one-gpu", gpu_pool(gpus=1), [[0]]),
    ("cpu-only", CPU_POOL, []),
]


@pytest.mark.parametrize(("pool", "islands"), [case[1:] for case in VALID_POOLS],
                         ids=[case[0] for case in VALID_POOLS])
def test_islands_in_effect(pool: dict[str, Any], islands: list[list[int]]) -> None:
    assert Pool.model_validate(pool).islands == islands


# --- node names ------------------------------------------------------------------------

@pytest.mark.parametrize(("count", "prefix", "names"), [
    (1, None, ["gpu-0"]),
    (3, None, ["gpu-0", "gpu-1", "gpu-2"]),
    (10, None, ["gpu-0", "gpu-9"]),
    (11, None, ["gpu-00", "gpu-10"]),
    (101, "node", ["node-000", "node-100"]),
], ids=["one", "three", "ten-one-digit", "eleven-two-digits", "prefix-three-digits"])
def test_node_names_are_zero_padded_to_the_pool(count: int, prefix: str | None, names: list[str]) -> None:
    pool = Pool.model_validate(gpu_pool(count=count, namePrefix=prefix))
    all_names = pool.node_names()
    assert [all_names[0], all_names[-1]] == [names[0], names[-1]]
    assert len(set(all_names)) == count


@given(counts=st.lists(st.integers(min_value=1, max_value=150), min_size=1, max_size=4))
def test_node_names_are_unique_sorted_and_stable(counts: list[int]) -> None:
    pools = [gpu_pool(name=f"p{number}", count=count) for number, count in enumerate(counts)]
    profile = parse_profile(profile_with(*pools))
    nodes = node_objects(profile, now=NOW)
    names = [node["metadata"]["name"] for node in nodes]
    assert len(names) == len(set(names)) == sum(counts)
    for pool in profile.pools:
        mine = [name for name in names if name.startswith(pool.prefix + "-")]
        assert mine == sorted(mine) and len({len(name) for name in mine}) == 1
    assert [node["metadata"]["name"] for node in node_objects(profile, now=NOW)] == names


# --- NVLink islands annotation --------------------------------------------------------

ISLAND_TEXTS = [
    ("two-of-four", "0-3;4-7", [[0, 1, 2, 3], [4, 5, 6, 7]]),
    ("one-of-eight", "0-7", [list(range(8))]),
    ("pcie-only", "0;1;2;3", [[0], [1], [2], [3]]),
    ("pairs-interleaved", "0,2;1,3", [[0, 2], [1, 3]]),
    ("mixed-runs", "0-1,5;2-4,6-7", [[0, 1, 5], [2, 3, 4, 6, 7]]),
    ("single-gpu", "0", [[0]]),
    ("no-gpus", "", []),
]


@pytest.mark.parametrize(("text", "islands"), [case[1:] for case in ISLAND_TEXTS],
                         ids=[case[0] for case in ISLAND_TEXTS])
def test_islands_annotation_reads_and_writes(text: str, islands: list[list[int]]) -> None:
    assert parse_nvlink_islands(text) == islands
    assert format_nvlink_islands(islands) == text


@pytest.mark.parametrize("text", ["0-3;", "a", "3-1", "0,,1", "0-", "-1"],
                         ids=["empty-island", "not-a-number", "backwards", "empty-item", "open-range", "negative"])
def test_malformed_islands_annotation_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="NVLink islands"):
        parse_nvlink_islands(text)


@given(st.lists(st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=8), max_size=6))
def test_islands_annotation_round_trips(islands: list[list[int]]) -> None:
    assert parse_nvlink_islands(format_nvlink_islands(islands)) == islands


@given(st.integers(min_value=1, max_value=16).flatmap(
    lambda gpus: st.tuples(st.just(gpus), st.permutations(range(gpus)),
                           st.lists(st.integers(min_value=1, max_value=gpus), max_size=gpus))))
def test_any_partition_is_accepted_and_annotated_canonically(case: tuple[int, list[int], list[int]]) -> None:
    gpus, order, cuts = case
    bounds = sorted({0, gpus, *cuts})
    islands = [list(order[start:end]) for start, end in zip(bounds, bounds[1:])]
    pool = Pool.model_validate(gpu_pool(gpus=gpus, nvlinkIslands=islands))
    assert sorted(index for island in pool.islands for index in island) == list(range(gpus))
    text = node_objects(Profile(name="p", pools=[pool]), now=NOW)[0]["metadata"]["annotations"][ISLANDS_ANNOTATION]
    assert parse_nvlink_islands(text) == pool.islands == sorted(sorted(island) for island in islands)


# --- Node objects ---------------------------------------------------------------------

def nodes_of(example: str, **options: Any) -> dict[str, dict[str, Any]]:
    nodes = node_objects(load_profile(EXAMPLES / f"{example}.yaml"), now=NOW, **options)
    return {node["metadata"]["name"]: node for node in nodes}


NODE_LABELS = [
    ("dgx-2x8", "dgx-1", "nvidia.com/gpu.product", "NVIDIA-A100-SXM4-80GB"),
    ("dgx-2x8", "dgx-1", "nvidia.com/gpu.memory", "81920"),
    ("dgx-2x8", "dgx-1", "nvidia.com/gpu.count", "8"),
    ("dgx-2x8", "dgx-1", "nvidia.com/gpu.present", "true"),
    ("dgx-2x8", "dgx-1", "nvidia.com/gpu.family", "ampere"),
    ("dgx-2x8", "dgx-1", "kubernetes.io/hostname", "dgx-1"),
    ("dgx-2x8", "dgx-1", "kubernetes.io/os", "linux"),
    ("dgx-2x8", "dgx-1", "kubernetes.io/arch", "amd64"),
    ("dgx-2x8", "dgx-1", "node.kubernetes.io/instance-type", "dgx-a100"),
    ("dgx-2x8", "dgx-1", "topology.kubernetes.io/zone", "zone-a"),
    ("dgx-2x8", "dgx-1", "topology.kubernetes.io/region", "local"),
    ("dgx-2x8", "dgx-1", "topology.trireme.io/rack", "rack-1"),
    ("dgx-2x8", "dgx-1", "trireme.io/pool", "dgx"),
    ("hetero", "t4-x1-2", "nvidia.com/gpu.count", "1"),
    ("hetero", "t4-x1-2", "node.kubernetes.io/instance-type", "t4-x1"),
    ("hetero", "h100-0", "trireme.io/pool", "h100-training"),
    ("hetero", "h100-0", "workload", "training"),
    ("hetero", "cpu-0", "nvidia.com/gpu.present", None),
    ("hetero", "cpu-0", "nvidia.com/gpu.product", None),
    ("tiny", "tiny-0", "nvidia.com/gpu.count", "2"),
]


@pytest.mark.parametrize(("example", "node", "label", "value"), NODE_LABELS,
                         ids=[f"{case[1]}-{case[2]}" for case in NODE_LABELS])
def test_node_labels_as_gpu_feature_discovery_writes_them(example: str, node: str, label: str,
                                                          value: str | None) -> None:
    assert nodes_of(example)[node]["metadata"]["labels"].get(label) == value


NODE_CAPACITY = [
    ("dgx-2x8", "dgx-0", {"cpu": "256", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": "8"}),
    ("hetero", "t4-x4-1", {"cpu": "48", "memory": "192Gi", "pods": "110", "nvidia.com/gpu": "4"}),
    ("hetero", "cpu-2", {"cpu": "32", "memory": "128Gi", "pods": "110"}),
    ("tiny", "tiny-0", {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "2"}),
]


@pytest.mark.parametrize(("example", "node", "capacity"), NODE_CAPACITY, ids=[case[1] for case in NODE_CAPACITY])
def test_node_capacity_and_allocatable(example: str, node: str, capacity: dict[str, str]) -> None:
    status = nodes_of(example)[node]["status"]
    assert status["capacity"] == capacity
    assert status["allocatable"] == capacity


@pytest.mark.parametrize(("example", "node", "annotation"), [
    ("dgx-2x8", "dgx-0", "0-3;4-7"),
    ("hetero", "a100-1", "0-7"),
    ("hetero", "t4-x4-0", "0;1;2;3"),
    ("hetero", "t4-x1-0", "0"),
    ("hetero", "cpu-0", None),
], ids=["two-islands", "default-one-island", "pcie", "one-gpu", "cpu-only"])
def test_nvlink_islands_annotation(example: str, node: str, annotation: str | None) -> None:
    annotations = nodes_of(example)[node]["metadata"].get("annotations", {})
    assert annotations.get(ISLANDS_ANNOTATION) == annotation


def test_taints_go_into_the_node_spec() -> None:
    nodes = nodes_of("hetero")
    assert nodes["h100-0"]["spec"]["taints"] == [{"key": "dedicated", "value": "training", "effect": "NoSchedule"}]
    assert "taints" not in nodes["a100-0"]["spec"]


def test_addresses_come_from_the_caller() -> None:
    nodes = nodes_of("hetero", internal_ip=lambda ordinal, name: f"10.0.0.{ordinal + 1}")
    assert nodes["a100-0"]["status"]["addresses"] == [{"type": "InternalIP", "address": "10.0.0.1"},
                                                      {"type": "Hostname", "address": "a100-0"}]
    assert nodes["h100-0"]["status"]["addresses"][0]["address"] == "10.0.0.13"


@pytest.mark.parametrize(("now", "stamp"), [
    (NOW, "2030-01-02T03:04:05Z"),
    (datetime(2030, 1, 2, 3, 4, 5), "2030-01-02T03:04:05Z"),
    (datetime(2030, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))), "2030-01-02T03:04:05Z"),
], ids=["utc", "naive-is-utc", "offset"])
def test_conditions_are_stamped_with_now(now: datetime, stamp: str) -> None:
    node = node_objects(load_profile(EXAMPLES / "tiny.yaml"), now=now)[0]
    conditions = {condition["type"]: condition for condition in node["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert {conditions[kind]["status"] for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")} == {"False"}
    assert {c["lastHeartbeatTime"] for c in conditions.values()} == {stamp}


def test_node_info() -> None:
    system = NodeSystem(kernel_version="6.1.0")
    info = node_objects(load_profile(EXAMPLES / "tiny.yaml"), now=NOW, system=system)[0]["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.37.0"
    assert info["containerRuntimeVersion"] == "trireme-devcluster://0.1"
    assert (info["architecture"], info["operatingSystem"], info["kernelVersion"]) == ("amd64", "linux", "6.1.0")
    assert info["osImage"]


@pytest.mark.parametrize("example", ["dgx-2x8", "hetero", "tiny"])
def test_nodes_are_valid_kubernetes_1_37_objects(example: str) -> None:
    for node in nodes_of(example).values():
        kubernetes_validate.validate(node, "1.37.0", strict=True)
        typed = ApiClient()._ApiClient__deserialize(node, "V1Node")  # what the kubernetes client reads
        assert typed.status.capacity == node["status"]["capacity"]


# --- example profiles -----------------------------------------------------------------

@pytest.mark.parametrize(("example", "nodes", "gpus"), [
    ("dgx-2x8", 2, 16), ("hetero", 13, 39), ("tiny", 1, 2), ("openb", 1213, 6212),
], ids=["dgx-2x8", "hetero", "tiny", "openb"])
def test_example_profiles_load(example: str, nodes: int, gpus: int) -> None:
    profile = load_profile(EXAMPLES / f"{example}.yaml")
    assert (profile.node_count, profile.gpu_count) == (nodes, gpus)
    assert parse_profile(yaml.safe_load(profile_to_yaml(profile))) == profile


def test_hetero_has_what_its_comment_promises() -> None:
    pools = load_profile(EXAMPLES / "hetero.yaml").pools
    assert {pool.gpus for pool in pools if pool.gpu_product == "Tesla-T4"} == {1, 2, 4}
    assert any(pool.gpus == 0 for pool in pools)
    assert any(pool.taints for pool in pools)


# --- the openb profile ----------------------------------------------------------------

@needs_openb
def test_openb_profile_has_the_trace_cluster() -> None:
    profile = profile_from_openb(OPENB_GPU_NODES)
    assert (profile.node_count, profile.gpu_count, len(profile.pools)) == (1213, 6212, 15)
    assert sum(pool.count * pool.cpu_millis for pool in profile.pools) == 107_018_000
    pools = {pool.name: pool for pool in profile.pools}
    assert pools["g2-8gpu-96c-384gi"].count == 549
    assert pools["g2-8gpu-96c-384gi"].gpu_product == "G2"
    assert pools["t4-2gpu-104c-512gi"].count == 387
    assert pools["v100m32-8gpu-96c-768gi"].gpu_product == "Tesla-V100-SXM2-32GB"


@needs_openb
def test_openb_example_is_up_to_date() -> None:
    assert load_profile(EXAMPLES / "openb.yaml") == profile_from_openb(OPENB_GPU_NODES), (
        "examples/clusters/openb.yaml is stale: regenerate it with write_openb_profile")


@pytest.mark.skipif(not OPENB_ALL_NODES.exists(), reason=f"the openb trace is not at {OPENB_ALL_NODES}")
def test_openb_all_nodes_add_cpu_only_pools() -> None:
    profile = profile_from_openb(OPENB_ALL_NODES)
    assert profile.node_count == 1213 + 310
    assert profile.gpu_count == 6212
    assert all(pool.name.startswith("cpu-") for pool in profile.pools if not pool.gpus)


OPENB_ROWS = "sn,cpu_milli,memory_mib,gpu,model\n"
OPENB_MODELS = [
    ("V100M32", "Tesla-V100-SXM2-32GB", 32768, [list(range(8))]),
    ("V100M16", "Tesla-V100-SXM2-16GB", 16384, [list(range(8))]),
    ("T4", "Tesla-T4", 16384, [[index] for index in range(8)]),
    ("P100", "Tesla-P100-PCIE-16GB", 16384, [[index] for index in range(8)]),
    ("A10", "NVIDIA-A10", 24576, [[index] for index in range(8)]),
    ("G2", "G2", 32768, [[index] for index in range(8)]),
]


@pytest.mark.parametrize(("code", "product", "memory", "islands"), OPENB_MODELS,
                         ids=[case[0] for case in OPENB_MODELS])
def test_openb_model_codes_become_products(tmp_path: Path, code: str, product: str, memory: int,
                                           islands: list[list[int]]) -> None:
    csv_path = tmp_path / "nodes.csv"
    csv_path.write_text(OPENB_ROWS + f"n0,96000,786432,8,{code}\nn1,96000,786432,8,{code}\n")
    (pool,) = profile_from_openb(csv_path).pools
    assert (pool.count, pool.gpu_product, pool.gpu_memory_mib, pool.islands) == (2, product, memory, islands)
    assert pool.labels["trireme.io/openb-model"] == code
    assert (pool.cpu, pool.memory) == ("96", "768Gi")


def test_openb_pools_group_identical_nodes_in_trace_order(tmp_path: Path) -> None:
    csv_path = tmp_path / "nodes.csv"
    csv_path.write_text(OPENB_ROWS + "a,8000,32768,1,T4\nb,64000,262144,2,P100\nc,8000,32768,1,T4\n"
                                     "d,8000,32768,2,T4\ne,32000,131072,0,\n")
    profile = profile_from_openb(csv_path)
    assert [(pool.name, pool.count) for pool in profile.pools] == [
        ("t4-1gpu-8c-32gi", 2), ("p100-2gpu-64c-256gi", 1), ("t4-2gpu-8c-32gi", 1), ("cpu-32c-128gi", 1)]


def test_write_openb_profile_writes_a_loadable_file(tmp_path: Path) -> None:
    csv_path, out = tmp_path / "nodes.csv", tmp_path / "openb.yaml"
    csv_path.write_text(OPENB_ROWS + "a,8000,32768,1,T4\nb,96000,393216,8,G3\n")
    written = write_openb_profile(csv_path, out)
    assert out.read_text().startswith("# The openb trace's GPU cluster")
    assert load_profile(out) == written
    assert (written.node_count, written.gpu_count) == (2, 9)


@pytest.mark.parametrize(("text", "fragment"), [
    ("sn,cpu,memory,gpu\nn0,1,1,1\n", "missing column(s) cpu_milli, memory_mib, model"),
    (OPENB_ROWS + "n0,lots,1,1,T4\n", "line 2"),
], ids=["wrong-columns", "bad-number"])
def test_openb_rejects_other_files(tmp_path: Path, text: str, fragment: str) -> None:
    csv_path = tmp_path / "nodes.csv"
    csv_path.write_text(text)
    with pytest.raises(ProfileError) as caught:
        profile_from_openb(csv_path)
    assert fragment in str(caught.value)
