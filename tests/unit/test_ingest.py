"""Wire decoders and normalization: OTLP/JSON, prometheus-kafka-adapter, native batches, OTLP logs.

OTLP documents are built by hand the way the collector's ``otlp_json`` encoding writes them:
lowerCamelCase keys, enums as integers, 64-bit integers as decimal strings (some writers send
numbers, so both are exercised).
"""
from __future__ import annotations

import json
import math

import pytest

from detectors.normalize import Normalizer, Sample
from detectors.records import SeriesKey
from streams.ingest import DecodeError, decode_logs, decode_metrics

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z, in seconds
NS = 10**9
BOUNDS = [0.1, 0.25, 0.5, 1.0]


# --- OTLP/JSON builders ---------------------------------------------------------------------

def ns(t: float, as_str: bool = True) -> str | int:
    n = int(round(t * NS))
    return str(n) if as_str else n


def kv(key: str, value: str) -> dict:
    return {"key": key, "value": {"stringValue": value}}


def otlp(*metrics: dict, service: str | None = "checkout", resource: list | None = None) -> dict:
    attrs = ([kv("service.name", service)] if service is not None else []) + (resource or [])
    return {"resourceMetrics": [{
        "resource": {"attributes": attrs},
        "scopeMetrics": [{"scope": {"name": "my.lib", "version": "1.0.0"}, "metrics": list(metrics)}],
    }]}


def gauge(name: str, *points: dict) -> dict:
    return {"name": name, "unit": "1", "gauge": {"dataPoints": list(points)}}


def sum_(name: str, *points: dict, temporality: int = 2, monotonic: bool = True) -> dict:
    return {"name": name, "unit": "1",
            "sum": {"aggregationTemporality": temporality, "isMonotonic": monotonic, "dataPoints": list(points)}}


def histogram(name: str, *points: dict, temporality: int = 2) -> dict:
    return {"name": name, "unit": "s", "histogram": {"aggregationTemporality": temporality, "dataPoints": list(points)}}


def dp(t: float, *, double: float | str | None = None, int_: int | str | None = None, start: float | None = None,
       attrs: list | None = None, strings: bool = True, **extra) -> dict:
    p: dict = {"timeUnixNano": ns(t, strings)}
    if start is not None:
        p["startTimeUnixNano"] = ns(start, strings)
    if double is not None:
        p["asDouble"] = double
    if int_ is not None:
        p["asInt"] = str(int_) if strings and isinstance(int_, int) else int_
    if attrs:
        p["attributes"] = attrs
    p.update(extra)
    return p


def hdp(t: float, count: int, total: float | None, buckets: list[int], *, start: float | None = None,
        strings: bool = True) -> dict:
    p: dict = {"timeUnixNano": ns(t, strings), "count": str(count) if strings else count,
               "bucketCounts": [str(b) if strings else b for b in buckets], "explicitBounds": BOUNDS}
    if total is not None:
        p["sum"] = total
    if start is not None:
        p["startTimeUnixNano"] = ns(start, strings)
    return p


def enc(doc: object) -> bytes:
    return json.dumps(doc).encode()


def decode(doc: object, **kw):
    kw.setdefault("known_services", None)
    return decode_metrics(doc if isinstance(doc, bytes) else enc(doc), **kw)


def run(*docs: object, normalizer: Normalizer | None = None, **kw) -> list[list[tuple[str, float, float]]]:
    """Decode each message and normalize it; per message, the points as (series id, t, value)."""
    n = normalizer or Normalizer()
    out = []
    for doc in docs:
        points = n.normalize(decode(doc, **kw).samples)
        out.append([(p.series.id, p.t, p.value) for p in points])
    return out


# --- OTLP decoding ----------------------------------------------------------------------------

def test_otlp_gauge_takes_service_from_resource_and_the_other_attributes_as_labels():
    doc = otlp(gauge("cpu.util", dp(T0, double=0.93, attrs=[kv("host.name", "node-1")])),
               resource=[kv("deployment.environment", "prod")])
    d = decode(doc)
    assert d.fmt == "otlp" and d.rejects == []
    assert d.samples == [Sample(SeriesKey("checkout", "cpu.util",
                                          (("deployment.environment", "prod"), ("host.name", "node-1"))),
                                float(T0), "gauge", 0.93)]


