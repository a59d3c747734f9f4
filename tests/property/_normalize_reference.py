"""Frozen reference copy of the normalizer (detectors/normalize.py) as it was at commit a5a8999,
before its fast paths for counters and histograms were written.

The oracle of tests/property/test_normalize_reference.py: the production :class:`Normalizer` must
give exactly the same points, in the same order, and keep the same state as this code. Do not edit
it to make a test pass; a difference is a change of behaviour. ``histogram_quantile`` is not
copied: it is production's, unchanged.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import repeat
from operator import lt as _lt
from operator import sub as _sub

from detectors.normalize import MEAN_SUFFIX, P95_SUFFIX, RATE_SUFFIX, Sample, histogram_quantile
from detectors.records import Point, SeriesKey

_isfinite = math.isfinite
_ZEROS = repeat(0)


class _State:
    """What a series needs to remember from its previous sample."""

    __slots__ = ("mode", "t", "v", "start", "count", "total", "bounds", "buckets", "k1", "k2")

    def __init__(self, mode: str, k1: SeriesKey, k2: SeriesKey | None = None):
        self.reset(mode, k1, k2)

    def reset(self, mode: str, k1: SeriesKey, k2: SeriesKey | None = None) -> None:
        """Start over (a new series, or one that changed its kind of derivation). In place, so
        what caches the object (see ``Normalizer._by_id``) stays right."""
        self.mode = mode  # the kind of derivation; a series that changes it starts over
        self.t = -math.inf
        self.v = 0.0
        self.start: float | None = None
        self.count = 0.0
        self.total = 0.0
        self.bounds: tuple[float, ...] = ()
        self.buckets: tuple[float, ...] = ()
        # Derived series keys, built once per series rather than once per point.
        self.k1 = k1
        self.k2 = k2


class Normalizer:
    """Turns samples into points, keeping per-series state (the previous cumulative values).

    - gauge, non-monotonic sum: ``Point(metric, value)``;
    - monotonic sum: ``Point(metric + ".rate", per-second rate)``. Cumulative: the difference to
      the previous sample over the time between them; the first sample of a series only primes
      the state. A reset (the value went down, or ``start_t`` changed) restarts from the new
      value: its rate is ``v / (t - start_t)`` when ``start_t`` lies between the previous sample
      and this one, else the sample only primes. Delta: ``v / (t - start_t)``, else
      ``v / (t - previous t)``, else it primes;
    - histogram: ``Point(metric + ".mean")`` (interval sum / interval count) and
      ``Point(metric + ".p95")`` (:func:`histogram_quantile` of the interval's buckets).
      Cumulative histograms are differenced against the previous sample, resets handled as for
      sums; delta ones are used as they are. An interval with no observations gives no point.

    A sample at or before the series' previous timestamp is ignored, so a redelivered message
    yields no new points. Points whose value would not be finite are dropped.

    Examples
    --------
    >>> key = SeriesKey("api", "http.server.requests")
    >>> n = Normalizer()
    >>> n.normalize([Sample(key, 100.0, "sum", 1000.0, monotonic=True)])
    []
    >>> [(p.series.metric, p.value) for p in n.normalize([Sample(key, 110.0, "sum", 1050.0, monotonic=True)])]
    [('http.server.requests.rate', 5.0)]
    >>> n.normalize([Sample(key, 110.0, "sum", 1050.0, monotonic=True)])  # redelivered
    []
    """

    def __init__(self) -> None:
        self._state: dict[SeriesKey, _State] = {}
        # The same states by id() of key objects already seen: decoders share one key object
        # per series across messages, and an id lookup costs a fraction of hashing the key's
        # fields. _pins holds those objects, so no other object can take their ids.
        self._by_id: dict[int, _State] = {}
        self._pins: list[SeriesKey] = []

    def __getstate__(self) -> dict:
        return {"_state": self._state}  # ids mean nothing in another process

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self._state = state["_state"]

    def state_size(self) -> int:
        """Number of series with remembered state."""
        return len(self._state)

    def normalize(self, samples: Iterable[Sample | tuple]) -> list[Point]:
        return [Point(k, t, v) for k, t, v in zip(*self.normalize_rows(samples))]

    def normalize_rows(self, rows: Iterable[Sample | tuple]) -> tuple[list[SeriesKey], list[float], list[float]]:
        """:meth:`normalize`, taking samples as :class:`Sample` objects or as tuples of their
        fields in order (trailing defaults may be left out; see
        :class:`streams.ingest.Decoded`), and giving the points as three parallel lists:
        series, times, values. Decoding and detection of a large batch then build no
        object per point."""
        keys: list[SeriesKey] = []
        times: list[float] = []
        values: list[float] = []
        out = (keys.append, times.append, values.append)
        if len(self._pins) > 4 * len(self._state) + 4096:
            self._by_id.clear()  # many short-lived key objects: start over rather than grow
            self._pins.clear()
        by_id = self._by_id.get
        for r in rows:
            if type(r) is not tuple:
                r = _fields(r)
            elif len(r) < 6:
                r = r + _DEFAULTS[len(r):]
            key = r[0]
            t = r[1]
            st = by_id(id(key))
            if st is None:
                st = self._lookup(key)
            if st is not None and t <= st.t:
                continue  # duplicate or out of order: the point was (or could not be) derived already
            kind = r[2]
            if kind == "gauge" or (kind == "sum" and not r[4]):
                if st is None:
                    st = self._new(key, "value")
                elif st.mode != "value":
                    st.reset("value", key)
                st.t = t
                v = r[3]
                if _isfinite(v):
                    out[0](key)
                    out[1](t)
                    out[2](v)
            elif kind == "sum":
                if len(r) < 7:
                    r = r + _DEFAULTS[len(r):]
                if r[5] == "delta":
                    self._delta_sum(key, t, r[3], r[6], st, out)
                else:
                    self._cumulative_sum(key, t, r[3], r[6], st, out)
            elif kind == "histogram":
                if len(r) < 11:
                    r = r + _DEFAULTS[len(r):]
                self._histogram(key, t, r, st, out)
        return keys, times, values

    def _lookup(self, key: SeriesKey) -> _State | None:
        st = self._state.get(key)
        if st is not None:
            self._by_id[id(key)] = st
            self._pins.append(key)
        return st

    def _new(self, k: SeriesKey, mode: str) -> _State:
        """The state of a series first seen, or of one whose derivation changed (reset in place)."""
        if mode == "value":
            k1, k2 = k, None
        elif mode.endswith("hist"):
            k1 = SeriesKey(k.service, k.metric + MEAN_SUFFIX, k.labels)
            k2 = SeriesKey(k.service, k.metric + P95_SUFFIX, k.labels)
        else:
            k1, k2 = SeriesKey(k.service, k.metric + RATE_SUFFIX, k.labels), None
        st = self._state.get(k)
        if st is not None:
            st.reset(mode, k1, k2)
            return st
        st = self._state[k] = _State(mode, k1, k2)
        self._by_id[id(k)] = st
        self._pins.append(k)
        return st

    def _cumulative_sum(self, key: SeriesKey, t: float, v: float, start: float | None, st: _State | None,
                        out) -> None:
        if st is None or st.mode != "csum":
            st = self._new(key, "csum")
        elif v < st.v or (start is not None and st.start is not None and start != st.start):
            # Reset: the process restarted (or the counter wrapped). Counting from the restart is
            # right only when we know the restart happened after our previous sample.
            if start is not None and st.t <= start < t:
                _emit(out, st.k1, t, v / (t - start))
        else:
            _emit(out, st.k1, t, (v - st.v) / (t - st.t))
        st.t, st.v, st.start = t, v, start

    def _delta_sum(self, key: SeriesKey, t: float, v: float, start: float | None, st: _State | None,
                   out) -> None:
        if st is None or st.mode != "dsum":
            st = self._new(key, "dsum")
        if start is not None and start < t:
            _emit(out, st.k1, t, v / (t - start))
        elif st.t > -math.inf:
            _emit(out, st.k1, t, v / (t - st.t))
        st.t = t

    def _histogram(self, key: SeriesKey, t: float, r: tuple, st: _State | None, out) -> None:
        _, _, _, _, _, temporality, start, count, total, bounds, buckets = r
        if temporality == "delta":
            if st is None or st.mode != "dhist":
                st = self._new(key, "dhist")
            st.t = t
            _emit_histogram(out, st, t, count, total, bounds, buckets)
            return
        if st is None or st.mode != "chist":
            st = self._new(key, "chist")
            interval = None
        else:
            interval = _difference(st, start, count, total, bounds, buckets)
            if interval is None:  # reset
                if start is not None and st.t <= start < t:
                    interval = (count, total, buckets)
        st.t, st.start, st.count, st.total = t, start, count, total
        st.bounds, st.buckets = bounds, buckets
        if interval is not None:
            _emit_histogram(out, st, t, interval[0], interval[1], bounds, interval[2])


# Sample's defaults, by field position: pads a row that leaves trailing ones out.
_DEFAULTS = (None, None, None, 0.0, False, "cumulative", None, 0.0, 0.0, (), ())


def _fields(s: Sample) -> tuple:
    return (s.series, s.t, s.kind, s.value, s.monotonic, s.temporality, s.start_t, s.count, s.total, s.bounds,
            s.buckets)


def _difference(st: _State, start: float | None, count: float, total: float, bounds: tuple[float, ...],
                buckets: tuple[float, ...]) -> tuple[float, float, tuple[float, ...]] | None:
    """The interval between two cumulative histogram samples, or ``None`` on a reset."""
    if count < st.count or bounds != st.bounds or len(buckets) != len(st.buckets):
        return None
    if start is not None and st.start is not None and start != st.start:
        return None
    diff = tuple(map(_sub, buckets, st.buckets))
    if any(map(_lt, diff, _ZEROS)):
        return None
    return count - st.count, total - st.total, diff


def _emit(out, key: SeriesKey, t: float, value: float) -> None:
    if _isfinite(value):
        out[0](key)
        out[1](t)
        out[2](value)


def _emit_histogram(out, st: _State, t: float, count: float, total: float,
                    bounds: tuple[float, ...], buckets: tuple[float, ...]) -> None:
    if not count > 0:
        return
    _emit(out, st.k1, t, total / count)  # NaN when the source sent no sum: no mean point
    p95 = histogram_quantile(0.95, bounds, buckets)
    if p95 is not None:
        _emit(out, st.k2, t, p95)
