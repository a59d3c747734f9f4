"""Caps per telemetry message (issue 18): size, data points (series) and histogram buckets.

A message over a cap is refused whole with the reason (the worker's agents and replay
dead-letter a DecodeError with its text), in OTLP/JSON and OTLP protobuf alike, for metrics,
logs and traces; memory stays bounded: a message over the size cap is never parsed, and one
within it is counted by list lengths before anything is decoded.
"""
from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import orjson
import pytest

from streams.config import ConfigError, parse_topology
from streams.ingest import DecodeError, otlp_proto
from streams.pipeline import DetectStage

T_NS = "1700000000000000000"
RES = {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]}


def topo(**ingest):
    return parse_topology({"services": {"api": {}}, "ingest": ingest})


def gauges(n: int) -> dict:
    return {"resourceMetrics": [{"resource": RES, "scopeMetrics": [{"metrics": [{"name": "cpu", "gauge": {
        "dataPoints": [{"timeUnixNano": T_NS, "asDouble": 1.0,
                        "attributes": [{"key": "core", "value": {"stringValue": str(i)}}]} for i in range(n)]}}]}]}]}


def histogram(buckets: int) -> dict:
    return {"resourceMetrics": [{"resource": RES, "scopeMetrics": [{"metrics": [{"name": "lat", "histogram": {
        "aggregationTemporality": 2, "dataPoints": [{"timeUnixNano": T_NS, "count": "0", "sum": 0.0,
                                                     "bucketCounts": ["0"] * buckets,
                                                     "explicitBounds": [float(i) for i in range(buckets - 1)]}]}}]}]}]}


def logs(n: int) -> dict:
    return {"resourceLogs": [{"resource": RES, "scopeLogs": [{"logRecords": [
        {"timeUnixNano": T_NS, "severityNumber": 9, "body": {"stringValue": f"line {i}"}} for i in range(n)]}]}]}


def spans(n: int) -> dict:
    return {"resourceSpans": [{"resource": RES, "scopeSpans": [{"spans": [
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": f"{i + 1:016x}", "name": "GET /", "kind": 2,
         "startTimeUnixNano": T_NS, "endTimeUnixNano": T_NS} for i in range(n)]}]}]}


def encode(obj: dict, signal: str, encoding: str) -> bytes:
    return orjson.dumps(obj) if encoding == "json" else otlp_proto.encode(obj, signal)


PROCESS = {"metrics": DetectStage.process, "logs": DetectStage.process_logs, "traces": DetectStage.process_traces}
MAKE = {"metrics": gauges, "logs": logs, "traces": spans}
WHAT = {"metrics": "data points", "logs": "log records", "traces": "spans"}


@pytest.mark.parametrize("encoding", ["json", "proto"])
@pytest.mark.parametrize("signal", ["metrics", "logs", "traces"])
def test_series_per_message(signal, encoding):
    stage = DetectStage(topo(max_series_per_message=100))
    PROCESS[signal](stage, encode(MAKE[signal](100), signal, encoding))  # at the cap: fine
    with pytest.raises(DecodeError, match=rf"message over a cap: 101 {WHAT[signal]}, more than "
                                          r"ingest.max_series_per_message \(100\)"):
        PROCESS[signal](stage, encode(MAKE[signal](101), signal, encoding))


@pytest.mark.parametrize("encoding", ["json", "proto"])
def test_buckets_per_histogram(encoding):
    stage = DetectStage(topo(max_buckets_per_histogram=64))
    stage.process(encode(histogram(64), "metrics", encoding))
    with pytest.raises(DecodeError, match=r"a histogram point of 65 buckets, more than "
                                          r"ingest.max_buckets_per_histogram \(64\)"):
        stage.process(encode(histogram(65), "metrics", encoding))


@pytest.mark.parametrize("encoding", ["json", "proto"])
@pytest.mark.parametrize("signal", ["metrics", "logs", "traces"])
def test_message_size(signal, encoding):
    stage = DetectStage(topo(max_message_bytes=4096))
    payload = encode(MAKE[signal](200), signal, encoding)
    assert len(payload) > 4096
    with pytest.raises(DecodeError, match=rf"{len(payload)} bytes, more than ingest.max_message_bytes \(4096\)"):
        PROCESS[signal](stage, payload)


def test_native_batches_are_capped_too():
    stage = DetectStage(topo(max_series_per_message=10))
    batch = {"schema_version": 1, "service": "api", "points": [["cpu", 1.7e9 + i, 0.5] for i in range(11)]}
    with pytest.raises(DecodeError, match="11 data points"):
        stage.process(orjson.dumps(batch))


