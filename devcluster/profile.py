"""Node profiles: the GPU nodes the local cluster pretends to have.

A profile is a YAML file that lists pools of identical nodes: how many, how many GPUs
each, which GPU product with how much memory, how NVLink joins the GPUs, CPU, memory,
labels, taints and topology. The local cluster turns it into Node objects labelled
the way NVIDIA GPU Feature Discovery (GFD) labels real GPU nodes, so Trireme reads the
same labels, capacities and taints here as on a real cluster, and a placement problem
(a fragmented cluster, a tainted pool, two NVLink islands) can be written down and
replayed.

A profile file looks like this::

    name: dgx-2x8
    pools:
      - name: dgx
        count: 2
        gpus: 8
        gpuProduct: NVIDIA-A100-SXM4-80GB
        gpuMemoryMiB: 81920
        nvlinkIslands: [[0, 1, 2, 3], [4, 5, 6, 7]]
        cpu: "256"
        memory: 1Ti
        topology: {zone: zone-a, rack: rack-1}

The profile of the openb trace's cluster (the FGD paper's, used by the placement
benchmarks) is generated from the trace's node list by ``write_openb_profile``.

NVLink islands annotation
-------------------------
Nodes carry ``trireme.io/nvlink-islands``: the node's GPUs grouped by NVLink
connectivity. Islands are separated by ``;``; an island lists GPU indices separated
by ``,``, where ``a-b`` stands for the indices a to b inclusive. ``0-3;4-7`` is two
islands of four, ``0-7`` one island of eight, ``0;1;2;3`` four GPUs joined by PCIe
only, ``0,2;1,3`` pairs. Every GPU of the node is in exactly one island; GPUs in one
island can run one tensor-parallel replica over NVLink. Nodes without GPUs have no
annotation. ``parse_nvlink_islands`` reads it, ``format_nvlink_islands`` writes it.
"""

from __future__ import annotations

import csv
import difflib
import platform
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from os import PathLike
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from kubernetes.utils.quantity import parse_quantity
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

ISLANDS_ANNOTATION = "trireme.io/nvlink-islands"
POOL_LABEL = "trireme.io/pool"
OPENB_MODEL_LABEL = "trireme.io/openb-model"
HOSTNAME_LABEL = "kubernetes.io/hostname"
OS_LABEL = "kubernetes.io/os"
ARCH_LABEL = "kubernetes.io/arch"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
# Kubernetes defines no well-known rack label; this one sits next to the standard ones.
RACK_LABEL = "topology.trireme.io/rack"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPU_RESOURCE = "nvidia.com/gpu"

DEFAULT_MAX_PODS = 110
"""The kubelet's default ``--max-pods``."""

MAX_NODE_NAME = 63
"""Node names double as the ``kubernetes.io/hostname`` label value: 63 characters at most."""

# Labels the profile derives from pool fields; setting them by hand would contradict them.
DERIVED_LABELS = {
    HOSTNAME_LABEL: "the node name",
    OS_LABEL: "the node system settings",
    ARCH_LABEL: "the node system settings",
    INSTANCE_TYPE_LABEL: "instanceType",
    REGION_LABEL: "topology.region",
    ZONE_LABEL: "topology.zone",
    RACK_LABEL: "topology.rack",
    POOL_LABEL: "the pool name",
    GPU_PRODUCT_LABEL: "gpuProduct",
    GPU_MEMORY_LABEL: "gpuMemoryMiB",
    GPU_COUNT_LABEL: "gpus",
    GPU_PRESENT_LABEL: "gpus",
}

# Used with fullmatch: a trailing newline must not pass.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


