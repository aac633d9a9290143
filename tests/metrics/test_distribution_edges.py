"""Edge rules of the distribution metrics: the foreground set of the calibration, the ``u > t``
rule and default thresholds of the U-E overlap, rater diversity and the clamp of GED² — each
against a hand computation or a plain-numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from segqc.metrics.distribution import (
    distribution_scores,
    generalized_energy_distance,
    soft_calibration,
    uncertainty_error_overlap,
)

# Five voxels, three raters: rater mean [0, 1/3, 1, 1, 0]; soft map [0.05, 0, 1, 1, 0].
RATERS = np.array([[0, 1, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0]], dtype=np.uint8).reshape(3, 1, 5)
PROB = np.array([[0.05, 0.0, 1.0, 1.0, 0.0]])


def _ece(conf: np.ndarray, outcome: np.ndarray, bins: int = 10) -> float:
    """Plain ECE: sum over equal-width bins of n_b/N |mean conf - mean outcome| (1.0 in the last bin)."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = (conf >= lo) & ((conf < hi) if b < bins - 1 else (conf <= hi))
        if sel.any():
            total += sel.sum() / conf.size * abs(conf[sel].mean() - outcome[sel].mean())
    return float(total)


def test_foreground_calibration_keeps_the_threshold_itself_and_any_rater_vote():
    """Hand rule: foreground = soft >= 0.05 or any rater marks (voxels 0..3 of 5); ECE by a plain
    binning loop, and the hand value 1/2 * |(0.05 + 0)/2 - (0 + 1/3)/2| = 0.0708."""
    ece, _ = soft_calibration(PROB, RATERS, foreground_only=True)
    mean = RATERS.mean(axis=0).ravel()
    keep = np.array([True, True, True, True, False])
    assert ece == pytest.approx(_ece(PROB.ravel()[keep], mean[keep]))
    assert ece == pytest.approx(0.5 * abs(0.025 - 1 / 6))


def test_distribution_scores_foreground_ece_leaves_out_the_far_background():
    """ece uses all five voxels, ece_foreground only the first four (plain binning loop)."""
    samples = np.array([[1, 0, 1, 1, 0]], dtype=np.uint8).reshape(1, 1, 5)
    scores = distribution_scores(samples, RATERS, probability=PROB)
    mean = RATERS.mean(axis=0).ravel()
    keep = np.array([True, True, True, True, False])
    assert scores.ece == pytest.approx(_ece(PROB.ravel(), mean))
    assert scores.ece_foreground == pytest.approx(_ece(PROB.ravel()[keep], mean[keep]))
    assert scores.ece != pytest.approx(scores.ece_foreground)


def test_rater_diversity_is_the_raters_own_mean_distance():
    """Two identical samples (diversity 0); raters A, B with IoU 1/3: rater diversity 1 - 1/3."""
    a = np.array([[1, 1, 0, 0]], dtype=np.uint8)
    b = np.array([[0, 1, 1, 0]], dtype=np.uint8)
    scores = distribution_scores(np.stack([a, a]), np.stack([a, b]))
    assert scores.diversity == pytest.approx(0.0)
    assert scores.rater_diversity == pytest.approx(2 / 3)


def test_uncertainty_equal_to_the_threshold_is_not_uncertain():
    """u > t: at t = 0.5 only u = 0.8 is uncertain; errors at 0.5 and 0.8 -> Dice 2*1/(1+2)."""
    u = np.array([0.2, 0.5, 0.8])
    e = np.array([False, True, True])
    best, t, dice = uncertainty_error_overlap(u, e, thresholds=[0.5])
    assert best == pytest.approx(2 / 3) and t == 0.5
    assert dice.tolist() == pytest.approx([2 / 3])


def test_no_error_and_nothing_uncertain_is_a_perfect_overlap():
    """Docstring rule: no error and no uncertain voxel at a threshold -> Dice 1."""
    best, _, dice = uncertainty_error_overlap(np.array([0.1, 0.3]), np.zeros(2, bool), thresholds=[2.0])
    assert best == 1.0 and dice.tolist() == [1.0]


def test_default_thresholds_are_100_steps_from_min_excluding_max():
    """Reference: t_k = min + k (max - min)/100, k = 0..99, Dice of (u > t_k) vs errors by numpy."""
    rng = np.random.default_rng(7)
    u = rng.random(200)
    e = u + 0.3 * rng.standard_normal(200) > 0.7
    best, t_best, dice = uncertainty_error_overlap(u, e)
    t = u.min() + np.arange(100) * (u.max() - u.min()) / 100
    ref = np.array([2 * np.sum((u > x) & e) / (np.sum(u > x) + e.sum()) for x in t])
    assert dice == pytest.approx(ref)
    assert best == pytest.approx(ref.max()) and t_best == pytest.approx(t[np.argmax(ref)])
    # the constant-to-max map: [0, 1], error at 1 -> every default threshold (< 1) gives Dice 1
    _, _, dice = uncertainty_error_overlap(np.array([0.0, 1.0]), np.array([False, True]))
    assert dice.tolist() == [1.0] * 100


def test_identical_sets_in_another_order_have_ged_zero_never_negative():
    """Docstring: GED² = 0 for identical sets; the plug-in form is non-negative, so what rounding
    leaves (about 1e-16 either way) is never a negative GED² or a NaN GED."""
    for seed in range(40):
        raters = np.random.default_rng(seed).random((3, 4, 4)) < 0.5
        ged2, ged = generalized_energy_distance(raters[[2, 0, 1]], raters)
        assert 0.0 <= ged2 < 1e-12 and 0.0 <= ged < 1e-6
