"""The default detector: a robust, seasonal, self-baselining forecaster over batches of series.

Every series keeps a few dozen float64 numbers in one row of a 2-D array. A batch is scored
and learned by one compiled loop over its points (:func:`_learn_points`, numba): a series'
points depend on each other in order, so the work is per point, and as numpy operations over
"every series' k-th point" it paid a fixed cost of about 150 numpy calls per round; compiled,
a point costs a few hundred nanoseconds. The model:

- a level and a damped trend, updated from Huber-clipped forecast errors, so one outlier moves
  the baseline by at most ``alpha * clip`` robust standard deviations;
- a daily profile (``DAY_BINS`` bins of time of day, learned from the same clipped errors) that is
  used only while it forecasts better than the plain level, so a series without a daily cycle
  pays nothing for it;
- a robust scale: the exponentially weighted mean absolute error, its updates clipped too, with a
  floor relative to the level so a constant series scores a change as large without dividing
  by zero;
- for a series whose values have all been integers (counts per interval: errors, queued jobs,
  messages), a second floor of ``count_floor * sqrt(level)``, the Poisson standard deviation: a
  mostly-zero count has a tiny mean absolute error, and without it a cluster of three events
  scores like a fault. It is capped at ``count_floor_steps`` mean point-to-point changes, so a
  constant count (replicas: 3) keeps no floor and a change of one still alerts;
- a re-baseline rule: after ``shift_points`` consecutive errors beyond ``shift_z`` on the same side,
  lasting at least ``shift_seconds``, the level jumps to a fast tracker of recent values less the
  daily profile (the level is a deseasonalized level; jumping to raw values made the profile
  learn each daily step twice over, +40 then -40 around a 40 step, and never forecast it), so a
  lasting level shift stops alerting within a bounded time;
- a recovery rule: the baseline of the last calm stretch (``calm_seconds`` without a large
  error) is kept aside. While a disturbance lasts, the clipped updates still let the baseline
  creep toward the disturbed values; when the series comes back to the calm baseline, that is
  the end of the disturbance, not a new anomaly: the point scores zero and the calm baseline is
  restored. Without this, every fault that outlives a few dozen points alerts twice.
- the daily profile is used only after a day of history, because a profile that has seen each
  time of day once would learn the first disturbance as "what happens at this hour".
- weekly seasonality as seven weekday offsets (weekends, a weekly batch day), learned once a day
  in :func:`_close_day` from the day's mean against a slow baseline of daily means, so the level's
  fast updates do not absorb them and an hour-long fault moves them by a twenty-fourth of its size
  (a whole-day holiday by at most ``clip`` typical errors). They enter the forecast once they
  predict daily means better than no offsets do (``week_gain``) and after ``week_min_days``; a
  series without a weekly cycle never uses them. Days start at midnight in ``time_zone``. With the
  wrong zone, offsets that step at midnight UTC would fire at both midnights (the forecast's and
  the data's), so the first minutes of each day that should step are checked: when the step
  comes late on two such days in a row, the offsets are left out and the series is forecast as
  without them. Set the series' business time zone in its rule to have them.
- time of day and day of week are the series' local time (``time_zone``, UTC by default), so a
  daylight saving change does not move a business-hours cycle by an hour against its profile.

Each point gets two scores in [0, 1], and production alerts on both (``detectors.threshold``):

- the **deviation score**, ``1 - exp(-(z / a) ** b)`` of the robust z-score, with ``a`` and ``b``
  set so that ``z = 6`` scores 0.9 and ``z = 9`` scores 0.99: how far the point is from normal. An
  open alert stays open while it is at or above the threshold, and resolves after
  ``resolve_after_points`` points below it;
- the **onset score** (:func:`onset_score`): is this the start of something larger than anything
  the series did lately, and either a point anomalous by itself (``POINT_Z``, a deviation score of
  0.9) or a sustained shift (the smoothed z from ``onset_min_z``)? Only an onset opens an alert,
  so a series pages once per episode, and a series whose large deviations are routine (latency
  percentiles over a handful of requests, a value that jumps between a few levels) stops paging
  for them once it has shown them. A point's
  surprise is ``log1p`` of its |z| (or of the smoothed z's equivalent, for a sustained small
  shift), standardized against the series' own history of surprise: a running mean and variance
  at ``lik_rate``, so the tail is the series' own, not a Gaussian's; a point beyond
  ``lik_disturbed_z`` teaches that history at ``disturbed_gain``, so a burst does not raise the bar
  for the next one. The onset is how far that exceeds the recent peak of surprise (which decays
  with ``onset_halflife`` towards ``onset_peak_floor``; the surprises of the first
  ``cold_start_points`` points, the model learning what is normal, do not raise it).
  ``ONSET_CUT`` of it scores 0.9. A deviation that is *routine* opens nothing: no larger, in the
  series' own units, than ``routine_ratio`` times the second largest of its recent excursions
  (runs beyond one sigma, whether they scored or not; sizes fading with ``routine_halflife``).
  Surprise is in z, and z grows when the noise between bursts shrinks (an idle system at night),
  so the same burst every half hour would otherwise be a new record each time; twice lately, in
  units, is the series' habit.
"""
from __future__ import annotations

