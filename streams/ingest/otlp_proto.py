"""OTLP protobuf export requests: the OpenTelemetry Collector's ``kafka`` exporter writes these
unless told otherwise (``encoding: otlp_proto``, its default).

``ExportMetricsServiceRequest``, ``ExportLogsServiceRequest`` and ``ExportTraceServiceRequest``
are parsed with the maintained classes of ``opentelemetry-proto`` on protobuf's upb backend (C),
not by hand: the wire format's corner cases (unknown fields, packed and unpacked repeated
scalars, open enums, UTF-8 checks) are theirs to get right.

**One meaning for both encodings.** A protobuf request means exactly what the OTLP/JSON of the
same request means: :func:`to_json` turns a parsed request into the object the JSON decoders
read, as the Collector's ``otlp_json`` writes it (proto3 JSON: lowerCamelCase keys, 64-bit
integers as decimal strings, enums as integers, non-finite doubles as ``"NaN"``/``"Infinity"``,
fields at their default value left out; OTLP's own rules: trace and span ids as lowercase hex,
``KeyValue.key`` and ``Metric.name`` always written). The metrics decoder reads the parsed
message directly on its fast path and falls back to this object for anything unusual
(:mod:`streams.ingest.otlp`), so reasons and dead-letter texts are the JSON path's, word for word.
``tests/property/test_otlp_proto.py`` holds both encodings of the same request to the same output.

**Telling the encodings apart, per message.** A non-empty export request always begins with
field 1 (its resource list), length-delimited: the byte ``0x0A``. That is also ``"\\n"``, which
may lead a JSON document, so a message starting with it is protobuf unless it parses as JSON. A
protobuf request parses as JSON only by a freak of its bytes: its length prefixes and field tags
(``0x12``, ``0x1A``...) are raw control bytes, which JSON allows nowhere.
"""
from __future__ import annotations

import base64
import math

import orjson
from google.protobuf.message import DecodeError as _ProtoDecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from detectors.records import SeriesKey
# The package imports this module last, once what is taken here exists.
from streams.ingest import MAX_ABS_VALUE, DecodeError, PathError
from streams.ingest import load as load_json
from streams.ingest import otlp as _json
from streams.ingest.limits import Limits, check_points, check_proto, count_points, proto_unbounded
from streams.ingest.otlp import _NS_MAX, _NS_MIN, _resource_key, any_to_str

REQUESTS = {"metrics": ExportMetricsServiceRequest, "logs": ExportLogsServiceRequest,
            "traces": ExportTraceServiceRequest}
_JSON_START = (b"{", b"[")


def is_protobuf(payload: bytes) -> bool:
    """Whether ``payload`` is to be read as an OTLP protobuf request (see the module).

    >>> is_protobuf(b'{"resourceMetrics": []}'), is_protobuf(b'\\n{"resourceMetrics": []}')
    (False, False)
    >>> is_protobuf(ExportMetricsServiceRequest(resource_metrics=[{}]).SerializeToString())
    True
    """
    if payload[:1] != b"\n":
        return False
    if payload.lstrip()[:1] not in _JSON_START:
        return True
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError:
        return True
    return False


def parse(payload: bytes, signal: str):
    """The request message of ``signal`` ("metrics", "logs", "traces"); raises
    :class:`~streams.ingest.DecodeError` with the parser's reason when the bytes are not one."""
    cls = REQUESTS[signal]
    msg = cls()
    try:
        msg.ParseFromString(payload)
    except _ProtoDecodeError as exc:
        raise DecodeError(f"invalid OTLP protobuf ({cls.__name__}): {exc}") from None
    return msg


# --- to the OTLP/JSON object ----------------------------------------------------------------
# What the Collector's otlp_json writes for the same request; each function mirrors one message.

def double(v: float) -> float | str:
    """A proto3 JSON double: a number, or the string JSON has for a non-finite one."""
    if math.isfinite(v):
        return v
    return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")


