"""Leave-one-category-out (LOCO) NAB scores of what the production detector pages on.

The NAB split is small (34 files, 67 windows), so a setting tuned on it says little about other
data. This script measures how well a *choice* of settings transfers: for each category it picks
the detector parameters whose alerts score best (standard profile) on the other categories, then
scores the held-out category's alerts with that choice. Every score is of the alerts production
fires (:func:`streams.nab.score_corpus`: ``DetectionEngine`` with ``DetectorSettings``; 1 where
an alert fires), so the threshold is 0.5 and only the parameters are chosen.

Usage::

    python -m evaluation.nab_loco [--data DIR] [--labels FILE] [--scorer nab_score.py]
                                  [--grid JSON]

``--grid`` is a JSON list of ``params`` mappings for the robust model (``{}`` = the defaults);
the default (``DEFAULT_GRID``) moves each knob of the onset rule one step either way from its
default, one at a time. Printed: each grid point's score on the whole split and per category;
per held-out category, the chosen parameters, the training score and the held-out score; then
the pooled LOCO score (every file scored with its own fold's choice).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

from detectors.config import DetectorSettings
from streams.nab import read_series, score_corpus

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "nab"
STANDARD = {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.0}
# Each knob of the onset rule one step either way from its default, one at a time.
DEFAULT_GRID: list[dict] = [{}] + [{k: v} for k, vs in (
    ("onset_halflife", (2 * 86400.0, 10 * 86400.0)),
    ("cold_start_points", (30, 500)),
    ("onset_min_z", (2.5, 4.5)),
    ("lik_disturbed_z", (1.5, 3.0)),
    ("lik_rate", (0.001, 0.004)),
    ("smooth_rate", (0.2, 0.6)),
) for v in vs]
THRESHOLD = 0.5  # alerts are 0 or 1


def load_scorer(path: Path):
    spec = importlib.util.spec_from_file_location("nab_score", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _raw(ns, corpus: dict, scores: dict, files: list[str], threshold: float) -> tuple[float, int]:
    flat = ns.Flat({f: corpus[f] for f in files}, {f: scores[f] for f in files})
    raw, counts = flat.score_at(threshold, STANDARD)
    return raw, counts["windows_detected"] + counts["windows_missed"]


def _norm(raw: float, windows: int) -> float | None:
    """NAB standard score of a raw score (null = -windows, perfect = windows).

    >>> _norm(-3.0, 3), _norm(3.0, 3), _norm(0.0, 4), _norm(-0.2, 0)
    (0.0, 100.0, 50.0, None)
    """
    return None if windows == 0 else 100.0 * (raw + windows) / (2.0 * windows)


def loco(ns, corpus: dict, runs: list[dict]) -> dict:
    """LOCO over ``runs`` (each ``{"params": ..., "scores": {file: array}}``)."""
    cats = sorted({f.split("/")[0] for f in corpus})
    folds, pooled = [], {}
    for cat in cats:
        test = [f for f in corpus if f.split("/")[0] == cat]
        train = [f for f in corpus if f.split("/")[0] != cat]
        # Ties go to the earlier grid point: the defaults come first.
        train_raw, k = max(((_raw(ns, corpus, r["scores"], train, THRESHOLD)[0], k) for k, r in enumerate(runs)),
                           key=lambda c: (c[0], -c[1]))
        scores = runs[k]["scores"]
        raw, windows = _raw(ns, corpus, scores, test, THRESHOLD)
        folds.append({"held_out": cat, "params": runs[k]["params"],
                      "train_score": _norm(train_raw, sum(corpus[f]["n_windows"] for f in train)),
                      "score": _norm(raw, windows), "raw": raw, "windows": windows})
        for f in test:
            pooled[f] = scores[f]
    total_raw, windows = _raw(ns, corpus, pooled, list(corpus), THRESHOLD)
    return {"folds": folds, "pooled": _norm(total_raw, windows)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(SHARED / "data"))
    ap.add_argument("--labels", default=str(SHARED / "combined_windows.json"))
    ap.add_argument("--scorer", default=str(SHARED / "nab_score.py"))
    ap.add_argument("--grid", help="JSON list of robust params mappings (default: a small grid)")
    a = ap.parse_args(argv)
    ns = load_scorer(Path(a.scorer))
    corpus = ns.load_corpus(a.data, a.labels)
    series = {rel: read_series(Path(a.data) / rel)[1:] for rel in corpus}
    grid = json.loads(a.grid) if a.grid else DEFAULT_GRID
    cats = sorted({f.split("/")[0] for f in corpus})
    print(f"{'params':<40}{'whole':>7}" + "".join(f"{c[:14]:>16}" for c in cats))
    runs = []
    for params in grid:
        alerts = {rel: a for rel, (a, _) in score_corpus(series, DetectorSettings(params=params)).items()}
        whole, windows = _raw(ns, corpus, alerts, list(corpus), THRESHOLD)
        per_cat = []
        for c in cats:
            raw, w = _raw(ns, corpus, alerts, [f for f in corpus if f.split("/")[0] == c], THRESHOLD)
            per_cat.append(f"{_norm(raw, w):.2f}" if w else f"raw {raw:.2f}")  # no windows: raw = FP cost
        print(f"{json.dumps(params):<40}{_norm(whole, windows):7.2f}" + "".join(f"{v:>16}" for v in per_cat),
              flush=True)
        runs.append({"params": params, "scores": alerts})
    res = loco(ns, corpus, runs)
    print()
    print(f"{'held-out category':<24}{'chosen params':<40}{'train':>8}{'held-out':>10}")
    for f in res["folds"]:
        held = f"{f['score']:.2f}" if f["score"] is not None else f"raw {f['raw']:.2f}"
        print(f"{f['held_out']:<24}{json.dumps(f['params']):<40}{f['train_score']:8.2f}{held:>10}")
    print(f"pooled LOCO score (standard): {res['pooled']:.2f}")


if __name__ == "__main__":
    main()
