"""One sample as the prometheus-kafka-adapter writes it (``SERIALIZATION_FORMAT=json``)::

    {"timestamp": "2026-08-20T12:00:00Z", "value": "0.93", "name": "node_cpu_util",
     "labels": {"__name__": "node_cpu_util", "instance": "node-1:9100", "job": "node"}}

``value`` is Go's ``FormatFloat``: a string that may be ``NaN`` or ``+Inf`` (dropped with a
reason). Prometheus has no metric types on the wire, so every sample is a gauge: counters are
best sent through the collector as OTLP, or named ``*_total`` and rated here (see below).
The service is the label chosen by ``ingest.prometheus_service_label``, else ``job``.
"""
from __future__ import annotations

from detectors.normalize import Sample
from detectors.records import SeriesKey
from detectors.records import parse_rfc3339
from streams.ingest import T_MAX, T_MIN, Context, PathError, expect_object, short, type_name, value_problem

_DROPPED_LABELS = frozenset({"__name__"})


def decode(obj: dict, ctx: Context, service_label: str) -> None:
    labels = expect_object(obj.get("labels"), "labels")
    for k, v in labels.items():
        if type(v) is not str:
            raise PathError(f"labels.{k}", f"expected a string (got {type_name(v)})")
    name = obj.get("name", labels.get("__name__"))
    if type(name) is not str or not name:
        raise PathError("name", f"expected a non-empty string (got {type_name(name)})")
    service = labels.get(service_label) or labels.get("job")
    if not service:
        ctx.reject(f"{name}: no '{service_label}' or 'job' label to name the service")
        return
    if not ctx.service_ok(service):
        return
    raw_t = obj.get("timestamp")
    if type(raw_t) is not str:
        raise PathError("timestamp", f"expected an RFC 3339 string (got {type_name(raw_t)})")
    try:
        t = parse_rfc3339(raw_t)
    except ValueError:
        ctx.reject(f"{name}: invalid timestamp ({short(raw_t)})")
        return
    if not (T_MIN <= t <= T_MAX):
        ctx.reject(f"{name}: timestamp {short(raw_t)} outside 2000..2100")
        return
    raw_v = obj.get("value")
    if type(raw_v) not in (str, int, float):
        raise PathError("value", f"expected a string (got {type_name(raw_v)})")
    try:
        v = float(raw_v)
    except ValueError:
        ctx.reject(f"{name}: invalid value ({short(raw_v)})")
        return
    problem = value_problem(v)
    if problem is not None:
        ctx.reject(f"{name}: {problem}")
        return
    series_labels = {k: v for k, v in labels.items()
                     if k not in _DROPPED_LABELS and k != service_label and k != "job"}
    key = SeriesKey(service, ctx.redactor.text(name), ctx.labels(series_labels))
    # Prometheus counters end in _total by convention: rate them like OTLP monotonic sums.
    if name.endswith("_total"):
        ctx.samples.append(Sample(key, t, "sum", v, True, "cumulative", None))
    else:
        ctx.samples.append(Sample(key, t, "gauge", v))