import datetime
import functools
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numba
import numpy as np

from detectors.config import unknown_params_message

DAY = 86400.0
DAY_BINS = 48
# Column layout of one series' state row.
(N, T, DT, LEVEL, TREND, ERR_PLAIN, ERR_SEAS, FAST, RUN, PREV, STEP, LIK_MU, LIK_VAR, ONSET, SMOOTH,
 CALM, PRE_T, PRE_LEVEL, PRE_ERR_PLAIN, PRE_ERR_SEAS, FRACTIONAL) = range(21)
SEASON0 = 21
WEEK0 = SEASON0 + DAY_BINS  # seven weekday offsets, Monday first
(DAY_SUM, DAY_CNT, WEEK_BASE, WEEK_ERR_ON, WEEK_ERR_OFF, WEEK_ON, DAYS, PROBE_SUM, PROBE_CNT, MISALIGNED,
 DAY_IDX, ROUTINE_UP1, ROUTINE_UP2, ROUTINE_DN1, ROUTINE_DN2, EPISODE_UP, EPISODE_DN) = range(WEEK0 + 7, WEEK0 + 24)
WIDTH = WEEK0 + 24

SIGMA_PER_MAE = 1.2533  # sigma / mean |error| for Gaussian noise
POINT_Z = 6.0  # the |z| whose deviation score is 0.9: a single point that opens an alert is this far out
EXCURSION_Z = 1.0  # an excursion, whose size the routine rule remembers, is a run of points beyond one sigma
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
    count_floor: float = 1.0     # scale floor of an integer-valued series, times sqrt(level): Poisson noise; 0 disables ...
    count_floor_steps: float = 3.0  # ... at most this many mean point-to-point changes (a constant series keeps no floor)
    # The onset score, which opens alerts (see the module docstring):
    lik_rate: float = 0.002      # learning rate of the history of surprise
    lik_var_floor: float = 0.03  # floor of that history's variance: a very steady series' next wobble is not 10 sigma
    lik_disturbed_z: float = 2.25  # a point beyond this |z| teaches that history at ``disturbed_gain``
    onset_halflife: float = 5 * DAY  # half-life of the recent surprise peak, in seconds ...
    onset_peak_floor: float = 1.0  # ... above this: a peak decays towards it, not to 0
    lik_warmup: int = 30         # points before the onset score starts
    smooth_rate: float = 0.4     # rate of the smoothed z (a sustained small shift); 0 disables
    onset_min_z: float = 3.5     # a sustained shift (the smoothed z's equivalent) is an onset from this; a single point needs POINT_Z
    cold_start_points: int = 144  # surprises of a series' first this many points do not raise the peak
    routine_ratio: float = 2.0   # a deviation at most this times the second largest recent excursion is routine ...
    routine_halflife: float = 6 * 3600.0  # ... those excursions' sizes decaying with this half-life
    # Weekly seasonality, see the module docstring:
    week_rate: float = 0.3       # learning rate of a weekday's offset, per week
    week_gain: float = 0.5       # use the offsets once they cut the error of daily means below this share
    week_min_days: int = 14      # ... and not before this many whole days of history
    # The series' local time, an IANA name: the daily profile's hours and where days and weekends
    # start, through daylight saving time changes.
    time_zone: str = "UTC"

    @classmethod
    def from_mapping(cls, params: Mapping[str, object]) -> "RobustParams":
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(unknown_params_message("robust", unknown, list(known)))
        values = {}
        for k, v in params.items():
            kind = type(getattr(cls, k))
            try:
                values[k] = kind(v)
            except (TypeError, ValueError):
                raise ValueError(f"robust: param {k!r} expects {'a number' if kind in (int, float) else kind.__name__}, "
                                 f"got {v!r}") from None
        if "time_zone" in values:
            try:
                _transitions(values["time_zone"])
            except (ValueError, KeyError, OSError):
                raise ValueError(f"robust: time_zone {values['time_zone']!r} is not a time zone name "
                                 "(IANA, such as 'UTC' or 'America/New_York')") from None
        return cls(**values)


