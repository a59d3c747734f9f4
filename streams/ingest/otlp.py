"""OTLP/JSON ``ExportMetricsServiceRequest`` to samples.

proto3 JSON, as opentelemetry-proto specifies it: lowerCamelCase keys, enums as integers,
64-bit integers as decimal strings or numbers, doubles as numbers or the strings ``"NaN"``,
``"Infinity"``, ``"-Infinity"``; unknown fields are ignored and an absent or null field is its
default. Service = resource attribute ``service.name``; the other resource attributes and the
point attributes are labels (point attributes win on a clash). Labels and metric names go
through the context's redactor (:mod:`streams.ingest.redact`); the service name does not.

A value of the wrong JSON type in the document's structure raises a ``DecodeError`` naming its
path; a scalar that has the right JSON type but cannot be used (unparsable or absurd timestamp,
non-finite value, a data kind we do not derive from) drops just that point, with a reason.
Points flagged ``FLAG_NO_RECORDED_VALUE`` (OTLP's staleness marker) are skipped silently.
"""
from __future__ import annotations

import itertools
import math
import sys

import orjson

from detectors.normalize import Sample
from detectors.records import SeriesKey
from streams.ingest import (
    MAX_ABS_VALUE,
    T_MAX,
    T_MIN,
    Context,
    PathError,
    expect_list,
    expect_object,
    short,
    type_name,
    value_problem,
)
from streams.ingest.limits import Limits, _buckets, _lists, _point_buckets, _series, check_json, count_metric

SERVICE_ATTRIBUTE = "service.name"
_FLAG_NO_RECORDED_VALUE = 1
_TEMPORALITY = {1: "delta", 2: "cumulative", "AGGREGATION_TEMPORALITY_DELTA": "delta",
                "AGGREGATION_TEMPORALITY_CUMULATIVE": "cumulative"}
_UNSUPPORTED = ("exponentialHistogram", "summary")
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_HUGE = 10**300


# --- scalars -------------------------------------------------------------------------------

def parse_double(v: object, path: str) -> float | None:
    """A proto3 JSON double: a number or a string (incl. "NaN", "Infinity"); ``None`` if unparsable."""
    t = type(v)
    if t is float:
        return v  # type: ignore[return-value]
    if t is int:
        return float(v)  # type: ignore[arg-type]
    if t is str:
        try:
            return float(v)  # type: ignore[arg-type]
        except ValueError:
            return None
    raise PathError(path, f"expected a number or a string (got {type_name(v)})")


def parse_int(v: object, path: str) -> float | None:
    """A proto3 JSON int64/uint64: a number or a decimal string; ``None`` if unparsable."""
    t = type(v)
    if t is int or t is float:
        return v  # type: ignore[return-value]
    if t is str:
        try:
            n = int(v)  # type: ignore[arg-type]
        except ValueError:
            try:
                return float(v)  # type: ignore[arg-type]  # "1e3" and friends from lenient writers
            except ValueError:
                return None
        # Beyond any float: out of range for every caller, without an OverflowError downstream.
        # (math.copysign would convert n to float first: OverflowError past 1e308.)
        return n if -_HUGE <= n <= _HUGE else (1e308 if n > 0 else -1e308)
    raise PathError(path, f"expected an integer or a string (got {type_name(v)})")


def time_problem(raw: object, ns: float | None) -> str | None:
    """Why a timeUnixNano cannot be used, or ``None``."""
    if ns is None:
        return f"invalid timestamp ({short(raw)})"
    if not (T_MIN * 1e9 <= ns <= T_MAX * 1e9):  # also false for NaN
        return f"timestamp {short(raw)} outside 2000..2100"
    return None


def start_seconds(v: object, path: str) -> float | None:
    """startTimeUnixNano in seconds; ``None`` when absent, zero (unknown) or unusable."""
    if v is None:
        return None
    ns = parse_int(v, path)
    if ns is None or not (T_MIN * 1e9 <= ns <= T_MAX * 1e9):
        return None
    return ns / 1e9


# --- AnyValue ------------------------------------------------------------------------------

def any_to_str(v: object, path: str) -> str:
    """An AnyValue rendered as a label value or log body: strings as they are, the rest as JSON.

    >>> any_to_str({"boolValue": True}, "")
    'true'
    >>> any_to_str({"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "a"}]}}, "")
    '[1,"a"]'
    """
    if type(v) is not dict:
        raise PathError(path, f"expected an object (got {type_name(v)})")
    s = v.get("stringValue")
    if type(s) is str:
        return s
    py = _any_to_py(v, path)
    if type(py) is str:
        return py
    try:
        return orjson.dumps(py).decode()
    except orjson.JSONEncodeError:  # orjson serializes at most 254 levels; parsing allows 1024
        raise PathError(path, "value nested too deeply") from None


