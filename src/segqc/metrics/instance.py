"""Instance-level metrics over connected components: Panoptic Quality and Lesion-wise Dice.

Both are reported for comparison with CC-Metrics, as in the thesis (section 5.1.4).

* Panoptic Quality (Kirillov et al.): predicted and ground-truth components match when their IoU
  exceeds 0.5 (which makes the matching unique); ``PQ = sum(IoU of matches) / (TP + FP/2 + FN/2)``.
* Lesion-wise Dice (BraTS 2023, thesis eq. 16): every ground-truth component is compared with the
  union of the predicted components that overlap it; unmatched ground-truth components score 0;
  ``LD = sum(Dice_i) / (n_gt + FP)`` with FP the predicted components that overlap no
  ground-truth component. This is the hyper-parameter-free form: no ground-truth dilation and no
  minimum lesion size (BraTS sets both per task).

Empty masks follow the :class:`~segqc.metrics.registry.EmptyPolicy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segqc.metrics.binary import MetricResult
from segqc.metrics.components import label_components
from segqc.metrics.registry import EmptyPolicy, metric_info


@dataclass(frozen=True)
class ComponentOverlap:
    """Overlap of ground-truth and predicted components.

    ``pairs``: (k, 2) array of (gt id, pred id) pairs that share voxels; ``intersection``: voxels
    shared by each pair; ``gt_sizes`` / ``pred_sizes``: voxels per component (index 0 unused).
    """

    pairs: np.ndarray
    intersection: np.ndarray
    gt_sizes: np.ndarray
    pred_sizes: np.ndarray

    @property
    def n_gt(self) -> int:
        return self.gt_sizes.size - 1

    @property
    def n_pred(self) -> int:
        return self.pred_sizes.size - 1


def component_overlap(pred: np.ndarray, gt: np.ndarray, *, connectivity: int = 26) -> ComponentOverlap:
    """Label both masks and count the voxels each (gt component, pred component) pair shares."""
    gt_labels, n_gt = label_components(gt, connectivity=connectivity)
    pred_labels, n_pred = label_components(pred, connectivity=connectivity)
    pred_index = np.flatnonzero(pred_labels)
    g = gt_labels.reshape(-1)[pred_index].astype(np.int64)
    shared = g > 0
    g = g[shared]
    p = pred_labels.reshape(-1)[pred_index[shared]].astype(np.int64)
    key, counts = np.unique(g * (n_pred + 1) + p, return_counts=True)
    pairs = np.stack([key // (n_pred + 1), key % (n_pred + 1)], axis=1)
    return ComponentOverlap(
        pairs=pairs,
        intersection=counts,
        gt_sizes=np.bincount(gt_labels.reshape(-1), minlength=n_gt + 1),
        pred_sizes=np.bincount(pred_labels.reshape(-1), minlength=n_pred + 1),
    )


def _empty(name: str, overlap: ComponentOverlap, policy: EmptyPolicy) -> MetricResult | None:
    if overlap.n_gt and overlap.n_pred:
        return None
    if not (overlap.n_gt or overlap.n_pred):
        situation = "both_empty"
    else:
        situation = "gt_empty" if not overlap.n_gt else "pred_empty"
    value, tag = metric_info(name).empty_value(situation, policy)
    return MetricResult(name, value, tag)


def panoptic_quality(overlap: ComponentOverlap, *, policy: EmptyPolicy | None = None) -> MetricResult:
    """PQ with IoU > 0.5 matching (see module docstring)."""
    policy = policy or EmptyPolicy()
    empty = _empty("pq", overlap, policy)
    if empty is not None:
        return empty
    g, p = overlap.pairs[:, 0], overlap.pairs[:, 1]
    union = overlap.gt_sizes[g] + overlap.pred_sizes[p] - overlap.intersection
    iou = overlap.intersection / union
    matched = iou > 0.5
    tp = int(np.count_nonzero(matched))
    fp, fn = overlap.n_pred - tp, overlap.n_gt - tp
    return MetricResult("pq", float(iou[matched].sum() / (tp + 0.5 * fp + 0.5 * fn)))


def lesion_dice(overlap: ComponentOverlap, *, policy: EmptyPolicy | None = None) -> MetricResult:
    """Lesion-wise Dice (see module docstring)."""
    policy = policy or EmptyPolicy()
    empty = _empty("lesion_dice", overlap, policy)
    if empty is not None:
        return empty
    g, p = overlap.pairs[:, 0], overlap.pairs[:, 1]
    hit = np.bincount(g, weights=overlap.intersection, minlength=overlap.n_gt + 1)  # |G_i ∩ P|
    matched_pred_volume = np.bincount(g, weights=overlap.pred_sizes[p], minlength=overlap.n_gt + 1)
    dice_i = 2.0 * hit[1:] / (overlap.gt_sizes[1:] + matched_pred_volume[1:])
    fp = overlap.n_pred - np.unique(p).size
    return MetricResult("lesion_dice", float(dice_i.sum() / (overlap.n_gt + fp)))


def instance_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    metrics: Sequence[str] = ("pq", "lesion_dice"),
    *,
    connectivity: int = 26,
    policy: EmptyPolicy | None = None,
) -> list[MetricResult]:
    """The requested instance metrics (``pq``, ``lesion_dice``) from one component labelling."""
    overlap = component_overlap(pred, gt, connectivity=connectivity)
    functions = {"pq": panoptic_quality, "lesion_dice": lesion_dice}
    return [functions[name](overlap, policy=policy) for name in metrics]
