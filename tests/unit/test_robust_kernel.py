"""The compiled robust model against the vectorized one it replaced, kept here as the oracle.

The detector learned one round at a time (every series' k-th point of a batch together) with
numpy; it now runs a compiled loop over the points (numba). Both must give the same scores,
forecasts, onset scores and state, to the bit, on any batch layout.
"""
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.robust import (CALM, DAY, DAY_BINS, DAY_CNT, DAY_SUM, DAYS, DT, ERR_PLAIN, ERR_SEAS, EXCURSION_Z, FAST,
                              FRACTIONAL, LEVEL, LIK_MU, LIK_VAR, MISALIGNED, N, ONSET, ONSET_CUT, POINT_Z,
                              ROUTINE_DN1, ROUTINE_DN2, ROUTINE_UP1, ROUTINE_UP2, EPISODE_DN, EPISODE_UP,
                              PRE_ERR_PLAIN, PRE_ERR_SEAS,
                              PRE_LEVEL, PRE_T, PREV, PROBE_CNT, PROBE_SUM, RUN, SEASON0, SIGMA_PER_MAE,
                              SMOOTH, STEP, TREND, WEEK0, WEEK_BASE, WEEK_ERR_OFF, WEEK_ERR_ON, WEEK_ON, DAY_IDX, T,
                              RobustDetector)
from tests.unit.rounds import rounds


# numpy's log1p, expm1 and exp2 use SIMD code where the CPU has it (AVX-512 here), which differs
# from the C library's in the last bit for about 5 % of inputs; the compiled loop calls the C
# library. The reference uses the C library too, so what is compared is the translation.
_log1p, _expm1, _exp2 = (np.vectorize(f, otypes=[float]) for f in (math.log1p, math.expm1, math.exp2))


