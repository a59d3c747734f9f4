"""A service that stops sending telemetry: the loudest failure is often a silent one.

A crashed process, a dead node or a broken exporter produces no anomalous values at all; its
series just stop. This tracks, per service, when it last reported and how often it usually
does, and fires a ``service.telemetry.absent`` alert when it has been silent for
``max(min_silence, factor × usual interval)`` of event time while the rest of the system
keeps reporting (the watermark is the rest of the system's clock, so a paused pipeline or a
quiet night never looks like an outage). The alert resolves when the service reports again.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from detectors.records import Alert, SeriesKey

METRIC = "service.telemetry.absent"


@dataclass
class _Seen:
    last: float
    interval: float = 0.0  # smoothed gap between reports
    reports: int = 1
    silent_since: float | None = None  # set while an absent alert fires


@dataclass
class AbsenceDetector:
    """Per-service silence detection on event time.

    Examples
    --------
    >>> d = AbsenceDetector(min_silence=60.0, warmup_reports=3)
    >>> for t in (0.0, 10.0, 20.0, 30.0):
    ...     _ = d.observe({"api": t, "db": t}, watermark=t)
    >>> [a.status for a in d.observe({"db": 200.0}, watermark=200.0)]
    ['firing']
    >>> [a.status for a in d.observe({"api": 210.0, "db": 210.0}, watermark=210.0)]
    ['resolved']
    """

    min_silence: float = 120.0
    factor: float = 6.0
    warmup_reports: int = 30
    _seen: dict[str, _Seen] = field(default_factory=dict)

    def observe(self, latest_by_service: dict[str, float], watermark: float) -> list[Alert]:
        out: list[Alert] = []
        for svc, t in latest_by_service.items():
            seen = self._seen.get(svc)
            if seen is None:
                self._seen[svc] = _Seen(last=t)
                continue
            if t <= seen.last:
                continue  # redelivered or late: nothing new about liveness
            gap = t - seen.last
            if seen.silent_since is not None:
                out.append(self._alert(svc, "resolved", seen.silent_since, t, gap))
                seen.silent_since = None
            elif seen.reports >= 2:
                seen.interval += 0.1 * (min(gap, 10 * seen.interval) - seen.interval)
            else:
                seen.interval = gap
            seen.last = t
            seen.reports += 1
        for svc, seen in sorted(self._seen.items()):
            if seen.silent_since is not None or seen.reports < self.warmup_reports:
                continue
            limit = max(self.min_silence, self.factor * seen.interval)
            if watermark - seen.last > limit:
                seen.silent_since = seen.last
                out.append(self._alert(svc, "firing", seen.last, watermark, watermark - seen.last))
        return out

    def _alert(self, service: str, status: str, since: float, at: float, silence: float) -> Alert:
        key = SeriesKey(service, METRIC)
        if status == "firing":
            summary = f"{service} sent no telemetry for {silence:.0f}s (usually every {self._seen[service].interval:.0f}s)"
        else:
            summary = f"{service} reports again after {silence:.0f}s of silence"
        return Alert(fingerprint=key.fingerprint, status=status, service=service, metric=METRIC, series=key.id,
                     labels=(), score=1.0 if status == "firing" else 0.0, value=silence,
                     expected=self._seen[service].interval, starts_at=since, at=at, severity="critical",
                     source="absence", summary=summary)
