"""Rules of the ridge and random-Fourier read-outs that decide the chosen penalty / width and the
reported cross-validated errors, checked against scikit-learn's Ridge in a plain grouped-CV loop
and against the documented tie and scale rules."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from segqc.training.fourier import DEFAULT_GAMMAS, fit_fourier_correction, fourier_frequencies
from segqc.training.ridge import fit_ridge


def _data(n: int = 120, p: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) * rng.uniform(0.1, 10, size=p) + rng.normal(size=p)
    coef = rng.normal(size=(2, p))
    y = x @ coef.T + np.array([0.5, -1.0]) + 0.5 * rng.normal(size=(n, 2))
    return x, y, np.repeat(np.arange(n // 4), 4)  # 30 groups: "10" sorts before "2"


def _cv_mse_ref(x: np.ndarray, y: np.ndarray, groups: np.ndarray, alpha: float, folds: int = 5) -> float:
    """Docstring rule with scikit-learn: groups sorted by name, k-th group in fold k % folds; per
    fold, standardise on the training part (std at least 1e-3), sklearn Ridge; mean squared error
    over all samples and targets."""
    names = sorted({str(g) for g in groups})
    fold_of = {name: k % min(folds, len(names)) for k, name in enumerate(names)}
    fold = np.array([fold_of[str(g)] for g in groups])
    se = 0.0
    for k in np.unique(fold):
        tr, te = fold != k, fold == k
        mu, sd = x[tr].mean(0), np.maximum(x[tr].std(0), 1e-3)
        model = Ridge(alpha=alpha).fit((x[tr] - mu) / sd, y[tr])
        se += float(((model.predict((x[te] - mu) / sd).reshape(y[te].shape) - y[te]) ** 2).sum())
    return se / y.size


def test_cv_mse_of_two_targets_is_the_mean_over_samples_and_targets():
    """Two targets, 30 integer groups: cv_mse of each penalty equals the scikit-learn loop."""
    x, y, groups = _data()
    fit = fit_ridge(x, y, groups, alphas=[0.1, 3.0, 100.0])
    for alpha in (0.1, 3.0, 100.0):
        assert fit.cv_mse[alpha] == pytest.approx(_cv_mse_ref(x, y, groups, alpha), rel=1e-8)


def test_folds_follow_the_sorted_group_names_whatever_the_row_order():
    """Rows shuffled: the folds depend on the group names only (scikit-learn loop on sorted names)."""
    x, y, groups = _data()
    perm = np.random.default_rng(7).permutation(len(x))
    x, y, groups = x[perm], y[perm], groups[perm]
    fit = fit_ridge(x, y, groups, alphas=[3.0])
    assert fit.cv_mse[3.0] == pytest.approx(_cv_mse_ref(x, y, groups, 3.0), rel=1e-8)


def test_equal_errors_go_to_the_largest_penalty():
    """Targets all zero: every penalty predicts 0 exactly, cv_mse ties at 0 -> the largest alpha."""
    x, _, groups = _data()
    fit = fit_ridge(x, np.zeros((len(x), 1)), groups, alphas=[0.01, 1.0, 100.0])
    assert set(fit.cv_mse.values()) == {0.0}
    assert fit.alpha == 100.0


def test_a_nearly_constant_feature_is_divided_by_the_minimum_scale():
    """Docstring: standard deviation below MIN_SCALE (1e-3) -> divided by 1e-3 instead."""
    x, y, groups = _data()
    x[:, 0] = 3.0 + 1e-6 * np.random.default_rng(2).normal(size=len(x))
    fit = fit_ridge(x, y, groups, alphas=[3.0])
    assert fit.scale[0] == 1e-3
    assert fit.scale[1] == pytest.approx(x[:, 1].std())


def test_fourier_phases_cover_the_whole_circle():
    """Docstring: phases uniform in [0, 2 pi): of 4000 draws some lie beyond 1.5 pi, mean ~ pi."""
    _, phases = fourier_frequencies(3, 4000, seed=0)
    assert phases.min() >= 0.0 and phases.max() < 2 * np.pi
    assert phases.max() > 1.5 * np.pi
    assert phases.mean() == pytest.approx(np.pi, rel=0.05)


def test_equal_fourier_errors_go_to_the_smallest_width():
    """Zero residuals: every width's error is 0 -> the smoother (smallest) gamma."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 2))
    corr = fit_fourier_correction(z, np.zeros((40, 1)), np.repeat(np.arange(10), 4), n_features=16)
    assert set(corr.cv_mse.values()) == {0.0}
    assert corr.gamma == min(DEFAULT_GAMMAS)


def test_fourier_cv_mse_of_a_width_is_at_its_best_penalty():
    """cv_mse[gamma] = min over the penalties of the scikit-learn grouped-CV error on the features
    sqrt(2/D) cos(z (W sqrt(2 gamma)).T + b), W, b drawn as documented from the seed."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(80, 3))
    res = np.sin(2 * z[:, :1]) + 0.1 * rng.normal(size=(80, 1))
    groups = np.repeat(np.arange(20), 4)
    d, alphas = 32, (1.0, 10.0, 100.0, 1e4)
    corr = fit_fourier_correction(z, res, groups, n_features=d, alphas=alphas)
    draw = np.random.default_rng(0)
    w, b = draw.standard_normal((d, 3)), draw.uniform(0, 2 * np.pi, d)
    refs = {}
    for gamma in DEFAULT_GAMMAS:
        phi = np.sqrt(2.0 / d) * np.cos(z @ (w * np.sqrt(2 * gamma)).T + b)
        refs[gamma] = min(_cv_mse_ref(phi, res, groups, a) for a in alphas)
        assert corr.cv_mse[gamma] == pytest.approx(refs[gamma], rel=1e-6)
    assert corr.gamma == min(refs, key=refs.get)
