"""What spans cost: OTLP/JSON ``ExportTraceServiceRequest`` messages decoded, turned into
request/error/duration series and calls (:mod:`detectors.spans`), and the whole traces path of
the detect stage (decode, signals, scoring the series), in spans per second of CPU time.

The messages are synthetic (``tests.traces_fixture``): a ten-service call tree, SERVER and
CLIENT spans with status, about 2,000 spans a message (ten seconds at 60 traces per second). The garbage
collector is set as the worker sets it (``streams.app.run_worker``).

Run: ``.venv/bin/python -m tests.bench.traces_bench``.
"""
from __future__ import annotations

import gc
import time

import orjson

from detectors.spans import SpanSignals
from streams.config import parse_topology
from streams.ingest import decode_traces
from streams.pipeline import DetectStage
from tests.traces_fixture import make_traces

CALLS = {"web": ["api", "search"], "api": ["cart", "orders"], "cart": ["db"], "orders": ["db", "payments"],
         "payments": ["gateway"], "search": ["index"], "gateway": ["bank"]}
T0 = 1767225600.0


def _messages(minutes: int = 10) -> list[bytes]:
    reqs = make_traces(CALLS, "web", T0, minutes, per_minute=600, seed=3)
    return [orjson.dumps(r) for r in reqs]


def _best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def spans_per_second(minutes: int = 10) -> dict[str, float]:
    """Spans per CPU second for decoding alone, decoding and span signals, and the detect stage's
    ``process_traces`` (decode, signals, scoring); also the spans and messages measured."""
    messages = _messages(minutes)
    services = sorted({s for k, v in CALLS.items() for s in [k, *v]})
    topology = parse_topology({"services": {s: {} for s in services}})
    known = frozenset(services)
    decoded = [decode_traces(m, known_services=known)[0] for m in messages]
    n = sum(len(d) for d in decoded)

    def decode():
        for m in messages:
            decode_traces(m, known_services=known)

    def signals():
        s = SpanSignals(topology.traces.span_settings())
        for m in messages:
            s.add(decode_traces(m, known_services=known)[0])

    def stage():
        d = DetectStage(topology)
        for m in messages:
            d.process_traces(m)

    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        out = {name: n / _best_of(fn) for name, fn in (("decode", decode), ("decode+signals", signals),
                                                       ("process_traces", stage))}
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    return {**out, "spans": n, "messages": len(messages)}


def main() -> None:
    r = spans_per_second()
    print(f"   {r['spans']} spans in {r['messages']} messages (about {r['spans'] // r['messages']} a message)")
    for name in ("decode", "decode+signals", "process_traces"):
        print(f"   {name:15} {r[name]:12,.0f} spans/s")


if __name__ == "__main__":
    main()
