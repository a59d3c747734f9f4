"""The normalizer gives exactly what it gave before its fast paths: same points, same order, same state.

``tests/property/_normalize_reference.py`` is a frozen copy of :class:`detectors.normalize.Normalizer`
as it was before counters and histograms got their inline paths. Both are fed the same batches
(tuples with trailing defaults left out, as decoders hand them over, and :class:`Sample` objects;
key objects shared across batches, as decoders share them, and fresh ones) and must give the same
columns, compared by ``repr`` (so ``-0.0`` against ``0.0`` would show), and keep the same state,
through a pickle round trip as a snapshot makes one.
"""
from __future__ import annotations

import math
import pickle

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.normalize import Normalizer, Sample
from detectors.records import SeriesKey
from tests.property import _normalize_reference as reference

KEYS = [SeriesKey("api", "req"), SeriesKey("api", "lat", (("host", "a"),)), SeriesKey("db", "q")]
T0 = 1_767_225_600.0
BOUNDS = [(0.1, 0.5, 1.0), (0.1, 0.5, 1.0, 2.5), ()]


def _bounds(i: int, fresh: bool) -> tuple:
    b = BOUNDS[i]
    return tuple(list(b)) if fresh else b  # equal bounds as another tuple, or the same one


@st.composite
def rows(draw):
    i = draw(st.integers(0, len(KEYS) - 1))
    k = KEYS[i]
    key = SeriesKey(k.service, k.metric, k.labels) if draw(st.booleans()) else k
    t = T0 + draw(st.integers(-1, 12)) * 10.0
    kind = draw(st.sampled_from(["gauge", "sum", "sum", "histogram", "histogram"]))
    temporality = draw(st.sampled_from(["cumulative", "cumulative", "delta"]))
    # Start times off the sample grid, on it (a restart exactly at the previous sample), and absent.
    start = draw(st.sampled_from([None, None, T0 - 600.0, T0 + 45.0, t, t - 5.0, t - 10.0, t - 10.0, t - 20.0])
                 | st.integers(-1, 12).map(lambda i: T0 + i * 10.0))
    if kind == "histogram":
        b = draw(st.sampled_from([0, 0, 0, 1, 2]))
        n = len(BOUNDS[b]) + 1 if BOUNDS[b] else draw(st.sampled_from([0, 1]))
        buckets = tuple(float(draw(st.integers(0, 40)) * draw(st.sampled_from([1, 1, 10]))) for _ in range(n))
        count = draw(st.sampled_from([sum(buckets), sum(buckets), 0.0, 5.0]))
        total = draw(st.sampled_from([math.nan, 12.5, 40.0, 1e308, -3.0]))
        sample = Sample(key, t, kind, temporality=temporality, start_t=start, count=count, total=total,
                        bounds=_bounds(b, draw(st.booleans())), buckets=buckets)
    else:
        value = draw(st.sampled_from([0.0, -0.0, 5.0, 100.0, 250.0, 90.0, 1e300, -1e300, math.inf, math.nan]))
        sample = Sample(key, t, kind, value, draw(st.booleans()), temporality, start)
    if draw(st.integers(0, 4)) == 0:
        return sample
    row = (sample.series, sample.t, sample.kind, sample.value, sample.monotonic, sample.temporality, sample.start_t,
           sample.count, sample.total, sample.bounds, sample.buckets)
    defaults = (0.0, False, "cumulative", None, 0.0, 0.0, (), ())
    n = len(row)
    while n > 3 and row[n - 1] == defaults[n - 4] and type(row[n - 1]) is type(defaults[n - 4]):
        n -= 1
    return row[:draw(st.integers(n, len(row)))]  # trailing defaults left out, or some kept


def _state(n) -> list[str]:
    return sorted(f"{k!r} {[getattr(s, a) for a in s.__slots__]!r}" for k, s in n._state.items())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(rows(), max_size=16), max_size=8), snapshot=st.integers(0, 8))
def test_the_normalizer_gives_what_the_reference_gives(batches, snapshot):
    new, old = Normalizer(), reference.Normalizer()
    for i, batch in enumerate(batches):
        if i == snapshot:  # a snapshot taken and restored, as the worker does on a rebalance
            new = pickle.loads(pickle.dumps(new))
        got = new.normalize_rows(batch)
        want = old.normalize_rows(batch)
        assert repr(got) == repr(want)
        assert [type(k) for k in got[0]] == [type(k) for k in want[0]]
        assert _state(new) == _state(old)


def test_a_series_that_changes_its_derivation_starts_over():
    """Gauge, then cumulative counter, then histogram on one key: each change primes anew."""
    key = SeriesKey("api", "x")
    batches = [[(key, T0, "gauge", 1.0)], [(key, T0 + 10, "sum", 100.0, True, "cumulative", None)],
               [(key, T0 + 20, "sum", 150.0, True, "cumulative", None)],
               [(key, T0 + 30, "histogram", 0.0, False, "cumulative", None, 4.0, 2.0, (1.0,), (3.0, 1.0))],
               [(key, T0 + 40, "histogram", 0.0, False, "cumulative", None, 8.0, 6.0, (1.0,), (6.0, 2.0))]]
    new, old = Normalizer(), reference.Normalizer()
    for batch in batches:
        assert repr(new.normalize_rows(batch)) == repr(old.normalize_rows(batch))
    assert _state(new) == _state(old)
