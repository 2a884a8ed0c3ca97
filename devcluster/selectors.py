"""Label and field selectors, parsed once per request into predicates.

Label selectors follow apimachinery's grammar (``a=b``, ``a==b``, ``a!=b``,
``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``, ``a>1``, ``a<1``, joined by
commas), with its checks on keys and values. Field selectors support the fields
real API servers index for the kinds served here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request

Predicate = Callable[[dict[str, Any]], bool]

_TERM_RE = re.compile(r"""^\s*(?P<neg>!)?\s*(?P<key>[^\s!=<>(),]+)
    (?:\s*(?P<op>==|=|!=|<|>)\s*(?P<value>[^\s!=<>(),]*)
      |\s+(?P<set>notin|in)\s*\((?P<values>[^()]*)\))?\s*$""", re.X)

_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_PART_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
                  "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation "
                  "is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                    "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a qualified name (``[prefix/]name``) as label and annotation
    keys must be, in apimachinery's words; None when it is one."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if "/" in prefix:
            return ("a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and "
                    "end with an alphanumeric character, with an optional DNS subdomain prefix and '/' "
                    "(e.g. 'example.com/MyName')")
        if not prefix:
            return "prefix part must be non-empty"
        if len(prefix) > 253:
            return "prefix part must be no more than 253 characters"
        if not DNS1123_SUBDOMAIN.match(prefix):
            return ("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')")
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _NAME_PART.match(name):
        return _NAME_PART_MSG
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a valid label value; None when it is one."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if value and not _NAME_PART.match(value):
        return _LABEL_VALUE_MSG
    return None


def _split_terms(selector: str, keep_empty: bool = False) -> list[str]:
    """Split on commas that are not inside parentheses. Empty terms are dropped
    unless ``keep_empty`` (label selectors reject them)."""
    terms, depth, current = [], 0, []
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(ch)
    terms.append("".join(current))
    stripped = [t.strip() for t in terms]
    return stripped if keep_empty else [t for t in stripped if t]


def _unparsable(why: str) -> Exception:
    return bad_request(f"unable to parse requirement: {why}")


def _checked_key(key: str) -> str:
    problem = label_key_problem(key)
    if problem:
        raise _unparsable(f'key: Invalid value: "{key}": {problem}')
    return key


def _checked_values(values: list[str]) -> list[str]:
    for index, value in enumerate(values):
        problem = label_value_problem(value)
        if problem:
            raise _unparsable(f'values[{index}]: Invalid value: "{value}": {problem}')
    return values


def _label_term(term: str) -> Callable[[dict[str, str]], bool]:
    m = _TERM_RE.match(term)
    if not m:
        raise bad_request(f"unable to parse requirement: found {term!r}, expected a label selector "
                          "such as app=web, tier!=db, env in (a,b), !legacy")
    negate, key, op = m["neg"], m["key"], m["op"] or m["set"]
    if negate and op:
        raise _unparsable(f"found {op!r} after !{key}, expected: ',' or 'end of string' "
                          "('!' only tests that a label is absent)")
    key = _checked_key(key)
    if op in ("in", "notin"):
        values = [v.strip() for v in m["values"].split(",")]
        if values == [""]:
            raise _unparsable("values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty")
        allowed = set(_checked_values(values))
        if op == "in":
            return lambda labels: labels.get(key) in allowed
        return lambda labels: labels.get(key) not in allowed
    if op in ("<", ">"):
        bound = _integer_bound(m["value"])
        if op == ">":
            return lambda labels: (n := _label_int(labels, key)) is not None and n > bound
        return lambda labels: (n := _label_int(labels, key)) is not None and n < bound
    if op is not None:
        value = _checked_values([m["value"]])[0]
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if negate:
        return lambda labels: key not in labels
    return lambda labels: key in labels


def _integer_bound(value: str) -> int:
    if not re.match(r"^[+-]?[0-9]+$", value):
        raise _unparsable(f'values[0]: Invalid value: "{value}": for \'Gt\', \'Lt\' operators, the value '
                          "must be an integer")
    return int(value)


def _label_int(labels: dict[str, str], key: str) -> int | None:
    try:
        return int(labels[key])
    except (KeyError, ValueError):
        return None


def label_predicate(selector: str | None) -> Predicate | None:
    """A predicate over objects for a label selector string; None when it selects everything."""
    if not selector or not selector.strip():
        return None
    terms = _split_terms(selector, keep_empty=True)
    for index, term in enumerate(terms):
        if not term:
            found, expected = ("", "identifier after ','") if index else (",", "!, identifier, or 'end of string'")
            raise _unparsable(f"found '{found}', expected: {expected} (in {selector!r})")
    tests = [_label_term(t) for t in terms]

    def matches(obj: dict[str, Any]) -> bool:
        labels = obj["metadata"].get("labels") or {}
        return all(test(labels) for test in tests)
    return matches


def match_label_selector(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A structured ``LabelSelector`` (matchLabels/matchExpressions) against labels.
    An empty selector matches everything; None matches nothing (as for PDBs)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], set(expr.get("values") or [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


_FIELD_GETTERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "metadata.name": lambda o: o["metadata"].get("name", ""),
    "metadata.namespace": lambda o: o["metadata"].get("namespace", ""),
    "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName", ""),
    "spec.schedulerName": lambda o: (o.get("spec") or {}).get("schedulerName", ""),
    "spec.restartPolicy": lambda o: (o.get("spec") or {}).get("restartPolicy", ""),
    "spec.serviceAccountName": lambda o: (o.get("spec") or {}).get("serviceAccountName", ""),
    "spec.unschedulable": lambda o: str(bool((o.get("spec") or {}).get("unschedulable", False))).lower(),
    "status.phase": lambda o: (o.get("status") or {}).get("phase", ""),
    "status.podIP": lambda o: (o.get("status") or {}).get("podIP", ""),
    "status.nominatedNodeName": lambda o: (o.get("status") or {}).get("nominatedNodeName", ""),
    "involvedObject.name": lambda o: (o.get("involvedObject") or {}).get("name", ""),
    "involvedObject.namespace": lambda o: (o.get("involvedObject") or {}).get("namespace", ""),
    "involvedObject.kind": lambda o: (o.get("involvedObject") or {}).get("kind", ""),
    "involvedObject.uid": lambda o: (o.get("involvedObject") or {}).get("uid", ""),
    "regarding.name": lambda o: (o.get("regarding") or {}).get("name", ""),
    "reason": lambda o: o.get("reason", ""),
    "type": lambda o: o.get("type", ""),
}


def field_predicate(selector: str | None, kind: str) -> Predicate | None:
    """A predicate for a field selector (``=``, ``==``, ``!=`` terms joined by commas)."""
    if not selector:
        return None
    tests = []
    for term in _split_terms(selector):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise bad_request(f"invalid field selector term {term!r}: expected field=value or field!=value")
        path, op, value = m.groups()
        getter = _FIELD_GETTERS.get(path)
        if getter is None:
            raise bad_request(f'field label not supported: {path} (supported for {kind}: '
                              f'{", ".join(sorted(_FIELD_GETTERS))})')
        tests.append((getter, op == "!=", value))

    def matches(obj: dict[str, Any]) -> bool:
        return all((str(getter(obj)) == value) != negate for getter, negate, value in tests)
    return matches


def combine(*predicates: Predicate | None) -> Predicate | None:
    active = [p for p in predicates if p is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    return lambda obj: all(p(obj) for p in active)
