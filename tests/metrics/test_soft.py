"""Soft Dice (mean binary Dice over thresholds 0.1..0.9, foreground where value > t)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from segqc.metrics import compare_masks, soft_dice


def test_binary_maps_give_plain_dice():
    rng = np.random.default_rng(1)
    for shape in ((50, 60), (20, 22, 24)):
        pred = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) > 0
        gt = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) > 0
        expected = 2 * np.sum(pred & gt) / (pred.sum() + gt.sum())
        got = soft_dice(pred.astype(np.float32), gt.astype(np.float64))
        assert got.value == pytest.approx(expected, rel=1e-12) and got.empty == ""
        spacing = (1.0,) * len(shape)
        assert got.value == pytest.approx(compare_masks(pred, gt, spacing, metrics=("dice",))[0].value, rel=1e-12)


def test_a_probability_map_compared_with_itself_scores_one():
    rng = np.random.default_rng(2)
    prob = rng.random((16, 17, 18))
    prob[prob < 0.5] = 0.05  # some thresholds empty in both: they count as agreement
    assert soft_dice(prob, prob.copy()).value == 1.0


def test_three_rater_average_by_hand():
    """GT = fraction of 3 raters: [0, 1/3, 2/3, 1]; prediction [0, 0, 1, 1].

    t in {0.1, 0.2, 0.3}: GT {1/3, 2/3, 1} (3 voxels) vs pred (2): Dice 2*2/5 = 0.8
    t in {0.4, 0.5, 0.6}: GT {2/3, 1} equals pred: Dice 1
    t in {0.7, 0.8, 0.9}: GT {1} vs pred (2): Dice 2*1/3
    """
    raters = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]], dtype=float)
    gt = raters.mean(axis=0).reshape(2, 2)
    pred = np.array([0.0, 0.0, 1.0, 1.0]).reshape(2, 2)
    expected = (3 * 0.8 + 3 * 1.0 + 3 * (2 / 3)) / 9
    assert soft_dice(pred, gt).value == pytest.approx(expected, rel=1e-12)
    # symmetric in its arguments
    assert soft_dice(gt, pred).value == pytest.approx(expected, rel=1e-12)


def test_threshold_is_strict():
    """A value equal to a threshold is not foreground at that threshold: 0.5 is in for t <= 0.4."""
    gt = np.array([[0.5, 1.0]])
    pred = np.array([[0.0, 1.0]])
    # t = 0.1..0.4: gt {0.5, 1} vs pred {1}: 2/3; t = 0.5..0.9: both {1}: 1
    assert soft_dice(pred, gt).value == pytest.approx((4 * (2 / 3) + 5 * 1.0) / 9, rel=1e-12)


@pytest.mark.parametrize("bad", [np.array([[0.2, 1.2]]), np.array([[-0.1, 0.5]]), np.array([[np.nan, 0.5]])])
def test_values_outside_unit_interval_raise(bad):
    with pytest.raises(ValueError):
        soft_dice(bad, np.array([[0.2, 0.5]]))
    with pytest.raises(ValueError):
        soft_dice(np.array([[0.2, 0.5]]), bad)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        soft_dice(np.zeros((3, 3)), np.ones((3, 4)))


@pytest.mark.parametrize(
    ("thresholds", "error", "match"),
    [((), ValueError, "at least one"), ((1.5,), ValueError, r"in \[0, 1\)"), ((float("nan"),), ValueError, "in"),
     ((-0.5,), ValueError, r"in \[0, 1\)"), ((1.0,), ValueError, r"in \[0, 1\)"), ("0.5", TypeError, "numbers"),
     ((0.5, "0.7"), TypeError, "numbers"), (None, TypeError, "numbers")],
)
def test_thresholds_must_be_numbers_in_the_unit_interval(thresholds, error, match):
    """Once: () was "min() arg is an empty sequence", (1.5,) and (nan,) a both-empty NaN, (-0.5,)
    a Dice of 1.0 and "0.5" a numpy UFuncTypeError."""
    rng = np.random.default_rng(0)
    pred, gt = rng.random((8, 8)), (rng.random((8, 8)) > 0.5).astype(float)
    with pytest.raises(error, match=match):
        soft_dice(pred, gt, thresholds=thresholds)
    assert soft_dice(pred, gt, thresholds=(0.0,)).value == pytest.approx(2 * gt.sum() / (64 + gt.sum()), rel=1e-14)
