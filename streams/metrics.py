"""Prometheus metrics of the worker (served on its /metrics page), the executor and ticket delivery
(``--metrics-port``). Every name and label is listed in README.md ("Metrics"); the Grafana
dashboard in ``docker/grafana`` may only use names registered here (tests/unit/test_dashboard.py)."""
from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

# --- the worker: input --------------------------------------------------------------------------
MESSAGES_IN = Counter("aiops_input_messages_total", "Input messages consumed", ["topic"])
POINTS_IN = Counter("aiops_input_points_total", "Normalized data points scored")
STATE_SHARDS = Gauge("aiops_state_shards", "Input partitions whose state this worker holds", ["stage"])
STATE_REBUILDS = Counter("aiops_state_rebuilds_total", "State shards rebuilt from their partition", ["topic"])
STATE_REBUILD_SECONDS = Counter("aiops_state_rebuild_seconds_total", "Seconds spent rebuilding state shards", ["topic"])
CHECKPOINTS_WRITTEN = Counter("aiops_checkpoints_written_total", "State snapshots written (local store and "
                              "checkpoint topic)", ["stage"])
CHECKPOINT_WRITE_SECONDS = Counter("aiops_checkpoint_write_seconds_total", "Seconds from forking a snapshot to "
                                   "having it stored, summed (off the event loop)", ["stage"])
CHECKPOINT_RESTORES = Counter("aiops_checkpoint_restores_total", "State shards built: from a snapshot (local, "
                              "kafka) or from the partition's first offset (none)", ["topic", "source"])
CHECKPOINTS_SKIPPED = Counter("aiops_checkpoints_skipped_total", "Snapshots passed over on restore: corrupt "
                              "(checksum, truncation) or of a format version this release does not read",
                              ["reason", "store"])
DEADLETTER = Counter("aiops_deadletter_total", "Messages sent to the dead-letter topic", ["topic"])
OUT_OF_TIME = Counter("aiops_out_of_time_total",
                      "Points, log records and spans dated too far from their partition's event time (or the wall clock)")
CONSUMER_LAG = Gauge("aiops_consumer_lag", "Messages in a partition the worker has not committed yet "
                     "(log end offset minus committed offset)", ["topic", "partition"])

# --- the worker: detectors ----------------------------------------------------------------------
ANOMALOUS_POINTS = Counter("aiops_anomalous_points_total", "Points scored at or above the alert threshold",
                           ["source"])
ALERTS = Counter("aiops_alerts_total", "Alert events emitted by the detectors", ["status"])
EXTERNAL_ALERTS = Counter("aiops_external_alerts_total", "Alerts from other tools' webhooks forwarded to correlation",
                          ["source", "status"])

# --- the worker: HTTP endpoints that accept data or commands ------------------------------------
HTTP_UNAUTHORIZED = Counter("aiops_http_unauthorized_total", "Requests refused for a missing or wrong token (401)",
                            ["path"])
HTTP_ACCEPTED = Counter("aiops_http_accepted_total", "Requests produced to their topic and acknowledged (202)",
                        ["path"])
HTTP_REJECTED = Counter("aiops_http_rejected_total", "Authenticated requests refused as invalid (400) or not "
                        "produced (503)", ["path", "code"])

# --- the worker: correlation and remediation ----------------------------------------------------
INCIDENT_UPDATES = Counter("aiops_incident_updates_total", "Incident records published", ["status"])
OPEN_INCIDENTS = Gauge("aiops_open_incidents", "Incidents currently open or waiting for group_wait")
ACTIONS = Counter("aiops_actions_total", "Remediation decisions published", ["decision"])
TICKETS = Counter("aiops_ticket_events_total", "Ticket events published", ["event"])
COMPRESSION = Gauge("aiops_compression_ratio", "Ratio of one pipeline stage's count to the next's", ["stage"])

