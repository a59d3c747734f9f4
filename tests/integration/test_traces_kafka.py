"""Spans on telemetry.traces through a real worker and broker: their request, error and duration
series alert, the calls they show reach the correlator on aiops.alerts, and the incident is the one
`aiops replay --traces` computes: rooted at a datastore the topology lists without calls, over
calls learned from the spans. A bad traces message is dead-lettered and the worker goes on."""
from __future__ import annotations

import orjson

from evaluation.metrics import final_versions
from streams.config import load_topology
from streams.replay import replay
from tests.integration.harness import consume_until, private_topology, produce, worker_process
from tests.traces_fixture import make_traces

T0 = 1767225600.0  # 2026-01-01T00:00:00Z
TOPOLOGY = """
name: traces-kafka
services:
  web: {entrypoint: true, depends_on: [api]}
  api: {}
  cart: {}
  db: {kind: datastore}
"""
CALLS = {"web": ["api"], "api": ["cart"], "cart": ["db"]}
BAD = b'{"resourceSpans": "not a list"}'


def essence(state: dict[str, dict]) -> dict:
    return {i: (r["status"], tuple(r["services"]), tuple((rc["service"], tuple(rc["path"])) for rc in r["root_causes"]))
            for i, r in state.items()}


def test_spans_on_kafka_give_the_incident_replay_gives(kafka_bootstrap, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(TOPOLOGY)
    topo_path = private_topology(tmp_path, base=base)
    topo = load_topology(topo_path)
    lines = [orjson.dumps(r) for r in make_traces(CALLS, "web", T0, 70, fault=("db", T0 + 45 * 60, T0 + 55 * 60))]
    traces = tmp_path / "traces.jsonl"
    traces.write_bytes(b"".join(line + b"\n" for line in lines))
    empty = tmp_path / "metrics.jsonl"
    empty.write_bytes(b"")
    expected = tmp_path / "replay.jsonl"
    replay(topo, empty, expected, traces=traces, progress=None)
    want = final_versions([orjson.loads(x) for x in expected.read_bytes().splitlines()])
    assert [(r["root_causes"][0]["service"], r["root_causes"][0]["path"][:2]) for r in want.values()] == [
        ("db", ["db", "cart"])]

    with worker_process(topo_path, kafka_bootstrap, tmp_path) as proc:
        produce(kafka_bootstrap, topo.topics.traces, [BAD] + lines, key=b"spans")
        dead = consume_until(kafka_bootstrap, topo.topics.deadletter, lambda r: len(r) >= 1, timeout=60, proc=proc)
        got = consume_until(kafka_bootstrap, topo.topics.incidents,
                            lambda recs: essence(final_versions(recs)) == essence(want), timeout=180, proc=proc)
        alerts = consume_until(kafka_bootstrap, topo.topics.alerts,
                               lambda r: any(x.get("calls") for x in r), timeout=30, proc=proc)
    assert [(d["topic"], d["offset"], d["reason"]) for d in dead] == [
        (topo.topics.traces, 0, "resourceSpans: expected a list (got str)")]
    # Byte-identical records: the worker runs the same core as replay.
    final = final_versions(got)
    assert sorted(orjson.dumps(r) for r in final.values()) == sorted(orjson.dumps(r) for r in want.values())
    calls = {(c["caller"], c["callee"]) for x in alerts if x["type"] == "heartbeat" for c in x["calls"]}
    assert calls == {("web", "api"), ("api", "cart"), ("cart", "db")}
    fired = {x["series"] for x in alerts if x["type"] == "alert" and x["status"] == "firing"}
    assert fired and all(x["source"] == "traces" for x in alerts if x["type"] == "alert")
    assert any(s.startswith("db/span.") for s in fired)
