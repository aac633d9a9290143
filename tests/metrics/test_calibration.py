"""ECE / MCE and the rank AUROC on hand-computed cases and against the count over all pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segqc.metrics.calibration import calibration_error, rank_auroc, top_label_calibration


def test_hand_computed_ece_and_mce():
    # bin [0.2,0.3): probs 0.2, 0.2 with targets 0, 1 -> gap |0.2 - 0.5| = 0.3 over 2 voxels
    # bin [0.9,1.0]: probs 0.9, 1.0 with targets 1, 1 -> gap |0.95 - 1| = 0.05 over 2 voxels
    prob = np.array([0.2, 0.2, 0.9, 1.0])
    target = np.array([0, 1, 1, 1])
    ece, mce = calibration_error(prob, target, bins=10)
    assert ece == pytest.approx((2 * 0.3 + 2 * 0.05) / 4)
    assert mce == pytest.approx(0.3)


def test_a_calibrated_map_has_small_ece_and_an_overconfident_one_large():
    rng = np.random.default_rng(0)
    prob = rng.uniform(0, 1, 200_000)
    outcome = rng.uniform(0, 1, prob.size) < prob  # calibrated by construction
    assert calibration_error(prob, outcome)[0] < 0.01
    sharpened = np.where(prob > 0.5, 1.0, 0.0)  # same decisions, full confidence
    assert calibration_error(sharpened, outcome)[0] == pytest.approx(0.25, abs=0.01)  # E|p - 1{p>0.5}|


def test_soft_targets_mask_and_empty():
    prob = np.array([0.5, 0.5, 0.0])
    raters = np.array([0.5, 0.5, 0.0])  # the rater mean itself: perfectly calibrated
    assert calibration_error(prob, raters) == (0.0, 0.0)
    assert calibration_error(prob, np.array([1.0, 1.0, 1.0]), mask=np.array([False, False, True])) == (1.0, 1.0)
    ece, mce = calibration_error(prob, raters, mask=np.zeros(3, bool))
    assert math.isnan(ece) and math.isnan(mce)
    with pytest.raises(ValueError):
        calibration_error(np.array([1.5]), np.array([1.0]))


def test_top_label_calibration_multiclass():
    probs = np.array([[0.7, 0.1], [0.2, 0.6], [0.1, 0.3]])  # K=3 classes, 2 pixels
    labels = np.array([0, 2])  # pixel 0 right with confidence 0.7, pixel 1 wrong with confidence 0.6
    ece, mce = top_label_calibration(probs, labels)
    assert ece == pytest.approx((0.3 + 0.6) / 2) and mce == pytest.approx(0.6)


def test_rank_auroc_equals_the_count_over_all_pairs_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 500).astype(float)  # many ties
    positives = rng.uniform(size=500) < 0.2 + 0.1 * scores
    pos, neg = scores[positives][:, None], scores[~positives][None, :]
    by_pairs = ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)
    assert rank_auroc(scores, positives) == pytest.approx(by_pairs, abs=1e-12)
    assert rank_auroc([1.0, 2.0], [False, True]) == 1.0
    assert rank_auroc([1.0, 2.0], [True, False]) == 0.0
    assert math.isnan(rank_auroc([1.0, 2.0], [True, True]))