class ProfileError(ValueError):
    """A profile that cannot be used; ``problems`` lists (field path, what to fix)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"  {where}: {what}" if where else f"  {what}" for where, what in problems]
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        super().__init__(f"{source}: {count}:\n" + "\n".join(lines))


# --- field checks --------------------------------------------------------------------


def _check_dns_label(value: str, what: str) -> str:
    if len(value) > MAX_NODE_NAME or not _DNS_LABEL.fullmatch(value):
        raise ValueError(f"{what} {value!r} must be a DNS label: lowercase letters, digits and '-', "
                         f"starting and ending with a letter or digit, at most {MAX_NODE_NAME} characters")
    return value


def _check_label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise ValueError(f"label key {key!r}: the prefix before '/' must be a lowercase DNS subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ValueError(f"label key {key!r}: the name must be 1-63 letters, digits, '-', '_' or '.', "
                         "starting and ending with a letter or digit")
    return key


def _check_label_value(value: str, key: str) -> str:
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        raise ValueError(f"label {key!r}: value {value!r} must be empty or 1-63 letters, digits, '-', '_' "
                         "or '.', starting and ending with a letter or digit (quote numbers in YAML)")
    return value


def _quantity(value: object, what: str, example: str) -> Decimal:
    try:
        amount = parse_quantity(str(value).strip())
    except ValueError:
        amount = None
    if amount is None or not amount.is_finite() or amount <= 0:
        raise ValueError(f"{what} {value!r} is not a positive Kubernetes quantity, e.g. {example}")
    return amount


def cpu_millis(cpu: str) -> int:
    """Millicores of a CPU quantity (``"96"`` -> 96000, ``"500m"`` -> 500)."""
    return int(parse_quantity(cpu) * 1000)


def memory_bytes(memory: str) -> int:
    """Bytes of a memory quantity (``"1Gi"`` -> 1073741824)."""
    return int(parse_quantity(memory))


def binary_quantity(amount: int) -> str:
    """The shortest exact binary-suffixed form of a byte count (``1073741824`` -> ``"1Gi"``)."""
    for power, suffix in ((6, "Ei"), (5, "Pi"), (4, "Ti"), (3, "Gi"), (2, "Mi"), (1, "Ki")):
        unit = 1024 ** power
        if amount % unit == 0:
            return f"{amount // unit}{suffix}"
    return str(amount)


def cpu_quantity(millis: int) -> str:
    """The canonical CPU quantity for millicores (96000 -> ``"96"``, 500 -> ``"500m"``)."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


# --- NVLink islands -------------------------------------------------------------------


def format_nvlink_islands(islands: Sequence[Sequence[int]]) -> str:
    """Write islands in the annotation format: ``[[0,1,2,3],[4,5,6,7]]`` -> ``"0-3;4-7"``.

    Runs of consecutive ascending indices become ``a-b``; the order of islands and of
    indices within an island is kept, so canonical (sorted) islands give canonical text.
    """
    return ";".join(_format_island(island) for island in islands)


def _format_island(island: Sequence[int]) -> str:
    parts: list[str] = []
    start = 0
    while start < len(island):
        end = start
        while end + 1 < len(island) and island[end + 1] == island[end] + 1:
            end += 1
        if end == start:
            parts.append(str(island[start]))
        else:
            parts.append(f"{island[start]}-{island[end]}")
        start = end + 1
    return ",".join(parts)


def parse_nvlink_islands(text: str) -> list[list[int]]:
    """Read the ``trireme.io/nvlink-islands`` annotation: ``"0-3;4-7"`` -> ``[[0,1,2,3],[4,5,6,7]]``.

    An empty string means no islands. Raises ``ValueError`` naming the bad part on
    malformed text (empty island, a range that runs backwards, a non-number).
    """
    text = text.strip()
    if not text:
        return []
    return [_parse_island(part, text) for part in text.split(";")]


def _parse_island(part: str, whole: str) -> list[int]:
    island: list[int] = []
    for item in part.split(","):
        item = item.strip()
        low, dash, high = item.partition("-")
        if not low.strip().isdigit() or (dash and not high.strip().isdigit()):
            raise ValueError(f"NVLink islands {whole!r}: {item!r} is not a GPU index or a range a-b "
                             "(format: islands separated by ';', indices by ',', e.g. '0-3;4-7')")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"NVLink islands {whole!r}: range {item!r} runs backwards")
        island.extend(range(first, last + 1))
    return island