def _any_to_py(v: dict, path: str) -> object:
    for kind, x in v.items():
        if x is None:
            continue
        if kind == "stringValue" or kind == "bytesValue":  # bytes arrive base64-encoded already
            if type(x) is not str:
                raise PathError(f"{path}.{kind}" if path else kind, f"expected a string (got {type_name(x)})")
            return x
        if kind == "boolValue":
            if type(x) is not bool:
                raise PathError(f"{path}.{kind}" if path else kind, f"expected a boolean (got {type_name(x)})")
            return x
        if kind == "intValue":
            n = parse_int(x, f"{path}.{kind}" if path else kind)
            if type(n) is int and _INT64_MIN <= n <= _UINT64_MAX:
                return n
            return x if type(x) is str else str(x)  # keep what was sent rather than fail on a label
        if kind == "doubleValue":
            d = parse_double(x, f"{path}.{kind}" if path else kind)
            return x if d is None or not math.isfinite(d) else d
        if kind == "arrayValue" or kind == "kvlistValue":
            p = f"{path}.{kind}" if path else kind
            values = expect_list(expect_object(x, p).get("values"), f"{p}.values")
            if kind == "arrayValue":
                out: list = []
                for i, item in enumerate(values):
                    if type(item) is not dict:
                        raise PathError(f"{p}.values[{i}]", f"expected an object (got {type_name(item)})")
                    out.append(_any_to_py(item, f"{p}.values[{i}]"))
                return out
            kv: dict = {}
            for i, item in enumerate(values):
                k, val = _key_value(item, f"{p}.values[{i}]")
                kv[k] = None if val is None else _any_to_py(val, f"{p}.values[{i}].value")
            return kv
    return ""  # an empty AnyValue


def _key_value(item: object, path: str) -> tuple[str, dict | None]:
    if type(item) is not dict:
        raise PathError(path, f"expected an object (got {type_name(item)})")
    k = item.get("key")
    if type(k) is not str:
        raise PathError(f"{path}.key", f"expected a string (got {type_name(k)})")
    val = item.get("value")
    if val is not None and type(val) is not dict:
        raise PathError(f"{path}.value", f"expected an object (got {type_name(val)})")
    return k, val


def attributes(attrs: object, path: str, into: dict[str, str]) -> dict[str, str]:
    """Render a KeyValue list into ``into`` (later keys win) and return it."""
    for i, item in enumerate(expect_list(attrs, path)):
        k, val = _key_value(item, f"{path}[{i}]")
        if val is None:
            into[k] = ""
            continue
        s = val.get("stringValue")
        into[k] = s if type(s) is str else any_to_str(val, f"{path}[{i}].value")
    return into


def decode_resources(payload: bytes, key: str, scopes_key: str, kind: str, take, *,
                     known_services: frozenset[str] | None, redactor, limits=None) -> tuple[list, list[str]]:
    """The envelope every OTLP/JSON export request shares: ``{key: [{resource, scopes_key: [...]}]}``.

    For each resource of a known service, ``take(service, attributes, scopes, ctx, out)`` appends
    its records to ``out`` and calls ``ctx.reject(reason)`` for those it drops; a resource without
    ``service.name`` is rejected here. A :class:`PathError` is named with the resource's index.
    Returns ``(records, reasons)``; a message whose records were all dropped raises
    :class:`DecodeError` with the first reasons, as does one that is not ``{key: [...]}``."""
    from streams.ingest import DecodeError, load_otlp

    obj = load_otlp(payload, kind, limits)
    if type(obj) is not dict or key not in obj:
        got = type_name(obj) if type(obj) is not dict else "keys: " + ", ".join(short(k, 30) for k in list(obj)[:5])
        raise DecodeError(f"unrecognized {kind} message: expected OTLP/JSON ({key}); got {got}")
    ctx = Context(known_services, frozenset(), redactor)
    out: list = []
    for i, resource in enumerate(expect_list(obj.get(key), key)):
        try:
            if type(resource) is not dict:
                raise PathError("", f"expected an object (got {type_name(resource)})")
            service, attrs = resource_service(resource.get("resource"), "resource")
            scopes = expect_list(resource.get(scopes_key), scopes_key)
            if service is None:
                if scopes:
                    ctx.reject("resource without attribute 'service.name'")
            elif ctx.service_ok(service):
                take(service, attrs, scopes, ctx, out)
        except PathError as exc:
            raise exc.within(f"{key}[{i}]") from None
    return out, ctx.reasons(bool(out))


