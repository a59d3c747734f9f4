"""Per-message caps, checked before a message is decoded: its size, the data points (one per
series: OTLP points, native points, log records, spans) it carries, and the buckets of each
histogram point. A message over a cap raises :class:`~streams.ingest.DecodeError` with the
reason, so it goes to the dead-letter topic whole, and decoding never starts.

The size is checked before the message is parsed, which bounds what parsing can allocate; the
counts are read from the parsed message (list lengths, not a walk of every value), so one
message of 26 million bucket counts or 435,000 series costs a length check, not gigabytes.

>>> lim = Limits(max_message_bytes=1024, max_series=2, max_buckets=3)
>>> check_json({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"gauge": {"dataPoints": [{}, {}, {}]}}]}]}]},
...            "metrics", lim)
Traceback (most recent call last):
...
streams.ingest.DecodeError: message over a cap: 3 data points, more than ingest.max_series_per_message (2)
"""
from __future__ import annotations

from dataclasses import dataclass

_POINT_KINDS = ("gauge", "sum", "histogram", "exponentialHistogram", "summary")
_ENVELOPES = {"metrics": ("resourceMetrics", "scopeMetrics", "metrics"),
              "logs": ("resourceLogs", "scopeLogs", "logRecords"),
              "traces": ("resourceSpans", "scopeSpans", "spans")}
_WHAT = {"metrics": "data points", "logs": "log records", "traces": "spans"}


@dataclass(frozen=True)
class Limits:
    """``ingest.max_message_bytes``, ``ingest.max_series_per_message`` and
    ``ingest.max_buckets_per_histogram``."""

    max_message_bytes: int = 4 * 1024 * 1024
    max_series: int = 50_000
    max_buckets: int = 1024

    @classmethod
    def from_settings(cls, ingest) -> Limits:
        return cls(ingest.max_message_bytes, ingest.max_series_per_message, ingest.max_buckets_per_histogram)


def _over(what: str) -> None:
    from streams.ingest import DecodeError

    raise DecodeError(f"message over a cap: {what}")


def check_size(payload: bytes, lim: Limits | None) -> None:
    if lim is not None and len(payload) > lim.max_message_bytes:
        _over(f"{len(payload)} bytes, more than ingest.max_message_bytes ({lim.max_message_bytes})")


def _series(n: int, signal: str, lim: Limits) -> None:
    _over(f"{n} {_WHAT[signal]}, more than ingest.max_series_per_message ({lim.max_series})")


def _buckets(n: int, lim: Limits) -> None:
    _over(f"a histogram point of {n} buckets, more than ingest.max_buckets_per_histogram ({lim.max_buckets})")


def _lists(obj: object, key: str):
    v = obj.get(key) if type(obj) is dict else None
    return v if type(v) is list else ()


def _point_buckets(dp: object, lim: Limits) -> None:
    if type(dp) is not dict:
        return
    for key in ("bucketCounts", "explicitBounds", "quantileValues"):
        v = dp.get(key)
        if type(v) is list and len(v) > lim.max_buckets:
            _buckets(len(v), lim)
    for side in ("positive", "negative"):
        v = dp.get(side)
        if type(v) is dict and type(v.get("bucketCounts")) is list and len(v["bucketCounts"]) > lim.max_buckets:
            _buckets(len(v["bucketCounts"]), lim)


def check_json(obj: object, signal: str, lim: Limits | None) -> None:
    """The caps on a parsed OTLP/JSON request of ``signal`` (or a native metrics batch)."""
    if lim is None or type(obj) is not dict:
        return
    top, scopes, items = _ENVELOPES[signal]
    if top not in obj:
        points = obj.get("points") if signal == "metrics" else None
        if type(points) is list and len(points) > lim.max_series:
            _series(len(points), signal, lim)
        return
    n = 0
    for r in _lists(obj, top):
        for s in _lists(r, scopes):
            for item in _lists(s, items):
                if signal != "metrics":
                    n += 1
                    continue
                n = count_metric(item, n, lim)
            if n > lim.max_series:
                _series(n, signal, lim)


