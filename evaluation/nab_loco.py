"""Leave-one-category-out (LOCO) NAB scores of the production detector.

The NAB split is small (34 files, 67 windows), so a setting tuned on it says little about other
data. This script measures how well a *choice* of settings transfers: for each category it picks
the detector parameters and the alert threshold that score best (standard profile) on the other
categories, then scores the held-out category with that choice. Every score goes through the
production path (:func:`streams.nab.score_corpus`: ``DetectionEngine`` with ``DetectorSettings``).

Usage::

    python -m evaluation.nab_loco [--data DIR] [--labels FILE] [--scorer nab_score.py]
                                  [--grid JSON]

``--grid`` is a JSON list of ``params`` mappings for the robust model (``{}`` = the defaults);
the default is the shipped defaults alone, so each fold chooses only the threshold.
Printed: per held-out category, the chosen parameters and threshold, its score at that threshold
and at the fixed 0.9; then the pooled LOCO score (every file scored with its own fold's choice).
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
# The shipped defaults only: LOCO then chooses just the threshold. Pass --grid to let each fold
# choose among parameter sets as well (BENCHMARKS.md lists the grids measured).
DEFAULT_GRID: list[dict] = [{}]


def load_scorer(path: Path):
    spec = importlib.util.spec_from_file_location("nab_score", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _raw(ns, corpus: dict, scores: dict, files: list[str], threshold: float) -> tuple[float, int]:
    flat = ns.Flat({f: corpus[f] for f in files}, {f: scores[f] for f in files})
    raw, counts = flat.score_at(threshold, STANDARD)
    return raw, counts["windows_detected"] + counts["windows_missed"]


def _best(ns, corpus: dict, scores: dict, files: list[str]) -> tuple[float, float]:
    """(threshold, raw) optimised on ``files``, standard profile."""
    flat = ns.Flat({f: corpus[f] for f in files}, {f: scores[f] for f in files})
    return flat.optimise(STANDARD)


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
        choice = max(((_best(ns, corpus, r["scores"], train), k) for k, r in enumerate(runs)),
                     key=lambda c: (c[0][1], -c[1]))
        (thr, train_raw), k = choice
        scores = runs[k]["scores"]
        raw, windows = _raw(ns, corpus, scores, test, thr)
        raw09, _ = _raw(ns, corpus, scores, test, 0.9)
        folds.append({"held_out": cat, "params": runs[k]["params"], "threshold": thr,
                      "train_score": _norm(train_raw, sum(corpus[f]["n_windows"] for f in train)),
                      "score": _norm(raw, windows), "raw": raw, "score_at_0.9": _norm(raw09, windows),
                      "raw_at_0.9": raw09, "windows": windows})
        for f in test:  # binarised with this fold's threshold, so the folds can be pooled
            pooled[f] = (scores[f] >= thr).astype(float)
    total_raw, windows = _raw(ns, corpus, pooled, list(corpus), 0.5)
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
    runs = []
    for params in grid:
        scores = score_corpus(series, DetectorSettings(params=params))
        whole = ns.evaluate(corpus, scores, {"standard": STANDARD})["standard"]
        fixed = ns.evaluate(corpus, scores, {"standard": STANDARD}, {"standard": 0.9})["standard"]
        print(f"{json.dumps(params):<44} whole split: {whole['score']:6.2f} (optimised, thr "
              f"{whole['threshold']:.3f})  {fixed['score']:6.2f} (0.9)", flush=True)
        runs.append({"params": params, "scores": scores})
    res = loco(ns, corpus, runs)
    print()
    print(f"{'held-out category':<24}{'chosen params':<34}{'thr':>6}{'train':>8}{'held-out':>10}"
          f"{'at 0.9':>11}")
    for f in res["folds"]:
        def fmt(v, raw):
            return f"{v:.2f}" if v is not None else f"raw {raw:.2f}"  # no windows: raw = FP cost
        print(f"{f['held_out']:<24}{json.dumps(f['params']):<34}{f['threshold']:6.3f}{f['train_score']:8.2f}"
              f"{fmt(f['score'], f['raw']):>10}{fmt(f['score_at_0.9'], f['raw_at_0.9']):>11}")
    print(f"pooled LOCO score (standard): {res['pooled']:.2f}")


if __name__ == "__main__":
    main()
