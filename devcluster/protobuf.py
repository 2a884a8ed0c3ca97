"""Kubernetes protobuf request bodies, read as the JSON a JSON client would have sent.

kubectl and helm send the objects of built-in kinds that they write through
typed clients (``kubectl create namespace``, ``create secret``, ``drain``'s
Eviction, helm's release Secrets) as ``application/vnd.kubernetes.protobuf``.
The server speaks JSON, so ``decode_body`` turns such a body into the dict the
same client's JSON encoder would have produced for the same Go object: the
same field names, ``omitempty``/``omitzero`` dropping the same zero values,
structs always present, Kubernetes' own encodings for Time, MicroTime,
Duration, Quantity, IntOrString, RawExtension and FieldsV1, ``[]byte`` as
base64.

Field numbers and Go types come from ``k8s_protobuf_fields.json``, which
``scripts/generate-protobuf-fields.py`` reads out of the kubectl and helm
binaries (their docstrings say how it is built and checked). A body is a
``runtime.Unknown`` envelope after the 4-byte magic ``k8s\\0``: field 1 the
TypeMeta (apiVersion, kind), field 2 the object's own bytes, 3 and 4 a content
encoding and type. Fields a table does not know are skipped, as Go's decoder
skips them, and counted (``dropped_fields``).
"""

from __future__ import annotations

import base64
import collections
import functools
import importlib.resources
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from .errors import ApiError, bad_request
from .openapi import definition_for

MAGIC = b"k8s\x00"
"""What every Kubernetes protobuf body starts with."""

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

_TABLE_FILE = "k8s_protobuf_fields.json"
_OMIT_EMPTY, _OMIT_ZERO = 1, 2
_WIRE_VARINT, _WIRE_FIXED64, _WIRE_BYTES, _WIRE_FIXED32 = 0, 1, 2, 5
_WIRE_NAMES = {0: "varint", 1: "fixed64", 2: "bytes", 3: "group start", 4: "group end", 5: "fixed32"}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_DELETE_OPTIONS = _META + "DeleteOptions"
_JSON_SCHEMA = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1."
_JSON_SCHEMA_BETA = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1beta1."

_dropped: collections.Counter[tuple[str, int]] = collections.Counter()


def dropped_fields() -> dict[tuple[str, int], int]:
    """(definition, field number) -> how often a decoded body carried a field no table knows."""
    return dict(_dropped)


def reset_dropped_fields() -> None:
    _dropped.clear()


class _Malformed(Exception):
    """A body that is not valid protobuf for its kind; becomes a 400."""


# -- the wire format ----------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field: ints for varint and fixed
    wire types, bytes for length-delimited ones."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == _WIRE_VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _WIRE_BYTES:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise _Malformed(f"field {number} runs past the end of its message")
            value, pos = buf[pos:pos + length], pos + length
        elif wire == _WIRE_FIXED64:
            if pos + 8 > end:
                raise _Malformed(f"field {number} is truncated")
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == _WIRE_FIXED32:
            if pos + 4 > end:
                raise _Malformed(f"field {number} is truncated")
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise _Malformed(f"field {number} has wire type {_WIRE_NAMES.get(wire, wire)}, which Kubernetes never uses")
        yield number, wire, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _expect(wire: int, expected: int, what: str) -> None:
    if wire != expected:
        raise _Malformed(f"{what} arrived as {_WIRE_NAMES.get(wire, wire)}, expected {_WIRE_NAMES[expected]}")


# -- scalar values --------------------------------------------------------------------


def _string(wire: int, value: Any) -> str:
    _expect(wire, _WIRE_BYTES, "a string")
    return value.decode("utf-8", "replace")


def _bytes(wire: int, value: Any) -> str:
    _expect(wire, _WIRE_BYTES, "a []byte")
    return base64.b64encode(value).decode("ascii")


def _bool(wire: int, value: Any) -> bool:
    _expect(wire, _WIRE_VARINT, "a bool")
    return value != 0


def _int(wire: int, value: Any) -> int:
    if wire == _WIRE_VARINT or wire == _WIRE_FIXED64:
        return _signed64(value)
    if wire == _WIRE_FIXED32:
        return _signed32(value)
    raise _Malformed(f"an integer arrived as {_WIRE_NAMES.get(wire, wire)}")