def count_metric(item: object, n: int, lim: Limits) -> int:
    """``n``, the data points before an OTLP/JSON metric ``item``, plus its own (of every kind
    it holds, whatever the decoder reads of it); raises at a cap, the buckets of its histogram,
    exponential histogram and summary points included. One metric's share of :func:`check_json`,
    and the streams.ingest.otlp decoder's count of a metric it does not take on its fast path.

    >>> count_metric({"gauge": {"dataPoints": [{}]}, "sum": {"dataPoints": [{}, {}]}}, 1, Limits())
    4
    """
    for kind in _POINT_KINDS:
        data = item.get(kind) if type(item) is dict else None
        dps = data.get("dataPoints") if type(data) is dict else None
        if type(dps) is not list:
            continue
        n += len(dps)
        if n > lim.max_series:
            _series(n, "metrics", lim)
        if kind != "gauge" and kind != "sum":
            for dp in dps:
                _point_buckets(dp, lim)
    return n


# The fewest bytes one counted element can take in a protobuf message, in every encoding a
# parser accepts (opentelemetry-proto's metrics.proto gives the field types): an element of a
# repeated message field (data points, log records, spans, summary quantiles) is at least a tag
# and a length byte; a fixed64 bucket count or a double bound is 8 bytes packed (9 unpacked); an
# exponential histogram's uint64 bucket count is a varint, 1 byte packed. Elements never share
# bytes (a repeated field met twice is concatenated, a oneof member met twice keeps the last), so
# a message of L bytes holds at most L // 2 points (and so on), and a cap that its bytes cannot
# reach need not be checked: a chatty exporter's small messages skip the count entirely.
_MIN_POINT_BYTES = 2
_MIN_BUCKET_BYTES = {"histogram": 8, "exponential_histogram": 1, "summary": 2}


def proto_unbounded(size: int, signal: str, lim: Limits) -> tuple[bool, frozenset[str]]:
    """What a protobuf message of ``size`` bytes could hold over ``lim``: whether its data points
    (log records, spans) could be more than ``lim.max_series``, and the point kinds whose
    buckets could be more than ``lim.max_buckets``. What is left out cannot trip a cap.

    >>> series, kinds = proto_unbounded(200, "metrics", Limits(max_series=100, max_buckets=64))
    >>> series, sorted(kinds)
    (False, ['exponential_histogram', 'summary'])
    """
    series = size // _MIN_POINT_BYTES > lim.max_series
    if signal != "metrics":
        return series, frozenset()
    return series, frozenset(k for k, b in _MIN_BUCKET_BYTES.items() if size // b > lim.max_buckets)


def check_points(kind: str, dps, lim: Limits) -> None:
    """The bucket cap on the data points ``dps`` of one protobuf metric whose data is ``kind``."""
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


def count_points(kind: str, dps, n: int, lim: Limits, bucket_kinds=_MIN_BUCKET_BYTES) -> int:
    """``n``, the data points before a protobuf metric, plus its own ``dps`` (its data is ``kind``,
    its oneof); raises at a cap (buckets: of the point kinds in ``bucket_kinds`` only). One
    metric's share of :func:`check_proto`."""
    n += len(dps)
    if n > lim.max_series:
        _series(n, "metrics", lim)
    if kind in bucket_kinds:
        check_points(kind, dps, lim)
    return n


def check_proto(msg, signal: str, lim: Limits | None, size: int | None = None) -> None:
    """The caps on a parsed protobuf export request (lengths of its repeated fields only). With
    ``size``, the message's length in bytes, a message too short to hold anything over a cap is
    passed without a look (see ``_MIN_POINT_BYTES``): the decision is the same."""
    if lim is None:
        return
    if size is not None:
        series, bucket_kinds = proto_unbounded(size, signal, lim)
        if not series and not bucket_kinds:
            return
    n = 0
    if signal == "metrics":
        for rm in msg.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind is not None:
                        n = count_points(kind, getattr(m, kind).data_points, n, lim)
        return
    resources = msg.resource_logs if signal == "logs" else msg.resource_spans
    for r in resources:
        for s in (r.scope_logs if signal == "logs" else r.scope_spans):
            n += len(s.log_records if signal == "logs" else s.spans)
            if n > lim.max_series:
                _series(n, signal, lim)


__all__ = ["Limits", "check_json", "check_points", "check_proto", "check_size", "count_metric", "count_points",
           "proto_unbounded"]
