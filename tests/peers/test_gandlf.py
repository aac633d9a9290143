"""Parity with GaNDLF 0.1.5 (PyPI ``GANDLF``, wheel ``gandlf-0.1.5-py3-none-any.whl``; not installable
here, so its definitions are worked out by hand and, as a cross-check, rewritten from their
definition with scipy).

Read: ``GANDLF/metrics/segmentation.py`` (``__surface_distances``, ``_nsd_base``,
``_calculator_generic_all_surface_distances``, ``hd95``, ``hd100``, ``nsd``,
``_calculator_sensitivity_specificity``, ``_calculator_jaccard``), ``GANDLF/losses/segmentation.py``
(``dice``) and ``GANDLF/cli/generate_metrics.py`` (how spacing is passed).

* Surface: medpy's recipe, ``mask ^ binary_erosion(mask, generate_binary_structure(ndim, 1))``: the
  mask voxels with a face neighbour outside, the image edge counting as outside -> segqc's
  ``surface="voxel"``. Distances: ``distance_transform_edt(~other_border, sampling=spacing)`` read at
  the border voxels: exact Euclidean distances in mm between border voxel centres.
* NSD (``_nsd_base``): with a = pred -> gt and b = gt -> pred distances,
  (tp_a + tp_b)/(tp_a + tp_b + fp_a + fn_b) where tp_a, fp_a are the fractions of a within / beyond
  the threshold (likewise b): the numerator over 2, i.e. the MEAN of the two directed fractions
  (``d <= threshold``) -> segqc ``nsd_mean`` (not the pooled ``nsd``; GaNDLF's docstring warns it
  differs from the official surface Dice). The threshold is not a parameter: it is
  ``max(min(spacing of the batch's first subject), 1)`` mm.
* ``hd95`` = ``np.percentile(np.hstack((a, b)), 95)``: the percentile of both directions POOLED ->
  segqc ``hd95_pooled`` (not ``hd95``); ``hd100`` (``hausdorff``) = the pooled 100th percentile ->
  ``hd``.
* Counts: dice = (2 TP + eps)/(|P| + |G| + eps) (1 for two empty masks), jaccard = dice/(2 - dice),
  sensitivity = TP/(TP + FN + eps) (set to 1 when both are empty), specificity = TN/(TN + FP + eps).

Empty masks: ``__surface_distances`` returns 0 when either mask is empty, so NSD is 0 (worst) and
hd95 = hd100 = 0 (best) for ANY empty mask, two empty masks included; segqc reproduces this with
the "worst" rule for ``nsd_mean`` and the "best" rule for the distances, in two calls.

GaNDLF's threshold is a voxel spacing, so border voxels one voxel step apart sit exactly on it:
the distance must be exactly that spacing wherever the objects sit (segqc computes every distance
from integer grid offsets times the spacing, as the distance transform does).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from peers._cases import blob, shifted_boxes_3d, square_in_square
from segqc.metrics.binary import MetricSettings, compare_masks
from segqc.metrics.registry import EmptyPolicy

SQRT5, S425 = math.sqrt(5.0), math.sqrt(4.25)


def _tolerance(spacing) -> float:
    """GaNDLF's NSD threshold: max(min(spacing), 1) mm."""
    return max(min(spacing), 1.0)


def _segqc(pred, gt, spacing, metrics=("nsd_mean", "hd95_pooled", "hd"), empty=None) -> dict[str, float]:
    settings = MetricSettings(surface="voxel", tolerance_mm=_tolerance(spacing), empty=empty or EmptyPolicy())
    return {r.metric: r.value for r in compare_masks(pred, gt, spacing, metrics=metrics, settings=settings)}


def _gandlf_recipe(pred, gt, spacing) -> dict[str, float]:
    """GaNDLF's surface metrics rewritten from their definition (see the module docstring)."""
    footprint = ndimage.generate_binary_structure(pred.ndim, 1)

    def border(mask):
        return mask ^ ndimage.binary_erosion(mask, structure=footprint, iterations=1)

    a = ndimage.distance_transform_edt(~border(gt), sampling=spacing)[border(pred)]  # pred -> gt
    b = ndimage.distance_transform_edt(~border(pred), sampling=spacing)[border(gt)]  # gt -> pred
    threshold = _tolerance(spacing)
    tp_a, tp_b = np.mean(a <= threshold), np.mean(b <= threshold)
    fp, fn = np.mean(a > threshold), np.mean(b > threshold)
    pooled = np.hstack((a, b))
    return {"nsd_mean": float((tp_a + tp_b) / (tp_a + tp_b + fp + fn)),
            "hd95_pooled": float(np.percentile(pooled, 95)), "hd": float(np.percentile(pooled, 100))}






def _edge_boxes():
    # gt = rows 0..2 x cols 0..2, pred = rows 0..2 x cols 0..4 in a 5x6 image (touching the edge)
    gt = np.zeros((5, 6), dtype=bool)
    gt[0:3, 0:3] = True
    pred = np.zeros((5, 6), dtype=bool)
    pred[0:3, 0:5] = True
    return pred, gt, (1.0, 1.0)


