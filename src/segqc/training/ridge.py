"""Ridge regression with the penalty chosen by grouped cross-validation (pure numpy).

Used to fit a linear read-out on fixed features of a trained network (QCResUNet's Dice / NSD
read-out): a closed-form least-squares fit on the network's final features, where the network
itself was trained by gradient descent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["RidgeFit", "fit_ridge"]

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))
MIN_SCALE = 1e-3
"""Features whose standard deviation is below this are divided by it instead: a feature that
barely varies in the training samples would otherwise be blown up wherever it does vary."""


@dataclass(frozen=True)
class RidgeFit:
    """``predict(x) = ((x - mean) / scale) @ weight.T + bias``; ``alpha``: the chosen penalty;
    ``cv_mse``: the grouped cross-validated mean squared error of every candidate penalty."""

    mean: np.ndarray  # (P,)
    scale: np.ndarray  # (P,)
    weight: np.ndarray  # (T, P)
    bias: np.ndarray  # (T,)
    alpha: float
    cv_mse: dict[float, float]

    def standardise(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / scale``: the inputs as the fit sees them."""
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.scale

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(N, P)`` features -> ``(N, T)`` predictions."""
        return self.standardise(x) @ self.weight.T + self.bias


class _Normal:
    """The normal equations of one (weighted) training set, standardised once and solved for any
    penalty."""

    def __init__(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        total = w.sum()
        self.mean = (w @ x) / total
        self.scale = np.maximum(np.sqrt((w @ (x - self.mean) ** 2) / total), MIN_SCALE)  # constant: weight 0
        z = (x - self.mean) / self.scale
        self.y_mean = (w @ y) / total
        self.gram = z.T @ (w[:, None] * z)
        self.moment = z.T @ (w[:, None] * (y - self.y_mean))

    def weight(self, alpha: float) -> np.ndarray:
        """``(T, P)`` weights at penalty ``alpha``."""
        return np.linalg.solve(self.gram + alpha * np.eye(self.gram.shape[0]), self.moment).T


def fit_ridge(x: np.ndarray, y: np.ndarray, groups: Sequence[object], *, folds: int = 5,
              alphas: Sequence[float] = DEFAULT_ALPHAS,
              weights: Sequence[float] | np.ndarray | None = None) -> RidgeFit:
    """Ridge regression of ``y`` ``(N, T)`` on ``x`` ``(N, P)``: features standardised (divided
    by their standard deviation, at least :data:`MIN_SCALE`), intercept not penalised, the
    penalty ``alpha`` on the sum of squared standardised weights, summed squared errors.
    ``alpha`` is chosen by ``folds``-fold cross-validation in which all samples of one group
    (e.g. the segmentations of one volume) fall in the same fold, minimising the mean squared
    error over all targets; ties go to the larger penalty. Fewer groups than folds: one fold per
    group. ``weights`` (N,), positive: each sample counts that many times — in the
    standardisation, the fit and the cross-validated error (integer weights give exactly the fit
    on the samples repeated); default 1. ValueError for non-finite input, non-positive weights or
    fewer than two groups."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or len(groups) != x.shape[0]:
        raise ValueError(f"need x (N, P), y (N, T) and N groups; got {x.shape}, {y.shape}, {len(groups)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("features and targets must be finite")
    w = np.ones(x.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (x.shape[0],) or not (np.isfinite(w).all() and (w > 0).all()):
        raise ValueError(f"weights must be N = {x.shape[0]} finite positive numbers")
    names = sorted({str(g) for g in groups})
    if len(names) < 2:
        raise ValueError("cross-validation needs at least two groups")
    fold_of_group = {name: k % min(folds, len(names)) for k, name in enumerate(names)}
    fold = np.array([fold_of_group[str(g)] for g in groups])
    squared = dict.fromkeys(sorted(float(a) for a in alphas), 0.0)
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        normal = _Normal(x[train], y[train], w[train])  # standardised and multiplied out once per fold
        z_test = (x[test] - normal.mean) / normal.scale
        for alpha in squared:
            error = (z_test @ normal.weight(alpha).T + normal.y_mean - y[test]) ** 2
            squared[alpha] += float(w[test] @ error.sum(axis=1))
    cv_mse = {alpha: total / float(w.sum() * y.shape[1]) for alpha, total in squared.items()}
    best = min(cv_mse.values())
    alpha = max(a for a, v in cv_mse.items() if v <= best * (1 + 1e-12))
    normal = _Normal(x, y, w)
    return RidgeFit(normal.mean, normal.scale, normal.weight(alpha), normal.y_mean, alpha, cv_mse)
