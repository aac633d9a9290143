"""Panoptic Quality (Kirillov et al., CVPR 2019) of instance maps, with configurable matching.

Inputs are *instance maps*: two integer arrays of the same 2D or 3D shape in which every distinct
non-zero value is one instance and 0 is background. Instances are taken as they are: two touching
instances with different ids stay two instances, and an id whose voxels are scattered is still one
instance (no connected-component analysis is done here). Plain binary masks are turned into
instance maps first with :func:`segqc.metrics.components.label_components`.

Matching rules (all areas/volumes are voxel counts; IoU and Dice are unitless, in [0, 1]):

* For a predicted instance P and a ground-truth instance G, ``IoU = |P ∩ G| / |P ∪ G|`` and
  ``Dice = 2 |P ∩ G| / (|P| + |G|)``. Only pairs that share at least one voxel are candidates.
* A pair is *eligible* when its criterion value (IoU or Dice) is ``> threshold``
  (``inclusive=False``, the convention of Kirillov et al. and MONAI) or ``>= threshold``
  (``inclusive=True``, panoptica's default).
* ``method="hungarian"``: the matches are the one-to-one matching among eligible pairs with the
  largest total criterion value (``scipy.optimize.linear_sum_assignment``, run separately on each
  connected group of eligible pairs, so the cost is driven by the size of those groups, not by the
  number of instances).
* ``method="unique"``: every eligible pair is a match. This is only valid where no instance can
  have two eligible partners: IoU > 0.5 (Kirillov et al., Theorem 1), i.e. an IoU threshold
  ``> 0.5``, or ``== 0.5`` with ``inclusive=False``; for Dice the equivalent bound is 2/3
  (``Dice = 2 IoU / (1 + IoU)``). Other settings raise ``ValueError`` (at IoU >= 0.5 exactly, one
  instance split into two halves has two partners of IoU 0.5 each). Where it is valid it gives the
  same matches as ``"hungarian"``.

Scores, with TP = number of matches, FP = unmatched predicted instances, FN = unmatched
ground-truth instances: ``SQ`` = mean IoU of the matches (whatever the matching criterion),
``RQ = TP / (TP + FP/2 + FN/2)``, ``PQ = SQ * RQ``; ``sq_dice`` = mean Dice of the matches.
Empty cases: no instance in either map -> PQ, SQ, RQ (and ``sq_dice``) are NaN, for the caller's
empty-mask policy to decide; instances but no match -> PQ = RQ = 0 and SQ = ``sq_dice`` = NaN (a
mean over no matches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from segqc.metrics.counts import value_counts

MatchCriterion = Literal["iou", "dice"]
MatchMethod = Literal["hungarian", "unique", "monai"]

#: Dice value equivalent to IoU 0.5 (``Dice = 2 IoU / (1 + IoU)``), the bound of ``method="unique"``.
DICE_OF_IOU_HALF = 2.0 / 3.0


class InstanceOverlaps(NamedTuple):
    """Sparse overlap table of two instance maps (all counts in voxels, ids as int64).

    ``pairs``: (k, 2) array of ``(pred id, gt id)``, one row per pair sharing at least one voxel,
    sorted by pred id then gt id; ``intersection``: (k,) voxels shared by each pair;
    ``pred_sizes`` / ``gt_sizes``: (n, 2) arrays of ``(id, voxels)``, one row per instance, sorted
    by id (background 0 excluded).
    """

    pairs: np.ndarray
    intersection: np.ndarray
    pred_sizes: np.ndarray
    gt_sizes: np.ndarray


@dataclass(frozen=True)
class InstanceMatch:
    """One-to-one matches between predicted and ground-truth instances, sorted by gt id.

    ``pred_ids`` / ``gt_ids``: (k,) ids of the matched instances (int64); ``iou`` / ``dice``: (k,)
    IoU and Dice of each match, whichever criterion was used for matching; ``n_pred`` / ``n_gt``:
    number of instances in each map (matched or not).
    """

    pred_ids: np.ndarray
    gt_ids: np.ndarray
    iou: np.ndarray
    dice: np.ndarray
    n_pred: int
    n_gt: int

    @property
    def tp(self) -> int:
        return int(self.pred_ids.size)


@dataclass(frozen=True)
class PanopticScores:
    """Panoptic scores of one instance matching (see the module docstring for the rules).

    ``pq``, ``sq``, ``rq``, ``sq_dice``: unitless in [0, 1] (NaN where undefined: no instances at
    all, or for ``sq``/``sq_dice`` no match); ``tp``, ``fp``, ``fn``: instance counts.
    """

    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int
    sq_dice: float


# -- overlaps -------------------------------------------------------------------------------------


def _check_instance_maps(pred_ids: np.ndarray, gt_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_ids, gt_ids = np.asarray(pred_ids), np.asarray(gt_ids)
    if pred_ids.shape != gt_ids.shape:
        raise ValueError(f"pred shape {pred_ids.shape} differs from gt shape {gt_ids.shape}")
    if pred_ids.ndim not in (2, 3):
        raise ValueError(f"instance maps must be 2D or 3D, got {pred_ids.ndim}D")
    for name, arr in (("pred", pred_ids), ("gt", gt_ids)):
        if arr.dtype != bool and arr.dtype.kind not in "iu":
            raise ValueError(f"{name} instance map must have an integer dtype, got {arr.dtype}")
    return pred_ids, gt_ids


def _ids_and_sizes(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted non-zero ids of a flat label array and their voxel counts (both int64)."""
    ids, sizes = value_counts(flat)
    keep = ids != 0
    return ids[keep], sizes[keep]


