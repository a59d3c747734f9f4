"""Log lines to per-service rate series, so logs are scored by the same detectors as metrics.

Each service's error lines (severity ERROR or worse) are counted in fixed event-time buckets.
A bucket is emitted as a point of ``log.errors.rate`` (lines per second) once the service's
logs have moved past it, including empty buckets, so the detector learns what "no errors"
looks like. Lines are counted at most once: a bucket already emitted ignores late or
redelivered lines.
"""
from __future__ import annotations

from collections.abc import Iterable

from detectors.records import LogRecord, Point, SeriesKey

ERROR_SEVERITY = 17  # OTLP severityNumber: 17..20 ERROR, 21..24 FATAL
ERROR_RATE_METRIC = "log.errors.rate"
RECORD_RATE_METRIC = "log.records.rate"


class LogRateCounter:
    """Per-service log rates in event-time buckets.

    Examples
    --------
    >>> c = LogRateCounter(bucket_seconds=60)
    >>> c.add([LogRecord("api", 10.0, 17, "db timeout"), LogRecord("api", 20.0, 9, "ok")])
    []
    >>> [(p.series.metric, p.t, p.value) for p in c.add([LogRecord("api", 65.0, 9, "ok")])]
    [('log.errors.rate', 60.0, 0.016666666666666666), ('log.records.rate', 60.0, 0.03333333333333333)]
    """

    def __init__(self, bucket_seconds: float = 60.0, max_gap_buckets: int = 60):
        self._width = bucket_seconds
        self._max_gap = max_gap_buckets
        # service -> (start of the open bucket, errors in it, records in it)
        self._open: dict[str, tuple[float, int, int]] = {}

    def add(self, records: Iterable[LogRecord]) -> list[Point]:
        out: list[Point] = []
        for rec in sorted(records, key=lambda r: (r.service, r.t)):
            start = rec.t - rec.t % self._width
            cur = self._open.get(rec.service)
            if cur is None:
                cur = (start, 0, 0)
            elif start < cur[0]:
                continue  # that bucket was already emitted
            elif start > cur[0]:
                out += self._close(rec.service, cur, start)
                cur = (start, 0, 0)
            errors = cur[1] + (1 if rec.severity >= ERROR_SEVERITY else 0)
            self._open[rec.service] = (cur[0], errors, cur[2] + 1)
        return out

    def _close(self, service: str, cur: tuple[float, int, int], next_start: float) -> list[Point]:
        start, errors, total = cur
        end = start + self._width
        pts = [Point(SeriesKey(service, ERROR_RATE_METRIC), end, errors / self._width),
               Point(SeriesKey(service, RECORD_RATE_METRIC), end, total / self._width)]
        # Empty buckets between this one and the next are real zeros, up to a bound: a long
        # silence is a gap, not hours of zeros.
        gap = int(round((next_start - end) / self._width))
        for k in range(min(gap, self._max_gap)):
            t = end + (k + 1) * self._width
            pts += [Point(SeriesKey(service, ERROR_RATE_METRIC), t, 0.0),
                    Point(SeriesKey(service, RECORD_RATE_METRIC), t, 0.0)]
        return pts