def _uint(wire: int, value: Any) -> int:
    if wire in (_WIRE_VARINT, _WIRE_FIXED64, _WIRE_FIXED32):
        return value
    raise _Malformed(f"an unsigned integer arrived as {_WIRE_NAMES.get(wire, wire)}")


def _float(wire: int, value: Any) -> float:
    if wire == _WIRE_FIXED64:
        return struct.unpack("<d", value.to_bytes(8, "little"))[0]
    if wire == _WIRE_FIXED32:
        return struct.unpack("<f", value.to_bytes(4, "little"))[0]
    raise _Malformed(f"a float arrived as {_WIRE_NAMES.get(wire, wire)}")


_SCALARS: dict[str, tuple[Callable[[int, Any], Any], Any]] = {
    "string": (_string, ""),
    "bytes": (_bytes, None),
    "bool": (_bool, False),
    "int": (_int, 0),
    "uint": (_uint, 0),
    "float": (_float, 0.0),
}
"""Go scalar spelling -> (decoder, Go zero value as JSON)."""

_PACKABLE = frozenset({"bool", "int", "uint", "float"})


def _packed(element: str, buf: bytes) -> list[Any]:
    """A packed repeated field (proto3 style; accepted although Kubernetes sends them unpacked)."""
    decode = _SCALARS[element][0]
    values, pos = [], 0
    while pos < len(buf):
        if element == "float":
            raise _Malformed("packed floats are not used by Kubernetes")
        raw, pos = _varint(buf, pos)
        values.append(decode(_WIRE_VARINT, raw))
    return values


# -- Go durations and times, as Kubernetes writes them in JSON ------------------------


