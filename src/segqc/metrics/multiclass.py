"""Subject-level multi-class Dice (QCResUNet, appendix A) and per-class Dice of label maps.

Multi-class Dice: one number for a whole multi-class label map,

    DSC = 2 TP / (2 TP + FP + FN)

* TP: predicted foreground voxels whose label equals the ground-truth label;
* FP: predicted foreground voxels whose label differs from the ground truth (background *or*
  another class in the ground truth);
* FN: ground-truth foreground voxels whose predicted label differs (background or another class).

A voxel of class 1 predicted as class 2 is therefore one FP *and* one FN. The definition equals
the micro-average of the one-vs-rest Dice over the classes (TP, FP, FN summed over classes before
the ratio), so large classes weigh more than small ones.

Empty masks follow :class:`~segqc.metrics.registry.EmptyPolicy` like every segqc metric: both
label maps all background -> ``empty.both_empty`` (default NaN, tagged ``both_empty:nan``); only
the ground truth or only the prediction all background -> ``empty.gt_empty`` /
``empty.pred_empty`` (default worst, 0, which is also what the formula gives). The rule that
applied is in ``MetricResult.empty``. Label maps are integer (or bool) arrays of the same shape,
0 = background, other labels positive (a negative value is a ``ValueError``). Pure numpy: no
I/O; inputs are never modified.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from segqc.metrics.binary import MetricResult
from segqc.metrics.counts import value_counts
from segqc.metrics.registry import EmptyPolicy, empty_situation, metric_info

__all__ = ["MulticlassCounts", "check_label_maps", "generalized_dice", "multiclass_counts", "multiclass_dice",
           "per_class_dice", "present_labels"]


def present_labels(label: np.ndarray) -> list[int]:
    """Sorted non-zero label values present in a label map (:func:`~segqc.metrics.counts.value_counts`);
    an empty list for an empty or all-background map."""
    values, _ = value_counts(label)
    return [int(v) for v in values if v != 0]


class MulticlassCounts(tuple):
    """``(tp, fp, fn)`` voxel counts of the multi-class definition (a named tuple of ints)."""

    __slots__ = ()

    def __new__(cls, tp: int, fp: int, fn: int) -> MulticlassCounts:
        return super().__new__(cls, (int(tp), int(fp), int(fn)))

    tp = property(lambda self: self[0])
    fp = property(lambda self: self[1])
    fn = property(lambda self: self[2])


def check_label_maps(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``gt`` as arrays after checking that they are label maps of one shape: integer
    or boolean, no negative value (ValueError naming the problem)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} differs from gt shape {gt.shape}")
    for name, array in (("pred", pred), ("gt", gt)):
        if array.dtype.kind not in "iub":
            raise ValueError(f"{name} must be an integer label map, got dtype {array.dtype}")
        if array.dtype.kind == "i" and array.size and array.min() < 0:
            raise ValueError(f"{name} has negative label values; labels are 0 (background) and positive integers")
    return pred, gt


def multiclass_counts(pred: np.ndarray, gt: np.ndarray) -> MulticlassCounts:
    """TP, FP, FN voxel counts of the multi-class definition (module docstring)."""
    pred, gt = check_label_maps(pred, gt)
    pred_fg = pred != 0
    wrong = pred != gt
    n_pred = int(np.count_nonzero(pred_fg))
    fp = int(np.count_nonzero(pred_fg & wrong))
    fn = int(np.count_nonzero((gt != 0) & wrong))
    return MulticlassCounts(n_pred - fp, fp, fn)


def _dice_from_counts(tp: int, fp: int, fn: int, empty: EmptyPolicy) -> MetricResult:
    situation = empty_situation(tp + fp, tp + fn)
    if not situation:
        return MetricResult("dice", 2.0 * tp / (2.0 * tp + fp + fn))
    value, tag = metric_info("dice").empty_value(situation, empty)
    return MetricResult("dice", value, tag)


def multiclass_dice(pred: np.ndarray, gt: np.ndarray, *, empty: EmptyPolicy | None = None) -> MetricResult:
    """Subject-level multi-class Dice ``2TP / (2TP + FP + FN)`` of two integer label maps.

    ``pred`` and ``gt``: same-shape 2D/3D integer arrays, 0 = background. Unitless, best 1,
    worst 0. Empty masks: both all background -> ``empty.both_empty`` (default NaN); one all
    background -> ``empty.gt_empty`` / ``empty.pred_empty`` (default worst, 0). The returned
    :class:`~segqc.metrics.binary.MetricResult` is named ``"dice"`` and says in ``empty`` which
    rule applied ("" if none).
    """
    tp, fp, fn = multiclass_counts(pred, gt)
    return _dice_from_counts(tp, fp, fn, empty or EmptyPolicy())


def per_class_dice(
    pred: np.ndarray,
    gt: np.ndarray,
    labels: Iterable[int],
    *,
    empty: EmptyPolicy | None = None,
) -> dict[int, MetricResult]:
    """One-vs-rest Dice of every label in ``labels``: ``{label: MetricResult}``.

    Class ``c``: ``2|P_c & G_c| / (|P_c| + |G_c|)`` with ``P_c = pred == c``. A class absent from
    both maps gets ``empty.both_empty`` (default NaN, tagged); absent from one map, the
    ``gt_empty`` / ``pred_empty`` rule (default 0). Counts come from one joint histogram of the
    two maps, so the cost does not grow with the number of labels.
    """
    pred, gt = check_label_maps(pred, gt)
    policy = empty or EmptyPolicy()
    counts = class_counts(pred, gt, labels)
    return {c: _dice_from_counts(tp_c, np_c - tp_c, ng_c - tp_c, policy) for c, (tp_c, np_c, ng_c) in counts.items()}


def class_counts(pred: np.ndarray, gt: np.ndarray, labels: Iterable[int]) -> dict[int, tuple[int, int, int]]:
    """``{label: (|P_c & G_c|, |P_c|, |G_c|)}`` voxel counts, from one joint histogram of the two
    maps (class by class only for label values above 255)."""
    given = list(labels)
    labels = [int(v) for v in given]
    fractional = [v for v, c in zip(given, labels) if v != c]
    if fractional:
        raise ValueError(f"labels hold {fractional[0]!r}; label values are integers")
    if labels and min(labels) < 0:
        raise ValueError(f"labels hold {min(labels)}; label values are 0 (background) and positive integers")
    n = int(max([0, *labels, int(pred.max(initial=0)), int(gt.max(initial=0))])) + 1
    if n <= 256:
        key = pred.ravel().astype(np.int64) * n
        # in place, in int64 whatever the maps' dtype (uint64 + int64 would be float64); values < 256
        np.add(key, gt.ravel(), out=key, dtype=np.int64, casting="unsafe")
        joint = np.bincount(key, minlength=n * n).reshape(n, n)
        n_pred, n_gt, tp = joint.sum(axis=1), joint.sum(axis=0), np.diagonal(joint)
        return {c: (int(tp[c]), int(n_pred[c]), int(n_gt[c])) for c in labels}
    counts: dict[int, tuple[int, int, int]] = {}
    for c in labels:
        p, g = pred == c, gt == c
        counts[c] = (int(np.count_nonzero(p & g)), int(np.count_nonzero(p)), int(np.count_nonzero(g)))
    return counts


GD_WEIGHTS = ("square", "simple", "uniform")


def generalized_dice(
    pred: np.ndarray,
    gt: np.ndarray,
    labels: Iterable[int],
    *,
    weighting: str = "square",
    empty: EmptyPolicy | None = None,
) -> MetricResult:
    """Generalized Dice (Crum et al. 2006; Sudre et al. 2017) of two integer label maps.

    ``GD = 2 sum_c w_c |P_c & G_c| / sum_c w_c (|P_c| + |G_c|)`` over the classes ``labels``
    (background 0 is not a class), with ``w_c = 1/|G_c|^2`` (``square``, MONAI's default),
    ``1/|G_c|`` (``simple``) or 1 (``uniform``). A class absent from the ground truth gets the
    largest weight of the present classes (1 if none), as MONAI's ``GeneralizedDiceScore``; with
    ``include_background=False`` MONAI gives the same number. Unitless, best 1, worst 0. Empty
    masks (no class voxel in either map, in one map): the policy's ``both_empty`` / ``gt_empty`` /
    ``pred_empty`` rule, tagged; the result is named ``generalized_dice``. ``ValueError`` for no
    labels, label 0 and labels that are not integers.
    """
    pred, gt = check_label_maps(pred, gt)
    if weighting not in GD_WEIGHTS:
        raise ValueError(f"weighting must be one of {GD_WEIGHTS}, got {weighting!r}")
    policy = empty or EmptyPolicy()
    labels = list(labels)
    if not labels:
        raise ValueError("generalized Dice needs at least one class label")
    if 0 in labels:
        raise ValueError("labels hold 0, the background, which is not a class of the generalized Dice")
    counts = class_counts(pred, gt, labels)
    tp = np.array([c[0] for c in counts.values()], dtype=np.float64)
    n_pred = np.array([c[1] for c in counts.values()], dtype=np.float64)
    n_gt = np.array([c[2] for c in counts.values()], dtype=np.float64)
    total_pred, total_gt = float(n_pred.sum()), float(n_gt.sum())
    situation = empty_situation(total_pred, total_gt)
    if situation:
        value, tag = metric_info("generalized_dice").empty_value(situation, policy)
        return MetricResult("generalized_dice", value, tag)
    with np.errstate(divide="ignore"):
        w = {"square": 1.0 / n_gt**2, "simple": 1.0 / n_gt, "uniform": np.ones_like(n_gt)}[weighting]
    absent = np.isinf(w)
    if absent.any():
        w[absent] = 0.0
        w[absent] = w.max() if w.max() > 0 else 1.0
    return MetricResult("generalized_dice", float(2.0 * np.sum(w * tp) / np.sum(w * (n_pred + n_gt))))