def _check_islands(islands: list[list[int]], gpus: int) -> list[list[int]]:
    """Check islands partition GPUs 0..gpus-1; return them sorted (the canonical form)."""
    seen: set[int] = set()
    for number, island in enumerate(islands):
        if not island:
            raise ValueError(f"island {number} is empty; drop it")
        for index in island:
            if not 0 <= index < gpus:
                raise ValueError(f"GPU index {index} in island {number} is out of range: "
                                 f"this pool's nodes have {gpus} GPUs, indices 0-{gpus - 1}")
            if index in seen:
                raise ValueError(f"GPU {index} is in more than one island; each GPU belongs to exactly one")
            seen.add(index)
    missing = sorted(set(range(gpus)) - seen)
    if missing:
        listed = ", ".join(map(str, missing))
        raise ValueError(f"GPUs {listed} are in no island; the islands must cover every GPU 0-{gpus - 1} "
                         "exactly once (a GPU without NVLink is an island of its own, e.g. [[0], [1]])")
    return sorted((sorted(island) for island in islands), key=lambda island: island[0])


# --- the profile model ----------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class Taint(_Model):
    """A node taint, as in ``spec.taints`` of a Node."""

    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        return _check_label_key(key)

    @field_validator("value")
    @classmethod
    def _value(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _check_label_value(value, info.data.get("key", "taint"))


class Topology(_Model):
    """Where a pool's nodes sit: ``topology.kubernetes.io/region`` and ``/zone``, and a rack."""

    region: str | None = None
    zone: str | None = None
    rack: str | None = None

    @field_validator("region", "zone", "rack")
    @classmethod
    def _value(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _check_label_value(value, str(info.field_name))

    def labels(self) -> dict[str, str]:
        pairs = ((REGION_LABEL, self.region), (ZONE_LABEL, self.zone), (RACK_LABEL, self.rack))
        return {key: value for key, value in pairs if value is not None}


class Pool(_Model):
    """A group of identical nodes.

    GPU fields (``gpuProduct``, ``gpuMemoryMiB``, ``nvlinkIslands``) belong to pools
    with ``gpus > 0``: product and memory are then required, islands default to one
    island holding every GPU.
    """

    name: str
    count: int = Field(ge=1, description="Nodes in the pool.")
    name_prefix: str | None = Field(default=None, description="Node names are <namePrefix or name>-<index>.")
    instance_type: str | None = Field(default=None, description="node.kubernetes.io/instance-type; default: the pool name.")
    gpus: int = Field(default=0, ge=0, le=64, description="GPUs per node.")
    gpu_product: str | None = Field(default=None, validate_default=True)
    gpu_memory_mib: int | None = Field(default=None, alias="gpuMemoryMiB", validate_default=True)
    nvlink_islands: list[list[int]] | None = Field(default=None, validate_default=True)
    cpu: str = Field(description="CPU cores (96) or millicores ('96000m').")
    memory: str = Field(description="Memory quantity, e.g. '512Gi'.")
    max_pods: int = Field(default=DEFAULT_MAX_PODS, ge=1)
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    topology: Topology = Field(default_factory=Topology)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return _check_dns_label(name, "pool name")

    @field_validator("name_prefix")
    @classmethod
    def _name_prefix(cls, prefix: str | None) -> str | None:
        return None if prefix is None else _check_dns_label(prefix, "namePrefix")

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str | None) -> str | None:
        return None if value is None else _check_label_value(value, INSTANCE_TYPE_LABEL)

    @field_validator("gpu_product")
    @classmethod
    def _gpu_product(cls, product: str | None, info: ValidationInfo) -> str | None:
        gpus = info.data.get("gpus")
        if gpus is None:
            return product
        if gpus > 0 and product is None:
            raise ValueError("required when gpus > 0: the product as GPU Feature Discovery reports it, "
                             "e.g. NVIDIA-A100-SXM4-80GB or Tesla-T4")
        if gpus == 0 and product is not None:
            raise ValueError("set only for GPU nodes, but gpus is 0; set gpus or remove gpuProduct")
        return None if product is None else _check_label_value(product, GPU_PRODUCT_LABEL)

    @field_validator("gpu_memory_mib")
    @classmethod
    def _gpu_memory(cls, mib: int | None, info: ValidationInfo) -> int | None:
        gpus = info.data.get("gpus")
        if gpus is None:
            return mib
        if gpus > 0 and mib is None:
            raise ValueError("required when gpus > 0: memory per GPU in MiB, e.g. 81920 for an 80 GB A100")
        if gpus == 0 and mib is not None:
            raise ValueError("set only for GPU nodes, but gpus is 0; set gpus or remove gpuMemoryMiB")
        if mib is not None and mib <= 0:
            raise ValueError(f"must be a positive number of MiB, got {mib}")
        return mib

    @field_validator("nvlink_islands")
    @classmethod
    def _islands(cls, islands: list[list[int]] | None, info: ValidationInfo) -> list[list[int]] | None:
        gpus = info.data.get("gpus")
        if gpus is None or islands is None:
            return islands
        if gpus == 0:
            raise ValueError("set only for GPU nodes, but gpus is 0; remove nvlinkIslands")
        return _check_islands(islands, gpus)

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, cpu: object) -> str:
        amount = _quantity(cpu, "cpu", "96 (cores) or '96000m' (millicores)")
        if amount * 1000 != int(amount * 1000):
            raise ValueError(f"cpu {cpu!r} is finer than a millicore")
        return str(cpu).strip()

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, memory: object) -> str:
        amount = _quantity(memory, "memory", "'512Gi'")
        if amount != int(amount):
            raise ValueError(f"memory {memory!r} is not a whole number of bytes")
        return str(memory).strip()

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            _check_label_key(key)
            _check_label_value(value, key)
            if key in DERIVED_LABELS:
                raise ValueError(f"label {key!r} is derived from {DERIVED_LABELS[key]}; set that instead")
        return labels

    @model_validator(mode="after")
    def _node_names_fit(self) -> Pool:
        longest = self.node_name(self.count - 1)
        if len(longest) > MAX_NODE_NAME:
            raise ValueError(f"node names such as {longest!r} are longer than {MAX_NODE_NAME} characters; "
                             "shorten the pool name or set a shorter namePrefix")
        return self

    @property
    def prefix(self) -> str:
        """What node names start with: ``namePrefix``, or the pool name."""
        return self.name_prefix or self.name

    @property
    def islands(self) -> list[list[int]]:
        """The NVLink islands in effect: as given, else one island of all GPUs (none without GPUs)."""
        if self.nvlink_islands is not None:
            return self.nvlink_islands
        return [list(range(self.gpus))] if self.gpus else []

    @property
    def cpu_millis(self) -> int:
        return cpu_millis(self.cpu)

    @property
    def memory_bytes(self) -> int:
        return memory_bytes(self.memory)

    def node_name(self, index: int) -> str:
        """``<prefix>-<index>``, the index zero-padded to the width of the pool's largest index."""
        width = len(str(self.count - 1))
        return f"{self.prefix}-{index:0{width}d}"

    def node_names(self) -> list[str]:
        return [self.node_name(index) for index in range(self.count)]


