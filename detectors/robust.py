"""The default detector: a robust, seasonal, self-baselining forecaster, vectorized over series.

Every series keeps a few dozen float64 numbers in one row of a 2-D array, so a batch of
points from many series is scored and learned with a handful of numpy operations:

- a level and a damped trend, updated from Huber-clipped forecast errors, so one outlier moves
  the baseline by at most ``alpha * clip`` robust standard deviations;
- a daily profile (``DAY_BINS`` bins of time of day, learned against a slow baseline with errors
  clipped at the profile's own scale, so a sharp daily step is learned in a few days) that is
  used only while it forecasts better than the plain level, so a series without a daily cycle
  pays nothing for it;
- a robust scale: the exponentially weighted mean absolute error, its updates clipped too, with a
  floor relative to the level so a constant series scores a change as large without dividing
  by zero;
- a re-baseline rule: after ``shift_points`` consecutive errors beyond ``shift_z`` on the same side,
  lasting at least ``shift_seconds``, the level jumps to a fast tracker of recent values, so a
  lasting level shift stops alerting within a bounded time;
- a recovery rule: the baseline of the last calm stretch (``calm_seconds`` without a large
  error) is kept aside. While a disturbance lasts, the clipped updates still let the baseline
  creep toward the disturbed values; when the series comes back to the calm baseline, that is
  the end of the disturbance, not a new anomaly: the point scores zero and the calm baseline is
  restored. Without this, every fault that outlives a few dozen points alerts twice.
- the daily profile is used only after a day of history, because a profile that has seen each
  time of day once would learn the first disturbance as "what happens at this hour".

The score of a point is ``1 - exp(-(z / a) ** b)`` of its robust z-score, with ``a`` and ``b`` set
so that ``z = 6`` scores 0.9 and ``z = 9`` scores 0.99. It needs no tuning per series.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

DAY = 86400.0
DAY_BINS = 48
# Column layout of one series' state row.
(N, T, DT, LEVEL, TREND, ERR_PLAIN, ERR_SEAS, FAST, RUN, PREV, STEP, LIK_MU, LIK_VAR, ONSET, SMOOTH,
 CALM, PRE_T, PRE_LEVEL, PRE_ERR_PLAIN, PRE_ERR_SEAS, BASE, ERR_BASE, QUIET_UNTIL) = range(23)
SEASON0 = 23
WIDTH = SEASON0 + DAY_BINS

SIGMA_PER_MAE = 1.2533  # sigma / mean |error| for Gaussian noise
# score(z) = 1 - exp(-(z/a)^b): 0.9 at z=6 and 0.99 at z=9
_B = float(np.log(np.log(100.0) / np.log(10.0)) / np.log(1.5))
_A = float(6.0 / np.log(10.0) ** (1.0 / _B))


@dataclass(frozen=True)
class RobustParams:
    """Defaults of the ``robust`` model; a rule's ``params`` override them by name."""

    alpha: float = 0.05          # level learning rate per point
    beta: float = 0.0            # trend learning rate (relative to alpha); 0 disables the trend
    phi: float = 0.98            # trend damping per point
    scale_rate: float = 0.02     # learning rate of the mean absolute error
    clip: float = 3.0            # Huber clip of errors, in robust standard deviations
    season_rate: float = 0.1     # daily-profile learning rate per point falling in a bin
    season_gain: float = 0.6     # use the profile once its error is below this share of the plain error
    season_max_interval: float = 3 * 3600.0  # no daily profile for series sampled more sparsely than this
    season_clip: float = 30.0    # clip of the profile's errors, in its own robust standard deviations
    base_seconds: float = DAY / 2  # time constant of the slow baseline the daily profile is learned against
    shift_z: float = 4.0         # an error beyond this z on one side counts toward a level shift ...
    shift_points: int = 20       # ... and this many in a row re-baseline the level ...
    shift_seconds: float = 1800.0  # ... if they also span this long: a fault shorter than this is not a new normal
    calm_seconds: float = 1800.0  # a stretch this long without a large error becomes the baseline to recover to
    disturbed_gain: float = 0.2  # learning-rate factor for points beyond shift_z: a fault teaches the baseline slowly
    fast_rate: float = 0.3       # learning rate of the fast tracker used to re-baseline
    rel_floor: float = 1e-6      # scale floor relative to |level|
    abs_floor: float = 1e-9      # absolute scale floor (a series constant at zero)
    step_floor: float = 1.0      # scale floor relative to the mean absolute point-to-point change
    step_rate: float = 0.01      # learning rate of that mean change
    # The evaluation (onset) score, see ``_step``:
    lik_rate: float = 0.002      # learning rate of the history of surprise
    onset_halflife: float = 5 * DAY  # half-life of the recent surprise peak, in seconds
    lik_warmup: int = 30         # points before the evaluation score starts
    smooth_rate: float = 0.4     # rate of the smoothed z (a sustained small shift); 0 disables
    onset_refractory: float = DAY / 2  # after an onset at the cut (``ONSET_CUT``), later onsets score 0 this long

    @classmethod
    def from_mapping(cls, params: Mapping[str, object]) -> "RobustParams":
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"robust: unknown param(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: type(getattr(cls, k))(v) for k, v in params.items()})


