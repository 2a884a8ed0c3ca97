"""dependsOn: which services may be placed, why the others wait, and cycles named on every member."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trireme.scheduler.dependencies import Gate, ServiceState, gates


def svc(*deps: str, ready: bool = False) -> ServiceState:
    return ServiceState(depends_on=deps, ready=ready)


CASES = [
    ("no-dependencies", {"ns/a": svc()}, {"ns/a": Gate()}),
    ("ready-dependency-opens", {"ns/a": svc("b"), "ns/b": svc(ready=True)}, {"ns/a": Gate(), "ns/b": Gate()}),
    ("unready-dependency-waits", {"ns/a": svc("b"), "ns/b": svc()},
     {"ns/a": Gate(waiting_for=("ns/b",)), "ns/b": Gate()}),
    ("missing-dependency", {"ns/a": svc("ghost")}, {"ns/a": Gate(missing=("ns/ghost",))}),
    ("other-namespace-does-not-count", {"x/a": svc("b"), "y/b": svc(ready=True)},
     {"x/a": Gate(missing=("x/b",)), "y/b": Gate()}),
    ("duplicate-names-once", {"ns/a": svc("b", "b"), "ns/b": svc()}, {"ns/a": Gate(waiting_for=("ns/b",)),
                                                                       "ns/b": Gate()}),
    ("self-cycle", {"ns/a": svc("a", ready=True)}, {"ns/a": Gate(waiting_for=(), cycle=("ns/a", "ns/a"))}),
    ("two-cycle-on-both", {"ns/a": svc("b"), "ns/b": svc("a")},
     {"ns/a": Gate(waiting_for=("ns/b",), cycle=("ns/a", "ns/b", "ns/a")),
      "ns/b": Gate(waiting_for=("ns/a",), cycle=("ns/a", "ns/b", "ns/a"))}),
    ("behind-a-cycle-waits-not-cycle", {"ns/a": svc("b"), "ns/b": svc("c"), "ns/c": svc("b")},
     {"ns/a": Gate(waiting_for=("ns/b",)),
      "ns/b": Gate(waiting_for=("ns/c",), cycle=("ns/b", "ns/c", "ns/b")),
      "ns/c": Gate(waiting_for=("ns/b",), cycle=("ns/b", "ns/c", "ns/b"))}),
]


@pytest.mark.parametrize(("services", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_gates(services: dict[str, ServiceState], expected: dict[str, Gate]) -> None:
    assert gates(services) == expected


REASONS = [
    ("open", Gate(), ""),
    ("waiting", Gate(waiting_for=("ns/db", "ns/tok")), "waits for db, tok to be ready"),
    ("missing", Gate(missing=("ns/x",)), "waits for x (not found in this namespace; create it or remove it from "
                                        "dependsOn)"),
    ("cycle", Gate(cycle=("ns/a", "ns/b", "ns/a")),
     "dependsOn forms a cycle: a → b → a; remove one of these dependencies"),
]


@pytest.mark.parametrize(("gate", "reason"), [c[1:] for c in REASONS], ids=[c[0] for c in REASONS])
def test_reason(gate: Gate, reason: str) -> None:
    assert gate.reason == reason
    assert gate.open == (reason == "")


def test_members_of_one_simple_cycle_tell_the_same_story() -> None:
    services = {"ns/c": svc("a"), "ns/a": svc("b"), "ns/b": svc("c")}
    assert {gate.cycle for gate in gates(services).values()} == {("ns/a", "ns/b", "ns/c", "ns/a")}


NAMES = st.sampled_from("abcdef")
GRAPHS = st.dictionaries(NAMES, st.tuples(st.lists(NAMES, max_size=3), st.booleans()), max_size=6)


@given(GRAPHS)
def test_cycle_members_report_one_real_cycle(graph: dict[str, tuple[list[str], bool]]) -> None:
    services = {f"ns/{k}": svc(*deps, ready=ready) for k, (deps, ready) in graph.items()}
    result = gates(services)
    for key, gate in result.items():
        if not gate.cycle:
            continue
        cycle = gate.cycle
        assert cycle[0] == cycle[-1] and key in cycle
        for here, there in zip(cycle, cycle[1:]):  # every step is a real dependency
            assert there.partition("/")[2] in services[here].depends_on
        assert all(result[member].cycle for member in cycle)