def test_caps_are_validated():
    with pytest.raises(ConfigError) as exc:
        topo(max_message_bytes=10, max_series_per_message=0, max_buckets_per_histogram=-1)
    text = str(exc.value)
    for key in ("max_message_bytes", "max_series_per_message", "max_buckets_per_histogram"):
        assert f"ingest.{key}" in text


def _peak(f) -> tuple[float, float]:
    tracemalloc.start()
    t = time.perf_counter()
    try:
        f()
    except DecodeError:
        pass
    seconds = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20


def test_memory_stays_bounded_under_the_default_caps():
    """The issue's messages: 26M bucket counts took 1.46 GB and 15 s; 435k series 1.29 GB and 26 s."""
    stage = DetectStage(topo())
    huge_histogram = b'{"resourceMetrics":[{"resource":{},"scopeMetrics":[{"metrics":[{"name":"h","histogram":{' \
                     b'"dataPoints":[{"bucketCounts":[' + b"0," * 26_000_000 + b'0]}]}}]}]}]}'
    seconds, mib = _peak(lambda: stage.process(huge_histogram))
    assert seconds < 0.5 and mib < 1, (seconds, mib)
    # Under the size cap (4 MiB) and over the bucket cap: parsed, counted, refused.
    within = b'{"resourceMetrics":[{"resource":{},"scopeMetrics":[{"metrics":[{"name":"h","histogram":{' \
             b'"dataPoints":[{"bucketCounts":[' + b"0," * 2_000_000 + b'0]}]}}]}]}]}'
    assert len(within) < 4 * 2**20
    seconds, mib = _peak(lambda: stage.process(within))
    assert seconds < 2 and mib < 64, (seconds, mib)
    many = orjson.dumps(gauges(60_000))
    proto = otlp_proto.encode(gauges(60_000), "metrics")
    for payload in (many, proto):
        seconds, mib = _peak(lambda p=payload: stage.process(p))
        assert mib < 300 and seconds < 5, (len(payload), seconds, mib)


def test_replay_dead_letters_a_message_over_a_cap_with_the_reason(tmp_path: Path):
    from streams.replay import replay

    t = topo(max_series_per_message=50)
    metrics = tmp_path / "m.jsonl"
    metrics.write_bytes(orjson.dumps(gauges(10)) + b"\n" + orjson.dumps(gauges(51)) + b"\n"
                        + orjson.dumps(gauges(10)) + b"\n")
    dead = tmp_path / "dead.jsonl"
    summary = replay(t, metrics, tmp_path / "out.jsonl", deadletter=dead, progress=None)
    assert summary.dead_lettered == 1
    [rec] = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert rec["offset"] == 1
    assert rec["reason"] == "message over a cap: 51 data points, more than ingest.max_series_per_message (50)"


# --- protobuf metrics: the byte-size bounds and the count on the decoder's walk (issue 16) -------
# The densest messages over a cap by one: empty data points (2 bytes each), zero varint buckets of
# an exponential histogram (1 byte each), packed fixed64 counts (8 bytes each), empty quantiles.
# Each is within a few bytes of the bound that lets a message skip the count, and still refused.

def _dense(kind: str, k: int) -> bytes:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add()
    if kind == "points":
        for _ in range(k):
            m.gauge.data_points.add()
    elif kind == "exponential_histogram":
        m.exponential_histogram.data_points.add().positive.bucket_counts.extend([0] * k)
    elif kind == "histogram":
        m.histogram.data_points.add(bucket_counts=[0] * k)
    else:
        dp = m.summary.data_points.add()
        for _ in range(k):
            dp.quantile_values.add()
    return req.SerializeToString()


@pytest.mark.parametrize("kind, per_item", [("points", 2), ("exponential_histogram", 1), ("histogram", 8),
                                            ("summary", 2)])
@pytest.mark.parametrize("k", [2, 9, 100, 1000])
def test_the_densest_protobuf_over_a_cap_is_refused_near_the_byte_bound(kind, per_item, k):
    payload = _dense(kind, k)
    assert len(payload) // per_item - k <= 24  # near the bound: the envelope is a few bytes
    if kind == "points":
        stage = DetectStage(topo(max_series_per_message=k - 1))
        reason = rf"message over a cap: {k} data points, more than ingest.max_series_per_message \({k - 1}\)"
    else:
        stage = DetectStage(topo(max_buckets_per_histogram=k - 1))
        reason = (rf"message over a cap: a histogram point of {k} buckets, more than "
                  rf"ingest.max_buckets_per_histogram \({k - 1}\)")
    with pytest.raises(DecodeError, match=reason):
        stage.process(payload)