class _Table(NamedTuple):
    """Overlap table in compact indices: instance i of a map is ``ids[i]``."""

    pred_ids: np.ndarray
    pred_sizes: np.ndarray
    gt_ids: np.ndarray
    gt_sizes: np.ndarray
    pair_pred: np.ndarray  # compact pred index of each overlapping pair
    pair_gt: np.ndarray  # compact gt index of each overlapping pair
    intersection: np.ndarray


def _overlap_table(pred_ids: np.ndarray, gt_ids: np.ndarray) -> _Table:
    pred_ids, gt_ids = _check_instance_maps(pred_ids, gt_ids)
    p_flat, g_flat = pred_ids.reshape(-1), gt_ids.reshape(-1)
    p_ids, p_sizes = _ids_and_sizes(p_flat)
    g_ids, g_sizes = _ids_and_sizes(g_flat)
    both = (p_flat != 0) & (g_flat != 0)
    # compact indices of the overlapping voxels only (ids are sorted, so searchsorted finds them)
    pi = np.searchsorted(p_ids, p_flat[both].astype(np.int64))
    gi = np.searchsorted(g_ids, g_flat[both].astype(np.int64))
    n_g = max(g_ids.size, 1)
    key, intersection = np.unique(pi * n_g + gi, return_counts=True)
    return _Table(
        pred_ids=p_ids,
        pred_sizes=p_sizes,
        gt_ids=g_ids,
        gt_sizes=g_sizes,
        pair_pred=key // n_g,
        pair_gt=key % n_g,
        intersection=intersection.astype(np.int64),
    )


def instance_overlaps(pred_ids: np.ndarray, gt_ids: np.ndarray) -> InstanceOverlaps:
    """Voxels shared by every (predicted, ground-truth) instance pair that overlaps, and instance sizes.

    One pass over the arrays (``np.bincount`` / ``np.unique``), no loop over instances; only pairs
    sharing at least one voxel are listed. See :class:`InstanceOverlaps` for the layout.
    """
    t = _overlap_table(pred_ids, gt_ids)
    return InstanceOverlaps(
        pairs=np.stack([t.pred_ids[t.pair_pred], t.gt_ids[t.pair_gt]], axis=1).reshape(-1, 2),
        intersection=t.intersection,
        pred_sizes=np.stack([t.pred_ids, t.pred_sizes], axis=1).reshape(-1, 2),
        gt_sizes=np.stack([t.gt_ids, t.gt_sizes], axis=1).reshape(-1, 2),
    )


# -- matching -------------------------------------------------------------------------------------


def _check_options(criterion: str, threshold: float, inclusive: bool, method: str) -> None:
    if criterion not in ("iou", "dice"):
        raise ValueError(f"criterion must be 'iou' or 'dice', got {criterion!r}")
    if method not in ("hungarian", "unique", "monai"):
        raise ValueError(f"method must be 'hungarian', 'unique' or 'monai', got {method!r}")
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if method == "unique":
        bound = 0.5 if criterion == "iou" else DICE_OF_IOU_HALF
        if threshold < bound or (threshold == bound and inclusive):
            rule = ">=" if inclusive else ">"
            raise ValueError(
                f"method 'unique' needs matches that cannot share an instance: {criterion} {rule} {threshold} allows "
                f"several partners per instance (use {criterion} > {bound:.4g}, or method 'hungarian')"
            )


