"""Core pipeline throughput, no broker: OTLP/JSON batches through decode -> normalize -> detect -> correlate.

Baseline, measured in the same run over the same messages: orjson.loads alone, the floor any
JSON pipeline pays.

Also the detect stage alone over batched messages (many services' points per message, as the
Collector's batch processor sends them and as ``kafka_bench`` puts them on the topic): what one
worker's throughput is made of, against ``orjson.loads`` of those same messages.
"""
from __future__ import annotations

import time
from pathlib import Path

import orjson

from streams import codec
from streams import simulate as sim
from streams.config import load_topology
from streams.ingest import Redactor, decode_metrics
from streams.pipeline import CorrelateStage, DetectStage

REPO = Path(__file__).resolve().parents[2]


def _best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    topo = load_topology(REPO / "topology.yaml")
    result = sim.simulate(topo, sim.load_scenarios(None))
    messages = [orjson.dumps(r) for r in result.requests]
    n_points = 0

    def baseline():
        for m in messages:
            orjson.loads(m)

    known, keep = frozenset(topo.services), frozenset(topo.ingest.keep_labels)
    redactor = Redactor.from_settings(topo.ingest.redaction)
    n_samples = 0

    def decode():
        nonlocal n_samples
        n_samples = sum(len(decode_metrics(m, known_services=known, keep_labels=keep, redactor=redactor).samples)
                        for m in messages)

    def pipeline():
        nonlocal n_points
        detect, correlate = DetectStage(topo), CorrelateStage(topo)
        n_points = 0
        for m in messages:
            res = detect.process(m)
            n_points += res.points
            correlate.process([codec.decode_alert_event(codec.encode_alert_event(e)) for e in res.events])

    from tests.bench.kafka_bench import batched

    bulk = batched(result.requests)[0]
    n_bulk = 0

    def bulk_baseline():
        for m in bulk:
            orjson.loads(m)

    def bulk_detect():
        nonlocal n_bulk
        detect = DetectStage(topo)
        n_bulk = sum(detect.process(m).points for m in bulk)

    t_base = _best_of(baseline)
    t_decode = _best_of(decode)
    t_pipe = _best_of(pipeline)
    mb = sum(map(len, messages)) / 1e6
    print(f"   {len(messages)} OTLP/JSON messages ({mb:.1f} MB), {n_points} derived points")
    print(f"   orjson.loads only (baseline): {len(messages) / t_base:,.0f} msg/s")
    print(f"   decode only (to samples):     {len(messages) / t_decode:,.0f} msg/s, {n_samples / t_decode:,.0f} points/s"
          f" ({n_samples / t_base:,.0f} at the baseline's pace)")
    print(f"   full core pipeline:           {len(messages) / t_pipe:,.0f} msg/s, {n_points / t_pipe:,.0f} points/s")
    print(f"   pipeline / baseline:          {t_base / t_pipe:.3f}")
    t_bulk_base = _best_of(bulk_baseline)
    t_bulk = _best_of(bulk_detect)
    print(f"   {len(bulk)} batched messages ({sum(map(len, bulk)) / 1e6:.1f} MB), {n_bulk} derived points")
    print(f"   orjson.loads only (baseline): {n_bulk / t_bulk_base:,.0f} points/s")
    print(f"   detect stage:                 {n_bulk / t_bulk:,.0f} points/s")
    print(f"   detect stage / baseline:      {t_bulk_base / t_bulk:.3f}")


if __name__ == "__main__":
    main()
