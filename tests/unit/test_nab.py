"""`aiops nab`: the NAB-style corpus runner over the production detection engine."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from detectors.config import DetectorSettings
from detectors.engine import DetectionEngine
from detectors.records import Point, SeriesKey
from streams.nab import run_nab, score_corpus

STEP = 300.0


def series(seed: int, n: int = 1500, spikes=()) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = 1_400_000_000.0 + STEP * np.arange(n)
    x = 50 + 10 * np.sin(2 * np.pi * t / 86400.0) + rng.normal(0, 1, n)
    for at, width, height in spikes:
        x[at:at + width] += height
    return t, x


def write_csv(path, t, x) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value"])
        for ti, xi in zip(t, x):
            w.writerow([np.datetime64(int(ti), "s").astype(str).replace("T", " "), repr(float(xi))])


@pytest.fixture
def corpus():
    return {"a/one.csv": series(1, spikes=[(900, 6, 30.0)]),
            "a/two.csv": series(2, n=1200, spikes=[(700, 3, 60.0), (1000, 40, 30.0)]),
            "b/flat.csv": (1_400_000_000.0 + STEP * np.arange(800), np.full(800, 3.0))}


def test_one_engine_for_the_corpus_scores_as_one_engine_per_file(corpus):
    together = score_corpus(corpus, DetectorSettings())
    for name, tx in corpus.items():
        alone = score_corpus({name: tx}, DetectorSettings())[name]
        for a, b in zip(together[name], alone):
            np.testing.assert_array_equal(a, b)


def test_scores_are_streaming_a_prefix_scores_the_same(corpus):
    t, x = corpus["a/two.csv"]
    full = score_corpus({"s": (t, x)}, DetectorSettings())["s"]
    cut = 1010
    prefix = score_corpus({"s": (t[:cut], x[:cut])}, DetectorSettings())["s"]
    for a, b in zip(full, prefix):
        np.testing.assert_array_equal(a[:cut], b)


def test_alerts_output_marks_each_alert_where_it_first_fires(corpus):
    t, x = corpus["a/two.csv"]
    marks, onset = score_corpus({"s": (t, x)}, DetectorSettings())["s"]
    key = SeriesKey("nab", "s")
    alerts = DetectionEngine(DetectorSettings()).process([Point(key, float(a), float(b)) for a, b in zip(t, x)])
    first_firings = sorted({a.starts_at: a.at for a in reversed(alerts) if a.status == "firing"}.values())
    assert first_firings, "the spike and the 40-point shift must alert"
    assert set(np.unique(marks)) <= {0.0, 1.0}
    assert t[np.flatnonzero(marks)].tolist() == first_firings
    # Every alert opens at an onset (five-minute points: it fires there).
    assert (onset[marks == 1] >= 0.9).all()
    # Nothing pages on a constant series.
    assert not score_corpus({"f": corpus["b/flat.csv"]}, DetectorSettings())["f"][0].any()


def test_run_nab_writes_each_file_at_its_relative_path(tmp_path, corpus):
    data, out = tmp_path / "data", tmp_path / "out"
    for rel, (t, x) in corpus.items():
        write_csv(data / rel, t, x)
    summary = run_nab(data, out)
    assert summary["files"] == 3 and summary["rows"] == sum(len(t) for t, _ in corpus.values())
    assert summary["alerts"] >= 2
    for rel, (t, x) in corpus.items():
        with open(out / rel, newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows[0] == ["timestamp", "value", "anomaly_score", "onset_score"]
        assert len(rows) == len(t) + 1
        assert {r[2] for r in rows[1:]} <= {"0", "1"}
        onset = np.array([float(r[3]) for r in rows[1:]])
        assert ((onset >= 0) & (onset <= 1)).all()
        np.testing.assert_allclose([float(r[1]) for r in rows[1:]], x)
