"""The native batch: a compact JSON format for producers that speak neither OTLP nor Prometheus.

See ``docs/native-format.md``. One message carries many points of one service::

    {"schema_version": 1, "service": "api", "labels": {"host.name": "a1"},
     "points": [["cpu", 1700000000.0, 0.5],
                {"metric": "http.server.requests", "t": 1700000000.0, "value": 1234,
                 "kind": "counter", "labels": {"route": "/pay"}}]}

``t`` is unix seconds (event time). ``kind`` is ``gauge`` (the default) or ``counter`` (a
monotonic cumulative total, turned into a per-second ``.rate`` like an OTLP monotonic sum).
"""
from __future__ import annotations

from detectors.normalize import Sample
from detectors.records import SeriesKey
from streams.ingest import T_MAX, T_MIN, Context, PathError, expect_list, expect_object, short, type_name, value_problem

SCHEMA_VERSION = 1
_KINDS = {"gauge": ("gauge", False), "counter": ("sum", True)}


def _str_labels(d: dict, path: str) -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if type(v) is str:
            out[k] = v
        elif type(v) in (int, float, bool):
            out[k] = str(v).lower() if type(v) is bool else str(v)
        else:
            raise PathError(f"{path}.{k}", f"expected a string (got {type_name(v)})")
    return out


def _number(v: object) -> float | None:
    t = type(v)
    if t is float or t is int:
        return float(v)  # type: ignore[arg-type]
    if t is str:
        try:
            return float(v)  # type: ignore[arg-type]
        except ValueError:
            return None
    return None


def decode(obj: dict, ctx: Context) -> None:
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PathError("schema_version", f"expected {SCHEMA_VERSION} (got {short(version)})")
    service = obj.get("service")
    if type(service) is not str or not service:
        raise PathError("service", f"expected a non-empty string (got {type_name(service)})")
    if not ctx.service_ok(service):
        return
    common = _str_labels(expect_object(obj.get("labels"), "labels"), "labels")
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
                labels = {**common, **_str_labels(expect_object(p[3], f"{path}[3]"), f"{path}[3]")}
        elif type(p) is dict:
            metric, t, value = p.get("metric"), p.get("t"), p.get("value")
            kind = p.get("kind", "gauge")
            if p.get("labels") is not None:
                labels = {**common, **_str_labels(expect_object(p["labels"], f"{path}.labels"), f"{path}.labels")}
        else:
            raise PathError(path, f"expected a list or an object (got {type_name(p)})")
        if type(metric) is not str or not metric:
            raise PathError(f"{path}.metric", f"expected a non-empty string (got {type_name(metric)})")
        if type(kind) is not str:  # a list or an object would not even hash for the lookup below
            raise PathError(f"{path}.kind", f"expected a string (got {type_name(kind)})")
        if kind not in _KINDS:
            ctx.reject(f"{metric}: unknown kind {short(kind)} (expected gauge or counter)")
            continue
        ts = _number(t)
        if ts is None or not (T_MIN <= ts <= T_MAX):
            ctx.reject(f"{metric}: timestamp {short(t)} is not unix seconds in 2000..2100")
            continue
        v = _number(value)
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