def go_duration(nanoseconds: int) -> str:
    """Go's ``time.Duration.String``: ``1h0m0s``, ``1.5s``, ``250ms``, ``0s``."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    n = abs(nanoseconds)
    if n < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if n >= size:
                return sign + _fraction(n, size) + unit
    seconds_part = _fraction(n % 60_000_000_000, 1_000_000_000) + "s"
    minutes, hours = (n // 60_000_000_000) % 60, n // 3_600_000_000_000
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds_part}"
    if minutes:
        return f"{sign}{minutes}m{seconds_part}"
    return sign + seconds_part


def _fraction(value: int, unit: int) -> str:
    whole, rest = divmod(value, unit)
    if not rest:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{rest:0{digits}d}".rstrip("0")


def _timestamp(buf: bytes) -> tuple[int, int]:
    seconds = nanos = 0
    for number, wire, value in _fields(buf):
        if number == 1:
            seconds = _int(wire, value)
        elif number == 2:
            nanos = _int(wire, value)
    return seconds, nanos


def _utc(seconds: int, micros: int = 0) -> datetime:
    try:
        return _EPOCH + timedelta(seconds=seconds, microseconds=micros)
    except OverflowError:
        raise _Malformed(f"time {seconds}s after 1970 is out of range") from None


def _time(buf: bytes) -> str | None:
    """metav1.Time: seconds only (Kubernetes drops the nanoseconds on read); empty is the zero time."""
    if not buf:
        return None
    seconds, _ = _timestamp(buf)
    return _utc(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_time(buf: bytes) -> str | None:
    if not buf:
        return None
    seconds, nanos = _timestamp(buf)
    return _utc(seconds, nanos // 1000).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _duration(buf: bytes) -> str:
    nanoseconds = 0
    for number, wire, value in _fields(buf):
        if number == 1:
            nanoseconds = _int(wire, value)
    return go_duration(nanoseconds)


def _quantity(buf: bytes) -> str:
    text = ""
    for number, wire, value in _fields(buf):
        if number == 1:
            text = _string(wire, value).strip()
    return text or "0"


def _int_or_string(buf: bytes) -> int | str:
    kind, int_value, str_value = 0, 0, ""
    for number, wire, value in _fields(buf):
        if number == 1:
            kind = _int(wire, value)
        elif number == 2:
            int_value = _signed32(_int(wire, value))
        elif number == 3:
            str_value = _string(wire, value)
    return str_value if kind == 1 else int_value


def _raw_json(buf: bytes, number: int = 1) -> Any:
    """A message whose field ``number`` holds JSON (or a nested protobuf object)."""
    raw = b""
    for field_number, wire, value in _fields(buf):
        if field_number == number:
            _expect(wire, _WIRE_BYTES, "raw JSON")
            raw = value
    if not raw:
        return None
    if raw.startswith(MAGIC):
        return _decode_unknown(raw[len(MAGIC):])
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Malformed(f"embedded JSON is not valid: {exc}") from None


def _schema_or_array(buf: bytes, prefix: str) -> Any:
    value = _decode_struct(prefix + "JSONSchemaPropsOrArray", buf, special=False)
    return value.get("JSONSchemas") or value.get("Schema")


def _schema_or_bool(buf: bytes, prefix: str) -> Any:
    value = _decode_struct(prefix + "JSONSchemaPropsOrBool", buf, special=False)
    return value["Schema"] if value.get("Schema") is not None else bool(value.get("Allows"))


def _schema_or_string_array(buf: bytes, prefix: str) -> Any:
    value = _decode_struct(prefix + "JSONSchemaPropsOrStringArray", buf, special=False)
    return value.get("Property") or value.get("Schema")


def _special_types() -> dict[str, Callable[[bytes], Any]]:
    special: dict[str, Callable[[bytes], Any]] = {
        _META + "Time": _time,
        _META + "MicroTime": _micro_time,
        _META + "Duration": _duration,
        _META + "FieldsV1": _raw_json,
        "io.k8s.apimachinery.pkg.api.resource.Quantity": _quantity,
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString": _int_or_string,
        "io.k8s.apimachinery.pkg.runtime.RawExtension": _raw_json,
    }
    for prefix in (_JSON_SCHEMA, _JSON_SCHEMA_BETA):
        special[prefix + "JSON"] = _raw_json
        special[prefix + "JSONSchemaPropsOrArray"] = functools.partial(_schema_or_array, prefix=prefix)
        special[prefix + "JSONSchemaPropsOrBool"] = functools.partial(_schema_or_bool, prefix=prefix)
        special[prefix + "JSONSchemaPropsOrStringArray"] = functools.partial(_schema_or_string_array, prefix=prefix)
    return special


_SPECIAL = _special_types()
"""Types with their own JSON encoding (MarshalJSON) or protobuf encoding, by definition name."""


# -- messages -------------------------------------------------------------------------


@dataclass
class _Field:
    """One field of a Go struct, compiled from its table row."""

    number: int
    json_name: str
    go_type: str
    omit: int
    shape: str
    """scalar, bytes, pointer, slice, wrapped (a named slice in a message of its own),
    map, struct, inline or pointer-inline (an embedded struct JSON flattens)."""
    element: str
    """The Go type of the value, of each item or of each map value."""
    key: str = ""
    _zero: Any = field(default=None, repr=False)
    _zero_known: bool = field(default=False, repr=False)

    def zero(self) -> Any:
        """The JSON of the Go zero value, for a field that did not arrive."""
        if not self._zero_known:
            if self.shape == "struct" or self.shape == "inline":
                self._zero = _decode_value(self.element, _WIRE_BYTES, b"")
            elif self.shape == "scalar":
                self._zero = _SCALARS[self.element][1]
            self._zero_known = True
        return self._zero


def _compile_field(number: int, row: list[Any]) -> _Field:
    json_name, _wire, _repeated, _map_wires, go_type, omit = row
    pointer = go_type.startswith("*")
    base = go_type.lstrip("*")
    if base.startswith("map["):
        key, value = _split_map(base)
        return _Field(number, json_name, go_type, omit, "map", value, key)
    if base.startswith("items[]"):
        return _Field(number, json_name, go_type, omit, "wrapped", base[len("items[]"):])
    if base.startswith("[]"):
        return _Field(number, json_name, go_type, omit, "slice", base[2:])
    if json_name == "":
        return _Field(number, json_name, go_type, omit, "pointer-inline" if pointer else "inline", base)
    if pointer:
        return _Field(number, json_name, go_type, omit, "pointer", base)
    if base in _SCALARS:
        return _Field(number, json_name, go_type, omit, "bytes" if base == "bytes" else "scalar", base)
    return _Field(number, json_name, go_type, omit, "struct", base)


def _split_map(go_type: str) -> tuple[str, str]:
    depth = 0
    for index in range(3, len(go_type)):
        depth += {"[": 1, "]": -1}.get(go_type[index], 0)
        if depth == 0:
            return go_type[4:index], go_type[index + 1:]
    raise ValueError(f"bad map type {go_type}")


@dataclass
class _Message:
    name: str
    fields: dict[int, _Field]
    """By field number, in Go declaration order."""


@functools.cache
def _tables() -> dict[str, dict[str, list[Any]]]:
    source = importlib.resources.files(__package__).joinpath(_TABLE_FILE)
    return orjson.loads(source.read_bytes())


@functools.cache
def _message(name: str) -> _Message | None:
    rows = _tables().get(name)
    if rows is None:
        return None
    return _Message(name, {int(number): _compile_field(int(number), row) for number, row in rows.items()})


def field_table(definition: str) -> dict[str, list[Any]]:
    """The generated rows of one definition: field number -> [json_name, wire_kind,
    repeated, map_wires, go_type, omit] (see scripts/generate-protobuf-fields.py)."""
    return _tables()[definition]


def known_definitions() -> frozenset[str]:
    """Definition names that bodies can be decoded into."""
    return frozenset(_tables()) | frozenset(_SPECIAL)


def _decode_value(go_type: str, wire: int, value: Any) -> Any:
    """One value of Go type ``go_type`` (no pointer, slice or map around it)."""
    scalar = _SCALARS.get(go_type)
    if scalar is not None:
        return scalar[0](wire, value)
    _expect(wire, _WIRE_BYTES, f"a {go_type.rsplit('.', 1)[-1]}")
    return _decode_struct(go_type, value)


def _decode_struct(name: str, buf: bytes, special: bool = True) -> Any:
    if special and name in _SPECIAL:
        return _SPECIAL[name](buf)
    message = _message(name)
    if message is None:
        raise _Malformed(f"no protobuf table for {name}")
    values: dict[int, Any] = {}
    for number, wire, value in _fields(buf):
        spec = message.fields.get(number)
        if spec is None:
            _dropped[(name, number)] += 1
            continue
        try:
            _take(spec, values, wire, value)
        except _Malformed as exc:
            raise _Malformed(f"{name.rsplit('.', 1)[-1]}.{spec.json_name or spec.element}: {exc}") from None
    return _to_json(message, values)


def _take(spec: _Field, values: dict[int, Any], wire: int, value: Any) -> None:
    """Add one arriving field to ``values`` (repeated fields and map entries accumulate)."""
    shape = spec.shape
    if shape == "slice":
        items = values.setdefault(spec.number, [])
        if wire == _WIRE_BYTES and spec.element in _PACKABLE:
            items.extend(_packed(spec.element, value))
        else:
            items.append(_decode_value(spec.element, wire, value))
    elif shape == "map":
        _expect(wire, _WIRE_BYTES, "a map entry")
        key, item = _map_entry(spec, value)
        values.setdefault(spec.number, {})[key] = item
    elif shape == "wrapped":
        _expect(wire, _WIRE_BYTES, "a wrapped list")
        values.setdefault(spec.number, []).extend(_wrapped_items(spec.element, value))
    else:
        values[spec.number] = _decode_value(spec.element, wire, value)


def _wrapped_items(element: str, buf: bytes) -> list[Any]:
    return [_decode_value(element, wire, value) for number, wire, value in _fields(buf) if number == 1]


def _map_entry(spec: _Field, buf: bytes) -> tuple[str, Any]:
    key: Any = None
    item: Any = None
    arrived = False
    for number, wire, value in _fields(buf):
        if number == 1:
            key = _decode_value(spec.key, wire, value)
        elif number == 2:
            arrived = True
            if spec.element.startswith("items[]"):
                item = _wrapped_items(spec.element[len("items[]"):], value)
            else:
                item = _decode_value(spec.element.lstrip("*"), wire, value)
    if key is None:
        key = _SCALARS[spec.key][1] if spec.key in _SCALARS else ""
    if not arrived:
        item = _map_zero(spec.element)
    return (key if isinstance(key, str) else str(key)), item


def _map_zero(element: str) -> Any:
    if element == "bytes":
        return ""
    if element in _SCALARS:
        return _SCALARS[element][1]
    if element.startswith(("*", "[]", "items[]", "map[")):
        return None
    return _decode_value(element, _WIRE_BYTES, b"")


def _to_json(message: _Message, values: dict[int, Any]) -> dict[str, Any]:
    """The struct as Go's encoding/json writes it."""
    out: dict[str, Any] = {}
    for number, spec in message.fields.items():
        if spec.json_name == "-":
            continue
        arrived = number in values
        value = values[number] if arrived else spec.zero()
        shape = spec.shape
        if shape == "inline" or shape == "pointer-inline":
            if isinstance(value, dict):
                out.update(value)
            continue
        if spec.omit & _OMIT_EMPTY and _is_empty(shape, arrived, value):
            continue
        if spec.omit & _OMIT_ZERO and _is_zero(spec, arrived, value):
            continue
        out[spec.json_name] = value
    return out