@pytest.mark.parametrize("encoding", ["json", "proto"])
def test_a_skipped_histogram_point_over_the_cap_refuses_the_message(encoding):
    """A point flagged as holding no value is not decoded, but its buckets count."""
    obj = histogram(65)
    obj["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["histogram"]["dataPoints"][0]["flags"] = 1
    with pytest.raises(DecodeError, match=r"a histogram point of 65 buckets"):
        DetectStage(topo(max_buckets_per_histogram=64)).process(encode(obj, "metrics", encoding))


@pytest.mark.parametrize("encoding", ["json", "proto"])
def test_points_of_an_unknown_service_count_towards_the_cap(encoding):
    obj = gauges(60)
    other = gauges(60)["resourceMetrics"][0]
    other["resource"] = {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]}
    obj["resourceMetrics"].insert(0, other)
    with pytest.raises(DecodeError, match=r"120 data points, more than ingest.max_series_per_message \(100\)"):
        DetectStage(topo(max_series_per_message=100)).process(encode(obj, "metrics", encoding))


@pytest.mark.parametrize("extra", [
    {"quantileValues": [{}] * 65}, {"positive": {"bucketCounts": ["0"] * 65}},
    {"negative": {"bucketCounts": ["0"] * 65}},
    {"bucketCounts": None, "explicitBounds": [float(i) for i in range(65)]}])  # no counts: the fast path takes it
def test_what_a_json_histogram_point_holds_beside_its_buckets_counts_too(extra):
    """OTLP/JSON: check_json reads these lists of a histogram point; the decoder's count does too."""
    obj = histogram(3)
    obj["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["histogram"]["dataPoints"][0].update(extra)
    with pytest.raises(DecodeError, match=r"a histogram point of 65 buckets"):
        DetectStage(topo(max_buckets_per_histogram=64)).process(encode(obj, "metrics", "json"))


@pytest.mark.parametrize("first, second", [("gauge", "sum"), ("gauge", "histogram"), ("gauge", "exponentialHistogram"),
                                           ("gauge", "summary"), ("sum", "histogram"), ("sum", "summary"),
                                           ("histogram", "exponentialHistogram"), ("histogram", "summary")])
def test_every_kind_of_a_json_metric_counts(first, second):
    """A metric holding two kinds is decoded as its first; check_json counted both, and so does the decoder."""
    obj = gauges(60)
    metric = obj["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
    points = metric.pop("gauge")["dataPoints"]
    if first == "sum":
        metric["sum"] = {"aggregationTemporality": 2, "dataPoints": points}
    elif first == "histogram":
        metric["histogram"] = {"aggregationTemporality": 2, "dataPoints": [
            {"timeUnixNano": T_NS, "count": "1", "sum": 1.0, "attributes": p["attributes"]} for p in points]}
    else:
        metric["gauge"] = {"dataPoints": points}
    metric[second] = {"dataPoints": [{}] * 41}
    stage = DetectStage(topo(max_series_per_message=100))
    with pytest.raises(DecodeError, match=r"101 data points, more than ingest.max_series_per_message \(100\)"):
        stage.process(encode(obj, "metrics", "json"))
    obj["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0][second] = {"dataPoints": [{}] * 40}
    stage.process(encode(obj, "metrics", "json"))  # at the cap


@pytest.mark.parametrize("enc", ["json", "proto"])
def test_the_cap_reason_stands_whatever_the_decoder_meets_first(monkeypatch, enc):
    """The caps decide as if counted before decoding: an error the decoder meets on the way to
    the metric over a cap gives way to the cap's reason."""
    from streams.ingest import otlp

    obj = gauges(1)
    obj["resourceMetrics"][0]["scopeMetrics"][0]["metrics"].append(histogram(65)["resourceMetrics"][0][
        "scopeMetrics"][0]["metrics"][0])

    def broken(*args, **kwargs):
        raise RuntimeError("a decoder bug")

    if enc == "json":
        monkeypatch.setattr(otlp, "_fast_metric", broken)
    else:
        monkeypatch.setattr(otlp_proto, "_number_fast", broken)
    stage = DetectStage(topo(max_buckets_per_histogram=64))
    with pytest.raises(DecodeError, match=r"a histogram point of 65 buckets"):
        stage.process(encode(obj, "metrics", enc))
    obj["resourceMetrics"][0]["scopeMetrics"][0]["metrics"].pop()  # within the caps: the bug's own error
    with pytest.raises(DecodeError, match=r"internal decoder error: RuntimeError"):
        stage.process(encode(obj, "metrics", enc))
