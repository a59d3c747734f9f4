"""The engine scores a batch with one model call and steps the fire/resolve state machine only
where something happens; it must give exactly what the round-by-round engine gave.

``RoundEngine`` below is that engine's scoring loop, kept as the reference: round ``k`` holds
every series' ``k``-th point, filtered, scored, learned and stepped with array operations.
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.config import DetectorRule, DetectorSettings, SeriesMatch
from detectors.engine import DetectionEngine, Scored, _score_learn_onset
from detectors.records import Point, SeriesKey
from tests.unit.rounds import rounds


class RoundEngine(DetectionEngine):
    def process_columns(self, keys, t, x):
        m = len(keys)
        scores, expected, onset = np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan)
        if m == 0:
            return [], Scored(scores, expected, onset)
        gidx = np.empty(m, dtype=np.int64)
        for j, k in enumerate(keys):
            i = self._index.get(k)
            gidx[j] = self._register(k) if i is None else i
        t, x = np.asarray(t, dtype=np.float64), np.asarray(x, dtype=np.float64)
        fired = []
        for pos in rounds(gidx):
            gi = gidx[pos]
            ok = (t[pos] > self._last_t[gi]) & np.isfinite(x[pos])
            pos, gi = pos[ok], gi[ok]
            if len(pos) == 0:
                continue
            tt, xx = t[pos], x[pos]
            s, e, v = np.empty(len(pos)), np.empty(len(pos)), np.empty(len(pos))
            slots = self._slot[gi]
            for slot in np.unique(slots):
                sel = slots == slot
                s[sel], e[sel], v[sel] = _score_learn_onset(self._models[slot], self._local[gi[sel]], tt[sel], xx[sel])
            scores[pos], expected[pos], onset[pos] = s, e, v
            cover = tt - self._last_t[gi]
            self._last_t[gi] = tt
            self._n[gi] += 1
            fired += self._round_transition(pos, gi, tt, s, v, np.abs(xx - e), cover)
        alerts = [self._alert(status, gidx[j], t[j], x[j], scores[j], expected[j], starts, peak)
                  for j, status, starts, peak in sorted(fired)]
        return alerts, Scored(scores, expected, onset)

    def _round_transition(self, pos, gi, t, s, onset, dev, cover):
        cfg = self.settings
        warm = self._n[gi] > cfg.warmup_points
        opens = (onset >= self._thr[gi]) & warm
        anom = ((s >= self._thr[gi]) & warm) | opens
        firing = self._firing[gi]
        hi_old = self._hi[gi]
        deviates = (s >= self._thr[gi]) & warm
        pending = (hi_old > 0) & ~firing
        hi = np.where(anom & ((hi_old > 0) | firing | opens), hi_old + 1, np.where(pending, hi_old, 0))
        run_old = self._run[gi]
        run = np.where(deviates, run_old + 1, 0)
        self._run_start[gi] = np.where(deviates & (run_old == 0), t, self._run_start[gi])
        self._run[gi] = run
        lasting = ~firing & (run >= cfg.warmup_points) & (t - self._run_start[gi] >= cfg.fire_after.total_seconds())
        from_run = lasting & (hi == 0)
        hi = np.where(from_run, 1, hi)
        starts = np.where(from_run, self._run_start[gi], self._starts[gi])
        peak_old = np.where(from_run, s.astype(np.float32), self._peak[gi])
        starting = ~firing & (hi_old == 0) & (hi == 1) & ~lasting
        starts = np.where(starting, t, starts)
        self._cover[gi] = np.where(starting, cover.astype(np.float32), self._cover[gi])
        peak = np.where(starting, s, np.maximum(peak_old, np.where(anom, s, 0)))
        lo = np.where((firing | pending) & ~anom, self._lo[gi] + 1, 0)
        fire = lasting | (~firing & anom & (hi > 0) & (t - starts + self._cover[gi].astype(np.float64)
                                                      >= cfg.fire_after.total_seconds()))
        resolve = firing & (lo >= cfg.resolve_after_points)
        drop = pending & (lo >= cfg.resolve_after_points)
        hi = np.where(resolve | drop, 0, hi)
        lo = np.where(resolve | fire | drop, 0, lo)
        self._hi[gi], self._lo[gi], self._starts[gi], self._peak[gi] = hi, lo, starts, peak
        self._firing[gi] = (firing | fire) & ~resolve
        worse = firing & ~resolve & anom & (dev >= 2.0 * self._dev[gi]) & (self._dev[gi] > 0)
        self._dev[gi] = np.where(fire | worse, dev, self._dev[gi])
        out = [(int(j), "firing", float(a), float(b)) for j, a, b in zip(pos[fire | worse], starts[fire | worse],
                                                                           s[fire | worse])]
        out += [(int(j), "resolved", float(a), float(b)) for j, a, b in zip(pos[resolve], starts[resolve], peak[resolve])]
        return out


KEYS = [SeriesKey("api", "cpu"), SeriesKey("api", "lat", (("host", "a"),)), SeriesKey("db", "conn"),
        SeriesKey("db", "river")]
VALUES = st.one_of(st.floats(0.9, 1.1), st.floats(0.9, 1.1), st.sampled_from([5.0, 50.0, -20.0, 1e9, float("nan"),
                                                                              float("inf")]))


@st.composite
def batches(draw):
    """A few batches of points of a few series: mostly calm, with spikes, plateaus, repeats,
    out-of-order times and non-finite values."""
    out, clock = [], {k: 0.0 for k in KEYS}
    for _ in range(draw(st.integers(1, 6))):
        batch = []
        for _ in range(draw(st.integers(0, 40))):
            k = KEYS[draw(st.integers(0, len(KEYS) - 1))]
            step = draw(st.sampled_from([60.0, 60.0, 60.0, 0.0, -60.0, 3600.0]))
            clock[k] += step
            batch.append(Point(k, 1_767_225_600.0 + clock[k], draw(VALUES)))
        out.append(batch)
    return out


def settings_for(draw_rules: bool) -> DetectorSettings:
    rules = [DetectorRule(match=SeriesMatch(metric="lat"), threshold=0.5),
             DetectorRule(match=SeriesMatch(metric="river"), model="holtwinters")] if draw_rules else []
    return DetectorSettings(warmup_points=3, fire_after="60s", resolve_after_points=2, rules=rules)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=batches(), rules=st.booleans(), warm=st.integers(0, 40))
def test_batch_engine_matches_rounds(data, rules, warm):
    cfg = settings_for(rules)
    new, old = DetectionEngine(cfg), RoundEngine(cfg)
    # A calm history first, so the spikes score and the state machine moves.
    calm = [Point(k, 1_767_225_600.0 - 60.0 * (warm - i), 1.0 + 0.01 * (i % 3)) for i in range(warm) for k in KEYS]
    for batch in [calm] + data:
        a_new, s_new = new.process_scored(batch)
        a_old, s_old = old.process_scored(batch)
        assert a_new == a_old
        for f in ("scores", "expected", "onset"):
            assert np.array_equal(getattr(s_new, f), getattr(s_old, f), equal_nan=True)
    for name in ("_last_t", "_n", "_hi", "_lo", "_firing", "_starts", "_peak", "_dev", "_cover", "_run",
                 "_run_start"):
        assert np.array_equal(getattr(new, name), getattr(old, name), equal_nan=True), name


def test_a_plateau_fires_once_and_resolves():
    cfg = DetectorSettings(warmup_points=10, fire_after="2m", resolve_after_points=3)
    new, old = DetectionEngine(cfg), RoundEngine(cfg)
    key = SeriesKey("orders-db", "db.client.connections.utilization")
    pts = [Point(key, 60.0 * i, 0.41 + 0.01 * (i % 3)) for i in range(50)]
    pts += [Point(key, 60.0 * i, 0.98) for i in range(50, 54)] + [Point(key, 60.0 * i, 0.42) for i in range(54, 60)]
    for batch in (pts[:49], pts[49:]):  # the fault and its end in one batch: several points per series
        assert new.process(batch) == old.process(batch)
    assert [a.status for a in new.process(pts[49:])] == []  # redelivered
