"""Every batch detector against the same conformance checks (River's estimator checks, in spirit)."""
import pickle

import numpy as np
import pytest

from detectors.engine import make_detector

MODELS = ["robust", "halfspacetrees", "snarimax", "holtwinters"]


def batch(n_series=3, n=120, seed=0):
    rng = np.random.default_rng(seed)
    idx = np.repeat(np.arange(n_series), n).reshape(n_series, n).T.ravel()  # interleaved
    t = 1e9 + 60.0 * np.repeat(np.arange(n), n_series)
    x = 10.0 * idx + rng.standard_normal(len(idx))
    x[len(x) // 2] += 50.0
    return idx.astype(np.int64), t, x


@pytest.fixture(params=MODELS)
def model(request):
    return request.param


def test_scores_are_in_unit_interval_and_forecasts_finite(model):
    d = make_detector(model, {})
    idx, t, x = batch()
    s, e = d.score_learn(idx, t, x)
    assert s.shape == e.shape == x.shape
    assert np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()
    assert np.isfinite(e).all()


def test_inputs_are_not_mutated(model):
    idx, t, x = batch()
    copies = idx.copy(), t.copy(), x.copy()
    make_detector(model, {}).score_learn(idx, t, x)
    for a, b in zip((idx, t, x), copies):
        np.testing.assert_array_equal(a, b)


def test_deterministic(model):
    idx, t, x = batch()
    s1, e1 = make_detector(model, {}).score_learn(idx, t, x)
    s2, e2 = make_detector(model, {}).score_learn(idx, t, x)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(e1, e2)


def test_pickles_mid_stream_and_continues_identically(model):
    idx, t, x = batch()
    h = len(idx) // 2
    d = make_detector(model, {})
    d.score_learn(idx[:h], t[:h], x[:h])
    clone = pickle.loads(pickle.dumps(d))
    np.testing.assert_array_equal(d.score_learn(idx[h:], t[h:], x[h:])[0], clone.score_learn(idx[h:], t[h:], x[h:])[0])


def test_one_batch_equals_point_by_point(model):
    idx, t, x = batch(n=60)
    whole = make_detector(model, {}).score_learn(idx, t, x)[0]
    d = make_detector(model, {})
    single = np.array([d.score_learn(idx[j:j + 1], t[j:j + 1], x[j:j + 1])[0][0] for j in range(len(idx))])
    np.testing.assert_allclose(whole, single, rtol=0, atol=0)


def test_series_are_independent(model):
    idx, t, x = batch()
    alone = make_detector(model, {}).score_learn(idx[idx == 1] * 0, t[idx == 1], x[idx == 1])[0]
    mixed = make_detector(model, {}).score_learn(idx, t, x)[0][idx == 1]
    np.testing.assert_array_equal(alone, mixed)


def test_constant_series_is_finite(model):
    d = make_detector(model, {})
    s, e = d.score_learn(np.zeros(100, dtype=np.int64), 60.0 * np.arange(100.0), np.full(100, 3.0))
    assert np.isfinite(s).all() and np.isfinite(e).all()


def test_unknown_params_are_rejected(model):
    with pytest.raises(ValueError, match="unknown param"):
        make_detector(model, {"no_such_param": 1})


def test_memory_is_reported(model):
    d = make_detector(model, {})
    d.grow(10)
    assert d.nbytes > 0