def _max_weight_matching(rows: np.ndarray, cols: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Indices of the edges of a maximum-total-weight one-to-one matching (all weights > 0).

    The bipartite graph is split into connected groups; a group of one edge is matched as it is,
    larger groups are solved with ``linear_sum_assignment`` on their own small dense matrix.
    """
    n_edges = rows.size
    if n_edges == 0:
        return np.zeros(0, np.intp)
    r_nodes, r_local = np.unique(rows, return_inverse=True)
    c_nodes, c_local = np.unique(cols, return_inverse=True)
    n_r = r_nodes.size
    graph = coo_matrix((np.ones(n_edges, np.int8), (r_local, n_r + c_local)), shape=(n_r + c_nodes.size,) * 2)
    _, node_group = connected_components(graph, directed=False)
    edge_group = node_group[r_local]
    edges_per_group = np.bincount(edge_group)
    single = edges_per_group[edge_group] == 1
    chosen = [np.flatnonzero(single)]
    multi = np.flatnonzero(~single)
    if multi.size:
        multi = multi[np.argsort(edge_group[multi], kind="stable")]
        bounds = np.flatnonzero(np.diff(edge_group[multi])) + 1
        for edges in np.split(multi, bounds):
            gr, gr_local = np.unique(r_local[edges], return_inverse=True)
            gc, gc_local = np.unique(c_local[edges], return_inverse=True)
            value = np.zeros((gr.size, gc.size))
            value[gr_local, gc_local] = weight[edges]
            edge_at = np.full((gr.size, gc.size), -1, np.intp)
            edge_at[gr_local, gc_local] = edges
            # maximise the total weight: minimise its negation; non-edges weigh 0 and are dropped
            ri, ci = linear_sum_assignment(-value)
            picked = edge_at[ri, ci]
            chosen.append(picked[picked >= 0])
    return np.sort(np.concatenate(chosen))


def match_instances(
    pred_ids: np.ndarray,
    gt_ids: np.ndarray,
    *,
    criterion: MatchCriterion = "iou",
    threshold: float = 0.5,
    inclusive: bool = False,
    method: MatchMethod = "hungarian",
) -> InstanceMatch:
    """Match the instances of two instance maps one to one (rules in the module docstring).

    ``criterion``: ``"iou"`` or ``"dice"``; ``threshold`` in [0, 1]; a pair is eligible when its
    criterion is ``> threshold`` (``inclusive=False``) or ``>= threshold`` (``inclusive=True``).
    ``method``: ``"hungarian"`` (maximum total criterion among eligible pairs), ``"unique"``
    (every eligible pair; ``ValueError`` unless the threshold guarantees uniqueness: IoU > 0.5,
    Dice > 2/3, or exactly those bounds with ``inclusive=False``) or ``"monai"`` (MONAI's rule:
    the maximum-total matching over every overlapping pair, then the matches failing the threshold
    dropped; differs from ``hungarian`` only below IoU 0.5).
    """
    _check_options(criterion, threshold, inclusive, method)
    t = _overlap_table(pred_ids, gt_ids)
    p_size = t.pred_sizes[t.pair_pred]
    g_size = t.gt_sizes[t.pair_gt]
    inter = t.intersection
    iou = inter / (p_size + g_size - inter)
    dice = 2.0 * inter / (p_size + g_size)
    value = iou if criterion == "iou" else dice
    passes = value >= threshold if inclusive else value > threshold
    eligible = np.flatnonzero(passes)
    if method == "unique":  # _check_options made sure that no instance has two eligible partners
        chosen = eligible
    elif method == "monai":  # assign over every overlapping pair first, then drop the matches below the threshold
        every = np.flatnonzero(value > 0)
        chosen = every[_max_weight_matching(t.pair_pred[every], t.pair_gt[every], value[every])]
        chosen = chosen[passes[chosen]]
    else:
        chosen = eligible[_max_weight_matching(t.pair_pred[eligible], t.pair_gt[eligible], value[eligible])]
    order = chosen[np.argsort(t.pair_gt[chosen], kind="stable")]
    return InstanceMatch(
        pred_ids=t.pred_ids[t.pair_pred[order]],
        gt_ids=t.gt_ids[t.pair_gt[order]],
        iou=iou[order].astype(np.float64),
        dice=dice[order].astype(np.float64),
        n_pred=int(t.pred_ids.size),
        n_gt=int(t.gt_ids.size),
    )


# -- scores ---------------------------------------------------------------------------------------


def panoptic_scores(match: InstanceMatch) -> PanopticScores:
    """PQ, SQ, RQ, TP, FP, FN and ``sq_dice`` of a matching (rules and empty cases in the module docstring)."""
    tp = int(match.pred_ids.size)
    fp, fn = match.n_pred - tp, match.n_gt - tp
    if match.n_pred == 0 and match.n_gt == 0:
        nan = float("nan")
        return PanopticScores(pq=nan, sq=nan, rq=nan, tp=0, fp=0, fn=0, sq_dice=nan)
    rq = tp / (tp + 0.5 * fp + 0.5 * fn)
    if tp == 0:
        return PanopticScores(pq=0.0, sq=float("nan"), rq=0.0, tp=0, fp=fp, fn=fn, sq_dice=float("nan"))
    sq = float(np.mean(match.iou))
    return PanopticScores(pq=sq * rq, sq=sq, rq=rq, tp=tp, fp=fp, fn=fn, sq_dice=float(np.mean(match.dice)))


def panoptic_quality(
    pred_ids: np.ndarray,
    gt_ids: np.ndarray,
    *,
    criterion: MatchCriterion = "iou",
    threshold: float = 0.5,
    inclusive: bool = False,
    method: MatchMethod = "hungarian",
) -> PanopticScores:
    """Panoptic scores of two instance maps: :func:`match_instances` then :func:`panoptic_scores`.

    The defaults (IoU > 0.5) are the definition of Kirillov et al.
    """
    match = match_instances(
        pred_ids, gt_ids, criterion=criterion, threshold=threshold, inclusive=inclusive, method=method
    )
    return panoptic_scores(match)
