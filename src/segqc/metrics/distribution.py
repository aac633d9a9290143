"""Metrics of segmentation *distributions*: a set of predicted samples against a set of raters'
masks of one image (pure numpy/scipy; binary masks of any dimension).

Distance. ``d(A, B) = 1 − IoU(A, B) = 1 − |A ∩ B| / |A ∪ B|``; two empty masks are identical:
``d = 0`` (IoU 1). Every pairwise part is one matrix product of the flattened masks
(:func:`pairwise_iou`), not a loop over pairs.

* :func:`generalized_energy_distance` — GED² = 2 E[d(S, Y)] − E[d(S, S')] − E[d(Y, Y')]
  (Kohl et al. 2018, Probabilistic U-Net), S, S' predicted samples, Y, Y' raters. The
  expectations are the plug-in means over *all* ordered pairs of each set, the pair of a mask with
  itself included (d = 0): S and S' are independent draws from the empirical distribution. This
  is what the Probabilistic U-Net and PHiSeg evaluation code compute; ``pairs="distinct"`` leaves
  the self-pairs out instead (the unbiased form, which can be negative). GED² ≥ 0 in the plug-in
  form (1 − IoU is a metric of negative type on sets, so the energy distance is non-negative);
  0 for identical sets. Many papers report GED² and call it GED; both are returned.
* :func:`sample_diversity` — E[d(S, S')] over distinct pairs (i ≠ j) of the samples: 0 for
  identical samples, NaN for one sample.
* :func:`hungarian_iou` — the PHiSeg convention: both sets are repeated to ``lcm(N, M)`` masks,
  matched one-to-one by the Hungarian algorithm on the cost ``d``, HM-IoU = the mean IoU of the
  matched pairs (1 for identical sets).
* :func:`volume_crps` — continuous ranked probability score of the predicted volumes (the
  samples' voxel counts times the voxel volume) against the raters' volumes, in the volume's unit
  (mm² or mm³ with spacing, voxels without): for each rater volume y,
  CRPS = E|X − y| − ½ E|X − X'| (Gneiting & Raftery 2007, the energy form for an empirical
  predictive distribution X), averaged over the raters. 0 when every sample and every rater has
  the same volume.
* :func:`consensus_maps` — ``M^c = [Σ_i A^i ≥ c]`` for c = 1..C, and the rater mean (soft map).
* :func:`uncertainty_error_overlap` — Dice between the uncertainty map thresholded at ``u > t``
  and the error mask, for every threshold; the best value and its threshold (Jungo et al. 2020,
  "U-E overlap"). No error and no uncertain voxel at a threshold: Dice 1 there.

Soft Dice of a soft map against the rater mean is :func:`segqc.metrics.soft.soft_dice`; ECE / MCE
against the rater mean is :func:`soft_calibration` (a thin wrapper of
:func:`segqc.metrics.calibration.calibration_error` with the foreground-only option).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from segqc.metrics.calibration import calibration_error

__all__ = [
    "DistributionScores",
    "consensus_maps",
    "distribution_scores",
    "generalized_energy_distance",
    "hungarian_iou",
    "pairwise_iou",
    "sample_diversity",
    "soft_calibration",
    "uncertainty_error_overlap",
    "volume_crps",
]


def _as_mask_set(name: str, masks: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """``(N, V)`` bool from N masks of one shape (bool, {0, 1} integers or floats in {0, 1})."""
    array = np.asarray(masks) if not isinstance(masks, np.ndarray) else masks
    if array.ndim < 2 or array.shape[0] < 1:
        raise ValueError(f"{name}: need a stack of at least one mask (N, ...), got shape {array.shape}")
    if array.dtype != bool:
        values = np.unique(array)
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"{name}: masks must be binary (0/1), found values {values[:5].tolist()}")
    return array.reshape(array.shape[0], -1).astype(bool, copy=False)


def _gram_iou(stacked: np.ndarray) -> np.ndarray:
    """``(K, K)`` IoU of every pair of the rows of ``stacked`` ``(K, V)`` bool: all intersections
    in one matrix product (float32 counts are exact below 2^24 voxels, float64 above)."""
    x = stacked.astype(np.float32 if stacked.shape[1] < 2**24 else np.float64)
    intersection = np.matmul(x, x.T).astype(np.float64)
    sizes = np.diag(intersection)
    union = sizes[:, None] + sizes[None, :] - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 1.0)


def _iou_blocks(first: np.ndarray | Sequence[np.ndarray],
                second: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first x first, first x second, second x second) IoU matrices from one product."""
    a = _as_mask_set("first", first)
    b = _as_mask_set("second", second)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"masks of different sizes: {a.shape[1]} and {b.shape[1]} voxels")
    iou = _gram_iou(np.concatenate([a, b]))
    n = a.shape[0]
    return iou[:n, :n], iou[:n, n:], iou[n:, n:]


