#!/usr/bin/env python3
"""Derive the protobuf field tables of the Kubernetes API types from the Go binaries.

kubectl and helm send the bodies of built-in kinds as Kubernetes protobuf, and
the local API server must turn those bodies into the JSON a JSON client would
have sent (``devcluster/protobuf.py``). Field numbers and wire types live in
the Go struct tags of the ``k8s.io/api`` types (``protobuf:"bytes,2,opt,name=image"``),
and a Go binary keeps every struct type that its scheme registers, tags
included, for reflection. This script reads them out of the statically linked
ELF binaries of kubectl (first) and helm (for the kinds kubectl does not link,
such as CustomResourceDefinition), so no ``.proto`` file is needed.

How it reads a Go binary (amd64, Go 1.26 and 1.27 layouts, which agree here):

* Type descriptors (``internal/abi.Type``, 48 bytes: size, ptrdata, hash,
  tflag, align, fieldAlign, kind, equal, gcdata, str nameOff, ptrToThis) lie in
  ``.go.type`` when the binary has it, else in ``.rodata``; that section's start
  is the base ``nameOff`` values are relative to.
* A struct type (kind 25) continues with ``PkgPath`` (8 bytes) and the
  ``Fields`` slice header (pointer, len, cap with len == cap); each field is
  ``{Name *byte, Typ *abi.Type, Offset uintptr}``. Named types carry an
  ``uncommonType`` right after their kind-specific part, whose first word is the
  ``nameOff`` of their package path.
* An ``abi.Name`` is one flags byte (1 exported, 2 has tag, 8 embedded), a
  varint length and the name, then, with a tag, a varint length and the tag.

Every struct descriptor in the type section is found by scanning for that shape
(kind byte, a field slice that points into the binary, names that parse), and
named with its package path: ``k8s.io/api/core/v1.Pod`` becomes the OpenAPI
definition name ``io.k8s.api.core.v1.Pod``. Each table is then checked against
the Kubernetes definitions that ``kubernetes-validate`` ships (the same version
the server publishes): the JSON names of a struct (embedded ``json:",inline"``
structs flattened, ``TypeMeta`` dropped) must equal the definition's properties
less ``apiVersion``/``kind``, and every field's Go type must agree with the
property's JSON type. The kinds the local cluster serves, with all the types
they reach, must be covered and agree, or the script fails.

Output (``devcluster/k8s_protobuf_fields.json``), one entry per Go struct with
protobuf tags, fields in Go declaration order (the order Go's JSON encoder
writes them)::

    {definition_name: {field_number: [json_name, wire_kind, repeated,
                                      [map_key_wire, map_value_wire] | null,
                                      go_type, omit]}}

``json_name`` is "" for an embedded struct whose fields JSON flattens into its
parent (``VolumeSource`` in ``Volume``) and "-" for a field JSON never shows.
``wire_kind``, ``repeated`` and the map wires are what the tag says (Kubernetes
tags name no map wires, and hand-written tags are not always right: pointers
tagged ``bytes`` travel as varints or doubles); the decoder goes by ``go_type``
and the wire type each value arrives with. ``go_type`` is the field's Go type
with struct types spelt as definition names: ``string``, ``bool``, ``int``,
``uint``, ``float``, ``bytes`` (``[]byte``), ``*T``, ``[]T`` (a repeated
field), ``items[]T`` (a named slice that go-to-protobuf wraps in a message
whose field 1 holds the items, such as ``ExtraValue`` in a map or ``Verbs``),
``map[K]V`` or a definition name. ``omit`` is 1 for ``omitempty``, 2 for
``omitzero``, 3 for both. Structs without fields that tagged structs refer to
get an empty table.

Rerun it after kubectl or helm change version (``scripts/install-tools.sh``
installs them), then commit the regenerated JSON::

    .venv/bin/python scripts/generate-protobuf-fields.py
    .venv/bin/python scripts/generate-protobuf-fields.py --check   # is it current?
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BINARIES = (ROOT / ".venv/bin/kubectl", ROOT / ".venv/bin/helm")
DEFAULT_OUTPUT = ROOT / "devcluster/k8s_protobuf_fields.json"
KUBERNETES_DEFINITIONS = "kubernetes-json-schema/v1.37.0-local/_definitions.json"
"""The definitions the local API server publishes (``devcluster/openapi.py``)."""

EXTRA_REQUIRED = (
    "io.k8s.api.policy.v1.Eviction",
    "io.k8s.api.core.v1.Binding",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.api.autoscaling.v1.Scale",
)
"""Bodies the server takes besides the kinds it serves (subresources, deletes)."""

CUSTOM_ENCODINGS = {
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": "string",
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime": "string",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Duration": "string",
    "io.k8s.apimachinery.pkg.api.resource.Quantity": "string",
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": "string",
    "io.k8s.apimachinery.pkg.runtime.RawExtension": "object",
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1": "object",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON": "any",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray": "any",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool": "any",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray": "any",
}
"""Types with their own JSON (and often protobuf) encoding: the decoder handles
them by name, and their JSON shape is not that of their Go fields."""

# internal/abi kinds
KIND_BOOL, KIND_INT, KIND_INT64, KIND_UINT, KIND_UINTPTR = 1, 2, 6, 7, 12
KIND_FLOAT32, KIND_FLOAT64, KIND_ARRAY, KIND_INTERFACE = 13, 14, 17, 20
KIND_MAP, KIND_POINTER, KIND_SLICE, KIND_STRING, KIND_STRUCT = 21, 22, 23, 24, 25
KIND_UINT8 = 8
TFLAG_UNCOMMON, TFLAG_EXTRA_STAR, TFLAG_NAMED = 1, 2, 4
TYPE_HEADER_SIZE = 48
OMIT_EMPTY, OMIT_ZERO = 1, 2
TYPE_META = "io.k8s.apimachinery.pkg.apis.meta.v1.TypeMeta"


# -- ELF ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    name: str
    address: int
    offset: int
    size: int


@dataclass
class ElfImage:
    """A 64-bit little-endian ELF file, addressed by virtual address."""

    path: Path
    data: bytes
    sections: dict[str, Section]

    @classmethod
    def load(cls, path: Path) -> ElfImage:
        data = path.read_bytes()
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise SystemExit(f"{path}: not a 64-bit little-endian ELF file")
        shoff = struct.unpack_from("<Q", data, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        raw = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
        names_at = raw[shstrndx][4]

        def section_name(offset: int) -> str:
            start = names_at + offset
            return data[start:data.index(b"\0", start)].decode()

        sections = {section_name(name): Section(section_name(name), addr, off, size)
                    for name, kind, _flags, addr, off, size in raw if kind == 1 and addr}  # PROGBITS
        return cls(path, data, sections)

    def offset_of(self, address: int) -> int | None:
        for section in self.sections.values():
            if section.address <= address < section.address + section.size:
                return address - section.address + section.offset
        return None

    def word(self, address: int) -> int:
        offset = self.offset_of(address)
        if offset is None:
            raise ValueError(f"address {address:#x} is outside the file")
        return struct.unpack_from("<Q", self.data, offset)[0]


# -- Go types -----------------------------------------------------------------------


@dataclass(frozen=True)
class GoField:
    name: str
    tag: str
    embedded: bool
    type_address: int


def _uvarint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, offset


def parse_struct_tag(tag: str) -> dict[str, str]:
    """``key:"value" key2:"value2"`` as Go's reflect.StructTag reads it."""
    values: dict[str, str] = {}
    rest = tag
    while rest:
        rest = rest.lstrip(" ")
        colon = rest.find(':"')
        if colon <= 0:
            break
        key, rest = rest[:colon], rest[colon + 1:]
        end = 1
        while end < len(rest) and rest[end] != '"':
            end += 2 if rest[end] == "\\" else 1
        values[key] = json.loads(rest[:end + 1])
        rest = rest[end + 1:]
    return values


