"""Normalizer.normalize_rows: samples as tuples of Sample's fields give what Sample objects give,
and its key-object cache never mixes up series."""
from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.normalize import Normalizer, Sample
from detectors.records import Point, SeriesKey

KEYS = [SeriesKey("api", "req"), SeriesKey("api", "lat", (("host", "a"),)), SeriesKey("db", "q")]
BOUNDS = (0.1, 0.5, 1.0)


@st.composite
def samples(draw):
    key = SeriesKey(*[(k.service, k.metric, k.labels) for k in KEYS][draw(st.integers(0, len(KEYS) - 1))])
    t = 1_767_225_600.0 + draw(st.integers(-2, 30)) * 10.0
    kind = draw(st.sampled_from(["gauge", "sum", "histogram"]))
    temporality = draw(st.sampled_from(["cumulative", "delta"]))
    start = draw(st.sampled_from([None, 1_767_225_000.0, 1_767_225_650.0]))
    if kind == "histogram":
        buckets = tuple(float(draw(st.integers(0, 50))) for _ in range(len(BOUNDS) + 1))
        return Sample(key, t, kind, temporality=temporality, start_t=start, count=sum(buckets),
                      total=draw(st.sampled_from([math.nan, 12.5, 40.0])), bounds=BOUNDS, buckets=buckets)
    value = draw(st.sampled_from([0.0, 5.0, 100.0, 250.0, 90.0, math.inf]))
    return Sample(key, t, kind, value, draw(st.booleans()), temporality, start)


def as_row(s: Sample) -> tuple:
    row = (s.series, s.t, s.kind, s.value, s.monotonic, s.temporality, s.start_t, s.count, s.total, s.bounds,
           s.buckets)
    # Leave out trailing defaults, as decoders do.
    defaults = (0.0, False, "cumulative", None, 0.0, 0.0, (), ())
    n = len(row)
    while n > 3 and row[n - 1] == defaults[n - 4] and type(row[n - 1]) is type(defaults[n - 4]):
        n -= 1
    return row[:n]


def reference(batches: list[list[Sample]]) -> list[list[Point]]:
    """One Normalizer per key *value*: fresh key objects every time, so no id is reused."""
    n = Normalizer()
    return [n.normalize([Sample(SeriesKey(s.series.service, s.series.metric, s.series.labels), *as_row(s)[1:])
                         for s in batch]) for batch in batches]


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(st.lists(samples(), max_size=12), max_size=5))
def test_rows_give_what_samples_give(batches):
    want = reference(batches)
    rows, objects = Normalizer(), Normalizer()
    for batch, expect in zip(batches, want):
        keys, times, values = rows.normalize_rows([as_row(s) for s in batch])
        assert [Point(k, t, v) for k, t, v in zip(keys, times, values)] == expect
        assert objects.normalize(batch) == expect


def test_a_series_that_changes_kind_starts_over_under_every_key_object():
    key, same = SeriesKey("api", "req"), SeriesKey("api", "req")
    n = Normalizer()
    assert n.normalize_rows([(key, 10.0, "sum", 100.0, True, "cumulative", None)]) == ([], [], [])
    assert n.normalize_rows([(same, 20.0, "gauge", 7.0)]) == ([same], [20.0], [7.0])
    # Back to a counter: primes again, through either key object.
    assert n.normalize_rows([(key, 30.0, "sum", 300.0, True, "cumulative", None)]) == ([], [], [])
    keys, _, values = n.normalize_rows([(same, 40.0, "sum", 400.0, True, "cumulative", None)])
    assert [k.metric for k in keys] == ["req.rate"] and values == [10.0]
    assert n.state_size() == 1
