"""Score a NAB-style corpus (CSV files of ``timestamp,value``) with what production pages on.

Each file is one series fed to :class:`~detectors.engine.DetectionEngine`, the object the worker
runs, with the given detector settings (``aiops nab`` passes the ``detectors`` section of the
topology file, so the shipped threshold, warm-up and fire/resolve rules apply). Scoring is
streaming: each point is scored against the state learned from the points before it, then
learned. Series never share state, so every file goes through one engine in one batch (the
models take each series' points in order), which gives the same alerts as one engine per file.

For every input file ``DATA/<rel>.csv`` the output ``OUT/<rel>.csv`` holds
``timestamp,value,anomaly_score,onset_score`` (the layout ``nab_score.py --results OUT`` reads):
``anomaly_score`` is 1 at each point where an alert fires (its first firing: the point that
pages) and 0 elsewhere, so its NAB score at any threshold in (0, 1] is the score of the
pipeline's own alerts; ``onset_score`` is the model's continuous onset score, for inspection.
"""
from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from detectors.config import DetectorSettings
from detectors.engine import DetectionEngine
from detectors.records import Alert, Point, SeriesKey

SERVICE = "nab"


def _parse_time(text: str) -> float:
    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def read_series(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(timestamp texts, unix seconds, values)`` of one NAB CSV."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
        it, iv = header.index("timestamp"), header.index("value")
        rows = [r for r in reader if r]
    stamps = [r[it] for r in rows]
    t = np.array([_parse_time(s) for s in stamps], dtype=np.float64)
    x = np.array([float(r[iv]) for r in rows], dtype=np.float64)
    return stamps, t, x


def score_corpus(series: dict[str, tuple[np.ndarray, np.ndarray]], settings: DetectorSettings
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``(alerts, onset scores)`` for each named series ``(t, x)``, from one engine: alerts are 1
    where an alert first fires, else 0.

    Points are interleaved by their rank in each series, so the batch stays in per-series order.

    >>> t = np.arange(200) * 300.0
    >>> x = np.r_[np.full(150, 10.0) + np.sin(np.arange(150)), np.full(50, 40.0)]
    >>> alerts, onset = score_corpus({"a.csv": (t, x)}, DetectorSettings())["a.csv"]
    >>> np.flatnonzero(alerts).tolist()  # the first point at 40 is an onset and pages
    [150]
    """
    names = sorted(series)
    keys = {name: SeriesKey(SERVICE, name) for name in names}
    pts: list[Point] = []
    owner: list[tuple[str, int]] = []
    longest = max((len(series[n][0]) for n in names), default=0)
    for k in range(longest):
        for name in names:
            t, x = series[name]
            if k < len(t):
                pts.append(Point(keys[name], float(t[k]), float(x[k])))
                owner.append((name, k))
    engine = DetectionEngine(settings)
    alerts, scored = engine.process_scored(pts)
    out = {name: (np.zeros(len(series[name][0])), np.zeros(len(series[name][0]))) for name in names}
    by_id = {keys[name].id: name for name in names}
    # A firing alert goes out again when its deviation doubles; only its first firing pages.
    paged: dict[tuple[str, float], Alert] = {}
    for a in alerts:
        if a.status == "firing":
            paged.setdefault((a.series, a.starts_at), a)
    for a in paged.values():
        name = by_id[a.series]
        out[name][0][int(np.searchsorted(series[name][0], a.at))] = 1.0
    for (name, k), v in zip(owner, np.nan_to_num(scored.onset, nan=0.0)):
        out[name][1][k] = v
    return out


def run_nab(data_dir: str | Path, out_dir: str | Path, settings: DetectorSettings | None = None) -> dict:
    """Score every ``*.csv`` under ``data_dir`` and write results under ``out_dir``.

    Returns a summary: files, rows, and alerts fired.
    """
    settings = settings or DetectorSettings()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    files = sorted(p for p in data_dir.rglob("*.csv") if p.is_file())
    loaded = {str(p.relative_to(data_dir)): read_series(p) for p in files}
    scores = score_corpus({rel: (t, x) for rel, (_, t, x) in loaded.items()}, settings)
    rows = fired = 0
    for rel, (stamps, _, x) in loaded.items():
        dest = out_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        alerts, onset = scores[rel]
        with open(dest, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value", "anomaly_score", "onset_score"])
            for stamp, xi, ai, oi in zip(stamps, x, alerts, onset):
                w.writerow([stamp, repr(float(xi)), f"{ai:.0f}", f"{oi:.6f}"])
        rows += len(alerts)
        fired += int(alerts.sum())
    return {"files": len(loaded), "rows": rows, "alerts": fired, "out": str(out_dir)}
