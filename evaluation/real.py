"""``make eval-real``: real fault days as OTLP/JSON through the production core, scored by alerts and incidents.

    python -m evaluation.real [--out DIR] [--shared DIR] [--dataset NAME ...] [--jobs N] [--signals all|metrics]

Datasets (``--dataset``):

``nezha-ob``  ``SHARED/real/nezha/2022-08-23``: Online Boutique, 32 faults, 12 h of metrics.
``nezha-tt``  ``SHARED/real/nezha/2023-01-29``: Train Ticket, 28 faults, 15 h of metrics, with its
              spans and logs (``--signals metrics`` leaves them out, ``traces`` or ``logs`` keeps
              one: see the caveat below).
``sockshop``  ``SHARED/rca-data``: the ten Sock Shop cases (:mod:`evaluation.rca_data`), one
              pipeline each, reported together with per-case results.

Conversion of a Nezha day, as an OpenTelemetry Collector's kafka exporter (``otlp_json``) would
write it: one ``ExportMetricsServiceRequest`` per minute holding every pod's row of that minute
(rows are grouped by ``TimeStamp`` floored to the minute; each point keeps its own time).
Every numeric column of ``metric/<pod>_metric.csv.gz`` but ``Time``/``TimeStamp``/``PodName``
is a gauge named exactly as the column (``CpuUsageRate(%)``, ``PodServerLatencyP90(s)``): the
names follow no convention and are not renamed, so nothing measured here depends on them.
Resource attributes: ``service.name`` (the pod name less its last two dash-separated parts) and
``k8s.pod.name``. Empty and NaN cells are left out. ``metric/front_service.csv.gz`` (the entry
point's success rate and latency percentiles) is attached to the service whose pod it measures:
the pod whose server latency p90 equals its ``LatencyP90(s)`` on most rows (``frontend``,
``ts-ui-dashboard``); of its columns only those that do not repeat one of that pod's own columns
on every row are kept (a repeated series would only count its alerts twice), under their own
names, with ``service.name`` alone as resource. ``metric/source_50.csv.gz`` (Online Boutique: the
median latency of each caller's calls to each callee, a minute apart, measured at the caller; its
columns are ``<caller>_<callee>``) becomes the gauge ``CallLatencyP50(s)`` of the caller's
service, with ``peer.service`` (the callee) on each point, as client instrumentation and service
meshes report per-destination latency. ``destination_50`` (the same calls measured at the
callee) is not used: the callee's own server latency is in its pod's columns already.

The topology (``OUT/<dataset>/topology.yaml``) has one service per pod's service. Online
Boutique's calls come from ``metric/dependency.csv.gz`` (``Source,Target,Weight``; rows whose
target is an IP address or whose ends are not a pod's service, such as ``loadgenerator``, are
dropped). Train Ticket ships no call graph: it is derived from the spans of ``trace/*.csv.gz``
(a call is a span whose parent span belongs to another service) and used both as the scoring
truth (who calls the root cause) and as ``depends_on``, standing in for the call graph the
pipeline will learn from traces. The entrypoint is the service no one calls that calls the most.
Spans and logs (a day that has ``trace/`` and ``log/``: Train Ticket), with ``signals="all"``:

- ``trace/*.csv.gz`` (``TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,
  EndTimeUnixNano,Duration``; ``ParentID`` ``root`` for none; no kind, no status) become
  ``ExportTraceServiceRequest`` lines, one per minute of span end times (the files overlap, so
  spans are taken once by ``SpanID``), a resource per pod (``service.name`` as for metrics,
  ``k8s.pod.name``), ids in hex as they are, ``name`` the operation, no ``kind`` and no
  ``status``: the pipeline tells requests and calls from the parent spans. Written to
  ``OUT/nezha-tt/traces.otlp.jsonl``.
- ``log/*.csv.gz`` (``TimeUnixNano,PodName,TraceID,SpanID,Log``; ``Log`` a Docker JSON line whose
  ``log`` field is the text, the level inside it: ``16:42:22.382 INFO  t.s.TravelServiceImpl#532
  ...``) become ``ExportLogsServiceRequest`` lines, one per minute, a resource per pod, each
  record with ``timeUnixNano``, ``severityText``/``severityNumber`` from the first level word
  of the text (INFO when none), the text as ``body``, ``traceId`` and ``spanId``; lines whose
  Docker JSON does not parse, or whose time is garbage, are left out. Written to ``OUT/nezha-tt/logs.otlp.jsonl``.

They are merged with the metrics by event time exactly as ``aiops replay --traces --logs``
merges them. **Caveat**: Nezha recorded spans and logs only for each fault's minute and the two
minutes after it, never in the quiet hours, so their mere presence marks the faults (and the
quiet period has none to raise false incidents). Figures with them are optimistic; report them
beside the metrics-only figures (``--signals metrics``), never instead of them. Only the
correlation of trace ids between logs and spans is not used (logs and spans reach the detectors
on separate topics). The topology (declared calls) stays the one derived from the traces, for
the scoring truth as before.

Faults: ``DAY-fault_list.json``; ``inject_time`` read as UTC is the start (``inject_timestamp``
is ignored: it disagrees for some faults), ``inject_pod`` the root-cause service.

The messages go through :func:`evaluation.core.run_core` (byte-identical to ``aiops replay
--drain``) with the production defaults (``DetectorSettings()``, ``CorrelationSettings()``),
unless ``topology_update`` changes them. What is measured, per dataset:

1. false incidents per quiet hour: incidents opened in the quiet period, all false, over its
   length (also the count and the rate per quiet day = per hour x 24). Nezha: from the last
   fault's start + 15 min to the last row. Sock Shop: each case's normal segment, from the end
   of the detectors' warm-up (``warmup_points`` rows) to 60 s before the fault (so a fault's own
   onset window is never counted as quiet): about 3 minutes a case, half an hour in all, so its
   per-hour rates rest on a small base and a single incident moves them by about 2/h. An
   incident already open when the quiet period starts absorbs its alerts without opening
   another, so also reported: the incidents still open then, and the incident records that
   notify (page, update, resolve) in the quiet period, per quiet day.
2. alerts per series-day on quiet data: alert episodes (distinct ``(series, starts_at)`` of the
   firing alerts) starting in the quiet period, over (series with a point in the quiet period x
   quiet days).
3. fault recall: a fault is found when an alert on its service or on any service with a path to
   it in the call graph (a caller, direct or not) starts within [start - 60 s, start + 5 min].
   The missed faults are listed. ``delay p50``: the first such alert's onset - start.
4. faults with their own incident: an incident that opened within [start - 60 s, start + 5 min]
   and involves (``services``, any version) the fault's service or a caller. AC@1, AC@3, Avg@5
   of the true service in the ``root_causes`` of such an incident's first notifying record (the
   first version whose ``notification`` is not ``silent``: what the on-call is paged with), the
   best over the fault's own incidents, over all faults (no own incident or no page: a miss).
   Incidents per fault: incidents opened in the fault period (first start - 60 s to the start of
   the quiet period) / faults.

What the data forces: the Nezha metrics start about two minutes before the first fault, so the
first four faults of each day fall inside the detectors' warm-up (30 one-minute points, 30
minutes) and cannot be alerted on; recall is also given without them (``recall_after_warmup``).
``PodSuccessRate(%)`` is 0 on every row of every pod on both days (converted as it is).

Prints a table and writes ``OUT/results.json``; per dataset ``OUT/<ds>/metrics.otlp.jsonl``
(and ``traces.otlp.jsonl``, ``logs.otlp.jsonl`` where used), ``topology.yaml``,
``incidents.jsonl`` (every record, as ``aiops replay --drain`` writes them) and ``alerts.jsonl`` (every alert event, firing and resolved, as on ``aiops.alerts``); Sock
Shop's per case under ``OUT/sockshop/<case>/`` beside one ``OUT/sockshop/topology.yaml``.
Replay one with ``aiops replay --topology OUT/nezha-ob/topology.yaml --input
OUT/nezha-ob/metrics.otlp.jsonl --output I.jsonl --drain`` (for Train Ticket with its spans and
logs, add ``--traces OUT/nezha-tt/traces.otlp.jsonl --logs OUT/nezha-tt/logs.otlp.jsonl``).

Programmatic use (each process converts a dataset once and keeps it in memory)::

    from evaluation.real import evaluate_dataset
    stricter = lambda t: t.model_copy(update={"detectors": t.detectors.model_copy(update={"threshold": 0.95})})
    evaluate_dataset("nezha-ob", topology_update=stricter)["recall"]
"""
from __future__ import annotations

