"""Random Fourier features against the Gaussian kernel they approximate, and the correction fit:
it learns a smooth non-linear residual that a linear fit misses, and adds next to nothing to
pure noise."""

from __future__ import annotations

import numpy as np
import pytest

from segqc.training.fourier import average_corrections, fit_fourier_correction, fourier_features, fourier_frequencies
from segqc.training.ridge import fit_ridge


def test_feature_products_approximate_the_gaussian_kernel():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(40, 5))
    gamma = 0.1
    base, phases = fourier_frequencies(5, 20000, seed=3)
    phi = fourier_features(z, base * np.sqrt(2 * gamma), phases)
    exact = np.exp(-gamma * ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
    assert np.abs(phi @ phi.T - exact).max() < 0.05
    assert np.abs(np.diag(phi @ phi.T) - 1).max() < 0.05  # k(z, z) = 1


def _smooth_problem(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    y = np.stack([0.3 * z[:, 0] + np.sin(1.5 * z[:, 1]), np.exp(-z[:, 2] ** 2)], axis=1)
    y += 0.05 * rng.normal(size=(n, 2))
    return z, y, np.repeat(np.arange(n // 6), 6)


def test_the_correction_learns_what_the_linear_fit_misses():
    z, y, groups = _smooth_problem()
    zt, yt, _ = _smooth_problem(seed=1)
    linear = fit_ridge(z, y, groups)
    correction = fit_fourier_correction((z - linear.mean) / linear.scale, y - linear.predict(z), groups,
                                        n_features=512)
    linear_error = ((linear.predict(zt) - yt) ** 2).mean()
    corrected = linear.predict(zt) + correction.predict((zt - linear.mean) / linear.scale)
    assert ((corrected - yt) ** 2).mean() < 0.2 * linear_error
    assert correction.cv_mse[correction.gamma] == min(correction.cv_mse.values())


def test_the_correction_of_pure_noise_is_next_to_nothing():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(300, 4))
    noise = 0.1 * rng.normal(size=(300, 2))
    correction = fit_fourier_correction(z, noise, np.repeat(np.arange(50), 6), n_features=256)
    assert correction.fit.alpha >= 1e4  # a large penalty: the features explain nothing
    assert np.abs(correction.predict(rng.normal(size=(100, 4)))).max() < 0.05


def test_averaged_corrections_predict_the_mean_of_their_parts():
    """The stacked correction equals the mean of its parts' predictions, a part left out (None)
    counting as zero; it has every part's features."""
    z, y, groups = _smooth_problem()
    parts = [fit_fourier_correction(z, y, groups, n_features=128, seed=s) for s in (0, (0, 1), (0, 2))]
    zt = np.random.default_rng(5).normal(size=(50, 4))
    each = np.stack([p.predict(zt) for p in parts])
    assert np.abs(each[0] - each[1]).max() > 1e-3  # different draws, different fits
    stacked = average_corrections(parts)
    assert stacked.frequencies.shape == (384, 4)
    assert np.allclose(stacked.predict(zt), each.mean(axis=0), atol=1e-10)
    with_gap = average_corrections([parts[0], None, parts[2]])
    assert np.allclose(with_gap.predict(zt), (each[0] + each[2]) / 3, atol=1e-10)
    assert np.allclose(average_corrections(parts[:1]).predict(zt), each[0], atol=1e-12)
    with pytest.raises(ValueError, match="differ"):
        average_corrections([parts[0], fit_fourier_correction(z, y, groups, n_features=64)])
    with pytest.raises(ValueError, match="at least one"):
        average_corrections([None])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="z"):
        fit_fourier_correction(np.zeros(5), np.zeros((5, 1)), range(5))
    with pytest.raises(ValueError, match="n_features"):
        fit_fourier_correction(np.zeros((5, 2)), np.zeros((5, 1)), range(5), n_features=0)
