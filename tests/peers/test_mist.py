"""Parity with MIST (``mist-medical`` 2.3.0, installed in the test extra): its lesion-wise Dice,
HD95, surface Dice and detection F1 (``mist.metrics.lesion_wise_metrics``) against segqc's
:func:`~segqc.metrics.lesion.lesion_scores` with the MIST preset, on random multi-lesion volumes
with anisotropic spacing, with and without MIST's ground-truth consolidation (merging nearby
lesions by dilation, BraTS' rule). MIST's own unit cases are transcribed in
``tests/metrics/test_lesion.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from segqc.metrics.lesion import LesionSettings, lesion_scores

mist_lesion = pytest.importorskip("mist.metrics.lesion_wise_metrics")

NAMES = {"lesion_wise_dice": "lesion_dice", "lesion_wise_haus95": "lesion_hd95",
         "lesion_wise_surf_dice": "lesion_nsd", "lesion_wise_f1": "lesion_f1"}
BEST = {"lesion_wise_dice": 1.0, "lesion_wise_haus95": 0.0, "lesion_wise_surf_dice": 1.0, "lesion_wise_f1": 1.0}


def _case(seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    rng = np.random.default_rng(seed)
    shape = (24, 22, 20)
    spacing = tuple(float(s) for s in rng.uniform(0.5, 2.0, 3))
    gt = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.56
    if seed % 2:
        pred = ndimage.binary_dilation(gt) & (rng.random(shape) > 0.1)
    else:
        pred = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.56
    return pred, gt, spacing


@pytest.mark.parametrize("consolidation", [0, 3])
@pytest.mark.parametrize("seed", range(6))
def test_lesion_wise_metrics_match_mist(seed, consolidation):
    pred, gt, spacing = _case(seed)
    theirs = mist_lesion.compute_lesion_wise_metrics(pred, gt, spacing, list(("dice", "haus95", "surface_dice", "f1")),
                                                     gt_consolidation_iters=consolidation)
    if not theirs:  # MIST returns nothing when there is nothing to score; its registry reports best values
        theirs = BEST
    ours = lesion_scores(pred, gt, spacing, LesionSettings.mist(merge_iterations=consolidation)).to_dict()
    for name, field in NAMES.items():
        assert ours[field] == pytest.approx(theirs[name], rel=1e-9, abs=1e-9), name


def test_cases_are_not_trivial():
    scores = [lesion_scores(*_case(seed), LesionSettings.mist()) for seed in range(6)]
    assert any(s.n_fp > 0 for s in scores) and any(s.n_detected < s.n_gt for s in scores)
    assert len({round(s.lesion_dice, 6) for s in scores}) > 3