import argparse
import csv
import functools
import gzip
import heapq
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import networkx as nx
import orjson
import yaml

from detectors.records import Alert, parse_rfc3339
from evaluation import rca_data
from evaluation.core import run_core
from evaluation.metrics import (MATCH_BEFORE, FaultTruth, ac_at, avg_at_5, first_versions, notifies, quantile,
                                rank_of)
from streams import codec
from streams.config import Topology, parse_topology
from streams.ingest import T_MAX, T_MIN

DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared"
NEZHA_DAYS = {"nezha-ob": ("2022-08-23", "Online Boutique"), "nezha-tt": ("2023-01-29", "Train Ticket")}
DATASETS = ("nezha-ob", "nezha-tt", "sockshop")
# all: metrics, and spans and logs where the data has them; traces, logs: metrics and that one
SIGNALS = ("all", "metrics", "traces", "logs")

FOUND_WITHIN = 300.0  # seconds after a fault's start in which its alert or incident must start
QUIET_AFTER_LAST_FAULT = 900.0  # the last fault and its recovery are over by then
NON_METRIC_COLUMNS = frozenset({"Time", "TimeStamp", "PodName", "ServiceName"})
SCOPE = {"name": "aiops.evaluation.real", "version": "1"}
QUIET_LISTED = 8  # quiet-period incidents printed per dataset; results.json has them all

TopologyUpdate = Callable[[Topology], Topology]


# --- records ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Segment:
    """One continuous stream through one pipeline (a Nezha day, or one Sock Shop case)."""

    name: str
    messages: list[dict]
    faults: list[FaultTruth]  # ``related``: the callers of the fault's service, direct or not
    quiet: tuple[float, float]  # [start, end) in unix seconds: no fault is active
    fault_period: tuple[float, float]  # [start, end): where the faults' incidents open
    quiet_series: int  # series with a point in the quiet period
    warmup_end: float  # the detectors' warm-up ends about here (first point + warmup_points steps)
    traces: tuple[dict, ...] = ()  # ExportTraceServiceRequest, in time order
    logs: tuple[dict, ...] = ()  # ExportLogsServiceRequest, in time order


@dataclass(frozen=True)
class Dataset:
    name: str
    system: str
    topology: Topology  # generated from the data, production defaults
    topology_yaml: str
    segments: list[Segment]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FaultScore:
    fault: FaultTruth
    alert_delay: float | None  # first qualifying alert's onset - start; None: missed
    own_incidents: tuple[str, ...]
    rank_first: int | None  # best rank of the truth in the own incidents' first notifying records

    @property
    def found(self) -> bool:
        return self.alert_delay is not None


# --- time and names --------------------------------------------------------------------------

def service_of(pod: str) -> str:
    """The service of a Kubernetes pod name: less its last two dash-separated parts.

    >>> service_of("ts-ui-dashboard-5477b965f-2chkr"), service_of("frontend-579b9bff58-t2dbm")
    ('ts-ui-dashboard', 'frontend')
    """
    return "-".join(pod.split("-")[:-2])


def utc_seconds(text: str) -> float:
    """``YYYY-MM-DD HH:MM:SS`` read as UTC.

    >>> utc_seconds("2022-08-23 12:01:25")
    1661256085.0
    """
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


