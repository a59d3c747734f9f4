"""OTLP protobuf beside OTLP/JSON: telling them apart per message, dead-letter reasons, and
``aiops replay --input-format otlp_proto`` giving the incidents the JSON input gives."""
from __future__ import annotations

import io

import orjson
import pytest

from streams import simulate as sim
from streams.config import load_topology
from streams.ingest import DecodeError, decode_logs, decode_metrics, decode_traces, otlp_proto
from streams.replay import replay

T0 = "1767225600000000000"
GAUGE = {"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
                              "scopeMetrics": [{"metrics": [{"name": "cpu", "gauge": {"dataPoints": [
                                  {"timeUnixNano": T0, "asDouble": 0.5}]}}]}]}]}


@pytest.mark.parametrize("payload, proto", [
    (orjson.dumps(GAUGE), False),
    (b"\n" + orjson.dumps(GAUGE), False),  # JSON may begin with a newline
    (b"\n\t " + orjson.dumps(GAUGE) + b"\n", False),
    (otlp_proto.encode(GAUGE, "metrics"), True),
    (b"\n{not json", True),  # not JSON: read as protobuf (and its error is the JSON parser's, below)
    (b"", False),
    (b"\x00\x01", False),
])
def test_encoding_is_told_per_message(payload, proto):
    assert otlp_proto.is_protobuf(payload) is proto


def test_both_encodings_decode_to_the_same_samples():
    want = decode_metrics(orjson.dumps(GAUGE), known_services=None)
    got = decode_metrics(otlp_proto.encode(GAUGE, "metrics"), known_services=None)
    assert got == want and [s.series.id for s in got.samples] == ["api/cpu"]


@pytest.mark.parametrize("decode, signal", [(decode_metrics, "ExportMetricsServiceRequest"),
                                            (decode_logs, "ExportLogsServiceRequest"),
                                            (decode_traces, "ExportTraceServiceRequest")])
def test_a_protobuf_that_does_not_parse_names_its_request_type(decode, signal):
    good = otlp_proto.encode(GAUGE, "metrics")
    with pytest.raises(DecodeError) as exc:
        decode(good[:-3], known_services=None)
    assert str(exc.value).startswith(f"invalid OTLP protobuf ({signal}): Error parsing message")


def test_a_newline_then_broken_json_keeps_the_json_reason():
    with pytest.raises(DecodeError, match="^invalid JSON: "):
        decode_metrics(b'\n{"resourceMetrics": [', known_services=None)


def test_frames_round_trip_and_a_truncated_frame_is_named():
    msgs = [b"\n\x00", b"", b"x" * 300]
    data = b"".join(map(otlp_proto.frame, msgs))
    assert [m for _, m in otlp_proto.read_frames(io.BytesIO(data))] == msgs
    with pytest.raises(ValueError, match="^in.bin: frame at byte 10 declares 300 bytes, 295 remain$"):
        list(otlp_proto.read_frames(io.BytesIO(data[:-5]), "in.bin"))
    with pytest.raises(ValueError, match="^in.bin: truncated frame length at byte 0$"):
        list(otlp_proto.read_frames(io.BytesIO(b"\x00\x00"), "in.bin"))


def test_replay_of_protobuf_frames_gives_the_incidents_of_the_json_lines(tmp_path):
    topo = load_topology("topology.yaml")
    result = sim.simulate(topo, sim.load_scenarios(["flash-sale-db-pool"]))
    jsonl, frames = tmp_path / "in.jsonl", tmp_path / "in.bin"
    jsonl.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in result.requests))
    frames.write_bytes(b"".join(otlp_proto.frame(otlp_proto.encode(r, "metrics")) for r in result.requests))
    logs_jsonl, logs_frames = tmp_path / "logs.jsonl", tmp_path / "logs.bin"
    logs_jsonl.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in result.logs))
    logs_frames.write_bytes(b"".join(otlp_proto.frame(otlp_proto.encode(r, "logs")) for r in result.logs))
    out_json, out_proto = tmp_path / "json.out", tmp_path / "proto.out"
    a = replay(topo, jsonl, out_json, logs=logs_jsonl, drain=True, progress=None)
    b = replay(topo, frames, out_proto, logs=logs_frames, drain=True, progress=None, input_format="otlp_proto")
    assert a.incidents > 0 and a.points > 0
    assert (b.lines, b.points, b.incidents, b.dead_lettered) == (a.lines, a.points, a.incidents, a.dead_lettered)
    assert out_proto.read_bytes() == out_json.read_bytes()


def test_series_key_cache_stays_bounded_and_changes_nothing(monkeypatch):
    monkeypatch.setattr(otlp_proto, "_SERIES_MAX", 5)

    def request(i):
        return {"resourceMetrics": [{"resource": GAUGE["resourceMetrics"][0]["resource"], "scopeMetrics": [{"metrics": [
            {"name": "cpu", "gauge": {"dataPoints": [
                {"timeUnixNano": T0, "asDouble": 0.5,
                 "attributes": [{"key": "pod", "value": {"stringValue": f"p{i}-{j}"}}]} for j in range(4)]}}]}]}]}

    for i in range(10):
        got = decode_metrics(otlp_proto.encode(request(i), "metrics"), known_services=None)
        assert got == decode_metrics(orjson.dumps(request(i)), known_services=None)
        assert otlp_proto._series_key_count <= 5
        assert sum(map(len, otlp_proto._series_keys.values())) <= 5


def test_replay_frames_may_hold_json_too(tmp_path):
    """A topic may hold either encoding, so a frame may too: each is told apart as on the topic."""
    topo = load_topology("topology.yaml")
    result = sim.simulate(topo, sim.load_scenarios(["flash-sale-db-pool"]))
    requests = result.requests[:400]
    mixed = tmp_path / "mixed.bin"
    mixed.write_bytes(b"".join(otlp_proto.frame(orjson.dumps(r) if i % 2 else otlp_proto.encode(r, "metrics"))
                               for i, r in enumerate(requests)))
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in requests))
    a = replay(topo, jsonl, tmp_path / "a.out", progress=None)
    b = replay(topo, mixed, tmp_path / "b.out", progress=None, input_format="otlp_proto")
    assert (b.lines, b.points, b.dead_lettered) == (a.lines, a.points, 0)
    assert (tmp_path / "b.out").read_bytes() == (tmp_path / "a.out").read_bytes()
