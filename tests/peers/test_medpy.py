"""Parity with medpy (``medpy.metric.binary``, installed in the test extra).

medpy's surfaces are voxel borders (mask minus its erosion by the face-connected cross, the image
edge counting as outside) with exact Euclidean distance transforms scaled by the voxel spacing:
segqc's ``surface="voxel"``. Its names map onto segqc's as

* ``hd95`` — the 95th percentile of both directed distance lists pooled: segqc ``hd95_pooled``
  (segqc's ``hd95`` is the max of the two directed percentiles, DeepMind's definition);
* ``asd(result, reference)`` — mean distance from the prediction's surface: segqc ``asd``;
* ``assd`` — the mean over both surfaces' voxels pooled (medpy 0.5): segqc ``assd`` (segqc's
  ``masd`` is the mean of the two directed means);
* ``ravd`` — segqc ``rvd``; ``specificity`` / ``true_negative_rate`` — segqc ``specificity``.

medpy raises on an empty mask; segqc applies its empty-mask policy there (tested elsewhere).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from peers._cases import flipped_pair
from segqc.metrics.binary import MetricSettings, compare_masks

medpy_binary = pytest.importorskip("medpy.metric.binary")






CASES = [
    (11, (40, 36, 30), (1.0, 1.0, 1.0)),
    (12, (36, 40, 24), (0.6, 0.9, 2.5)),
    (13, (120, 90), (0.4, 1.1)),
    (14, (28, 30, 32), (2.0, 0.7, 0.7)),
]


@pytest.mark.parametrize("seed, shape, spacing", CASES)
def test_distance_metrics_match_medpy(seed, shape, spacing):
    pred, gt = flipped_pair(seed, shape)
    names = ("hd", "hd95_pooled", "asd", "asd_gt_to_pred", "assd", "masd", "hd95")
    got = {r.metric: r.value for r in compare_masks(pred, gt, spacing, metrics=names,
                                                    settings=MetricSettings(surface="voxel"))}
    assert got["hd"] == pytest.approx(medpy_binary.hd(pred, gt, voxelspacing=spacing), rel=1e-9)
    assert got["hd95_pooled"] == pytest.approx(medpy_binary.hd95(pred, gt, voxelspacing=spacing), rel=1e-9)
    assert got["asd"] == pytest.approx(medpy_binary.asd(pred, gt, voxelspacing=spacing), rel=1e-9)
    assert got["asd_gt_to_pred"] == pytest.approx(medpy_binary.asd(gt, pred, voxelspacing=spacing), rel=1e-9)
    assert got["assd"] == pytest.approx(medpy_binary.assd(pred, gt, voxelspacing=spacing), rel=1e-9)
    assert got["masd"] == pytest.approx(0.5 * (got["asd"] + got["asd_gt_to_pred"]), rel=1e-12)
    # the two hd95 definitions really differ on these cases (pooled <= max of directed)
    assert got["hd95_pooled"] <= got["hd95"] + 1e-12
    assert got["hd95_pooled"] != pytest.approx(got["hd95"])


@pytest.mark.parametrize("seed, shape, spacing", CASES)
def test_overlap_metrics_match_medpy(seed, shape, spacing):
    pred, gt = flipped_pair(seed, shape)
    names = ("dice", "iou", "precision", "recall", "specificity", "rvd", "abs_rvd")
    got = {r.metric: r.value for r in compare_masks(pred, gt, spacing, metrics=names)}
    assert got["dice"] == pytest.approx(medpy_binary.dc(pred, gt), rel=1e-12)
    assert got["iou"] == pytest.approx(medpy_binary.jc(pred, gt), rel=1e-12)
    assert got["precision"] == pytest.approx(medpy_binary.precision(pred, gt), rel=1e-12)
    assert got["recall"] == pytest.approx(medpy_binary.recall(pred, gt), rel=1e-12)
    assert got["specificity"] == pytest.approx(medpy_binary.specificity(pred, gt), rel=1e-12)
    assert got["rvd"] == pytest.approx(medpy_binary.ravd(pred, gt), rel=1e-12)
    assert got["abs_rvd"] == pytest.approx(abs(medpy_binary.ravd(pred, gt)), rel=1e-12)


def test_percentile_option_reaches_medpy_style_pooled_percentiles():
    """``percentile`` applies to hd95_pooled: at 50 it is the pooled median (segqc median_sd), at 100
    medpy's hd."""
    pred, gt = flipped_pair(15, (30, 34, 28))
    spacing = (0.8, 0.8, 1.6)
    at = {}
    for p in (50.0, 100.0):
        settings = MetricSettings(surface="voxel", percentile=p)
        at[p] = {r.metric: r.value for r in compare_masks(pred, gt, spacing, metrics=("hd95_pooled", "median_sd"),
                                                          settings=settings)}
    pooled = np.hstack([
        ndimage.distance_transform_edt(~_border(gt), sampling=spacing)[_border(pred)],
        ndimage.distance_transform_edt(~_border(pred), sampling=spacing)[_border(gt)],
    ])
    assert at[50.0]["hd95_pooled"] == pytest.approx(np.percentile(pooled, 50), rel=1e-12)
    assert at[50.0]["median_sd"] == pytest.approx(np.median(pooled), rel=1e-12)
    assert at[100.0]["hd95_pooled"] == pytest.approx(medpy_binary.hd(pred, gt, voxelspacing=spacing), rel=1e-12)


def _border(mask: np.ndarray) -> np.ndarray:
    return mask ^ ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))