def any_value(v) -> dict:
    kind = v.WhichOneof("value")
    if kind is None:
        return {}
    if kind == "string_value":
        return {"stringValue": v.string_value}
    if kind == "bool_value":
        return {"boolValue": v.bool_value}
    if kind == "int_value":
        return {"intValue": str(v.int_value)}
    if kind == "double_value":
        return {"doubleValue": double(v.double_value)}
    if kind == "bytes_value":
        return {"bytesValue": base64.b64encode(v.bytes_value).decode("ascii")}
    if kind == "array_value":
        return {"arrayValue": {"values": [any_value(x) for x in v.array_value.values]}}
    return {"kvlistValue": {"values": attributes(v.kvlist_value.values)}}


def attributes(kvs) -> list[dict]:
    return [{"key": kv.key, "value": any_value(kv.value)} if kv.HasField("value") else {"key": kv.key}
            for kv in kvs]


def _resource(parent, out: dict) -> dict:
    if parent.HasField("resource"):
        attrs = parent.resource.attributes
        out["resource"] = {"attributes": attributes(attrs)} if attrs else {}
    return out


def _times(m, out: dict) -> dict:
    if m.start_time_unix_nano:
        out["startTimeUnixNano"] = str(m.start_time_unix_nano)
    if m.time_unix_nano:
        out["timeUnixNano"] = str(m.time_unix_nano)
    return out


def number_point(dp) -> dict:
    out: dict = {"attributes": attributes(dp.attributes)} if dp.attributes else {}
    _times(dp, out)
    kind = dp.WhichOneof("value")
    if kind == "as_double":
        out["asDouble"] = double(dp.as_double)
    elif kind == "as_int":
        out["asInt"] = str(dp.as_int)
    if dp.flags:
        out["flags"] = dp.flags
    return out


def histogram_point(dp) -> dict:
    out: dict = {"attributes": attributes(dp.attributes)} if dp.attributes else {}
    _times(dp, out)
    if dp.count:
        out["count"] = str(dp.count)
    if dp.HasField("sum"):
        out["sum"] = double(dp.sum)
    if dp.bucket_counts:
        out["bucketCounts"] = [str(c) for c in dp.bucket_counts]
    if dp.explicit_bounds:
        out["explicitBounds"] = [double(b) for b in dp.explicit_bounds]
    if dp.flags:
        out["flags"] = dp.flags
    return out


def metric(m) -> dict:
    out: dict = {"name": m.name}
    kind = m.WhichOneof("data")
    if kind == "gauge":
        out["gauge"] = {"dataPoints": [number_point(dp) for dp in m.gauge.data_points]}
    elif kind == "sum":
        s = m.sum
        d: dict = {"dataPoints": [number_point(dp) for dp in s.data_points]}
        if s.aggregation_temporality:
            d["aggregationTemporality"] = s.aggregation_temporality
        if s.is_monotonic:
            d["isMonotonic"] = True
        out["sum"] = d
    elif kind == "histogram":
        h = m.histogram
        d = {"dataPoints": [histogram_point(dp) for dp in h.data_points]}
        if h.aggregation_temporality:
            d["aggregationTemporality"] = h.aggregation_temporality
        out["histogram"] = d
    elif kind == "exponential_histogram":
        out["exponentialHistogram"] = {}  # only its presence is read: not supported
    elif kind == "summary":
        out["summary"] = {}
    return out


def resource_metrics(rm) -> dict:
    out = _resource(rm, {})
    out["scopeMetrics"] = [{"metrics": [metric(m) for m in sm.metrics]} for sm in rm.scope_metrics]
    return out


def log_record(r) -> dict:
    out: dict = {}
    if r.time_unix_nano:
        out["timeUnixNano"] = str(r.time_unix_nano)
    if r.observed_time_unix_nano:
        out["observedTimeUnixNano"] = str(r.observed_time_unix_nano)
    if r.severity_number:
        out["severityNumber"] = r.severity_number
    if r.severity_text:
        out["severityText"] = r.severity_text
    if r.HasField("body"):
        out["body"] = any_value(r.body)
    if r.attributes:
        out["attributes"] = attributes(r.attributes)
    return out


