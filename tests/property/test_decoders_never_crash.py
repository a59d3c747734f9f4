"""Decoders never crash: on any bytes and any JSON-like structure they return or raise DecodeError.

``decode_metrics``/``decode_logs`` wrap every unexpected exception in a DecodeError saying
"internal decoder error", so the properties also insist that no such error shows up: a bug must
fail here, not hide in the dead-letter topic. Whatever is returned is usable: finite values and
event times within 2000..2100.
"""
from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.normalize import Normalizer
from streams.ingest import T_MAX, T_MIN, DecodeError, decode_logs, decode_metrics

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN = frozenset({"checkout", "payments", "api"})

# --- strategies -------------------------------------------------------------------------------

WEIRD_STRINGS = st.sampled_from([
    "", "NaN", "nan", "Infinity", "-Infinity", "+Inf", "-Inf", "1e400", "-1e400", "9" * 400, "-" + "9" * 400,
    "1e3", "0x10", " 12 ", "1_000", "١٢٣", "1700000000000000000", "1700000000", "2026-08-20T12:00:00Z",
    "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "2026-08-20", "checkout", "service.name",
    "\x00", "\ud7ff",
])
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64)
           | st.integers(min_value=-(10**30), max_value=10**30)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12) | WEIRD_STRINGS)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8) | st.sampled_from(
                        ["resourceMetrics", "resourceLogs", "labels", "value", "points", "schema_version",
                         "timeUnixNano", "asInt", "asDouble", "stringValue", "intValue", "arrayValue",
                         "kvlistValue", "values", "key"]), inner, max_size=4), max_leaves=20)

IN_RANGE_S = st.integers(min_value=int(T_MIN), max_value=int(T_MAX))
INT64 = st.integers(min_value=0, max_value=2**64 - 1)


def int64(strategy=INT64):
    """An int64 as proto3 JSON sends it: a decimal string, or a number from lenient writers."""
    return strategy.flatmap(lambda n: st.sampled_from([str(n), n]))


TIME_NS = int64(IN_RANGE_S.map(lambda s: s * 10**9) | INT64)
NUMBER = st.floats(allow_nan=False, allow_infinity=False) | WEIRD_STRINGS | st.integers(-(2**63), 2**63)


@st.composite
def any_value(draw, depth=0):
    kinds = ["stringValue", "boolValue", "intValue", "doubleValue"] + (["arrayValue", "kvlistValue"] if depth < 2 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "stringValue":
        return {kind: draw(st.text(max_size=8))}
    if kind == "boolValue":
        return {kind: draw(st.booleans())}
    if kind == "intValue":
        return {kind: draw(int64(st.integers(-(2**63), 2**64)) | WEIRD_STRINGS)}
    if kind == "doubleValue":
        return {kind: draw(NUMBER)}
    values = draw(st.lists(any_value(depth + 1), max_size=3))
    if kind == "kvlistValue":
        values = [{"key": draw(st.text(max_size=5)), "value": v} for v in values]
    return {kind: {"values": values}}


def attributes(service: bool):
    attrs = st.lists(st.builds(lambda k, v: {"key": k, "value": v},
                               st.sampled_from(["host.name", "k8s.pod.name", "route", "service.name"]), any_value()),
                     max_size=3)
    if not service:
        return attrs
    return st.tuples(st.sampled_from(sorted(KNOWN) + ["chekout"]), attrs).map(
        lambda sa: [{"key": "service.name", "value": {"stringValue": sa[0]}}, *sa[1]])


@st.composite
def number_point(draw):
    p = {"timeUnixNano": draw(TIME_NS)}
    if draw(st.booleans()):
        p["startTimeUnixNano"] = draw(TIME_NS)
    p["asDouble" if draw(st.booleans()) else "asInt"] = draw(NUMBER)
    if draw(st.booleans()):
        p["attributes"] = draw(attributes(False))
    if draw(st.booleans()):
        p["flags"] = draw(st.integers(0, 3))
    return p


@st.composite
def histogram_point(draw):
    n = draw(st.integers(0, 4))
    bounds = draw(st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n, unique=True).map(sorted))
    p = {"timeUnixNano": draw(TIME_NS), "count": draw(int64(st.integers(0, 10**6))),
         "bucketCounts": draw(st.lists(int64(st.integers(0, 10**6)), min_size=n + 1, max_size=n + 1)),
         "explicitBounds": bounds}
    if draw(st.booleans()):
        p["sum"] = draw(NUMBER)
    if draw(st.booleans()):
        p["startTimeUnixNano"] = draw(TIME_NS)
    return p


