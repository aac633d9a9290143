"""The ridge fit of QCResUNet's read-out against scikit-learn's Ridge on standardised features,
exact recovery of a noiseless linear map, and penalty selection that follows the data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from segqc.training.ridge import fit_ridge


def _data(n: int = 120, p: int = 6, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) * rng.uniform(0.1, 10, size=p) + rng.normal(size=p)
    coef = rng.normal(size=(2, p))
    y = x @ coef.T + np.array([0.5, -1.0]) + noise * rng.normal(size=(n, 2))
    return x, y, np.repeat(np.arange(n // 4), 4)


def test_matches_scikit_learn_at_the_chosen_penalty():
    x, y, groups = _data(noise=0.5)
    fit = fit_ridge(x, y, groups, alphas=[3.0])
    z = (x - x.mean(0)) / x.std(0)
    peer = Ridge(alpha=3.0).fit(z, y)
    assert np.allclose(fit.weight, peer.coef_, atol=1e-9)
    assert np.allclose(fit.bias, peer.intercept_, atol=1e-9)
    assert np.allclose(fit.predict(x), peer.predict(z), atol=1e-9)


def test_recovers_a_noiseless_linear_map_and_picks_the_smallest_penalty():
    x, y, groups = _data()
    fit = fit_ridge(x[:100], y[:100], groups[:100])
    assert fit.alpha == min(fit.cv_mse)
    assert np.abs(fit.predict(x[100:]) - y[100:]).max() < 1e-2  # samples the fit has not seen


def test_pure_noise_targets_get_a_large_penalty_and_constant_features_no_weight():
    x, _, groups = _data(n=200)
    y = np.random.default_rng(5).normal(size=(200, 1))
    x[:, 0] = 3.0
    fit = fit_ridge(x, y, groups)
    assert fit.alpha >= 100.0
    assert fit.weight[0, 0] == 0.0
    assert np.isfinite(fit.predict(x)).all()


def test_bad_input():
    x, y, groups = _data()
    with pytest.raises(ValueError, match="two groups"):
        fit_ridge(x, y, np.zeros(len(x)))
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fit_ridge(x, y, groups)


def test_copies_within_a_group_never_leak_across_folds():
    """Pure noise, every sample four times within its group: a fold split that ignored the groups
    would see each test sample in training too and choose almost no penalty."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 20)), rng.normal(size=(30, 1))
    x4, y4, groups = np.repeat(x, 4, axis=0), np.repeat(y, 4, axis=0), np.repeat(np.arange(30), 4)
    assert fit_ridge(x4, y4, groups).alpha >= 100.0
    assert fit_ridge(x4, y4, np.arange(120)).alpha < 1.0  # each copy its own group: the leak the grouping prevents


def test_integer_weights_equal_the_samples_repeated():
    """Weight k must be the same fit as the sample k times over: standardisation, penalty choice
    (the cross-validated error of every penalty) and the weights."""
    x, y, groups = _data(noise=0.5)
    k = np.random.default_rng(3).integers(1, 4, size=len(x))
    weighted = fit_ridge(x, y, groups, weights=k)
    repeated = fit_ridge(np.repeat(x, k, axis=0), np.repeat(y, k, axis=0), np.repeat(groups, k))
    assert weighted.alpha == repeated.alpha
    assert np.allclose(list(weighted.cv_mse.values()), list(repeated.cv_mse.values()), rtol=1e-10)
    for name in ("mean", "scale", "weight", "bias"):
        assert np.allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-9, atol=1e-12)
    plain = fit_ridge(x, y, groups)
    assert not np.allclose(weighted.weight, plain.weight, atol=1e-6)  # the weights do count


def test_weighted_fit_matches_scikit_learn_sample_weight():
    x, y, groups = _data(noise=0.5)
    w = np.random.default_rng(4).uniform(0.2, 3.0, size=len(x))
    fit = fit_ridge(x, y, groups, alphas=[3.0], weights=w)
    mean = np.average(x, axis=0, weights=w)
    z = (x - mean) / np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
    peer = Ridge(alpha=3.0).fit(z, y, sample_weight=w)
    assert np.allclose(fit.weight, peer.coef_, atol=1e-9)
    assert np.allclose(fit.predict(x), peer.predict(z), atol=1e-9)
    with pytest.raises(ValueError, match="weights"):
        fit_ridge(x, y, groups, weights=np.zeros(len(x)))


def test_the_fit_record_is_plain_python_numbers():
    """The cross-validated errors go into JSON run records: numpy scalars would not serialise."""
    x, y, groups = _data(noise=0.5)
    for weights in (None, np.full(len(x), 2.0)):
        fit = fit_ridge(x, y, groups, weights=weights)
        assert all(type(v) is float for v in fit.cv_mse.values())
        json.dumps({str(k): v < 1.0 for k, v in fit.cv_mse.items()})