class Profile(_Model):
    """A cluster: a name and its pools of nodes."""

    name: str
    pools: list[Pool] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return _check_dns_label(name, "profile name")

    @model_validator(mode="after")
    def _distinct_pools(self) -> Profile:
        names: set[str] = set()
        prefixes: dict[str, str] = {}
        for pool in self.pools:
            if pool.name in names:
                raise ValueError(f"two pools are named {pool.name!r}; pool names must be unique")
            names.add(pool.name)
            if pool.prefix in prefixes:
                raise ValueError(f"pools {prefixes[pool.prefix]!r} and {pool.name!r} both name their nodes "
                                 f"{pool.prefix}-<index>; give one of them a different namePrefix")
            prefixes[pool.prefix] = pool.name
        return self

    @property
    def node_count(self) -> int:
        return sum(pool.count for pool in self.pools)

    @property
    def gpu_count(self) -> int:
        return sum(pool.count * pool.gpus for pool in self.pools)


# --- loading and writing --------------------------------------------------------------


def load_profile(path: str | PathLike[str]) -> Profile:
    """Read and check a profile file; raises ``ProfileError`` listing every problem."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ProfileError(str(path), [("", f"not valid YAML: {error}")]) from error
    return parse_profile(data, source=str(path))


def parse_profile(data: object, source: str = "profile") -> Profile:
    """Check already-parsed profile data; raises ``ProfileError`` listing every problem."""
    if not isinstance(data, dict):
        raise ProfileError(source, [("", "a profile is a mapping with 'name' and 'pools'")])
    try:
        return Profile.model_validate(data)
    except ValidationError as error:
        raise ProfileError(source, [_describe(problem) for problem in error.errors()]) from error


def _describe(problem: Any) -> tuple[str, str]:
    location = _aliased(tuple(problem["loc"]))
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".")
    if problem["type"] == "extra_forbidden":
        allowed = _field_aliases(_model_at(location[:-1]))
        close = difflib.get_close_matches(str(location[-1]), allowed, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return where, f"unknown field; {hint}the fields here are: {', '.join(allowed)}"
    if problem["type"] == "missing":
        return where, "required field is missing"
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "string_type":
        message += " (quote numbers and true/false in YAML)"
    return where, message


def _aliased(location: tuple[Any, ...]) -> tuple[Any, ...]:
    """The location with field names as the file spells them (defaults report Python names)."""
    model: type[BaseModel] | None = Profile
    parts: list[Any] = []
    for part in location:
        found = _field(model, part) if model is not None and isinstance(part, str) else None
        if found is None:
            parts.append(part)
            continue
        name, annotation = found
        parts.append(name)
        model = _inner_model(annotation)
    return tuple(parts)


def _field(model: type[BaseModel], part: str) -> tuple[str, Any] | None:
    for name, info in model.model_fields.items():
        if part in (name, info.alias):
            return info.alias or name, info.annotation
    return None


def _model_at(location: tuple[Any, ...]) -> type[BaseModel]:
    """The model class that the data at ``location`` (from the profile root) validates as."""
    model: type[BaseModel] = Profile
    for part in location:
        found = _field(model, part) if isinstance(part, str) else None
        if found is not None:
            model = _inner_model(found[1]) or model
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _inner_model(argument)
        if found is not None:
            return found
    return None


def _field_aliases(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


class _ProfileDumper(yaml.SafeDumper):
    """Writes lists of numbers, and lists of such lists (NVLink islands), on one line."""


def _represent_list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    flat = all(not isinstance(item, (dict, list)) or
               (isinstance(item, list) and all(not isinstance(inner, (dict, list)) for inner in item))
               for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)


_ProfileDumper.add_representer(list, _represent_list)


def profile_to_yaml(profile: Profile) -> str:
    """The profile as YAML, leaving out fields at their defaults."""
    data = profile.model_dump(by_alias=True, exclude_defaults=True, exclude_none=True)
    return yaml.dump(data, Dumper=_ProfileDumper, sort_keys=False, width=100)


# --- Node objects ---------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSystem:
    """What every node reports about its software (``status.nodeInfo`` and two labels)."""

    kubelet_version: str = "v1.37.0"
    """The Kubernetes version the local API server speaks; kubectl warns on version skew."""
    os_image: str = "Trireme devcluster (simulated node)"
    """Shown by ``kubectl get nodes -o wide``; says plainly that the node is simulated."""
    container_runtime_version: str = "trireme-devcluster://0.1"
    """``<runtime>://<version>`` like ``containerd://1.7``: the local kubelet runs processes."""
    kernel_version: str = field(default_factory=platform.release)
    """The host's kernel: every simulated node runs on it."""
    architecture: str = "amd64"
    """GPU nodes are amd64; also the ``kubernetes.io/arch`` label."""
    operating_system: str = "linux"
    """Also the ``kubernetes.io/os`` label."""