# --- the worker: live config (aiops.config) ------------------------------------------------------
CONFIG_INFO = Gauge("aiops_config_info", "The topology the worker runs, 1: its SHA-256 and where it came from "
                    "(file: the file it started with; topic: pushed to aiops.config)", ["sha256", "source"])
CONFIG_APPLIED = Counter("aiops_config_applied_total", "Configs from aiops.config applied without a restart")
CONFIG_REJECTED = Counter("aiops_config_rejected_total", "Configs from aiops.config refused, the running one kept: "
                          "invalid, needs_restart or undecodable", ["reason"])


def observe_config(sha256: str, source: str) -> None:
    """``aiops_config_info``: one series, the active config's."""
    CONFIG_INFO.clear()
    CONFIG_INFO.labels(sha256=sha256, source=source).set(1)


# --- aiops executor -----------------------------------------------------------------------------
ACTION_RESULTS = Counter("aiops_action_results_total", "Action results the executor produced", ["kind", "decision"])

# --- aiops tickets deliver ----------------------------------------------------------------------
TICKET_DELIVERIES = Counter("aiops_ticket_deliveries_total",
                            "Ticket events handled by delivery: delivered, skipped (already delivered) or "
                            "dead_lettered", ["sink", "outcome"])
TICKET_FAILED_ATTEMPTS = Counter("aiops_ticket_delivery_failed_attempts_total",
                                 "Requests to a tracker that failed and were retried or given up", ["sink"])