HAND_CASES = [
    # spacing (rows 2, cols 1): threshold max(1, 1) = 1. gt border 8: 6 at 1 (the pred column beside),
    # 2 at 2 (top/bottom mid: the pred row 2 mm away). pred border 16: 6 at 1, 6 at 2, 4 corners at
    # sqrt(4 + 1) = sqrt5. NSD = (6/8 + 6/16)/2 = 0.5625 (pooled: 12/24 = 0.5); pooled (24): 12 x 1,
    # 8 x 2, 4 x sqrt5 -> hd95 at position 0.95 * 23 = 21.85 -> sqrt5; hd100 sqrt5.
    ("square_in_square_2_1", lambda: square_in_square((2.0, 1.0)),
     {"nsd_mean": (6 / 8 + 6 / 16) / 2, "hd95_pooled": SQRT5, "hd": SQRT5}),
    # spacing (rows 2, cols 1.5): threshold max(1.5, 1) = 1.5 (a 1 mm tolerance would give NSD 0).
    # gt border: 6 at 1.5, 2 at 2; pred border: 6 at 1.5, 6 at 2, 4 at sqrt(4 + 2.25) = 2.5.
    # NSD = (6/8 + 6/16)/2 = 0.5625; pooled (24): 12 x 1.5, 8 x 2, 4 x 2.5 -> hd95 2.5, hd100 2.5.
    ("square_in_square_2_1.5", lambda: square_in_square((2.0, 1.5)),
     {"nsd_mean": (6 / 8 + 6 / 16) / 2, "hd95_pooled": 2.5, "hd": 2.5}),
    # 3D, threshold max(0.5, 1) = 1. gt -> pred (26): 15 x 0, 0.5, 1.0, 9 x 2.0 (the bottom face one
    # 2 mm slice below pred) -> 17/26 within 1 mm. pred -> gt (42): 15 x 0, 6 x 0.5, 6 x 1.0, 9 x 2.0,
    # 3 x sqrt(2^2 + 0.5^2), 3 x sqrt(2^2 + 1^2) -> 27/42. NSD = (17/26 + 27/42)/2.
    # Pooled (68): 30 x 0, 7 x 0.5, 7 x 1, 18 x 2, 3 x sqrt4.25, 3 x sqrt5: hd95 at position
    # 0.95 * 67 = 63.65 between s[63] = s[64] = sqrt4.25 -> sqrt4.25; hd100 sqrt5.
    # (Derivation per voxel in tests/peers/test_seg_metrics.py, same masks.)
    ("shifted_boxes_3d", shifted_boxes_3d,
     {"nsd_mean": (17 / 26 + 27 / 42) / 2, "hd95_pooled": S425, "hd": SQRT5}),
    # touching the image edge (which is outside for binary_erosion): gt border = its 3x3 ring (8),
    # pred border = its 3x5 ring (12). gt -> pred: (1,2) is inside pred, 1 from (0,2): 7 x 0, 1 x 1.
    # pred -> gt: row 0 and row 2 columns 0..2 and (1,0) on gt's ring (7 x 0), (0,3), (2,3) at 1,
    # (0,4), (1,4), (2,4) at 2. NSD (threshold 1) = (8/8 + 9/12)/2 = 0.875; pooled (20): 14 x 0,
    # 3 x 1, 3 x 2 -> hd95 at position 18.05 -> 2; hd100 2.
    ("edge_boxes", _edge_boxes, {"nsd_mean": (1 + 9 / 12) / 2, "hd95_pooled": 2.0, "hd": 2.0}),
]


@pytest.mark.parametrize("name, case, expected", HAND_CASES, ids=[c[0] for c in HAND_CASES])
def test_hand_cases(name, case, expected):
    pred, gt, spacing = case()
    got = _segqc(pred, gt, spacing)
    for metric, value in expected.items():
        assert got[metric] == pytest.approx(value, rel=1e-12), metric
    recipe = _gandlf_recipe(pred, gt, spacing)
    for metric, value in expected.items():
        assert recipe[metric] == pytest.approx(value, rel=1e-12), metric


def test_variants_are_nsd_mean_and_pooled_hd95():
    # GaNDLF's NSD is not segqc's pooled nsd, and its hd95 is not segqc's max-of-directed hd95
    pred, gt, spacing = square_in_square((2.0, 1.0))
    got = _segqc(pred, gt, spacing, metrics=("nsd", "nsd_mean"))
    assert got["nsd"] == pytest.approx(0.5, rel=1e-12) and got["nsd_mean"] == pytest.approx(0.5625, rel=1e-12)
    pred, gt, spacing = shifted_boxes_3d()
    got = _segqc(pred, gt, spacing, metrics=("hd95", "hd95_pooled"))
    # max of directed: pred -> gt's 42 values at position 0.95 * 41 = 38.95 between sqrt4.25 and sqrt5
    assert got["hd95"] == pytest.approx(S425 + 0.95 * (SQRT5 - S425), rel=1e-12)
    assert got["hd95_pooled"] == pytest.approx(S425, rel=1e-12)
    # a 1 mm tolerance where GaNDLF's threshold is 1.5 mm changes the value: the threshold matters
    pred, gt, spacing = square_in_square((2.0, 1.5))
    (strict,) = compare_masks(pred, gt, spacing, metrics=("nsd_mean",),
                              settings=MetricSettings(surface="voxel", tolerance_mm=1.0))
    assert strict.value == 0.0