def resource_service(resource: object, path: str) -> tuple[str | None, dict[str, str]]:
    """``service.name`` and the other resource attributes of a resource object."""
    res = expect_object(resource, path)
    attrs = attributes(res.get("attributes"), f"{path}.attributes" if path else "attributes", {})
    service = attrs.pop(SERVICE_ATTRIBUTE, None)
    return service, attrs


# --- metrics -------------------------------------------------------------------------------

def decode(obj: dict, ctx: Context, lim: Limits | None = None) -> None:
    """Append the samples of the OTLP/JSON ``ExportMetricsServiceRequest`` ``obj`` to ``ctx`` (and
    its reasons), after :func:`~streams.ingest.limits.check_json` with ``lim``.

    The caps are counted on the decoder's own walk rather than on a walk of their own before it,
    and the decisions are check_json's, reasons included: on a message within the caps the
    counts never trip and check_json would have passed (every metric it counts, the decoder
    counts the same way: :func:`~streams.ingest.limits.count_metric`, or on the fast path the
    same lengths); on any error at all (a count that tripped, or something the decoder met
    first) check_json is run on the whole message, so a message over a cap is refused with the
    reason it gives, as if it had run first. A metric is counted before its points are decoded,
    so no more is decoded of a message over a cap than of one at the caps.

    >>> obj = {"resourceMetrics": [{"resource": {}, "scopeMetrics": [{"metrics": [
    ...     {"name": "m", "gauge": {"dataPoints": [{}, {}, {}]}}]}]}]}
    >>> decode(obj, Context(None, frozenset()), Limits(max_series=2))
    Traceback (most recent call last):
    ...
    streams.ingest.DecodeError: message over a cap: 3 data points, more than ingest.max_series_per_message (2)
    """
    if lim is None:
        _decode(obj, ctx, None)
        return
    try:
        _decode(obj, ctx, lim)
    except Exception:
        check_json(obj, "metrics", lim)
        raise


def _decode(obj: dict, ctx: Context, caps: Limits | None) -> None:
    """:func:`decode`; counts the caps where ``caps`` is given."""
    n = 0  # data points so far, as check_json counts them
    for i, rm in enumerate(expect_list(obj.get("resourceMetrics"), "resourceMetrics")):
        try:
            n = _resource_metrics(rm, ctx, caps, n)
        except PathError as exc:
            raise exc.within(f"resourceMetrics[{i}]") from None


def _resource_metrics(rm: object, ctx: Context, caps: Limits | None = None, n: int = 0) -> int:
    """Decode one resource's metrics; returns ``n`` plus its data points where ``caps`` is given."""
    if type(rm) is not dict:
        raise PathError("", f"expected an object (got {type_name(rm)})")
    head = resource_head(rm.get("resource"), lambda: expect_list(rm.get("scopeMetrics"), "scopeMetrics"), ctx)
    if head is None:
        if caps is not None:  # not decoded, but counted
            for sm in _lists(rm, "scopeMetrics"):
                for m in _lists(sm, "metrics"):
                    n = count_metric(m, n, caps)
        return n
    service, res_attrs, res_labels, names, scope_metrics = head
    for j, sm in enumerate(scope_metrics):
        if type(sm) is not dict:
            raise PathError(f"scopeMetrics[{j}]", f"expected an object (got {type_name(sm)})")
        metrics = sm.get("metrics")
        if type(metrics) is not list:
            metrics = expect_list(metrics, f"scopeMetrics[{j}].metrics")
        for k, m in enumerate(metrics):
            # The fast path counts the metric it takes; one it does not take is counted here.
            counted = _fast_metric(m, service, res_attrs, res_labels, names, ctx, n, caps)
            if counted >= 0:
                n = counted
                continue
            if caps is not None:
                n = count_metric(m, n, caps)
            try:
                _metric(m, service, res_attrs, res_labels, ctx)
            except PathError as exc:
                raise exc.within(f"scopeMetrics[{j}].metrics[{k}]") from None
    return n


