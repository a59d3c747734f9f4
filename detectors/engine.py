"""Per-series online detection over batches of points, and the alert state machine.

The engine owns a registry of series (``SeriesKey -> index``), the per-series alert state in
numpy arrays, and one detector instance per distinct ``(model, params)`` among the rules; each
instance keeps its own per-series state. A batch goes to each model in one call, which takes a
series' points in the order given; the alert state machine steps point by point only for the
series that fire or are anomalous in the batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import math

import numpy as np

from detectors.config import DetectorRule, DetectorSettings
from detectors.records import Alert, Point, SeriesKey
from detectors.robust import RobustDetector


_isfinite = math.isfinite


def make_detector(model: str, params: dict) -> object:
    """A batch detector for a rule's ``model`` name (River models are imported lazily)."""
    if model == "robust":
        return RobustDetector(params)
    from detectors.river_models import make_river_detector

    return make_river_detector(model, params)


def _score_learn_onset(model, idx: np.ndarray, t: np.ndarray, x: np.ndarray):
    """``(scores, expected, onset scores)``; for a model without an onset score of its own, every
    anomalous point is an onset (an alert opens at the first point at or above the threshold)."""
    if hasattr(model, "score_learn_onset"):
        return model.score_learn_onset(idx, t, x)
    s, e = model.score_learn(idx, t, x)
    return s, e, s


def _fmt(v: float) -> str:
    """Short human number for summaries.

    >>> _fmt(0.98), _fmt(1234.5), _fmt(3e-05)
    ('0.98', '1234', '3e-05')
    """
    if not np.isfinite(v):
        return str(v)
    if abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.3g}"


@dataclass(frozen=True)
class Scored:
    """Per input point: deviation score, forecast and onset score, ``nan`` where a point was
    ignored (a redelivery, an out-of-order point or a non-finite value)."""

    scores: np.ndarray
    expected: np.ndarray
    onset: np.ndarray
    # The input position of each alert returned with this, in the same order: a caller that
    # scored several messages in one call gives each message its own alerts back.
    alert_positions: tuple[int, ...] = ()