@pytest.mark.parametrize("seed, shape, spacing", [(0, (40, 36), (0.75, 1.25)), (1, (20, 22, 18), (1.5, 1.25, 2.5)),
                                                  (2, (24, 20, 16), (0.625, 0.625, 2.0))])
def test_random_masks_match_the_recipe(seed, shape, spacing):
    # blobs with errors of all sizes, touching the image edge. The spacings are binary fractions, so a
    # distance of one voxel step equals GaNDLF's threshold exactly in both computations (for other
    # spacings see test_distance_of_one_voxel_step_at_the_threshold).
    rng = np.random.default_rng(seed)
    gt = blob(rng, shape, 2.0, 0.3)
    pred = gt ^ blob(rng, shape, 1.0, 1.2)
    got = _segqc(pred, gt, spacing)
    for metric, value in _gandlf_recipe(pred, gt, spacing).items():
        assert got[metric] == pytest.approx(value, rel=1e-12), metric


def test_distance_of_one_voxel_step_at_the_threshold():
    # Two 3x3 plates one y step apart, spacing (1.5, 1.2, 3.0): GaNDLF's threshold is max(1.2, 1) = 1.2
    # and every border voxel is exactly one 1.2 mm step from the other plate -> NSD (1 + 1)/2 = 1 at
    # every position (distance_transform_edt: sqrt(1.2^2) == 1.2). segqc gives 0 at y = 3, 4, 6.
    spacing = (1.5, 1.2, 3.0)
    values = {}
    for y in range(1, 9):
        gt = np.zeros((5, 11, 5), dtype=bool)
        gt[1:4, y, 1:4] = True
        pred = np.zeros((5, 11, 5), dtype=bool)
        pred[1:4, y + 1, 1:4] = True
        assert _gandlf_recipe(pred, gt, spacing)["nsd_mean"] == 1.0
        values[y] = _segqc(pred, gt, spacing, metrics=("nsd_mean",))["nsd_mean"]
    assert values == {y: 1.0 for y in range(1, 9)}


@pytest.mark.parametrize("situation", ["both_empty", "pred_empty", "gt_empty"])
def test_empty_masks(situation):
    # __surface_distances returns 0 for an empty mask -> _nsd_base 0, hd95 = hd100 = 0
    pred, gt, spacing = square_in_square((2.0, 1.0))
    if situation in ("both_empty", "pred_empty"):
        pred = np.zeros_like(pred)
    if situation in ("both_empty", "gt_empty"):
        gt = np.zeros_like(gt)
    worst = EmptyPolicy(both_empty="worst", gt_empty="worst", pred_empty="worst")
    best = EmptyPolicy(both_empty="best", gt_empty="best", pred_empty="best")
    assert _segqc(pred, gt, spacing, metrics=("nsd_mean",), empty=worst) == {"nsd_mean": 0.0}
    assert _segqc(pred, gt, spacing, metrics=("hd95_pooled", "hd"), empty=best) == {"hd95_pooled": 0.0, "hd": 0.0}


def test_count_metrics():
    # square in square: TP 9, FP 16, FN 0, TN 56. dice 18/34, jaccard = dice/(2 - dice) = 9/25,
    # sensitivity 1, specificity 56/72 (GaNDLF's eps, sys.float_info.min, changes nothing here)
    pred, gt, spacing = square_in_square((2.0, 1.0))
    names = ("dice", "iou", "recall", "specificity")
    got = {r.metric: r.value for r in compare_masks(pred, gt, spacing, metrics=names)}
    dice = 18 / 34
    expected = {"dice": dice, "iou": dice / (2 - dice), "recall": 1.0, "specificity": 56 / 72}
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name
    # two empty masks: dice eps/eps = 1 and sensitivity set to 1 -> both_empty "best";
    # specificity TN/TN = 1 (segqc computes it as it comes)
    zero = np.zeros_like(gt)
    got = {r.metric: r.value for r in compare_masks(zero, zero, spacing, metrics=names,
                                                    settings=MetricSettings(empty=EmptyPolicy(both_empty="best")))}
    assert got == {"dice": 1.0, "iou": 1.0, "recall": 1.0, "specificity": 1.0}
    # empty prediction: dice 0, sensitivity 0 (segqc's default "worst")
    got = {r.metric: r.value for r in compare_masks(zero, gt, spacing, metrics=("dice", "recall"))}
    assert got == {"dice": 0.0, "recall": 0.0}
