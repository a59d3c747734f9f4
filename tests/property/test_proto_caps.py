"""The caps on protobuf metrics, counted on the decoder's walk (issue 16), decide as the walk of
their own before decoding did (issue 18): the same messages refused, with the same reasons, and
the same samples and rejects from the others.

The reference is that earlier check, kept here as it was, run before a decode without caps. Caps
are drawn small and also around the byte-size bounds of :mod:`streams.ingest.limits` (a message
of L bytes holds at most L // 2 points), so both the skip and the count are exercised, on
requests that also hold unknown services, resources without a service, bad attributes and
unsupported kinds (what the decoder rejects or gives up on before it reaches a cap).
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2

from streams.ingest import DecodeError, Limits, decode_metrics, otlp_proto
from streams.ingest.limits import _buckets, _series
from tests.property.test_otlp_proto import KNOWN, NOW_NS, metrics_request

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_check_proto(msg, lim: Limits) -> None:
    """streams.ingest.limits.check_proto for metrics as it was before issue 16."""
    n = 0
    for rm in msg.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is None:
                    continue
                dps = getattr(m, kind).data_points
                n += len(dps)
                if n > lim.max_series:
                    _series(n, "metrics", lim)
                if kind == "histogram":
                    for dp in dps:
                        if max(len(dp.bucket_counts), len(dp.explicit_bounds)) > lim.max_buckets:
                            _buckets(max(len(dp.bucket_counts), len(dp.explicit_bounds)), lim)
                elif kind == "exponential_histogram":
                    for dp in dps:
                        if max(len(dp.positive.bucket_counts), len(dp.negative.bucket_counts)) > lim.max_buckets:
                            _buckets(max(len(dp.positive.bucket_counts), len(dp.negative.bucket_counts)), lim)
                elif kind == "summary":
                    for dp in dps:
                        if len(dp.quantile_values) > lim.max_buckets:
                            _buckets(len(dp.quantile_values), lim)


def outcome(payload: bytes, lim: Limits | None, **kw):
    try:
        d = decode_metrics(payload, known_services=KNOWN, limits=lim, **kw)
    except DecodeError as exc:
        return ("error", str(exc))
    return ("ok", [repr(s) for s in d.samples], d.rejects)


def reference(payload: bytes, lim: Limits):
    try:
        reference_check_proto(otlp_proto.parse(payload, "metrics"), lim)
    except DecodeError as exc:
        return ("error", str(exc))
    return outcome(payload, None)


@st.composite
def bucket_metric(draw) -> metrics_pb2.Metric:
    """A metric whose points carry buckets: few, or around a small cap; in the 1-byte varints of
    an exponential histogram, the 8 bytes of an explicit one, or quantiles."""
    m = metrics_pb2.Metric(name=draw(st.sampled_from(["lat", "size", ""])))
    kind = draw(st.sampled_from(["histogram", "exponential_histogram", "summary"]))
    sizes = st.lists(st.integers(0, 9), min_size=0, max_size=3)
    if kind == "histogram":
        m.histogram.aggregation_temporality = draw(st.sampled_from([0, 1, 2]))
        for n in draw(sizes):
            bounds = draw(st.just(max(n - 1, 0)) | st.integers(0, 9))  # mostly a shape the fast path takes
            m.histogram.data_points.add(time_unix_nano=NOW_NS, count=n, sum=1.0, flags=draw(st.sampled_from([0, 1])),
                                        bucket_counts=[0] * n, explicit_bounds=[float(i) for i in range(bounds)])
    elif kind == "exponential_histogram":
        for n in draw(sizes):
            dp = m.exponential_histogram.data_points.add(time_unix_nano=NOW_NS)
            dp.positive.bucket_counts.extend([0] * n)
            dp.negative.bucket_counts.extend([1] * draw(st.integers(0, 9)))
    else:
        for n in draw(sizes):
            m.summary.data_points.add(time_unix_nano=NOW_NS).quantile_values.extend(
                [metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=1.0)] * n)
    return m


@st.composite
def capped_request(draw) -> tuple[bytes, Limits]:
    req = draw(metrics_request())
    if req.resource_metrics:
        for _ in range(draw(st.integers(0, 3))):
            rm = req.resource_metrics[draw(st.integers(0, len(req.resource_metrics) - 1))]
            sm = rm.scope_metrics.add() if not rm.scope_metrics else rm.scope_metrics[-1]
            sm.metrics.insert(draw(st.integers(0, len(sm.metrics))), draw(bucket_metric()))
    payload = req.SerializeToString()
    if not payload:
        payload = ExportMetricsServiceRequest(resource_metrics=[{}]).SerializeToString()
    size = len(payload)
    # Small caps, or caps at the byte-size bounds: L // 2 points, L buckets (varints), L // 8.
    series = draw(st.integers(0, 12) | st.integers(-2, 2).map(lambda d: max(0, size // 2 + d)))
    buckets = draw(st.integers(0, 10) | st.sampled_from([size, size // 2, size // 8]).flatmap(
        lambda b: st.integers(-2, 2).map(lambda d: max(0, b + d))))
    return payload, Limits(max_series=series, max_buckets=buckets)


@SETTINGS
@given(capped_request())
def test_caps_on_the_decoders_walk_decide_as_the_check_before_it(case):
    payload, lim = case
    assert outcome(payload, lim) == reference(payload, lim)