class BatchHistogram(Collector):
    """A Prometheus histogram fed a whole array at a time.

    ``prometheus_client.Histogram.observe`` takes one value per call; the detector scores
    hundreds of thousands of points a second, so a batch is bucketed with one ``searchsorted``
    and one ``bincount`` instead. Exposed exactly like a ``Histogram`` (``_bucket``, ``_count``,
    ``_sum``). NaN (a point that was not scored) is left out.

    >>> reg = CollectorRegistry()
    >>> h = BatchHistogram("demo_score", "Scores", [0.5, 1.0], ["source"], registry=reg)
    >>> h.observe_many(np.array([0.1, 0.5, 0.7, np.nan]), source="metrics")
    >>> reg.get_sample_value("demo_score_bucket", {"source": "metrics", "le": "0.5"})
    2.0
    >>> reg.get_sample_value("demo_score_count", {"source": "metrics"})
    3.0
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], labelnames: Sequence[str] = (),
                 registry: CollectorRegistry | None = REGISTRY):
        bounds = [float(b) for b in buckets]
        if bounds != sorted(set(bounds)) or not bounds or bounds[-1] == float("inf"):
            raise ValueError(f"{name}: buckets must be increasing, finite and not empty (got {buckets})")
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        self._bounds = np.asarray(bounds)
        self._le = [_le(b) for b in bounds] + ["+Inf"]
        self._series: dict[tuple[str, ...], list] = {}  # labels -> [per-bucket counts (not cumulative), sum]
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: np.ndarray, **labels: str) -> None:
        key = tuple(str(labels[n]) for n in self.labelnames)
        values = values[~np.isnan(values)]
        if values.size == 0:
            return
        # bucket i counts bounds[i-1] < v <= bounds[i]; past the last bound is +Inf
        counts = np.bincount(np.searchsorted(self._bounds, values, side="left"), minlength=len(self._le))
        total = float(values.sum())
        with self._lock:
            series = self._series.get(key)
            if series is None:
                self._series[key] = [counts.astype(np.int64), total]
            else:
                series[0] += counts
                series[1] += total

    def describe(self) -> Iterable[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [(key, np.cumsum(counts), total) for key, (counts, total) in self._series.items()]
        for key, cumulative, total in snapshot:
            family.add_metric(list(key), [(le, float(c)) for le, c in zip(self._le, cumulative)], sum_value=total)
        yield family


def _le(bound: float) -> str:
    return repr(float(bound))


SCORES = BatchHistogram("aiops_anomaly_score", "Anomaly scores of the scored points (0 normal .. 1 anomalous)",
                        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0], ["source"])


def observe_scores(source: str, scores: np.ndarray, threshold: float) -> int:
    """One scored batch: its score distribution and how many points reached ``threshold``.
    Returns that count (NaN, a point that was not scored, never counts)."""
    SCORES.observe_many(scores, source=source)
    anomalous = int(np.count_nonzero(scores >= threshold))
    if anomalous:
        ANOMALOUS_POINTS.labels(source=source).inc(anomalous)
    return anomalous


def observe_compression(detect_stats: dict, correlate_stats: dict) -> None:
    """Anomalous points -> alerts -> incidents: how much the pipeline condenses."""
    alerts = correlate_stats.get("alerts", 0)
    incidents = correlate_stats.get("incidents", 0)
    if alerts and incidents:
        COMPRESSION.labels(stage="alerts_per_incident").set(alerts / incidents)
    anomalous = detect_stats.get("anomalous_points", 0)
    if anomalous and alerts:
        COMPRESSION.labels(stage="anomalous_points_per_alert").set(anomalous / alerts)


# --- consumer lag -------------------------------------------------------------------------------

def partition_lag(highwaters: Mapping, committed: Mapping) -> dict[tuple[str, int], int]:
    """Lag per ``(topic, partition)``: the log end offset minus the committed offset (the next
    offset the group would read). A partition with no committed offset yet counts from 0, as the
    worker reads from the earliest offset; one with no known end offset is left out.

    >>> from collections import namedtuple
    >>> TP = namedtuple("TP", "topic partition")
    >>> partition_lag({TP("m", 0): 120, TP("m", 1): 7, TP("a", 0): None}, {TP("m", 0): 100})
    {('m', 0): 20, ('m', 1): 7}
    """
    out = {}
    for tp, high in highwaters.items():
        if high is None:
            continue
        done = committed.get(tp)
        out[(tp.topic, tp.partition)] = max(0, int(high) - int(done or 0))
    return out


_lag_labels: set[tuple[str, int]] = set()


def observe_consumer_lag(consumer) -> dict[tuple[str, int], int]:
    """Set ``aiops_consumer_lag`` for every partition assigned to a Faust consumer; drop the
    partitions a rebalance took away. Returns the lags.

    The end offsets are the ones the consumer's last fetch reported (``highwater``: no broker
    round trip). Faust has no public accessor for the offsets it committed, so this reads
    ``Consumer._committed_offset``, which it updates on each commit and on start-up.
    """
    try:
        assigned = consumer.assignment()
    except Exception:  # noqa: BLE001 - not started yet, or stopping: nothing to report this round
        assigned = set()
    highwaters = {tp: _highwater(consumer, tp) for tp in assigned}
    lags = partition_lag(highwaters, getattr(consumer, "_committed_offset", {}))
    for topic, partition in _lag_labels - lags.keys():
        CONSUMER_LAG.remove(topic, str(partition))
    for (topic, partition), lag in lags.items():
        CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(lag)
    _lag_labels.clear()
    _lag_labels.update(lags)
    return lags


def _highwater(consumer, tp) -> int | None:
    try:
        return consumer.highwater(tp)
    except Exception:  # noqa: BLE001 - revoked by a rebalance since assignment(): no figure this round
        return None


# --- the executor and ticket delivery -----------------------------------------------------------

def serve(port: int | None, addr: str = "0.0.0.0") -> None:
    """Serve /metrics on ``port`` from a background thread (``--metrics-port``); no-op for None."""
    if port is not None:
        start_http_server(port, addr=addr)


def observe_ticket_delivery(sink: str, outcome: object) -> None:
    """``outcome`` is a :mod:`streams.delivery` Outcome; its class names the outcome label."""
    label = {"Delivered": "delivered", "Skipped": "skipped", "DeadLettered": "dead_lettered"}[type(outcome).__name__]
    TICKET_DELIVERIES.labels(sink=sink or "unknown", outcome=label).inc()
