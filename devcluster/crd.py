"""Custom resources as kube-apiserver serves them.

A CustomResourceDefinition turns into served resources, one per version. For
each, objects are pruned of unknown fields, defaulted and validated against the
version's structural OpenAPI v3 schema and its CEL rules, and every failure is
worded the way kube-apiserver words it, so kubectl, helm and kopf users read the
messages they already know. The module also checks CRDs themselves and carries
the rules of the status and scale subresources.

The wording follows kube-openapi's validator and apiextensions-apiserver's
conversion of its errors into field errors (``spec.replicas: Invalid value: -1:
spec.replicas in body should be greater than or equal to 0``). Where
kube-apiserver's order is Go map order, properties are visited in schema order.

Validators are built once per CRD version (schemas walked, CEL compiled up
front); checking an object is then one pass to prune and default and one to
validate, plus a CEL pass over the nodes that carry rules.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import ipaddress
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import urlparse

import celpy
import lark
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from .jsonutil import json_copy
from . import errors
from .errors import Cause
from .tables import CREATION_TIMESTAMP_DESCRIPTION

__all__ = [
    "CEL_FUNCTIONS",
    "CelRule",
    "CustomResourceVersion",
    "FieldError",
    "GoStruct",
    "ScaleSubresource",
    "SchemaNode",
    "check_crd",
    "compile_schema",
    "compile_versions",
    "crd_errors",
    "default_crd",
    "go_float",
    "go_json",
    "go_quote",
]

_MISSING: Any = object()
"""Marks "no correlated old value" (a create, or a node new in this update)."""

_OMIT: Any = object()
"""A field error without a value (kube's ``omitValue``)."""

_ROOT_PASSTHROUGH = frozenset({"apiVersion", "kind", "metadata"})
_JSON_TYPES = ("array", "boolean", "integer", "number", "object", "string")
_RULE_REASONS = ("FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired")
_MAX_INT32 = 2**31 - 1


# -- Go's rendering of values ------------------------------------------------------------------


def go_quote(text: str) -> str:
    """``strconv.Quote``: double quotes, Go escapes, printable characters kept."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _float_digits(number: float) -> tuple[str, int]:
    """Shortest round-trip digits of ``abs(number)`` and its decimal exponent (d.ddd × 10^exp)."""
    dec = decimal.Decimal(repr(abs(number))).normalize()
    sign, digits, exponent = dec.as_tuple()
    text = "".join(map(str, digits))
    return text, len(text) - 1 + int(exponent)


def go_float(number: float, low: int = -4, high: int = 21) -> str:
    """Go's ``%v`` of a float64: shortest digits, exponent form outside [1e-4, 1e21)."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    digits, exp = _float_digits(number)
    if low <= exp < high:
        if exp >= len(digits) - 1:
            return sign + digits + "0" * (exp - len(digits) + 1)
        if exp >= 0:
            return sign + digits[:exp + 1] + "." + digits[exp + 1:]
        return sign + "0." + "0" * (-exp - 1) + digits
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _go_json_float(number: float) -> str:
    """``encoding/json``'s float64: like %v but exponent form only below 1e-6, and no exponent padding."""
    if number == 0:
        return "0"
    text = go_float(number, low=-6, high=21)
    return re.sub(r"e([+-])0(\d)$", r"e\1\2", text)


def go_json(value: Any) -> str:
    """``json.Marshal`` of a JSON value: sorted keys, no spaces, HTML-safe escapes."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_json_float(value)
    if isinstance(value, str):
        return _go_json_string(value)
    if isinstance(value, dict):
        pairs = value.items() if isinstance(value, GoStruct) else sorted(value.items())
        return "{" + ",".join(f"{_go_json_string(str(k))}:{go_json(v)}" for k, v in pairs) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    return _go_json_string(str(value))


class GoStruct(dict):  # type: ignore[type-arg]
    """A Go struct as a bad value: marshalled in field order (not sorted like a map), zero fields omitted."""

    def __init__(self, fields: dict[str, Any], order: tuple[str, ...]) -> None:
        super().__init__({k: fields[k] for k in order if fields.get(k) not in (None, "")})


def _go_json_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ch in "<>&\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _bad_value(value: Any) -> str:
    """How ``field.Error.ErrorBody`` prints a bad value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return go_quote(value)
    return go_json(value)


# -- field errors --------------------------------------------------------------------------------


_LABELS = {
    "FieldValueInvalid": "Invalid value",
    "FieldValueTypeInvalid": "Invalid value",
    "FieldValueRequired": "Required value",
    "FieldValueNotSupported": "Unsupported value",
    "FieldValueDuplicate": "Duplicate value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueTooLong": "Too long",
    "FieldValueTooMany": "Too many",
    "FieldValueNotFound": "Not found",
    "InternalError": "Internal error",
}
_VALUELESS = frozenset({"FieldValueRequired", "FieldValueForbidden", "FieldValueTooLong", "InternalError"})
_BLOCKING = frozenset({"FieldValueNotSupported", "FieldValueRequired", "FieldValueTooLong", "FieldValueTooMany",
                       "FieldValueTypeInvalid"})


@dataclass(frozen=True, slots=True)
class FieldError:
    """A ``field.Error``: its type (the cause reason), path, bad value and detail.

    ``field`` is the rendered ``field.Path``; an empty one is the nil path that
    kube-apiserver prints as ``<nil>``.
    """

    reason: str
    field: str
    value: Any = _OMIT
    detail: str = ""

    @property
    def body(self) -> str:
        """``ErrorBody()``: ``Invalid value: -1: detail``, ``Required value``, ..."""
        text = _LABELS[self.reason]
        if self.reason not in _VALUELESS and self.value is not _OMIT:
            text += ": " + _bad_value(self.value)
        if self.detail:
            text += ": " + self.detail
        return text

    def cause(self) -> Cause:
        return Cause(self.field or "<nil>", self.body, self.reason)

    def __str__(self) -> str:
        return f"{self.field or '<nil>'}: {self.body}"


def _invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError("FieldValueInvalid", path, value, detail)


def _type_invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError("FieldValueTypeInvalid", path, value, detail)


def _required(path: str, detail: str = "") -> FieldError:
    return FieldError("FieldValueRequired", path, "", detail)


def _forbidden(path: str, detail: str) -> FieldError:
    return FieldError("FieldValueForbidden", path, "", detail)


def _duplicate(path: str, value: Any) -> FieldError:
    return FieldError("FieldValueDuplicate", path, value)


def _not_supported(path: str, value: Any, supported: list[str]) -> FieldError:
    detail = "supported values: " + ", ".join(go_quote(s) for s in supported) if supported else ""
    return FieldError("FieldValueNotSupported", path, value, detail)


def _too_long(path: str, max_length: int) -> FieldError:
    unit = "byte" if max_length == 1 else "bytes"
    return FieldError("FieldValueTooLong", path, _OMIT, f"may not be more than {max_length} {unit}")


def _too_many(path: str, actual: int, maximum: int) -> FieldError:
    unit = "item" if maximum == 1 else "items"
    return FieldError("FieldValueTooMany", path, actual, f"must have at most {maximum} {unit}")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# -- JSON value helpers --------------------------------------------------------------------------


def _json_kind(value: Any) -> str:
    """The JSON schema type name of a decoded JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans never equal numbers, 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


def _is_json_integer(number: float) -> bool:
    """``swag.IsFloat64AJSONInteger``: a float that is an integer up to rounding noise."""
    if math.isnan(number) or math.isinf(number):
        return False
    nearest = round(number)
    return number == nearest or abs(number - nearest) / max(abs(number), 1.0) < 1e-9


# -- string formats ----------------------------------------------------------------------------


_DATE_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})?$")
_GO_DURATION = re.compile(r"^[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w))+)$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_HOSTNAME = re.compile(r"^(?=.{1,255}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$|^([0-9A-Fa-f]{4}\.){2}[0-9A-Fa-f]{4}$")


def _is_date_time(text: str) -> bool:
    match = _DATE_TIME.match(text)
    if not match:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return False
    return True


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return "/" in text


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _is_uri(text: str) -> bool:
    parsed = urlparse(text)
    return bool(parsed.scheme) and (bool(parsed.netloc) or bool(parsed.path))


_FORMATS: dict[str, Callable[[str], bool]] = {
    "date-time": _is_date_time,
    "datetime": _is_date_time,
    "date": _is_date,
    "duration": lambda s: bool(_GO_DURATION.match(s)),
    "email": lambda s: bool(_EMAIL.match(s)),
    "hostname": lambda s: bool(_HOSTNAME.match(s)),
    "ipv4": lambda s: _is_ip(s, 4),
    "ipv6": lambda s: _is_ip(s, 6),
    "cidr": _is_cidr,
    "mac": lambda s: bool(_MAC.match(s)),
    "uuid": lambda s: bool(_UUID.match(s)),
    "uuid3": lambda s: bool(_UUID.match(s)),
    "uuid4": lambda s: bool(_UUID.match(s)),
    "uuid5": lambda s: bool(_UUID.match(s)),
    "uri": _is_uri,
    "byte": _is_base64,
    "password": lambda s: True,
    "bsonobjectid": lambda s: bool(re.fullmatch(r"[0-9a-fA-F]{24}", s)),
    "hexcolor": lambda s: bool(re.fullmatch(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})", s)),
    "rgbcolor": lambda s: bool(re.fullmatch(r"rgb\(\s*\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}\s*\)", s)),
    "isbn": lambda s: bool(re.fullmatch(r"[0-9Xx -]{10,17}", s)),
    "isbn10": lambda s: bool(re.fullmatch(r"[0-9Xx -]{10,13}", s)),
    "isbn13": lambda s: bool(re.fullmatch(r"[0-9 -]{13,17}", s)),
    "creditcard": lambda s: bool(re.fullmatch(r"[0-9 -]{12,23}", s)),
    "ssn": lambda s: bool(re.fullmatch(r"\d{3}[- ]?\d{2}[- ]?\d{4}", s)),
}
"""The string formats kube-apiserver checks; any other format is ignored."""

_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1),
               "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1)}


# -- CEL ------------------------------------------------------------------------------------------


def _ascii_case(text: str, upper: bool) -> str:
    return "".join((c.upper() if upper else c.lower()) if c.isascii() else c for c in text)


def _index_of(container: Any, item: Any, start: int = 0) -> celtypes.IntType:
    if isinstance(container, str):
        return celtypes.IntType(container.find(item, int(start)))
    for i in range(int(start), len(container)):
        if container[i] == item:
            return celtypes.IntType(i)
    return celtypes.IntType(-1)


def _last_index_of(container: Any, item: Any) -> celtypes.IntType:
    if isinstance(container, str):
        return celtypes.IntType(container.rfind(item))
    for i in range(len(container) - 1, -1, -1):
        if container[i] == item:
            return celtypes.IntType(i)
    return celtypes.IntType(-1)


def _split(text: str, sep: str, limit: int = -1) -> celtypes.ListType:
    if limit == 0:
        return celtypes.ListType()
    parts = text.split(sep, int(limit) - 1) if limit > 0 else text.split(sep)
    return celtypes.ListType(celtypes.StringType(p) for p in parts)


def _substring(text: str, start: int, end: int | None = None) -> celtypes.StringType:
    stop = len(text) if end is None else int(end)
    if not 0 <= int(start) <= stop <= len(text):
        raise ValueError(f"index out of range: {start}")
    return celtypes.StringType(text[int(start):stop])


def _find_all(text: str, pattern: str, limit: int = -1) -> celtypes.ListType:
    found = [celtypes.StringType(m.group(0)) for m in re.finditer(pattern, text)]
    return celtypes.ListType(found if limit < 0 else found[:int(limit)])


def _find(text: str, pattern: str) -> celtypes.StringType:
    match = re.search(pattern, text)
    return celtypes.StringType(match.group(0) if match else "")


def _replace(text: str, old: str, new: str, limit: int = -1) -> celtypes.StringType:
    return celtypes.StringType(text.replace(old, new, int(limit)))


CEL_FUNCTIONS: dict[str, Callable[..., Any]] = {
    # Kubernetes' strings library
    "charAt": lambda s, i: celtypes.StringType(s[int(i)] if int(i) < len(s) else ""),
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "lowerAscii": lambda s: celtypes.StringType(_ascii_case(s, upper=False)),
    "upperAscii": lambda s: celtypes.StringType(_ascii_case(s, upper=True)),
    "replace": _replace,
    "split": _split,
    "substring": _substring,
    "trim": lambda s: celtypes.StringType(s.strip()),
    "join": lambda items, sep="": celtypes.StringType(str(sep).join(str(i) for i in items)),
    # Kubernetes' lists library (min() is built into cel-python)
    "isSorted": lambda items: celtypes.BoolType(all(a <= b for a, b in zip(items, items[1:]))),
    "sum": lambda items: sum(items[1:], items[0]) if items else celtypes.IntType(0),
    "max": lambda items: max(items),
    # Kubernetes' regex library
    "find": _find,
    "findAll": _find_all,
}
"""The Kubernetes CEL library functions that rules commonly use, on top of standard CEL."""

_CEL_ENV = celpy.Environment()


@dataclass(eq=False)
class CelRule:
    """One ``x-kubernetes-validations`` entry, compiled."""

    rule: str
    message: str
    message_expression: str
    reason: str
    field_path: str
    program: Any
    message_program: Any
    uses_old_self: bool
    optional_old_self: bool

    @property
    def error_string(self) -> str:
        """``ruleErrorString``: the message when there is one, else the rule."""
        return (self.message or self.rule).strip()

    @property
    def default_message(self) -> str:
        return self.message.strip() if self.message else f"failed rule: {self.error_string}"


def _uses_identifier(tree: lark.Tree, name: str) -> bool:
    for node in tree.iter_subtrees():
        if node.data == "ident" and any(isinstance(t, lark.Token) and t.value == name for t in node.children):
            return True
    return False


def _syntax_error_text(source: str, exc: CELParseError) -> str:
    line = getattr(exc, "line", None) or 1
    column = getattr(exc, "column", None) or 1
    source_line = source.splitlines()[line - 1] if source.splitlines() else source
    return (f"ERROR: <input>:{line}:{column}: Syntax error: unexpected input\n"
            f" | {source_line}\n | {'.' * (column - 1)}^")


def _compile_cel(source: str) -> tuple[lark.Tree | None, str]:
    """Parse CEL; returns the tree, or None and cel-go style error text."""
    try:
        return _CEL_ENV.compile(source), ""
    except CELParseError as exc:
        return None, _syntax_error_text(source, exc)
    except Exception as exc:  # lark errors that escape cel-python's wrapper
        return None, f"ERROR: <input>:1:1: Syntax error: {exc}"


def _cel_error_text(exc: BaseException) -> str:
    """cel-go's wording for the runtime errors cel-python reports."""
    text = str(exc.args[0]) if exc.args else str(exc)
    if text.startswith("no such member in mapping: "):
        return "no such key: " + text.split(": ", 1)[1].strip("'\"")
    if "divide by zero" in text or "division by zero" in text:
        return "division by zero"
    if "no matching overload" in text or text.startswith("no such overload"):
        return "no such overload"
    if text == "invalid_argument" or "out of range" in text:
        return "index out of bounds"
    return text


# -- the compiled schema ---------------------------------------------------------------------------


@dataclass(eq=False)
class SchemaNode:
    """One node of a structural schema, with everything validation needs precomputed."""

    types: tuple[str, ...] = ()
    type_name: str = ""
    nullable: bool = False
    format: str = ""
    enum: list[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    multiple_of: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    pattern_re: re.Pattern[str] | None = None
    pattern_error: str = ""
    min_items: int | None = None
    max_items: int | None = None
    unique_items: bool = False
    min_properties: int | None = None
    max_properties: int | None = None
    required: tuple[str, ...] = ()
    properties: dict[str, SchemaNode] = field(default_factory=dict)
    additional: SchemaNode | None = None
    additional_true: bool = False
    additional_false: bool = False
    items: SchemaNode | None = None
    all_of: tuple[SchemaNode, ...] = ()
    any_of: tuple[SchemaNode, ...] = ()
    one_of: tuple[SchemaNode, ...] = ()
    not_: SchemaNode | None = None
    preserve_unknown: bool = False
    embedded: bool = False
    int_or_string: bool = False
    list_type: str = ""
    list_map_keys: tuple[str, ...] = ()
    has_default: bool = False
    default: Any = None
    rules: tuple[CelRule, ...] = ()
    # derived, for skipping whole subtrees
    has_rules: bool = False
    has_list_checks: bool = False
    has_embedded: bool = False
    defaulted: tuple[tuple[str, SchemaNode], ...] = ()

    @property
    def junctors(self) -> bool:
        return bool(self.all_of or self.any_of or self.one_of or self.not_ is not None)

    def child(self, key: str) -> SchemaNode | None:
        prop = self.properties.get(key)
        return prop if prop is not None else self.additional


@dataclass
class _Compiler:
    """Builds SchemaNodes, collecting problems (with their CRD field paths) on the way."""

    issues: list[FieldError] = field(default_factory=list)

    def node(self, schema: dict[str, Any], path: str, root: bool = False) -> SchemaNode:
        if not isinstance(schema, dict):
            return SchemaNode(preserve_unknown=True)
        node = SchemaNode()
        self._scalars(node, schema, path)
        props = schema.get("properties") or {}
        node.properties = {k: self.node(v, f"{path}.properties[{k}]") for k, v in props.items()
                           if not (root and k == "metadata")}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            node.additional = self.node(extra, f"{path}.additionalProperties")
        node.additional_true = extra is True
        node.additional_false = extra is False
        if isinstance(schema.get("items"), dict):
            node.items = self.node(schema["items"], f"{path}.items")
        node.all_of = tuple(self.node(s, f"{path}.allOf[{i}]") for i, s in enumerate(schema.get("allOf") or ()))
        node.any_of = tuple(self.node(s, f"{path}.anyOf[{i}]") for i, s in enumerate(schema.get("anyOf") or ()))
        node.one_of = tuple(self.node(s, f"{path}.oneOf[{i}]") for i, s in enumerate(schema.get("oneOf") or ()))
        if isinstance(schema.get("not"), dict):
            node.not_ = self.node(schema["not"], f"{path}.not")
        node.rules = self._rules(schema.get("x-kubernetes-validations") or (), node, path, root)
        children = [*node.properties.values(), *(c for c in (node.additional, node.items) if c is not None)]
        node.has_rules = bool(node.rules) or any(c.has_rules for c in children)
        node.has_list_checks = node.list_type in ("set", "map") or any(c.has_list_checks for c in children)
        node.has_embedded = node.embedded or any(c.has_embedded for c in children)
        node.defaulted = tuple((k, c) for k, c in node.properties.items() if c.has_default)
        return node

    def _scalars(self, node: SchemaNode, schema: dict[str, Any], path: str) -> None:
        declared = schema.get("type")
        node.int_or_string = bool(schema.get("x-kubernetes-int-or-string"))
        node.embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        node.type_name = declared if isinstance(declared, str) else ""
        if node.type_name:
            node.types = (node.type_name,)
        elif node.int_or_string:
            node.types = ("integer", "string")
        node.nullable = bool(schema.get("nullable"))
        node.format = schema.get("format") or ""
        node.enum = list(schema["enum"]) if isinstance(schema.get("enum"), list) else None
        node.minimum, node.maximum = schema.get("minimum"), schema.get("maximum")
        node.exclusive_minimum = bool(schema.get("exclusiveMinimum"))
        node.exclusive_maximum = bool(schema.get("exclusiveMaximum"))
        node.multiple_of = schema.get("multipleOf")
        node.min_length, node.max_length = schema.get("minLength"), schema.get("maxLength")
        node.min_items, node.max_items = schema.get("minItems"), schema.get("maxItems")
        node.unique_items = bool(schema.get("uniqueItems"))
        node.min_properties, node.max_properties = schema.get("minProperties"), schema.get("maxProperties")
        node.required = tuple(schema.get("required") or ())
        node.preserve_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        node.list_type = schema.get("x-kubernetes-list-type") or ""
        node.list_map_keys = tuple(schema.get("x-kubernetes-list-map-keys") or ())
        if "default" in schema:
            node.has_default, node.default = True, schema["default"]
        pattern = schema.get("pattern")
        if isinstance(pattern, str) and pattern:
            node.pattern = pattern
            try:
                node.pattern_re = re.compile(pattern)
            except re.error as exc:
                node.pattern_error = str(exc)
                self.issues.append(_invalid(f"{path}.pattern", pattern,
                                            f"must be a valid regular expression, but isn't: {exc}"))

    def _rules(self, entries: Any, node: SchemaNode, path: str, root: bool) -> tuple[CelRule, ...]:
        rules = []
        for i, entry in enumerate(entries):
            rule = self._rule(entry if isinstance(entry, dict) else {}, node, f"{path}.x-kubernetes-validations[{i}]",
                              root)
            if rule is not None:
                rules.append(rule)
        return tuple(rules)

    def _rule(self, entry: dict[str, Any], node: SchemaNode, path: str, root: bool) -> CelRule | None:
        source = entry.get("rule") or ""
        if not source.strip():
            self.issues.append(_required(f"{path}.rule"))
            return None
        reason = entry.get("reason") or "FieldValueInvalid"
        if reason not in _RULE_REASONS:
            self.issues.append(_not_supported(f"{path}.reason", reason, list(_RULE_REASONS)))
        tree, problem = _compile_cel(source)
        if tree is not None:
            problem = _undefined_fields(tree, source, node, root)
        if problem:
            self.issues.append(_invalid(path, _rule_value(entry), f"compilation failed: {problem}"))
            return None
        message_program = None
        if entry.get("messageExpression"):
            message_tree, message_problem = _compile_cel(entry["messageExpression"])
            if message_tree is None:
                self.issues.append(_invalid(f"{path}.messageExpression", _rule_value(entry),
                                            f"messageExpression compilation failed: {message_problem}"))
            else:
                message_program = _CEL_ENV.program(message_tree, functions=CEL_FUNCTIONS)
        return CelRule(
            rule=source, message=entry.get("message") or "", message_expression=entry.get("messageExpression") or "",
            reason=reason, field_path=entry.get("fieldPath") or "",
            program=_CEL_ENV.program(tree, functions=CEL_FUNCTIONS), message_program=message_program,
            uses_old_self=_uses_identifier(tree, "oldSelf"), optional_old_self=bool(entry.get("optionalOldSelf")))


def _rule_value(entry: dict[str, Any]) -> GoStruct:
    """A ValidationRule as kube-apiserver prints it in a compilation error."""
    return GoStruct(entry, ("rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf"))


_ROOT_METADATA = SchemaNode(types=("object",), type_name="object",
                            properties={"name": SchemaNode(types=("string",), type_name="string"),
                                        "generateName": SchemaNode(types=("string",), type_name="string")})


def _undefined_fields(tree: lark.Tree, source: str, node: SchemaNode, root: bool) -> str:
    """cel-go's type check for the one mistake that matters most: selecting a field the schema lacks."""
    for select in tree.iter_subtrees_topdown():
        if select.data != "member_dot":
            continue
        target = _resolve_self_path(select.children[0], node, root)
        name_token = select.children[1]
        if target is None or not isinstance(name_token, lark.Token):
            continue
        if root and target is node and name_token.value in _ROOT_PASSTHROUGH:
            continue
        if _closed_object(target) and name_token.value not in target.properties:
            column = max(int(name_token.column or 2) - 2, 0)
            line = int(name_token.line or 1)
            source_line = source.splitlines()[line - 1]
            return (f"ERROR: <input>:{line}:{column + 1}: undefined field '{name_token.value}'\n"
                    f" | {source_line}\n | {'.' * column}^")
    return ""


def _closed_object(node: SchemaNode) -> bool:
    return (node.type_name == "object" and not node.preserve_unknown and node.additional is None
            and not node.additional_true and not node.embedded)


def _resolve_self_path(member: Any, node: SchemaNode, root: bool) -> SchemaNode | None:
    """The schema node a ``self.a.b`` chain selects, or None when it is not such a chain."""
    if not isinstance(member, lark.Tree):
        return None
    if member.data == "member" and len(member.children) == 1:
        return _resolve_self_path(member.children[0], node, root)
    if member.data == "primary" and len(member.children) == 1:
        ident = member.children[0]
        if isinstance(ident, lark.Tree) and ident.data == "ident" and ident.children[0] == "self":
            return node
        return None
    if member.data == "member_dot":
        base = _resolve_self_path(member.children[0], node, root)
        if base is None:
            return None
        name = str(member.children[1])
        if root and base is node and name == "metadata":
            return _ROOT_METADATA
        return base.properties.get(name)
    return None


def compile_schema(schema: dict[str, Any], path: str = "", root: bool = True) -> tuple[SchemaNode, list[FieldError]]:
    """A SchemaNode tree for an ``openAPIV3Schema``, and the problems found building it."""
    compiler = _Compiler()
    return compiler.node(schema, path, root=root), compiler.issues


# -- pruning and defaulting ---------------------------------------------------------------------------


def _shape(value: Any, node: SchemaNode | None, keep_unknown: bool = False) -> Any:
    """A pruned, defaulted copy of ``value``, as kube-apiserver's decoder and defaulter leave it."""
    if isinstance(value, dict):
        if node is None:
            return _copy_json(value) if keep_unknown else {}
        return _shape_object(value, node, keep_unknown or node.preserve_unknown)
    if isinstance(value, list):
        items = node.items if node is not None else None
        inherit = node is not None and node.preserve_unknown
        out = []
        for item in value:
            if item is None and items is not None and items.has_default and not items.nullable:
                item = json_copy(items.default)
            out.append(_shape(item, items, inherit))
        return out
    if isinstance(value, float) and node is not None and node.types == ("integer",) and _is_json_integer(value):
        return int(round(value))
    return value


def _shape_object(value: dict[str, Any], node: SchemaNode, keep_unknown: bool,
                  passthrough: frozenset[str] = frozenset()) -> dict[str, Any]:
    passthrough = passthrough or (_ROOT_PASSTHROUGH if node.embedded else frozenset())
    out: dict[str, Any] = {}
    properties, extra = node.properties, node.additional
    for key, item in value.items():
        if key in passthrough:
            out[key] = _copy_json(item)
            continue
        child = properties.get(key)
        if child is not None:
            if item is None and not child.nullable:
                if not child.has_default:
                    continue
                item = json_copy(child.default)
            out[key] = _shape(item, child)
        elif extra is not None:
            if item is None and extra.has_default and not extra.nullable:
                item = json_copy(extra.default)
            out[key] = _shape(item, extra)
        elif keep_unknown:
            out[key] = _copy_json(item)
        elif node.additional_true:
            out[key] = _shape(item, None)
    for key, child in node.defaulted:
        if key not in out and key not in passthrough:
            out[key] = _shape(json_copy(child.default), child)
    return out


def _unknown_fields(value: Any, node: SchemaNode | None, path: str, out: list[str],
                    passthrough: frozenset[str] = frozenset()) -> None:
    """The paths pruning drops, as kube-apiserver's field validation reports them."""
    if node is None or node.preserve_unknown:
        if node is not None and isinstance(value, dict):
            for key, item in value.items():
                child = node.child(key)
                if child is not None:
                    _unknown_fields(item, child, _join(path, key), out)
        return
    if isinstance(value, dict):
        passthrough = passthrough or (_ROOT_PASSTHROUGH if node.embedded else frozenset())
        for key, item in value.items():
            if key in passthrough:
                continue
            child = node.child(key)
            if child is None and not node.additional_true:
                out.append(_join(path, key))
            elif child is not None:
                _unknown_fields(item, child, _join(path, key), out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _unknown_fields(item, node.items, f"{path}[{i}]", out)


# -- OpenAPI validation (kube-openapi's validator and wording) ---------------------------------------


def _check(value: Any, node: SchemaNode, path: str, old: Any, errs: list[FieldError]) -> None:
    """Validate one value against one node, appending field errors in kube-openapi's order."""
    if old is not _MISSING and type(old) is type(value) and old == value:
        return  # ratcheting: an unchanged value keeps passing
    if value is None:
        if node.types and not node.nullable:
            errs.append(_type_invalid(path, "null", f"{path} in body must be of type {','.join(node.types)}: \"null\""))
        if node.enum is not None:
            _check_enum(value, node, path, errs)
        return
    kind = _json_kind(value)
    if node.types and kind not in node.types and not (
            (kind == "number" and "integer" in node.types and _is_json_integer(value))
            or (kind == "integer" and "number" in node.types)):
        errs.append(_type_invalid(path, kind, f"{path} in body must be of type {','.join(node.types)}: \"{kind}\""))
    if node.junctors:
        _check_junctors(value, node, path, errs)
    if kind == "string":
        _check_string(value, node, path, errs)
    elif kind in ("integer", "number"):
        _check_number(value, node, path, errs)
    elif kind == "array":
        _check_array(value, node, path, old, errs)
    if node.enum is not None:
        _check_enum(value, node, path, errs)
    if kind == "object":
        _check_object(value, node, path, old, errs)


def _check_string(value: str, node: SchemaNode, path: str, errs: list[FieldError]) -> None:
    if node.max_length is not None and len(value) > node.max_length:
        errs.append(_too_long(path, node.max_length))
    elif node.min_length is not None and len(value) < node.min_length:
        errs.append(_invalid(path, value, f"{path} in body should be at least {node.min_length} chars long"))
    elif node.pattern is not None:
        if node.pattern_re is None:
            errs.append(_invalid(path, value, f"{path} in body should match '{node.pattern}, but pattern is invalid: "
                                              f"{node.pattern_error}'"))
        elif not node.pattern_re.search(value):
            errs.append(_invalid(path, value, f"{path} in body should match '{node.pattern}'"))
    check = _FORMATS.get(node.format)
    if check is not None and not check(value):
        errs.append(_type_invalid(path, value, f"{path} in body must be of type {node.format}: {go_quote(value)}"))


def _bound(limit: float, value: int | float) -> int | float:
    """The bound as kube-openapi compares it: truncated to an integer for integer data."""
    return int(limit) if isinstance(value, int) else float(limit)


def _render_bound(bound: int | float) -> str:
    return str(bound) if isinstance(bound, int) else go_float(bound)


def _check_number(value: int | float, node: SchemaNode, path: str, errs: list[FieldError]) -> None:
    if node.multiple_of is not None and node.multiple_of > 0:
        factor = _bound(node.multiple_of, value)
        if isinstance(factor, int) and factor:
            ok = value % factor == 0
        else:
            ok = _is_json_integer(value / node.multiple_of)
        if not ok:
            errs.append(_invalid(path, value, f"{path} in body should be a multiple of {_render_bound(factor)}"))
    if node.minimum is not None:
        bound = _bound(node.minimum, value)
        if value < bound or (node.exclusive_minimum and value == bound):
            relation = "greater than" if node.exclusive_minimum else "greater than or equal to"
            errs.append(_invalid(path, value, f"{path} in body should be {relation} {_render_bound(bound)}"))
    if node.maximum is not None:
        bound = _bound(node.maximum, value)
        if value > bound or (node.exclusive_maximum and value == bound):
            relation = "less than" if node.exclusive_maximum else "less than or equal to"
            errs.append(_invalid(path, value, f"{path} in body should be {relation} {_render_bound(bound)}"))
    limits = _INT_RANGES.get(node.format)
    if limits is not None and isinstance(value, int) and not limits[0] <= value <= limits[1]:
        errs.append(_type_invalid(path, value, f"{path} in body must be of type {node.format}: {go_quote(str(value))}"))


def _check_array(value: list[Any], node: SchemaNode, path: str, old: Any, errs: list[FieldError]) -> None:
    items = node.items
    if items is not None:
        olds = _correlate_items(node, old)
        for i, item in enumerate(value):
            _check(item, items, f"{path}[{i}]", olds(item) if olds else _MISSING, errs)
    size = len(value)
    if node.min_items is not None and size < node.min_items:
        errs.append(_invalid(path, size, f"{path} in body should have at least {node.min_items} items"))
    if node.max_items is not None and size > node.max_items:
        errs.append(_too_many(path, size, node.max_items))
    if node.unique_items and _has_duplicates(value):
        errs.append(_invalid(path, "", f"{path} in body shouldn't contain duplicates"))


def _has_duplicates(values: list[Any]) -> bool:
    seen: list[Any] = []
    for value in values:
        if any(type(value) is type(s) and value == s for s in seen):
            return True
        seen.append(value)
    return False


def _map_key(node: SchemaNode, item: Any) -> tuple[Any, ...] | None:
    if not isinstance(item, dict):
        return None
    key = []
    for name in node.list_map_keys:
        value = item.get(name)
        if value is None and node.items is not None:
            child = node.items.properties.get(name)
            value = child.default if child is not None and child.has_default else None
        key.append(go_json(value))
    return tuple(key)


def _correlate_items(node: SchemaNode, old: Any) -> Callable[[Any], Any] | None:
    """How list items find their old selves: by key in map lists, by value in sets, not at all otherwise."""
    if not isinstance(old, list) or not old:
        return None
    if node.list_type == "map" and node.list_map_keys:
        by_key = {}
        for item in old:
            key = _map_key(node, item)
            if key is not None:
                by_key.setdefault(key, item)
        return lambda item: by_key.get(_map_key(node, item), _MISSING)
    if node.list_type == "set":
        return lambda item: item if any(type(item) is type(o) and item == o for o in old) else _MISSING
    return None


def _check_enum(value: Any, node: SchemaNode, path: str, errs: list[FieldError]) -> None:
    assert node.enum is not None
    if value is not None and any(_json_equal(value, allowed) for allowed in node.enum):
        return
    supported = [a if isinstance(a, str) else go_json(a) for a in node.enum]
    errs.append(_not_supported(path, value, supported))


def _check_object(value: dict[str, Any], node: SchemaNode, path: str, old: Any, errs: list[FieldError]) -> None:
    count = len(value)
    if node.min_properties is not None and count < node.min_properties:
        errs.append(_invalid(path, count, f"{path} in body should have at least {node.min_properties} properties"))
        return
    if node.max_properties is not None and count > node.max_properties:
        errs.append(_too_many(path, count, node.max_properties))
        return
    olds = old if isinstance(old, dict) else None
    properties, extra = node.properties, node.additional
    if node.additional_false:
        for key in value:
            if key not in properties:
                errs.append(_invalid(path, key, f"{_join(path, key)} in body is a forbidden property"))
    elif extra is not None:
        for key, item in value.items():
            if key not in properties:
                _check(item, extra, _join(path, key), olds.get(key, _MISSING) if olds else _MISSING, errs)
    for key, child in properties.items():
        if key in value:
            _check(value[key], child, _join(path, key), olds.get(key, _MISSING) if olds else _MISSING, errs)
    for key in node.required:
        if key not in value:
            errs.append(_required(_join(path, key)))


def _check_junctors(value: Any, node: SchemaNode, path: str, errs: list[FieldError]) -> None:
    """allOf/anyOf/oneOf/not, reported as kube-apiserver reports composite errors (on the nil path)."""
    quoted = go_quote(path)
    if node.any_of:
        results = [_branch(value, branch, path) for branch in node.any_of]
        if all(results):
            errs.append(_invalid("", "", f"{quoted} must validate at least one schema (anyOf)"))
            errs.extend(min(results, key=len))
    if node.one_of:
        results = [_branch(value, branch, path) for branch in node.one_of]
        valid = sum(1 for r in results if not r)
        if valid != 1:
            found = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
            errs.append(_invalid("", "", f"{quoted} must validate one and only one schema (oneOf). {found}"))
            if valid == 0:
                errs.extend(min(results, key=len))
    if node.all_of:
        results = [_branch(value, branch, path) for branch in node.all_of]
        for result in results:
            errs.extend(result)
        valid = sum(1 for r in results if not r)
        if valid != len(results):
            none = ". None validated" if valid == 0 else ""
            errs.append(_invalid("", "", f"{quoted} must validate all the schemas (allOf){none}"))
    if node.not_ is not None and not _branch(value, node.not_, path):
        errs.append(_invalid("", "", f"{quoted} must not validate the schema (not)"))


def _branch(value: Any, node: SchemaNode, path: str) -> list[FieldError]:
    found: list[FieldError] = []
    _check(value, node, path, _MISSING, found)
    return found


# -- embedded resources and list-type invariants -----------------------------------------------------------


def _walk_values(value: Any, node: SchemaNode | None, path: str,
                 wanted: Callable[[SchemaNode], bool]) -> Iterator[tuple[Any, SchemaNode, str]]:
    """(value, node, field path) for every value under a node that ``wanted`` says may matter."""
    if node is None or not wanted(node):
        return
    yield value, node, path
    if isinstance(value, dict):
        for key, item in value.items():
            prop = node.properties.get(key)
            if prop is not None:
                yield from _walk_values(item, prop, _join(path, key), wanted)
            elif node.additional is not None:
                yield from _walk_values(item, node.additional, f"{path}[{key}]", wanted)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk_values(item, node.items, f"{path}[{i}]", wanted)


def _check_embedded(value: Any, node: SchemaNode, path: str, errs: list[FieldError]) -> None:
    """Embedded resources need a non-empty apiVersion and kind."""
    for item, child, item_path in _walk_values(value, node, path, lambda n: n.has_embedded):
        if not child.embedded or not isinstance(item, dict):
            continue
        for key in ("apiVersion", "kind"):
            if key not in item:
                errs.append(_required(_join(item_path, key), "must not be empty"))
            elif not isinstance(item[key], str):
                errs.append(_invalid(_join(item_path, key), item[key], "must be a string"))
            elif not item[key]:
                errs.append(_invalid(_join(item_path, key), "", "must not be empty"))


def _check_lists(value: Any, node: SchemaNode, path: str, errs: list[FieldError]) -> None:
    """``x-kubernetes-list-type`` set and map uniqueness (field paths, as kube-apiserver reports them)."""
    for item, child, item_path in _walk_values(value, node, path, lambda n: n.has_list_checks):
        if not isinstance(item, list):
            continue
        if child.list_type == "set":
            _check_set(item, item_path, errs)
        elif child.list_type == "map" and child.list_map_keys:
            _check_map_list(item, child, item_path, errs)


def _check_set(values: list[Any], path: str, errs: list[FieldError]) -> None:
    counts: dict[str, int] = {}
    for i, value in enumerate(values):
        key = _json_kind(value) + go_json(value)
        counts[key] = counts.get(key, 0) + 1
        if counts[key] == 2:
            errs.append(_duplicate(f"{path}[{i}]", value))


def _check_map_list(values: list[Any], node: SchemaNode, path: str, errs: list[FieldError]) -> None:
    seen: set[tuple[Any, ...]] = set()
    for i, item in enumerate(values):
        key = _map_key(node, item)
        if key is None:
            continue
        if key in seen:
            errs.append(_duplicate(f"{path}[{i}]", {k: item.get(k) for k in node.list_map_keys}))
        seen.add(key)


# -- CEL validation ---------------------------------------------------------------------------------


def _to_cel(value: Any, node: SchemaNode | None) -> Any:
    """A JSON value as CEL sees it under its schema: integers vs doubles, timestamps, durations."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.DoubleType(value) if node is not None and node.type_name == "number" \
            else celtypes.IntType(value)
    if isinstance(value, float):
        if node is not None and node.type_name == "integer" and value.is_integer():
            return celtypes.IntType(int(value))
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return _string_to_cel(value, node)
    if isinstance(value, list):
        items = node.items if node is not None else None
        return celtypes.ListType([_to_cel(v, items) for v in value])
    if isinstance(value, dict):
        return celtypes.MapType({celtypes.StringType(k): _to_cel(v, node.child(k) if node is not None else None)
                                 for k, v in value.items()})
    return value


def _string_to_cel(value: str, node: SchemaNode | None) -> Any:
    if node is not None and node.type_name == "string":
        try:
            if node.format in ("date-time", "datetime"):
                return celtypes.TimestampType(value)
            if node.format == "duration":
                return celtypes.DurationType(value)
            if node.format == "byte":
                return celtypes.BytesType(base64.b64decode(value))
        except Exception:  # an invalid value was already reported by the format check
            pass
    return celtypes.StringType(value)


def _root_for_cel(obj: dict[str, Any], node: SchemaNode) -> Any:
    """``self`` at the root: the object, with metadata reduced to name and generateName."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    visible = {k: meta[k] for k in ("name", "generateName") if k in meta}
    converted = _to_cel({k: v for k, v in obj.items() if k != "metadata"}, node)
    converted[celtypes.StringType("metadata")] = _to_cel(visible, _ROOT_METADATA)
    return converted


def _evaluate(rule: CelRule, activation: dict[str, Any]) -> tuple[bool, str]:
    """Run one rule: (passed, runtime error text)."""
    try:
        result = rule.program.evaluate(activation)
    except CELEvalError as exc:
        return False, _cel_error_text(exc)
    except Exception as exc:  # cel-python raising for an expression it cannot evaluate
        return False, _cel_error_text(exc)
    return (result is True or (isinstance(result, celtypes.BoolType) and bool(result))), ""


def _rule_message(rule: CelRule, activation: dict[str, Any]) -> str:
    if rule.message_program is not None:
        try:
            text = rule.message_program.evaluate(activation)
        except Exception:
            text = None
        if isinstance(text, str) and text.strip() and "\n" not in text.strip():
            return text.strip()
    return rule.default_message


def _rule_failure(rule: CelRule, node: SchemaNode, path: str, message: str) -> FieldError:
    if rule.field_path:
        relative = re.sub(r"\[['\"]([^'\"]*)['\"]\]", r"[\1]", rule.field_path).lstrip(".")
        path = _join(path, relative) if not relative.startswith("[") else path + relative
    if rule.reason == "FieldValueForbidden":
        return _forbidden(path, message)
    if rule.reason == "FieldValueRequired":
        return _required(path, message)
    if rule.reason == "FieldValueDuplicate":
        return _duplicate(path, node.type_name)
    return _invalid(path, node.type_name, message)


def _check_rules(value: Any, node: SchemaNode, path: str, old: Any, unchanged: bool,
                 errs: list[FieldError], root: bool = False) -> None:
    for rule in node.rules:
        if rule.uses_old_self and old is _MISSING:
            continue
        if unchanged and not rule.uses_old_self:
            continue  # ratcheting: a rule that only looks at an unchanged value is not re-checked
        activation = {"self": _root_for_cel(value, node) if root else _to_cel(value, node)}
        if rule.uses_old_self:
            activation["oldSelf"] = _root_for_cel(old, node) if root else _to_cel(old, node)
        passed, problem = _evaluate(rule, activation)
        if problem:
            if problem == "no such overload":
                errs.append(_invalid(path, node.type_name, f"'no such overload': call arguments did not match a "
                                                           f"supported operator, function or macro signature for "
                                                           f"rule: {rule.error_string}"))
            else:
                errs.append(_invalid(path, node.type_name, f"{problem} evaluating rule: {rule.error_string}"))
        elif not passed:
            errs.append(_rule_failure(rule, node, path, _rule_message(rule, activation)))


def _cel_walk(value: Any, node: SchemaNode | None, path: str, old: Any, unchanged: bool,
              errs: list[FieldError], root: bool = False) -> None:
    """CEL rules top-down: a node's own rules, then its children's (only non-null values are checked)."""
    if value is None or node is None or not node.has_rules:
        return
    if not unchanged and old is not _MISSING:
        unchanged = type(old) is type(value) and old == value
    if node.rules:
        _check_rules(value, node, path, old, unchanged, errs, root)
    if isinstance(value, dict):
        olds = old if isinstance(old, dict) else {}
        for key, item in value.items():
            if root and key in _ROOT_PASSTHROUGH and key not in node.properties:
                continue
            prop = node.properties.get(key)
            if prop is not None:
                _cel_walk(item, prop, _join(path, key), olds.get(key, _MISSING), unchanged, errs)
            elif node.additional is not None:
                _cel_walk(item, node.additional, f"{path}[{key}]", olds.get(key, _MISSING), unchanged, errs)
    elif isinstance(value, list) and node.items is not None:
        olds_for = _correlate_items(node, old) if node.list_type == "map" else None
        for i, item in enumerate(value):
            _cel_walk(item, node.items, f"{path}[{i}]", olds_for(item) if olds_for else _MISSING, unchanged, errs)


_BLOCKED_CEL = _invalid("", None, "some validation rules were not checked because the object was invalid; "
                                  "correct the existing errors to complete validation")


# -- subresources ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleSubresource:
    """Where a custom resource keeps what ``/scale`` reads and writes (``.spec.replicas`` style paths)."""

    spec_replicas_path: str
    status_replicas_path: str
    label_selector_path: str = ""

    @staticmethod
    def parts(path: str) -> list[str]:
        return [p for p in path.lstrip(".").split(".") if p]


def _nested(obj: Any, parts: list[str]) -> tuple[Any, bool]:
    for part in parts:
        if not isinstance(obj, dict) or part not in obj:
            return None, False
        obj = obj[part]
    return obj, True


def _set_nested(obj: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        child = obj.get(part)
        if not isinstance(child, dict):
            child = obj[part] = {}
        obj = child
    obj[parts[-1]] = value


_GO_TYPES = {"string": "string", "integer": "int64", "number": "float64", "boolean": "bool",
             "object": "map[string]interface {}", "array": "[]interface {}"}


def _accessor_error(parts: list[str], value: Any, expected: str) -> str:
    """The error ``unstructured.Nested*`` returns for a value of the wrong type."""
    shown = go_float(value) if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else value
    return (f".{'.'.join(parts)} accessor error: {shown} is of the type "
            f"{_GO_TYPES.get(_json_kind(value), 'interface {}')}, expected {expected}")


def _int_at(obj: dict[str, Any], path: str) -> tuple[int, str]:
    """``unstructured.NestedInt64``: the integer at ``path`` (0 when absent) and an accessor error."""
    parts = ScaleSubresource.parts(path)
    value, found = _nested(obj, parts)
    if not found or value is None:
        return 0, ""
    if isinstance(value, bool) or not isinstance(value, int):
        return 0, _accessor_error(parts, value, "int64")
    return value, ""


def _replica_errors(obj: dict[str, Any], path: str) -> list[FieldError]:
    count, problem = _int_at(obj, path)
    if problem:
        return [_invalid(path, count, problem)]
    if count < 0:
        return [_invalid(path, count, "should be a non-negative integer")]
    if count > _MAX_INT32:
        return [_invalid(path, count, f"should be less than or equal to {_MAX_INT32}")]
    return []


# -- the served version -----------------------------------------------------------------------------------


def _non_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "metadata"}


class CustomResourceVersion:
    """One served version of a CRD: its schema compiled once, and the rules for writing its objects.

    ``validate`` prunes, defaults and validates a whole object (create, update,
    status update alike); the ``for_*`` methods apply the status subresource's
    rules; ``get_scale``/``set_scale_replicas`` implement ``/scale``.
    """

    def __init__(self, crd: dict[str, Any], version: str) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        entry = next((v for v in spec.get("versions") or () if v.get("name") == version), None)
        if entry is None:
            raise ValueError(f"CustomResourceDefinition {crd.get('metadata', {}).get('name')} has no version {version}")
        self.crd_name: str = (crd.get("metadata") or {}).get("name", "")
        self.group: str = spec.get("group", "")
        self.version: str = version
        self.kind: str = names.get("kind", "")
        self.plural: str = names.get("plural", "")
        self.namespaced: bool = spec.get("scope", "Namespaced") == "Namespaced"
        self.served: bool = bool(entry.get("served", True))
        self.storage: bool = bool(entry.get("storage", False))
        self.schema: dict[str, Any] = ((entry.get("schema") or {}).get("openAPIV3Schema")
                                       or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
        self.root, _ = compile_schema(self.schema)
        subresources = entry.get("subresources") or {}
        self.has_status: bool = "status" in subresources
        scale = subresources.get("scale")
        self.scale: ScaleSubresource | None = None
        if isinstance(scale, dict):
            self.scale = ScaleSubresource(scale.get("specReplicasPath", ".spec.replicas"),
                                          scale.get("statusReplicasPath", ".status.replicas"),
                                          scale.get("labelSelectorPath") or "")
        self._columns: list[dict[str, Any]] = [dict(c) for c in entry.get("additionalPrinterColumns") or ()]

    # -- validation

    def validate(self, obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
        """The object as it would be stored: pruned, defaulted, validated; raises 422 Invalid otherwise.

        ``old`` is the stored object on update: transition rules (``oldSelf``)
        run only then, and values unchanged since ``old`` are not re-checked
        (validation ratcheting).
        """
        shaped = self.shape(obj)
        problems = self.problems(shaped, old)
        if problems:
            name = (shaped.get("metadata") or {}).get("name", "")
            raise errors.invalid(self.kind, name, [p.cause() for p in problems], self.group)
        return shaped

    def shape(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A pruned and defaulted copy; apiVersion, kind and metadata pass through untouched."""
        return _shape_object(obj, self.root, self.root.preserve_unknown, _ROOT_PASSTHROUGH)

    def problems(self, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[FieldError]:
        """Every validation failure of an already shaped object, in kube-apiserver's order."""
        previous = old if old is not None else _MISSING
        found: list[FieldError] = []
        self._check_root(obj, previous, found)
        if self.scale is not None:
            found += _replica_errors(obj, self.scale.spec_replicas_path)
            found += _replica_errors(obj, self.scale.status_replicas_path)
            found += self._selector_errors(obj)
        _check_embedded(obj, self.root, "", found)
        _check_lists(obj, self.root, "", found)
        if self.root.has_rules:
            if any(p.reason in _BLOCKING for p in found):
                found.append(_BLOCKED_CEL)
            else:
                _cel_walk(obj, self.root, "", previous, False, found, root=True)
        return found

    def _check_root(self, obj: dict[str, Any], old: Any, found: list[FieldError]) -> None:
        root = self.root
        body = {k: v for k, v in obj.items() if k != "metadata"}
        old_body = {k: v for k, v in old.items() if k != "metadata"} if isinstance(old, dict) else _MISSING
        _check(body, root, "", old_body, found)

    def _selector_errors(self, obj: dict[str, Any]) -> list[FieldError]:
        assert self.scale is not None
        path = self.scale.label_selector_path
        if not path:
            return []
        parts = ScaleSubresource.parts(path)
        value, found = _nested(obj, parts)
        if found and value is not None and not isinstance(value, str):
            return [_invalid(path, "", _accessor_error(parts, value, "string"))]
        return []

    def unknown_fields(self, obj: dict[str, Any]) -> list[str]:
        """Paths that pruning would drop (``spec.foo``, ``spec.items[0].bar``), for field validation."""
        out: list[str] = []
        _unknown_fields(obj, self.root, "", out, _ROOT_PASSTHROUGH)
        return out

    # -- the status subresource

    def for_create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create ignores ``.status`` when the status subresource is enabled."""
        if not self.has_status:
            return obj
        return {k: v for k, v in obj.items() if k != "status"}

    def for_update(self, new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
        """A main-resource update: ``.status`` stays as stored; generation grows when anything but metadata changed."""
        out = dict(new)
        if self.has_status:
            if "status" in old:
                out["status"] = json_copy(old["status"])
            else:
                out.pop("status", None)
        if _non_metadata(out) != _non_metadata(old):
            meta = dict(out.get("metadata") or {})
            meta["generation"] = int((old.get("metadata") or {}).get("generation") or 0) + 1
            out["metadata"] = meta
        return out

    def for_status_update(self, new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
        """A ``/status`` write: the stored object with only ``.status`` (and managedFields) taken from ``new``."""
        out = json_copy(old)
        if "status" in new:
            out["status"] = json_copy(new["status"])
        else:
            out.pop("status", None)
        managed = (new.get("metadata") or {}).get("managedFields")
        if managed is not None:
            out.setdefault("metadata", {})["managedFields"] = json_copy(managed)
        return out

    # -- the scale subresource

    def get_scale(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The autoscaling/v1 Scale of an object (replicas read from the CRD's paths; 0 when absent)."""
        if self.scale is None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        meta = obj.get("metadata") or {}
        spec_replicas, _ = _int_at(obj, self.scale.spec_replicas_path)
        status_replicas, _ = _int_at(obj, self.scale.status_replicas_path)
        selector = ""
        if self.scale.label_selector_path:
            value, _ = _nested(obj, ScaleSubresource.parts(self.scale.label_selector_path))
            selector = value if isinstance(value, str) else ""
        status: dict[str, Any] = {"replicas": status_replicas}
        if selector:
            status["selector"] = selector
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if meta.get(k) is not None},
            "spec": {"replicas": spec_replicas} if spec_replicas else {},
            "status": status,
        }

    def set_scale_replicas(self, obj: dict[str, Any], replicas: int) -> dict[str, Any]:
        """A copy of ``obj`` with ``replicas`` written at the spec replicas path."""
        if self.scale is None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            name = (obj.get("metadata") or {}).get("name", "")
            raise errors.invalid("Scale", name, [_invalid("spec.replicas", replicas,
                                                          "must be greater than or equal to 0").cause()],
                                 "autoscaling")
        out = json_copy(obj)
        _set_nested(out, ScaleSubresource.parts(self.scale.spec_replicas_path), replicas)
        return out

    # -- tables

    def additional_printer_columns(self) -> list[dict[str, Any]]:
        """The version's printer columns, or the Age column kube-apiserver serves when there are none."""
        if self._columns:
            return [dict(c) for c in self._columns]
        return [{"name": "Age", "type": "date", "description": CREATION_TIMESTAMP_DESCRIPTION,
                 "jsonPath": ".metadata.creationTimestamp"}]


def compile_versions(crd: dict[str, Any]) -> dict[str, CustomResourceVersion]:
    """Every version of a CRD, compiled, by version name."""
    return {v["name"]: CustomResourceVersion(crd, v["name"]) for v in (crd.get("spec") or {}).get("versions") or ()
            if isinstance(v, dict) and v.get("name")}


# -- checking CRDs ------------------------------------------------------------------------------------------

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_MESSAGE = ("a lowercase RFC 1035 label must consist of lower case alphanumeric characters or '-', start "
                    "with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
                    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
_PRINTER_TYPES = ["boolean", "date", "integer", "number", "string"]
_PRINTER_FORMATS = ["byte", "date", "date-time", "double", "float", "int32", "int64", "password"]


def _dns1035_problems(value: str) -> list[str]:
    problems = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not _DNS1035.match(value):
        problems.append(_DNS1035_MESSAGE)
    return problems


def default_crd(crd: dict[str, Any]) -> dict[str, Any]:
    """A copy with apiextensions.k8s.io/v1 defaults: singular and listKind names, conversion None."""
    out = json_copy(crd)
    spec = out.setdefault("spec", {})
    names = spec.setdefault("names", {})
    if names.get("kind"):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    spec.setdefault("conversion", {"strategy": "None"})
    return out


def check_crd(crd: dict[str, Any]) -> None:
    """Reject a CustomResourceDefinition the way kube-apiserver does (422 with every cause)."""
    problems = crd_errors(crd)
    if problems:
        name = (crd.get("metadata") or {}).get("name", "")
        raise errors.invalid("CustomResourceDefinition", name, [p.cause() for p in problems],
                             "apiextensions.k8s.io")


def crd_errors(crd: dict[str, Any]) -> list[FieldError]:
    """Every problem kube-apiserver would report for a CRD (apiextensions.k8s.io/v1)."""
    spec = crd.get("spec") if isinstance(crd.get("spec"), dict) else {}
    names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
    found: list[FieldError] = []
    found += _name_errors(crd, spec, names)
    found += _spec_errors(spec)
    found += _names_errors(names)
    found += _versions_errors(spec)
    return found


def _name_errors(crd: dict[str, Any], spec: dict[str, Any], names: dict[str, Any]) -> list[FieldError]:
    name = (crd.get("metadata") or {}).get("name", "")
    plural, group = names.get("plural") or "", spec.get("group") or ""
    if plural and group and name != f"{plural}.{group}":
        return [_invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group')]
    return []


def _spec_errors(spec: dict[str, Any]) -> list[FieldError]:
    found = []
    group = spec.get("group") or ""
    if not group:
        found.append(_required("spec.group"))
    elif "." not in group:
        found.append(_invalid("spec.group", group, "should be a domain with at least one dot"))
    scope = spec.get("scope") or ""
    if not scope:
        found.append(_required("spec.scope"))
    elif scope not in ("Cluster", "Namespaced"):
        found.append(_not_supported("spec.scope", scope, ["Cluster", "Namespaced"]))
    if spec.get("preserveUnknownFields") is True:
        found.append(_invalid("spec.preserveUnknownFields", True, "cannot set to true, set "
                              "x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead"))
    return found


def _names_errors(names: dict[str, Any]) -> list[FieldError]:
    found = []
    for key in ("plural", "kind"):
        if not names.get(key):
            found.append(_required(f"spec.names.{key}"))
    for key in ("plural", "singular"):
        value = names.get(key) or ""
        if value and _dns1035_problems(value):
            found.append(_invalid(f"spec.names.{key}", value, ",".join(_dns1035_problems(value))))
    for key in ("kind", "listKind"):
        value = names.get(key) or ""
        if value and _dns1035_problems(value.lower()):
            found.append(_invalid(f"spec.names.{key}", value, "may have mixed case, but should otherwise match: "
                                  + ",".join(_dns1035_problems(value.lower()))))
    for i, short in enumerate(names.get("shortNames") or ()):
        if _dns1035_problems(str(short)):
            found.append(_invalid(f"spec.names.shortNames[{i}]", short, ",".join(_dns1035_problems(str(short)))))
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        found.append(_invalid("spec.names.listKind", names["listKind"], "kind and listKind may not be the same"))
    return found


def _versions_errors(spec: dict[str, Any]) -> list[FieldError]:
    versions = [v for v in spec.get("versions") or () if isinstance(v, dict)]
    found: list[FieldError] = []
    if sum(1 for v in versions if v.get("storage")) != 1:
        found.append(_invalid("spec.versions", versions,
                              "must have exactly one version marked as storage version"))
    seen: set[str] = set()
    for i, version in enumerate(versions):
        path = f"spec.versions[{i}]"
        name = version.get("name") or ""
        if not name:
            found.append(_required(f"{path}.name"))
        elif _dns1035_problems(name):
            found.append(_invalid(f"{path}.name", name, ",".join(_dns1035_problems(name))))
        if name in seen:
            found.append(_invalid("spec.versions", versions, "must contain unique version names"))
        seen.add(name)
        found += _version_errors(version, path)
    return found


def _version_errors(version: dict[str, Any], path: str) -> list[FieldError]:
    found: list[FieldError] = []
    schema = (version.get("schema") or {}).get("openAPIV3Schema")
    schema_path = f"{path}.schema.openAPIV3Schema"
    if not isinstance(schema, dict):
        found.append(_required(schema_path, "schemas are required"))
    else:
        found += _structural_errors(schema, schema_path, "root")
        node, issues = compile_schema(schema, schema_path)
        found += issues
        found += _default_errors(schema, node, schema_path)
    found += _printer_column_errors(version, path)
    found += _scale_errors(version, path)
    return found


def _structural_errors(schema: dict[str, Any], path: str, level: str) -> list[FieldError]:
    """The structural-schema rules kube-apiserver enforces on v1 CRDs."""
    found: list[FieldError] = []
    declared = schema.get("type") or ""
    if declared and declared not in _JSON_TYPES:
        found.append(_not_supported(f"{path}.type", declared, list(_JSON_TYPES)))
    if declared == "array" and not isinstance(schema.get("items"), dict):
        found.append(_required(f"{path}.items", "must be specified"))
    exempt = (schema.get("x-kubernetes-int-or-string") or schema.get("x-kubernetes-preserve-unknown-fields")
              or schema.get("x-kubernetes-embedded-resource"))
    if not declared and not exempt:
        where = {"root": "at the root", "item": "for specified array items", "field": "for specified object fields"}
        found.append(_required(f"{path}.type", f"must not be empty {where[level]}"))
    if level == "root" and declared and declared != "object":
        found.append(_invalid(f"{path}.type", declared, "must be object at the root"))
    if schema.get("properties") and isinstance(schema.get("additionalProperties"), (dict, bool)) \
            and schema.get("additionalProperties") is not True:
        found.append(_forbidden(f"{path}.additionalProperties",
                                "additionalProperties and properties are mutual exclusive"))
    found += _list_type_errors(schema, path)
    if level == "root":
        found += _root_metadata_errors(schema, path)
    for key, child in (schema.get("properties") or {}).items():
        if isinstance(child, dict):
            found += _structural_errors(child, f"{path}.properties[{key}]", "field")
    if isinstance(schema.get("items"), dict):
        found += _structural_errors(schema["items"], f"{path}.items", "item")
    if isinstance(schema.get("additionalProperties"), dict):
        found += _structural_errors(schema["additionalProperties"], f"{path}.additionalProperties", "field")
    return found


def _list_type_errors(schema: dict[str, Any], path: str) -> list[FieldError]:
    list_type = schema.get("x-kubernetes-list-type")
    if list_type is None:
        return []
    found = []
    if list_type not in ("atomic", "set", "map"):
        found.append(_not_supported(f"{path}.x-kubernetes-list-type", list_type, ["atomic", "set", "map"]))
    elif schema.get("type") != "array":
        found.append(_invalid(f"{path}.x-kubernetes-list-type", list_type, "must only be used if type is array"))
    elif list_type == "map" and not schema.get("x-kubernetes-list-map-keys"):
        found.append(_required(f"{path}.x-kubernetes-list-map-keys",
                               "must not be empty if x-kubernetes-list-type is map"))
    elif list_type == "map" and (schema.get("items") or {}).get("type") != "object":
        found.append(_invalid(f"{path}.items.type", (schema.get("items") or {}).get("type", ""),
                              "must be object if parent array's x-kubernetes-list-type is map"))
    return found


def _root_metadata_errors(schema: dict[str, Any], path: str) -> list[FieldError]:
    metadata = (schema.get("properties") or {}).get("metadata")
    if not isinstance(metadata, dict):
        return []
    found = []
    if metadata.get("type") and metadata.get("type") != "object":
        found.append(_invalid(f"{path}.properties[metadata].type", metadata["type"], "must be object"))
    extra = set(metadata) - {"type", "properties", "description"}
    props = set(metadata.get("properties") or {}) - {"name", "generateName"}
    if extra or props:
        found.append(_forbidden(f"{path}.properties[metadata]", "must not specify anything other than name and "
                                "generateName, but metadata is implicitly specified"))
    return found


def _default_errors(schema: dict[str, Any], node: SchemaNode, path: str) -> list[FieldError]:
    """Defaults must validate against their own schema (paths under ``....default``)."""
    found: list[FieldError] = []
    for node_path, child in _walk_nodes(node, path):
        if not child.has_default:
            continue
        base = f"{node_path}.default"
        errs: list[FieldError] = []
        _check(_shape(child.default, child), child, "", _MISSING, errs)
        for err in errs:
            found.append(FieldError(err.reason, _join(base, err.field) if err.field else base, err.value, err.detail))
    return found


def _walk_nodes(node: SchemaNode, path: str) -> Iterator[tuple[str, SchemaNode]]:
    yield path, node
    for key, child in node.properties.items():
        yield from _walk_nodes(child, f"{path}.properties[{key}]")
    if node.items is not None:
        yield from _walk_nodes(node.items, f"{path}.items")
    if node.additional is not None:
        yield from _walk_nodes(node.additional, f"{path}.additionalProperties")


def _printer_column_errors(version: dict[str, Any], path: str) -> list[FieldError]:
    found = []
    for i, column in enumerate(version.get("additionalPrinterColumns") or ()):
        col_path = f"{path}.additionalPrinterColumns[{i}]"
        if not column.get("name"):
            found.append(_required(f"{col_path}.name"))
        if not column.get("type"):
            found.append(_required(f"{col_path}.type"))
        elif column["type"] not in _PRINTER_TYPES:
            found.append(_not_supported(f"{col_path}.type", column["type"], _PRINTER_TYPES))
        if column.get("format") and column["format"] not in _PRINTER_FORMATS:
            found.append(_not_supported(f"{col_path}.format", column["format"], _PRINTER_FORMATS))
        if not column.get("jsonPath"):
            found.append(_required(f"{col_path}.jsonPath"))
    return found


def _scale_errors(version: dict[str, Any], path: str) -> list[FieldError]:
    scale = (version.get("subresources") or {}).get("scale")
    if not isinstance(scale, dict):
        return []
    found = []
    scale_path = f"{path}.subresources.scale"
    spec_path = scale.get("specReplicasPath") or ""
    if not spec_path:
        found.append(_required(f"{scale_path}.specReplicasPath", ""))
    elif not spec_path.startswith(".spec."):
        found.append(_invalid(f"{scale_path}.specReplicasPath", spec_path, "should be a json path under .spec"))
    status_path = scale.get("statusReplicasPath") or ""
    if not status_path:
        found.append(_required(f"{scale_path}.statusReplicasPath", ""))
    elif not status_path.startswith(".status."):
        found.append(_invalid(f"{scale_path}.statusReplicasPath", status_path, "should be a json path under .status"))
    selector_path = scale.get("labelSelectorPath") or ""
    if selector_path and not selector_path.startswith((".spec.", ".status.")):
        found.append(_invalid(f"{scale_path}.labelSelectorPath", selector_path,
                              "should be a json path under either .spec or .status"))
    return found