def test_otlp_point_attributes_win_over_resource_attributes():
    doc = otlp(gauge("cpu.util", dp(T0, double=1.0, attrs=[kv("host.name", "point")])),
               resource=[kv("host.name", "resource")])
    assert decode(doc).samples[0].series.labels == (("host.name", "point"),)


def test_otlp_non_string_attribute_values_are_rendered_as_json():
    attrs = [{"key": "port", "value": {"intValue": "8080"}}, {"key": "tls", "value": {"boolValue": True}},
             {"key": "ratio", "value": {"doubleValue": 0.5}},
             {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": 2}]}}}]
    labels = dict(decode(otlp(gauge("g", dp(T0, double=1.0, attrs=attrs)))).samples[0].series.labels)
    assert labels == {"port": "8080", "tls": "true", "ratio": "0.5", "tags": '["a",2]'}


@pytest.mark.parametrize("strings", [True, False], ids=["int64-as-string", "int64-as-number"])
@pytest.mark.parametrize("build, want", [
    (lambda s: gauge("g", dp(T0, int_=42, strings=s)), ("gauge", 42.0, False, "cumulative", None)),
    (lambda s: sum_("s", dp(T0, int_=1234, start=T0 - 60, strings=s)),
     ("sum", 1234.0, True, "cumulative", float(T0 - 60))),
    (lambda s: sum_("s", dp(T0, int_=5, start=T0 - 10, strings=s), temporality=1),
     ("sum", 5.0, True, "delta", float(T0 - 10))),
    (lambda s: sum_("s", dp(T0, double=-3.5, strings=s), monotonic=False), ("sum", -3.5, False, "cumulative", None)),
], ids=["gauge", "cumulative-sum", "delta-sum", "non-monotonic-sum"])
def test_otlp_number_points(build, want, strings):
    doc = otlp(build(strings))
    point = json.dumps(doc)
    assert ('"timeUnixNano": "' in point) is strings  # the builder really sends what the id says
    [s] = decode(doc).samples
    assert s.t == float(T0)
    assert (s.kind, s.value, s.monotonic, s.temporality, s.start_t) == want


@pytest.mark.parametrize("temporality, name", [(1, "delta"), (2, "cumulative")])
@pytest.mark.parametrize("strings", [True, False])
def test_otlp_histogram_point(temporality, name, strings):
    doc = otlp(histogram("http.server.duration", hdp(T0, 100, 30.0, [60, 20, 10, 10, 0], start=T0 - 60,
                                                     strings=strings), temporality=temporality))
    [s] = decode(doc).samples
    assert (s.kind, s.temporality, s.t, s.start_t) == ("histogram", name, float(T0), float(T0 - 60))
    assert (s.count, s.total, s.bounds, s.buckets) == (100.0, 30.0, tuple(BOUNDS), (60.0, 20.0, 10.0, 10.0, 0.0))


def test_otlp_histogram_without_sum_has_nan_total():
    [s] = decode(otlp(histogram("h", hdp(T0, 4, None, [1, 1, 1, 1, 0])))).samples
    assert math.isnan(s.total) and s.count == 4.0


def test_otlp_no_recorded_value_points_are_skipped_silently():
    doc = otlp(gauge("g", dp(T0, double=1.0, flags=1), dp(T0 + 10, double=2.0)))
    d = decode(doc)
    assert [(s.t, s.value) for s in d.samples] == [(T0 + 10.0, 2.0)] and d.rejects == []


def test_otlp_keep_labels_bounds_cardinality():
    doc = otlp(gauge("g", dp(T0, double=1.0, attrs=[kv("host.name", "a"), kv("request.id", "r-123")])))
    [s] = decode(doc, keep_labels=frozenset({"host.name"})).samples
    assert s.series.labels == (("host.name", "a"),)


def test_otlp_bad_points_are_dropped_with_a_reason_and_the_rest_kept():
    doc = otlp(gauge("g", dp(T0, double="NaN"), dp(T0 + 1, double=1.0), dp(T0 + 2, double="Infinity")),
               {"name": "e", "exponentialHistogram": {"dataPoints": []}})
    d = decode(doc)
    assert [s.value for s in d.samples] == [1.0]
    assert d.rejects == ["g: non-finite value (NaN)", "g: non-finite value (+Inf)", "e: exponentialHistogram not supported"]


def test_otlp_points_of_unknown_services_are_rejected_with_a_hint():
    known = frozenset({"checkout", "payments"})
    doc = {"resourceMetrics": [otlp(gauge("g", dp(T0, double=1.0)), service="chekout")["resourceMetrics"][0],
                               otlp(gauge("g", dp(T0, double=2.0)), service="payments")["resourceMetrics"][0]]}
    d = decode(doc, known_services=known)
    assert [s.series.service for s in d.samples] == ["payments"]
    assert d.rejects == ["unknown service 'chekout' (did you mean 'checkout'?)"]


# --- normalization of OTLP ------------------------------------------------------------------

def rate(t: float, v: float, **kw) -> dict:
    return otlp(sum_("http.requests", dp(t, int_=v, **kw)))


def test_cumulative_sum_becomes_a_per_second_rate():
    out = run(rate(T0, 1000, start=T0 - 60), rate(T0 + 60, 1600, start=T0 - 60), rate(T0 + 70, 1650, start=T0 - 60))
    assert out == [[], [("checkout/http.requests.rate", T0 + 60.0, 10.0)],
                   [("checkout/http.requests.rate", T0 + 70.0, 5.0)]]


@pytest.mark.parametrize("strings", [True, False], ids=["int64-as-string", "int64-as-number"])
def test_rate_is_the_same_whether_int64_arrives_as_string_or_number(strings):
    out = run(otlp(sum_("c", dp(T0, int_=100, start=T0 - 5, strings=strings))),
              otlp(sum_("c", dp(T0 + 10, int_=150, start=T0 - 5, strings=strings))))
    assert out[1] == [("checkout/c.rate", T0 + 10.0, 5.0)]


@pytest.mark.parametrize("third, want", [
    # The value dropped, same start: a wrap or a restart at an unknown time. Prime only.
    (dict(v=100, start=T0 - 60), []),
    # The value dropped and the start moved to after the previous sample: count from the restart.
    (dict(v=100, start=T0 + 70), [("checkout/http.requests.rate", T0 + 120.0, 2.0)]),
    # A new start alone is a reset even when the value went up.
    (dict(v=5000, start=T0 + 110), [("checkout/http.requests.rate", T0 + 120.0, 500.0)]),
    # A new start before our previous sample: we cannot tell what was counted since. Prime only.
    (dict(v=5000, start=T0 + 30), []),
], ids=["drop-same-start", "drop-new-start", "new-start-higher-value", "new-start-before-previous"])
def test_counter_resets_never_give_a_negative_rate(third, want):
    n = Normalizer()
    run(rate(T0, 1000, start=T0 - 60), rate(T0 + 60, 1600, start=T0 - 60), normalizer=n)
    [got] = run(rate(T0 + 120, third["v"], start=third["start"]), normalizer=n)
    assert got == want
    # After the reset the series goes on from the new value.
    [after] = run(rate(T0 + 130, third["v"] + 100, start=third["start"]), normalizer=n)
    assert after == [("checkout/http.requests.rate", T0 + 130.0, 10.0)]


def test_delta_sum_rate_uses_the_start_time_else_the_previous_point():
    with_start = run(otlp(sum_("c", dp(T0, int_=50, start=T0 - 10), temporality=1)))
    assert with_start == [[("checkout/c.rate", float(T0), 5.0)]]
    without = run(otlp(sum_("c", dp(T0, int_=50), temporality=1)), otlp(sum_("c", dp(T0 + 20, int_=60), temporality=1)))
    assert without == [[], [("checkout/c.rate", T0 + 20.0, 3.0)]]


def test_gauge_and_non_monotonic_sum_keep_their_name_and_value():
    out = run(otlp(gauge("g", dp(T0, double=0.5)), sum_("queue.depth", dp(T0, int_=-7), monotonic=False)))
    assert out == [[("checkout/g", float(T0), 0.5), ("checkout/queue.depth", float(T0), -7.0)]]


def test_a_redelivered_message_yields_no_new_points():
    n = Normalizer()
    msgs = [rate(T0, 1000), rate(T0 + 10, 1100)]
    first = run(*msgs, normalizer=n)
    again = run(*msgs, normalizer=n)
    assert first == [[], [("checkout/http.requests.rate", T0 + 10.0, 10.0)]] and again == [[], []]


H = "checkout/http.server.duration"


def test_cumulative_histogram_gives_interval_mean_and_p95():
    out = run(otlp(histogram("http.server.duration", hdp(T0, 10, 1.0, [10, 0, 0, 0, 0], start=T0 - 60))),
              otlp(histogram("http.server.duration", hdp(T0 + 60, 110, 31.0, [70, 20, 10, 10, 0], start=T0 - 60))))
    assert out[0] == []
    assert out[1] == [(H + ".mean", T0 + 60.0, pytest.approx(0.3)), (H + ".p95", T0 + 60.0, pytest.approx(0.75))]


def test_delta_histogram_is_used_as_it_is():
    out = run(otlp(histogram("http.server.duration", hdp(T0, 100, 30.0, [60, 20, 10, 10, 0], start=T0 - 60),
                             temporality=1)))
    assert out == [[(H + ".mean", float(T0), pytest.approx(0.3)), (H + ".p95", float(T0), pytest.approx(0.75))]]


def test_cumulative_histogram_reset_counts_from_the_restart():
    n = Normalizer()
    run(otlp(histogram("http.server.duration", hdp(T0, 500, 100.0, [400, 50, 50, 0, 0], start=T0 - 60))), normalizer=n)
    [out] = run(otlp(histogram("http.server.duration",
                               hdp(T0 + 60, 100, 30.0, [60, 20, 10, 10, 0], start=T0 + 30))), normalizer=n)
    assert out == [(H + ".mean", T0 + 60.0, pytest.approx(0.3)), (H + ".p95", T0 + 60.0, pytest.approx(0.75))]


def test_histogram_without_sum_gives_only_p95_and_an_empty_interval_nothing():
    out = run(otlp(histogram("h", hdp(T0, 100, None, [60, 20, 10, 10, 0]), temporality=1)),
              otlp(histogram("h", hdp(T0 + 10, 0, 0.0, [0, 0, 0, 0, 0]), temporality=1)))
    assert out == [[("checkout/h.p95", float(T0), pytest.approx(0.75))], []]


# --- prometheus-kafka-adapter -----------------------------------------------------------------

def prom(value="0.93", name="node_cpu_util", ts="2026-08-20T12:00:00Z", **labels) -> dict:
    labels = {"__name__": name, "instance": "node-1:9100", "job": "node", **labels}
    return {"timestamp": ts, "value": value, "name": name, "labels": labels}


def test_prometheus_sample_as_the_adapter_writes_it():
    d = decode(prom())
    assert d.fmt == "prometheus"
    assert d.samples == [Sample(SeriesKey("node", "node_cpu_util", (("instance", "node-1:9100"),)),
                                1787227200.0, "gauge", 0.93)]


@pytest.mark.parametrize("labels, service_label, want", [
    ({}, "service", "node"),  # no service label: job
    ({"service": "checkout"}, "service", "checkout"),
    ({"service": "checkout", "app": "shop"}, "app", "shop"),
    ({"service": "checkout"}, "app", "node"),
])
def test_prometheus_service_comes_from_the_configured_label_else_job(labels, service_label, want):
    [s] = decode(prom(**labels), service_label=service_label).samples
    assert s.series.service == want
    assert service_label not in dict(s.series.labels) and "job" not in dict(s.series.labels)


@pytest.mark.parametrize("value, reason", [
    ("NaN", "node_cpu_util: non-finite value (NaN)"),
    ("+Inf", "node_cpu_util: non-finite value (+Inf)"),
    ("-Inf", "node_cpu_util: non-finite value (-Inf)"),
    ("1e301", "node_cpu_util: value out of range (1e+301)"),
    ("high", "node_cpu_util: invalid value ('high')"),
])
def test_prometheus_unusable_values_are_rejected_with_a_reason(value, reason):
    with pytest.raises(DecodeError) as exc:
        decode(prom(value=value))
    assert str(exc.value) == reason


def test_prometheus_total_counters_become_rates():
    out = run(prom(name="http_requests_total", value="100", ts="2026-08-20T12:00:00Z"),
              prom(name="http_requests_total", value="160", ts="2026-08-20T12:00:30Z"))
    assert out == [[], [('node/http_requests_total.rate{instance="node-1:9100"}', 1787227230.0, 2.0)]]


# --- native batch ---------------------------------------------------------------------------

def test_native_batch():
    doc = {"schema_version": 1, "service": "api", "labels": {"host.name": "a1"},
           "points": [["cpu", T0, 0.5],
                      ["cpu", T0, 0.7, {"core": 3}],
                      {"metric": "http.server.requests", "t": T0, "value": 1234, "kind": "counter",
                       "labels": {"route": "/pay"}}]}
    d = decode(doc)
    assert d.fmt == "native"
    assert [(s.series.id, s.kind, s.value, s.monotonic) for s in d.samples] == [
        ('api/cpu{host.name="a1"}', "gauge", 0.5, False),
        ('api/cpu{core="3",host.name="a1"}', "gauge", 0.7, False),
        ('api/http.server.requests{host.name="a1",route="/pay"}', "sum", 1234.0, True),
    ]


def test_native_counter_becomes_a_rate():
    batch = lambda t, v: {"schema_version": 1, "service": "api",  # noqa: E731
                          "points": [{"metric": "c", "t": t, "value": v, "kind": "counter"}]}
    assert run(batch(T0, 10), batch(T0 + 4, 30)) == [[], [("api/c.rate", T0 + 4.0, 5.0)]]


# --- bad input: DecodeError naming the path, never anything else -------------------------------

RM = "resourceMetrics[0]"
M0 = f"{RM}.scopeMetrics[0].metrics[0]"


def _bad_otlp(mutate) -> dict:
    doc = otlp(gauge("g", dp(T0, double=1.0, attrs=[kv("host.name", "a")])))
    mutate(doc)
    return doc


def _metric(doc: dict) -> dict:
    return doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]


def _point(doc: dict) -> dict:
    return _metric(doc)["gauge"]["dataPoints"][0]


BAD = [
    ("garbage", b"\x00garbage", "invalid JSON: "),
    ("truncated", enc(otlp(gauge("g", dp(T0, double=1.0))))[:-7], "invalid JSON: "),
    ("empty", b"", "invalid JSON: "),
    ("truncated protobuf", b"\n\x8a\x01\n\x12", "invalid OTLP protobuf (ExportMetricsServiceRequest): Error parsing "
     "message with type 'opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest'"),
    ("newline, then broken JSON", b'\n {"resourceMetrics": [', "invalid JSON: "),
    ("top-level list", b"[1, 2]", "unrecognized metrics message: expected a JSON object (got list)"),
    ("unknown keys", b'{"hello": 1}', "unrecognized metrics message: expected OTLP/JSON (resourceMetrics), a "
     "prometheus-kafka-adapter sample (labels, value) or a native batch (schema_version, points); got keys: 'hello'"),
    ("resourceMetrics str", b'{"resourceMetrics": "x"}', "resourceMetrics: expected a list (got str)"),
    ("resourceMetrics[0] int", b'{"resourceMetrics": [3]}', f"{RM}: expected an object (got int)"),
    ("resource list", _bad_otlp(lambda d: d["resourceMetrics"][0].update(resource=[])),
     f"{RM}.resource: expected an object (got list)"),
    ("resource attribute value", _bad_otlp(lambda d: d["resourceMetrics"][0]["resource"]["attributes"].append(
        {"key": "k", "value": "v"})), f"{RM}.resource.attributes[1].value: expected an object (got str)"),
    ("scopeMetrics object", _bad_otlp(lambda d: d["resourceMetrics"][0].update(scopeMetrics={})),
     f"{RM}.scopeMetrics: expected a list (got object)"),
    ("metric name int", _bad_otlp(lambda d: _metric(d).update(name=5)), f"{M0}.name: expected a string (got int)"),
    ("gauge list", _bad_otlp(lambda d: _metric(d).update(gauge=[])), f"{M0}.gauge: expected an object (got list)"),
    ("dataPoints str", _bad_otlp(lambda d: _metric(d)["gauge"].update(dataPoints="x")),
     f"{M0}.gauge.dataPoints: expected a list (got str)"),
    ("timeUnixNano bool", _bad_otlp(lambda d: _point(d).update(timeUnixNano=True)),
     f"{M0}.gauge.dataPoints[0].timeUnixNano: expected an integer or a string (got bool)"),
    ("asDouble list", _bad_otlp(lambda d: _point(d).update(asDouble=[1])),
     f"{M0}.gauge.dataPoints[0].asDouble: expected a number or a string (got list)"),
    ("attribute key missing", _bad_otlp(lambda d: _point(d)["attributes"][0].pop("key")),
     f"{M0}.gauge.dataPoints[0].attributes[0].key: expected a string (got null)"),
    ("temporality object", otlp(sum_("s", dp(T0, int_=1), temporality={})),
     f"{M0}.sum.aggregationTemporality: expected an integer (got object)"),
    ("bucketCounts object", otlp(histogram("h", {**hdp(T0, 1, 1.0, [1, 0, 0, 0, 0]), "bucketCounts": {}})),
     f"{M0}.histogram.dataPoints[0].bucketCounts: expected a list (got object)"),
    ("NaN", _bad_otlp(lambda d: _point(d).update(asDouble="NaN")), "g: non-finite value (NaN)"),
    ("huge double", _bad_otlp(lambda d: _point(d).update(asDouble=1e301)), "g: value out of range (1e+301)"),
    ("huge int64", _bad_otlp(lambda d: (_point(d).pop("asDouble"), _point(d).update(asInt="9" * 400))),
     "g: value out of range (1e+308)"),
    ("huge timestamp", _bad_otlp(lambda d: _point(d).update(timeUnixNano="1" + "0" * 400)), "g: timestamp '1000"),
    ("milliseconds", _bad_otlp(lambda d: _point(d).update(timeUnixNano="1700000000000")),
     "g: timestamp '1700000000000' outside 2000..2100"),
    ("bad timestamp", _bad_otlp(lambda d: _point(d).update(timeUnixNano="soon")), "g: invalid timestamp ('soon')"),
    ("no service.name", otlp(gauge("g", dp(T0, double=1.0)), service=None), "resource without attribute 'service.name'"),
    ("bad bounds", otlp(histogram("h", {**hdp(T0, 1, 1.0, [1, 0, 0, 0, 0]), "explicitBounds": [1, 0.5, 2, 3]})),
     "h: explicitBounds must be finite and increasing"),
    ("bucket mismatch", otlp(histogram("h", hdp(T0, 1, 1.0, [1, 0]))), "h: 2 bucketCounts for 4 explicitBounds"),
    ("prometheus labels", {"labels": {"job": 3}, "value": "1", "timestamp": "2026-08-20T12:00:00Z"},
     "labels.job: expected a string (got int)"),
    ("prometheus value list", prom(value=[1]), "value: expected a string (got list)"),
    ("prometheus timestamp int", prom(ts=1787227200), "timestamp: expected an RFC 3339 string (got int)"),
    ("prometheus bad timestamp", prom(ts="yesterday"), "node_cpu_util: invalid timestamp ('yesterday')"),
    ("prometheus no service", {"labels": {"__name__": "up"}, "value": "1", "timestamp": "2026-08-20T12:00:00Z"},
     "up: no 'service' or 'job' label to name the service"),
    ("native version", {"schema_version": 2, "service": "api", "points": []}, "schema_version: expected 1 (got 2)"),
    ("native point str", {"schema_version": 1, "service": "api", "points": ["x"]},
     "points[0]: expected a list or an object (got str)"),
    ("native kind list", {"schema_version": 1, "service": "api", "points": [{"metric": "m", "t": T0, "value": 1,
                                                                             "kind": []}]},
     "points[0].kind: expected a string (got list)"),
    ("native seconds in ms", {"schema_version": 1, "service": "api", "points": [["m", T0 * 1000, 1]]},
     "m: timestamp 1700000000000 is not unix seconds in 2000..2100"),
    ("native label list", {"schema_version": 1, "service": "api", "labels": {"a": []}, "points": []},
     "labels.a: expected a string (got list)"),
]

@pytest.mark.parametrize("payload, expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_metrics_raise_decode_error_naming_the_path(payload, expected):
    with pytest.raises(DecodeError) as exc:
        decode(payload)
    msg = str(exc.value)
    # Exact, or a prefix for messages that quote a parser's own words.
    assert msg.startswith(expected), msg


def test_unknown_service_rejects_the_whole_message_with_a_hint():
    with pytest.raises(DecodeError, match=r"^unknown service 'chekout' \(did you mean 'checkout'\?\)$"):
        decode(otlp(gauge("g", dp(T0, double=1.0)), service="chekout"), known_services=frozenset({"checkout"}))


def test_rejects_are_capped_and_summarized():
    doc = otlp(gauge("g", *[dp(T0 + i, double=1.0, timeUnixNano=f"bad{i}") for i in range(30)]))
    with pytest.raises(DecodeError) as exc:
        decode(doc)
    assert str(exc.value) == "g: invalid timestamp ('bad0'); g: invalid timestamp ('bad1'); " \
                             "g: invalid timestamp ('bad2'); ..."


# --- logs -----------------------------------------------------------------------------------

def logs(*records: dict, service: str = "checkout") -> bytes:
    return enc({"resourceLogs": [{"resource": {"attributes": [kv("service.name", service), kv("host.name", "h1")]},
                                  "scopeLogs": [{"scope": {"name": "my.lib"}, "logRecords": list(records)}]}]})


def test_otlp_logs_as_the_collector_writes_them():
    recs, rejects = decode_logs(logs(
        {"timeUnixNano": ns(T0), "observedTimeUnixNano": ns(T0), "severityNumber": 17, "severityText": "ERROR",
         "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
         "body": {"stringValue": "db timeout"}, "attributes": [kv("k8s.pod.name", "api-0")]}), known_services=None)
    assert rejects == []
    [r] = recs
    assert (r.service, r.t, r.severity, r.body) == ("checkout", float(T0), 17, "db timeout")
    assert r.labels == (("host.name", "h1"), ("k8s.pod.name", "api-0"))


@pytest.mark.parametrize("record, want", [
    ({"observedTimeUnixNano": ns(T0, False), "severityText": "warn", "body": {"stringValue": "x"}}, (float(T0), 13)),
    ({"timeUnixNano": "0", "observedTimeUnixNano": ns(T0), "severityNumber": 99, "severityText": "ERROR"},
     (float(T0), 17)),
    ({"timeUnixNano": ns(T0), "severityText": "chatty"}, (float(T0), 0)),
])
def test_log_time_falls_back_to_observed_and_severity_to_text(record, want):
    [r], _ = decode_logs(logs(record), known_services=None)
    assert (r.t, r.severity) == want


@pytest.mark.parametrize("payload, expected", [
    (b"{", "invalid JSON: "),
    (b'{"resourceMetrics": []}', "unrecognized logs message: expected OTLP/JSON (resourceLogs); got keys: 'resourceMetrics'"),
    (b'{"resourceLogs": {}}', "resourceLogs: expected a list (got object)"),
    (logs({"timeUnixNano": ns(T0), "body": "text"}),
     "resourceLogs[0].scopeLogs[0].logRecords[0].body: expected an object (got str)"),
    (logs({"timeUnixNano": ns(T0) + "000"}), "log record: timestamp"),
    (logs({"timeUnixNano": ns(T0)}, service="chekout"), "unknown service 'chekout' (did you mean 'checkout'?)"),
])
def test_bad_logs_raise_decode_error(payload, expected):
    with pytest.raises(DecodeError) as exc:
        decode_logs(payload, known_services=frozenset({"checkout"}))
    assert str(exc.value).startswith(expected), str(exc.value)