def definition_name(package_path: str, type_name: str) -> str:
    """``k8s.io/api/core/v1`` + ``Pod`` -> ``io.k8s.api.core.v1.Pod`` (the OpenAPI spelling)."""
    host, _, path = package_path.partition("/")
    parts = [*reversed(host.split(".")), *(path.split("/") if path else ())]
    return ".".join([*parts, type_name])


class GoBinary:
    """The reflection metadata of one Go binary."""

    def __init__(self, image: ElfImage) -> None:
        self.image = image
        types = image.sections.get(".go.type") or image.sections[".rodata"]
        self.types_section = types
        self.types_base = types.address
        self._names: dict[int, tuple[int, str, str]] = {}

    def name(self, address: int) -> tuple[int, str, str]:
        """(flags, name, tag) of the abi.Name at ``address``."""
        cached = self._names.get(address)
        if cached is None:
            data = self.image.data
            offset = self.image.offset_of(address)
            if offset is None:
                raise ValueError(f"name address {address:#x} is outside the file")
            flags = data[offset]
            length, start = _uvarint(data, offset + 1)
            name = data[start:start + length].decode("utf-8")
            tag = ""
            if flags & 2:
                tag_length, tag_start = _uvarint(data, start + length)
                tag = data[tag_start:tag_start + tag_length].decode("utf-8")
            cached = self._names[address] = (flags, name, tag)
        return cached

    def _header(self, address: int) -> tuple[int, int, int]:
        """(tflag, kind, str nameOff) of the type at ``address``."""
        offset = self.image.offset_of(address)
        assert offset is not None
        tflag, kind = self.image.data[offset + 20], self.image.data[offset + 23] & 0x1F
        str_off = struct.unpack_from("<i", self.image.data, offset + 40)[0]
        return tflag, kind, str_off

    def type_string(self, address: int) -> str:
        tflag, _kind, str_off = self._header(address)
        text = self.name(self.types_base + str_off)[1]
        return text[1:] if tflag & TFLAG_EXTRA_STAR else text

    def package_of(self, address: int) -> str:
        """The package path of a named struct type ("" if it has none)."""
        tflag, kind, _ = self._header(address)
        if kind != KIND_STRUCT or not tflag & TFLAG_NAMED or not tflag & TFLAG_UNCOMMON:
            return ""
        offset = self.image.offset_of(address)
        assert offset is not None
        pkg_off = struct.unpack_from("<i", self.image.data, offset + TYPE_HEADER_SIZE + 32)[0]
        return self.name(self.types_base + pkg_off)[1]

    def named_struct(self, address: int) -> str | None:
        """The definition name of a named struct type, or None if unnamed."""
        package = self.package_of(address)
        if not package:
            return None
        return definition_name(package, self.type_string(address).split(".", 1)[1])

    def fields(self, address: int) -> list[GoField]:
        array, length = self.image.word(address + 56), self.image.word(address + 64)
        result = []
        for index in range(length):
            entry = array + 24 * index
            flags, name, tag = self.name(self.image.word(entry))
            result.append(GoField(name, tag, bool(flags & 8), self.image.word(entry + 8)))
        return result

    def describe(self, address: int, role: str = "element") -> str:
        """The Go type at ``address`` in the table's spelling (see the module docstring).

        ``role`` is where the type is used: ``wrapped`` (a field whose tag is not
        ``rep``, or a map value) spells a named slice as ``items[]T``, the message
        go-to-protobuf wraps such slices in; elsewhere slices are ``[]T``.
        """
        tflag, kind, _ = self._header(address)
        if kind == KIND_BOOL:
            return "bool"
        if KIND_INT <= kind <= KIND_INT64:
            return "int"
        if KIND_UINT <= kind <= KIND_UINTPTR:
            return "uint"
        if kind in (KIND_FLOAT32, KIND_FLOAT64):
            return "float"
        if kind == KIND_STRING:
            return "string"
        if kind == KIND_INTERFACE:
            return "any"
        if kind == KIND_POINTER:
            return "*" + self.describe(self.image.word(address + TYPE_HEADER_SIZE), role)
        if kind == KIND_SLICE:
            elem = self.image.word(address + TYPE_HEADER_SIZE)
            if self._header(elem)[1] == KIND_UINT8:
                return "bytes"
            wrapped = role == "wrapped" and tflag & TFLAG_NAMED
            return ("items[]" if wrapped else "[]") + self.describe(elem)
        if kind == KIND_MAP:
            key = self.image.word(address + TYPE_HEADER_SIZE)
            value = self.image.word(address + TYPE_HEADER_SIZE + 8)
            return f"map[{self.describe(key)}]{self.describe(value, 'wrapped')}"
        if kind == KIND_STRUCT:
            return self.named_struct(address) or "struct{" + self.type_string(address) + "}"
        return "unsupported:" + self.type_string(address)

    def struct_types(self) -> Iterator[int]:
        """Addresses of every struct type descriptor in the type section."""
        section, data = self.types_section, self.image.data
        start, end = section.offset, section.offset + section.size - 88
        low, high = section.address, section.address + section.size
        for offset in range(start, end, 8):
            if data[offset + 23] & 0x1F != KIND_STRUCT:
                continue
            array, length, capacity = struct.unpack_from("<QQQ", data, offset + 56)
            if length != capacity or not 0 < length < 4096 or self.image.offset_of(array) is None:
                continue
            if struct.unpack_from("<Q", data, offset)[0] > 1 << 24:
                continue
            address = offset - section.offset + section.address
            try:
                fields = self.fields(address)
            except (ValueError, UnicodeDecodeError, IndexError):
                continue
            if all(low <= f.type_address < high for f in fields):
                yield address


