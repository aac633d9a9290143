"""Distribution metrics (GED, HM-IoU, diversity, CRPS, consensus, calibration, U-E overlap) on
hand-computed cases and against independent formulas."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from segqc.metrics.distribution import (
    consensus_maps,
    distribution_scores,
    generalized_energy_distance,
    hungarian_iou,
    pairwise_iou,
    sample_diversity,
    soft_calibration,
    uncertainty_error_overlap,
    volume_crps,
)

# Three 1 x 4 masks: |A ∩ B| = 1, |A ∪ B| = 3 -> IoU 1/3, d = 2/3; C is empty.
A = np.array([[1, 1, 0, 0]], dtype=bool)
B = np.array([[0, 1, 1, 0]], dtype=bool)
E = np.zeros((1, 4), dtype=bool)


def test_pairwise_iou_by_hand_with_the_empty_convention():
    iou = pairwise_iou(np.stack([A, B, E]), np.stack([A, B, E]))
    expected = np.array([[1, 1 / 3, 0], [1 / 3, 1, 0], [0, 0, 1]])
    np.testing.assert_allclose(iou, expected)


def test_pairwise_iou_matches_a_loop_on_random_3d_masks():
    rng = np.random.default_rng(0)
    first, second = rng.random((5, 6, 7, 8)) < 0.3, rng.random((3, 6, 7, 8)) < 0.5
    loop = np.array([[(a & b).sum() / (a | b).sum() for b in second] for a in first])
    np.testing.assert_allclose(pairwise_iou(first, second), loop)


def test_non_binary_masks_and_shape_mismatches_are_refused():
    with pytest.raises(ValueError, match="binary"):
        pairwise_iou(np.array([[0, 2]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="different sizes"):
        pairwise_iou(np.zeros((1, 4)), np.zeros((1, 5)))


def test_ged_of_identical_sets_is_zero_and_of_disjoint_single_masks_is_two():
    assert generalized_energy_distance(np.stack([A, B]), np.stack([B, A]))[0] == pytest.approx(0.0)
    other = np.array([[0, 0, 1, 1]], dtype=bool)
    ged2, ged = generalized_energy_distance(np.stack([A]), np.stack([other]))  # d = 1: GED² = 2·1
    assert (ged2, ged) == pytest.approx((2.0, math.sqrt(2.0)))


def test_ged_by_hand_with_self_pairs_and_distinct_pairs():
    # samples {A, B}, raters {A}: E d(S,Y) = (0 + 2/3)/2; E d(S,S') over 4 ordered pairs = (2/3 + 2/3)/4
    ged2, _ = generalized_energy_distance(np.stack([A, B]), np.stack([A]))
    assert ged2 == pytest.approx(2 * (1 / 3) - 1 / 3 - 0)
    # distinct pairs: samples {A, B} and raters {A, E}
    #   cross: d(A,A)=0, d(A,E)=1, d(B,A)=2/3, d(B,E)=1 -> mean 2/3
    #   d(A,B) = 2/3 between samples, d(A,E) = 1 between raters
    ged2_distinct, _ = generalized_energy_distance(np.stack([A, B]), np.stack([A, E]), pairs="distinct")
    assert ged2_distinct == pytest.approx(2 * (2 / 3) - 2 / 3 - 1)
    ged2_all, _ = generalized_energy_distance(np.stack([A, B]), np.stack([A, E]))
    assert ged2_all == pytest.approx(2 * (2 / 3) - (2 / 3) / 2 - 1 / 2)


def test_plug_in_ged_is_never_negative_on_random_sets():
    """1 - IoU is of negative type, so the plug-in energy distance is >= 0 (before any clipping)."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        n, m = rng.integers(1, 6, size=2)
        s = rng.random((n, 12)) < rng.random()
        y = rng.random((m, 12)) < rng.random()
        raw = (2 * (1 - pairwise_iou(s, y)).mean() - (1 - pairwise_iou(s, s)).mean()
               - (1 - pairwise_iou(y, y)).mean())
        assert raw > -1e-12


def test_diversity_over_distinct_pairs():
    assert sample_diversity(np.stack([A, B, E])) == pytest.approx((2 / 3 + 1 + 1) * 2 / 6)
    assert sample_diversity(np.stack([A, A])) == 0.0
    assert math.isnan(sample_diversity(np.stack([A])))


