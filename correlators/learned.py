"""The call graph learned from spans, merged with the declared one, and its drift.

``topology.yaml`` declares the services, and may declare who calls whom (``depends_on``). Spans
say who actually calls whom: :class:`LearnedGraph` keeps, per call ``caller -> callee`` between
declared services, how many calls were seen and when the last one was, and gives

- :meth:`LearnedGraph.graph`: the declared graph with the learned calls added, for grouping and
  root-cause ranking (a services list without any ``depends_on`` is enough to start from);
- :meth:`LearnedGraph.drift`: calls seen but not declared, and declared calls not seen for
  ``stale_after`` (only between services the spans show: an uninstrumented service's calls are
  never seen, and that is no drift).

Plain and deterministic, no I/O; the state is one entry per call (edge), never a trace. Calls
naming an undeclared service are not taken, as telemetry from an unknown service is not.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import networkx as nx


@dataclass(frozen=True, slots=True)
class Edge:
    """One call between two services, as the spans and the topology know it."""

    caller: str
    callee: str
    calls: int  # seen in spans (0: never)
    last_seen: float | None  # unix seconds of the latest; None: never seen
    declared: bool


@dataclass(frozen=True, slots=True)
class Drift:
    """Where the declared graph and the spans disagree."""

    undeclared: tuple[Edge, ...]  # calls seen in spans that topology.yaml does not declare
    stale: tuple[Edge, ...]  # declared calls between traced services not seen for ``stale_after``
    stale_after: float = 0.0  # seconds

    def __bool__(self) -> bool:
        return bool(self.undeclared or self.stale)

    def involving(self, services: Iterable[str]) -> Drift:
        """Only the edges with an end among ``services``."""
        s = set(services)
        return Drift(tuple(e for e in self.undeclared if e.caller in s or e.callee in s),
                     tuple(e for e in self.stale if e.caller in s or e.callee in s), self.stale_after)


class LearnedGraph:
    """Calls learned from spans over a declared graph.

    Parameters
    ----------
    declared : the topology's graph (``u -> v``: ``u`` calls ``v``); not mutated. Its nodes are
        the services calls may name.
    stale_after : seconds without a call after which a declared call is reported as drift.

    Examples
    --------
    >>> g = LearnedGraph(nx.DiGraph([("web", "api"), ("web", "db")]), stale_after=3600)
    >>> g.observe([("web", "api", 5, 3900.0), ("api", "db", 3, 100.0), ("web", "ghost", 1, 100.0)])
    [('api', 'db')]
    >>> sorted(g.graph().edges)
    [('api', 'db'), ('web', 'api'), ('web', 'db')]
    >>> d = g.drift(now=4000.0)
    >>> [(e.caller, e.callee, e.calls) for e in d.undeclared], [(e.caller, e.callee, e.last_seen) for e in d.stale]
    ([('api', 'db', 3)], [('web', 'db', None)])
    """

    def __init__(self, declared: nx.DiGraph, *, stale_after: float = 3600.0):
        self._declared = declared
        self.stale_after = stale_after
        self._edges: dict[tuple[str, str], tuple[int, float]] = {}  # (caller, callee) -> (calls, last seen)
        self._first: float | None = None  # the first call's time: staleness counts from here
        self._graph: nx.DiGraph | None = None

    @property
    def declared(self) -> nx.DiGraph:
        return self._declared

    def redeclare(self, declared: nx.DiGraph) -> list[tuple[str, str]]:
        """A new topology (live config): learned calls stay, those naming a service no longer
        declared are dropped. Returns the learned calls the new graph does not declare."""
        self._declared = declared
        self._edges = {k: v for k, v in self._edges.items() if k[0] in declared and k[1] in declared}
        self._graph = None
        return sorted(k for k in self._edges if not declared.has_edge(*k))

    def observe(self, calls: Iterable[tuple[str, str, int, float]]) -> list[tuple[str, str]]:
        """Take ``(caller, callee, count, last_seen)`` calls. Returns the calls new to the merged
        graph (neither declared nor learned before), sorted: when there are some, the graph
        that grouping and ranking use has changed."""
        new = []
        declared = self._declared
        for caller, callee, count, at in calls:
            if caller == callee or caller not in declared or callee not in declared or count <= 0:
                continue
            key = (caller, callee)
            old = self._edges.get(key)
            if old is None:
                self._edges[key] = (count, at)
                if not declared.has_edge(caller, callee):
                    new.append(key)
            else:
                self._edges[key] = (old[0] + count, max(old[1], at))
            if self._first is None or at < self._first:
                self._first = at
        if new:
            self._graph = None
        return sorted(new)

    def graph(self) -> nx.DiGraph:
        """The declared graph (nodes with their attributes) plus every learned call between
        declared services; each edge says whether it is ``declared``. Counts and times are in
        :meth:`edges`. The same object until a new call appears: do not mutate it."""
        if self._graph is None:
            g = self._declared.copy()
            nx.set_edge_attributes(g, True, "declared")
            g.add_edges_from((k for k in sorted(self._edges) if not g.has_edge(*k)), declared=False)
            self._graph = g
        return self._graph

    def edges(self) -> list[Edge]:
        """Every declared or learned call, sorted."""
        keys = set(self._edges) | set(self._declared.edges)
        out = []
        for u, v in sorted(keys):
            count, at = self._edges.get((u, v), (0, None))
            out.append(Edge(u, v, count, at, self._declared.has_edge(u, v)))
        return out

    def drift(self, now: float, stale_after: float | None = None) -> Drift:
        """Calls seen but not declared; declared calls not seen for ``stale_after`` seconds
        (default: the graph's), counted from the first call seen, between services that appear
        in some learned call. Nothing is stale before any span was seen."""
        stale_after = self.stale_after if stale_after is None else stale_after
        traced = {s for k in self._edges for s in k}
        undeclared, stale = [], []
        for e in self.edges():
            if not e.declared:
                undeclared.append(e)
            elif self._first is not None and e.caller in traced and e.callee in traced:
                since = e.last_seen if e.last_seen is not None else self._first
                if now - since >= stale_after:
                    stale.append(e)
        return Drift(tuple(undeclared), tuple(stale), stale_after)


def describe_edge(e: Edge, *, time_format=None) -> str:
    """``checkout -> payments (310 calls, last 2026-01-01 00:09:58)`` or ``... (never seen)``.

    >>> describe_edge(Edge("a", "b", 0, None, True))
    'a -> b (never seen)'
    """
    if e.last_seen is None:
        return f"{e.caller} -> {e.callee} (never seen)"
    when = time_format(e.last_seen) if time_format else f"{e.last_seen:.0f}"
    return f"{e.caller} -> {e.callee} ({e.calls} call{'s' if e.calls != 1 else ''}, last {when})"


__all__ = ["Drift", "Edge", "LearnedGraph", "describe_edge"]