NodeAddress = Callable[[int, str], str]
"""Gives a node its InternalIP from its position in the profile (0, 1, ...) and name."""


def loopback_address(ordinal: int, name: str) -> str:
    """Every node is this machine, so every node's InternalIP is the loopback address."""
    return "127.0.0.1"


def node_objects(profile: Profile, *, now: datetime, internal_ip: NodeAddress = loopback_address,
                 system: NodeSystem | None = None) -> list[dict[str, Any]]:
    """The profile's Node objects (``v1``, kind ``Node``), pool by pool, in name order.

    ``now`` stamps the conditions' heartbeat and transition times (naive means UTC);
    ``internal_ip`` assigns addresses. Allocatable equals capacity: nothing is reserved
    for a system that does not run.
    """
    system = system or NodeSystem()
    stamp = _timestamp(now)
    nodes = []
    for pool in profile.pools:
        for index in range(pool.count):
            name = pool.node_name(index)
            nodes.append(_node(pool, name, internal_ip(len(nodes), name), stamp, system))
    return nodes


def _timestamp(now: datetime) -> str:
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _node(pool: Pool, name: str, address: str, stamp: str, system: NodeSystem) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": node_labels(pool, name, system)}
    if pool.gpus:
        metadata["annotations"] = {ISLANDS_ANNOTATION: format_nvlink_islands(pool.islands)}
    spec: dict[str, Any] = {"providerID": f"trireme-devcluster://{name}"}
    if pool.taints:
        spec["taints"] = [taint.model_dump(exclude_none=True) for taint in pool.taints]
    resources = node_capacity(pool)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": metadata,
        "spec": spec,
        "status": {
            "capacity": resources,
            "allocatable": dict(resources),
            "conditions": _conditions(stamp),
            "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": _node_info(name, system),
        },
    }