def z_to_score(z: np.ndarray) -> np.ndarray:
    """Map a robust z-score to [0, 1].

    >>> [round(float(s), 3) for s in z_to_score(np.array([0.0, 3.0, 6.0, 9.0]))]
    [0.0, 0.505, 0.9, 0.99]
    """
    return -np.expm1(-np.power(np.abs(z) / _A, _B))


@functools.lru_cache(maxsize=64)
def _transitions(zone: str) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, offsets)``: from UTC second ``starts[i]`` on, local time is UTC + ``offsets[i]``.

    Found once per zone by probing each day from 1970 to 2100 at noon UTC and bisecting the days
    whose offset changed, so a batch's offsets are one ``searchsorted`` away."""
    tz = zoneinfo.ZoneInfo(zone)

    def offset(ts: float) -> float:
        return datetime.datetime.fromtimestamp(ts, tz).utcoffset().total_seconds()

    starts, offsets = [-np.inf], [offset(0.0)]
    noon = 43200.0 + DAY * np.arange(0, 47482)  # 1970-01-01 .. 2099-12-31
    prev = offsets[0]
    for lo in noon:
        cur = offset(lo + DAY)
        if cur != prev:
            a, b = lo, lo + DAY  # offset(a) == prev, offset(b) == cur
            while b - a > 1.0:
                mid = np.floor((a + b) / 2)
                a, b = (mid, b) if offset(mid) == prev else (a, mid)
            starts.append(b)
            offsets.append(cur)
            prev = cur
    return np.array(starts), np.array(offsets)