# -- tables -------------------------------------------------------------------------


@dataclass
class FieldEntry:
    number: int
    json_name: str
    wire: str
    repeated: bool
    map_wires: list[str] | None
    go_type: str
    omit: int

    def to_json(self) -> list[object]:
        return [self.json_name, self.wire, self.repeated, self.map_wires, self.go_type, self.omit]


@dataclass
class StructTable:
    name: str
    fields: list[FieldEntry]
    json_only: list[str] = field(default_factory=list)
    """JSON fields without a protobuf tag (never on the wire)."""


def struct_table(binary: GoBinary, address: int, name: str) -> StructTable | None:
    table = StructTable(name, [])
    for go_field in binary.fields(address):
        tags = parse_struct_tag(go_field.tag)
        json_name, *json_options = tags["json"].split(",") if "json" in tags else [go_field.name]
        if tags.get("protobuf", "-") == "-":
            if go_field.embedded and json_name == "":
                if binary.describe(go_field.type_address) == TYPE_META:
                    table.json_only += ["apiVersion", "kind"]
            elif json_name != "-":
                table.json_only.append(json_name)
            continue
        wire, number, label, *_ = tags["protobuf"].split(",")
        map_wires = None
        if "protobuf_key" in tags:
            map_wires = [tags["protobuf_key"].split(",")[0], tags["protobuf_val"].split(",")[0]]
        role = "element" if label == "rep" else "wrapped"
        omit = ("omitempty" in json_options) * OMIT_EMPTY | ("omitzero" in json_options) * OMIT_ZERO
        table.fields.append(FieldEntry(int(number), json_name, wire, label == "rep", map_wires,
                                       binary.describe(go_field.type_address, role), omit))
    return table if table.fields else None