def node_labels(pool: Pool, name: str, system: NodeSystem | None = None) -> dict[str, str]:
    """A node's labels: the kubelet's, GPU Feature Discovery's, topology, the pool's own."""
    system = system or NodeSystem()
    labels = {
        "beta.kubernetes.io/arch": system.architecture,
        "beta.kubernetes.io/os": system.operating_system,
        ARCH_LABEL: system.architecture,
        OS_LABEL: system.operating_system,
        HOSTNAME_LABEL: name,
        INSTANCE_TYPE_LABEL: pool.instance_type or pool.name,
        POOL_LABEL: pool.name,
        **pool.topology.labels(),
    }
    if pool.gpus:
        labels |= {
            GPU_PRESENT_LABEL: "true",
            GPU_PRODUCT_LABEL: str(pool.gpu_product),
            GPU_MEMORY_LABEL: str(pool.gpu_memory_mib),
            GPU_COUNT_LABEL: str(pool.gpus),
        }
    return labels | pool.labels


def node_capacity(pool: Pool) -> dict[str, str]:
    """``status.capacity`` of a pool's node: cpu, memory, pods and, on GPU nodes, nvidia.com/gpu."""
    capacity = {"cpu": pool.cpu, "memory": pool.memory, "pods": str(pool.max_pods)}
    if pool.gpus:
        capacity[GPU_RESOURCE] = str(pool.gpus)
    return capacity