def _number(text: str) -> float | None:
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _read_gz_csv(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as fh:
        return list(csv.DictReader(fh))


# --- Nezha: faults, call graph, metrics -------------------------------------------------------

@dataclass(frozen=True)
class InjectedFault:
    start: float
    pod: str
    service: str
    kind: str


def read_fault_list(path: Path) -> list[InjectedFault]:
    """The faults of ``DAY-fault_list.json`` (``{hour: [fault, ...]}``), by start."""
    by_hour = json.loads(path.read_text())
    out = [InjectedFault(utc_seconds(f["inject_time"]), f["inject_pod"], service_of(f["inject_pod"]), f["inject_type"])
           for hour in by_hour.values() for f in hour]
    return sorted(out, key=lambda f: (f.start, f.service))


def dependency_calls(path: Path, services: Iterable[str]) -> set[tuple[str, str]]:
    """Caller -> callee pairs of a ``Source,Target,Weight`` file between known services (rows to
    IP addresses, and ends that are no pod's service such as the load generator, are dropped)."""
    known = set(services)
    return {(r["Source"], r["Target"]) for r in _read_gz_csv(path)
            if r["Source"] in known and r["Target"] in known and r["Source"] != r["Target"]}


def trace_calls(paths: Iterable[Path]) -> set[tuple[str, str]]:
    """Caller -> callee pairs of spans: a span whose parent span (same file) is another service's."""
    calls: set[tuple[str, str]] = set()
    for path in paths:
        rows = _read_gz_csv(path)
        service_by_span = {r["SpanID"]: service_of(r["PodName"]) for r in rows}
        for r in rows:
            caller = service_by_span.get(r["ParentID"])
            callee = service_of(r["PodName"])
            if caller is not None and caller != callee:
                calls.add((caller, callee))
    return calls


def topology_spec(name: str, services: Iterable[str], calls: Iterable[tuple[str, str]]) -> dict:
    """The ``topology.yaml`` mapping: every service, its callees, the entrypoint marked (called by
    nobody and calling the most)."""
    deps: dict[str, list[str]] = {s: [] for s in sorted(services)}
    for caller, callee in sorted(calls):
        deps.setdefault(caller, []).append(callee)
        deps.setdefault(callee, [])
    called = {c for cs in deps.values() for c in cs}
    spec: dict = {"name": name, "services": {s: {"depends_on": cs} if cs else {} for s, cs in sorted(deps.items())}}
    roots = [s for s in deps if s not in called and deps[s]]
    if roots:
        entry = max(roots, key=lambda s: (len(deps[s]), s))
        spec["services"][entry]["entrypoint"] = True
    return spec


def _gauge(name: str, ns: str, value: float) -> dict:
    return {"name": name, "gauge": {"dataPoints": [{"timeUnixNano": ns, "asDouble": value}]}}


def _resource(attributes: dict[str, str], metrics: list[dict]) -> dict:
    return {"resource": {"attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()]},
            "scopeMetrics": [{"scope": SCOPE, "metrics": metrics}]}


def _metric_columns(header: Iterable[str]) -> list[str]:
    return [c for c in header if c not in NON_METRIC_COLUMNS]


def minute_requests(tables: Sequence[tuple[dict[str, str], list[dict[str, str]]]]) -> list[dict]:
    """One ``ExportMetricsServiceRequest`` per minute from per-resource tables.

    ``tables``: (resource attributes, CSV rows with ``TimeStamp`` in epoch seconds). Rows are
    grouped by their time floored to the minute; every numeric column other than the
    time/name columns becomes a gauge of that name. Requests come in time order, resources in
    the order given.
    """
    by_minute: dict[int, list[dict]] = {}
    for attributes, rows in tables:
        if not rows:
            continue
        columns = _metric_columns(rows[0].keys())
        for row in rows:
            t = _number(row.get("TimeStamp", ""))
            if t is None:
                continue
            ns = str(int(round(t * 1e9)))
            metrics = [_gauge(c, ns, x) for c in columns if (x := _number(row[c])) is not None]
            if metrics:
                by_minute.setdefault(int(t // 60), []).append(_resource(attributes, metrics))
    return [{"resourceMetrics": by_minute[m]} for m in sorted(by_minute)]


CALL_LATENCY_METRIC = "CallLatencyP50(s)"


def call_latency_requests(rows: list[dict[str, str]], services: Iterable[str]) -> tuple[dict[int, list[dict]], int]:
    """``source_50.csv`` rows as resources by minute (see the module docstring), and how many
    caller-callee columns were used (a column whose two ends are not both a service is not)."""
    services = set(services)
    pairs = {}
    for col in rows[0].keys() if rows else ():
        for i, ch in enumerate(col):
            if ch == "_" and col[:i] in services and col[i + 1:] in services:
                pairs[col] = (col[:i], col[i + 1:])
    by_minute: dict[int, list[dict]] = {}
    for row in rows:
        t = _number(row.get("timestamp", ""))
        if t is None:
            continue
        ns = str(int(round(t * 1e9)))
        by_caller: dict[str, list[dict]] = {}
        for col, (caller, callee) in pairs.items():
            x = _number(row[col])
            if x is not None:
                by_caller.setdefault(caller, []).append(
                    {"timeUnixNano": ns, "asDouble": x,
                     "attributes": [{"key": "peer.service", "value": {"stringValue": callee}}]})
        for caller, points in sorted(by_caller.items()):
            metric = {"name": CALL_LATENCY_METRIC, "gauge": {"dataPoints": points}}
            by_minute.setdefault(int(t // 60), []).append(_resource({"service.name": caller}, [metric]))
    return by_minute, len(pairs)


def front_service_table(rows: list[dict[str, str]], pods: dict[str, list[dict[str, str]]]
                        ) -> tuple[str, list[dict[str, str]], list[str]] | None:
    """Which pod ``front_service.csv`` measures, and its rows cut to the columns that pod lacks.

    The pod is the one whose ``PodServerLatencyP90(s)`` equals ``LatencyP90(s)`` in the same
    minute on most rows (at least half). A column whose every row equals one of the pod's own
    columns in that minute is dropped. Returns (pod, rows, dropped columns), or ``None`` when no
    pod matches (then nothing is attached).
    """
    if not rows or "LatencyP90(s)" not in rows[0]:
        return None
    by_minute = {pod: {int(float(r["TimeStamp"]) // 60): r for r in pr} for pod, pr in pods.items()}

    def same_minute(pod: str, row: dict) -> dict | None:
        return by_minute[pod].get(int(float(row["TimeStamp"]) // 60))

    def agreeing(pod: str) -> int:
        return sum(1 for r in rows if (p := same_minute(pod, r)) is not None
                   and p.get("PodServerLatencyP90(s)") == r["LatencyP90(s)"])

    pod = max(sorted(pods), key=agreeing, default=None)
    if pod is None or agreeing(pod) * 2 < len(rows):
        return None
    pod_columns = _metric_columns(next(iter(pods[pod]), {}).keys())
    dropped = []
    for column in _metric_columns(rows[0].keys()):
        for own in pod_columns:
            if all((p := same_minute(pod, r)) is not None and p.get(own) == r[column] for r in rows):
                dropped.append(column)
                break
    kept = [{k: v for k, v in r.items() if k not in dropped} for r in rows]
    return pod, kept, dropped


def _series_in(messages: Iterable[dict], start: float, end: float) -> int:
    """Distinct (resource attributes, metric name) with a point in [start, end)."""
    seen: set[tuple] = set()
    lo, hi = start * 1e9, end * 1e9
    for msg in messages:
        for rm in msg["resourceMetrics"]:
            res = tuple((a["key"], a["value"]["stringValue"]) for a in rm["resource"]["attributes"])
            for sm in rm["scopeMetrics"]:
                for metric in sm["metrics"]:
                    if any(lo <= int(p["timeUnixNano"]) < hi for p in metric["gauge"]["dataPoints"]):
                        seen.add((res, metric["name"]))
    return len(seen)


def _message_times(messages: Iterable[dict]) -> list[float]:
    return [int(p["timeUnixNano"]) / 1e9 for msg in messages for rm in msg["resourceMetrics"]
            for sm in rm["scopeMetrics"] for metric in sm["metrics"] for p in metric["gauge"]["dataPoints"]]


def callers_of(topology: Topology, service: str) -> frozenset[str]:
    g = topology.graph()
    return frozenset(nx.ancestors(g, service)) if service in g else frozenset()


def _attrs(attributes: dict[str, str]) -> list[dict]:
    return [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()]


def _pod_resource(pod: str) -> list[dict]:
    return _attrs({"service.name": service_of(pod), "k8s.pod.name": pod})


def _ns(text: str) -> int | None:
    """Nanoseconds written as an integer (or, by some writers, as a float: ``1.6e+18``).

    >>> _ns("1674981768697000000"), _ns("1.661256000005e+18"), _ns("soon")
    (1674981768697000000, 1661256000004999936, None)
    """
    try:
        return int(text)
    except ValueError:
        x = _number(text)
        return int(x) if x is not None else None


def trace_requests(paths: Iterable[Path]) -> list[dict]:
    """Nezha span rows as ``ExportTraceServiceRequest`` objects, one per minute of end time
    (see the module docstring): spans taken once by ``SpanID``, a resource per pod; rows without
    usable times are left out."""
    by_minute: dict[int, dict[str, list[dict]]] = {}
    seen: set[str] = set()
    for path in paths:
        for r in _read_gz_csv(path):
            sid = r["SpanID"]
            start, end = _ns(r["StartTimeUnixNano"]), _ns(r["EndTimeUnixNano"])
            if not sid or sid in seen or start is None or end is None:
                continue
            seen.add(sid)
            span = {"traceId": r["TraceID"], "spanId": sid, "name": r["OperationName"],
                    "startTimeUnixNano": str(start), "endTimeUnixNano": str(end)}
            if r["ParentID"] and r["ParentID"] != "root":
                span["parentSpanId"] = r["ParentID"]
            by_minute.setdefault(end // 60_000_000_000, {}).setdefault(r["PodName"], []).append(span)
    out = []
    for minute in sorted(by_minute):
        pods = by_minute[minute]
        out.append({"resourceSpans": [
            {"resource": {"attributes": _pod_resource(pod)},
             "scopeSpans": [{"scope": SCOPE, "spans": sorted(pods[pod], key=lambda s: (int(s["endTimeUnixNano"]),
                                                                                        s["spanId"]))}]}
            for pod in sorted(pods)]})
    return out


_LEVEL = re.compile(r"\b(TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL)\b")
_SEVERITY = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "WARNING": 13, "ERROR": 17, "FATAL": 21}


def log_requests(paths: Iterable[Path]) -> tuple[list[dict], int]:
    """Nezha log rows as ``ExportLogsServiceRequest`` objects, one per minute (see the module
    docstring), and the number of rows left out (their Docker JSON does not parse, or their time
    is not within 2000..2100)."""
    by_minute: dict[int, dict[str, list[dict]]] = {}
    seen: set[tuple[str, str, str]] = set()
    bad = 0
    for path in paths:
        for r in _read_gz_csv(path):
            key = (r["TimeUnixNano"], r["PodName"], r["Log"])
            if key in seen:
                continue
            seen.add(key)
            try:
                text = json.loads(r["Log"])["log"].rstrip("\n")
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            ns = _ns(r["TimeUnixNano"])
            if ns is None or not T_MIN * 1e9 <= ns <= T_MAX * 1e9:  # a few rows carry garbage times
                bad += 1
                continue
            m = _LEVEL.search(text[:80])
            level = m.group(1) if m else "INFO"
            rec = {"timeUnixNano": str(ns), "severityNumber": _SEVERITY[level], "severityText": level,
                   "body": {"stringValue": text}}
            if r.get("TraceID"):
                rec["traceId"] = r["TraceID"]
            if r.get("SpanID"):
                rec["spanId"] = r["SpanID"]
            by_minute.setdefault(ns // 60_000_000_000, {}).setdefault(r["PodName"], []).append(rec)
    out = []
    for minute in sorted(by_minute):
        pods = by_minute[minute]
        out.append({"resourceLogs": [
            {"resource": {"attributes": _pod_resource(pod)},
             "scopeLogs": [{"scope": SCOPE, "logRecords": sorted(
                 pods[pod], key=lambda x: (int(x["timeUnixNano"]), x["body"]["stringValue"]))}]}
            for pod in sorted(pods)]})
    return out, bad


def _latest_ns(msg: dict) -> int:
    """The event time ``aiops replay`` merges a request by (:func:`streams.replay.message_time`):
    its latest point, record or span end time."""
    if "resourceSpans" in msg:
        return max(int(sp["endTimeUnixNano"]) for rs in msg["resourceSpans"] for ss in rs["scopeSpans"]
                   for sp in ss["spans"])
    if "resourceLogs" in msg:
        return max(int(r["timeUnixNano"]) for rl in msg["resourceLogs"] for sl in rl["scopeLogs"]
                   for r in sl["logRecords"])
    return max(int(p["timeUnixNano"]) for rm in msg["resourceMetrics"] for sm in rm["scopeMetrics"]
               for metric in sm["metrics"] for p in metric["gauge"]["dataPoints"])


def merged_messages(segment: Segment) -> list:
    """The segment's messages for :func:`evaluation.core.run_core`: metrics alone, or metrics,
    logs and spans tagged by kind and merged by event time as ``aiops replay`` merges its files
    (metrics first on a tie, then logs, then spans)."""
    if not segment.traces and not segment.logs:
        return segment.messages

    def timed(msgs, order: int, kind: str):
        last = -1
        for i, m in enumerate(msgs):
            last = max(last, _latest_ns(m))
            yield (last, order, i, kind, m)

    streams = [timed(segment.messages, 0, "metrics"), timed(segment.logs, 1, "logs"),
               timed(segment.traces, 3, "traces")]
    return [(kind, m) for _, _, _, kind, m in heapq.merge(*streams)]


def load_nezha_day(day_dir: Path, name: str, system: str, signals: str = "all") -> Dataset:
    """Convert one Nezha day (see the module docstring)."""
    day = day_dir.name
    metric_dir = day_dir / "metric"
    pods = {p.name[: -len("_metric.csv.gz")]: _read_gz_csv(p) for p in sorted(metric_dir.glob("*_metric.csv.gz"))}
    if not pods:
        raise FileNotFoundError(f"{metric_dir}: no <pod>_metric.csv.gz")
    services = {service_of(p) for p in pods}
    notes = []
    tables = [({"service.name": service_of(pod), "k8s.pod.name": pod}, rows) for pod, rows in pods.items()]
    front = metric_dir / "front_service.csv.gz"
    if front.exists():
        attached = front_service_table(_read_gz_csv(front), pods)
        if attached is None:
            notes.append("front_service.csv: matches no pod's server latency; not used")
        else:
            pod, rows, dropped = attached
            kept = _metric_columns(rows[0].keys()) if rows else []
            notes.append(f"front_service.csv measures {pod}: kept {', '.join(kept) or 'nothing'} as gauges of "
                         f"{service_of(pod)}; dropped {', '.join(dropped) or 'nothing'} (equal to the pod's own "
                         f"columns on every row)")
            if kept:
                tables.append(({"service.name": service_of(pod)}, rows))
    dependency = metric_dir / "dependency.csv.gz"
    traces = sorted((day_dir / "trace").glob("*.csv.gz"))
    if dependency.exists():
        calls = dependency_calls(dependency, services)
        notes.append(f"call graph: {len(calls)} calls between pod services from metric/dependency.csv")
    elif traces:
        calls = trace_calls(traces)
        notes.append(f"call graph: {len(calls)} calls derived from {len(traces)} trace files (scoring truth and depends_on)")
    else:
        calls = set()
        notes.append("call graph: none (no dependency.csv, no traces)")
    spec = topology_spec(f"nezha-{day}", services, calls)
    topology = parse_topology(spec, f"{day_dir} (generated)")
    messages = minute_requests(tables)
    source = metric_dir / "source_50.csv.gz"
    if source.exists():
        by_minute, n_pairs = call_latency_requests(_read_gz_csv(source), services)
        # Each minute's calls join that minute's request (or make one), so a minute is still one request.
        minutes = {int(_latest_ns(m) // 60_000_000_000): m for m in messages}
        for minute, resources in sorted(by_minute.items()):
            if minute in minutes:
                minutes[minute]["resourceMetrics"].extend(resources)
            else:
                minutes[minute] = {"resourceMetrics": resources}
        messages = [minutes[m] for m in sorted(minutes)]
        notes.append(f"calls: {n_pairs} caller-callee latencies from metric/source_50.csv as {CALL_LATENCY_METRIC} "
                     f"of the caller, labelled peer.service")

    injected = read_fault_list(day_dir / f"{day}-fault_list.json")
    unknown = sorted({f.service for f in injected} - set(topology.services))
    if unknown:
        notes.append(f"faults on services without metrics: {', '.join(unknown)}")
    faults = [FaultTruth(f"{day} {datetime.fromtimestamp(f.start, timezone.utc):%H:%M:%S} {f.service} {f.kind}",
                         f.service, f.kind, f.start, f.start + FOUND_WITHIN, callers_of(topology, f.service),
                         category=f.kind, run=name) for f in injected]
    times = _message_times(messages)
    first, last = min(times), max(times)
    quiet = (faults[-1].start + QUIET_AFTER_LAST_FAULT, last + 1.0)  # +1: the last point is in it
    period = (faults[0].start - MATCH_BEFORE, quiet[0])
    warmup_end = first + topology.detectors.warmup_points * 60.0
    in_warmup = sum(1 for f in faults if f.start < warmup_end)
    notes.append(f"metrics start {(faults[0].start - first) / 60:.1f} min before the first fault; "
                 f"{in_warmup} fault(s) start inside the detectors' warm-up")
    spans: list[dict] = []
    logs: list[dict] = []
    log_files = sorted((day_dir / "log").glob("*.csv.gz"))
    if signals in ("all", "traces") and traces:
        spans = trace_requests(traces)
        n_spans = sum(len(ss["spans"]) for m in spans for rs in m["resourceSpans"] for ss in rs["scopeSpans"])
        notes.append(f"signals: {n_spans} spans ({len(spans)} requests)")
    if signals in ("all", "logs") and log_files:
        logs, bad = log_requests(log_files)
        n_logs = sum(len(sl["logRecords"]) for m in logs for rl in m["resourceLogs"] for sl in rl["scopeLogs"])
        notes.append(f"signals: {n_logs} log records ({len(logs)} requests"
                     f"{f', {bad} undecodable lines left out' if bad else ''})")
    if spans or logs:
        notes.append("spans and logs exist only for each fault's minute and the two after it, so their presence "
                     "marks the faults: OPTIMISTIC, compare with --signals metrics")
    elif traces or log_files:
        notes.append(f"signals: {signals} (--signals); the day's spans and logs are left out")
    segment = Segment(day, messages, faults, quiet, period, _series_in(messages, *quiet), warmup_end,
                      tuple(spans), tuple(logs))
    return Dataset(name, system, topology, yaml.safe_dump(spec, sort_keys=False), [segment], tuple(notes))


def load_sockshop(data_dir: Path) -> Dataset:
    """The ten Sock Shop cases of ``rca-data``, each its own segment (see the module docstring)."""
    readme = (data_dir / "README.md").read_text()
    topology = rca_data.readme_topology(readme)
    spec = {"name": topology.name, "services": {
        n: s.model_dump(include={"depends_on", "kind", "entrypoint"}, exclude_defaults=True)
        for n, s in topology.services.items()}}
    segments = []
    for case_dir in rca_data.case_dirs(data_dir):
        name = case_dir.parent.name
        messages, fault_start = rca_data.case_messages(case_dir)
        times = sorted(set(_message_times(messages)))
        step = quantile([b - a for a, b in zip(times, times[1:])], 0.5)
        warmup_end = times[0] + topology.detectors.warmup_points * step
        service, kind = name.split("-", 1)
        fault = FaultTruth(name, service, kind, fault_start, fault_start + FOUND_WITHIN,
                           callers_of(topology, service), category=kind, run="sockshop")
        quiet = (warmup_end, fault_start - MATCH_BEFORE)
        segments.append(Segment(name, messages, [fault], quiet, (fault_start - MATCH_BEFORE, times[-1] + step),
                                _series_in(messages, *quiet), warmup_end))
    if not segments:
        raise FileNotFoundError(f"{data_dir}: no <svc>-<fault>/1/anomalous.csv")
    notes = ("one pipeline per case; quiet period: the normal segment after the warm-up, up to 60 s before the "
             "fault (about 3 min a case), so per-hour rates rest on about half an hour",)
    return Dataset("sockshop", "Sock Shop (RCD)", topology, yaml.safe_dump(spec, sort_keys=False), segments, notes)


@functools.lru_cache(maxsize=None)
def load_dataset(name: str, shared: Path = DEFAULT_SHARED, signals: str = "all") -> Dataset:
    """A dataset converted once per process (the cache is what makes repeated experiments cheap).
    ``signals``: ``"all"`` (metrics, and spans and logs where the data has them) or ``"metrics"``."""
    if signals not in SIGNALS:
        raise ValueError(f"unknown signals {signals!r} (one of {', '.join(SIGNALS)})")
    if name in NEZHA_DAYS:
        day, system = NEZHA_DAYS[name]
        return load_nezha_day(Path(shared) / "real" / "nezha" / day, name, system, signals)
    if name == "sockshop":
        return load_sockshop(Path(shared) / "rca-data")
    raise ValueError(f"unknown dataset {name!r} (one of {', '.join(DATASETS)})")


# --- scoring (pure functions of alerts and incident records) -----------------------------------

def alert_onsets(alerts: Iterable) -> dict[tuple[str, float], str]:
    """Each alert episode, (series, starts_at) -> service, from the firing alert events (an
    episode re-fires as it worsens; it is counted once)."""
    out: dict[tuple[str, float], str] = {}
    for a in alerts:
        if isinstance(a, Alert) and a.status == "firing":
            out.setdefault((a.series, a.starts_at), a.service)
    return out


def first_alert_delay(fault: FaultTruth, onsets: dict[tuple[str, float], str]) -> float | None:
    """Onset of the first alert on the fault's service or a caller within [start - 60 s,
    start + 5 min], less the start; ``None`` when there is none (the fault is missed)."""
    services = fault.related | {fault.service}
    starts = [t for (_, t), svc in onsets.items()
              if svc in services and fault.start - MATCH_BEFORE <= t <= fault.start + FOUND_WITHIN]
    return min(starts) - fault.start if starts else None


def incidents_opened(records: Iterable[dict]) -> dict[str, dict]:
    """Per incident id: when it opened and every service any of its versions involved."""
    out: dict[str, dict] = {}
    for r in records:
        inc = out.setdefault(r["id"], {"id": r["id"], "opened_at": parse_rfc3339(r["opened_at"]), "services": set(),
                                       "title": r.get("title", "")})
        inc["services"].update(r.get("services") or ())
    return out


def opened_between(opened: dict[str, dict], start: float, end: float) -> list[dict]:
    return sorted((i for i in opened.values() if start <= i["opened_at"] < end), key=lambda i: (i["opened_at"], i["id"]))


def own_incidents(fault: FaultTruth, opened: dict[str, dict]) -> list[str]:
    """Incidents opened within [start - 60 s, start + 5 min] that involve the fault's service or a caller."""
    services = fault.related | {fault.service}
    return [i["id"] for i in opened_between(opened, fault.start - MATCH_BEFORE, fault.start + FOUND_WITHIN + 1e-9)
            if i["services"] & services]


def score_fault(fault: FaultTruth, onsets: dict[tuple[str, float], str], opened: dict[str, dict],
                firsts: dict[str, dict]) -> FaultScore:
    own = own_incidents(fault, opened)
    ranks = [r for r in (rank_of(fault.service, firsts[i]) for i in own if i in firsts) if r is not None]
    return FaultScore(fault, first_alert_delay(fault, onsets), tuple(own), min(ranks) if ranks else None)


@dataclass
class SegmentRun:
    """One segment's figures before they are pooled into the dataset's."""

    segment: Segment
    scores: list[FaultScore]
    quiet_incidents: list[dict]
    quiet_alerts: int
    quiet_pages: int  # records that page (``notification: page``, openings and reopenings) in the quiet period
    quiet_notifications: int  # records that reach a receiver (page, update, resolve) in the quiet period
    open_at_quiet_start: int  # incidents still open when the quiet period starts (they absorb its alerts)
    fault_period_incidents: int
    messages: int
    alert_events: int
    records: list[dict] = field(repr=False)
    alerts: list = field(repr=False)

    @property
    def quiet_hours(self) -> float:
        return max(0.0, self.segment.quiet[1] - self.segment.quiet[0]) / 3600.0


def open_at(records: Iterable[dict], t: float) -> int:
    """Incidents open at ``t``: their last record before it says ``open``."""
    last: dict[str, dict] = {}
    for r in records:
        if parse_rfc3339(r["updated_at"]) < t and (r["id"] not in last or r["version"] > last[r["id"]]["version"]):
            last[r["id"]] = r
    return sum(1 for r in last.values() if r.get("status") == "open")


def score_segment(segment: Segment, records: list[dict], alerts: list) -> SegmentRun:
    onsets = alert_onsets(alerts)
    opened = incidents_opened(records)
    firsts = first_versions(records)
    scores = [score_fault(f, onsets, opened, firsts) for f in segment.faults]
    q0, q1 = segment.quiet
    return SegmentRun(segment, scores, opened_between(opened, q0, q1),
                      sum(1 for (_, t) in onsets if q0 <= t < q1),
                      sum(1 for r in records if r.get("notification") == "page"
                          and q0 <= parse_rfc3339(r["updated_at"]) < q1),
                      sum(1 for r in records if notifies(r) and q0 <= parse_rfc3339(r["updated_at"]) < q1),
                      open_at(records, q0),
                      len(opened_between(opened, *segment.fault_period)), 0, len(alerts), records, alerts)


def run_segment(topology: Topology, segment: Segment) -> SegmentRun:
    alerts: list = []
    core = run_core(topology, merged_messages(segment), alerts=alerts)
    out = score_segment(segment, core.incidents, alerts)
    out.messages = core.messages
    return out


def summarize_runs(runs: Sequence[SegmentRun]) -> dict:
    """The dataset's figures from its segments (counts and durations pooled, then divided)."""
    scores = [s for r in runs for s in r.scores]
    found = [s for s in scores if s.found]
    quiet_hours = sum(r.quiet_hours for r in runs)
    series_days = sum(r.segment.quiet_series * r.quiet_hours / 24.0 for r in runs)
    false = sum(len(r.quiet_incidents) for r in runs)
    quiet_alerts = sum(r.quiet_alerts for r in runs)
    after_warmup = [s for r in runs for s in r.scores if s.fault.start >= r.segment.warmup_end]
    ranks = [s.rank_first for s in scores]
    nan = math.nan
    return {
        "faults": len(scores),
        "found": len(found),
        "recall": len(found) / len(scores) if scores else nan,
        "faults_after_warmup": len(after_warmup),
        "recall_after_warmup": sum(1 for s in after_warmup if s.found) / len(after_warmup) if after_warmup else nan,
        "missed": [s.fault.id for s in scores if not s.found],
        "delay_p50_s": quantile([s.alert_delay for s in found], 0.5),
        "own_incident": sum(1 for s in scores if s.own_incidents),
        "own_incident_rate": sum(1 for s in scores if s.own_incidents) / len(scores) if scores else nan,
        "ac1": ac_at(ranks, 1), "ac3": ac_at(ranks, 3), "avg5": avg_at_5(ranks),
        "incidents_fault_period": sum(r.fault_period_incidents for r in runs),
        "incidents_per_fault": sum(r.fault_period_incidents for r in runs) / len(scores) if scores else nan,
        "quiet_hours": quiet_hours,
        "false_incidents": false,
        "false_per_hour": false / quiet_hours if quiet_hours else nan,
        "false_per_day": 24.0 * false / quiet_hours if quiet_hours else nan,
        "quiet_pages": sum(r.quiet_pages for r in runs),
        "pages_per_day": 24.0 * sum(r.quiet_pages for r in runs) / quiet_hours if quiet_hours else nan,
        "quiet_notifications": sum(r.quiet_notifications for r in runs),
        "notifications_per_day": (24.0 * sum(r.quiet_notifications for r in runs) / quiet_hours
                                  if quiet_hours else nan),
        "open_at_quiet_start": sum(r.open_at_quiet_start for r in runs),
        "quiet_series": sum(r.segment.quiet_series for r in runs),
        "quiet_alerts": quiet_alerts,
        "alerts_per_series_day": quiet_alerts / series_days if series_days else nan,
        "messages": sum(r.messages for r in runs),
        "alert_events": sum(r.alert_events for r in runs),
        "incident_records": sum(len(r.records) for r in runs),
    }


def _fault_row(s: FaultScore) -> dict:
    f = s.fault
    return {"id": f.id, "service": f.service, "kind": f.kind, "start": f.start, "callers": sorted(f.related),
            "found": s.found, "alert_delay_s": s.alert_delay, "own_incidents": list(s.own_incidents),
            "rank_first_notification": s.rank_first}


def _quiet_row(inc: dict) -> dict:
    return {"id": inc["id"], "opened_at": inc["opened_at"], "services": sorted(inc["services"]), "title": inc["title"]}


# --- the API ------------------------------------------------------------------------------------

def evaluate_dataset(name: str, *, shared: Path = DEFAULT_SHARED, topology_update: TopologyUpdate | None = None,
                     out: Path | None = None, signals: str = "all") -> dict:
    """Convert (once per process), run through the core and score one dataset.

    ``topology_update`` changes the generated topology before the run (detector or correlation
    settings); the scoring truth (who calls whom) stays the data's. With ``out``, the converted
    messages, topology, incident records and alert events are written under ``out/<name>/``.
    ``signals="metrics"`` leaves spans and logs out (see the module docstring's caveat).
    """
    t0 = time.perf_counter()
    ds = load_dataset(name, Path(shared), signals)
    t_load = time.perf_counter() - t0
    topology = topology_update(ds.topology) if topology_update else ds.topology
    runs = [run_segment(topology, seg) for seg in ds.segments]
    t_core = time.perf_counter() - t0 - t_load
    used = ["metrics"] + [k for k in ("traces", "logs") if any(getattr(seg, k) for seg in ds.segments)]
    result = {"dataset": name, "system": ds.system, "signals": used, **summarize_runs(runs), "notes": list(ds.notes),
              "services": len(ds.topology.services),
              "calls": sum(len(s.depends_on) for s in ds.topology.services.values()),
              "faults_detail": [_fault_row(s) for r in runs for s in r.scores],
              "quiet_incidents": [_quiet_row(i) for r in runs for i in r.quiet_incidents]}
    if len(runs) > 1:
        result["cases"] = [{"case": r.segment.name, **{k: v for k, v in summarize_runs([r]).items()
                                                       if k not in ("missed",)}} for r in runs]
    if out is not None:
        _write(Path(out) / name, ds, runs)
    result["seconds_convert"] = round(t_load, 1)
    result["seconds_core"] = round(t_core, 1)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _evaluate_job(name: str, shared: Path, topology_update: TopologyUpdate | None, out: Path | None,
                  signals: str) -> dict:
    return evaluate_dataset(name, shared=shared, topology_update=topology_update, out=out, signals=signals)


def evaluate_all(names: Sequence[str] = DATASETS, *, shared: Path = DEFAULT_SHARED,
                 topology_update: TopologyUpdate | None = None, jobs: int = 1, out: Path | None = None,
                 signals: str = "all") -> dict:
    """Every dataset of ``names``, by name. ``jobs > 1`` runs them in worker processes (then
    ``topology_update`` must pickle: a module-level function, not a lambda, and each process
    converts its datasets afresh); ``jobs == 1`` runs here and reuses this process's cache."""
    for n in names:
        if n not in DATASETS:
            raise ValueError(f"unknown dataset {n!r} (one of {', '.join(DATASETS)})")
    if jobs <= 1 or len(names) <= 1:
        return {n: evaluate_dataset(n, shared=shared, topology_update=topology_update, out=out, signals=signals)
                for n in names}
    # The largest first, so the workers finish together.
    order = sorted(names, key=lambda n: DATASETS.index(n) if n != "nezha-tt" else -1)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futs = {n: pool.submit(_evaluate_job, n, Path(shared), topology_update, out, signals) for n in order}
        return {n: futs[n].result() for n in names}


# --- files --------------------------------------------------------------------------------------

def _write_lines(path: Path, items: Iterable[bytes]) -> None:
    with open(path, "wb") as fh:
        for b in items:
            fh.write(b + b"\n")


def _write(where: Path, ds: Dataset, runs: Sequence[SegmentRun]) -> None:
    where.mkdir(parents=True, exist_ok=True)
    (where / "topology.yaml").write_text(
        f"# Generated by evaluation/real.py from {ds.system} data; production defaults.\n" + ds.topology_yaml)
    for r in runs:
        seg_dir = where / r.segment.name if len(runs) > 1 else where
        seg_dir.mkdir(parents=True, exist_ok=True)
        _write_lines(seg_dir / "metrics.otlp.jsonl", (orjson.dumps(m) for m in r.segment.messages))
        for kind in ("traces", "logs"):
            if getattr(r.segment, kind):
                _write_lines(seg_dir / f"{kind}.otlp.jsonl", (orjson.dumps(m) for m in getattr(r.segment, kind)))
        _write_lines(seg_dir / "incidents.jsonl", (orjson.dumps(rec) for rec in r.records))
        _write_lines(seg_dir / "alerts.jsonl", (codec.encode_alert_event(a) for a in r.alerts))


# --- the report ---------------------------------------------------------------------------------

def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render(results: dict[str, dict]) -> list[str]:
    head = (f"{'dataset':10} {'faults':>6} {'recall':>7} {'rec>wu':>7} {'delay50':>7} {'own inc':>7} {'AC@1':>6} "
            f"{'AC@3':>6} {'Avg@5':>6} {'inc/flt':>7} {'quiet h':>7} {'false':>5} {'false/h':>7} {'false/d':>7} "
            f"{'pages/d':>7} {'notif/d':>7} {'alerts/series-day':>17} {'secs':>6}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        lines.append(
            f"{name:10} {r['faults']:>6} {_fmt(r['recall']):>7} {_fmt(r['recall_after_warmup']):>7} "
            f"{_fmt(r['delay_p50_s'], 0):>7} {r['own_incident']:>3}/{r['faults']:<3} {_fmt(r['ac1']):>6} "
            f"{_fmt(r['ac3']):>6} {_fmt(r['avg5']):>6} {_fmt(r['incidents_per_fault'], 2):>7} "
            f"{_fmt(r['quiet_hours'], 2):>7} {r['false_incidents']:>5} {_fmt(r['false_per_hour'], 2):>7} "
            f"{_fmt(r['false_per_day'], 1):>7} {_fmt(r['pages_per_day'], 1):>7} "
            f"{_fmt(r['notifications_per_day'], 1):>7} {_fmt(r['alerts_per_series_day'], 3):>17} {_fmt(r['seconds'], 1):>6}")
    lines += ["  recall: an alert on the fault's service or a caller within [start-60s, start+5min]; rec>wu: the",
              "  same over faults after the detectors' warm-up; delay50: p50 of that alert's onset - start (s);",
              "  own inc: faults with an incident opened in that window involving the service or a caller;",
              "  AC@k/Avg@5: the true service in that incident's first paging record, over all faults;",
              "  inc/flt: incidents opened in the fault period / faults; false: incidents opened in the quiet",
              "  period (all false, paging or not), per quiet hour and day; pages/d: records that page (an opening",
              "  or reopening that reaches the on-call) there per quiet day; notif/d: incident records that notify",
              "  (page, update, resolve) there per quiet day; alerts/series-day: alert episodes starting there /",
              "  (series x quiet days)."]
    for name, r in results.items():
        signals = ", ".join(r.get("signals", ["metrics"]))
        lines += ["", f"{name} ({r['system']}; signals: {signals}): {r['services']} services, {r['calls']} calls, "
                      f"{r['messages']} messages, "
                      f"{r['alert_events']} alert events, {r['quiet_series']} quiet series, {r['quiet_alerts']} quiet "
                      f"alert episodes; {r['open_at_quiet_start']} incident(s) still open when the quiet period starts, "
                      f"{r['quiet_pages']} pages in it; convert {r['seconds_convert']}s, core {r['seconds_core']}s"]
        lines += [f"  note: {n}" for n in r["notes"]]
        lines.append("  per fault: first alert on it or a caller (onset - start), own incidents, rank in the first page")
        for f in r["faults_detail"]:
            found = f"alert {f['alert_delay_s']:+5.0f}s" if f["found"] else "MISSED     "
            lines.append(f"    {f['id']:58} {found}  own {len(f['own_incidents'])}  "
                         f"rank {f['rank_first_notification'] or '-'}")
        quiet = r["quiet_incidents"]
        for q in quiet[:QUIET_LISTED]:
            when = datetime.fromtimestamp(q["opened_at"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(f"  quiet-period incident: {when} {q['title']} (services: {', '.join(q['services'])})")
        if len(quiet) > QUIET_LISTED:
            lines.append(f"  ... and {len(quiet) - QUIET_LISTED} more quiet-period incidents (results.json)")
        for c in r.get("cases", ()):
            lines.append(f"  case {c['case']:15} found {c['found']}/{c['faults']} delay {_fmt(c['delay_p50_s'], 0):>4}s "
                         f"own incident {c['own_incident']} AC@1 {_fmt(c['ac1'], 0)} quiet {c['quiet_hours'] * 60:.1f} min "
                         f"false {c['false_incidents']} quiet alerts {c['quiet_alerts']} of {c['quiet_series']} series")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.real", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/eval-real"), help="where files go (default out/eval-real)")
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help=f"the shared data folder (default {DEFAULT_SHARED})")
    ap.add_argument("--dataset", action="append", choices=DATASETS, help="only this dataset; repeatable")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--signals", choices=SIGNALS, default="all",
                    help="all: metrics, and spans and logs where the data has them (Train Ticket; optimistic, see the "
                         "module docstring); metrics: metrics only; traces, logs: metrics and that one (default all)")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    names = args.dataset or list(DATASETS)
    results = evaluate_all(names, shared=args.shared, jobs=args.jobs, out=args.out, signals=args.signals)
    elapsed = time.perf_counter() - started
    lines = [f"aiops on real faults ({args.shared}), production defaults, signals: {args.signals}", ""]
    lines += render(results)
    lines += ["", f"done in {elapsed:.0f}s ({args.jobs} jobs)"]
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"seconds": round(elapsed, 1), "jobs": args.jobs, "shared": str(args.shared), "datasets": results}
    (args.out / "results.json").write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")
    (args.out / "results.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
