"""Both encodings of the same request give the same output: OTLP protobuf and OTLP/JSON.

Requests are drawn as protobuf messages over the whole range of each field's type (zero and
absent fields, 64-bit edge values, NaN, infinities and -0.0, times outside 2000..2100, every
AnyValue kind, every metric type and temporality, monotonic and not, histograms with odd bucket
shapes, unsupported kinds, empty names and keys, PII in names and attributes). The JSON side is
written by protobuf's own ``json_format`` (not by the code under test) with the two rules that
make it OTLP/JSON as the Collector writes it: enums as integers and ids as hex; and
``KeyValue.key`` and ``Metric.name`` written even when empty, as the Collector writes them.

For each request both encodings are decoded and everything compared: each sample's ``repr``,
reject reasons in order, and for a message that fails as a whole the exception's text (the
dead-letter reason). A sequence of metric requests is also pushed through a normalizer per
encoding, so counter resets, delta sums and histograms derive the same points from both.
"""
from __future__ import annotations

import base64

import orjson
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from detectors.normalize import Normalizer
from streams.ingest import DecodeError, decode_logs, decode_metrics, decode_traces, otlp_proto
from streams.ingest.redact import Redactor

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN = frozenset({"checkout", "payments", "api"})
NOW_NS = 1_767_225_600_000_000_000
U64 = 2**64 - 1
REDACTORS = [Redactor(), Redactor([])]

PII = ["jane.doe@example.com", "4111 1111 1111 1111", "Bearer abc.def-123", "10.0.0.7"]
TEXT = st.sampled_from(["a1", "/pay", "GET", "ok", ""] + PII) | st.text(max_size=5)
KEYS = st.sampled_from(["host.name", "route", "user", "service.name", "k", ""]) | st.text(max_size=3)
SERVICES = st.sampled_from(["checkout", "checkout", "payments", "api", "shop", "jane@example.com", "", None])
TIMES = st.sampled_from([NOW_NS, NOW_NS + 10**9, NOW_NS + 2 * 10**9, 0, 946_684_800 * 10**9, 4_102_444_800 * 10**9,
                         4_102_444_800 * 10**9 + 1, NOW_NS // 10**6, U64]) | st.integers(0, U64)
DOUBLES = st.sampled_from([0.0, -0.0, 1.5, 12.0, -3.5, 1e300, 1e301, float("nan"), float("inf"), float("-inf")]) | \
    st.floats(allow_nan=True)
CLEAN = st.shared(st.integers(0, 3), key="clean").map(lambda n: n < 2)


def pick(good, anything):
    """``good`` (values the fast paths take) in clean examples, half of them; ``anything`` in the
    rest. A clean example runs the fast paths end to end; a noisy one, the careful paths."""
    return CLEAN.flatmap(lambda clean: good if clean else anything)


OFTEN_GOOD = pick(st.sampled_from([NOW_NS, NOW_NS + 10**9, NOW_NS + 3 * 10**9]),
                  st.sampled_from([NOW_NS, NOW_NS + 10**9]) | TIMES)
INT64 = st.sampled_from([0, 7, -12, 2**63 - 1, -(2**63), 10**15]) | st.integers(-(2**63), 2**63 - 1)


def any_value(depth: int = 0):
    leaves = st.one_of(
        TEXT.map(lambda s: common_pb2.AnyValue(string_value=s)),
        st.booleans().map(lambda b: common_pb2.AnyValue(bool_value=b)),
        INT64.map(lambda n: common_pb2.AnyValue(int_value=n)),
        DOUBLES.map(lambda d: common_pb2.AnyValue(double_value=d)),
        st.binary(max_size=4).map(lambda b: common_pb2.AnyValue(bytes_value=b)),
        st.just(common_pb2.AnyValue()),
    )
    if depth >= 2:
        return leaves
    return leaves | st.lists(any_value(depth + 1), max_size=3).map(
        lambda vs: common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=vs))) | \
        st.lists(key_value(depth + 1), max_size=3).map(
            lambda kvs: common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=kvs)))


def key_value(depth: int = 0):
    if depth == 0:  # mostly string values, as series labels are; the fast paths cache those
        # From a few keys and values: series repeat across metrics and messages, as they do.
        return pick(st.builds(lambda k, v: common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v)),
                              st.sampled_from(["route", "user", "k"]), st.sampled_from(["/pay", "GET", PII[0]])),
                    _key_value(depth)) | _key_value(depth)
    return _key_value(depth)


def _key_value(depth: int):
    return st.builds(lambda k, v, has: common_pb2.KeyValue(key=k, value=v) if has else common_pb2.KeyValue(key=k),
                     KEYS, any_value(depth), st.integers(0, 9).map(lambda r: r > 0))


def attributes():
    return st.lists(key_value(), max_size=3)


def resource_attributes():
    return st.builds(lambda svc, rest: ([common_pb2.KeyValue(key="service.name",
                                                             value=common_pb2.AnyValue(string_value=svc))]
                                        if svc is not None else []) + rest,
                     SERVICES, st.lists(key_value(), max_size=2))


