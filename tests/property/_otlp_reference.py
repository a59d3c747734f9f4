"""Frozen reference copy of the OTLP/JSON decoder (streams/ingest/otlp.py) and the native batch
decoder (streams/ingest/native.py), with the ``Context`` of streams/ingest/__init__.py, as they were
at commit 5400c70, before the fast paths were written.

This is the oracle of tests/property/test_otlp_fast_path.py: the production decoders must give
exactly the same samples, rejects and errors as this simple, careful code. Do not edit it to
make a test pass; a difference is a change of behaviour.

Changed on purpose since, in production and here alike (issue 18): a reason quotes a bad value
redacted before it is cut (``short``), and a label key or value cut to the redactor's
``max_value_chars`` adds a reason (``Context.labels``).
"""
from __future__ import annotations

import difflib
import math
from functools import lru_cache

import orjson

from detectors.normalize import Sample
from detectors.records import Labels, SeriesKey
from streams.ingest import _REDACTOR, MAX_ABS_VALUE, MAX_REJECTS, T_MAX, T_MIN, DecodeError, Decoded, PathError
from streams.ingest.redact import DEFAULT as DEFAULT_REDACTOR
from streams.ingest.redact import Redactor

_isfinite = math.isfinite


def type_name(v: object) -> str:
    """The JSON-ish name of a parsed value's type, for error messages."""
    if v is None:
        return "null"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def expect_list(v: object, path: str) -> list:
    """``v`` when it is a list; an absent or null field is the empty list (proto3 JSON)."""
    if type(v) is list:
        return v
    if v is None:
        return []
    raise PathError(path, f"expected a list (got {type_name(v)})")


_EMPTY: dict = {}


def expect_object(v: object, path: str) -> dict:
    if type(v) is dict:
        return v
    if v is None:
        return _EMPTY
    raise PathError(path, f"expected an object (got {type_name(v)})")


def short(v: object, limit: int = 40) -> str:
    """``repr`` of a bad value, redacted, then cut so one hostile point cannot blow up the dead-letter record."""
    r = repr(v) if type(v) is not str or len(v) <= 4 * limit + 1024 else repr(v[:4 * limit + 1024])
    if type(v) is str:
        r = _REDACTOR.get().prefix(r, limit + 16)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def nonfinite(v: float) -> str:
    return "NaN" if v != v else ("+Inf" if v > 0 else "-Inf")


def value_problem(v: float) -> str | None:
    """Why a parsed value cannot be used, or ``None`` when it can."""
    if not _isfinite(v):
        return f"non-finite value ({nonfinite(v)})"
    if v > MAX_ABS_VALUE or v < -MAX_ABS_VALUE:
        return f"value out of range ({v:.3g})"
    return None