def resource_head(resource: object, scopes, ctx: Context) -> tuple | None:
    """``(service, res_attrs, res_labels, names, scopes())`` of one resource of metrics, or
    ``None`` when its points are not to be decoded (no ``service.name``: rejected if it has
    scopes; an unknown service). ``scopes`` is called once the resource has been read, so a
    wrong type in the resource is named before one in its scope list. Shared with the protobuf
    decoder (:mod:`streams.ingest.otlp_proto`), which passes the resource as OTLP/JSON."""
    res_attrs: dict[str, str] = {}
    simple = type(resource) is dict or resource is None
    if simple and resource:
        attrs = resource.get("attributes")
        simple = attrs is None or type(attrs) is list and _simple_attributes(attrs, res_attrs)
    if simple:
        service = res_attrs.pop(SERVICE_ATTRIBUTE, None)
    else:  # let the careful path name what is wrong
        service, res_attrs = resource_service(resource, "resource")
    scope_list = scopes()
    if service is None:
        if scope_list:
            ctx.reject(f"resource without attribute '{SERVICE_ATTRIBUTE}'")
        return None
    if not ctx.service_ok(service):
        return None
    res_labels = ctx.labels(res_attrs) if res_attrs else ()  # what labels({}) returns
    return service, res_attrs, res_labels, _names(service, res_labels, ctx.redactor), scope_list


def _metric(m: object, service: str, res_attrs: dict, res_labels: tuple, ctx: Context) -> None:
    if type(m) is not dict:
        raise PathError("", f"expected an object (got {type_name(m)})")
    name = m.get("name")
    if type(name) is not str:
        raise PathError("name", f"expected a string (got {type_name(name)})")
    if not name:
        ctx.reject("metric without a name")
        return
    name = ctx.redactor.text(name)
    data = m.get("gauge")
    if data is not None:
        _number_points(expect_object(data, "gauge"), "gauge", name, service, res_attrs, res_labels, ctx)
        return
    data = m.get("sum")
    if data is not None:
        _number_points(expect_object(data, "sum"), "sum", name, service, res_attrs, res_labels, ctx)
        return
    data = m.get("histogram")
    if data is not None:
        _histogram_points(expect_object(data, "histogram"), name, service, res_attrs, res_labels, ctx)
        return
    for kind in _UNSUPPORTED:
        if m.get(kind) is not None:
            ctx.reject(f"{name}: {kind} not supported")
            return
    ctx.reject(f"{name}: no gauge, sum or histogram")


def _temporality(data: dict, kind: str) -> str | None:
    raw = data.get("aggregationTemporality")
    temporality = _TEMPORALITY.get(raw) if type(raw) in (int, str) else None
    if temporality is None and raw is not None and type(raw) not in (int, str):
        raise PathError(f"{kind}.aggregationTemporality", f"expected an integer (got {type_name(raw)})")
    return temporality


def _point_key(dp: dict, name: str, service: str, res_attrs: dict, res_labels: tuple, ctx: Context,
               cache: list, path: str) -> SeriesKey:
    attrs = dp.get("attributes")
    if not attrs:
        # Points without attributes all belong to the resource's own series: one key per metric.
        if cache[0] is None:
            cache[0] = SeriesKey(service, name, res_labels)
        return cache[0]
    return SeriesKey(service, name, ctx.labels(attributes(attrs, path, dict(res_attrs))))


def _point_time(dp: object, name: str, path: str, reject) -> float | None:
    """A data point's ``timeUnixNano``; ``None`` (with a reason, except for OTLP's no-value
    marker) when the point is to be skipped. A point that is not an object fails the message."""
    if type(dp) is not dict:
        raise PathError(path, f"expected an object (got {type_name(dp)})")
    flags = dp.get("flags")
    if type(flags) is int and flags & _FLAG_NO_RECORDED_VALUE:
        return None
    raw_t = dp.get("timeUnixNano")
    if raw_t is None:
        reject(f"{name}: missing timeUnixNano")
        return None
    ns = parse_int(raw_t, f"{path}.timeUnixNano")
    problem = time_problem(raw_t, ns)
    if problem is not None:
        reject(f"{name}: {problem}")
        return None
    return ns