def span(s) -> dict:
    out: dict = {}
    if s.trace_id:
        out["traceId"] = s.trace_id.hex()
    if s.span_id:
        out["spanId"] = s.span_id.hex()
    if s.parent_span_id:
        out["parentSpanId"] = s.parent_span_id.hex()
    if s.name:
        out["name"] = s.name
    if s.kind:
        out["kind"] = s.kind
    if s.start_time_unix_nano:
        out["startTimeUnixNano"] = str(s.start_time_unix_nano)
    if s.end_time_unix_nano:
        out["endTimeUnixNano"] = str(s.end_time_unix_nano)
    if s.HasField("status"):
        out["status"] = {"code": s.status.code} if s.status.code else {}
    return out


def to_json(msg, signal: str) -> dict:
    """The OTLP/JSON object of a parsed request (see the module)."""
    if signal == "metrics":
        return {"resourceMetrics": [resource_metrics(rm) for rm in msg.resource_metrics]}
    if signal == "logs":
        return {"resourceLogs": [_resource(rl, {"scopeLogs": [
            {"logRecords": [log_record(r) for r in sl.log_records]} for sl in rl.scope_logs]})
            for rl in msg.resource_logs]}
    return {"resourceSpans": [_resource(rs, {"scopeSpans": [{"spans": [span(s) for s in ss.spans]}
                                                            for ss in rs.scope_spans]})
                              for rs in msg.resource_spans]}


def load(payload: bytes, signal: str) -> dict:
    """Parse a protobuf request into its OTLP/JSON object. Raises
    :class:`~streams.ingest.DecodeError`; for a payload that was meant as JSON (it starts, after
    white space, as JSON does) the JSON parser's reason, which says more than protobuf's."""
    return to_json(parse_or_json_error(payload, signal), signal)


# --- from the OTLP/JSON object: writing protobuf (replay frames, tests, benchmarks) -----------

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _ids_to_base64(obj: object) -> object:
    """OTLP/JSON writes ids as hex where proto3 JSON expects base64: convert for ParseDict."""
    if type(obj) is dict:
        return {k: (base64.b64encode(bytes.fromhex(v)).decode() if k in _ID_KEYS and type(v) is str
                    else _ids_to_base64(v)) for k, v in obj.items()}
    if type(obj) is list:
        return [_ids_to_base64(v) for v in obj]
    return obj


def encode(obj: dict, signal: str) -> bytes:
    """The protobuf bytes of an OTLP/JSON request object (as the Collector's ``otlp_proto``
    would write the request it read as JSON). Raises ``google.protobuf.json_format.ParseError``
    (or ``ValueError``, for an id that is not hex) for an object that is not a valid request.

    >>> encode({"resourceMetrics": [{"scopeMetrics": []}]}, "metrics")
    b'\\n\\x00'
    """
    from google.protobuf import json_format

    src = _ids_to_base64(obj) if signal == "traces" else obj
    return json_format.ParseDict(src, REQUESTS[signal](), ignore_unknown_fields=True).SerializeToString()


# --- length-prefixed frames (aiops replay --input-format otlp_proto) --------------------------

def frame(message: bytes) -> bytes:
    """One frame: a 4-byte big-endian length, then the message.

    >>> frame(b"ab")
    b'\\x00\\x00\\x00\\x02ab'
    """
    return len(message).to_bytes(4, "big") + message


def read_frames(src, name: str = "input"):
    """``(offset, message)`` per frame of a binary file (offset: the frame's index). Raises
    ``ValueError`` naming the byte position of a truncated frame."""
    pos = 0
    index = 0
    while True:
        head = src.read(4)
        if not head:
            return
        if len(head) < 4:
            raise ValueError(f"{name}: truncated frame length at byte {pos}")
        n = int.from_bytes(head, "big")
        body = src.read(n)
        if len(body) < n:
            raise ValueError(f"{name}: frame at byte {pos} declares {n} bytes, {len(body)} remain")
        yield index, body
        pos += 4 + n
        index += 1