@st.composite
def number_point(draw, time=OFTEN_GOOD):
    dp = metrics_pb2.NumberDataPoint(time_unix_nano=draw(time), start_time_unix_nano=draw(
        st.sampled_from([0, NOW_NS - 10**9]) | TIMES), flags=draw(pick(st.just(0), st.sampled_from([0, 0, 0, 1, 2]))))
    value = draw(pick(st.sampled_from(["double", "int"]), st.sampled_from(["double", "int", "none"])))
    if value == "double":
        dp.as_double = draw(pick(st.floats(-1e6, 1e6) | st.sampled_from([0.0, -0.0]), DOUBLES))
    elif value == "int":
        dp.as_int = draw(INT64)
    dp.attributes.extend(draw(attributes()) if draw(st.integers(0, 2)) == 0 else [])
    return dp


@st.composite
def histogram_point(draw, time=OFTEN_GOOD):
    dp = metrics_pb2.HistogramDataPoint(time_unix_nano=draw(time), start_time_unix_nano=draw(
        st.sampled_from([0, NOW_NS - 10**9]) | TIMES), count=draw(st.sampled_from([0, 5, 31425989, U64])),
        flags=draw(st.sampled_from([0, 0, 1])))
    if draw(st.booleans()):
        dp.sum = draw(pick(st.floats(0, 1e9), DOUBLES))
    shape = draw(pick(st.integers(0, 1), st.integers(0, 4)))
    bounds, buckets = [0.005, 0.01, 0.025], [2614, 307859, 10157247, 0]
    if shape == 1:
        bounds, buckets = [], []
    elif shape == 2:
        buckets = buckets[:-1]
    elif shape == 3:
        bounds = draw(st.lists(DOUBLES, max_size=3))
        buckets = draw(st.lists(st.sampled_from([0, 1, U64]), max_size=4))
    dp.explicit_bounds.extend(bounds)
    dp.bucket_counts.extend(buckets)
    dp.attributes.extend(draw(attributes()) if draw(st.integers(0, 2)) == 0 else [])
    return dp


NAMES = st.sampled_from(["http.server.requests", "process.cpu.utilization", "user.jane.doe@example.com.logins",
                         "m", ""])
TEMPORALITY = pick(st.sampled_from([1, 2]), st.sampled_from([1, 2, 2, 0, 7]))


@st.composite
def metric(draw, time=OFTEN_GOOD):
    m = metrics_pb2.Metric(name=draw(pick(NAMES.filter(bool), NAMES)))
    kind = draw(pick(st.sampled_from(["gauge", "sum", "histogram"]),
                     st.sampled_from(["gauge", "sum", "sum", "histogram", "exponential_histogram", "summary", "none"])))
    if kind == "gauge":
        m.gauge.data_points.extend(draw(st.lists(number_point(time), max_size=3)))
    elif kind == "sum":
        m.sum.aggregation_temporality = draw(TEMPORALITY)
        m.sum.is_monotonic = draw(st.booleans())
        m.sum.data_points.extend(draw(st.lists(number_point(time), max_size=3)))
    elif kind == "histogram":
        m.histogram.aggregation_temporality = draw(TEMPORALITY)
        m.histogram.data_points.extend(draw(st.lists(histogram_point(time), max_size=3)))
    elif kind == "exponential_histogram":
        m.exponential_histogram.SetInParent()
    elif kind == "summary":
        m.summary.SetInParent()
    return m


@st.composite
def metrics_request(draw, time=OFTEN_GOOD):
    req = ExportMetricsServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        rm = req.resource_metrics.add()
        if draw(st.integers(0, 5)):
            rm.resource.attributes.extend(draw(resource_attributes()))
        for _ in range(draw(st.integers(0, 2))):
            rm.scope_metrics.add().metrics.extend(draw(st.lists(metric(time), max_size=4)))
    return req


@st.composite
def logs_request(draw):
    req = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        rl = req.resource_logs.add()
        if draw(st.integers(0, 5)):
            rl.resource.attributes.extend(draw(resource_attributes()))
        for _ in range(draw(st.integers(0, 2))):
            sl = rl.scope_logs.add()
            for _ in range(draw(st.integers(0, 3))):
                r = sl.log_records.add(time_unix_nano=draw(TIMES), observed_time_unix_nano=draw(TIMES),
                                       severity_number=draw(st.sampled_from([0, 9, 17, 24, 25])),
                                       severity_text=draw(st.sampled_from(["", "ERROR", "warn", "x"])))
                if draw(st.integers(0, 4)):
                    r.body.CopyFrom(draw(any_value()))
                r.attributes.extend(draw(attributes()))
    return req


IDS = st.sampled_from([b"", bytes(range(8, 16)), bytes(range(16)), b"\xab" * 8]) | st.binary(max_size=40)


