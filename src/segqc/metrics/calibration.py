"""Calibration and uncertainty quality of probabilistic segmentations (pure numpy/scipy).

* :func:`calibration_error` — expected and maximum calibration error (ECE, MCE) of a probability
  map against a binary or soft ground truth ``gt`` (a label mask, or the fraction of raters who marked each
  voxel): voxels are put in ``bins`` equal-width bins of the predicted probability on [0, 1] (the
  last bin includes 1); ECE = Σ_b (n_b / N) |mean prob_b − mean gt_b|, MCE = max_b of the
  same gap over non-empty bins (Naeini et al. 2015; Guo et al. 2017). ``mask`` restricts the voxels
  (e.g. a foreground-only variant: the union of prediction and ground truth dilated, chosen by the
  caller). No voxel: NaN.
* :func:`top_label_calibration` — multi-class: confidence = the largest class probability,
  correctness = whether that class is the true one; ECE / MCE of confidence vs correctness.
* :func:`rank_auroc` — area under the ROC curve of a score separating positives from negatives:
  P(score of a positive > score of a negative), ties counting one half (Mann–Whitney U), exact
  with average ranks. NaN when either group is empty. Used for "does the per-pixel entropy find the
  wrong pixels" (positives = misclassified pixels) and for failure detection of QC estimates.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["calibration_error", "rank_auroc", "top_label_calibration"]


def rank_auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """AUROC of ``scores`` for the boolean ``positives`` (module docstring); NaN scores are left out."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    p = np.asarray(positives, dtype=bool).ravel()
    if s.shape != p.shape:
        raise ValueError(f"scores {s.shape} and positives {p.shape} differ in size")
    keep = np.isfinite(s)
    s, p = s[keep], p[keep]
    n_pos, n_neg = int(p.sum()), int((~p).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(s)  # average ranks for ties
    u = ranks[p].sum() - n_pos * (n_pos + 1) / 2  # pairs (positive, negative) with the positive higher
    return float(u / (n_pos * n_neg))


def _binned_gap(confidence: np.ndarray, outcome: np.ndarray, bins: int) -> tuple[float, float]:
    if confidence.size == 0:
        return math.nan, math.nan
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, confidence, bins) - np.bincount(index, outcome, bins))  # n_b |mean_p - mean_y|
    filled = counts > 0
    ece = float(gap.sum() / confidence.size)
    mce = float(np.max(gap[filled] / counts[filled]))
    return ece, mce


def _unit_interval(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
        raise ValueError(f"{name} must hold finite values in [0, 1]")
    return values


def calibration_error(probability: np.ndarray, gt: np.ndarray, *, bins: int = 10,
                      mask: np.ndarray | None = None) -> tuple[float, float]:
    """(ECE, MCE) of ``probability`` against ``gt`` (binary or soft, both in [0, 1], one
    shape), over the voxels of ``mask`` (default: all); module docstring."""
    prob = _unit_interval("probability", probability)
    tgt = _unit_interval("gt", gt)
    if prob.shape != tgt.shape:
        raise ValueError(f"probability {prob.shape} and gt {tgt.shape} differ in shape")
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        prob, tgt = prob[keep], tgt[keep]
    return _binned_gap(prob.ravel(), tgt.ravel(), bins)


def top_label_calibration(probabilities: np.ndarray, gt: np.ndarray, *, bins: int = 10,
                          mask: np.ndarray | None = None) -> tuple[float, float]:
    """(ECE, MCE) of the top class: ``probabilities`` ``(K, *shape)`` summing to 1 over the first
    axis, ``gt`` ``shape`` true class indices 0..K−1; module docstring."""
    probs = _unit_interval("probabilities", probabilities)
    gt = np.asarray(gt)
    if probs.shape[1:] != gt.shape:
        raise ValueError(f"probabilities {probs.shape} do not match gt {gt.shape} (K, *shape)")
    confidence = probs.max(axis=0)
    correct = (probs.argmax(axis=0) == gt).astype(np.float64)
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        confidence, correct = confidence[keep], correct[keep]
    return _binned_gap(confidence.ravel(), correct.ravel(), bins)