def _number_points(data: dict, kind: str, name: str, service: str, res_attrs: dict, res_labels: tuple,
                   ctx: Context) -> None:
    monotonic = False
    temporality = "cumulative"
    if kind == "sum":
        monotonic = data.get("isMonotonic") is True
        t = _temporality(data, kind)
        if t is None:
            if monotonic:
                ctx.reject(f"{name}: unsupported aggregationTemporality ({short(data.get('aggregationTemporality'))})")
                return
        else:
            temporality = t
    plain = kind == "gauge" or not monotonic  # the decoded value is the point, no start time needed
    cache: list = [None]
    points = ctx.samples
    reject = ctx.reject
    for j, dp in enumerate(expect_list(data.get("dataPoints"), f"{kind}.dataPoints")):
        ns = _point_time(dp, name, f"{kind}.dataPoints[{j}]", reject)
        if ns is None:
            continue
        raw_v = dp.get("asDouble")
        if raw_v is not None:
            v = parse_double(raw_v, f"{kind}.dataPoints[{j}].asDouble")
        else:
            raw_v = dp.get("asInt")
            if raw_v is None:
                reject(f"{name}: missing value")
                continue
            v = parse_int(raw_v, f"{kind}.dataPoints[{j}].asInt")
        if v is None:
            reject(f"{name}: invalid value ({short(raw_v)})")
            continue
        v = float(v)
        problem = value_problem(v)
        if problem is not None:
            reject(f"{name}: {problem}")
            continue
        key = _point_key(dp, name, service, res_attrs, res_labels, ctx, cache, f"{kind}.dataPoints[{j}].attributes")
        t = ns / 1e9  # type: ignore[operator]
        if plain:
            points.append(Sample(key, t, kind, v, False, temporality))
        else:
            start = start_seconds(dp.get("startTimeUnixNano"), f"{kind}.dataPoints[{j}].startTimeUnixNano")
            points.append(Sample(key, t, kind, v, True, temporality, start))


def _histogram_points(data: dict, name: str, service: str, res_attrs: dict, res_labels: tuple, ctx: Context) -> None:
    temporality = _temporality(data, "histogram")
    if temporality is None:
        ctx.reject(f"{name}: unsupported aggregationTemporality ({short(data.get('aggregationTemporality'))})")
        return
    cache: list = [None]
    reject = ctx.reject
    for j, dp in enumerate(expect_list(data.get("dataPoints"), "histogram.dataPoints")):
        path = f"histogram.dataPoints[{j}]"
        ns = _point_time(dp, name, path, reject)
        if ns is None:
            continue
        problem, count, total, bounds, buckets = _histogram_values(dp, path)
        if problem is not None:
            reject(f"{name}: {problem}")
            continue
        key = _point_key(dp, name, service, res_attrs, res_labels, ctx, cache, f"{path}.attributes")
        ctx.samples.append(Sample(
            key, ns / 1e9, "histogram", temporality=temporality,  # type: ignore[operator]
            start_t=start_seconds(dp.get("startTimeUnixNano"), f"{path}.startTimeUnixNano"),
            count=count, total=total, bounds=bounds, buckets=buckets))


def _histogram_values(dp: dict, path: str):
    raw = dp.get("count")
    count = 0.0 if raw is None else parse_int(raw, f"{path}.count")
    if count is None:
        return f"invalid count ({short(raw)})", 0.0, 0.0, (), ()
    count = float(count)
    if not (0 <= count <= 1e300):
        return f"count out of range ({short(raw)})", 0.0, 0.0, (), ()
    raw = dp.get("sum")
    if raw is None:
        total = math.nan  # the sum is optional in OTLP (e.g. negative observations): no mean
    else:
        total = parse_double(raw, f"{path}.sum")
        if total is None:
            return f"invalid sum ({short(raw)})", 0.0, 0.0, (), ()
        problem = value_problem(total)
        if problem is not None:
            return f"sum: {problem}", 0.0, 0.0, (), ()
    buckets: list[float] = []
    for i, raw in enumerate(expect_list(dp.get("bucketCounts"), f"{path}.bucketCounts")):
        c = parse_int(raw, f"{path}.bucketCounts[{i}]")
        if c is None or not (0 <= c <= 1e300):
            return f"invalid bucket count ({short(raw)})", 0.0, 0.0, (), ()
        buckets.append(float(c))
    bounds: list[float] = []
    for i, raw in enumerate(expect_list(dp.get("explicitBounds"), f"{path}.explicitBounds")):
        b = parse_double(raw, f"{path}.explicitBounds[{i}]")
        if b is None or not math.isfinite(b) or (bounds and b <= bounds[-1]):
            return "explicitBounds must be finite and increasing", 0.0, 0.0, (), ()
        bounds.append(b)
    if buckets and len(buckets) != len(bounds) + 1:
        return f"{len(buckets)} bucketCounts for {len(bounds)} explicitBounds", 0.0, 0.0, (), ()
    return None, count, total, tuple(bounds), tuple(buckets)