def _conditions(stamp: str) -> list[dict[str, str]]:
    states = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    return [{"type": kind, "status": status, "reason": reason, "message": message,
             "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
            for kind, status, reason, message in states]


def _node_info(name: str, system: NodeSystem) -> dict[str, str]:
    machine = uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.nodes.trireme.io")
    return {
        "machineID": machine.hex,
        "systemUUID": str(machine),
        "bootID": str(uuid.uuid5(machine, "boot")),
        "kernelVersion": system.kernel_version,
        "osImage": system.os_image,
        "containerRuntimeVersion": system.container_runtime_version,
        "kubeletVersion": system.kubelet_version,
        "kubeProxyVersion": "",
        "operatingSystem": system.operating_system,
        "architecture": system.architecture,
    }


# --- the openb trace's cluster --------------------------------------------------------


@dataclass(frozen=True)
class OpenbGpuModel:
    """How a GPU model code of the openb trace becomes a GPU Feature Discovery product."""

    product: str
    """``nvidia.com/gpu.product`` as GFD writes it."""
    memory_mib: int
    """Memory per GPU: the model's nominal size (the trace has no memory per GPU)."""
    nvlink: bool
    """Whether a node's GPUs form one NVLink island (SXM boards) or none (PCIe cards)."""


OPENB_GPU_MODELS: dict[str, OpenbGpuModel] = {
    "T4": OpenbGpuModel("Tesla-T4", 16 * 1024, nvlink=False),
    "P100": OpenbGpuModel("Tesla-P100-PCIE-16GB", 16 * 1024, nvlink=False),
    "V100M16": OpenbGpuModel("Tesla-V100-SXM2-16GB", 16 * 1024, nvlink=True),
    "V100M32": OpenbGpuModel("Tesla-V100-SXM2-32GB", 32 * 1024, nvlink=True),
    "A10": OpenbGpuModel("NVIDIA-A10", 24 * 1024, nvlink=False),
}
"""The trace's disclosed models. G1, G2 and G3 are undisclosed: see ``openb_gpu_model``."""

UNDISCLOSED_GPU_MEMORY_MIB = 32 * 1024
"""Memory for undisclosed codes (G1-G3): 32 GiB, the top of the disclosed models' 16-32 GiB,
so memory-aware placement neither rejects nor singles them out; the trace's tasks ask
for GPU shares, not memory."""

OPENB_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")


def openb_gpu_model(code: str) -> OpenbGpuModel:
    """The product for a trace code; undisclosed codes keep their code as the product name
    (so ``gpu_spec`` filters in the trace still match), 32 GiB and no NVLink."""
    return OPENB_GPU_MODELS.get(code) or OpenbGpuModel(code, UNDISCLOSED_GPU_MEMORY_MIB, nvlink=False)


@dataclass(frozen=True)
class _NodeShape:
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str


def profile_from_openb(csv_path: str | PathLike[str], name: str = "openb") -> Profile:
    """The openb trace's cluster: its node list grouped into pools of identical nodes.

    Nodes with the same (CPU, memory, GPU count, model) form one pool, in the order
    the trace first lists them. Pools are named after their shape, e.g.
    ``v100m32-8gpu-96c-768gi``, and labelled ``trireme.io/openb-model`` with the
    trace's code. Rows without GPUs (the all-node list) become CPU-only pools.
    """
    shapes = _read_openb_shapes(Path(csv_path))
    counts: dict[_NodeShape, int] = {}
    for shape in shapes:
        counts[shape] = counts.get(shape, 0) + 1
    return Profile(name=name, pools=[_openb_pool(shape, count) for shape, count in counts.items()])


def _read_openb_shapes(path: Path) -> list[_NodeShape]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in OPENB_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ProfileError(str(path), [("", f"not an openb node list: missing column(s) {', '.join(missing)}; "
                                                f"expected {', '.join(OPENB_COLUMNS)}")])
        return [_openb_shape(row, path, number) for number, row in enumerate(reader, start=2)]


def _openb_shape(row: dict[str, str], path: Path, line: int) -> _NodeShape:
    try:
        gpus = int(row["gpu"] or 0)
        return _NodeShape(int(row["cpu_milli"]), int(row["memory_mib"]), gpus,
                          row["model"].strip() if gpus else "")
    except (TypeError, ValueError) as error:
        raise ProfileError(str(path), [(f"line {line}", f"not a node row ({error}): {row}")]) from error


def _openb_pool(shape: _NodeShape, count: int) -> Pool:
    size = f"{cpu_quantity(shape.cpu_milli)}c-{binary_quantity(shape.memory_mib * 1024 * 1024)}".lower()
    common: dict[str, Any] = {"count": count, "cpu": cpu_quantity(shape.cpu_milli),
                              "memory": binary_quantity(shape.memory_mib * 1024 * 1024)}
    if not shape.gpus:
        return Pool(name=f"cpu-{size}", **common)
    model = openb_gpu_model(shape.model)
    islands = None if model.nvlink else [[index] for index in range(shape.gpus)]
    return Pool(name=f"{shape.model.lower()}-{shape.gpus}gpu-{size}", gpus=shape.gpus,
                gpu_product=model.product, gpu_memory_mib=model.memory_mib, nvlink_islands=islands,
                labels={OPENB_MODEL_LABEL: shape.model}, **common)


def write_openb_profile(csv_path: str | PathLike[str], out: str | PathLike[str], name: str = "openb") -> Profile:
    """Generate the openb profile from the trace's node list and write it to ``out``."""
    profile = profile_from_openb(csv_path, name=name)
    header = (f"# The openb trace's GPU cluster (Alibaba cluster-trace-gpu-v2023, as used by the FGD\n"
              f"# paper, USENIX ATC '23): {profile.node_count} nodes, {profile.gpu_count} GPUs.\n"
              f"# Generated from {Path(csv_path).name} by `trireme devcluster profile-from-openb`;\n"
              f"# regenerate rather than edit.\n")
    Path(out).write_text(header + profile_to_yaml(profile), encoding="utf-8")
    return profile
