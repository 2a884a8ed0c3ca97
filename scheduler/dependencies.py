"""Start-up order between InferenceServices: ``dependsOn``.

A service that depends on others (the models of an ensemble, the stages of a
pipeline of services) is placed only once every service it depends on exists and
is ready. A dependency cycle can never start, so it is reported on every service
in it, naming the whole cycle, so the user sees the same story on each object.

The answer is data: for each service a ``Gate`` saying whether it may be placed
and, if not, why. Services are named ``namespace/name``; ``dependsOn`` names
services of the same namespace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServiceState:
    """What the dependency check needs to know about one service."""

    depends_on: tuple[str, ...] = ()
    """Names (in the same namespace) of the services that must be ready first."""
    ready: bool = False
    """Whether the service reports Ready=True."""


@dataclass(frozen=True)
class Gate:
    """Whether a service may be placed now.

    ``waiting_for`` lists the dependencies (``namespace/name``) not ready yet, ``missing`` those that
    do not exist, and ``cycle`` the services of a dependency cycle the service is part of, in order,
    starting and ending with the same service.
    """

    waiting_for: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    cycle: tuple[str, ...] = field(default=())

    @property
    def open(self) -> bool:
        """True when nothing holds the service back."""
        return not (self.waiting_for or self.missing or self.cycle)

    @property
    def reason(self) -> str:
        """Why the service waits, in words a user can act on ('' when open)."""
        if self.cycle:
            return ("dependsOn forms a cycle: " + " → ".join(_name(s) for s in self.cycle)
                    + "; remove one of these dependencies")
        parts = []
        if self.missing:
            parts.append("waits for " + ", ".join(_name(s) for s in self.missing)
                         + " (not found in this namespace; create it or remove it from dependsOn)")
        if self.waiting_for:
            parts.append("waits for " + ", ".join(_name(s) for s in self.waiting_for) + " to be ready")
        return "; ".join(parts)


def gates(services: Mapping[str, ServiceState]) -> dict[str, Gate]:
    """A gate for every service of ``services`` (keyed ``namespace/name``)."""
    cycles = _cycles(services)
    result = {}
    for key in sorted(services):
        namespace = _namespace(key)
        deps = [f"{namespace}/{name}" for name in dict.fromkeys(services[key].depends_on)]
        missing = tuple(d for d in deps if d not in services)
        waiting = tuple(d for d in deps if d in services and not services[d].ready)
        result[key] = Gate(waiting_for=waiting, missing=missing, cycle=cycles.get(key, ()))
    return result


def _cycles(services: Mapping[str, ServiceState]) -> dict[str, tuple[str, ...]]:
    """For each service on a cycle, the shortest cycle through it, as a closed walk starting at the
    cycle's smallest name (so the members of a simple cycle all report the same walk).

    Strongly connected components (Tarjan's algorithm, iterative) find every service on a cycle.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(services):
        if root in index:
            continue
        work = [(root, iter(_deps(root, services)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c in services), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(_deps(child, services))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    result: dict[str, tuple[str, ...]] = {}
    for component in components:
        members = set(component)
        if len(members) == 1 and component[0] not in _deps(component[0], services):
            continue
        for member in members:
            walk = _shortest_cycle(member, members, services)[:-1]
            turn = walk.index(min(walk))
            result[member] = (*walk[turn:], *walk[:turn], min(walk))
    return result


def _shortest_cycle(start: str, members: set[str], services: Mapping[str, ServiceState]) -> tuple[str, ...]:
    """The shortest walk start → … → start inside ``members`` (breadth first, neighbours by name)."""
    previous: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        following = []
        for node in frontier:
            for dep in _deps(node, services):
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return (start, *reversed(path[:-1]), start) if len(path) > 1 else (start, start)
                if dep in members and dep not in seen:
                    seen.add(dep)
                    previous[dep] = node
                    following.append(dep)
        frontier = following
    return (start, start)  # unreachable for a strongly connected component


def _deps(key: str, services: Mapping[str, ServiceState]) -> Sequence[str]:
    namespace = _namespace(key)
    return sorted({f"{namespace}/{name}" for name in services[key].depends_on})


def _namespace(key: str) -> str:
    return key.partition("/")[0]


def _name(key: str) -> str:
    return key.partition("/")[2]