def collect(binaries: list[GoBinary]) -> dict[str, StructTable]:
    """Tables of all ``k8s.io`` structs with protobuf tags; earlier binaries win."""
    tables: dict[str, StructTable] = {}
    for binary in binaries:
        found = 0
        for address in binary.struct_types():
            name = binary.named_struct(address)
            if name is None or name in tables or not binary.package_of(address).startswith("k8s.io/"):
                continue
            table = struct_table(binary, address, name)
            if table is not None:
                tables[name] = table
                found += 1
        print(f"{binary.image.path}: {found} new struct tables", file=sys.stderr)
    for name in list(tables):  # field-less structs that tagged ones refer to
        for entry in tables[name].fields:
            for referenced in referenced_structs(entry.go_type):
                if referenced.startswith("io.k8s.") and referenced not in tables:
                    tables[referenced] = StructTable(referenced, [])
    return dict(sorted(tables.items()))


def referenced_structs(go_type: str) -> Iterator[str]:
    go_type = go_type.lstrip("*")
    if go_type.startswith(("[]", "items[]")):
        yield from referenced_structs(go_type.split("[]", 1)[1])
    elif go_type.startswith("map["):
        depth, index = 0, 3
        for index, char in enumerate(go_type[3:], 3):
            depth += {"[": 1, "]": -1}.get(char, 0)
            if depth == 0:
                break
        yield from referenced_structs(go_type[4:index])
        yield from referenced_structs(go_type[index + 1:])
    elif go_type.startswith("io.k8s."):
        yield go_type


# -- checks against the OpenAPI definitions ------------------------------------------


def load_definitions() -> dict[str, dict]:
    import importlib.resources
    source = importlib.resources.files("kubernetes_validate").joinpath(KUBERNETES_DEFINITIONS)
    document = json.loads(source.read_bytes())
    return document.get("$defs") or document["definitions"]


def json_fields(tables: dict[str, StructTable], name: str) -> dict[str, str]:
    """JSON property -> Go type of a struct, embedded structs flattened."""
    result: dict[str, str] = {}
    for entry in tables[name].fields:
        if entry.json_name == "":
            inner = entry.go_type.lstrip("*")
            if inner in tables:
                result.update(json_fields(tables, inner))
        elif entry.json_name != "-":
            result[entry.json_name] = entry.go_type
    return result


def _schema_type(schema: dict) -> str | None:
    if "$ref" in schema:
        return "ref:" + schema["$ref"].rsplit("/", 1)[-1]
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind == "string" and schema.get("format") == "byte":
        return "bytes"
    return kind