@st.composite
def traces_request(draw):
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        rs = req.resource_spans.add()
        if draw(st.integers(0, 5)):
            rs.resource.attributes.extend(draw(resource_attributes()))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            for _ in range(draw(st.integers(0, 3))):
                start = draw(OFTEN_GOOD)
                sp = ss.spans.add(trace_id=draw(IDS), span_id=draw(IDS), parent_span_id=draw(IDS), name=draw(TEXT),
                                  kind=draw(st.sampled_from([0, 1, 2, 3, 5, 6])), start_time_unix_nano=start,
                                  end_time_unix_nano=draw(st.sampled_from([start, min(U64, start + 250_000_000)])
                                                          | TIMES))
                if draw(st.booleans()):
                    sp.status.code = draw(st.sampled_from([0, 1, 2, 3]))
    return req


# --- the JSON encoding of a request, by protobuf's own json_format ----------------------------

def _hex_ids(node: object) -> object:
    """OTLP/JSON writes trace and span ids as hex, where proto3 JSON writes base64."""
    if type(node) is dict:
        return {k: base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else _hex_ids(v)
                for k, v in node.items()}
    if type(node) is list:
        return [_hex_ids(v) for v in node]
    return node


def _fill_keys_and_names(node: object, parent: str = "") -> None:
    """``KeyValue.key`` and ``Metric.name`` written even when empty, as the Collector writes them."""
    if type(node) is dict:
        for k, v in node.items():
            if type(v) is list and (k == "attributes" or (k == "values" and parent == "kvlistValue")):
                for kv in v:
                    kv.setdefault("key", "")
            if k == "metrics" and type(v) is list:
                for m in v:
                    m.setdefault("name", "")
            _fill_keys_and_names(v, k)
    elif type(node) is list:
        for v in node:
            _fill_keys_and_names(v, parent)


def as_json(req, signal: str) -> bytes:
    obj = json_format.MessageToDict(req, use_integers_for_enums=True)
    _fill_keys_and_names(obj)
    return orjson.dumps(_hex_ids(obj) if signal == "traces" else obj)


def outcome(decode, payload: bytes, **kw):
    try:
        d = decode(payload, **kw)
    except DecodeError as exc:
        return ("error", type(exc).__name__, str(exc))
    if isinstance(d, tuple):
        records, rejects = d
        return ("ok", [repr(r) for r in records], rejects)
    return ("ok", d.fmt, [repr(s) for s in d.samples], d.rejects)


def both(decode, req, signal, **kw):
    proto = req.SerializeToString()
    if req.ListFields():  # an empty request is zero bytes: nothing to tell apart
        assert otlp_proto.is_protobuf(proto)
    else:
        proto = as_json(req, signal)  # the empty request has no protobuf bytes to send; JSON does
    return outcome(decode, proto, **kw), outcome(decode, as_json(req, signal), **kw)


@SETTINGS
@given(metrics_request(), st.sampled_from([None, KNOWN]), st.sampled_from([frozenset(), frozenset({"route", "k"})]),
       st.sampled_from(REDACTORS))
def test_metrics_both_encodings_give_the_same_output(req, known, keep, redactor):
    got, want = both(decode_metrics, req, "metrics", known_services=known, keep_labels=keep, redactor=redactor)
    assert got == want


@SETTINGS
@given(logs_request(), st.sampled_from([None, KNOWN]), st.sampled_from(REDACTORS))
def test_logs_both_encodings_give_the_same_output(req, known, redactor):
    got, want = both(decode_logs, req, "logs", known_services=known, redactor=redactor)
    assert got == want


@SETTINGS
@given(traces_request(), st.sampled_from([None, KNOWN]), st.sampled_from(REDACTORS))
def test_traces_both_encodings_give_the_same_output(req, known, redactor):
    got, want = both(decode_traces, req, "traces", known_services=known, redactor=redactor)
    assert got == want


STEADY = st.sampled_from([NOW_NS, NOW_NS + 10**9, NOW_NS + 2 * 10**9, NOW_NS + 3 * 10**9])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(metrics_request(STEADY), min_size=2, max_size=5))
def test_a_sequence_normalizes_the_same_from_both_encodings(requests):
    """Counter resets, delta and cumulative sums and histograms derive their points across
    messages: from both encodings, the same points."""
    out = []
    for encode in (lambda r: r.SerializeToString() if r.ListFields() else as_json(r, "metrics"),
                   lambda r: as_json(r, "metrics")):
        norm = Normalizer()
        points = []
        for req in requests:
            try:
                rows = decode_metrics(encode(req), known_services=None).rows
            except DecodeError as exc:
                points.append(str(exc))
                continue
            keys, times, values = norm.normalize_rows(rows)
            points.append([(k.id, t, repr(v)) for k, t, v in zip(keys, times, values)])
        out.append(points)
    assert out[0] == out[1]


@given(st.binary(max_size=200))
def test_bytes_after_a_newline_never_raise_anything_but_decode_error(tail):
    payload = b"\n" + tail
    for decode in (decode_metrics, decode_logs, decode_traces):
        try:
            decode(payload, known_services=None)
        except DecodeError as exc:
            assert str(exc)
