"""Parity with panoptica 2.1.7 (BrainLesion; not installed: it pins numpy < 2.3, pandas < 3 and
rich < 14, which would downgrade segqc's own stack). Its instance matching and PQ/SQ/RQ, with cases
transcribed from its test suite, are in ``tests/metrics/test_panoptic.py``; this module checks
its per-instance metric definitions (``panoptica/metrics/*.py``), written out here independently:

* surfaces: medpy-style voxel borders (mask minus its erosion by the face-connected cross), exact
  Euclidean distances with the spacing — segqc ``surface="voxel"``;
* HD95: ``np.percentile`` of both directed distance lists stacked — segqc ``hd95_pooled``;
* NSD: ``(tp_a + tp_b) / (tp_a + tp_b + fp + fn)`` with per-direction fractions, i.e. the mean of
  the two directed fractions within the threshold — segqc ``nsd_mean``;
* ASSD: the mean of both lists stacked — segqc ``assd``;
* centre distance: centres of mass (``ndimage.center_of_mass``) times the spacing — segqc
  ``com_distance``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from peers._cases import blob
from segqc.metrics.binary import MetricSettings, compare_masks


def _border(mask: np.ndarray) -> np.ndarray:
    return mask ^ ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def _directed(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """Distance from every border voxel of a to the nearest border voxel of b (mm), by the exact
    distance transform of b's border, as panoptica computes it."""
    return ndimage.distance_transform_edt(~_border(b), sampling=spacing)[_border(a)]




CASES = [(21, (40, 44), (0.5, 1.2)), (22, (20, 24, 18), (1.0, 1.0, 2.5)), (23, (18, 22, 20), (0.8, 0.6, 1.1))]


@pytest.mark.parametrize("seed, shape, spacing", CASES)
@pytest.mark.parametrize("threshold", [0.6, 1.5])
def test_panoptica_surface_metrics(seed, shape, spacing, threshold):
    rng = np.random.default_rng(seed)
    gt = blob(rng, shape, 2.0, 0.5)
    pred = ndimage.binary_erosion(gt, iterations=1) | blob(rng, shape, 1.2, 1.6)  # asymmetric errors
    a_to_b, b_to_a = _directed(pred, gt, spacing), _directed(gt, pred, spacing)
    expected = {
        "hd95_pooled": np.percentile(np.hstack((a_to_b, b_to_a)), 95),
        "nsd_mean": (np.mean(a_to_b <= threshold) + np.mean(b_to_a <= threshold)) / 2,
        "assd": np.mean(np.hstack((a_to_b, b_to_a))),
        "com_distance": np.linalg.norm((np.subtract(ndimage.center_of_mass(pred), ndimage.center_of_mass(gt)))
                                       * np.asarray(spacing)),
    }
    got = {r.metric: r.value for r in compare_masks(pred, gt, spacing, metrics=tuple(expected),
                                                    settings=MetricSettings(surface="voxel", tolerance_mm=threshold))}
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    # the pooled NSD differs from panoptica's mean of fractions when the surfaces differ in size
    (pooled,) = compare_masks(pred, gt, spacing, metrics=("nsd",),
                              settings=MetricSettings(surface="voxel", tolerance_mm=threshold))
    assert pooled.value != pytest.approx(got["nsd_mean"], abs=1e-6)
