"""What the metrics decoders share between points must change no output: equal histogram bounds
are handed over as one tuple, except where a bound is zero, whose sign stays the sender's; and a
resource sent without its ``resource`` field reads as one sent empty."""
from __future__ import annotations

import orjson

from detectors.normalize import Normalizer, Sample
from streams.ingest import decode_metrics, otlp_proto

T0 = 1_767_225_600_000_000_000
API = {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]}


def histogram(bounds: list[float], counts: list[int], t: int = T0) -> dict:
    return {"resourceMetrics": [{"resource": API, "scopeMetrics": [{"metrics": [{"name": "lat", "histogram": {
        "aggregationTemporality": 2, "dataPoints": [{"timeUnixNano": str(t), "count": str(sum(counts)),
                                                     "bucketCounts": [str(c) for c in counts],
                                                     "explicitBounds": bounds}]}}]}]}]}


def both(obj: dict):
    """The samples of ``obj`` read as protobuf, and as JSON."""
    return (decode_metrics(otlp_proto.encode(obj, "metrics"), known_services=None).samples,
            decode_metrics(orjson.dumps(obj), known_services=None).samples)


def test_equal_bounds_are_one_tuple():
    a = both(histogram([0.1, 0.5], [1, 2, 3]))
    b = both(histogram([0.1, 0.5], [2, 2, 3], T0 + 10**10))
    for x, y in zip(a, b):  # protobuf, JSON
        assert x[0].bounds == (0.1, 0.5) and x[0].bounds is y[0].bounds


def test_a_zero_bound_keeps_its_sign():
    for first, second in (([-0.0, 1.0], [0.0, 1.0]), ([0.0, 1.0], [-0.0, 1.0])):
        got_a, want_a = both(histogram(first, [4, 0, 0]))
        got_b, want_b = both(histogram(second, [4, 0, 0], T0 + 10**10))
        assert repr(got_a) == repr(want_a) and repr(got_b) == repr(want_b)
        assert repr(got_b[0].bounds) == repr(tuple(second))
        # The sign reaches the p95: its bucket's upper bound, the first bound not positive.
        n = Normalizer()
        delta = [Sample(s.series, s.t, s.kind, temporality="delta", count=s.count, total=s.total, bounds=s.bounds,
                        buckets=s.buckets) for s in got_b]
        assert repr([p.value for p in n.normalize(delta)]) == repr([second[0]])


def test_a_resource_left_out_and_an_empty_one_read_alike():
    gauge = {"name": "cpu", "gauge": {"dataPoints": [{"timeUnixNano": str(T0), "asDouble": 0.5}]}}
    for rm in ({"scopeMetrics": [{"metrics": [gauge]}]}, {"resource": {}, "scopeMetrics": [{"metrics": [gauge]}]}):
        for _ in range(2):  # the second time through the resource-head cache, were one kept
            got, want = both({"resourceMetrics": [rm, {"resource": API, "scopeMetrics": [{"metrics": [gauge]}]}]})
            assert repr(got) == repr(want) and [s.series.id for s in got] == ["api/cpu"]