# --- the fast path -------------------------------------------------------------------------
# Most metrics are plain: a gauge or a sum of asDouble/asInt points, or an explicit-bounds
# histogram, with string timestamps and string attributes. The functions below decode those
# without building path strings or calling a helper per scalar. At anything else (a wrong type,
# a value or timestamp the careful path would reject, an attribute it would fail on) they undo
# what they appended and return ``False``, and the careful functions above decode the metric from
# scratch: reasons, their order and error messages stay theirs. Samples go out as tuples of
# Sample's fields (see streams.ingest.Decoded). Every check here accepts a
# subset of what the careful path accepts, and computes the same floats the same way.
# tests/property/test_otlp_fast_path.py holds both paths to the same output.

_NS_MIN, _NS_MAX = T_MIN * 1e9, T_MAX * 1e9  # the bounds of time_problem and start_seconds
_COUNT_MAX = min(_HUGE, int(1e300))  # parse_int keeps an int up to _HUGE; counts must be <= 1e300
_INF = math.inf
_FLOATS = itertools.repeat(float)
_CACHE_MAX = 65536
_NO_CAP = sys.maxsize  # no list is longer

# Series keys without point attributes: by (service, resource labels, redactor), a dict from
# the raw metric name to its key. One lookup per resource and one per point then replace a
# redaction lookup and a frozen dataclass per point. Keys are immutable and fully determined
# by what they are filed under, so sharing them changes nothing.
_resource_keys: dict[tuple, dict[str, SeriesKey]] = {}
_resource_key_count = 0
# explicitBounds tuples already found finite and increasing. Validity depends on the values
# only, and equal tuples have equal values (0.0 == -0.0 are equally valid; NaN is never stored).
# Each is filed under itself, so that equal bounds are handed over as one tuple (the normalizer
# compares a series' bounds by identity first), except one holding a zero, filed under (): its
# sign is the sender's and must stay (a p95 can be that bound).
_good_bounds: dict[tuple, tuple] = {}


# Timestamp strings already parsed, in seconds: the points of one instant share their
# timeUnixNano and startTimeUnixNano strings across metrics and services. Only strings that
# int() reads and that lie within _NS_MIN.._NS_MAX are kept, so a hit means exactly what
# parsing the string again would.
_seconds: dict[str, float] = {}


def _remember_seconds(raw: str, ns: int) -> float:
    if len(_seconds) >= _CACHE_MAX:
        _seconds.clear()  # a bound, not an LRU: the times in flight are few
    t = _seconds[raw] = ns / 1e9
    return t


_MALFORMED = object()


def _fast_seconds(raw: object) -> float | None | object:
    """A timestamp (``timeUnixNano``, ``startTimeUnixNano``) in seconds as :func:`parse_int` and
    the range check read it: ``None`` for an integer outside ``_NS_MIN.._NS_MAX``, ``_MALFORMED``
    for anything but an integer or an integer string."""
    if type(raw) is str:
        t = _seconds.get(raw)
        if t is not None:
            return t
        try:
            ns = int(raw)
        except ValueError:
            return _MALFORMED
        return _remember_seconds(raw, ns) if _NS_MIN <= ns <= _NS_MAX else None
    if type(raw) is int:
        return raw / 1e9 if _NS_MIN <= raw <= _NS_MAX else None
    return _MALFORMED


def _names(service: str, res_labels: tuple, redactor) -> dict[str, SeriesKey]:
    """The keys of one resource's metrics, by raw metric name (filled by :func:`_resource_key`)."""
    cache_key = (service, res_labels, redactor)
    names = _resource_keys.get(cache_key)
    if names is None:
        names = _resource_keys[cache_key] = {}
    return names


def _resource_key(name: str, service: str, res_labels: tuple, names: dict, ctx: Context) -> SeriesKey:
    global _resource_key_count
    if _resource_key_count >= _CACHE_MAX:
        # A bound, not an LRU: series are few and stable in practice. Emptied in place, as
        # the caller (and decodes further up the stack) may hold one of these dicts.
        for d in _resource_keys.values():
            d.clear()
        _resource_keys.clear()
        _resource_key_count = 0
    key = names[name] = SeriesKey(service, ctx.redactor.text(name), res_labels)
    _resource_key_count += 1
    return key


def _simple_attributes(attrs: list, into: dict[str, str]) -> bool:
    """:func:`attributes` without paths; ``False`` where it would raise (``into`` is then to be
    thrown away)."""
    for item in attrs:
        if type(item) is not dict:
            return False
        k = item.get("key")
        if type(k) is not str:
            return False
        val = item.get("value")
        if val is None:
            into[k] = ""
            continue
        if type(val) is not dict:
            return False
        s = val.get("stringValue")
        if type(s) is str:
            into[k] = s
            continue
        try:
            into[k] = any_to_str(val, "")
        except PathError:
            return False
    return True


