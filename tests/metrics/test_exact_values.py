"""Exact values at the boundaries where a plausible slip in a metric kernel changes the result but
a random or tolerant test does not notice: every case here is worked out by hand, or by a peer
library (scikit-learn), or by an independent computation (a supersampled mask, relabelled maps)."""

from __future__ import annotations

import numpy as np
import pytest

from segqc.metrics import compare_masks, component_overlap, panoptic_quality
from segqc.metrics.calibration import calibration_error, rank_auroc, top_label_calibration
from segqc.metrics.ellipse import fit_ellipse
from segqc.metrics.lesion import LesionSettings, detection_counts
from segqc.metrics.multiclass import generalized_dice, per_class_dice
from segqc.metrics.soft import soft_dice


def test_volume_similarity_of_unequal_volumes():
    """VS = 1 - ||P| - |G|| / (|P| + |G|): |P| = 3, |G| = 1 gives 1 - 2/4 = 0.5."""
    gt = np.zeros((4, 4), bool)
    gt[0, 0] = True
    pred = np.zeros((4, 4), bool)
    pred[0, :3] = True
    assert compare_masks(pred, gt, (1.0, 1.0), metrics=("vs",))[0].value == 0.5
    assert compare_masks(gt, pred, (1.0, 1.0), metrics=("vs",))[0].value == 0.5


def test_label_values_above_255_count_like_their_small_equivalents():
    """Label values above 255 take a slower counting path; relabelled 1 and 2, the maps give the
    same generalized and per-class Dice (the maps are unequal in size, so a prediction / ground
    truth swap changes the weights)."""
    rng = np.random.default_rng(3)
    pred = rng.choice([0, 1, 2], size=(30, 30), p=[0.5, 0.35, 0.15])
    gt = rng.choice([0, 1, 2], size=(30, 30), p=[0.6, 0.1, 0.3])
    big = {0: 0, 1: 300, 2: 301}
    relabel = np.vectorize(big.get)
    pred_big, gt_big = relabel(pred).astype(np.uint16), relabel(gt).astype(np.uint16)
    assert generalized_dice(pred_big, gt_big, [300, 301]).value == pytest.approx(
        generalized_dice(pred, gt, [1, 2]).value, rel=1e-12)
    small = per_class_dice(pred, gt, [1, 2])
    large = per_class_dice(pred_big, gt_big, [300, 301])
    assert [large[300].value, large[301].value] == pytest.approx([small[1].value, small[2].value], rel=1e-12)


def test_a_probability_of_one_falls_in_the_last_bin():
    """p = 0.95 and 1.0 share the last of 10 bins: mean p 0.975, mean y 0.5, ECE = MCE = 0.475
    (a bin of its own for 1.0 would give ECE (0.05 + 1) / 2)."""
    ece, mce = calibration_error(np.array([0.95, 1.0]), np.array([1.0, 0.0]))
    assert ece == pytest.approx(0.475, abs=1e-12) and mce == pytest.approx(0.475, abs=1e-12)


def test_top_label_calibration_uses_only_the_masked_pixels():
    """Three pixels of two classes: with the third left out, confidences 0.9 (right) and 0.6
    (wrong) lie in bins 9 and 6: ECE = (0.1 + 0.6) / 2, MCE 0.6."""
    probabilities = np.array([[0.9, 0.4, 0.2], [0.1, 0.6, 0.8]])
    truth = np.array([0, 0, 1])
    mask = np.array([True, True, False])
    ece, mce = top_label_calibration(probabilities, truth, mask=mask)
    assert ece == pytest.approx(0.35, abs=1e-12) and mce == pytest.approx(0.6, abs=1e-12)
    assert top_label_calibration(probabilities, truth)[0] != pytest.approx(ece)


def test_rank_auroc_leaves_nan_scores_out_as_scikit_learn_on_the_rest():
    from sklearn.metrics import roc_auc_score

    scores = np.array([np.nan, 0.9, 0.1, 0.4, np.nan, 0.35])
    positives = np.array([True, True, False, True, False, False])
    finite = np.isfinite(scores)
    assert rank_auroc(scores, positives) == pytest.approx(roc_auc_score(positives[finite], scores[finite]))


def test_soft_dice_of_a_map_with_itself_counts_the_thresholds_where_both_are_empty_as_one():
    """Maps of 0.5 everywhere are non-empty at 0.1..0.4 and empty in both at 0.5..0.9 (value > t):
    every threshold agrees, so the soft Dice is 1 (not the both-empty rule, not 4/9)."""
    half = np.full((5, 5), 0.5)
    result = soft_dice(half, half)
    assert result.value == 1.0 and result.empty == ""


def test_the_moment_ellipse_of_a_small_mask_equals_that_of_the_mask_supersampled():
    """Pixels are squares, not points: a mask and the same mask supersampled 8 x 8 (each pixel
    split into 64 sub-pixels of spacing / 8) cover the same area and have the same ellipse."""
    rows, cols = np.mgrid[-6:7, -6:7]
    mask = (rows / 2.3) ** 2 + (cols / 3.4) ** 2 <= 1  # a few dozen pixels
    spacing = (0.5, 0.8)
    coarse = fit_ellipse(mask, spacing)
    fine = fit_ellipse(np.kron(mask, np.ones((8, 8), bool)), (spacing[0] / 8, spacing[1] / 8))
    assert coarse.a == pytest.approx(fine.a, rel=1e-9) and coarse.b == pytest.approx(fine.b, rel=1e-9)


def test_panoptic_quality_does_not_match_a_pair_of_iou_one_half():
    """Kirillov et al.: a match needs IoU > 0.5. Ground truth 2 px, prediction 1 px inside it:
    IoU 0.5, unmatched, so PQ = 0 / (0 + 1/2 + 1/2) = 0."""
    gt = np.zeros((3, 3), bool)
    gt[1, 0:2] = True
    pred = np.zeros((3, 3), bool)
    pred[1, 0] = True
    assert panoptic_quality(component_overlap(pred, gt)).value == 0.0


def test_detection_counts_count_every_kept_lesion_once_with_a_zero_threshold():
    """MIST's rule (lesions under the threshold ignored, none at 0): two lesions, one found, so
    TP 1, FN 1, FP 0 at every probability threshold."""
    gt = np.zeros((12, 12), bool)
    gt[1:3, 1:3] = True
    gt[8:10, 8:10] = True
    prob = np.where(gt & (np.arange(12)[:, None] < 5), 0.9, 0.0)
    settings = LesionSettings(lesion_volume_threshold=0.0, ignore_at_threshold=False, dilation_iterations=0)
    counts = detection_counts(prob, gt, [0.5, 0.8], settings)
    assert counts.tolist() == [[1, 1, 0], [1, 1, 0]]
