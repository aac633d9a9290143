"""Panoptic Quality and Lesion-wise Dice on hand-computable cases and against a brute-force
reference built on scipy's component labelling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from segqc.metrics import instance_metrics, panoptic_metrics
from segqc.metrics.instance import component_overlap, lesion_dice, panoptic_quality


def _values(pred, gt, **kwargs) -> dict:
    return {r.metric: r.value for r in instance_metrics(pred, gt, ("pq", "lesion_dice"), **kwargs)}


def _box(shape, *slices) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slices)] = True
    return mask


SHAPE = (30, 30, 30)


def test_pq_and_lesion_dice_on_exact_match_partial_match_and_false_positive():
    gt_a = _box(SHAPE, slice(2, 6), slice(2, 6), slice(2, 6))  # 64 voxels
    gt_b = _box(SHAPE, slice(12, 17), slice(12, 17), slice(12, 17))  # 125 voxels
    pred_a = gt_a.copy()  # exact
    pred_b = _box(SHAPE, slice(12, 17), slice(12, 17), slice(12, 14))  # 50 voxels inside gt_b: IoU 0.4
    pred_fp = _box(SHAPE, slice(24, 26), slice(2, 4), slice(24, 26))  # 8 voxels, touches no GT
    gt, pred = gt_a | gt_b, pred_a | pred_b | pred_fp
    n_b, n_pb = gt_b.sum(), pred_b.sum()
    iou_b = n_pb / n_b
    assert iou_b == pytest.approx(0.4)

    # PQ: A matched (IoU 1); B unmatched (IoU 0.4 <= 0.5) -> FN, its prediction -> FP; blob -> FP
    tp, fp, fn = 1, 2, 1
    expected_pq = 1.0 / (tp + fp / 2 + fn / 2)
    # LD: A Dice 1; B compared with the overlapping prediction; FP = components touching no GT
    dice_b = 2 * n_pb / (n_b + n_pb)
    expected_ld = (1.0 + dice_b) / (2 + 1)

    got = _values(pred, gt)
    assert got["pq"] == pytest.approx(expected_pq, rel=1e-12)
    assert got["pq"] == pytest.approx(0.4, rel=1e-12)
    assert got["lesion_dice"] == pytest.approx(expected_ld, rel=1e-12)
    assert got["lesion_dice"] == pytest.approx(11 / 21, rel=1e-12)


def test_pq_matches_only_above_iou_one_half():
    gt = _box(SHAPE, slice(5, 10), slice(5, 10), slice(5, 9))  # 100 voxels
    half = _box(SHAPE, slice(5, 10), slice(5, 10), slice(5, 7))  # 50 voxels: IoU exactly 0.5
    more = _box(SHAPE, slice(5, 10), slice(5, 10), slice(5, 8))  # 75 voxels: IoU 0.75
    assert _values(half, gt)["pq"] == 0.0
    assert _values(more, gt)["pq"] == pytest.approx(0.75, rel=1e-12)  # one TP, no FP/FN


def test_lesion_dice_counts_one_prediction_spanning_two_gt_components_for_both():
    """The thesis' pitfall: one predicted component covering two GT lesions is a TP for each, its
    whole volume entering both Dice denominators; PQ finds no match (IoU <= 0.5 for each)."""
    g1 = _box(SHAPE, slice(5, 9), slice(5, 9), slice(5, 9))  # 64
    g2 = _box(SHAPE, slice(5, 9), slice(5, 9), slice(11, 15))  # 64, gap of 2 slices
    bridge = _box(SHAPE, slice(5, 9), slice(5, 9), slice(5, 15))  # 160 voxels, covers both
    got = _values(bridge, g1 | g2)
    p = bridge.sum()
    d1 = 2 * g1.sum() / (g1.sum() + p)
    d2 = 2 * g2.sum() / (g2.sum() + p)
    assert got["lesion_dice"] == pytest.approx((d1 + d2) / 2, rel=1e-12)
    assert got["lesion_dice"] == pytest.approx(2 * 64 / (64 + 160), rel=1e-12)
    assert got["pq"] == 0.0  # IoU 64/160 = 0.4 for both pairs


def test_lesion_dice_merges_several_predictions_overlapping_one_gt_component():
    gt = _box(SHAPE, slice(4, 12), slice(4, 12), slice(4, 12))  # 512
    p1 = _box(SHAPE, slice(4, 7), slice(4, 12), slice(4, 12))  # 192 inside
    p2 = _box(SHAPE, slice(9, 14), slice(4, 12), slice(4, 12))  # 320, 192 inside
    pred = p1 | p2
    got = _values(pred, gt)
    inside = np.sum(pred & gt)
    assert got["lesion_dice"] == pytest.approx(2 * inside / (gt.sum() + pred.sum()), rel=1e-12)
    assert got["pq"] == 0.0  # neither part reaches IoU 0.5: 2 FP + 1 FN


def _brute_force(pred, gt, structure):
    """Independent PQ / LD from scipy labels and explicit per-pair boolean masks."""
    gl, ng = ndimage.label(gt, structure=structure)
    pl, npred = ndimage.label(pred, structure=structure)
    iou_sum, matched_pred, tp = 0.0, set(), 0
    dice_sum, touching = 0.0, set()
    for i in range(1, ng + 1):
        g = gl == i
        overlapping = [j for j in range(1, npred + 1) if np.any(g & (pl == j))]
        touching.update(overlapping)
        for j in overlapping:
            p = pl == j
            iou = np.sum(g & p) / np.sum(g | p)
            if iou > 0.5:
                tp += 1
                iou_sum += iou
                matched_pred.add(j)
        union_pred = np.isin(pl, overlapping) if overlapping else np.zeros_like(g)
        dice_sum += 2 * np.sum(g & union_pred) / (g.sum() + union_pred.sum())
    fp, fn = npred - tp, ng - tp
    pq = iou_sum / (tp + fp / 2 + fn / 2)
    ld = dice_sum / (ng + (npred - len(touching)))
    return pq, ld


@pytest.mark.parametrize("connectivity, rank", [(6, 1), (26, 3)])
def test_pq_and_lesion_dice_match_brute_force_on_random_lesions(connectivity, rank):
    rng = np.random.default_rng(60 + connectivity)
    shape = (40, 40, 24)
    for _ in range(4):
        field = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
        field /= field.std()
        gt = field > 1.2
        noisy = ndimage.gaussian_filter(field + 0.8 * rng.standard_normal(shape), 0.7)
        pred = noisy > 1.0 * noisy.std()
        got = _values(pred, gt, connectivity=connectivity)
        pq, ld = _brute_force(pred, gt, ndimage.generate_binary_structure(3, rank))
        assert got["pq"] == pytest.approx(pq, rel=1e-12)
        assert got["lesion_dice"] == pytest.approx(ld, rel=1e-12)
        assert 0 < got["pq"] < 1 and 0 < got["lesion_dice"] < 1


def test_component_overlap_counts_shared_voxels_per_pair():
    gt = _box(SHAPE, slice(2, 6), slice(2, 6), slice(2, 6)) | _box(SHAPE, slice(10, 14), slice(2, 6), slice(2, 6))
    pred = _box(SHAPE, slice(4, 12), slice(3, 5), slice(3, 5))  # one bar through both
    overlap = component_overlap(pred, gt)
    assert overlap.n_gt == 2 and overlap.n_pred == 1
    assert sorted(overlap.intersection.tolist()) == [2 * 2 * 2, 2 * 2 * 2]
    assert overlap.pred_sizes[1] == 8 * 2 * 2
    assert panoptic_quality(overlap).value == 0.0
    assert lesion_dice(overlap).value == pytest.approx(2 * 8 / (64 + 32), rel=1e-12)


def test_identical_multi_lesion_masks_score_one():
    rng = np.random.default_rng(9)
    gt = ndimage.gaussian_filter(rng.standard_normal((30, 30, 30)), 1.5) > 0.4
    got = _values(gt, gt.copy())
    assert got == {"pq": 1.0, "lesion_dice": 1.0}


def _instance_map() -> np.ndarray:
    ids = np.zeros((12, 12, 12), np.int32)
    ids[1:4, 1:4, 1:4] = 1
    ids[6:9, 6:9, 6:9] = 2
    return ids


@pytest.mark.parametrize(
    ("pred", "gt", "match"),
    [
        (np.zeros((5, 5), int), _instance_map(), r"pred shape \(5, 5\) differs from gt shape \(12, 12, 12\)"),
        (np.zeros((12, 12, 12)), _instance_map().astype(float), "integer dtype"),
        (np.zeros(12, int), np.zeros(12, int), "2D or 3D"),
    ],
)
def test_panoptic_metrics_checks_the_maps_before_the_empty_map_rule(pred, gt, match):
    """Once: an empty prediction of another shape, dimension or dtype got the empty-map result
    (PQ 0, tagged pred_empty:worst) instead of an error."""
    with pytest.raises(ValueError, match=match):
        panoptic_metrics(pred, gt)


def test_metrics_the_instance_functions_do_not_compute_are_refused_with_what_they_compute():
    """Once: panoptic_metrics(..., ("dice",)) was an AttributeError and instance_metrics a KeyError."""
    ids = _instance_map()
    with pytest.raises(ValueError, match=r"panoptic_metrics does not compute dice; supported: pq, sq, rq$"):
        panoptic_metrics(ids, ids, ("dice",))
    with pytest.raises(ValueError, match=r"instance_metrics does not compute dice; supported: pq, sq, rq, lesion_dice"):
        instance_metrics(ids, ids, ("dice",), instance_maps=True)
    with pytest.raises(ValueError, match="unknown metric 'dize'"):
        instance_metrics(ids, ids, ("dize",))


def test_a_bare_metric_name_is_one_instance_metric():
    """Once: panoptic_metrics(I, I, "pq") iterated over the letters p and q."""
    ids = _instance_map()
    assert [(r.metric, r.value) for r in panoptic_metrics(ids, ids, "pq")] == [("pq", 1.0)]
    assert [(r.metric, r.value) for r in instance_metrics(ids, ids, "lesion_dice", instance_maps=True)] == [
        ("lesion_dice", 1.0)]


@pytest.mark.parametrize("ids", [(1, 5), (3, 7), (-2, 9), (2**40, 3)])
def test_lesion_dice_of_instance_maps_does_not_need_consecutive_ids(ids):
    """Once: instance ids {1, 5} gave lesion_dice NaN (and a RuntimeWarning) for identical maps."""
    ids_map = np.where(_instance_map() == 1, ids[0], np.where(_instance_map() == 2, ids[1], 0)).astype(np.int64)
    shifted = ids_map.copy()
    shifted[1, 1, 1] = 0  # one voxel of the first instance missing: 2*26/(27+26) for it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = instance_metrics(ids_map, ids_map, ("pq", "lesion_dice"), instance_maps=True)
        got = instance_metrics(shifted, ids_map, ("lesion_dice",), instance_maps=True)
    assert [r.value for r in same] == [1.0, 1.0]
    assert got[0].value == pytest.approx((2 * 26 / 53 + 1.0) / 2, rel=1e-14)


@pytest.mark.parametrize("instance_maps", [False, True])
def test_instance_metrics_refuses_maps_of_different_shapes_for_every_metric(instance_maps):
    """Once: with lesion_dice alone the shapes were never compared (lesion_dice 1.0 for masks of
    different shapes, 0.11 for instance maps)."""
    ids = _instance_map()
    pred, gt = (ids, ids[:, :-1]) if instance_maps else (ids > 0, (ids > 0)[:-1])
    with pytest.raises(ValueError, match="pred shape .* differs from gt shape"):
        instance_metrics(pred, gt, ("lesion_dice",), instance_maps=instance_maps)