def _point_series(attrs: object, name: str, service: str, res_attrs: dict, ctx: Context) -> SeriesKey | None:
    """The series of a point with attributes, as :func:`_point_key` makes it; ``None`` where
    it would raise."""
    if type(attrs) is not list:
        return None
    into = dict(res_attrs)
    if not _simple_attributes(attrs, into):
        return None
    return SeriesKey(service, ctx.redactor.text(name), ctx.labels(into))


def _fast_int(raw: object) -> int | None:
    """A proto3 JSON int64 that :func:`parse_int` returns as the same ``int``; ``None`` otherwise."""
    t = type(raw)
    if t is str:
        try:
            n = int(raw)  # type: ignore[arg-type]
        except ValueError:
            return None
    elif t is int:
        n = raw  # type: ignore[assignment]
    else:
        return None
    return n if -_HUGE <= n <= _HUGE else None


def _fast_metric(m: object, service: str, res_attrs: dict, res_labels: tuple, names: dict, ctx: Context,
                 counted: int = 0, caps: Limits | None = None) -> int:
    """Decode a plain metric into ``ctx.samples``; ``-1``, with nothing appended, otherwise. With
    ``caps``, returns ``counted`` plus its data points as check_json counts them, and raises at a cap
    (on ``-1``, what it counted is to be thrown away); without, ``counted``."""
    if type(m) is not dict:
        return -1
    name = m.get("name")
    if type(name) is not str or not name:
        return -1
    kind = "gauge"
    data = m.get("gauge")
    if data is None:
        kind = "sum"
        data = m.get("sum")
        if data is None:
            data = m.get("histogram")
            if type(data) is not dict:
                return -1
            return _fast_histogram(data, name, service, res_attrs, res_labels, names, ctx, m, counted, caps)
    if type(data) is not dict:
        return -1
    dps = data.get("dataPoints")
    if type(dps) is not list:
        return -1
    if caps is not None:
        # check_json counts every kind a metric holds; the first one is the only one as a rule.
        if "histogram" in m or "exponentialHistogram" in m or "summary" in m or kind == "gauge" and "sum" in m:
            counted = count_metric(m, counted, caps)
        else:
            counted += len(dps)
            if counted > caps.max_series:
                _series(counted, "metrics", caps)
    monotonic = False
    temporality = "cumulative"
    if kind == "sum":
        monotonic = data.get("isMonotonic") is True
        raw = data.get("aggregationTemporality")
        if raw is not None:
            if type(raw) is not int and type(raw) is not str:
                return -1
            t = _TEMPORALITY.get(raw)
            if t is not None:
                temporality = t
            elif monotonic:
                return -1
        elif monotonic:
            return -1
    samples = ctx.samples
    n0 = len(samples)
    seconds = _seconds
    for dp in dps:
        if type(dp) is not dict:
            break
        flags = dp.get("flags")
        if type(flags) is int and flags & _FLAG_NO_RECORDED_VALUE:
            continue
        raw = dp.get("timeUnixNano")
        t = seconds.get(raw) if type(raw) is str else None  # _fast_seconds's own first look, inline
        if t is None:
            t = _fast_seconds(raw)
            if type(t) is not float:
                break
        raw = dp.get("asDouble")
        if raw is not None:
            if type(raw) is float:
                v = raw
            elif type(raw) is int:
                v = float(raw)
            else:
                break
        else:
            raw = dp.get("asInt")
            if type(raw) is str:
                try:
                    n = int(raw)
                except ValueError:
                    break
            elif type(raw) is int:
                n = raw
            else:
                break
            if not (-_HUGE <= n <= _HUGE):
                break
            v = float(n)
        if not (-MAX_ABS_VALUE <= v <= MAX_ABS_VALUE):  # also false for NaN
            break
        attrs = dp.get("attributes")
        if not attrs:
            key = names.get(name)
            if key is None:
                key = _resource_key(name, service, res_labels, names, ctx)
        else:
            key = _point_series(attrs, name, service, res_attrs, ctx)
            if key is None:
                break
        if monotonic:
            raw = dp.get("startTimeUnixNano")
            start = seconds.get(raw) if type(raw) is str else None
            if start is None and raw is not None:
                start = _fast_seconds(raw)
                if start is _MALFORMED:
                    break
            samples.append((key, t, kind, v, True, temporality, start))
        else:
            samples.append((key, t, kind, v, False, temporality))
    else:
        return counted
    del samples[n0:]
    return -1


