"""Degradation helpers at their stated boundaries, worked out by hand."""

from __future__ import annotations

import numpy as np

from segqc.degrade.operations import _lowest, slice_axis
from segqc.degrade.targeting import DiceBin, degrade_to_bin
from segqc.metrics.multiclass import multiclass_dice


def test_a_slice_axis_needs_a_spacing_at_least_twice_the_smallest():
    assert slice_axis((1.0, 1.0, 2.0)) == 2  # exactly twice: a slice axis
    assert slice_axis((1.0, 1.0, 1.99)) is None
    assert slice_axis((5.0, 1.0, 1.0)) == 0


def test_lowest_marks_the_rounded_share_of_entries():
    values = np.array([3.0, 1.0, 2.0])
    assert _lowest(values, 0.5).tolist() == [False, True, True]  # round(1.5) = 2 smallest
    assert _lowest(values, 0.1).tolist() == [False, False, False]


def test_a_bin_that_contains_one_is_never_met_by_the_ground_truth_itself():
    """[0.9, 1.0] closed: a Dice of 1 would be no degradation, so the result must differ."""
    gt = np.zeros((24, 24), np.uint8)
    gt[4:20, 5:19] = 1
    result = degrade_to_bin(gt, (1.0, 1.0), DiceBin(0.9, 1.0, closed=True), 0)
    dice = multiclass_dice(result.label, gt).value
    assert 0.9 <= dice < 1.0 and result.reached


def test_a_dice_of_one_is_a_miss_even_for_a_bin_that_contains_it():
    from segqc.degrade.targeting import _miss

    closed = DiceBin(0.9, 1.0, closed=True)
    assert closed.contains(1.0) and _miss(closed, 1.0) > 0
    assert _miss(closed, 0.95) == 0.0