def test_hungarian_iou_repeats_both_sets_to_their_lcm():
    assert hungarian_iou(np.stack([A, B]), np.stack([A])) == pytest.approx((1 + 1 / 3) / 2)
    assert hungarian_iou(np.stack([A, B]), np.stack([B, A])) == pytest.approx(1.0)
    # 2 samples, 3 raters -> 6 x 6; brute force over every one-to-one matching of the repeated sets
    samples, raters = np.stack([A, E]), np.stack([A, B, E])
    iou = pairwise_iou(samples, raters)
    rows = [i % 2 for i in range(6)]
    cols = [j % 3 for j in range(6)]
    best = max(np.mean([iou[rows[i], cols[p[i]]] for i in range(6)]) for p in itertools.permutations(range(6)))
    assert hungarian_iou(samples, raters) == pytest.approx(best)


def _crps_by_integral(x: np.ndarray, y: float) -> float:
    """∫ (F(t) - 1[t >= y])² dt for the empirical CDF F of x, on a fine grid (the definition)."""
    grid = np.linspace(min(x.min(), y) - 1, max(x.max(), y) + 1, 200001)
    cdf = (x[None, :] <= grid[:, None]).mean(axis=1)
    step = (grid >= y).astype(float)
    return float(np.sum((cdf - step) ** 2) * (grid[1] - grid[0]))


def test_volume_crps_matches_the_integral_definition():
    samples = np.zeros((2, 4), dtype=bool)
    samples[0, :1] = True
    samples[1, :3] = True  # volumes 1 and 3
    rater = np.zeros((1, 4), dtype=bool)
    rater[0, :2] = True  # volume 2
    assert volume_crps(samples, rater) == pytest.approx(0.5)
    assert volume_crps(samples, rater, voxel_volume=2.5) == pytest.approx(1.25)
    rng = np.random.default_rng(2)
    s = rng.random((7, 50)) < rng.random((7, 1))
    r = rng.random((3, 50)) < rng.random((3, 1))
    by_integral = np.mean([_crps_by_integral(s.sum(axis=1).astype(float), float(v)) for v in r.sum(axis=1)])
    assert volume_crps(s, r) == pytest.approx(by_integral, abs=1e-3)


def test_consensus_maps_by_hand():
    raters = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0]], dtype=bool)
    levels, mean = consensus_maps(raters)
    np.testing.assert_array_equal(levels, [[1, 1, 1, 0], [1, 1, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_allclose(mean, [1, 2 / 3, 2 / 3, 0])


def test_soft_calibration_against_the_rater_mean():
    raters = np.array([[1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=bool)  # mean 1, .5, 0, 0, 0, 0
    assert soft_calibration(np.array([1, 0.5, 0, 0, 0, 0]), raters)[0] == pytest.approx(0.0)
    # predicting 0.45 where the mean is 0.5, 0 elsewhere: bin [0.4, 0.5) gap 0.05 for 1 of 6 voxels
    ece, mce = soft_calibration(np.array([1, 0.45, 0, 0, 0, 0]), raters)
    assert (ece, mce) == pytest.approx((0.05 / 6, 0.05))
    ece_fg, _ = soft_calibration(np.array([1, 0.45, 0, 0, 0, 0]), raters, foreground_only=True)
    assert ece_fg == pytest.approx(0.05 / 2)  # the two voxels the raters mark
    # a softmax-like 0.01 in the background stays out of the foreground, 0.2 comes in (gap 0.2)
    ece_fg, _ = soft_calibration(np.array([1, 0.45, 0.01, 0.2, 0.01, 0.01]), raters, foreground_only=True)
    assert ece_fg == pytest.approx((0.05 + 0.2) / 3)


def test_uncertainty_error_overlap_by_hand():
    uncertainty = np.array([0.9, 0.8, 0.1, 0.0, 0.7])
    error = np.array([1, 1, 0, 0, 0], dtype=bool)
    best, threshold, curve = uncertainty_error_overlap(uncertainty, error, thresholds=[0.05, 0.5, 0.75])
    # t=.05: uncertain {0,1,2,4} -> 2*2/(4+2); t=.5: {0,1,4} -> 4/5; t=.75: {0,1} -> 1
    np.testing.assert_allclose(curve, [4 / 6, 4 / 5, 1.0])
    assert (best, threshold) == (1.0, 0.75)


def test_distribution_scores_of_a_perfect_copy_of_the_raters():
    rng = np.random.default_rng(3)
    raters = rng.random((4, 16, 16)) < 0.3
    scores = distribution_scores(raters.copy(), raters)
    assert scores.ged2 == pytest.approx(0.0) and scores.hm_iou == pytest.approx(1.0)
    assert scores.soft_dice == pytest.approx(1.0) and scores.ece == pytest.approx(0.0)
    assert scores.diversity == pytest.approx(scores.rater_diversity)
    worse = distribution_scores(np.roll(raters, 3, axis=2), raters)
    assert worse.ged2 > 0.1 and worse.hm_iou < 0.9 and worse.soft_dice < 0.9