def _fast_histogram(data: dict, name: str, service: str, res_attrs: dict, res_labels: tuple, names: dict,
                    ctx: Context, m: dict, counted: int = 0, caps: Limits | None = None) -> int:
    """:func:`_fast_metric` for the histogram ``data`` of metric ``m``; with ``caps``, checks the
    buckets of every point, as check_json does, before it reads them."""
    raw = data.get("aggregationTemporality")
    if type(raw) is not int and type(raw) is not str:
        return -1
    temporality = _TEMPORALITY.get(raw)
    dps = data.get("dataPoints")
    if temporality is None or type(dps) is not list:
        return -1
    max_buckets = _NO_CAP
    if caps is not None:
        max_buckets = caps.max_buckets
        if "exponentialHistogram" in m or "summary" in m:  # see _fast_metric
            counted = count_metric(m, counted, caps)
        else:
            counted += len(dps)
            if counted > caps.max_series:
                _series(counted, "metrics", caps)
    samples = ctx.samples
    n0 = len(samples)
    seconds = _seconds
    for dp in dps:
        if type(dp) is not dict:
            break
        flags = dp.get("flags")
        if type(flags) is int and flags & _FLAG_NO_RECORDED_VALUE:
            if caps is not None:
                _point_buckets(dp, caps)
            continue
        if caps is not None and ("quantileValues" in dp or "positive" in dp or "negative" in dp):
            _point_buckets(dp, caps)  # what check_json looks at beside the two lists read below
        raw = dp.get("timeUnixNano")
        t = seconds.get(raw) if type(raw) is str else None  # _fast_seconds's own first look, inline
        if t is None:
            t = _fast_seconds(raw)
            if type(t) is not float:
                break
        raw = dp.get("count")
        if raw is None:
            count = 0.0
        else:
            n = _fast_int(raw)
            if n is None or not (0 <= n <= _COUNT_MAX):
                break
            count = float(n)
        raw = dp.get("sum")
        if raw is None:
            total = math.nan  # no sum reported: no mean
        else:
            if type(raw) is float:
                total = raw
            elif type(raw) is int:
                total = float(raw)
            else:
                break
            if not (-MAX_ABS_VALUE <= total <= MAX_ABS_VALUE):
                break
        raw = dp.get("bucketCounts")
        if raw is None:
            buckets: tuple = ()
        else:
            if type(raw) is not list:
                break
            if len(raw) > max_buckets:
                _buckets(len(raw), caps)
            try:
                digits = "".join(raw)  # TypeError unless every count is a string, as proto3 JSON writes them
            except TypeError:
                break
            # Each count a non-empty run of at most 300 ASCII digits: an int in 0..10**300 that
            # parse_int reads exactly. float() of such a string is the correctly rounded value of
            # that int, as float(int(s)) is: the same float, in a third of the time.
            if not (digits.isascii() and digits.isdigit() and len(digits) <= 300 and all(raw)):
                break
            buckets = tuple(map(float, raw))
        raw = dp.get("explicitBounds")
        if raw is None:
            bounds: tuple = ()
        else:
            if type(raw) is not list:
                break
            if len(raw) > max_buckets:
                _buckets(len(raw), caps)
            if not all(map(isinstance, raw, _FLOATS)):
                break
            bounds = tuple(raw)
            good = _good_bounds.get(bounds)
            if good is None:
                prev = -_INF
                for b in bounds:
                    if not (prev < b < _INF):
                        break
                    prev = b
                else:
                    if len(_good_bounds) >= _CACHE_MAX:
                        _good_bounds.clear()
                    good = _good_bounds[bounds] = () if 0.0 in bounds else bounds
                if good is None:
                    break
            if good:
                bounds = good
        if buckets and len(buckets) != len(bounds) + 1:
            break
        attrs = dp.get("attributes")
        if not attrs:
            key = names.get(name)
            if key is None:
                key = _resource_key(name, service, res_labels, names, ctx)
        else:
            key = _point_series(attrs, name, service, res_attrs, ctx)
            if key is None:
                break
        raw = dp.get("startTimeUnixNano")
        start = seconds.get(raw) if type(raw) is str else None
        if start is None and raw is not None:
            start = _fast_seconds(raw)
            if start is _MALFORMED:
                break
        samples.append((key, t, "histogram", 0.0, False, temporality, start, count, total, bounds, buckets))
    else:
        return counted
    del samples[n0:]
    return -1