def utc_offsets(zone: str, t: np.ndarray) -> np.ndarray:
    """Local time less UTC time at each of the UTC seconds ``t``, in ``zone``.

    >>> utc_offsets("America/New_York", np.array([1704067200.0, 1719792000.0])) / 3600  # 1 Jan, 1 Jul 2024
    array([-5., -4.])
    """
    if zone == "UTC" or not len(t):
        return np.zeros(len(t))
    starts, offsets = _transitions(zone)
    first, last = np.searchsorted(starts, (t.min(), t.max()), side="right") - 1
    if first == last:  # no change inside the batch: nearly always
        return np.full(len(t), offsets[first])
    return offsets[np.searchsorted(starts, t, side="right") - 1]


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
        self._packed = np.array([float(getattr(self.params, k)) for k in _PARAM_ORDER], dtype=np.float64)
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

    def score_learn_onset(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`score_learn` plus the onset score of each point (see :func:`onset_score`)."""
        z, expected, onset = self.z_learn(idx, t, x)
        return z_to_score(z), expected, onset_score(onset)

    def z_learn(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Signed robust z-scores, forecasts and raw onset surprise of each point; learns them."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        t = np.ascontiguousarray(t, dtype=np.float64)
        x = np.ascontiguousarray(x, dtype=np.float64)
        if len(idx) and idx.max() >= self._size:
            self.grow(int(idx.max()) + 1)
        z = np.empty(len(idx))
        expected = np.empty(len(idx))
        onset = np.empty(len(idx))
        self._learn(idx, t, utc_offsets(self.params.time_zone, t), x, z, expected, onset)
        return z, expected, onset

    def _learn(self, idx, t, utc_offset, x, z, expected, onset) -> None:
        """Fill ``z``, ``expected`` and ``onset`` for the points, learning each in order."""
        _learn_points(self._state, idx, t, utc_offset, x, self._packed, z, expected, onset)


# The onset that scores 0.9, the production threshold: standard deviations of surprise above the
# recent peak (see BENCHMARKS.md for the plateau it was chosen on, every dataset).
ONSET_CUT = 0.47
ONSET_SCALE = ONSET_CUT / float(np.log(10.0))


def onset_score(onset: np.ndarray) -> np.ndarray:
    """Map raw onset surprise (standard deviations above the recent peak) to [0, 1).

    >>> [round(float(s), 2) for s in onset_score(np.array([0.0, ONSET_CUT, 1.0]))]
    [0.0, 0.9, 0.99]
    """
    return -np.expm1(-np.maximum(onset, 0.0) / ONSET_SCALE)


# Params, packed in this order for the compiled kernel (see RobustParams).
_PARAM_ORDER = ("alpha", "beta", "phi", "scale_rate", "clip", "season_rate", "season_gain", "season_max_interval",
                "shift_z", "shift_points", "shift_seconds", "calm_seconds",
                "disturbed_gain", "fast_rate", "rel_floor", "abs_floor", "step_floor", "step_rate", "count_floor",
                "count_floor_steps", "lik_rate", "lik_var_floor", "onset_halflife", "onset_peak_floor", "lik_warmup",
                "smooth_rate", "lik_disturbed_z", "onset_min_z",
                "week_rate", "week_gain", "week_min_days", "cold_start_points", "routine_ratio", "routine_halflife")  # time_zone: the offsets passed with the points


@numba.njit(cache=True, nogil=True)
def _weekday(day):  # pragma: no cover - compiled
    """Monday 0 .. Sunday 6 of a day number since 1970-01-01, a Thursday."""
    return np.int64(day + 3.0) % 7


@numba.njit(cache=True, nogil=True)
def _close_day(st, day, week_rate, week_gain, week_min_days, clip):  # pragma: no cover - compiled
    """Learn the weekday offset from the day that just ended, and decide whether the forecast uses them.

    A day's effect is its mean (less the daily profile) against a slow baseline of daily means: a
    fault of an hour moves it by a twenty-fourth of its size, and the level's fast updates do not
    absorb it. The offsets are used while they predict daily means better than none does."""
    if st[PROBE_CNT] > 0:
        st[MISALIGNED] += 0.5 * (st[PROBE_SUM] / st[PROBE_CNT] - st[MISALIGNED])
        st[PROBE_SUM] = 0.0
        st[PROBE_CNT] = 0.0
    cnt = st[DAY_CNT]
    covered = cnt * st[DT] >= 0.75 * DAY
    mean = st[DAY_SUM] / cnt if cnt > 0 else 0.0
    st[DAY_SUM] = 0.0
    st[DAY_CNT] = 0.0
    if not covered:
        return
    days = st[DAYS]
    d = WEEK0 + _weekday(day)
    if days == 0:
        st[WEEK_BASE] = mean
    effect = mean - st[WEEK_BASE]
    before = st[d]
    step = effect - before
    if days >= 7:  # every weekday has an offset to test
        r = max(0.1, 1.0 / (days - 6.0))
        st[WEEK_ERR_OFF] += r * (abs(effect) - st[WEEK_ERR_OFF])
        st[WEEK_ERR_ON] += r * (abs(effect - before) - st[WEEK_ERR_ON])
        # Huber, as the level: a holiday moves next week's offset by at most clip typical errors.
        cap = clip * max(SIGMA_PER_MAE * st[WEEK_ERR_ON], SIGMA_PER_MAE * min(st[ERR_PLAIN], st[ERR_SEAS]))
        step = min(max(step, -cap), cap)
    st[d] = before + max(week_rate, 1.0 / (days // 7 + 1.0)) * step
    st[WEEK_BASE] += max(0.15, 1.0 / (days + 1.0)) * (mean - st[d] - st[WEEK_BASE])
    # Offsets average zero, so the baseline is the week's mean and "no offsets" is a fair rival.
    centre = 0.0
    for i in range(WEEK0, WEEK0 + 7):
        centre += st[i]
    centre /= 7.0
    for i in range(WEEK0, WEEK0 + 7):
        st[i] -= centre
    st[WEEK_BASE] += centre
    if st[WEEK_ON] > 0:  # the forecast (level + offset) stays where it was
        st[LEVEL] += centre
        st[FAST] += centre
        st[PRE_LEVEL] += centre
    st[DAYS] = days + 1.0
    # Offsets whose steps come hours after the day starts (a weekend at another midnight) would fire
    # at both midnights: worse than none. Two such days in a row and they are left out.
    on = (days + 1.0 >= week_min_days) and (st[WEEK_ERR_ON] < week_gain * st[WEEK_ERR_OFF]) \
        and st[MISALIGNED] < 0.6
    if on != (st[WEEK_ON] > 0):
        # The level carried the ended day's offset while the forecast did not (or the reverse).
        shift = -st[d] if on else st[d]
        st[LEVEL] += shift
        st[FAST] += shift
        st[PRE_LEVEL] += shift
        st[WEEK_ON] = 1.0 if on else 0.0


@numba.njit(cache=True, nogil=True)
def _file_episode(st, episode, top1, top2):  # pragma: no cover - compiled
    """An episode has ended: keep its size if it is one of the two largest recent ones."""
    e = st[episode]
    if e > st[top1]:
        st[top2] = st[top1]
        st[top1] = e
    elif e > st[top2]:
        st[top2] = e
    st[episode] = 0.0


@numba.njit(cache=True, nogil=True)
def _learn_points(state, idx, t, utc_offset, x, pa, z_out, exp_out, onset_out):  # pragma: no cover - compiled
    """Score and learn each point in order against its series' row of ``state``.

    One point at a time, in the order given, so a series' points are taken in order; each
    operation is the scalar form of the one the vectorized model did per round, in the same
    order, so the results are the same to the bit. ``utc_offset`` is each point's local time less
    its UTC time, in seconds (see :func:`utc_offsets`)."""
    (alpha, beta, phi, scale_rate, clip, season_rate, season_gain, season_max_interval, shift_z, shift_points,
     shift_seconds, calm_seconds, disturbed_gain, fast_rate, rel_floor, abs_floor, step_floor, step_rate,
     count_floor, count_floor_steps, lik_rate, lik_var_floor, onset_halflife, onset_peak_floor, lik_warmup,
     smooth_rate, lik_disturbed_z, onset_min_z, week_rate, week_gain, week_min_days, cold_start_points,
     routine_ratio, routine_halflife) = (
        pa[0], pa[1], pa[2], pa[3], pa[4], pa[5], pa[6], pa[7], pa[8], pa[9], pa[10], pa[11], pa[12], pa[13],
        pa[14], pa[15], pa[16], pa[17], pa[18], pa[19], pa[20], pa[21], pa[22], pa[23], pa[24], pa[25], pa[26],
        pa[27], pa[28], pa[29], pa[30], pa[31], pa[32], pa[33])
    for j in range(len(idx)):
        st = state[idx[j]]
        tj = t[j]
        xj = x[j]
        n = st[N]
        first = n == 0
        if first:
            st[LEVEL] = xj
            st[FAST] = xj
            st[T] = tj
            st[PREV] = xj
        dt = 0.0 if first else tj - st[T]
        local = tj + utc_offset[j]
        day = np.floor(local / DAY)
        if first:
            st[DAY_IDX] = day
        if day != st[DAY_IDX]:
            _close_day(st, st[DAY_IDX], week_rate, week_gain, week_min_days, clip)
            st[DAY_IDX] = day
        wd = _weekday(day)
        week = st[WEEK0 + wd] if st[WEEK_ON] > 0 else 0.0
        level = st[LEVEL]
        trend = st[TREND]
        b = np.int64((local % DAY) * (DAY_BINS / DAY)) % DAY_BINS
        season = st[SEASON0 + b]
        plain = level + phi * trend + week
        seasonal = plain + season
        err_p = st[ERR_PLAIN]
        err_s = st[ERR_SEAS]
        sdt = st[DT]
        use_season = (sdt > 0) and (sdt <= season_max_interval) and (n > 2 * DAY_BINS) \
            and (n * sdt >= DAY) and (err_s < season_gain * err_p)
        expected = seasonal if use_season else plain
        err = err_s if use_season else err_p
        if xj != np.floor(xj):
            st[FRACTIONAL] = 1.0
        floor = max(rel_floor * abs(level), step_floor * st[STEP]) + abs_floor
        if count_floor > 0 and st[FRACTIONAL] == 0.0:
            floor = max(floor, min(count_floor * np.sqrt(max(abs(level), 1.0)), count_floor_steps * st[STEP]))
        sigma = max(SIGMA_PER_MAE * err, floor)
        r = xj - expected
        z = 0.0 if n < 2 else r / sigma

        # Does the series step where its day starts? The first minutes of a day whose offset differs
        # from the day before's by a visible step: a fraction of 0 if the step is there, 1 if not yet.
        if st[DAYS] >= 7 and n >= 2 and local - day * DAY < max(1200.0, 1.5 * sdt):
            jump = st[WEEK0 + wd] - st[WEEK0 + (wd + 6) % 7]
            if abs(jump) >= 3.0 * sigma:
                late = -(r - (0.0 if st[WEEK_ON] > 0 else jump)) / jump
                st[PROBE_SUM] += min(max(late, 0.0), 1.0)
                st[PROBE_CNT] += 1.0

        # Recovery: back within the calm baseline's band while disturbed -> restore it, score 0.
        if (st[PRE_T] > 0) and (st[CALM] * sdt < calm_seconds) and (abs(z) > shift_z / 2):
            pre_exp = st[PRE_LEVEL] + week + (season if use_season else 0.0)
            pre_err = st[PRE_ERR_SEAS] if use_season else st[PRE_ERR_PLAIN]
            pre_sigma = max(SIGMA_PER_MAE * pre_err, floor)
            if abs(xj - pre_exp) <= shift_z / 2 * pre_sigma:
                st[LEVEL] = st[PRE_LEVEL]
                st[ERR_PLAIN] = st[PRE_ERR_PLAIN]
                st[ERR_SEAS] = st[PRE_ERR_SEAS]
                st[TREND] = 0.0
                st[RUN] = 0.0
                st[FAST] = st[PRE_LEVEL]
                level = st[LEVEL]
                trend = st[TREND]
                plain = level + phi * trend + week
                seasonal = plain + season
                expected = pre_exp
                sigma = pre_sigma
                z = 0.0

        # --- learn ---
        gain = disturbed_gain if abs(z) > shift_z else 1.0
        a = max(alpha, 1.0 / (n + 1.0)) * gain
        k = max(scale_rate, 1.0 / (n + 1.0)) * gain
        early = n < 3
        e_s = xj - seasonal
        e_p = xj - plain
        ec = e_s if early else min(max(e_s, -clip * sigma), clip * sigma)
        new_level = plain - week + a * ec
        st[TREND] = phi * trend + beta * a * ec
        st[SEASON0 + b] = season + season_rate * (1.0 - a) * ec
        cap = np.inf if early else clip * max(SIGMA_PER_MAE * st[ERR_PLAIN], floor)
        st[ERR_PLAIN] += k * (min(abs(e_p), cap) - st[ERR_PLAIN])
        cap = np.inf if early else clip * max(SIGMA_PER_MAE * st[ERR_SEAS], floor)
        st[ERR_SEAS] += k * (min(abs(e_s), cap) - st[ERR_SEAS])
        st[FAST] += fast_rate * ((xj - week - season) - st[FAST])
        st[DAY_SUM] += xj - season
        st[DAY_CNT] += 1.0
        step = abs(xj - st[PREV])
        st[STEP] += max(step_rate, 1.0 / (n + 1.0)) * (step - st[STEP])
        st[PREV] = xj

        # Lasting shift: count consecutive large errors on one side; re-baseline when enough.
        side = 1.0 if z > shift_z else (-1.0 if z < -shift_z else 0.0)
        run = st[RUN]
        run = run + side if (side != 0 and np.sign(run) == side) else side
        shifted = (abs(run) >= shift_points) and (abs(run) * sdt >= shift_seconds)
        if shifted:
            new_level = st[FAST]
            st[TREND] = 0.0
            run = 0.0
        st[RUN] = run
        st[LEVEL] = new_level

        calm = st[CALM] + 1.0 if abs(z) <= shift_z else 0.0
        st[CALM] = calm
        if calm * sdt >= calm_seconds:
            st[PRE_T] = tj
            st[PRE_LEVEL] = new_level
            st[PRE_ERR_PLAIN] = st[ERR_PLAIN]
            st[PRE_ERR_SEAS] = st[ERR_SEAS]

        # Onset score (see the module docstring).
        zz = min(abs(z), 1e6)
        sustained = 0.0
        if smooth_rate > 0:
            zs = st[SMOOTH] + smooth_rate * (min(max(z, -clip), clip) - st[SMOOTH])
            st[SMOOTH] = zs
            sustained = abs(zs) * np.sqrt((2.0 - smooth_rate) / smooth_rate)
            zz = max(zz, sustained)
        u = np.log1p(zz)
        mu = st[LIK_MU]
        var = st[LIK_VAR]
        v = 0.0 if n < lik_warmup else min((u - mu) / np.sqrt(var + lik_var_floor), 50.0)
        lr = max(lik_rate, 1.0 / (n + 1.0))
        if abs(z) > lik_disturbed_z and n >= lik_warmup:
            lr *= disturbed_gain
        d = u - mu
        st[LIK_MU] = mu + lr * d
        st[LIK_VAR] = (1.0 - lr) * (var + lr * d * d)
        peak = st[ONSET]
        candidate = zz >= POINT_Z or sustained >= onset_min_z
        # Routine excursions, in the series' own units: the two largest of its recent excursions on
        # each side (an excursion is a run of points beyond EXCURSION_Z, whether or not it was a
        # candidate then). A deviation no larger than routine_ratio times the second of them is
        # something the series has done twice lately: however small the noise has become since
        # (an idle system at night), it is not news. Measured in units, not in z, because that is
        # exactly what a shrinking noise inflates. Not only candidates: a burst that came while
        # the noise was wide (bursts widen it) scored no candidate, and the same burst two hours
        # later, the noise shrunk, was news, on series that burst every twenty minutes.
        fade = np.exp2(-dt / routine_halflife)
        for c in (ROUTINE_UP1, ROUTINE_UP2, ROUTINE_DN1, ROUTINE_DN2):
            st[c] *= fade
        dev = xj - expected
        routine = (dev > 0 and dev <= routine_ratio * st[ROUTINE_UP2]) \
            or (dev < 0 and -dev <= routine_ratio * st[ROUTINE_DN2])
        # An onset needs a point that is anomalous by itself (its deviation scores 0.9) or a
        # sustained shift: a lone 4-sigma wobble is not worth a page, however quiet the week was.
        onset = max(v - peak, 0.0) if (candidate and not routine) else 0.0
        if abs(z) > EXCURSION_Z:
            if n >= cold_start_points:
                if dev > 0:
                    st[EPISODE_UP] = max(st[EPISODE_UP], dev)
                else:
                    st[EPISODE_DN] = max(st[EPISODE_DN], -dev)
        else:
            _file_episode(st, EPISODE_UP, ROUTINE_UP1, ROUTINE_UP2)
            _file_episode(st, EPISODE_DN, ROUTINE_DN1, ROUTINE_DN2)
        decay = np.exp2(-dt / onset_halflife)
        # A cold start's surprises are the model learning what is normal, not the series' behaviour.
        record = min(v, onset_peak_floor) if n < cold_start_points else v
        if peak > onset_peak_floor:
            st[ONSET] = max(record, onset_peak_floor + (peak - onset_peak_floor) * decay)
        else:
            st[ONSET] = max(record, peak * decay)

        dt_c = min(dt, 10.0 * sdt + (1.0 if sdt == 0 else 0.0) * dt)
        st[DT] = 0.0 if n == 0 else (dt if n == 1 else sdt + 0.05 * (dt_c - sdt))
        st[T] = tj
        st[N] = n + 1
        z_out[j] = z
        exp_out[j] = expected
        onset_out[j] = onset
