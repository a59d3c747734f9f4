"""Spans to per-service request, error and duration series, and to the calls between services.

What a span says, once it is known which service called which:

- a **request** to a service is a server-side span (kind SERVER or CONSUMER); where the kind is
  not given (Nezha's spans have none), a span whose parent span belongs to another service, or
  that has no parent, or whose parent was never seen (an entry, as far as we can tell);
- a **call** ``caller -> callee`` is a span of ``callee`` whose parent span is ``caller``'s.

:class:`SpanSignals` counts requests in fixed event-time buckets (by the span's end time) and
emits, per service, once the spans' event time has moved ``lateness_seconds`` past a bucket:

- ``span.requests.rate`` (requests per second) and ``span.errors.rate`` (requests with status
  ERROR per second), zeros included for a service that went quiet while other services' spans
  kept coming, up to ``max_gap_buckets`` in a row (a bucket in which no span at all ended is a
  gap in the stream, not zero traffic: nothing is emitted for it);
- ``span.duration.p50`` and ``span.duration.p95`` of the requests' durations (seconds), for
  buckets that had requests;
- the same per operation (the span name, with ids and numbers masked as log lines are), with an
  ``operation`` label, for the first ``max_operations`` operations of each service (later ones
  share ``operation="other"``), except the p50.

These are ordinary :class:`~detectors.records.Point` series, scored by the metric detection
engine like any other.

Bounded state: the last ``max_spans`` span ids (each with its service, for at most
``span_ttl_seconds`` of event time) to resolve parents arriving in the same or a nearby batch
and to skip duplicates, the children still waiting for their parent (as many), and the open
buckets. No trace is kept. Idempotency: a span id seen already is skipped, so a redelivered
batch changes nothing while its spans are remembered; a span for a bucket already emitted is
ignored (its call still counts).
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from detectors.records import Point, SeriesKey, Span

REQUESTS_METRIC = "span.requests.rate"
ERRORS_METRIC = "span.errors.rate"
P50_METRIC = "span.duration.p50"
P95_METRIC = "span.duration.p95"
OTHER_OPERATION = "other"
_SERVER, _CONSUMER = 2, 5


@dataclass(frozen=True)
class SpanSettings:
    """Knobs of :class:`SpanSignals` (``traces:`` in topology.yaml sets some of them)."""

    bucket_seconds: float = 60.0
    lateness_seconds: float = 30.0  # a bucket is emitted once the spans' event time is this far past its end
    max_gap_buckets: int = 60  # zeros emitted after a service's last span; then the service is forgotten
    max_operations: int = 20  # per service; later operations share operation="other"; 0: no per-operation series
    max_spans: int = 200_000  # span ids remembered (and children waiting for a parent)
    span_ttl_seconds: float = 600.0  # ... for at most this long, in event time
    max_bucket_spans: int = 200_000  # requests kept per service and bucket; later ones are dropped and counted


@lru_cache(maxsize=8192)
def operation_of(name: str) -> str:
    """A span name as an operation: ids and numbers masked, as in log templates.

    >>> operation_of("GET /api/v1/orders/8f3a2b91c0"), operation_of("HTTP POST")
    ('GET /api/v1/orders/<HEX>', 'HTTP POST')
    """
    from detectors.logs import mask  # drain3 loads only where spans are used

    return mask(name)


def quantiles(values: Sequence[float], qs: Sequence[float]) -> list[float]:
    """Quantiles by linear interpolation between order statistics (numpy's default method),
    without numpy's per-call overhead: buckets hold tens of values, not millions.

    >>> quantiles([0.4, 0.1, 0.2, 0.3], (0.5, 0.95))
    [0.25, 0.385]
    """
    v = sorted(values)
    top = len(v) - 1
    out = []
    for q in qs:
        pos = q * top
        lo = math.floor(pos)
        hi = min(lo + 1, top)
        out.append(v[lo] + (v[hi] - v[lo]) * (pos - lo))
    return out


@dataclass
class _Bucket:
    requests: list = field(default_factory=list)  # (operation, error, duration)
    unresolved: list = field(default_factory=list)  # (operation, parent id, error, duration): kind unknown


@dataclass
class _Service:
    next_start: float | None = None  # start of the next bucket to emit; None before the first
    quiet: int = 0  # empty buckets emitted in a row
    buckets: dict[float, _Bucket] = field(default_factory=dict)  # start -> spans not emitted yet
    operations: dict[str, None] = field(default_factory=dict)  # the operations with their own series


@dataclass(frozen=True)
class SpanBatch:
    """What one batch of spans produced."""

    points: list[Point]
    calls: list[tuple[str, str, int, float]]  # (caller, callee, count, latest start), sorted
    spans: int = 0  # new spans taken (duplicates left out)


class SpanSignals:
    """Spans to request, error and duration series per service, and calls between services.

    Examples
    --------
    >>> s = SpanSignals(SpanSettings(lateness_seconds=0))
    >>> def span(svc, sid, parent, t, dur): return Span(svc, "t1", sid, parent, "GET /x", 0, False, t, t + dur, dur)
    >>> out = s.add([span("web", "a", "", 10.0, 0.5), span("db", "b", "a", 10.1, 0.2)])
    >>> out.calls, out.points
    ([('web', 'db', 1, 10.1)], [])
    >>> out = s.add([span("web", "c", "", 61.0, 0.5)])  # event time passes the first minute
    >>> for p in sorted(out.points, key=lambda p: p.series.id):
    ...     if p.series.service == "db" and not p.series.labels:
    ...         print(p.series.id, p.t, round(p.value, 4))
    db/span.duration.p50 60.0 0.2
    db/span.duration.p95 60.0 0.2
    db/span.errors.rate 60.0 0.0
    db/span.requests.rate 60.0 0.0167
    """

    def __init__(self, settings: SpanSettings | None = None):
        self.cfg = settings or SpanSettings()
        self._services: dict[str, _Service] = {}
        self._recent: dict[str, tuple[str, float]] = {}  # span id -> (service, end)
        self._recent_order: deque[tuple[str, float]] = deque()  # (span id, end), as taken: what to forget first
        self._waiting: dict[str, list[tuple[str, float]]] = {}  # parent id -> [(child service, start)]
        self._waiting_order: deque[tuple[str, float]] = deque()  # (parent id, start), as taken
        self._waiting_n = 0
        self.watermark = float("-inf")  # the latest span end seen
        self._alive: set[float] = set()  # starts of the recent buckets in which some span ended
        self.stats = {"spans": 0, "duplicates": 0, "late": 0, "dropped": 0}

    def add(self, spans: Iterable[Span]) -> SpanBatch:
        cfg = self.cfg
        width = cfg.bucket_seconds
        recent, order = self._recent, self._recent_order
        new: list[Span] = []
        for sp in sorted(spans, key=lambda s: (s.end, s.service, s.span_id)):
            if sp.span_id in recent:
                self.stats["duplicates"] += 1
                continue
            recent[sp.span_id] = (sp.service, sp.end)
            order.append((sp.span_id, sp.end))
            new.append(sp)
            if sp.end > self.watermark:
                self.watermark = sp.end
        calls: dict[tuple[str, str], list] = {}

        def call(caller: str, callee: str, t: float) -> None:
            if caller != callee:
                c = calls.setdefault((caller, callee), [0, t])
                c[0] += 1
                c[1] = max(c[1], t)

        waiting = self._waiting
        alive = self._alive
        for sp in new:
            alive.add(sp.end - sp.end % width)
            children = waiting.pop(sp.span_id, None)
            if children:
                self._waiting_n -= len(children)
                for child, t in children:
                    call(sp.service, child, t)
            parent = None
            if sp.parent_id:
                parent = recent.get(sp.parent_id)
                if parent is None:
                    waiting.setdefault(sp.parent_id, []).append((sp.service, sp.start))
                    self._waiting_order.append((sp.parent_id, sp.start))
                    self._waiting_n += 1
                else:
                    call(parent[0], sp.service, sp.start)
            self._bucket(sp, parent, width)
        self.stats["spans"] += len(new)
        self._forget()
        points: list[Point] = []
        self._close(points)
        out = sorted((a, b, c[0], c[1]) for (a, b), c in calls.items())
        return SpanBatch(points, out, len(new))

    def _bucket(self, sp: Span, parent: tuple[str, float] | None, width: float) -> None:
        """File one new span under its service's bucket, if it is a request (or may be one)."""
        kind = sp.kind
        if kind and kind != _SERVER and kind != _CONSUMER:
            return  # internal, client, producer: the caller's side of a call
        svc = self._services.get(sp.service)
        if svc is None:
            svc = self._services[sp.service] = _Service()
        start = sp.end - sp.end % width
        if svc.next_start is not None and start < svc.next_start:
            self.stats["late"] += 1  # that bucket was emitted already
            return
        b = svc.buckets.get(start)
        if b is None:
            b = svc.buckets[start] = _Bucket()
        if len(b.requests) + len(b.unresolved) >= self.cfg.max_bucket_spans:
            self.stats["dropped"] += 1
            return
        op = operation_of(sp.name)
        if kind or not sp.parent_id:
            b.requests.append((op, sp.error, sp.duration))
        elif parent is not None:
            if parent[0] != sp.service:
                b.requests.append((op, sp.error, sp.duration))
        else:
            b.unresolved.append((op, sp.parent_id, sp.error, sp.duration))

    def _forget(self) -> None:
        """Keep the span ids and the waiting children within their count and age bounds (the
        orders are deques: forgetting from the front of a dict is quadratic in CPython)."""
        cfg = self.cfg
        oldest = self.watermark - cfg.span_ttl_seconds
        recent, order = self._recent, self._recent_order
        while order and (len(recent) > cfg.max_spans or order[0][1] < oldest):
            sid, end = order.popleft()
            kept = recent.get(sid)
            if kept is not None and kept[1] == end:
                del recent[sid]
        waiting, order = self._waiting, self._waiting_order
        while order and (self._waiting_n > cfg.max_spans or order[0][1] < oldest):
            children = waiting.pop(order.popleft()[0], None)
            if children:
                self._waiting_n -= len(children)

    def _close(self, points: list[Point]) -> None:
        """Emit every bucket the event time has moved ``lateness_seconds`` past, in order, with
        zeros for empty ones (up to ``max_gap_buckets`` in a row; then the service is forgotten),
        skipping buckets in which no span of any service ended (the stream had a gap)."""
        cfg = self.cfg
        width = cfg.bucket_seconds
        limit = self.watermark - cfg.lateness_seconds
        for name in sorted(self._services):
            svc = self._services[name]
            while True:
                start = svc.next_start
                if start is None:
                    if not svc.buckets:
                        break
                    start = min(svc.buckets)
                if start + width > limit:
                    break
                b = svc.buckets.pop(start, None)
                if b is None and start not in self._alive:
                    later = [s for s in self._alive if s > start] + [s for s in svc.buckets if s > start]
                    svc.next_start = min(later) if later else start + width
                    continue
                if b is None:
                    if svc.quiet >= cfg.max_gap_buckets:
                        if not svc.buckets:
                            del self._services[name]
                            break
                        svc.next_start, svc.quiet = min(svc.buckets), 0  # a long silence is a gap
                        continue
                    svc.quiet += 1
                    self._emit(name, svc, start + width, [], points)
                else:
                    svc.quiet = 0
                    self._emit(name, svc, start + width, self._requests(name, b), points)
                svc.next_start = start + width
        # Buckets up to here are decided for every service: their liveness is no longer needed.
        self._alive = {s for s in self._alive if s + 2 * width > limit}

    def _requests(self, service: str, b: _Bucket) -> list[tuple[str, bool, float]]:
        """The bucket's requests, its unresolved spans decided now: a parent still unseen makes
        the span an entry into the service."""
        out = b.requests
        for op, parent_id, error, duration in b.unresolved:
            parent = self._recent.get(parent_id)
            if parent is None or parent[0] != service:
                out.append((op, error, duration))
        return out

    def _emit(self, service: str, svc: _Service, t: float, requests: list[tuple[str, bool, float]],
              points: list[Point]) -> None:
        width = self.cfg.bucket_seconds
        errors = sum(1 for r in requests if r[1])
        points.append(Point(SeriesKey(service, REQUESTS_METRIC), t, len(requests) / width))
        points.append(Point(SeriesKey(service, ERRORS_METRIC), t, errors / width))
        if requests:
            p50, p95 = quantiles([r[2] for r in requests], (0.5, 0.95))
            points.append(Point(SeriesKey(service, P50_METRIC), t, p50))
            points.append(Point(SeriesKey(service, P95_METRIC), t, p95))
        cap = self.cfg.max_operations
        if cap <= 0:
            return
        by_op: dict[str, list[tuple[str, bool, float]]] = {}
        for r in requests:
            op = r[0]
            if op not in svc.operations:
                if len(svc.operations) - (OTHER_OPERATION in svc.operations) >= cap:
                    op = OTHER_OPERATION
                svc.operations[op] = None
            by_op.setdefault(op, []).append(r)
        names = sorted(set(svc.operations) | set(by_op))
        for op in names:
            rs = by_op.get(op, [])
            labels = (("operation", op),)
            points.append(Point(SeriesKey(service, REQUESTS_METRIC, labels), t, len(rs) / width))
            points.append(Point(SeriesKey(service, ERRORS_METRIC, labels), t, sum(1 for r in rs if r[1]) / width))
            if rs:
                (p95,) = quantiles([r[2] for r in rs], (0.95,))
                points.append(Point(SeriesKey(service, P95_METRIC, labels), t, p95))


__all__ = ["ERRORS_METRIC", "P50_METRIC", "P95_METRIC", "REQUESTS_METRIC", "SpanBatch", "SpanSettings", "SpanSignals",
           "operation_of", "quantiles"]
