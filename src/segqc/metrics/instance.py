"""Instance-level metrics over connected components (or the instances of instance maps): Panoptic
Quality with its SQ and RQ factors, and Lesion-wise Dice.

* Panoptic Quality (Kirillov et al.): instances are matched one to one by IoU (or Dice) above a
  threshold (0.5 by default, ``>`` or ``>=``; Hungarian matching, see
  :mod:`segqc.metrics.panoptic`); ``SQ`` = mean IoU of the matches, ``RQ = TP / (TP + FP/2 +
  FN/2)``, ``PQ = SQ x RQ``. Masks are split into connected components first; instance maps
  (``pred_ids`` / ``gt_ids``) are used as they are, so touching instances stay apart. With no
  match, SQ takes the empty-mask policy's ``pred_empty`` rule value (worst by default).
* Lesion-wise Dice (BraTS 2023, thesis eq. 16): every ground-truth component is compared with the
  union of the predicted components that overlap it; unmatched ground-truth components score 0;
  ``LD = sum(Dice_i) / (n_gt + FP)`` with FP the predicted components that overlap no
  ground-truth component. This is the hyper-parameter-free form: no ground-truth dilation and no
  minimum lesion size (BraTS sets both per task).

Empty masks follow the :class:`~segqc.metrics.registry.EmptyPolicy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from segqc.metrics import panoptic
from segqc.metrics.binary import MetricResult, MetricSettings
from segqc.metrics.components import label_components
from segqc.metrics.counts import chunked_bincount
from segqc.metrics.masks import mask_pair
from segqc.metrics.registry import (
    INSTANCE_METRICS,
    EmptyPolicy,
    check_metric_names,
    empty_situation,
    metric_info,
    resolve_empty,
)

#: What :func:`panoptic_metrics` computes.
PANOPTIC_METRICS = ("pq", "sq", "rq")


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
    gt_labels, _ = label_components(gt, connectivity=connectivity)
    pred_labels, _ = label_components(pred, connectivity=connectivity)
    return _overlap_of_labels(pred_labels, gt_labels)


def _empty(name: str, overlap: ComponentOverlap, policy: EmptyPolicy) -> MetricResult | None:
    situation = empty_situation(overlap.n_pred, overlap.n_gt)
    if not situation:
        return None
    value, tag = metric_info(name).empty_value(situation, policy)
    return MetricResult(name, value, tag)


def panoptic_quality(overlap: ComponentOverlap, *, empty: EmptyPolicy | None = None,
                     policy: EmptyPolicy | None = None) -> MetricResult:
    """PQ with IoU > 0.5 matching of two component labellings (the unique matching); ``overlap``
    from :func:`component_overlap`. Unitless, best 1. No component in either labelling ->
    ``empty.both_empty`` (default NaN); in one only -> ``gt_empty`` / ``pred_empty`` (default 0),
    tagged. ``policy`` is the deprecated old name of ``empty``."""
    empty_result = _empty("pq", overlap, resolve_empty(empty, policy, "panoptic_quality"))
    if empty_result is not None:
        return empty_result
    g, p = overlap.pairs[:, 0], overlap.pairs[:, 1]
    union = overlap.gt_sizes[g] + overlap.pred_sizes[p] - overlap.intersection
    iou = overlap.intersection / union
    matched = iou > 0.5
    tp = int(np.count_nonzero(matched))
    fp, fn = overlap.n_pred - tp, overlap.n_gt - tp
    return MetricResult("pq", float(iou[matched].sum() / (tp + 0.5 * fp + 0.5 * fn)))


def lesion_dice(overlap: ComponentOverlap, *, empty: EmptyPolicy | None = None,
                policy: EmptyPolicy | None = None) -> MetricResult:
    """Lesion-wise Dice (see module docstring); ``overlap`` from :func:`component_overlap`.
    Unitless, best 1. Empty labellings as :func:`panoptic_quality`."""
    empty_result = _empty("lesion_dice", overlap, resolve_empty(empty, policy, "lesion_dice"))
    if empty_result is not None:
        return empty_result
    g, p = overlap.pairs[:, 0], overlap.pairs[:, 1]
    hit = np.bincount(g, weights=overlap.intersection, minlength=overlap.n_gt + 1)  # |G_i ∩ P|
    matched_pred_volume = np.bincount(g, weights=overlap.pred_sizes[p], minlength=overlap.n_gt + 1)
    dice_i = 2.0 * hit[1:] / (overlap.gt_sizes[1:] + matched_pred_volume[1:])
    fp = overlap.n_pred - np.unique(p).size
    return MetricResult("lesion_dice", float(dice_i.sum() / (overlap.n_gt + fp)))


def panoptic_metrics(
    pred_ids: np.ndarray,
    gt_ids: np.ndarray,
    metrics: Sequence[str] = ("pq", "sq", "rq"),
    *,
    settings: MetricSettings | None = None,
) -> list[MetricResult]:
    """PQ, SQ and RQ of two instance maps (every non-zero value one instance), matched with the
    ``match_*`` options of ``settings``; empty-mask policy of ``settings.empty`` when a map has no
    instance; SQ of a matching without a match takes the ``pred_empty`` rule (worst by default).
    ``metrics``: names of :data:`PANOPTIC_METRICS` (a bare string is one name)."""
    settings = settings or MetricSettings()
    metrics = check_metric_names(metrics, PANOPTIC_METRICS, "panoptic_metrics")
    pred_ids, gt_ids = panoptic._check_instance_maps(pred_ids, gt_ids)
    n_pred, n_gt = int(np.count_nonzero(pred_ids)), int(np.count_nonzero(gt_ids))
    situation = empty_situation(n_pred, n_gt)
    if situation:
        return [MetricResult(name, *metric_info(name).empty_value(situation, settings.empty)) for name in metrics]
    scores = panoptic.panoptic_quality(pred_ids, gt_ids, criterion=settings.match_criterion,  # type: ignore[arg-type]
                                       threshold=settings.match_threshold, inclusive=settings.match_inclusive,
                                       method=settings.match_method)  # type: ignore[arg-type]
    out = []
    for name in metrics:
        value = float(getattr(scores, name))
        if name == "sq" and np.isnan(value):  # instances on both sides, none matched
            value, tag = metric_info("sq").empty_value("pred_empty", settings.empty)
            out.append(MetricResult(name, value, "no_match:" + tag.split(":")[1]))
        else:
            out.append(MetricResult(name, value))
    return out


def instance_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    metrics: Sequence[str] = ("pq", "lesion_dice"),
    *,
    connectivity: int = 26,
    empty: EmptyPolicy | None = None,
    settings: MetricSettings | None = None,
    instance_maps: bool = False,
    policy: EmptyPolicy | None = None,
) -> list[MetricResult]:
    """The requested instance metrics (``pq``, ``sq``, ``rq``, ``lesion_dice``; a bare string is one
    name). Masks (same-shape 2D/3D) are labelled into connected components once (``connectivity``
    6/18/26 in 3D, 4/8 in 2D, as :func:`~segqc.metrics.components.label_components`); with
    ``instance_maps`` the arrays are integer instance maps already (any ids; 0 = background).
    ``settings`` gives the matching options and the empty-mask policy (``empty`` overrides it;
    ``policy`` is the deprecated old name of ``empty``).
    All values are unitless fractions (best 1). Empty masks: no object in either -> the policy's
    ``both_empty`` (default NaN); objects in one only -> ``gt_empty`` / ``pred_empty`` (default
    worst, 0); each tagged."""
    settings = settings or MetricSettings()
    if empty is not None or policy is not None:
        settings = replace(settings, empty=resolve_empty(empty, policy, "instance_metrics"))
    metrics = check_metric_names(metrics, INSTANCE_METRICS, "instance_metrics")
    if instance_maps:
        pred_ids, gt_ids = panoptic._check_instance_maps(pred, gt)
    else:
        pred, gt = mask_pair(pred, gt)
        gt_ids = label_components(gt, connectivity=connectivity)[0]
        pred_ids = label_components(pred, connectivity=connectivity)[0]
    results: dict[str, MetricResult] = {}
    wanted = [m for m in metrics if m in PANOPTIC_METRICS]
    if wanted:
        for r in panoptic_metrics(pred_ids, gt_ids, wanted, settings=settings):
            results[r.metric] = r
    if "lesion_dice" in metrics:
        if instance_maps:  # the overlap table counts ids 1..n
            pred_ids, gt_ids = _consecutive_ids(pred_ids), _consecutive_ids(gt_ids)
        overlap = _overlap_of_labels(pred_ids, gt_ids)
        results["lesion_dice"] = lesion_dice(overlap, empty=settings.empty)
    return [results[m] for m in metrics]


def _consecutive_ids(ids_map: np.ndarray) -> np.ndarray:
    """An instance map with its ids renumbered 1..n in their sorted order (the map itself when
    they are 1..n already); 0 stays background."""
    flat = ids_map.reshape(-1)
    ids, _ = panoptic._ids_and_sizes(flat)
    if ids.size == 0 or (ids[0] == 1 and ids[-1] == ids.size):
        return ids_map
    out = np.zeros(flat.size, dtype=np.int64)
    nonzero = np.flatnonzero(flat)
    out[nonzero] = np.searchsorted(ids, flat[nonzero].astype(np.int64)) + 1
    return out.reshape(ids_map.shape)


def _overlap_of_labels(pred_ids: np.ndarray, gt_ids: np.ndarray) -> ComponentOverlap:
    """:class:`ComponentOverlap` of two labellings with consecutive ids 1..n."""
    n_pred, n_gt = int(pred_ids.max(initial=0)), int(gt_ids.max(initial=0))
    pred_index = np.flatnonzero(pred_ids)
    g = gt_ids.reshape(-1)[pred_index].astype(np.int64)
    shared = g > 0
    g = g[shared]
    p = pred_ids.reshape(-1)[pred_index[shared]].astype(np.int64)
    key, counts = np.unique(g * (n_pred + 1) + p, return_counts=True)
    return ComponentOverlap(
        pairs=np.stack([key // (n_pred + 1), key % (n_pred + 1)], axis=1),
        intersection=counts,
        gt_sizes=chunked_bincount(gt_ids, minlength=n_gt + 1),
        pred_sizes=chunked_bincount(pred_ids, minlength=n_pred + 1),
    )