# --- metrics, read from the parsed message -----------------------------------------------------
# The metrics decoder reads plain metrics straight off the upb message: typed fields need none
# of the JSON path's type checks, and no OTLP/JSON object is built per point. It mirrors
# streams.ingest.otlp._fast_metric, field for field, on what that function would be given (the
# OTLP/JSON of the metric, see to_json): at anything it would not take, it undoes what it
# appended and the metric goes, as OTLP/JSON, through the JSON path's careful functions, whose
# reasons and errors are then the message's. Series keys of points with attributes are kept per
# resource, by metric name and attribute pairs (string values only): one dict lookup per point
# replaces building, redacting and sorting its labels, and the normalizer and detector see the
# same key object for a series from message to message.

_series_keys: dict[tuple, dict] = {}
_series_key_count = 0
_heads: dict[tuple, tuple] = {}
# Resources in flight are a few hundred to a few thousand (one per process or pod); each head
# keeps its resource's bytes, so the bound is lower than the series keys'.
_HEADS_MAX = 8192
_SERIES_MAX = 65536


def decode_metrics(msg, ctx, lim: Limits | None = None, size: int = 0) -> None:
    """Append the samples of a parsed ``ExportMetricsServiceRequest`` of ``size`` bytes to
    ``ctx`` (and its reasons): exactly what :func:`streams.ingest.otlp.decode` does with
    :func:`to_json` of it, after :func:`~streams.ingest.limits.check_proto` with ``lim``.

    The caps are counted on the decoder's own walk rather than on a walk of their own before it,
    and the decisions are check_proto's, reasons included: on a message within the caps the
    counts never trip and check_proto would have passed; on any error at all (a count that
    tripped, or something the decoder met first) check_proto is run on the whole message, so a
    message over a cap is refused with the reason it gives, as if it had run first. The counts
    are taken before a metric is decoded, so no more is decoded of a message over a cap than of
    one at the caps."""
    if lim is None:
        _decode_metrics(msg, ctx, None)
        return
    series, bucket_kinds = proto_unbounded(size, "metrics", lim)
    try:
        _decode_metrics(msg, ctx, lim if series or bucket_kinds else None, bucket_kinds)
    except Exception:
        check_proto(msg, "metrics", lim)
        raise


def _decode_metrics(msg, ctx, lim: Limits | None, bucket_kinds: frozenset = frozenset()) -> None:
    """:func:`decode_metrics`; counts the caps where ``lim`` is given (series, and the buckets
    of ``bucket_kinds``)."""
    known, keep, redactor = ctx.known, ctx.keep, ctx.redactor
    n = 0  # data points so far, as check_proto counts them
    hist_caps = lim if "histogram" in bucket_kinds else None
    for i, rm in enumerate(msg.resource_metrics[:]):
        try:
            # A resource's head depends on its bytes and the settings only: the same resource
            # message after message is read once (heads that rejected something are not kept,
            # so their reasons are given every time).
            # (An absent resource and an empty one both serialize to b"": neither has a service,
            # so no head is ever kept for them, and the bytes alone are a sound key.)
            head_key = (rm.resource.SerializeToString(), known, keep, redactor)
            head = _heads.get(head_key)
            if head is not None:
                service, res_attrs, res_labels, series = head
                names = _json._names(service, res_labels, redactor)
            else:
                resource = _resource(rm, {}).get("resource")
                n_reasons = len(ctx._reasons)
                head = _json.resource_head(resource, lambda: rm.scope_metrics, ctx)
                if head is None:
                    if lim is not None:  # not decoded, but counted
                        for sm in rm.scope_metrics:
                            for m in sm.metrics:
                                kind = m.WhichOneof("data")
                                if kind is not None:
                                    n = count_points(kind, getattr(m, kind).data_points, n, lim, bucket_kinds)
                    continue
                service, res_attrs, res_labels, names, _ = head
                series = _series_of(service, res_attrs, ctx)
                head = (service, res_attrs, res_labels, series)
                if len(ctx._reasons) == n_reasons:
                    if len(_heads) >= _HEADS_MAX:
                        _heads.clear()
                    _heads[head_key] = head
            # Repeated fields are walked as lists (``[:]``): upb builds the list in one C call, where
            # iterating the container itself costs about as much again per element.
            for a, sm in enumerate(rm.scope_metrics[:]):
                for b, m in enumerate(sm.metrics[:]):
                    # The oneof, its data and their points are read once, for the count and the decoder.
                    kind = m.WhichOneof("data")
                    if kind is not None:
                        data = getattr(m, kind)
                        dps = data.data_points
                        if lim is not None:
                            n += len(dps)
                            if n > lim.max_series:
                                check_proto(msg, "metrics", lim)  # raises, with its reason
                        if kind == "histogram":
                            # It checks the buckets of the points it reads; if it gives up, all
                            # of them are checked below, before the JSON path reads them.
                            if _histogram_fast(data, dps, m.name, names, head, ctx, hist_caps):
                                continue
                        elif kind == "gauge" or kind == "sum":
                            if _number_fast(kind, data, dps, m.name, names, head, ctx):
                                continue
                        if kind in bucket_kinds:
                            check_points(kind, data.data_points, lim)
                    try:
                        _json._metric(metric(m), service, res_attrs, res_labels, ctx)
                    except PathError as exc:
                        raise exc.within(f"scopeMetrics[{a}].metrics[{b}]") from None
        except PathError as exc:
            raise exc.within(f"resourceMetrics[{i}]") from None


