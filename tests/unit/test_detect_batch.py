"""The worker scores a partition's consecutive metric messages in one engine call
(:meth:`DetectStage.process_many`); replay scores one message at a time. Both must give each
message exactly the same result, or the worker and ``aiops replay`` would disagree."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import simulate as sim
from streams.config import load_topology
from streams.ingest import DecodeError
from streams.pipeline import DetectStage

REPO = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=1)
def _messages() -> tuple[bytes, ...]:
    """Half an hour of the shipped topology with faults that fire and resolve, one metric of one
    resource per message (so alerts fall on a message's first point as well as later ones), with
    an unusable message, a message of points out of time and a redelivered message among them."""
    topo = load_topology(REPO / "topology.yaml")
    services = sorted(topo.services)
    faults = [sim.Fault(services[0], "latency", 900, 300), sim.Fault(services[1], "errors", 1000, 300)]
    requests = sim.generate(topo, faults, duration=1800, seed=3)
    msgs = [orjson.dumps({"resourceMetrics": [{**rm, "scopeMetrics": [{**sm, "metrics": [m]}]}]})
            for r in requests for rm in r["resourceMetrics"] for sm in rm["scopeMetrics"] for m in sm["metrics"]]
    stale = orjson.loads(msgs[5])
    for rm in stale["resourceMetrics"]:
        for sm in rm["scopeMetrics"]:
            for m in sm["metrics"]:
                for p in (m.get("gauge") or m.get("sum") or m.get("histogram") or {}).get("dataPoints", []):
                    p["timeUnixNano"] = "946771200000000000"  # 2000-01-02: further behind than ingest.max_behind
    middle = len(msgs) // 2
    return tuple(msgs[:middle] + [b"{not json", orjson.dumps(stale), msgs[middle - 1]] + msgs[middle:])


def _outcome(res):
    if isinstance(res, DecodeError):
        return ("error", str(res))
    return (res.events, res.rejects, res.points, res.samples, res.anomalous_points)


def test_the_fixture_fires_and_rejects():
    stage = DetectStage(load_topology(REPO / "topology.yaml"))
    results = stage.process_many(list(_messages()))
    assert any(isinstance(r, DecodeError) for r in results)
    assert any(r.rejects for r in results if not isinstance(r, DecodeError))
    firing = [e for r in results if not isinstance(r, DecodeError) for e in r.events
              if getattr(e, "status", None) == "firing"]
    assert firing, "the fault must fire, or the comparison below proves little"


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=40))
def test_batches_give_each_message_what_one_call_per_message_gives(cuts):
    topo = load_topology(REPO / "topology.yaml")
    msgs = list(_messages())
    one, batched = DetectStage(topo), DetectStage(topo)
    expected = []
    for m in msgs:
        try:
            expected.append(_outcome(one.process(m)))
        except DecodeError as exc:
            expected.append(_outcome(exc))
    got, i = [], 0
    sizes = iter(cuts)
    while i < len(msgs):
        n = next(sizes, len(msgs))
        got += [_outcome(r) for r in batched.process_many(msgs[i:i + n])]
        i += n
    assert got == expected
    assert batched.stats == one.stats
    assert batched.watermark == one.watermark