class RoundsReference(RobustDetector):
    """The vectorized model as it was: one numpy step per round."""

    def _learn(self, idx, t, utc_offset, x, z, expected, onset):
        for pos in rounds(idx):
            z[pos], expected[pos], onset[pos] = self._step(idx[pos], t[pos], utc_offset[pos], x[pos])

    def _step(self, idx: np.ndarray, t: np.ndarray, off: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        local = t + off
        day = np.floor(local / DAY)
        st[first, DAY_IDX] = day[first]
        for r in np.flatnonzero(day != st[:, DAY_IDX]):
            self._close_day(st[r], st[r, DAY_IDX])
        st[:, DAY_IDX] = day
        weekday = (day + 3.0).astype(np.int64) % 7
        week = np.where(st[:, WEEK_ON] > 0, st[rows, WEEK0 + weekday], 0.0)
        level, trend = st[:, LEVEL], st[:, TREND]
        bins = ((local % DAY) * (DAY_BINS / DAY)).astype(np.int64) % DAY_BINS
        season = st[rows, SEASON0 + bins]

        plain = level + p.phi * trend + week
        seasonal = plain + season
        err_p, err_s = st[:, ERR_PLAIN], st[:, ERR_SEAS]
        use_season = (st[:, DT] > 0) & (st[:, DT] <= p.season_max_interval) & (n > 2 * DAY_BINS) \
            & (n * st[:, DT] >= DAY) & (err_s < p.season_gain * err_p)
        expected = np.where(use_season, seasonal, plain)
        err = np.where(use_season, err_s, err_p)
        st[:, FRACTIONAL] = np.where(x != np.floor(x), 1.0, st[:, FRACTIONAL])
        floor = np.maximum(p.rel_floor * np.abs(level), p.step_floor * st[:, STEP]) + p.abs_floor
        if p.count_floor > 0:
            counts = np.minimum(p.count_floor * np.sqrt(np.maximum(np.abs(level), 1.0)), p.count_floor_steps * st[:, STEP])
            floor = np.where(st[:, FRACTIONAL] == 0.0, np.maximum(floor, counts), floor)
        sigma = np.maximum(SIGMA_PER_MAE * err, floor)
        r = x - expected
        z = np.where(n < 2, 0.0, r / sigma)

        # The weekday offsets' alignment probe: the first minutes of a day that should step.
        jump = st[rows, WEEK0 + weekday] - st[rows, WEEK0 + (weekday + 6) % 7]
        probe = (st[:, DAYS] >= 7) & (n >= 2) & (local - day * DAY < np.maximum(1200.0, 1.5 * st[:, DT])) \
            & (np.abs(jump) >= 3.0 * sigma)
        if probe.any():
            late = -(r - np.where(st[:, WEEK_ON] > 0, 0.0, jump)) / np.where(probe, jump, 1.0)
            st[probe, PROBE_SUM] += np.clip(late, 0.0, 1.0)[probe]
            st[probe, PROBE_CNT] += 1.0

        # Recovery: back within the calm baseline's band while disturbed -> restore it, score 0.
        disturbed = (st[:, PRE_T] > 0) & (st[:, CALM] * st[:, DT] < p.calm_seconds) & (np.abs(z) > p.shift_z / 2)
        if disturbed.any():
            pre_exp = st[:, PRE_LEVEL] + week + np.where(use_season, season, 0.0)
            pre_err = np.where(use_season, st[:, PRE_ERR_SEAS], st[:, PRE_ERR_PLAIN])
            pre_sigma = np.maximum(SIGMA_PER_MAE * pre_err, floor)
            back = disturbed & (np.abs(x - pre_exp) <= p.shift_z / 2 * pre_sigma)
            if back.any():
                st[back, LEVEL] = st[back, PRE_LEVEL]
                st[back, ERR_PLAIN] = st[back, PRE_ERR_PLAIN]
                st[back, ERR_SEAS] = st[back, PRE_ERR_SEAS]
                st[back, TREND] = 0.0
                st[back, RUN] = 0.0
                st[back, FAST] = st[back, PRE_LEVEL]
                level, trend = st[:, LEVEL], st[:, TREND]
                plain = level + p.phi * trend + week
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
        new_level = plain - week + a * ec
        st[:, TREND] = p.phi * trend + p.beta * a * ec
        st[rows, SEASON0 + bins] = season + p.season_rate * (1.0 - a) * ec
        for col, e in ((ERR_PLAIN, e_p), (ERR_SEAS, e_s)):
            cap = np.where(early, np.inf, p.clip * np.maximum(SIGMA_PER_MAE * st[:, col], floor))
            st[:, col] += k * (np.minimum(np.abs(e), cap) - st[:, col])
        st[:, FAST] += p.fast_rate * ((x - week - season) - st[:, FAST])
        st[:, DAY_SUM] += x - season
        st[:, DAY_CNT] += 1.0
        step = np.abs(x - st[:, PREV])
        st[:, STEP] += np.maximum(p.step_rate, 1.0 / (n + 1.0)) * (step - st[:, STEP])
        st[:, PREV] = x

        # Lasting shift: count consecutive large errors on one side; re-baseline when enough.
        side = np.where(z > p.shift_z, 1.0, np.where(z < -p.shift_z, -1.0, 0.0))
        run = st[:, RUN]
        run = np.where((side != 0) & (np.sign(run) == side), run + side, side)
        shifted = (np.abs(run) >= p.shift_points) & (np.abs(run) * st[:, DT] >= p.shift_seconds)
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

        # Onset score: how unusual this surprise is for this series (standardized against
        # its own history), counted only where it rises above the recent peak, so a lasting
        # anomaly scores once at its onset.
        zz = np.minimum(np.abs(z), 1e6)
        sustained = np.zeros(len(z))
        if p.smooth_rate > 0:
            zs = st[:, SMOOTH] + p.smooth_rate * (np.clip(z, -p.clip, p.clip) - st[:, SMOOTH])
            st[:, SMOOTH] = zs
            sustained = np.abs(zs) * np.sqrt((2.0 - p.smooth_rate) / p.smooth_rate)
            zz = np.maximum(zz, sustained)
        u = _log1p(zz)
        mu, var = st[:, LIK_MU], st[:, LIK_VAR]
        v = np.where(n < p.lik_warmup, 0.0, np.minimum((u - mu) / np.sqrt(var + p.lik_var_floor), 50.0))
        lr = np.maximum(p.lik_rate, 1.0 / (n + 1.0))
        lr = np.where((np.abs(z) > p.lik_disturbed_z) & (n >= p.lik_warmup), lr * p.disturbed_gain, lr)
        d = u - mu
        st[:, LIK_MU] = mu + lr * d
        st[:, LIK_VAR] = (1.0 - lr) * (var + lr * d * d)
        peak = st[:, ONSET]
        candidate = (zz >= POINT_Z) | (sustained >= p.onset_min_z)
        fade = _exp2(-dt / p.routine_halflife)
        dev = x - expected
        up1, up2 = st[:, ROUTINE_UP1] * fade, st[:, ROUTINE_UP2] * fade
        dn1, dn2 = st[:, ROUTINE_DN1] * fade, st[:, ROUTINE_DN2] * fade
        routine = ((dev > 0) & (dev <= p.routine_ratio * up2)) | ((dev < 0) & (-dev <= p.routine_ratio * dn2))
        onset = np.where(candidate & ~routine, np.maximum(v - peak, 0.0), 0.0)
        excursion = np.abs(z) > EXCURSION_Z
        warm = excursion & (n >= p.cold_start_points)
        st[:, EPISODE_UP] = np.where(warm & (dev > 0), np.maximum(st[:, EPISODE_UP], dev), st[:, EPISODE_UP])
        st[:, EPISODE_DN] = np.where(warm & (dev <= 0), np.maximum(st[:, EPISODE_DN], -dev), st[:, EPISODE_DN])
        ended = ~excursion
        for top1, top2, ep in ((up1, up2, EPISODE_UP), (dn1, dn2, EPISODE_DN)):
            e = st[:, ep]
            new1 = np.where(ended, np.maximum(top1, e), top1)
            new2 = np.where(ended, np.where(e > top1, top1, np.maximum(top2, np.where(e > top2, e, top2))), top2)
            top1[:], top2[:] = new1, new2
            st[ended, ep] = 0.0
        st[:, ROUTINE_UP1], st[:, ROUTINE_UP2], st[:, ROUTINE_DN1], st[:, ROUTINE_DN2] = up1, up2, dn1, dn2
        decay = _exp2(-dt / p.onset_halflife)
        record = np.where(n < p.cold_start_points, np.minimum(v, p.onset_peak_floor), v)
        st[:, ONSET] = np.maximum(record, np.where(peak > p.onset_peak_floor,
                                              p.onset_peak_floor + (peak - p.onset_peak_floor) * decay, peak * decay))

        dt_c = np.minimum(dt, 10.0 * st[:, DT] + (st[:, DT] == 0) * dt)
        st[:, DT] = np.where(n == 0, 0.0, np.where(n == 1, dt, st[:, DT] + 0.05 * (dt_c - st[:, DT])))
        st[:, T] = t
        st[:, N] = n + 1
        self._state[idx] = st
        return z, expected, onset

    def _close_day(self, row: np.ndarray, day: float) -> None:
        """The weekday offsets learn the day that ended (``row`` is one series' state, in place)."""
        p = self.params
        if row[PROBE_CNT] > 0:
            row[MISALIGNED] += 0.5 * (row[PROBE_SUM] / row[PROBE_CNT] - row[MISALIGNED])
            row[PROBE_SUM] = row[PROBE_CNT] = 0.0
        cnt, total = row[DAY_CNT], row[DAY_SUM]
        row[DAY_SUM] = row[DAY_CNT] = 0.0
        if not cnt * row[DT] >= 0.75 * DAY:
            return
        mean = total / cnt
        days = row[DAYS]
        col = WEEK0 + int(day + 3.0) % 7
        if days == 0:
            row[WEEK_BASE] = mean
        effect = mean - row[WEEK_BASE]
        before = row[col]
        step = effect - before
        if days >= 7:
            r = max(0.1, 1.0 / (days - 6.0))
            row[WEEK_ERR_OFF] += r * (abs(effect) - row[WEEK_ERR_OFF])
            row[WEEK_ERR_ON] += r * (abs(effect - before) - row[WEEK_ERR_ON])
            cap = p.clip * max(SIGMA_PER_MAE * row[WEEK_ERR_ON], SIGMA_PER_MAE * min(row[ERR_PLAIN], row[ERR_SEAS]))
            step = min(max(step, -cap), cap)
        row[col] = before + max(p.week_rate, 1.0 / (days // 7 + 1.0)) * step
        row[WEEK_BASE] += max(0.15, 1.0 / (days + 1.0)) * (mean - row[col] - row[WEEK_BASE])
        centre = 0.0
        for i in range(WEEK0, WEEK0 + 7):
            centre += row[i]
        centre /= 7.0
        row[WEEK0:WEEK0 + 7] -= centre
        row[WEEK_BASE] += centre
        moved = [LEVEL, FAST, PRE_LEVEL]
        if row[WEEK_ON] > 0:
            row[moved] += centre
        row[DAYS] = days + 1.0
        on = days + 1.0 >= p.week_min_days and row[WEEK_ERR_ON] < p.week_gain * row[WEEK_ERR_OFF] \
            and row[MISALIGNED] < 0.6
        if on != (row[WEEK_ON] > 0):
            row[moved] += -row[col] if on else row[col]
            row[WEEK_ON] = float(on)


def same(a, b):
    return np.array_equal(a, b, equal_nan=True)


def check(batches, params=None):
    new, old = RobustDetector(params), RoundsReference(params)
    for idx, t, x in batches:
        got, want = new.z_learn(idx, t, x), old.z_learn(idx, t, x)
        for g, w in zip(got, want):
            assert same(g, w), np.flatnonzero(g != w)[:5]
    assert same(new._state[: new._size], old._state[: old._size])


def realistic(rng, series=6, points=3000, step=300.0):
    """Daily cycles, noise, spikes, a level shift and its recovery, gaps, a constant series."""
    t0 = 1.7e9
    idx, t, x = [], [], []
    for s in range(series):
        tt = t0 + np.cumsum(rng.choice([step, step, step, 2 * step, 7 * step], size=points))
        daily = (s % 3) * 10 * (((tt % DAY) > DAY / 3) & ((tt % DAY) < 2 * DAY / 3))
        v = 50 + s + daily + rng.normal(0, 1 + s % 2, size=points)
        v[rng.integers(0, points, 8)] += rng.choice([-1, 1], 8) * rng.uniform(10, 80, 8)
        a = int(rng.integers(points // 3, points // 2))
        v[a:a + int(rng.integers(5, 200))] += 25
        if s == series - 1:
            v[:] = 7.0
        idx += [s] * points
        t += list(tt)
        x += list(v)
    order = np.argsort(np.array(t), kind="stable")
    return np.array(idx)[order], np.array(t)[order], np.array(x)[order]


def test_realistic_series_in_batches_of_every_size():
    rng = np.random.default_rng(3)
    idx, t, x = realistic(rng)
    cuts = np.sort(rng.choice(np.arange(1, len(idx)), size=40, replace=False))
    check([(i, tt, xx) for i, tt, xx in zip(np.split(idx, cuts), np.split(t, cuts), np.split(x, cuts))])


def test_non_default_params_and_a_trend():
    rng = np.random.default_rng(5)
    idx, t, x = realistic(rng, series=3, points=1500)
    x = x + 0.01 * (t - t[0]) / 60
    params = {"beta": 0.3, "smooth_rate": 0.0, "onset_min_z": 2.0, "alpha": 0.2}
    check([(idx[i:i + 97], t[i:i + 97], x[i:i + 97]) for i in range(0, len(idx), 97)], params)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.floats(0.0, 4000.0), st.floats(-1e6, 1e6)), min_size=1, max_size=300),
       st.integers(1, 50))
def test_any_batch_layout(points, batch):
    # Points of one series in time order, as the engine hands them over; anything else goes.
    by_series = {}
    for s, dt, v in points:
        by_series.setdefault(s, []).append((dt, v))
    rows = []
    for s, pts in by_series.items():
        t = 1.7e9 + np.cumsum([dt for dt, _ in pts])
        rows += [(s, tt, v) for tt, (_, v) in zip(t, pts)]
    rows.sort(key=lambda r: (r[1], r[0]))
    idx = np.array([r[0] for r in rows], dtype=np.int64)
    t = np.array([r[1] for r in rows])
    x = np.array([r[2] for r in rows])
    check([(idx[i:i + batch], t[i:i + batch], x[i:i + batch]) for i in range(0, len(idx), batch)])


def test_weekly_offsets_switch_on_then_off():
    # Four weeks with a weekend step, then three without: the offsets come into use, then out.
    rng = np.random.default_rng(7)
    step, days = 1800.0, 49
    tt = 1_700_006_400.0 + step * np.arange(int(days * DAY / step))
    weekend = ((tt // DAY).astype(np.int64) + 3) % 7 >= 5
    idx, t, x = [], [], []
    late = (((tt - 5 * 3600.0) // DAY).astype(np.int64) + 3) % 7 >= 5  # weekends at midnight UTC-5
    for s in range(4):
        v = 100.0 + 10.0 * np.sin(2 * np.pi * tt / DAY) + rng.normal(0, 1 + s % 3, len(tt))
        v -= np.where((late if s == 3 else weekend) & (tt < tt[0] + 28 * DAY), 30.0 + 10 * (s % 3), 0.0)
        idx += [s] * len(tt)
        t += list(tt + 60.0 * s)
        x += list(v)
    order = np.argsort(np.array(t), kind="stable")
    idx, t, x = np.array(idx)[order], np.array(t)[order], np.array(x)[order]
    check([(idx[i:i + 61], t[i:i + 61], x[i:i + 61]) for i in range(0, len(idx), 61)])
    on = []
    d = RobustDetector()
    for i in range(0, len(idx), 61):
        d.z_learn(idx[i:i + 61], t[i:i + 61], x[i:i + 61])
        on.append(d._state[:4, WEEK_ON].copy())
    on = np.array(on)
    # the UTC-5 weekends step hours after the series' days start: their offsets never come into use
    assert on.max(axis=0).tolist() == [1.0, 1.0, 1.0, 0.0] and on[-1].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_local_time_across_a_daylight_saving_change():
    # Batches that straddle New York's change to summer time take the per-point offsets.
    rng = np.random.default_rng(11)
    idx, t, x = realistic(rng, series=3, points=2000)
    t = t - t[0] + 1709251200.0  # 1 March 2024; the change is on 10 March
    check([(idx[i:i + 97], t[i:i + 97], x[i:i + 97]) for i in range(0, len(idx), 97)],
          {"time_zone": "America/New_York"})
