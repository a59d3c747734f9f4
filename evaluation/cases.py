"""Deterministic fault cases per topology, laid out as a few simulated runs.

A *case* is one scenario of :mod:`streams.simulate` (faults that start together) plus what the
pipeline should conclude: the services it should name as root causes, one per independent fault
(none for a noise spike). A *run* is one simulated timeline: its cases one after another with
recovery gaps, the topology the simulator runs (the truth) and the topology the pipeline is given
(the same, except in the missing-edge run).

Per topology, with a seed, :func:`build_runs` makes three runs:

``base``
    - ``single``: one fault of each kind on a random service of a fitting kind: latency, errors,
      saturation (the connection pool of a datastore), resource (CPU saturation of a service),
      crash (the process stops sending), traffic surge (at an entry point);
    - ``subtle``: small magnitudes (latency x2, 5 % errors, CPU to 70 %, a pool to 85 %);
    - ``concurrent``: two faults at once on services far apart in the graph (neither calls the
      other, directly or not);
    - ``noise``: spikes of one sample plus the simulator's 20 s decay (latency x2, 5 % errors,
      traffic x1.5 at an entry point) with no fault behind them; every incident opened for them
      is a false incident.
``uninstrumented``
    Leaf services declared ``kind: external`` (they send no telemetry) and faulted; only their
    callers degrade, and the pipeline should still name them.
``missing-edge``
    Simulated on the true graph, correlated on a graph with one real call edge ``u -> v`` removed,
    faulting ``v`` (the case records the edge).

The spacing: a case's faults last ``DURATION``, then ``RECOVERY`` of normal data follows. The
recovery is longer than the correlator's ``resolve_after`` plus ``reopen_within`` (5 m + 30 m by
default), so a symptom shared by consecutive cases (the entry point's latency, say) opens a new
incident instead of reopening the previous case's.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import networkx as nx

from streams.config import Topology
from streams.simulate import CAUSE, Fault, Scenario

WARMUP = 2700.0  # normal data before a run's first case (as the shipped scenarios)
DURATION = 600.0
RECOVERY = 2400.0
STEP = 10.0
CATEGORIES = ("single", "subtle", "concurrent", "noise", "uninstrumented", "missing-edge")


@dataclass(frozen=True)
class Case:
    name: str
    category: str
    faults: tuple[Fault, ...]  # start relative to the case's onset
    roots: tuple[str, ...]  # the services the pipeline should name; () for noise
    removed_edge: tuple[str, str] | None = None

    def scenario(self, first: bool) -> Scenario:
        return Scenario(self.name, self.faults, start=WARMUP if first else RECOVERY, duration=DURATION,
                        recovery=RECOVERY, root_cause=self.roots[0] if self.roots else None)


@dataclass(frozen=True)
class Run:
    name: str  # "<topology>/<variant>"
    topology: Topology  # what the simulator runs: the truth
    pipeline_topology: Topology  # what the pipeline is told
    cases: tuple[Case, ...]
    external: tuple[str, ...] = ()
    removed_edges: tuple[tuple[str, str], ...] = field(default=())

    def scenarios(self) -> list[Scenario]:
        return [c.scenario(i == 0) for i, c in enumerate(self.cases)]


def expected_kind(topology: Topology, fault: Fault) -> str:
    """The root-cause kind ``correlators.rca`` should name for ``fault``."""
    kind = topology.services[fault.service].kind
    if kind == "external":
        return "unobserved"
    if fault.kind == "saturation" and kind not in ("datastore", "host"):
        return "resource"  # a service's saturation is its CPU
    return CAUSE[fault.kind]


def _with(topology: Topology, *, external: tuple[str, ...] = (), drop: tuple[tuple[str, str], ...] = ()) -> Topology:
    services = {}
    for name, spec in topology.services.items():
        upd = {}
        if name in external:
            upd["kind"] = "external"
        deps = [d for d in spec.depends_on if (name, d) not in drop]
        if deps != spec.depends_on:
            upd["depends_on"] = deps
        services[name] = spec.model_copy(update=upd) if upd else spec
    return topology.model_copy(update={"services": services})


def _pick(r: random.Random, pool: list[str], used: set[str]) -> str | None:
    """A random member of ``pool``, preferring services no earlier case has faulted."""
    if not pool:
        return None
    fresh = [s for s in pool if s not in used]
    svc = r.choice(fresh or pool)
    used.add(svc)
    return svc


def _far_pairs(g: nx.DiGraph, pool: list[str]) -> list[tuple[str, str]]:
    """Pairs of ``pool`` where neither reaches the other, farthest apart (undirected) first."""
    und = g.to_undirected(as_view=True)
    dist = dict(nx.all_pairs_shortest_path_length(und))
    pairs = [(a, b) for a, b in itertools.combinations(sorted(pool), 2)
             if not nx.has_path(g, a, b) and not nx.has_path(g, b, a)]
    if not pairs:
        return []
    far = max(dist[a].get(b, 99) for a, b in pairs)
    return [p for p in pairs if dist[p[0]].get(p[1], 99) == far]


def _fault_for(r: random.Random, topo: Topology, svc: str, *, subtle: bool = False) -> Fault:
    kind = topo.services[svc].kind
    options = ["latency", "errors", "saturation"]
    f = r.choice(options)
    if subtle:
        mag = {"latency": 2.0, "errors": 0.05, "saturation": 0.85 if kind == "datastore" else 0.7}[f]
    else:
        mag = None
    return Fault(svc, f, 0, DURATION, mag)


def build_runs(topology: Topology, *, seed: int = 7, quick: bool = False) -> list[Run]:
    """The runs of one topology. ``quick``: one case per category, for smoke tests."""
    r = random.Random(f"{seed}:{topology.name}")
    g = topology.graph()
    specs = topology.services
    entry = sorted(s for s, p in specs.items() if p.entrypoint)
    observed = sorted(s for s, p in specs.items() if p.kind not in ("external", "host"))
    workers = sorted(s for s in observed if specs[s].kind in ("service", "gateway"))
    non_entry = [s for s in workers if s not in entry]
    datastores = sorted(s for s in observed if specs[s].kind == "datastore")
    used: set[str] = set()
    n = 1 if quick else 2

    single: list[Case] = []

    def add(cat: str, fault: Fault) -> None:
        single.append(Case(f"{cat}:{fault.kind}:{fault.service}", cat, (fault,), (fault.service,)))

    for _ in range(n):
        add("single", Fault(_pick(r, [s for s in observed if specs[s].kind != "queue"], used), "latency", 0, DURATION))
    for _ in range(n):
        add("single", Fault(_pick(r, observed, used), "errors", 0, DURATION))
    for _ in range(n):
        svc = _pick(r, datastores, used)
        if svc:
            add("single", Fault(svc, "saturation", 0, DURATION))
    for _ in range(n if datastores else 2 * n):
        add("single", Fault(_pick(r, workers, used), "saturation", 0, DURATION))  # CPU: a resource fault
    if not quick:
        add("single", Fault(_pick(r, non_entry, used), "crash", 0, DURATION))
        if entry:
            add("single", Fault(r.choice(entry), "traffic_surge", 0, DURATION))
        add("subtle", Fault(_pick(r, observed, used), "latency", 0, DURATION, 2.0))
        add("subtle", Fault(_pick(r, observed, used), "errors", 0, DURATION, 0.05))
        add("subtle", Fault(_pick(r, workers, used), "saturation", 0, DURATION, 0.7))
        if datastores:
            add("subtle", Fault(_pick(r, datastores, used), "saturation", 0, DURATION, 0.85))

    concurrent: list[Case] = []
    pairs = _far_pairs(g, [s for s in observed if s not in entry])
    for a, b in r.sample(pairs, min(n, len(pairs))):
        fa, fb = _fault_for(r, topology, a), _fault_for(r, topology, b)
        concurrent.append(Case(f"concurrent:{a}+{b}", "concurrent", (fa, fb), (a, b)))

    svc = r.choice(observed)
    noise = [Case(f"noise:latency:{svc}", "noise", (Fault(svc, "latency", 5, 5, 2.0, ramp=0),), ())]
    if not quick:
        svc = r.choice(observed)
        noise.append(Case(f"noise:errors:{svc}", "noise", (Fault(svc, "errors", 5, 5, 0.05, ramp=0),), ()))
        if entry:
            svc = r.choice(entry)
            noise.append(Case(f"noise:traffic:{svc}", "noise", (Fault(svc, "traffic_surge", 5, 5, 1.5, ramp=0),), ()))

    # Interleave so consecutive cases rarely share a service; noise sits between faults.
    base_cases = single + concurrent
    r.shuffle(base_cases)
    for i, c in enumerate(noise):
        base_cases.insert(min(len(base_cases), (i + 1) * len(base_cases) // (len(noise) + 1) + i), c)
    runs = [Run(f"{topology.name}/base", topology, topology, tuple(base_cases))]

    # Uninstrumented: leaves (they call nothing) with callers, declared external.
    leaves = sorted(s for s in observed if g.out_degree(s) == 0 and g.in_degree(s) > 0 and s not in entry)
    ext = tuple(r.sample(leaves, min(n, len(leaves))))
    if ext:
        topo_ext = _with(topology, external=ext)
        kinds = ["errors", "latency"]
        cases = tuple(Case(f"uninstrumented:{kinds[i % 2]}:{s}", "uninstrumented", (Fault(s, kinds[i % 2], 0, DURATION),), (s,))
                      for i, s in enumerate(ext))
        runs.append(Run(f"{topology.name}/uninstrumented", topo_ext, topo_ext, cases, external=ext))

    # Missing edge: the pipeline's graph lacks one real call edge; the callee is faulted.
    edges = sorted((u, v) for u, v in g.edges if v in observed and specs[v].kind != "queue")
    dropped = tuple(r.sample(edges, min(n, len(edges))))
    if dropped:
        cases = []
        for i, (u, v) in enumerate(dropped):
            k = ["errors", "latency"][i % 2]
            cases.append(Case(f"missing-edge:{k}:{v} (no {u}->{v})", "missing-edge", (Fault(v, k, 0, DURATION),), (v,),
                              removed_edge=(u, v)))
        runs.append(Run(f"{topology.name}/missing-edge", topology, _with(topology, drop=dropped), tuple(cases),
                        removed_edges=dropped))
    return runs