@st.composite
def metric(draw):
    name = draw(st.sampled_from(["cpu.util", "http.requests", "http.server.duration", ""]))
    kind = draw(st.sampled_from(["gauge", "sum", "histogram", "summary"]))
    if kind == "histogram":
        data = {"dataPoints": draw(st.lists(histogram_point(), max_size=3))}
    else:
        data = {"dataPoints": draw(st.lists(number_point(), max_size=3))}
    if kind in ("sum", "histogram"):
        data["aggregationTemporality"] = draw(st.sampled_from([0, 1, 2, 3, "AGGREGATION_TEMPORALITY_DELTA"]))
    if kind == "sum":
        data["isMonotonic"] = draw(st.booleans())
    return {"name": name, "unit": "1", kind: data}


@st.composite
def otlp_metrics(draw):
    return {"resourceMetrics": draw(st.lists(st.fixed_dictionaries({
        "resource": st.fixed_dictionaries({"attributes": attributes(True)}),
        "scopeMetrics": st.lists(st.fixed_dictionaries({
            "scope": st.just({"name": "my.lib", "version": "1.0.0"}),
            "metrics": st.lists(metric(), max_size=3)}), max_size=2)}), min_size=1, max_size=2))}


@st.composite
def otlp_logs(draw):
    record = st.fixed_dictionaries({"timeUnixNano": TIME_NS}, optional={
        "observedTimeUnixNano": TIME_NS, "severityNumber": st.integers(-1, 30), "severityText": WEIRD_STRINGS
        | st.sampled_from(["ERROR", "warn", "Info"]), "body": any_value(), "attributes": attributes(False)})
    return {"resourceLogs": draw(st.lists(st.fixed_dictionaries({
        "resource": st.fixed_dictionaries({"attributes": attributes(True)}),
        "scopeLogs": st.lists(st.fixed_dictionaries({"logRecords": st.lists(record, max_size=3)}), max_size=2)}),
        min_size=1, max_size=2))}


PROMETHEUS = st.builds(
    lambda name, value, ts, labels: {"timestamp": ts, "value": value, "name": name,
                                     "labels": {"__name__": name, **labels}},
    st.sampled_from(["up", "http_requests_total", ""]), NUMBER,
    st.sampled_from(["2026-08-20T12:00:00Z", "2026-08-20T12:00:00+02:00"]) | WEIRD_STRINGS,
    st.dictionaries(st.sampled_from(["job", "service", "instance"]), st.sampled_from(sorted(KNOWN)) | st.text(max_size=5),
                    max_size=3))

NATIVE = st.builds(
    lambda service, labels, points: {"schema_version": 1, "service": service, "labels": labels, "points": points},
    st.sampled_from(sorted(KNOWN)), st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
    st.lists(st.one_of(
        st.tuples(st.sampled_from(["cpu", ""]), IN_RANGE_S | NUMBER, NUMBER).map(list),
        st.fixed_dictionaries({"metric": st.sampled_from(["c", "g"]), "t": IN_RANGE_S | NUMBER, "value": NUMBER},
                              optional={"kind": st.sampled_from(["gauge", "counter", "histogram"]),
                                        "labels": st.dictionaries(st.text(max_size=3), st.text(max_size=3),
                                                                  max_size=2)})), max_size=4))


