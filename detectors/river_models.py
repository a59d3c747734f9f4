"""River models behind the same batch protocol as the default detector.

The adapter loops ``score_one``/``learn_one`` (or ``forecast``/``learn_one``) per point, one River
model object per series. That costs one Python object graph per series and a Python call per
point, so these models suit a few selected series (chosen by rules in topology.yaml), not the
whole fleet.

Models and their defaults (a rule's ``params`` override them by name):

- ``halfspacetrees``: ``MinMaxScaler | HalfSpaceTrees(n_trees=10, height=8, window_size=250,
  seed=42)`` on the feature ``{"x": value}``; its score is used as is.
- ``snarimax``: ``SNARIMAX(p=2, d=1, q=1, m=1)``; the score is the robust z-score of the one-step
  forecast error against its running mean absolute error, mapped like the default detector's.
- ``holtwinters``: ``HoltWinters(alpha=0.3, beta=0.05, gamma=None, seasonality=0)``; scored like
  ``snarimax``.
"""
from __future__ import annotations

import pickle
from functools import partial
from collections.abc import Mapping

import numpy as np

from detectors.config import unknown_params_message
from detectors.robust import SIGMA_PER_MAE, z_to_score

HST_DEFAULTS = {"n_trees": 10, "height": 8, "window_size": 250, "seed": 42}
SNARIMAX_DEFAULTS = {"p": 2, "d": 1, "q": 1, "m": 1, "sp": 0, "sd": 0, "sq": 0}
HOLTWINTERS_DEFAULTS = {"alpha": 0.3, "beta": 0.05, "gamma": None, "seasonality": 0}
ERROR_RATE = 0.02  # learning rate of the running mean absolute forecast error


def _merge(defaults: Mapping, params: Mapping, model: str) -> dict:
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(unknown_params_message(model, unknown, list(defaults)))
    return {**defaults, **params}


def _build(model: str, p: dict):
    """A fresh River model for one series (module-level, so detectors pickle)."""
    from river import anomaly, preprocessing, time_series

    if model == "halfspacetrees":
        return preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(**p)
    if model == "snarimax":
        return time_series.SNARIMAX(**p)
    return time_series.HoltWinters(**p)


def make_river_detector(model: str, params: Mapping[str, object]) -> "RiverDetector":
    if model == "halfspacetrees":
        p = {k: int(v) for k, v in _merge(HST_DEFAULTS, params, model).items()}
        return RiverDetector(model, partial(_build, model, p), forecaster=False)
    if model == "snarimax":
        p = {k: int(v) for k, v in _merge(SNARIMAX_DEFAULTS, params, model).items()}
        return RiverDetector(model, partial(_build, model, p), forecaster=True)
    if model == "holtwinters":
        p = _merge(HOLTWINTERS_DEFAULTS, params, model)
        return RiverDetector(model, partial(_build, model, p), forecaster=True)
    raise ValueError(f"unknown model {model!r}")


class RiverDetector:
    """One River model per series behind ``score_learn(idx, t, x) -> (scores, expected)``."""

    def __init__(self, name: str, factory, *, forecaster: bool) -> None:
        self.name = name
        self._factory = factory
        self._forecaster = forecaster
        self._models: list = []
        # Per series: running mean of x (the baseline reported for HST), mean |error|, points seen.
        self._mean = np.zeros(0)
        self._err = np.zeros(0)
        self._n = np.zeros(0, dtype=np.int64)

    def grow(self, n: int) -> None:
        while len(self._models) < n:
            self._models.append(self._factory())
        if n > len(self._mean):
            pad = n - len(self._mean)
            self._mean = np.r_[self._mean, np.zeros(pad)]
            self._err = np.r_[self._err, np.zeros(pad)]
            self._n = np.r_[self._n, np.zeros(pad, dtype=np.int64)]

    @property
    def nbytes(self) -> int:
        if not self._models:
            return 0
        # An estimate: pickled size of one model times the number of series.
        return len(pickle.dumps(self._models[0])) * len(self._models) + 24 * len(self._models)

    def score_learn(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx):
            self.grow(int(idx.max()) + 1)
        scores = np.zeros(len(idx))
        expected = np.zeros(len(idx))
        # In order: each series' state is its own, so its points are taken in turn.
        for j in range(len(idx)):
            scores[j], expected[j] = self._one(int(idx[j]), float(x[j]))
        return scores, expected

    def _one(self, i: int, x: float) -> tuple[float, float]:
        model = self._models[i]
        n = self._n[i]
        rate = max(ERROR_RATE, 1.0 / (n + 1))
        if self._forecaster:
            try:
                fc = float(model.forecast(horizon=1)[0]) if n > 0 else x
            except (ValueError, IndexError, ZeroDivisionError, TypeError):
                fc = self._mean[i] if n > 0 else x  # not initialised yet
            if not np.isfinite(fc):
                fc = x
            err = x - fc
            sigma = max(SIGMA_PER_MAE * self._err[i], 1e-3 * abs(fc) + 1e-9)
            score = float(z_to_score(np.array(err / sigma))) if n >= 2 else 0.0
            self._err[i] += rate * (min(abs(err), 3.0 * sigma if n >= 3 else np.inf) - self._err[i])
            model.learn_one(x)
        else:
            fc = self._mean[i] if n > 0 else x
            score = float(model.score_one({"x": x}))
            model.learn_one({"x": x})
        self._mean[i] += rate * (x - self._mean[i])
        self._n[i] = n + 1
        return min(max(score, 0.0), 1.0), fc
