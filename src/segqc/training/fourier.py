"""A smooth non-linear correction of a linear fit: ridge regression on random Fourier features.

Random Fourier features (Rahimi & Recht, 2007) ``phi(z) = sqrt(2 / D) cos(z @ W.T + b)`` with
``W ~ N(0, 2 gamma I)`` and ``b ~ U[0, 2 pi)`` make ``phi(z) . phi(z')`` approximate the Gaussian
kernel ``exp(-gamma |z - z'|^2)``; a ridge fit on them is an approximate kernel ridge regression
with a fixed number ``D`` of parameters per target (so a fitted correction is a handful of
fixed-shape arrays, saved with a network's weights). Used on the residuals of QCResUNet's linear
read-out: far from the training samples the features average out and the linear fit remains.
With a thousand features the fit still depends on which frequencies were drawn; the mean of
several corrections on independent draws (:func:`average_corrections`) is one correction of
their features stacked, so it is saved and applied as any other.

Pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segqc.training.ridge import RidgeFit, fit_ridge

__all__ = ["DEFAULT_GAMMAS", "FourierCorrection", "average_corrections", "fit_fourier_correction", "fourier_features",
           "fourier_frequencies"]

DEFAULT_GAMMAS = (3e-3, 1e-2, 3e-2, 1e-1)
"""Kernel widths tried (per squared unit of the standardised inputs: with P inputs of unit
variance two samples lie about ``2 P`` apart in squared distance)."""
DEFAULT_CORRECTION_ALPHAS = tuple(float(a) for a in np.logspace(0, 7, 15))
"""Penalties tried; the largest leaves next to no correction (the linear fit alone)."""


def fourier_frequencies(n_inputs: int, n_features: int, seed: int | Sequence[int] = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance frequencies ``(D, P)`` and phases ``(D,)`` in ``[0, 2 pi)`` from ``seed`` (an
    int or a sequence of ints, as :func:`numpy.random.default_rng` takes; multiply the
    frequencies by ``sqrt(2 gamma)`` for the kernel ``exp(-gamma |z - z'|^2)``)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_features, n_inputs)), rng.uniform(0.0, 2.0 * np.pi, n_features)


def fourier_features(z: np.ndarray, frequencies: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """``sqrt(2 / D) cos(z @ frequencies.T + phases)``: ``(N, P)`` -> ``(N, D)``."""
    return np.sqrt(2.0 / frequencies.shape[0]) * np.cos(np.asarray(z, dtype=np.float64) @ frequencies.T + phases)


@dataclass(frozen=True)
class FourierCorrection:
    """``predict(z) = fit.predict(fourier_features(z, frequencies, phases))``; ``gamma``: the chosen
    kernel width (already in ``frequencies``); ``cv_mse``: the grouped cross-validated mean
    squared error of the corrected fit for every width (at its best penalty)."""

    frequencies: np.ndarray  # (D, P), scaled by sqrt(2 gamma)
    phases: np.ndarray  # (D,)
    fit: RidgeFit
    gamma: float
    cv_mse: dict[float, float]

    def predict(self, z: np.ndarray) -> np.ndarray:
        """``(N, P)`` inputs -> ``(N, T)`` corrections."""
        return self.fit.predict(fourier_features(z, self.frequencies, self.phases))


def fit_fourier_correction(z: np.ndarray, residual: np.ndarray, groups: Sequence[object], *,
                           n_features: int = 1024, gammas: Sequence[float] = DEFAULT_GAMMAS,
                           alphas: Sequence[float] = DEFAULT_CORRECTION_ALPHAS, folds: int = 5,
                           seed: int | Sequence[int] = 0,
                           weights: Sequence[float] | np.ndarray | None = None) -> FourierCorrection:
    """Fit ``residual`` ``(N, T)`` on random Fourier features of ``z`` ``(N, P)`` (inputs already
    standardised): for each kernel width in ``gammas`` a ridge fit (:func:`fit_ridge`, penalty by
    grouped cross-validation over ``groups``); the width with the lowest cross-validated error
    wins (ties: the smoother, smaller width). The same frequencies (from ``seed``) serve every
    width, scaled. ``weights``: the samples' weights, as in :func:`fit_ridge`. ValueError as
    :func:`fit_ridge`."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"need z (N, P), got {z.shape}")
    if n_features < 1:
        raise ValueError(f"n_features must be >= 1, got {n_features}")
    base, phases = fourier_frequencies(z.shape[1], n_features, seed)
    fits: dict[float, RidgeFit] = {}
    for gamma in sorted(float(g) for g in gammas):
        fits[gamma] = fit_ridge(fourier_features(z, base * np.sqrt(2.0 * gamma), phases), residual, groups,
                                folds=folds, alphas=alphas, weights=weights)
    if not fits:
        raise ValueError("need at least one kernel width")
    cv_mse = {gamma: fit.cv_mse[fit.alpha] for gamma, fit in fits.items()}
    best = min(cv_mse.values())
    gamma = min(g for g, v in cv_mse.items() if v <= best * (1 + 1e-12))  # ties: the smoother width
    return FourierCorrection(base * np.sqrt(2.0 * gamma), phases, fits[gamma], gamma, cv_mse)


def average_corrections(corrections: Sequence[FourierCorrection | None]) -> FourierCorrection:
    """One correction whose :meth:`~FourierCorrection.predict` is the mean of the given ones'
    (None counts as a correction of zero; all of one input width ``P`` and ``D`` features each):
    their frequencies and phases stacked, ``K D`` features. Stacking scales every feature by
    ``sqrt(1 / K)`` (``phi`` has ``sqrt(2 / (K D))`` in front); the features' centring and scale
    are scaled alike, so each part's standardised features are unchanged, and its weights are
    divided by ``K``. ``gamma`` is NaN and ``cv_mse`` empty: the parts' own stay with them.
    ValueError for no correction at all or parts of different shapes."""
    fitted = [c for c in corrections if c is not None]
    if not fitted:
        raise ValueError("need at least one fitted correction")
    shape = fitted[0].frequencies.shape
    targets = fitted[0].fit.weight.shape[0]
    if any(c.frequencies.shape != shape or c.fit.weight.shape[0] != targets for c in fitted):
        raise ValueError("the corrections differ in features, inputs or targets")
    k = len(corrections)
    shrink = np.sqrt(1.0 / k)
    parts = []
    for c in corrections:
        if c is None:  # a part that was not kept: zero weight, any frequencies
            parts.append((np.zeros(shape), np.zeros(shape[0]), np.zeros(shape[0]), np.ones(shape[0]),
                          np.zeros((targets, shape[0])), np.zeros(targets)))
        else:
            f = c.fit
            parts.append((c.frequencies, c.phases, f.mean * shrink, f.scale * shrink, f.weight / k, f.bias / k))
    stacked = [np.concatenate([p[i] for p in parts], axis=1 if i == 4 else 0) for i in range(5)]
    bias = np.sum([p[5] for p in parts], axis=0)
    fit = RidgeFit(stacked[2], stacked[3], stacked[4], bias, float("nan"), {})
    return FourierCorrection(stacked[0], stacked[1], fit, float("nan"), {})
