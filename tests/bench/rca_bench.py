"""RCA latency on a large topology: one incident's root-cause ranking on a 5,000-service call
graph, p50 and p99, against the baseline of one networkx BFS over the same graph."""
from __future__ import annotations

import time

import networkx as nx
import numpy as np

from correlators.rca import rank_root_causes
from detectors.records import Alert

SERVICES = 5_000
INCIDENTS = 200
METRICS = ("http.server.errors.rate", "http.server.request.duration.p95", "db.client.connections.utilization",
           "process.cpu.utilization")


def call_graph(n: int, seed: int = 3) -> nx.DiGraph:
    """A layered call graph like a large microservice estate: each service calls 1-4 services in
    deeper layers; the first layer are entry points."""
    rng = np.random.default_rng(seed)
    g = nx.DiGraph()
    layers = np.array_split(np.arange(n), 8)
    for depth, layer in enumerate(layers):
        for s in layer:
            g.add_node(f"svc-{s}", entrypoint=depth == 0, tier=1 + depth % 4)
            if depth + 1 < len(layers):
                deeper = np.concatenate(layers[depth + 1:depth + 3])
                for d in rng.choice(deeper, size=int(rng.integers(1, 5)), replace=False):
                    g.add_edge(f"svc-{s}", f"svc-{d}")
    return g


def incident_alerts(g: nx.DiGraph, rng: np.random.Generator) -> list[Alert]:
    """A fault at a random service and 5-40 alerts on it and its transitive callers."""
    root = f"svc-{int(rng.integers(len(g) // 2, len(g)))}"
    callers = list(nx.ancestors(g, root))
    rng.shuffle(callers)
    services = [root] + callers[: int(rng.integers(4, 40))]
    alerts = []
    for k, svc in enumerate(services):
        metric = METRICS[2] if svc == root else METRICS[k % 2]
        alerts.append(Alert(f"fp-{svc}-{metric}", "firing", svc, metric, f"{svc}/{metric}", (), 0.99, 1.0, 0.2,
                            100.0 + 5 * k, 110.0 + 5 * k))
    return alerts


def main() -> None:
    g = call_graph(SERVICES)
    rng = np.random.default_rng(11)
    cases = [incident_alerts(g, rng) for _ in range(INCIDENTS)]
    base, rca = [], []
    for alerts in cases:
        t0 = time.perf_counter()
        nx.ancestors(g, alerts[0].service)  # the walk up from the fault to its callers
        base.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rank_root_causes(g, alerts)
        rca.append(time.perf_counter() - t0)
    ms = lambda xs, q: 1000 * float(np.percentile(xs, q))  # noqa: E731
    print(f"   {g.number_of_nodes()} services, {g.number_of_edges()} calls; {INCIDENTS} incidents of "
          f"{min(map(len, cases))}-{max(map(len, cases))} alerts")
    print(f"   one BFS (baseline):   p50 {ms(base, 50):.2f} ms  p99 {ms(base, 99):.2f} ms")
    print(f"   rank_root_causes:     p50 {ms(rca, 50):.2f} ms  p99 {ms(rca, 99):.2f} ms  (target p99 <= 20 ms)")
    print(f"   rca / BFS (p50):      {ms(rca, 50) / max(ms(base, 50), 1e-9):.1f}x")


if __name__ == "__main__":
    main()