def _is_empty(shape: str, arrived: bool, value: Any) -> bool:
    """Go's ``omitempty``: false, 0, "", nil pointers, empty slices and maps; never a struct."""
    if shape == "scalar":
        return value is None or value == "" or value is False or (type(value) in (int, float) and value == 0)
    if shape == "pointer":
        return not arrived
    if shape in ("slice", "wrapped", "map", "bytes"):
        return not arrived or not value
    return False


def _is_zero(spec: _Field, arrived: bool, value: Any) -> bool:
    """Go's ``omitzero``: the zero value (Time's IsZero: the JSON null)."""
    if spec.shape in ("pointer", "slice", "wrapped", "map", "bytes"):
        return not arrived
    return value is None or value == spec.zero()


# -- bodies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Envelope:
    api_version: str
    kind: str
    raw: bytes
    content_encoding: str
    content_type: str


def _envelope(buf: bytes) -> _Envelope:
    api_version = kind = encoding = content_type = ""
    raw = b""
    for number, wire, value in _fields(buf):
        if number == 1:
            _expect(wire, _WIRE_BYTES, "the type meta")
            for meta_number, meta_wire, meta_value in _fields(value):
                if meta_number == 1:
                    api_version = _string(meta_wire, meta_value)
                elif meta_number == 2:
                    kind = _string(meta_wire, meta_value)
        elif number == 2:
            _expect(wire, _WIRE_BYTES, "the object")
            raw = value
        elif number == 3:
            encoding = _string(wire, value)
        elif number == 4:
            content_type = _string(wire, value)
    return _Envelope(api_version, kind, raw, encoding, content_type)