def _series_of(service: str, res_attrs: dict, ctx) -> dict:
    """The series keys of one resource's points with attributes, by (metric name, attribute pairs)."""
    cache_key = (service, tuple(res_attrs.items()), ctx.keep, ctx.redactor)
    d = _series_keys.get(cache_key)
    if d is None:
        d = _series_keys[cache_key] = {}
    return d


def _forget_series() -> None:
    """A bound, not an LRU (as the JSON path's key caches): series are few and stable in
    practice. Emptied in place, since the decode in progress holds one of these dicts; the
    heads go too, as they hold them."""
    global _series_key_count
    for d in _series_keys.values():
        d.clear()
    _series_keys.clear()
    _heads.clear()
    _series_key_count = 0


def _point_key(attrs, name: str, service: str, res_attrs: dict, series: dict, ctx):
    """The series of a point with attributes, as the JSON path makes it; ``None`` where that
    would not take the point (an attribute it cannot render)."""
    global _series_key_count

    pairs = []
    for kv in attrs:
        v = kv.value
        if v.WhichOneof("value") != "string_value":
            pairs = None
            break
        pairs.append((kv.key, v.string_value))
    if pairs is not None:
        cache_key = (name, tuple(pairs))
        key = series.get(cache_key)
        if key is not None:
            return key
    into = dict(res_attrs)
    for kv in attrs:
        if not kv.HasField("value"):
            into[kv.key] = ""
            continue
        v = kv.value
        if v.WhichOneof("value") == "string_value":
            into[kv.key] = v.string_value
            continue
        try:
            into[kv.key] = any_to_str(any_value(v), "")
        except PathError:
            return None
    key = SeriesKey(service, ctx.redactor.text(name), ctx.labels(into))
    if pairs is not None:
        if _series_key_count >= _SERIES_MAX:
            _forget_series()
        series[cache_key] = key
        _series_key_count += 1
    return key


def _number_fast(kind: str, data, dps, name: str, names: dict, head: tuple, ctx) -> bool:
    """The points ``dps`` of a gauge or sum ``data`` of metric ``name``, as
    streams.ingest.otlp._fast_metric takes them; ``False`` (and nothing appended) where it would not.
    ``names`` and ``head`` are the resource's (see :func:`_decode_metrics`)."""
    if not name:
        return False
    if kind == "gauge":
        monotonic = False
        temporality = "cumulative"
    else:
        monotonic = data.is_monotonic
        temporality = _TEMPORALITY.get(data.aggregation_temporality)
        if temporality is None:
            if monotonic:
                return False
            temporality = "cumulative"
    samples = ctx.samples
    n0 = len(samples)
    key = None
    for dp in dps[:]:
        if dp.flags & 1:  # FLAG_NO_RECORDED_VALUE
            continue
        ns = dp.time_unix_nano
        if not (_NS_MIN <= ns <= _NS_MAX):
            break
        which = dp.WhichOneof("value")
        if which == "as_double":
            v = dp.as_double
        elif which == "as_int":
            v = float(dp.as_int)
        else:
            break
        if not (-MAX_ABS_VALUE <= v <= MAX_ABS_VALUE):  # also false for NaN
            break
        attrs = dp.attributes
        if attrs:
            k = _point_key(attrs, name, head[0], head[1], head[3], ctx)
            if k is None:
                break
        else:
            if key is None:
                key = names.get(name)
                if key is None:
                    key = _resource_key(name, head[0], head[2], names, ctx)
            k = key
        if monotonic:
            s_ns = dp.start_time_unix_nano
            samples.append((k, ns / 1e9, kind, v, True, temporality,
                            s_ns / 1e9 if _NS_MIN <= s_ns <= _NS_MAX else None))
        else:
            samples.append((k, ns / 1e9, kind, v, False, temporality))
    else:
        return True
    del samples[n0:]
    return False


