"""The whole pipeline on a real broker: OTLP/JSON or OTLP protobuf into telemetry.metrics, incidents out of
aiops.incidents, the same incidents as `aiops replay` of the JSON, and bad input dead-lettered without stopping
the worker."""
from __future__ import annotations

import math

import orjson
import pytest

from evaluation.metrics import final_versions as final_state
from streams import simulate as sim
from streams.config import load_topology
from streams.ingest import otlp_proto
from streams.replay import replay
from tests.integration.harness import consume_until, private_topology, produce, worker_process


def essence(state: dict[str, dict]) -> dict:
    return {i: (r["status"], tuple(r["services"]), tuple(rc["service"] for rc in r["root_causes"]))
            for i, r in state.items()}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    topo_path = private_topology(tmp)
    topo = load_topology(topo_path)
    result = sim.simulate(topo, sim.load_scenarios(["flash-sale-db-pool"]))
    telemetry = tmp / "telemetry.jsonl"
    telemetry.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in result.requests))
    expected = tmp / "replay.jsonl"
    replay(topo, telemetry, expected, progress=None)
    return tmp, topo_path, topo, result, telemetry, expected


@pytest.mark.parametrize("encoding", ["otlp_json", "otlp_proto"])
def test_kafka_and_replay_give_the_same_incidents(kafka_bootstrap, scenario, encoding):
    """Replay reads the JSON; the worker reads the same requests in either of the Collector's encodings."""
    tmp, topo_path, topo, result, telemetry, expected = scenario
    # Topics and consumer group of its own: the other encoding's incidents must not count here.
    tmp = tmp / encoding
    tmp.mkdir()
    topo_path = private_topology(tmp)
    topo = load_topology(topo_path)
    want = final_state([orjson.loads(line) for line in expected.read_bytes().splitlines()])
    assert want, "replay found no incident in the scenario"
    fault = result.truth[0]
    assert any(rec["root_causes"][0]["service"] == fault["root_cause"] for rec in want.values())

    with worker_process(topo_path, kafka_bootstrap, tmp) as proc:
        if encoding == "otlp_json":
            messages = telemetry.read_bytes().splitlines()
        else:
            messages = [otlp_proto.encode(r, "metrics") for r in result.requests]
        produce(kafka_bootstrap, topo.topics.metrics, messages)
        got_records = consume_until(
            kafka_bootstrap, topo.topics.incidents,
            lambda recs: essence(final_state(recs)) == essence(want), timeout=180, proc=proc)
    got = final_state(got_records)
    assert essence(got) == essence(want)
    # Byte-identical records, not only the same essence: the worker runs the same core.
    assert sorted(orjson.dumps(r) for r in got.values()) == sorted(orjson.dumps(r) for r in want.values())


BAD_INPUTS = {
    "garbage": b"\x00\xffnot json at all",
    "truncated": b'{"resourceMetrics":[{"resource":{"attributes":[',
    "wrong types": b'{"resourceMetrics":"should be a list"}',
    "nan": orjson.dumps({"schema_version": 1, "service": "checkout", "points": [["cpu", 1767225600, "NaN"]]}),
    "huge number": b'{"schema_version":1,"service":"checkout","points":[["cpu",1767225600,1e999]]}',
    "unknown service": orjson.dumps({"schema_version": 1, "service": "no-such-service",
                                     "points": [["cpu", 1767225600, 0.5]]}),
    "truncated protobuf": otlp_proto.encode({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "cpu"}]}]}]},
                                            "metrics")[:-2],
}


def test_bad_input_is_dead_lettered_and_the_worker_goes_on(kafka_bootstrap, tmp_path):
    topo_path = private_topology(tmp_path)
    topo = load_topology(topo_path)
    good_t = 1767229200.0
    good = orjson.dumps({"schema_version": 1, "service": "checkout", "points": [["process.cpu.utilization", good_t, 0.4]]})
    with worker_process(topo_path, kafka_bootstrap, tmp_path) as proc:
        produce(kafka_bootstrap, topo.topics.metrics, list(BAD_INPUTS.values()) + [good])
        dead = consume_until(kafka_bootstrap, topo.topics.deadletter, lambda r: len(r) >= len(BAD_INPUTS), proc=proc)
        # The good message after the bad ones still went through: its heartbeat reached aiops.alerts.
        consume_until(kafka_bootstrap, topo.topics.alerts,
                      lambda r: any(x.get("type") == "heartbeat" for x in r), timeout=60, proc=proc)
    assert len(dead) == len(BAD_INPUTS)
    assert [d["offset"] for d in dead] == list(range(len(BAD_INPUTS)))
    for d in dead:
        assert d["topic"] == topo.topics.metrics and d["partition"] == 0 and d["reason"]
        assert len(d["excerpt"]) <= topo.ingest.max_excerpt_bytes + 1
    reasons = [d["reason"] for d in dead]
    assert "JSON" in reasons[0] and "JSON" in reasons[1]
    assert "unknown service 'no-such-service'" in reasons[5]
    assert reasons[6].startswith("invalid OTLP protobuf (ExportMetricsServiceRequest): Error parsing message")