@lru_cache(maxsize=1024)
def _did_you_mean(service: str, known: frozenset[str]) -> str:
    close = difflib.get_close_matches(service, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_service(service: str, known: frozenset[str]) -> str:
    return f"unknown service {short(service, 80)}{_did_you_mean(service, known)}"


def load(payload: bytes) -> object:
    """Parse JSON, mapping every failure to :class:`DecodeError`."""
    try:
        return orjson.loads(payload)
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        hint = ""
        if isinstance(payload, (bytes, bytearray)) and payload[:1] == b"\n" and b"{" not in payload[:8]:
            # Field 1, length-delimited: how an ExportMetrics/LogsServiceRequest protobuf starts.
            hint = " (looks like OTLP protobuf: set the collector's kafka exporter to encoding: otlp_json)"
        raise DecodeError(f"invalid JSON: {exc}{hint}") from None


class Context:  # frozen copy of streams.ingest.Context
    """Per-message accumulator shared by the decoders: samples, reasons, the label policy and
    the redactor every string leaving ingest goes through."""

    __slots__ = ("samples", "known", "keep", "redactor", "_reasons")

    def __init__(self, known: frozenset[str] | None, keep: frozenset[str], redactor: Redactor = DEFAULT_REDACTOR):
        self.samples: list[Sample] = []
        self.known = known
        self.keep = keep
        self.redactor = redactor
        self._reasons: dict[str, None] = {}  # an ordered set

    def reject(self, reason: str) -> None:
        # Not frozen: reasons are redacted where they enter since the fuzzer found a card number
        # in one (a deliberate change of output, made on both paths).
        if len(self._reasons) < MAX_REJECTS:
            self._reasons[self.redactor.prefix(reason, 2000)] = None

    def service_ok(self, service: str) -> bool:
        if self.known is None or service in self.known:
            return True
        self.reject(unknown_service(service, self.known))
        return False

    def labels(self, d: dict[str, str]) -> Labels:
        """Series labels (or log attributes): kept keys only, sorted, redacted."""
        keep = self.keep
        if keep:
            return self.redactor.labels(tuple(sorted((k, v) for k, v in d.items() if k in keep)), self.reject)
        return self.redactor.labels(tuple(sorted(d.items())), self.reject)

    def finish(self, fmt: str) -> Decoded:
        reasons = list(self._reasons)
        if not self.samples and reasons:
            more = "; ..." if len(reasons) > 3 else ""
            raise DecodeError("; ".join(reasons[:3]) + more)
        return Decoded(self.samples, reasons, fmt)


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


def resource_service(resource: object, path: str) -> tuple[str | None, dict[str, str]]:
    """``service.name`` and the other resource attributes of a resource object."""
    res = expect_object(resource, path)
    attrs = attributes(res.get("attributes"), f"{path}.attributes" if path else "attributes", {})
    service = attrs.pop(SERVICE_ATTRIBUTE, None)
    return service, attrs


# --- metrics -------------------------------------------------------------------------------

def decode(obj: dict, ctx: Context) -> None:
    for i, rm in enumerate(expect_list(obj.get("resourceMetrics"), "resourceMetrics")):
        try:
            _resource_metrics(rm, ctx)
        except PathError as exc:
            raise exc.within(f"resourceMetrics[{i}]") from None


def _resource_metrics(rm: object, ctx: Context) -> None:
    if type(rm) is not dict:
        raise PathError("", f"expected an object (got {type_name(rm)})")
    service, res_attrs = resource_service(rm.get("resource"), "resource")
    scope_metrics = expect_list(rm.get("scopeMetrics"), "scopeMetrics")
    if service is None:
        if scope_metrics:
            ctx.reject(f"resource without attribute '{SERVICE_ATTRIBUTE}'")
        return
    if not ctx.service_ok(service):
        return
    res_labels = ctx.labels(res_attrs)
    for j, sm in enumerate(scope_metrics):
        if type(sm) is not dict:
            raise PathError(f"scopeMetrics[{j}]", f"expected an object (got {type_name(sm)})")
        for k, m in enumerate(expect_list(sm.get("metrics"), f"scopeMetrics[{j}].metrics")):
            try:
                _metric(m, service, res_attrs, res_labels, ctx)
            except PathError as exc:
                raise exc.within(f"scopeMetrics[{j}].metrics[{k}]") from None


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


# --- native batch -----------------------------------------------------------------------------

SCHEMA_VERSION = 1
_KINDS = {"gauge": ("gauge", False), "counter": ("sum", True)}


def _native_str_labels(d: dict, path: str) -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if type(v) is str:
            out[k] = v
        elif type(v) in (int, float, bool):
            out[k] = str(v).lower() if type(v) is bool else str(v)
        else:
            raise PathError(f"{path}.{k}", f"expected a string (got {type_name(v)})")
    return out


def _native_number(v: object) -> float | None:
    t = type(v)
    if t is float or t is int:
        return float(v)  # type: ignore[arg-type]
    if t is str:
        try:
            return float(v)  # type: ignore[arg-type]
        except ValueError:
            return None
    return None


def native_decode(obj: dict, ctx: Context) -> None:
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PathError("schema_version", f"expected {SCHEMA_VERSION} (got {short(version)})")
    service = obj.get("service")
    if type(service) is not str or not service:
        raise PathError("service", f"expected a non-empty string (got {type_name(service)})")
    if not ctx.service_ok(service):
        return
    common = _native_str_labels(expect_object(obj.get("labels"), "labels"), "labels")
    keys: dict[tuple, SeriesKey] = {}
    for i, p in enumerate(expect_list(obj.get("points"), "points")):
        path = f"points[{i}]"
        labels = common
        kind = "gauge"
        if type(p) is list:
            if len(p) not in (3, 4):
                raise PathError(path, f"expected [metric, t, value] or [metric, t, value, labels] (got {len(p)} items)")
            metric, t, value = p[0], p[1], p[2]
            if len(p) == 4:
                labels = {**common, **_native_str_labels(expect_object(p[3], f"{path}[3]"), f"{path}[3]")}
        elif type(p) is dict:
            metric, t, value = p.get("metric"), p.get("t"), p.get("value")
            kind = p.get("kind", "gauge")
            if p.get("labels") is not None:
                labels = {**common, **_native_str_labels(expect_object(p["labels"], f"{path}.labels"), f"{path}.labels")}
        else:
            raise PathError(path, f"expected a list or an object (got {type_name(p)})")
        if type(metric) is not str or not metric:
            raise PathError(f"{path}.metric", f"expected a non-empty string (got {type_name(metric)})")
        if type(kind) is not str:  # a list or an object would not even hash for the lookup below
            raise PathError(f"{path}.kind", f"expected a string (got {type_name(kind)})")
        if kind not in _KINDS:
            ctx.reject(f"{metric}: unknown kind {short(kind)} (expected gauge or counter)")
            continue
        ts = _native_number(t)
        if ts is None or not (T_MIN <= ts <= T_MAX):
            ctx.reject(f"{metric}: timestamp {short(t)} is not unix seconds in 2000..2100")
            continue
        v = _native_number(value)
        if v is None:
            ctx.reject(f"{metric}: invalid value ({short(value)})")
            continue
        problem = value_problem(v)
        if problem is not None:
            ctx.reject(f"{metric}: {problem}")
            continue
        lab = ctx.labels(labels)
        cache_key = (metric, lab)
        key = keys.get(cache_key)
        if key is None:
            key = keys[cache_key] = SeriesKey(service, ctx.redactor.text(metric), lab)
        sample_kind, monotonic = _KINDS[kind]
        ctx.samples.append(Sample(key, ts, sample_kind, v, monotonic, "cumulative", None))


# --- the entry point, as streams.ingest.decode_metrics did it for these two formats -------------

def _decode(payload: bytes, known_services, keep_labels, redactor) -> Decoded:
    obj = load(payload)
    if type(obj) is not dict:
        raise DecodeError(f"unrecognized metrics message: expected a JSON object (got {type_name(obj)})")
    ctx = Context(known_services, keep_labels, redactor)
    if "resourceMetrics" in obj:
        decode(obj, ctx)
        return ctx.finish("otlp")
    if "schema_version" in obj and "points" in obj:
        native_decode(obj, ctx)
        return ctx.finish("native")
    raise DecodeError("not an OTLP/JSON or native message (the reference covers only these)")


def decode_metrics(payload: bytes, *, known_services: frozenset[str] | None,
                   keep_labels: frozenset[str] = frozenset(), redactor: Redactor = DEFAULT_REDACTOR) -> Decoded:
    """The reference for OTLP/JSON and native messages, with ``_guard``'s error mapping."""
    token = _REDACTOR.set(redactor)
    try:
        return _decode(payload, known_services, keep_labels, redactor)
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError("document nested too deeply") from None
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(f"internal decoder error: {type(exc).__name__}: {short(str(exc), 120)}") from None
    finally:
        _REDACTOR.reset(token)