_TEMPORALITY = {1: "delta", 2: "cumulative"}
# explicitBounds tuples found finite and increasing (see streams.ingest.otlp), each filed under
# itself, or under () when it holds a zero (see _histogram_fast).
_good_bounds: dict[tuple, tuple] = {}


def _histogram_fast(h, dps, name: str, names: dict, head: tuple, ctx, caps: Limits | None = None) -> bool:
    """:func:`_number_fast` for the points ``dps`` of histogram ``h``; with ``caps``, raises at a
    point over its bucket cap, before reading the buckets."""
    if not name:
        return False

    temporality = _TEMPORALITY.get(h.aggregation_temporality)
    if temporality is None:
        return False
    samples = ctx.samples
    n0 = len(samples)
    key = None
    nan = math.nan
    for dp in dps[:]:
        explicit, counts = dp.explicit_bounds, dp.bucket_counts
        if caps is not None and (len(counts) > caps.max_buckets or len(explicit) > caps.max_buckets):
            check_points("histogram", (dp,), caps)  # raises, with its reason
        if dp.flags & 1:
            continue
        ns = dp.time_unix_nano
        if not (_NS_MIN <= ns <= _NS_MAX):
            break
        if dp.HasField("sum"):
            total = dp.sum
            if not (-MAX_ABS_VALUE <= total <= MAX_ABS_VALUE):
                break
        else:
            total = nan  # no sum reported: no mean
        bounds = tuple(explicit[:])
        if bounds:
            good = _good_bounds.get(bounds)
            if good is None:
                prev = -math.inf
                for b in bounds:
                    if not (prev < b < math.inf):
                        break
                    prev = b
                else:
                    if len(_good_bounds) >= 65536:
                        _good_bounds.clear()
                    # Filed under itself, so that equal bounds are one tuple (the normalizer compares
                    # them by identity first); not where a bound is zero: 0.0 == -0.0, and the sign
                    # is the sender's (a p95 can be that bound). () marks those as checked.
                    good = _good_bounds[bounds] = () if 0.0 in bounds else bounds
                if good is None:
                    break
            if good:
                bounds = good
        buckets = tuple(map(float, counts[:]))
        if buckets and len(buckets) != len(bounds) + 1:
            break
        attrs = dp.attributes
        if attrs:
            k = _point_key(attrs, name, head[0], head[1], head[3], ctx)
            if k is None:
                break
        else:
            if key is None:
                key = names.get(name)
                if key is None:
                    key = _resource_key(name, head[0], head[2], names, ctx)
            k = key
        s_ns = dp.start_time_unix_nano
        samples.append((k, ns / 1e9, "histogram", 0.0, False, temporality,
                        s_ns / 1e9 if _NS_MIN <= s_ns <= _NS_MAX else None, float(dp.count), total, bounds, buckets))
    else:
        return True
    del samples[n0:]
    return False


def parse_or_json_error(payload: bytes, signal: str):
    """:func:`parse`, but for a payload meant as JSON the JSON parser's reason (see :func:`load`)."""
    try:
        return parse(payload, signal)
    except DecodeError:
        if payload.lstrip()[:1] in _JSON_START:
            load_json(payload)
        raise
