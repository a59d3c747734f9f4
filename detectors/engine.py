"""Per-series online detection over batches of points, and the alert state machine.

The engine owns a registry of series (``SeriesKey -> index``), the per-series alert state in
numpy arrays, and one detector instance per distinct ``(model, params)`` among the rules; each
instance keeps its own per-series state. A batch is scored in *rounds*: round ``k`` holds the
``k``-th point of every series in the batch, so each round is a few vectorized operations and a
series' points are still seen in order.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detectors.config import DetectorRule, DetectorSettings
from detectors.records import Alert, Point, SeriesKey
from detectors.robust import RobustDetector, rounds


def make_detector(model: str, params: dict) -> object:
    """A batch detector for a rule's ``model`` name (River models are imported lazily)."""
    if model == "robust":
        return RobustDetector(params)
    from detectors.river_models import make_river_detector

    return make_river_detector(model, params)


def _score_learn_eval(model, idx: np.ndarray, t: np.ndarray, x: np.ndarray):
    """``(scores, expected, evaluation scores)``; a model without its own evaluation score is
    evaluated on its alert score."""
    if hasattr(model, "score_learn_eval"):
        return model.score_learn_eval(idx, t, x)
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
    """Per input point: score and forecast, ``nan`` where a point was ignored (a redelivery,
    an out-of-order point or a non-finite value)."""

    scores: np.ndarray
    expected: np.ndarray
    evaluation: np.ndarray

    @property
    def nab(self) -> np.ndarray:
        """The score reported to NAB-style evaluation (0 for ignored points): the model's
        onset score where it has one (see :func:`detectors.robust.onset_score`), else its score."""
        return np.nan_to_num(self.evaluation, nan=0.0)


class DetectionEngine:
    """Per-series online detection with warm-up and a fire/resolve state machine.

    A series fires after ``fire_after_points`` consecutive points scoring at or above its
    threshold (points within the warm-up never count) and resolves after
    ``resolve_after_points`` consecutive points below it.

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
                                     self._lo, self._firing, self._starts, self._peak, self._dev))
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
        m = len(points)
        scores = np.full(m, np.nan)
        expected = np.full(m, np.nan)
        evaluation = np.full(m, np.nan)
        if m == 0:
            return [], Scored(scores, expected, evaluation)
        index = self._index
        gidx = np.empty(m, dtype=np.int64)
        t = np.empty(m, dtype=np.float64)
        x = np.empty(m, dtype=np.float64)
        for j, p in enumerate(points):
            i = index.get(p.series)
            gidx[j] = self._register(p.series) if i is None else i
            t[j] = p.t
            x[j] = p.value
        fired: list[tuple[int, str, float, float]] = []
        single = len(self._models) == 1
        for pos in rounds(gidx):
            gi = gidx[pos]
            ok = (t[pos] > self._last_t[gi]) & np.isfinite(x[pos])
            if not ok.all():
                pos, gi = pos[ok], gi[ok]
                if len(pos) == 0:
                    continue
            tt, xx = t[pos], x[pos]
            if single:
                s, e, v = _score_learn_eval(self._models[0], self._local[gi], tt, xx)
            else:
                s, e, v = np.empty(len(pos)), np.empty(len(pos)), np.empty(len(pos))
                slots = self._slot[gi]
                for slot in np.unique(slots):
                    sel = slots == slot
                    s[sel], e[sel], v[sel] = _score_learn_eval(self._models[slot], self._local[gi[sel]], tt[sel], xx[sel])
            scores[pos], expected[pos], evaluation[pos] = s, e, v
            self._last_t[gi] = tt
            self._n[gi] += 1
            fired += self._transition(pos, gi, tt, s, np.abs(xx - e))
        alerts = [self._alert(status, gidx[j], t[j], x[j], scores[j], expected[j], starts, peak)
                  for j, status, starts, peak in sorted(fired)]
        return alerts, Scored(scores, expected, evaluation)

    def _transition(self, pos: np.ndarray, gi: np.ndarray, t: np.ndarray, s: np.ndarray,
                    dev: np.ndarray) -> list[tuple[int, str, float, float]]:
        """Advance the fire/resolve state machine of series ``gi`` by one point each.

        A firing alert goes out again (same ``starts_at``, later ``at``) when its deviation has
        doubled since it last went out: the incident learns that a pool went from 60 % to
        100 % without a new alert per point, and a flapping series that is not getting worse
        stays quiet."""
        cfg = self.settings
        anom = (s >= self._thr[gi]) & (self._n[gi] > cfg.warmup_points)
        firing = self._firing[gi]
        hi_old = self._hi[gi]
        hi = np.where(anom, hi_old + 1, 0)
        starts = np.where(anom & (hi_old == 0) & ~firing, t, self._starts[gi])
        peak = np.where(anom & (hi_old == 0) & ~firing, s, np.maximum(self._peak[gi], np.where(anom, s, 0)))
        lo = np.where(firing & ~anom, self._lo[gi] + 1, 0)
        fire = ~firing & (hi >= cfg.fire_after_points)
        resolve = firing & (lo >= cfg.resolve_after_points)
        hi = np.where(resolve, 0, hi)
        lo = np.where(resolve | fire, 0, lo)
        self._hi[gi], self._lo[gi], self._starts[gi], self._peak[gi] = hi, lo, starts, peak
        self._firing[gi] = (firing | fire) & ~resolve
        worse = firing & ~resolve & anom & (dev >= 2.0 * self._dev[gi]) & (self._dev[gi] > 0)
        self._dev[gi] = np.where(fire | worse, dev, self._dev[gi])
        # starts_at and peak are captured now: a later round of this batch may start a new run.
        out = [(int(j), "firing", float(a), float(b)) for j, a, b in zip(pos[fire | worse], starts[fire | worse],
                                                                           s[fire | worse])]
        out += [(int(j), "resolved", float(a), float(b)) for j, a, b in zip(pos[resolve], starts[resolve], peak[resolve])]
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