class DetectionEngine:
    """Per-series online detection with warm-up and a fire/resolve state machine.

    An alert opens at an onset: a point whose onset score is at or above the series' threshold
    (the start of a departure larger than anything the series did lately; see
    :mod:`detectors.robust`). It fires once the series has stayed anomalous (deviation or onset
    score at or above the threshold) for ``fire_after`` from the onset on, the onset point standing
    for the interval since the point before it: a 5-minute series fires at the onset, a 1-minute
    series at its second anomalous point. ``resolve_after_points`` consecutive points that are not
    anomalous drop an onset that has not fired yet, and resolve an alert that has. A deviation
    that lasts ``warmup_points`` points in a row, and ``fire_after`` at least, fires too, onset or
    not: the bar a past fault raised hides a repeat of the same size for days, but not one that
    lasts as long as it takes to learn a series (five minutes at a 10-second scrape; a lasting
    level shift is re-baselined before that at a 1- or 5-minute scrape). Points within the warm-up
    never count. So a series pages once per episode, a deviation the series has shown lately
    does not page again, and a one-sample spike of a finely sampled series does not page.

    Examples
    --------
    >>> eng = DetectionEngine(DetectorSettings(warmup_points=10))
    >>> key = SeriesKey("orders-db", "db.client.connections.utilization")
    >>> calm = [Point(key, 60.0 * i, 0.41 + 0.01 * (i % 3)) for i in range(50)]
    >>> eng.process(calm)
    []
    >>> [a.status for a in eng.process([Point(key, 3000.0, 0.98), Point(key, 3060.0, 0.98)])]
    ['firing']
    >>> eng.process([Point(key, 3000.0, 0.98)])  # redelivered: ignored
    []
    """

    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings
        self._index: dict[SeriesKey, int] = {}
        self._keys: list[SeriesKey] = []
        self._models: list = []
        self._model_slot: dict[tuple, int] = {}
        self._model_size: list[int] = []
        self._cap = 0
        self._alloc(0)
        # Series indices by id() of key objects already seen: the normalizer hands over the
        # same key object for a series every time, and an id lookup costs a fraction of
        # hashing the key's fields. _pins holds those objects, so no other can take their ids.
        self._by_id: dict[int, int] = {}
        self._pins: list[SeriesKey] = []

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_by_id"], state["_pins"] = {}, []  # ids mean nothing in another process
        # The index is _keys inverted: rebuilt on load in a fraction of the time unpickling it
        # takes (a checkpoint of 1M series restores in about half the time without it).
        del state["_index"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._index = {key: i for i, key in enumerate(self._keys)}

    # --- registry -------------------------------------------------------------------------
    def _alloc(self, cap: int) -> None:
        def grown(name: str, dtype, fill) -> np.ndarray:
            new = np.full(cap, fill, dtype=dtype)
            old = getattr(self, name, None)
            if old is not None:
                new[: len(old)] = old
            return new

        self._slot = grown("_slot", np.int16, 0)
        self._local = grown("_local", np.int32, 0)
        self._thr = grown("_thr", np.float32, 1.0)
        self._last_t = grown("_last_t", np.float64, -np.inf)
        self._n = grown("_n", np.int64, 0)
        self._hi = grown("_hi", np.int32, 0)
        self._lo = grown("_lo", np.int32, 0)
        self._firing = grown("_firing", np.bool_, False)
        self._starts = grown("_starts", np.float64, 0.0)
        self._peak = grown("_peak", np.float32, 0.0)
        self._dev = grown("_dev", np.float32, 0.0)  # |value - expected| when the alert last went out
        self._cover = grown("_cover", np.float32, 0.0)  # how long the onset point stands for (its interval)
        self._run = grown("_run", np.int32, 0)  # consecutive anomalous points (deviation score alone)
        self._run_start = grown("_run_start", np.float64, 0.0)  # the first of them
        self._cap = cap

    def _register(self, key: SeriesKey) -> int:
        i = len(self._keys)
        if i >= self._cap:
            self._alloc(max(16, 2 * self._cap))
        rule: DetectorRule = self.settings.rule_for(key.service, key.metric, key.labels)
        mkey = (rule.model, tuple(sorted(rule.params.items())))
        slot = self._model_slot.get(mkey)
        if slot is None:
            slot = len(self._models)
            self._model_slot[mkey] = slot
            self._models.append(make_detector(rule.model, dict(rule.params)))
            self._model_size.append(0)
        local = self._model_size[slot]
        self._model_size[slot] = local + 1
        self._models[slot].grow(local + 1)
        self._slot[i] = slot
        self._local[i] = local
        self._thr[i] = self.settings.threshold if rule.threshold is None else rule.threshold
        self._index[key] = i
        self._keys.append(key)
        return i

    def reconfigure(self, settings: DetectorSettings) -> None:
        """Take new settings (a live config change) and keep what every series has learned.

        Thresholds, warm-up and the fire/resolve counts apply from the next point on, for known
        series too. The model of a known series stays the one it was given (its learned state
        belongs to that model); series first seen after the change get the new rules' models."""
        self.settings = settings
        for i, key in enumerate(self._keys):
            rule = settings.rule_for(key.service, key.metric, key.labels)
            self._thr[i] = settings.threshold if rule.threshold is None else rule.threshold

    def series_count(self) -> int:
        return len(self._keys)

    def nbytes(self) -> int:
        """Bytes held by per-series state arrays (the engine's and every model's)."""
        own = sum(a.nbytes for a in (self._slot, self._local, self._thr, self._last_t, self._n, self._hi,
                                     self._lo, self._firing, self._starts, self._peak, self._dev, self._cover, self._run,
                                     self._run_start))
        return int(own + sum(m.nbytes for m in self._models))

    # --- scoring --------------------------------------------------------------------------
    def process(self, points: Sequence[Point]) -> list[Alert]:
        """Score then learn every point; return the alerts that fire or resolve.

        Points of one series are taken in the order given. A point whose time is not after
        the series' last accepted point is ignored, so a redelivered batch changes nothing.
        """
        return self.process_scored(points)[0]

    def process_scored(self, points: Sequence[Point]) -> tuple[list[Alert], Scored]:
        """:meth:`process`, also returning every point's score and forecast (for evaluation)."""
        return self.process_columns([p.series for p in points], [p.t for p in points], [p.value for p in points])

    def process_columns(self, keys: Sequence[SeriesKey], t: Sequence[float], x: Sequence[float]
                        ) -> tuple[list[Alert], Scored]:
        """:meth:`process_scored` for points given as three parallel sequences, so a producer
        of many points (the normalizer) need not build a :class:`Point` per point.

        Each model sees all of a batch's accepted points in one call: a point is accepted when
        its value is finite and its time is after the series' last accepted point, which is
        known before anything is scored. Models keep one series' points in order and no state
        across series, so one call gives what a call per round gave. The fire/resolve state
        machine steps per point only for series that are firing or score an anomaly in the
        batch; every other series just sees its counters reset."""
        m = len(keys)
        scores = np.full(m, np.nan)
        expected = np.full(m, np.nan)
        onset = np.full(m, np.nan)
        if m == 0:
            return [], Scored(scores, expected, onset)
        by_id = self._by_id
        if len(self._pins) > 4 * len(self._keys) + 4096:
            by_id.clear()  # many short-lived key objects: start over rather than grow
            self._pins.clear()
        gl = list(map(by_id.get, map(id, keys)))
        if None in gl:
            get = self._index.get
            for j, g in enumerate(gl):
                if g is None:
                    key = keys[j]
                    g = get(key)
                    if g is None:
                        g = self._register(key)
                    gl[j] = by_id[id(key)] = g
                    self._pins.append(key)
        gidx = np.array(gl, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        pos = self._accepted(gl, gidx, t, x)
        if pos is None:
            pos, gi, tt, xx = np.arange(m), gidx, t, x
        elif len(pos) == 0:
            return [], Scored(scores, expected, onset)
        else:
            gi, tt, xx = gidx[pos], t[pos], x[pos]
        if len(self._models) == 1:
            s, e, v = _score_learn_onset(self._models[0], self._local[gi], tt, xx)
        else:
            s, e, v = np.empty(len(pos)), np.empty(len(pos)), np.empty(len(pos))
            slots = self._slot[gi]
            for slot in np.unique(slots):
                sel = slots == slot
                s[sel], e[sel], v[sel] = _score_learn_onset(self._models[slot], self._local[gi[sel]], tt[sel], xx[sel])
        scores[pos], expected[pos], onset[pos] = s, e, v
        fired = sorted(self._transition(pos, gi, tt, s, v, np.abs(xx - e)))
        alerts = [self._alert(status, gidx[j], t[j], x[j], scores[j], expected[j], starts, peak)
                  for j, status, starts, peak in fired]
        return alerts, Scored(scores, expected, onset, tuple(f[0] for f in fired))

    def _accepted(self, gl: list[int], gidx: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray | None:
        """Positions of the points to score (``None``: all of them). A point is taken when its
        value is finite and its time is after the latest taken point of its series."""
        last_t = self._last_t
        if np.isfinite(x).all():
            order = np.argsort(gidx, kind="stable")
            g, ts = gidx[order], t[order]
            first = np.empty(len(g), dtype=np.bool_)
            first[0] = True
            np.not_equal(g[1:], g[:-1], out=first[1:])
            before = np.empty(len(g))
            before[0] = -np.inf
            before[1:] = ts[:-1]
            before[first] = last_t[g[first]]
            if (ts > before).all():  # the usual batch: every series moves forward
                return None
        latest: dict[int, float] = {}
        keep = []
        for j, (g, tj, xj) in enumerate(zip(gl, t.tolist(), x.tolist())):
            prev = latest.get(g)
            if prev is None:
                prev = float(last_t[g])
            if tj > prev and _isfinite(xj):
                latest[g] = tj
                keep.append(j)
        return np.array(keep, dtype=np.int64)

    def _transition(self, pos: np.ndarray, gi: np.ndarray, t: np.ndarray, s: np.ndarray, onset: np.ndarray,
                    dev: np.ndarray) -> list[tuple[int, str, float, float]]:
        """Advance the fire/resolve state machine of series ``gi`` by the points ``pos`` (in
        order; a series may have several) and record their times and counts.

        A firing alert goes out again (same ``starts_at``, later ``at``) when its deviation has
        doubled since it last went out: the incident learns that a pool went from 60 % to
        100 % without a new alert per point, and a flapping series that is not getting worse
        stays quiet."""
        cfg = self.settings
        k = len(gi)
        order = np.argsort(gi, kind="stable")
        g_sorted = gi[order]
        first = np.empty(k, dtype=np.bool_)
        first[0] = True
        np.not_equal(g_sorted[1:], g_sorted[:-1], out=first[1:])
        heads = np.flatnonzero(first)
        counts = np.diff(np.append(heads, k))
        series = g_sorted[heads]
        # Each point's count of points seen, itself included: the warm-up is judged per point.
        rank = np.empty(k, dtype=np.int64)
        rank[order] = np.arange(k) - np.repeat(heads, counts)
        n = self._n[gi] + rank + 1
        warm = n > cfg.warmup_points
        thr = self._thr[gi]
        opens = (onset >= thr) & warm
        deviates = (s >= thr) & warm
        anom = deviates | opens
        # What each point stands for: the interval since the series' point before it.
        ts = t[order]
        before = np.empty(k)
        before[1:] = ts[:-1]
        before[heads] = self._last_t[series]
        cover = np.empty(k)
        cover[order] = ts - before
        last = heads + counts - 1
        self._n[series] += counts
        self._last_t[series] = ts[last]
        # A series matters here when it is firing, waiting to fire (an onset, then anomalous
        # points for less than fire_after) or anomalous in the batch.
        active = self._firing[gi] | (self._hi[gi] > 0)
        if anom.any():
            touched = np.zeros(self._cap, dtype=np.bool_)
            touched[gi[anom]] = True
            active |= touched[gi]
        quiet = gi[~active]
        if len(quiet):
            # Not firing, not waiting and nothing anomalous: each point only resets the run counters.
            self._hi[quiet] = 0
            self._lo[quiet] = 0
            self._run[quiet] = 0
            self._peak[quiet] = np.maximum(self._peak[quiet], 0.0)
        if not active.any():
            return []
        return self._step_states(np.flatnonzero(active).tolist(), pos, gi, t, s, dev, anom, opens, deviates, cover)

    def _step_states(self, which: list[int], pos, gi, t, s, dev, anom, opens, deviates, cover
                     ) -> list[tuple[int, str, float, float]]:
        """The state machine point by point, for the points ``which`` (indices into ``gi``).

        Values kept in float32 arrays are rounded to float32 after every point, as storing
        them after each step does."""
        cfg = self.settings
        fire_after, resolve_after = cfg.fire_after.total_seconds(), cfg.resolve_after_points
        f32 = np.float32
        state: dict[int, list] = {}
        out: list[tuple[int, str, float, float]] = []
        for i in which:
            g = int(gi[i])
            st = state.get(g)
            if st is None:
                st = state[g] = [int(self._hi[g]), int(self._lo[g]), bool(self._firing[g]), float(self._starts[g]),
                                 self._peak[g], self._dev[g], self._cover[g], int(self._run[g]),
                                 float(self._run_start[g])]
            hi_old, lo_old, firing, starts, peak32, dev32, cover32, run, run_start = st
            a = bool(anom[i])
            si = float(s[i])
            # hi counts the anomalous points since an onset; while the alert waits to fire, a
            # normal point keeps the onset, and resolve_after_points of them drop it.
            pending = hi_old > 0 and not firing
            if a and (hi_old > 0 or firing or opens[i]):
                hi = hi_old + 1
            else:
                hi = hi_old if pending else 0
            if deviates[i]:
                run += 1
                if run == 1:
                    run_start = float(t[i])
            else:
                run = 0
            lasting = not firing and run >= cfg.warmup_points and float(t[i]) - run_start >= fire_after
            if lasting and hi == 0:  # no onset in this run: the alert starts where the run did
                hi, starts, peak32 = 1, run_start, f32(si)
            starting = not firing and hi_old == 0 and hi == 1 and not lasting
            if starting:
                starts = float(t[i])
                cover32 = f32(cover[i])
                peak = si
            else:
                # np.maximum: NaN wins
                v = si if a else 0.0
                p = float(peak32)
                peak = p if (p >= v or p != p) else v
            lo = lo_old + 1 if (firing or pending) and not a else 0
            fire = lasting or (not firing and a and hi > 0 and float(t[i]) - starts + float(cover32) >= fire_after)
            resolve = firing and lo >= resolve_after
            drop = pending and lo >= resolve_after
            if resolve or drop:
                hi = 0
            if resolve or fire or drop:
                lo = 0
            d = float(dev[i])
            # In float32 as the array arithmetic does it, then compared in float64.
            worse = firing and not resolve and a and d >= float(f32(2.0) * dev32) and dev32 > 0
            if fire or worse:
                dev32 = f32(d)
                out.append((int(pos[i]), "firing", starts, si))
            elif resolve:
                out.append((int(pos[i]), "resolved", starts, peak))
            st[:] = hi, lo, (firing or fire) and not resolve, starts, f32(peak), dev32, cover32, run, run_start
        for g, (hi, lo, firing, starts, peak32, dev32, cover32, run, run_start) in state.items():
            self._hi[g], self._lo[g], self._firing[g], self._starts[g] = hi, lo, firing, starts
            self._peak[g], self._dev[g], self._cover[g] = peak32, dev32, cover32
            self._run[g], self._run_start[g] = run, run_start
        return out

    def _alert(self, status: str, i: int, t: float, x: float, score: float, expected: float, starts: float,
               peak: float) -> Alert:
        key = self._keys[i]
        return Alert(
            fingerprint=key.fingerprint,
            status=status,
            service=key.service,
            metric=key.metric,
            series=key.id,
            labels=key.labels,
            score=float(min(max(score, 0.0), 1.0)),
            value=float(x),
            expected=float(expected),
            starts_at=starts,
            at=float(t),
            severity="critical" if peak >= 0.99 else "warning",
            summary=f"{key.service} {key.metric} {_fmt(x)} (expected {_fmt(expected)})",
        )