def z_to_score(z: np.ndarray) -> np.ndarray:
    """Map a robust z-score to [0, 1].

    >>> [round(float(s), 3) for s in z_to_score(np.array([0.0, 3.0, 6.0, 9.0]))]
    [0.0, 0.505, 0.9, 0.99]
    """
    return -np.expm1(-np.power(np.abs(z) / _A, _B))


def rounds(idx: np.ndarray) -> list[np.ndarray]:
    """Split positions of ``idx`` into rounds with at most one position per series each,
    keeping each series' order: round ``k`` holds every series' ``k``-th point.

    >>> [r.tolist() for r in rounds(np.array([3, 1, 3, 3, 1]))]
    [[0, 1], [2, 4], [3]]
    """
    n = len(idx)
    if n == 0:
        return []
    order = np.argsort(idx, kind="stable")
    s = idx[order]
    new = np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(new)
    rank_sorted = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = rank_sorted
    if rank_sorted.max() == 0:
        return [np.arange(n)]
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(rank_sorted.max() + 2))
    return [by_rank[bounds[k]:bounds[k + 1]] for k in range(len(bounds) - 1)]


class RobustDetector:
    """Per-series robust forecaster; see the module docstring.

    Examples
    --------
    >>> d = RobustDetector()
    >>> d.grow(1)
    >>> t = np.arange(40.0) * 60
    >>> x = np.r_[np.full(39, 10.0) + np.sin(np.arange(39)), 30.0]
    >>> scores, expected = d.score_learn(np.zeros(40, dtype=np.int64), t, x)
    >>> bool(scores[-1] > 0.99), bool(scores[:-1].max() < 0.9)
    (True, True)
    """

    name = "robust"

    def __init__(self, params: Mapping[str, object] | None = None) -> None:
        self.params = RobustParams.from_mapping(params or {})
        self._state = np.zeros((0, WIDTH), dtype=np.float64)
        self._size = 0

    def grow(self, n: int) -> None:
        """Make room for local series indices ``0 .. n-1`` (geometric growth)."""
        if n <= self._size:
            return
        if n > len(self._state):
            cap = max(n, 2 * len(self._state), 16)
            new = np.zeros((cap, WIDTH), dtype=np.float64)
            new[: self._size] = self._state[: self._size]
            self._state = new
        self._size = n

    @property
    def nbytes(self) -> int:
        return int(self._state.nbytes)

    @property
    def bytes_per_series(self) -> int:
        return WIDTH * 8

    def score_learn(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score each point against its series' state, then learn it.

        Points of one series are taken in the order given. Returns ``(scores, expected)``:
        scores in [0, 1] and the forecast each point was scored against.
        """
        z, expected, _ = self.z_learn(idx, t, x)
        return z_to_score(z), expected

    def score_learn_eval(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`score_learn` plus the evaluation score of each point (see :func:`onset_score`)."""
        z, expected, onset = self.z_learn(idx, t, x)
        return z_to_score(z), expected, onset_score(onset)

    def z_learn(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Signed robust z-scores, forecasts and raw onset surprise of each point; learns them."""
        idx = np.asarray(idx, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        if len(idx) and idx.max() >= self._size:
            self.grow(int(idx.max()) + 1)
        z = np.zeros(len(idx))
        expected = np.zeros(len(idx))
        onset = np.zeros(len(idx))
        for pos in rounds(idx):
            z[pos], expected[pos], onset[pos] = self._step(idx[pos], t[pos], x[pos])
        return z, expected, onset

    def _step(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One point for each of distinct series ``idx``."""
        p = self.params
        st = self._state[idx]  # a copy; written back at the end
        m = len(idx)
        rows = np.arange(m)
        n = st[:, N]
        first = n == 0
        st[first, LEVEL] = x[first]
        st[first, FAST] = x[first]
        st[first, T] = t[first]
        st[first, PREV] = x[first]

        dt = np.where(first, 0.0, t - st[:, T])
        level, trend = st[:, LEVEL], st[:, TREND]
        bins = ((t % DAY) * (DAY_BINS / DAY)).astype(np.int64) % DAY_BINS
        season = st[rows, SEASON0 + bins]

        plain = level + p.phi * trend
        seasonal = plain + season
        err_p, err_s = st[:, ERR_PLAIN], st[:, ERR_SEAS]
        use_season = (st[:, DT] > 0) & (st[:, DT] <= p.season_max_interval) & (n > 2 * DAY_BINS) \
            & (n * st[:, DT] >= DAY) & (err_s < p.season_gain * err_p)
        expected = np.where(use_season, seasonal, plain)
        err = np.where(use_season, err_s, err_p)
        floor = np.maximum(p.rel_floor * np.abs(level), p.step_floor * st[:, STEP]) + p.abs_floor
        sigma = np.maximum(SIGMA_PER_MAE * err, floor)
        r = x - expected
        z = np.where(n < 2, 0.0, r / sigma)

        # Recovery: back within the calm baseline's band while disturbed -> restore it, score 0.
        disturbed = (st[:, PRE_T] > 0) & (st[:, CALM] * st[:, DT] < p.calm_seconds) & (np.abs(z) > p.shift_z / 2)
        if disturbed.any():
            pre_exp = st[:, PRE_LEVEL] + np.where(use_season, season, 0.0)
            pre_err = np.where(use_season, st[:, PRE_ERR_SEAS], st[:, PRE_ERR_PLAIN])
            pre_sigma = np.maximum(SIGMA_PER_MAE * pre_err, floor)
            back = disturbed & (np.abs(x - pre_exp) <= p.shift_z / 2 * pre_sigma)
            if back.any():
                st[back, BASE] += st[back, PRE_LEVEL] - st[back, LEVEL]
                st[back, LEVEL] = st[back, PRE_LEVEL]
                st[back, ERR_PLAIN] = st[back, PRE_ERR_PLAIN]
                st[back, ERR_SEAS] = st[back, PRE_ERR_SEAS]
                st[back, TREND] = 0.0
                st[back, RUN] = 0.0
                st[back, FAST] = st[back, PRE_LEVEL]
                level, trend = st[:, LEVEL], st[:, TREND]
                plain = level + p.phi * trend
                seasonal = plain + season
                expected = np.where(back, pre_exp, expected)
                sigma = np.where(back, pre_sigma, sigma)
                err_p, err_s = st[:, ERR_PLAIN], st[:, ERR_SEAS]
                z = np.where(back, 0.0, z)

        # --- learn ---
        # Cold start: rates no smaller than 1/(n+1), so the first points set level and scale
        # as plain averages instead of decaying from zero.
        gain = np.where(np.abs(z) > p.shift_z, p.disturbed_gain, 1.0)
        a = np.maximum(p.alpha, 1.0 / (n + 1.0)) * gain
        k = np.maximum(p.scale_rate, 1.0 / (n + 1.0)) * gain
        early = n < 3  # nothing to clip against yet
        e_s = x - seasonal
        e_p = x - plain
        ec = np.where(early, e_s, np.clip(e_s, -p.clip * sigma, p.clip * sigma))
        new_level = plain + a * ec
        st[:, TREND] = p.phi * trend + p.beta * a * ec
        # The profile learns against a slow baseline, not the level: the level follows a daily
        # step within ``shift_points`` (re-baselining), so errors against it would teach the
        # profile only a step's first few points, and the clip that keeps one outlier from
        # moving the level (a few sigma of the *level's* noise) would make a 60-sigma daily step
        # take weeks. The profile's own clip is relative to its own error, which is wide while
        # the profile is unlearned and narrows as it forecasts.
        base = np.where(first, x, st[:, BASE])
        e_b = x - base - season
        sig_b = np.maximum(SIGMA_PER_MAE * st[:, ERR_BASE], floor)
        eb_c = np.where(early, e_b, np.clip(e_b, -p.season_clip * sig_b, p.season_clip * sig_b))
        st[rows, SEASON0 + bins] = season + p.season_rate * eb_c
        st[:, ERR_BASE] += np.maximum(p.scale_rate, 1.0 / (n + 1.0)) * (np.abs(eb_c) - st[:, ERR_BASE])
        ab = np.maximum(-np.expm1(-dt / p.base_seconds), 1.0 / (n + 1.0))
        st[:, BASE] = base + ab * (x - season - base)
        for col, e in ((ERR_PLAIN, e_p), (ERR_SEAS, e_s)):
            cap = np.where(early, np.inf, p.clip * np.maximum(SIGMA_PER_MAE * st[:, col], floor))
            st[:, col] += k * (np.minimum(np.abs(e), cap) - st[:, col])
        # Deseasonalized even before the profile is in use: re-baselining to raw values would
        # keep the seasonal error (against the level) as large as the daily swing, so the
        # profile would never win the comparison that switches it on.
        st[:, FAST] += p.fast_rate * (x - season - st[:, FAST])
        step = np.abs(x - st[:, PREV])
        st[:, STEP] += np.maximum(p.step_rate, 1.0 / (n + 1.0)) * (step - st[:, STEP])
        st[:, PREV] = x

        # Lasting shift: count consecutive large errors on one side; re-baseline when enough.
        side = np.where(z > p.shift_z, 1.0, np.where(z < -p.shift_z, -1.0, 0.0))
        run = st[:, RUN]
        run = np.where((side != 0) & (np.sign(run) == side), run + side, side)
        shifted = (np.abs(run) >= p.shift_points) & (np.abs(run) * st[:, DT] >= p.shift_seconds)
        # A lasting shift moves the profile's baseline by the same jump.
        st[:, BASE] += np.where(shifted, st[:, FAST] - new_level, 0.0)
        new_level = np.where(shifted, st[:, FAST], new_level)
        st[shifted, TREND] = 0.0
        run[shifted] = 0.0
        st[:, RUN] = run
        st[:, LEVEL] = new_level

        # The calm baseline: refreshed on every point of a long enough calm stretch.
        calm = np.where(np.abs(z) <= p.shift_z, st[:, CALM] + 1.0, 0.0)
        st[:, CALM] = calm
        settled = calm * st[:, DT] >= p.calm_seconds
        st[settled, PRE_T] = t[settled]
        st[settled, PRE_LEVEL] = new_level[settled]
        st[settled, PRE_ERR_PLAIN] = st[settled, ERR_PLAIN]
        st[settled, PRE_ERR_SEAS] = st[settled, ERR_SEAS]

        # Evaluation score: how unusual this surprise is for this series (standardized against
        # its own history), counted only where it rises above the recent peak, so a lasting
        # anomaly scores once at its onset.
        zz = np.minimum(np.abs(z), 1e6)
        if p.smooth_rate > 0:
            zs = st[:, SMOOTH] + p.smooth_rate * (np.clip(z, -p.clip, p.clip) - st[:, SMOOTH])
            st[:, SMOOTH] = zs
            zz = np.maximum(zz, np.abs(zs) * np.sqrt((2.0 - p.smooth_rate) / p.smooth_rate))
        u = np.log1p(zz)
        mu, var = st[:, LIK_MU], st[:, LIK_VAR]
        v = np.where(n < p.lik_warmup, 0.0, np.minimum((u - mu) / np.sqrt(var + 0.01), 50.0))
        lr = np.maximum(p.lik_rate, 1.0 / (n + 1.0))
        d = u - mu
        st[:, LIK_MU] = mu + lr * d
        st[:, LIK_VAR] = (1.0 - lr) * (var + lr * d * d)
        peak = st[:, ONSET]
        onset = np.maximum(v - peak, 0.0)
        st[:, ONSET] = np.maximum(v, peak * np.exp2(-dt / p.onset_halflife))
        # A refractory period after an alert-level onset: a repeat outside the anomaly's window
        # is a false positive and one inside it earns nothing, and the surprises that follow a
        # large one (aftershocks, a second step of the same event) often climb above its peak.
        onset = np.where(t < st[:, QUIET_UNTIL], 0.0, onset)
        st[:, QUIET_UNTIL] = np.where(onset >= ONSET_CUT, t + p.onset_refractory, st[:, QUIET_UNTIL])

        dt_c = np.minimum(dt, 10.0 * st[:, DT] + (st[:, DT] == 0) * dt)
        st[:, DT] = np.where(n == 0, 0.0, np.where(n == 1, dt, st[:, DT] + 0.05 * (dt_c - st[:, DT])))
        st[:, T] = t
        st[:, N] = n + 1
        self._state[idx] = st
        return z, expected, onset


# The onset that scores 0.9, the production threshold. The NAB folds (leave-one-category-out)
# choose a cut of 0.534; the NAB score at a fixed cut is flat from about 0.50 to 0.525 and drops
# above 0.53 (a realTraffic window sits there), so 0.9 is put inside the flat part, not at its edge.
ONSET_CUT = 0.52
ONSET_SCALE = ONSET_CUT / float(np.log(10.0))


def onset_score(onset: np.ndarray) -> np.ndarray:
    """Map raw onset surprise (standard deviations above the recent peak) to [0, 1).

    >>> [round(float(s), 2) for s in onset_score(np.array([0.0, ONSET_CUT, 1.0]))]
    [0.0, 0.9, 0.99]
    """
    return -np.expm1(-np.maximum(onset, 0.0) / ONSET_SCALE)