def definition_of(api_version: str, kind: str) -> str | None:
    """The table that decodes ``kind`` in ``api_version``, or None."""
    name = definition_for(api_version, kind)
    if name is None and kind == "DeleteOptions":
        name = _DELETE_OPTIONS
    if name is None:
        group, _, version = api_version.rpartition("/")
        package = group.split(".")[0] if group else "core"
        name = f"io.k8s.api.{package}.{version}.{kind}"
    return name if name in _tables() else None


def _decode_unknown(buf: bytes) -> dict[str, Any]:
    envelope = _envelope(buf)
    if envelope.content_encoding:
        raise ApiError(415, "UnsupportedMediaType",
                       f"protobuf bodies with content encoding {envelope.content_encoding!r} are not supported")
    if not envelope.kind or not envelope.api_version:
        raise bad_request("the protobuf body names no apiVersion and kind")
    name = definition_of(envelope.api_version, envelope.kind)
    if name is None:
        raise ApiError(415, "UnsupportedMediaType",
                       f"{envelope.kind} in {envelope.api_version} cannot be sent as protobuf here: "
                       f"send it as application/json")
    obj = _decode_struct(name, envelope.raw)
    return {"apiVersion": envelope.api_version, "kind": envelope.kind, **obj}


def decode_body(raw: bytes) -> dict[str, Any]:
    """A Kubernetes protobuf body (``k8s\\0`` + runtime.Unknown) as the JSON object
    a JSON client would have sent for the same Go object.

    Raises ApiError 400 for a body that is not Kubernetes protobuf or is
    malformed, 415 for a kind or encoding this server cannot decode.
    """
    if not raw.startswith(MAGIC):
        raise bad_request("the protobuf body does not start with the Kubernetes magic number k8s\\x00")
    try:
        return _decode_unknown(bytes(raw[len(MAGIC):]))
    except _Malformed as exc:
        raise bad_request(f"the protobuf body is malformed: {exc}") from None