def type_mismatch(go_type: str, schema: dict) -> str | None:
    """Why a Go field type does not fit its OpenAPI property, or None if it does."""
    expected = _schema_type(schema)
    go_type = go_type.lstrip("*")
    if expected is None:
        return None
    if expected.startswith("ref:"):
        ref = expected[4:]
        if go_type == ref:
            return None
        return f"Go {go_type} vs $ref {ref}"
    simple = {"string": "string", "bool": "boolean", "int": "integer", "uint": "integer", "float": "number",
              "bytes": "bytes"}
    if go_type in simple:
        fits = simple[go_type] == expected or (expected == "number" and go_type in ("int", "uint"))
        return None if fits else f"Go {go_type} vs {expected}"
    if go_type.startswith(("[]", "items[]")):
        if expected != "array":
            return f"Go {go_type} vs {expected}"
        return type_mismatch(go_type.split("[]", 1)[1], schema.get("items", {}))
    if go_type.startswith("map["):
        if expected != "object":
            return f"Go {go_type} vs {expected}"
        value = go_type[go_type.index("]") + 1:]
        return type_mismatch(value, schema.get("additionalProperties", {}))
    if go_type in CUSTOM_ENCODINGS:
        return None
    if go_type.startswith("io.k8s.") and expected == "object":
        return None
    return f"Go {go_type} vs {expected}"


def verify(tables: dict[str, StructTable], definitions: dict[str, dict], name: str) -> list[str]:
    """Disagreements between a struct table and its OpenAPI definition."""
    if name in CUSTOM_ENCODINGS:
        return []
    if name not in tables:
        return [f"{name}: no struct table"]
    problems = []
    go_fields = json_fields(tables, name)
    go_fields.update({json_name: "" for json_name in tables[name].json_only})
    properties = definitions[name].get("properties", {})
    for missing in sorted(properties.keys() - go_fields.keys()):
        problems.append(f"{name}: property {missing} has no protobuf field")
    for extra in sorted(go_fields.keys() - properties.keys()):
        problems.append(f"{name}: Go field {extra} is not in the definition")
    for json_name in sorted(properties.keys() & go_fields.keys()):
        if go_fields[json_name] and (why := type_mismatch(go_fields[json_name], properties[json_name])):
            problems.append(f"{name}.{json_name}: {why}")
    return problems


def closure(tables: dict[str, StructTable], roots: list[str]) -> list[str]:
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in tables and name not in CUSTOM_ENCODINGS:
            for entry in tables[name].fields:
                pending.extend(referenced_structs(entry.go_type))
    return sorted(seen)


def served_definitions() -> list[str]:
    from trireme.devcluster.resources import BUILTIN_RESOURCES
    return [rt.definition for rt in BUILTIN_RESOURCES if rt.definition]


# -- main ---------------------------------------------------------------------------


def render(tables: dict[str, StructTable]) -> str:
    lines = ["{"]
    items = list(tables.items())
    for index, (name, table) in enumerate(items):
        body = {str(entry.number): entry.to_json() for entry in table.fields}
        comma = "," if index < len(items) - 1 else ""
        lines.append(f"{json.dumps(name)}: {json.dumps(body, separators=(',', ':'))}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", action="append", type=Path,
                        help="Go binaries to read, earlier ones winning (default: the venv's kubectl, helm)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true", help="fail if the output file is not current")
    args = parser.parse_args(argv)
    paths = args.binary or [p for p in DEFAULT_BINARIES if p.exists()]
    binaries = [GoBinary(ElfImage.load(Path(os.path.realpath(p)))) for p in paths]
    tables = collect(binaries)
    definitions = load_definitions()

    covered = sorted(set(tables) & set(definitions))
    uncovered = sorted(set(definitions) - set(tables) - set(CUSTOM_ENCODINGS))
    print(f"{len(tables)} struct tables; {len(covered)} of {len(definitions)} definitions covered", file=sys.stderr)
    print(f"definitions without a table: {', '.join(uncovered) or 'none'}", file=sys.stderr)
    disagreeing = [problem for name in covered for problem in verify(tables, definitions, name)]
    print(f"{len(disagreeing)} disagreements in covered definitions", file=sys.stderr)
    for problem in disagreeing:
        print("  " + problem, file=sys.stderr)

    required = closure(tables, served_definitions() + list(EXTRA_REQUIRED))
    required_problems = [p for name in required if name in definitions for p in verify(tables, definitions, name)]
    required_problems += [f"{name}: no table" for name in required
                          if name not in tables and name not in CUSTOM_ENCODINGS]
    print(f"served kinds and their types: {len(required)} definitions, "
          f"{len(required_problems)} problems", file=sys.stderr)
    if required_problems:
        for problem in required_problems:
            print("  " + problem, file=sys.stderr)
        return 1

    text = render(tables)
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is not current: rerun {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(text)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
