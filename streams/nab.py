"""Score a NAB-style corpus (CSV files of ``timestamp,value``) with the production detector.

Each file is one series fed to :class:`~detectors.engine.DetectionEngine`, the object the worker
runs, with the given (by default the production) settings. Scoring is streaming: each point is
scored against the state learned from the points before it, then learned. Series never share
state, so every file goes through one engine in one batch (the models take each series' points
in order), which gives the same scores as one engine per file, only faster.

For every input file ``DATA/<rel>.csv`` the output ``OUT/<rel>.csv`` holds
``timestamp,value,anomaly_score`` (the layout ``nab_score.py --results OUT`` reads).

Two scores can be written (``OUTPUTS``):

- ``evaluation`` (the default): the model's evaluation score, for the robust model its onset
  score (how far a surprise exceeds the series' recent peak, silent for 12 h after an onset);
- ``alerts``: 1 at each point where the engine fires an alert (the point that pages, after
  ``fire_after_points`` anomalous points), 0 elsewhere. This is what production acts on, so its
  NAB score at any threshold in (0, 1] is the score of the pipeline's own alerts.
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
OUTPUTS = ("evaluation", "alerts")


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


def score_corpus(series: dict[str, tuple[np.ndarray, np.ndarray]], settings: DetectorSettings,
                 output: str = "evaluation") -> dict[str, np.ndarray]:
    """NAB anomaly scores for each named series ``(t, x)``, from one engine.

    ``output`` is one of ``OUTPUTS`` (see the module docstring). Points are interleaved by their
    rank in each series, so the batch stays in per-series order.

    >>> t = np.arange(200) * 300.0
    >>> x = np.r_[np.full(150, 10.0) + np.sin(np.arange(150)), np.full(50, 40.0)]
    >>> s = score_corpus({"a.csv": (t, x)}, DetectorSettings(), output="alerts")["a.csv"]
    >>> np.flatnonzero(s).tolist()  # the second point at 40 fires (fire_after_points = 2)
    [151]
    """
    if output not in OUTPUTS:
        raise ValueError(f"unknown NAB output {output!r}; known: {', '.join(OUTPUTS)}")
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
    out = {name: np.zeros(len(series[name][0])) for name in names}
    if output == "alerts":
        by_id = {keys[name].id: name for name in names}
        # A firing alert goes out again when its deviation doubles; only its first firing pages.
        paged: dict[tuple[str, float], Alert] = {}
        for a in alerts:
            if a.status == "firing":
                paged.setdefault((a.series, a.starts_at), a)
        for a in paged.values():
            name = by_id[a.series]
            k = int(np.searchsorted(series[name][0], a.at))
            out[name][k] = 1.0
        return out
    for (name, k), s in zip(owner, scored.nab):
        out[name][k] = s
    return out


def run_nab(data_dir: str | Path, out_dir: str | Path, settings: DetectorSettings | None = None,
            output: str = "evaluation") -> dict:
    """Score every ``*.csv`` under ``data_dir`` and write results under ``out_dir``.

    Returns a summary: files, rows, and anomalous rows at the settings' threshold.
    """
    settings = settings or DetectorSettings()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    files = sorted(p for p in data_dir.rglob("*.csv") if p.is_file())
    loaded = {str(p.relative_to(data_dir)): read_series(p) for p in files}
    scores = score_corpus({rel: (t, x) for rel, (_, t, x) in loaded.items()}, settings, output)
    rows = flagged = 0
    for rel, (stamps, _, x) in loaded.items():
        dest = out_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        s = scores[rel]
        with open(dest, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value", "anomaly_score"])
            for stamp, xi, si in zip(stamps, x, s):
                w.writerow([stamp, repr(float(xi)), f"{si:.6f}"])
        rows += len(s)
        flagged += int((s >= settings.threshold).sum())
    return {"files": len(loaded), "rows": rows, "flagged_rows": flagged, "threshold": settings.threshold,
            "output": output, "out": str(out_dir)}
