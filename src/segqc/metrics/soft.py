"""Soft Dice for probabilistic and multi-rater maps (QUBIQ protocol).

Both maps hold values in [0, 1] (a model's probability, or the fraction of raters who marked the
voxel). Each is binarised at the thresholds 0.1, 0.2, ..., 0.9 (foreground where ``value > t``)
and the binary Dice values are averaged. At a threshold where both
binarised maps are empty the two agree perfectly and the Dice counts as 1 (QUBIQ convention);
if the ground truth or the prediction is empty at every threshold, the empty-mask policy decides
the result (and tags it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segqc.metrics.binary import MetricResult
from segqc.metrics.masks import numbers
from segqc.metrics.registry import EmptyPolicy, empty_situation, metric_info, resolve_empty

QUBIQ_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))


def _check_probability(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise ValueError(f"{name} must hold values in [0, 1], got range [{values.min()}, {values.max()}]")
    return values


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    values = numbers(thresholds, "thresholds")
    if not values:
        raise ValueError("thresholds must hold at least one value in [0, 1)")
    if not all(0.0 <= t < 1.0 for t in values):  # NaN fails the comparison too
        raise ValueError(f"thresholds must be in [0, 1), got {values}")
    return values


def soft_dice(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    thresholds: Sequence[float] = QUBIQ_THRESHOLDS,
    empty: EmptyPolicy | None = None,
    policy: EmptyPolicy | None = None,
) -> MetricResult:
    """Mean binary Dice over ``thresholds`` (at least one, each in [0, 1)) of two maps in [0, 1]
    (see module docstring); unitless, best 1. Empty maps (nothing above the lowest threshold):
    both -> ``empty.both_empty`` (default NaN), one -> ``empty.gt_empty`` / ``pred_empty``
    (default worst, 0), tagged. ``empty`` is an :class:`~segqc.metrics.registry.EmptyPolicy`
    (``policy`` is its deprecated old name)."""
    empty = resolve_empty(empty, policy, "soft_dice")
    thresholds = _check_thresholds(thresholds)
    pred = _check_probability("pred", pred)
    gt = _check_probability("gt", gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} differs from gt shape {gt.shape}")
    gt_any, pred_any = bool((gt > min(thresholds)).any()), bool((pred > min(thresholds)).any())
    if not (gt_any and pred_any):
        situation = empty_situation(pred_any, gt_any)
        value, tag = metric_info("soft_dice").empty_value(situation, empty)
        return MetricResult("soft_dice", value, tag)
    scores = []
    for t in thresholds:
        p, g = pred > t, gt > t
        denominator = np.count_nonzero(p) + np.count_nonzero(g)
        scores.append(1.0 if denominator == 0 else 2.0 * np.count_nonzero(p & g) / denominator)
    return MetricResult("soft_dice", float(np.mean(scores)))
