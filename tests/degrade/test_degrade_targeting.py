"""Dice targeting lands in the requested bins, reports what it achieved, and always ends."""

from __future__ import annotations

import numpy as np
import pytest

from segqc.degrade.targeting import (
    BALANCED_BINS,
    MAX_STEPS,
    NNQC_BINS,
    DiceBin,
    assign_bins,
    balanced_sample,
    balanced_training_set,
    bins_from_edges,
    degrade_to_bin,
    parse_bins,
)
from segqc.io import read_label_map
from segqc.metrics.multiclass import multiclass_dice, per_class_dice
from segqc.synthetic import multiclass_phantom


@pytest.fixture(scope="module")
def phantom_3d() -> np.ndarray:
    return multiclass_phantom((64, 64, 16), (1.2, 1.2, 4.0), seed=3)


def test_bins_print_like_intervals_and_the_last_one_is_closed():
    assert [str(b) for b in NNQC_BINS] == ["[0.05,0.10)", "[0.10,0.25)", "[0.25,0.50)", "[0.50,0.75)", "[0.75,0.95]"]
    assert str(BALANCED_BINS[0]) == "[0.00,0.10)" and str(BALANCED_BINS[-1]) == "[0.90,1.00]"
    assert NNQC_BINS[-1].contains(0.95) and not NNQC_BINS[0].contains(0.10) and NNQC_BINS[1].contains(0.10)
    assert parse_bins("0.05, 0.10,0.25,0.50,0.75,0.95") == NNQC_BINS
    for bad in ("0.5", "0.5,0.2", "0.1,1.5", "a,b"):
        with pytest.raises(ValueError):
            parse_bins(bad)


@pytest.mark.parametrize("dims", [2, 3])
def test_every_nnqc_bin_is_hit_on_a_phantom_and_the_achieved_dice_is_reported(phantom_3d, dims):
    gt = phantom_3d if dims == 3 else np.ascontiguousarray(phantom_3d[:, :, 8])
    spacing = (1.2, 1.2, 4.0)[:dims]
    rng = np.random.default_rng(0)
    for b in NNQC_BINS:
        result = degrade_to_bin(gt, spacing, b, rng, labels=[1, 2, 3])
        true_dice = multiclass_dice(result.label, gt).value
        assert result.achieved_dice == pytest.approx(true_dice, abs=1e-12)
        assert result.reached and b.contains(true_dice), (b, true_dice, result.operations)
        assert result.label.shape == gt.shape and result.label.dtype == gt.dtype
        assert result.operations and result.note == ""
        per_class = per_class_dice(result.label, gt, [1, 2, 3])
        assert {c: r.value for c, r in per_class.items()} == pytest.approx(result.per_class, nan_ok=True)


def test_balanced_bins_are_all_reachable_on_a_slice(phantom_3d):
    gt = np.ascontiguousarray(phantom_3d[:, :, 8])
    maps = balanced_training_set(gt, (1.2, 1.2), 10, 1, labels=[1, 2, 3])
    assert [str(m.bin) for m in maps] == [str(b) for b in BALANCED_BINS]
    assert all(m.reached for m in maps), [(str(m.bin), m.achieved_dice) for m in maps if not m.reached]
    assert all(m.achieved_dice < 1.0 for m in maps)  # the closed top bin [0.9,1.0] never gets the GT back


def test_target_label_bins_the_dice_of_one_class(phantom_3d):
    b = DiceBin(0.25, 0.5)
    result = degrade_to_bin(phantom_3d, (1.2, 1.2, 4.0), b, 5, labels=[1, 2, 3], target_label=2)
    assert result.reached
    assert b.contains(per_class_dice(result.label, phantom_3d, [2])[2].value)


def test_the_same_seed_gives_the_same_map(phantom_3d):
    one = degrade_to_bin(phantom_3d, (1.2, 1.2, 4.0), NNQC_BINS[2], 11, labels=[1, 2, 3])
    two = degrade_to_bin(phantom_3d, (1.2, 1.2, 4.0), NNQC_BINS[2], np.random.default_rng(11), labels=[1, 2, 3])
    assert np.array_equal(one.label, two.label) and one.operations == two.operations


def test_an_unreachable_bin_returns_the_closest_map_and_says_so():
    gt = np.zeros((20, 20), dtype=np.uint8)
    gt[8:11, 8:11] = 1
    gt[11, 8] = 1  # 10 voxels: no Dice between 0.953 (one voxel wrong) and 1
    b = bins_from_edges([0.96, 0.99])[0]
    result = degrade_to_bin(gt, (1.0, 1.0), b, 0, max_attempts=3, max_iterations=6)
    assert not result.reached and not b.contains(result.achieved_dice)
    assert "not reached" in result.note and "closest achieved Dice" in result.note
    assert result.attempts == 3
    assert result.evaluations <= 3 * (MAX_STEPS + 6)
    assert result.achieved_dice == pytest.approx(multiclass_dice(result.label, gt).value)


def test_empty_ground_truth_is_refused():
    with pytest.raises(ValueError, match="no foreground"):
        degrade_to_bin(np.zeros((8, 8), dtype=np.uint8), (1.0, 1.0), NNQC_BINS[0], 0)


def test_every_bin_is_hit_on_three_acdc_cases(shared_data):
    labels_dir = shared_data("acdc/labelsTr")
    rng = np.random.default_rng(2024)
    for case in ("ACDC_patient003_frame01", "ACDC_patient047_frame02", "ACDC_patient096_frame01"):
        image = read_label_map(labels_dir / f"{case}.nii.gz")
        for b in NNQC_BINS:
            result = degrade_to_bin(image.array, image.geometry.spacing, b, rng, labels=[1, 2, 3])
            dice = multiclass_dice(result.label, image.array).value
            assert b.contains(dice), (case, str(b), dice, result.operations)


def test_assign_bins_spreads_masks_evenly():
    assert assign_bins(5, 5, 0) == [0, 1, 2, 3, 4]
    assert assign_bins(10, 5, 3) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    counts = np.zeros(5, dtype=int)
    rng = np.random.default_rng(0)
    for _ in range(400):
        one = assign_bins(3, 5, rng)
        assert len(set(one)) == 3
        counts += np.bincount(one, minlength=5)
    assert counts.max() - counts.min() < 0.15 * counts.mean()


def test_balanced_sample_takes_the_same_count_from_every_bin():
    rng = np.random.default_rng(0)
    dice = np.concatenate([rng.uniform(0.9, 1.0, 50), rng.uniform(0.0, 0.9, 30), [np.nan, 1.0]])
    chosen = balanced_sample(dice, 1)
    per_bin = np.bincount(np.minimum((dice[chosen] * 10).astype(int), 9), minlength=10)
    counts = [int(np.sum([b.contains(v) for v in dice])) for b in BALANCED_BINS]
    assert set(per_bin.tolist()) == {min(c for c in counts if c)}
    assert not np.isnan(dice[chosen]).any()
    assert np.array_equal(balanced_sample(dice, 1), chosen)  # deterministic with a seed