def _slots(node, out):
    """Every (container, key) in a parsed JSON document, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append((node, k))
        _slots(v, out)
    return out


@st.composite
def mutated(draw, base):
    """A well-formed document with one to three values replaced by arbitrary JSON."""
    doc = draw(base)
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(doc, [])
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        container[key] = draw(JSON)
    return doc


# --- checks ---------------------------------------------------------------------------------

def _in_range(t: float) -> bool:
    return T_MIN <= t <= T_MAX


def check_metrics(payload: bytes, **kw) -> None:
    try:
        d = decode_metrics(payload, known_services=kw.pop("known", None), **kw)
    except DecodeError as exc:
        assert "internal decoder error" not in str(exc), str(exc)
        return
    assert d.samples or not d.rejects
    for s in d.samples:
        assert math.isfinite(s.value), s
        assert _in_range(s.t), s
        assert s.start_t is None or _in_range(s.start_t), s
        if s.kind == "histogram":
            assert math.isfinite(s.count) and s.count >= 0, s
            assert math.isnan(s.total) or math.isfinite(s.total), s
            assert all(math.isfinite(x) for x in s.bounds + s.buckets), s
            assert not s.buckets or len(s.buckets) == len(s.bounds) + 1, s
    for p in Normalizer().normalize(d.samples):
        assert math.isfinite(p.value) and _in_range(p.t), p


def check_logs(payload: bytes, known=None) -> None:
    try:
        records, _ = decode_logs(payload, known_services=known)
    except DecodeError as exc:
        assert "internal decoder error" not in str(exc), str(exc)
        return
    for r in records:
        assert _in_range(r.t), r
        assert isinstance(r.body, str) and 0 <= r.severity <= 24, r


def enc(doc) -> bytes:
    return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")


# --- properties -------------------------------------------------------------------------------

@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes(payload):
    check_metrics(payload)
    check_logs(payload)


@SETTINGS
@given(JSON)
def test_arbitrary_json(doc):
    check_metrics(enc(doc))
    check_logs(enc(doc))


@SETTINGS
@given(otlp_metrics(), st.booleans())
def test_well_formed_otlp_metrics(doc, known):
    check_metrics(enc(doc), known=KNOWN if known else None)


@SETTINGS
@given(mutated(otlp_metrics()), st.booleans())
def test_otlp_metrics_with_wrong_types_at_random_places(doc, known):
    check_metrics(enc(doc), known=KNOWN if known else None, keep_labels=frozenset({"host.name"}))


@SETTINGS
@given(otlp_logs() | mutated(otlp_logs()), st.booleans())
def test_otlp_logs_well_formed_and_with_wrong_types(doc, known):
    check_logs(enc(doc), known=KNOWN if known else None)


@SETTINGS
@given(PROMETHEUS | mutated(PROMETHEUS), st.sampled_from(["service", "app"]))
def test_prometheus_samples(doc, service_label):
    check_metrics(enc(doc), service_label=service_label)


@SETTINGS
@given(NATIVE | mutated(NATIVE))
def test_native_batches(doc):
    check_metrics(enc(doc))


def test_deep_nesting_is_a_decode_error():
    deep = b'{"resourceMetrics":[{"resource":{"attributes":[{"key":"k","value":' + \
        b'{"arrayValue":{"values":[' * 300 + b']}}' * 300 + b'}]}}]}'
    # Deeper than orjson will serialize (254 levels) but not than it parses (1024).
    for decode, payload in [(lambda b: decode_metrics(b, known_services=None), deep),
                            (lambda b: decode_logs(b, known_services=None),
                             deep.replace(b"resourceMetrics", b"resourceLogs").replace(b"scopeMetrics", b"scopeLogs"))]:
        try:
            decode(payload)
        except DecodeError as exc:
            assert str(exc).endswith("resource.attributes[0].value: value nested too deeply"), str(exc)
        else:
            raise AssertionError("expected a DecodeError")
