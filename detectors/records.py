"""Records produced by the detection stage.

Times are unix seconds (float) in event time. They stay floats on the hot path because
batches are numpy arrays; they become RFC 3339 strings only at the wire boundary.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import NamedTuple

ALERT_SCHEMA_VERSION = 1

Labels = tuple[tuple[str, str], ...]


def rfc3339(t: float) -> str:
    """Format unix seconds as RFC 3339 UTC with millisecond precision.

    >>> rfc3339(1700000000.5)
    '2023-11-14T22:13:20.500Z'
    """
    dt = datetime.fromtimestamp(t, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_rfc3339(s: str) -> float:
    """Parse an RFC 3339 timestamp (``Z`` or offset) into unix seconds."""
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def stable_hash(*parts: str, length: int = 16) -> str:
    """A deterministic hex digest of ``parts``; ids derive from data, never from uuid4."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p.encode())
        h.update(b"\x1f")
    return h.hexdigest()[:length]


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """Identity of one time series: the service, the metric name and the remaining labels."""

    service: str
    metric: str
    labels: Labels = ()

    def __reduce__(self):
        # One constructor call per key: a frozen slots dataclass otherwise unpickles through
        # __setstate__ and object.__setattr__ per field, the bulk of restoring a large engine.
        return (SeriesKey, (self.service, self.metric, self.labels))

    @property
    def id(self) -> str:
        """Human-readable unique id, e.g. ``checkout/http.server.duration.p95{host="a"}``."""
        if not self.labels:
            return f"{self.service}/{self.metric}"
        inner = ",".join(f'{k}="{v}"' for k, v in self.labels)
        return f"{self.service}/{self.metric}{{{inner}}}"

    @property
    def fingerprint(self) -> str:
        return stable_hash(self.id)


@dataclass(frozen=True, slots=True)
class Point:
    """One normalized numeric observation of a series (rates already derived from counters)."""

    series: SeriesKey
    t: float
    value: float


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One decoded log line, before template mining."""

    service: str
    t: float
    severity: int  # OTLP severityNumber: 17+ is ERROR
    body: str
    labels: Labels = ()


@dataclass(frozen=True, slots=True)
class Alert:
    """A firing or resolved anomaly on one series.

    ``fingerprint`` identifies the series (as Alertmanager's label fingerprint does), so a
    redelivered or repeated alert deduplicates on it.
    """

    fingerprint: str
    status: str  # "firing" | "resolved"
    service: str
    metric: str
    series: str
    labels: Labels
    score: float
    value: float
    expected: float
    starts_at: float
    at: float
    severity: str = "warning"  # "info" | "warning" | "critical"
    source: str = "detector"
    summary: str = ""
    evidence: tuple[tuple[str, str], ...] = field(default=())  # extra facts, e.g. a log template


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Event-time progress from a detection partition: lets correlation expire incidents
    identically in replay and on Kafka, without reading a wall clock."""

    at: float
    source: str = "detector"
    # The input partition it comes from (``telemetry.metrics/3``), so correlation can wait for
    # the slowest one; "" when one process reads everything (replay).
    lane: str = ""
    # From spans: the calls between services the message showed, ``(caller, callee, count,
    # last_seen)``, for the learned call graph (correlators/learned.py). They ride on the
    # heartbeat because it goes to every correlation key, and an added field keeps the record's
    # version: a worker of the previous release reads the heartbeat and ignores them.
    calls: tuple[tuple[str, str, int, float], ...] = ()


AlertEvent = Alert | Heartbeat


class Span(NamedTuple):
    """One decoded span: who ran what, when, called by which span. A tuple, because a batch
    holds thousands and a frozen dataclass per span costs more than decoding it.

    Times are unix seconds. ``kind`` is OTLP's ``SpanKind`` (0 unspecified, 1 internal, 2 server, 3 client, 4 producer,
    5 consumer); ``parent_id`` is ``""`` for a root span; ``error`` is status code ERROR.
    """

    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    error: bool
    start: float
    end: float
    duration: float  # seconds, from the nanosecond times (end - start in floats loses microseconds)