def pairwise_iou(first: np.ndarray | Sequence[np.ndarray], second: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """``(N, M)`` IoU of every mask of ``first`` ``(N, ...)`` with every mask of ``second``
    ``(M, ...)`` (binary, one shape); two empty masks: IoU 1."""
    return _iou_blocks(first, second)[1]


def _mean_distance(distance: np.ndarray, distinct: bool) -> float:
    n = distance.shape[0]
    if not distinct:
        return float(distance.mean())
    if n < 2:
        return math.nan
    return float((distance.sum() - np.trace(distance)) / (n * (n - 1)))


def generalized_energy_distance(samples: np.ndarray | Sequence[np.ndarray], raters: np.ndarray | Sequence[np.ndarray],
                                *, pairs: str = "all") -> tuple[float, float]:
    """(GED², GED) of predicted ``samples`` ``(N, ...)`` against ``raters`` ``(M, ...)`` (module
    docstring). ``pairs``: "all" (plug-in, self-pairs included; default) or "distinct" (needs
    N, M ≥ 2; GED is NaN where GED² < 0)."""
    if pairs not in ("all", "distinct"):
        raise ValueError(f"pairs must be 'all' or 'distinct', got {pairs!r}")
    distinct = pairs == "distinct"
    iou_s, iou_sy, iou_y = _iou_blocks(samples, raters)
    return _ged_from(iou_s, iou_sy, iou_y, distinct)


def _ged_from(iou_s: np.ndarray, iou_sy: np.ndarray, iou_y: np.ndarray, distinct: bool) -> tuple[float, float]:
    ged2 = (2.0 * float((1.0 - iou_sy).mean()) - _mean_distance(1.0 - iou_s, distinct)
            - _mean_distance(1.0 - iou_y, distinct))
    if not distinct:
        ged2 = max(ged2, 0.0)  # rounding only: the plug-in form is non-negative
    return ged2, (math.sqrt(ged2) if ged2 >= 0 else math.nan)


def sample_diversity(samples: np.ndarray | Sequence[np.ndarray]) -> float:
    """Mean ``1 − IoU`` over distinct pairs of samples ``(N, ...)``; NaN for N = 1."""
    return _mean_distance(1.0 - _gram_iou(_as_mask_set("samples", samples)), distinct=True)


def hungarian_iou(samples: np.ndarray | Sequence[np.ndarray], raters: np.ndarray | Sequence[np.ndarray]) -> float:
    """Hungarian-matched IoU (PHiSeg convention, module docstring) of ``samples`` ``(N, ...)`` and
    ``raters`` ``(M, ...)``."""
    return _hungarian_from(pairwise_iou(samples, raters))


def _hungarian_from(iou: np.ndarray) -> float:
    n, m = iou.shape
    size = math.lcm(n, m)
    repeated = np.tile(iou, (size // n, size // m))  # row i -> sample i mod N, column j -> rater j mod M
    rows, cols = linear_sum_assignment(1.0 - repeated)
    return float(repeated[rows, cols].mean())


def volume_crps(samples: np.ndarray | Sequence[np.ndarray], raters: np.ndarray | Sequence[np.ndarray],
                *, voxel_volume: float = 1.0) -> float:
    """CRPS of the samples' volumes against the raters' volumes (module docstring), in units of
    ``voxel_volume`` (e.g. the product of the spacing in mm)."""
    x = _as_mask_set("samples", samples).sum(axis=1).astype(np.float64) * voxel_volume
    y = _as_mask_set("raters", raters).sum(axis=1).astype(np.float64) * voxel_volume
    spread = float(np.abs(x[:, None] - x[None, :]).mean())
    return float(np.abs(x[:, None] - y[None, :]).mean() - 0.5 * spread)


def consensus_maps(raters: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(C, ...)`` bool consensus masks ``M^c = [Σ_i A^i ≥ c]`` for c = 1..C, and the rater mean
    (float64 in [0, 1], the fraction of raters who marked each voxel) of C raters' masks."""
    array = np.asarray(raters)
    flat = _as_mask_set("raters", array)
    votes = flat.sum(axis=0).reshape(array.shape[1:])
    levels = np.arange(1, flat.shape[0] + 1).reshape((-1,) + (1,) * votes.ndim)
    return votes[None] >= levels, votes / flat.shape[0]


def soft_calibration(probability: np.ndarray, raters: np.ndarray | Sequence[np.ndarray], *, bins: int = 10,
                     foreground_only: bool = False, foreground_threshold: float = 0.05) -> tuple[float, float]:
    """(ECE, MCE) of a soft map against the rater mean (equal-width bins on [0, 1]);
    ``foreground_only``: only voxels that a rater marks or where the soft map is at least
    ``foreground_threshold`` (the background far from the object would otherwise dominate and
    drive ECE towards 0; a network's softmax is never exactly 0, hence a threshold). No voxel: NaN."""
    return _calibration_to_mean(probability, consensus_maps(raters)[1], bins, foreground_only, foreground_threshold)


def _calibration_to_mean(probability: np.ndarray, mean: np.ndarray, bins: int, foreground_only: bool,
                         foreground_threshold: float = 0.05) -> tuple[float, float]:
    prob = np.asarray(probability, dtype=np.float64)
    if prob.shape != mean.shape:
        raise ValueError(f"probability map {prob.shape} and rater masks {mean.shape} differ in shape")
    mask = ((prob >= foreground_threshold) | (mean > 0)) if foreground_only else None
    return calibration_error(prob, mean, bins=bins, mask=mask)


def uncertainty_error_overlap(uncertainty: np.ndarray, error: np.ndarray,
                              thresholds: Sequence[float] | None = None) -> tuple[float, float, np.ndarray]:
    """(best Dice, its threshold, Dice per threshold) between ``uncertainty > t`` and the boolean
    ``error`` mask. Default thresholds: 100 evenly spaced between the smallest and the largest
    uncertainty value (exclusive of the largest)."""
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    e = np.asarray(error, dtype=bool).ravel()
    if u.shape != e.shape:
        raise ValueError(f"uncertainty ({u.size} voxels) and error ({e.size} voxels) differ in size")
    if thresholds is None:
        low, high = (float(u.min()), float(u.max())) if u.size else (0.0, 1.0)
        t = np.linspace(low, high, 101)[:-1] if high > low else np.array([low])
    else:
        t = np.asarray(thresholds, dtype=np.float64)
    # Sort once; for each threshold the uncertain set is a suffix of the sorted order.
    order = np.argsort(u, kind="stable")
    u_sorted, e_sorted = u[order], e[order]
    errors_from = np.concatenate([np.cumsum(e_sorted[::-1])[::-1], [0]])  # errors in u_sorted[k:]
    start = np.searchsorted(u_sorted, t, side="right")  # first index with u > t
    uncertain = u.size - start
    hits = errors_from[start]
    total = uncertain + int(e.sum())
    dice = np.where(total > 0, 2.0 * hits / np.maximum(total, 1), 1.0)
    best = int(np.argmax(dice))
    return float(dice[best]), float(t[best]), dice


@dataclass(frozen=True)
class DistributionScores:
    """Every distribution metric of one image (:func:`distribution_scores`)."""

    ged2: float
    ged: float
    hm_iou: float
    diversity: float
    rater_diversity: float
    soft_dice: float
    ece: float
    mce: float
    ece_foreground: float
    volume_crps: float
    soft_dice_empty: str = ""  # the empty-mask rule that decided soft_dice ("" when none applied)

    def as_dict(self) -> dict[str, float]:
        """Metric name -> value (the numbers; ``soft_dice_empty`` is a tag, not a metric)."""
        return {name: value for name, value in self.__dict__.items() if name != "soft_dice_empty"}


def distribution_scores(samples: np.ndarray, raters: np.ndarray, *, probability: np.ndarray | None = None,
                        voxel_volume: float = 1.0, bins: int = 10) -> DistributionScores:
    """GED, HM-IoU, diversity of samples and raters, soft Dice and ECE / MCE of the soft map
    (``probability``; default: the mean of the samples) against the rater mean, volume CRPS."""
    from segqc.metrics.soft import soft_dice

    samples = np.asarray(samples)
    raters = np.asarray(raters)
    if samples.shape[1:] != raters.shape[1:]:
        raise ValueError(f"samples {samples.shape[1:]} and raters {raters.shape[1:]} differ in shape")
    soft = samples.astype(np.float64).mean(axis=0) if probability is None else np.asarray(probability, np.float64)
    _, mean = consensus_maps(raters)
    iou_s, iou_sy, iou_y = _iou_blocks(samples, raters)  # every IoU of the image from one product
    ged2, ged = _ged_from(iou_s, iou_sy, iou_y, distinct=False)
    ece, mce = _calibration_to_mean(soft, mean, bins, foreground_only=False)
    ece_fg, _ = _calibration_to_mean(soft, mean, bins, foreground_only=True)
    dice = soft_dice(soft, mean)
    return DistributionScores(
        ged2=ged2, ged=ged, hm_iou=_hungarian_from(iou_sy), diversity=_mean_distance(1.0 - iou_s, True),
        rater_diversity=_mean_distance(1.0 - iou_y, True), soft_dice=dice.value, ece=ece, mce=mce,
        ece_foreground=ece_fg, volume_crps=volume_crps(samples, raters, voxel_volume=voxel_volume),
        soft_dice_empty=dice.empty)
