"""BraTS-2023 / MIST lesion-wise metrics and FROC detection counts.

Expected values are derived by hand from the published definitions (BraTS 2023
``get_LesionWiseScores`` / ``get_LesionWiseResults``; MIST 2.3 ``compute_lesion_wise_metrics``),
or come from an independent brute-force reference written here (whole-volume dilation per lesion,
scipy labelling, whole-volume masks for the per-lesion metrics). BraTS' repository has no tests;
the MIST cases below transcribe the scenario of MIST's ``tests/metrics/test_lesion_wise_metrics.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from segqc.metrics.binary import hd95 as full_hd95
from segqc.metrics.lesion import (
    LesionSettings,
    detection_counts,
    froc_points,
    lesion_scores,
    lesion_table,
)

ISO = (1.0, 1.0, 1.0)


def _box(shape, *bounds) -> np.ndarray:
    """Boolean mask with the half-open box ``bounds = ((lo, hi), ...)`` set."""
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(lo, hi) for lo, hi in bounds)] = True
    return mask


def _cube(shape, corner, size) -> np.ndarray:
    return _box(shape, *((c, c + size) for c in corner))


# ------------------------------------------------------------------ merging of nearby GT lesions


@pytest.mark.parametrize(("gap", "merged_with_3"), [(2, True), (6, True), (7, False)])
def test_nearby_lesions_merge_with_dilation_3_and_never_without(gap, merged_with_3):
    # two 4x4x4 cubes separated by `gap` background voxels along axis 0. Three 18-neighbour dilations
    # grow each cube by 3 voxels along an axis: the dilated cubes touch (26-connected) iff gap <= 6.
    shape = (30, 12, 12)
    gt = _cube(shape, (2, 4, 4), 4) | _cube(shape, (6 + gap, 4, 4), 4)
    table3 = lesion_table(gt, gt, ISO, LesionSettings(dilation_iterations=3, lesion_volume_threshold=0))
    table0 = lesion_table(gt, gt, ISO, LesionSettings(dilation_iterations=0, lesion_volume_threshold=0))
    assert len(table0.lesions) == 2
    assert [r.volume_voxels for r in table0.lesions] == [64, 64]
    if merged_with_3:
        assert len(table3.lesions) == 1
        # the merged lesion holds the ground-truth voxels only, not the dilated ones
        assert table3.lesions[0].volume_voxels == 128
        assert table3.lesions[0].matched_pred == (1, 2)
    else:
        assert len(table3.lesions) == 2
    # a perfect prediction is perfect however the lesions are grouped (Dice < 1 if the merged
    # lesion kept dilated voxels)
    for table in (table0, table3):
        assert all(r.dice == 1.0 and r.hd95 == 0.0 and r.nsd == 1.0 for r in table.lesions)
        assert table.scores().lesion_dice == 1.0


def test_merging_can_be_decoupled_from_matching_dilation():
    shape = (30, 12, 12)
    gt = _cube(shape, (2, 4, 4), 4) | _cube(shape, (8, 4, 4), 4)  # gap 2
    assert len(lesion_table(gt, gt, ISO, LesionSettings(merge_iterations=0, lesion_volume_threshold=0)).lesions) == 2
    assert len(lesion_table(gt, gt, ISO, LesionSettings(merge_iterations=1, lesion_volume_threshold=0)).lesions) == 1


# MIST tests/metrics/test_lesion_wise_metrics.py, create_simple_test_case: 8^3 volume, GT lesions
# [1:3]^3 and [5:7]^3, prediction identical, min_lesion_volume=0.
def _mist_simple_case() -> tuple[np.ndarray, np.ndarray]:
    gt = _cube((8, 8, 8), (1, 1, 1), 2) | _cube((8, 8, 8), (5, 5, 5), 2)
    return gt.copy(), gt


def test_mist_simple_case_perfect_prediction():
    # MIST test_lesion_wise_dice_mean / _hausdorff95_mean / _surface_dice_mean / _none_reduction
    pred, gt = _mist_simple_case()
    settings = LesionSettings.mist(lesion_volume_threshold=0.0)
    table = lesion_table(pred, gt, ISO, settings)
    assert len(table.lesions) == 2
    scores = table.scores()
    assert (scores.lesion_dice, scores.lesion_hd95, scores.lesion_nsd) == (1.0, 0.0, 1.0)
    # MIST test_min_lesion_volume_threshold: min volume 1000 mm^3 -> no lesion is kept
    big = lesion_table(pred, gt, ISO, LesionSettings.mist(lesion_volume_threshold=1000.0))
    assert big.kept == () and big.scores().n_gt == 0


def test_mist_simple_case_second_lesion_missed():
    # MIST test_lesion_wise_dice_median: lesion 1 matched, lesion 2 missed -> 0.5
    pred, gt = _mist_simple_case()
    pred[5:7, 5:7, 5:7] = False
    mist = lesion_scores(pred, gt, ISO, LesionSettings.mist(lesion_volume_threshold=0.0))
    assert mist.lesion_dice == pytest.approx(0.5)
    # MIST's HD95 for a miss is the image diagonal: 8 * sqrt(3) mm
    assert mist.lesion_hd95 == pytest.approx((0.0 + 8 * math.sqrt(3)) / 2)
    assert (mist.n_gt, mist.n_detected, mist.n_fp) == (2, 1, 0)
    # BraTS: corners (2,2,2) and (5,5,5) are 3 steps apart per axis; three 18-neighbour dilations
    # reach offset (2,2,2) from each, so the dilated lesions share (4,4,4) and merge into one
    # 16-voxel lesion, of which the prediction covers 8: Dice 2*8 / (8 + 16)
    brats = lesion_scores(pred, gt, ISO, LesionSettings(lesion_volume_threshold=0.0))
    assert (brats.n_gt, brats.n_detected) == (1, 1)
    assert brats.lesion_dice == pytest.approx(2 / 3)


# ------------------------------------------------------------------ volume threshold


SHAPE = (40, 40, 40)
BIG = _cube(SHAPE, (2, 2, 2), 4)  # 64 voxels
SMALL50 = _box(SHAPE, (20, 22), (20, 25), (20, 25))  # 50 voxels


def test_lesion_at_the_volume_threshold_is_ignored_and_its_prediction_is_not_a_false_positive():
    gt = BIG | SMALL50
    pred = BIG | SMALL50
    brats = lesion_table(pred, gt, ISO)  # GLI: volume <= 50 mm^3 ignored
    assert [r.ignored for r in brats.lesions] == [False, True]
    s = brats.scores()
    assert (s.n_gt, s.n_detected, s.n_fp, s.n_ignored) == (1, 1, 0, 1)
    assert s.lesion_dice == 1.0
    # a missed ignored lesion is no false negative
    assert lesion_scores(BIG, gt, ISO).lesion_tpr == 1.0
    # MIST counts a component matched only to an ignored lesion as a false positive
    mist_like = LesionSettings(ignored_match_is_fp=True)
    s = lesion_scores(pred, gt, ISO, mist_like)
    assert (s.n_gt, s.n_fp) == (1, 1)
    assert s.lesion_dice == pytest.approx(0.5)
    assert s.lesion_hd95 == pytest.approx(374.0 / 2)


def test_volume_threshold_units_and_inclusiveness():
    gt = BIG | SMALL50
    # MIST keeps a lesion whose volume equals the threshold (it ignores volume < threshold)
    assert lesion_scores(gt, gt, ISO, LesionSettings(ignore_at_threshold=False)).n_gt == 2
    # 51 voxels exceed 50
    gt51 = BIG | SMALL50 | _box(SHAPE, (22, 23), (20, 21), (20, 21))
    assert lesion_scores(gt51, gt51, ISO).n_gt == 2
    # mm^3: with 2 mm along axis 0 the 50 voxels are 100 mm^3 and kept; in voxels they are ignored
    aniso = (2.0, 1.0, 1.0)
    assert lesion_scores(gt, gt, aniso).n_gt == 2
    assert lesion_scores(gt, gt, aniso, LesionSettings(volume_unit="voxel")).n_gt == 1
    row = lesion_table(gt, gt, aniso).lesions[1]
    assert (row.volume_voxels, row.volume_mm3) == (50, 100.0)


# ------------------------------------------------------------------ misses, false positives


def test_missed_lesion_scores_dice_0_and_hd95_374():
    other = _cube(SHAPE, (30, 30, 30), 4)
    gt = BIG | other
    table = lesion_table(BIG, gt, ISO)
    missed = [r for r in table.lesions if not r.detected]
    assert len(missed) == 1
    assert (missed[0].dice, missed[0].hd95, missed[0].nsd, missed[0].matched_pred) == (0.0, 374.0, 0.0, ())
    s = table.scores()
    assert (s.lesion_dice, s.lesion_hd95, s.lesion_nsd) == (0.5, 187.0, 0.5)
    assert (s.lesion_tpr, s.n_fp) == (0.5, 0)
    assert s.lesion_f1 == pytest.approx(2 * 1 / (2 * 1 + 0 + 1))
    # MIST-style penalty: the image diagonal in mm (spacing (2, 1, 1): 40 * sqrt(4 + 1 + 1))
    diag = lesion_scores(BIG, gt, (2.0, 1.0, 1.0), LesionSettings(missed_distance_mm=None))
    assert diag.lesion_hd95 == pytest.approx(40 * math.sqrt(6) / 2)


def test_false_positive_component_enters_the_denominator():
    fp_blob = _cube(SHAPE, (30, 30, 30), 2)  # 8 voxels, far from the lesion
    table = lesion_table(BIG | fp_blob, BIG, ISO)
    assert table.fp_volumes_voxels == (8,)
    assert table.n_pred_components == 2
    s = table.scores()
    assert (s.n_gt, s.n_detected, s.n_fp) == (1, 1, 1)
    assert (s.lesion_dice, s.lesion_hd95, s.lesion_nsd, s.lesion_tpr) == (0.5, 187.0, 0.5, 1.0)
    assert s.lesion_f1 == pytest.approx(2 / 3)


@pytest.mark.parametrize(("gap", "matched"), [(2, True), (3, False)])
def test_prediction_near_but_outside_the_lesion_is_matched_within_the_dilation(gap, matched):
    # a predicted cube `gap` voxels beyond the lesion along axis 0: 3 dilations reach 3 voxels
    gt = _cube(SHAPE, (5, 5, 5), 4)
    pred = _cube(SHAPE, (9 + gap, 5, 5), 4)
    table = lesion_table(pred, gt, ISO)
    row = table.lesions[0]
    assert row.detected is matched
    assert row.dice == 0.0  # no overlap either way
    if matched:
        assert table.fp_components == ()
        assert row.hd95 == pytest.approx(full_hd95(pred, gt, ISO).value)  # a real distance, not 374
        assert row.hd95 < 374
    else:
        assert table.fp_components == (1,)
        assert row.hd95 == 374.0
        assert table.scores().lesion_hd95 == 374.0


def test_hand_derived_brats_case():
    # A: 4^3 predicted exactly; B: 5^3 with its lower 2 slices predicted (50 voxels); C: 3^3 = 27
    # voxels, ignored (<= 50 mm^3) and touched by a predicted component; F: an 8-voxel false positive.
    a = _cube(SHAPE, (2, 2, 2), 4)
    b = _cube(SHAPE, (15, 15, 15), 5)
    c = _cube(SHAPE, (30, 2, 2), 3)
    f = _cube(SHAPE, (30, 30, 30), 2)
    gt = a | b | c
    pred = a | _box(SHAPE, (15, 20), (15, 20), (15, 17)) | _box(SHAPE, (31, 35), (3, 4), (3, 4)) | f
    table = lesion_table(pred, gt, ISO)
    by_volume = {r.volume_voxels: r for r in table.lesions}
    assert set(by_volume) == {64, 125, 27}
    assert by_volume[27].ignored and by_volume[27].detected
    dice_b = 2 * 50 / (125 + 50)
    assert by_volume[125].dice == pytest.approx(dice_b)
    # B's cap at z = 20 is 3 mm from the predicted cap at z = 17 and covers 1/6 of B's surface
    # (> 5 %); no point is farther: HD95 = 3 mm
    assert by_volume[125].hd95 == pytest.approx(3.0)
    s = table.scores()
    assert (s.n_gt, s.n_detected, s.n_fp, s.n_ignored) == (2, 2, 1, 1)
    assert s.lesion_dice == pytest.approx((1.0 + dice_b + 0.0) / 3)
    assert s.lesion_hd95 == pytest.approx((0.0 + 3.0 + 374.0) / 3)
    assert s.lesion_tpr == 1.0


# ------------------------------------------------------------------ anisotropic HD95


@pytest.mark.parametrize("surface", ["surfel", "voxel"])
@pytest.mark.parametrize(("axis", "expected"), [(0, 3.0), (2, 1.0)])
def test_hd95_uses_the_spacing_of_the_shift_axis(surface, axis, expected):
    # prediction = lesion shifted by one voxel along `axis`: the farthest surface points (one cap,
    # > 5 % of the surface) are exactly one voxel step apart -> HD95 = spacing[axis]
    shape = (20, 20, 20)
    gt = _cube(shape, (6, 6, 6), 6)
    pred = np.roll(gt, 1, axis=axis)
    spacing = (3.0, 1.0, 1.0)
    row = lesion_table(pred, gt, spacing, LesionSettings(surface=surface)).lesions[0]
    assert row.hd95 == pytest.approx(expected)
    assert row.dice == pytest.approx(5 / 6)


# ------------------------------------------------------------------ empty masks


def test_empty_mask_conventions():
    empty = np.zeros(SHAPE, dtype=bool)
    both = lesion_scores(empty, empty, ISO)
    assert (both.lesion_dice, both.lesion_hd95, both.lesion_nsd, both.lesion_f1) == (1.0, 0.0, 1.0, 1.0)
    assert math.isnan(both.lesion_tpr) and (both.n_gt, both.n_fp) == (0, 0)

    two_blobs = _cube(SHAPE, (2, 2, 2), 2) | _cube(SHAPE, (30, 30, 30), 2)
    gt_empty = lesion_scores(two_blobs, empty, ISO)
    assert (gt_empty.lesion_dice, gt_empty.lesion_hd95, gt_empty.lesion_nsd, gt_empty.lesion_f1) == (0, 374, 0, 0)
    assert gt_empty.n_fp == 2 and math.isnan(gt_empty.lesion_tpr)

    pred_empty = lesion_scores(empty, BIG, ISO)
    assert (pred_empty.lesion_dice, pred_empty.lesion_hd95, pred_empty.lesion_nsd) == (0.0, 374.0, 0.0)
    assert (pred_empty.lesion_tpr, pred_empty.lesion_f1, pred_empty.n_gt) == (0.0, 0.0, 1)

    # only ignored lesions and no false positive: 0/0, scored as both empty (BraTS)
    only_small = lesion_scores(empty, SMALL50, ISO)
    assert (only_small.lesion_dice, only_small.lesion_hd95, only_small.n_ignored) == (1.0, 0.0, 1)


@pytest.mark.parametrize("shape", [(0, 4, 4), (5, 0), (0, 0, 0)])
def test_masks_of_size_0_are_both_empty_as_everywhere_else(shape):
    """Once: "zero-size array to reduction operation maximum" (scipy's find_objects) instead of the
    both-empty result that compare_masks gives for the same arrays."""
    empty = np.zeros(shape, dtype=bool)
    both = lesion_scores(empty, empty, (1.0,) * len(shape))
    assert (both.lesion_dice, both.lesion_hd95, both.lesion_nsd, both.lesion_f1) == (1.0, 0.0, 1.0, 1.0)
    assert math.isnan(both.lesion_tpr) and (both.n_gt, both.n_fp) == (0, 0)


# ------------------------------------------------------------------ independent reference


def _reference_brats(pred, gt, spacing, dilation, threshold):
    """Whole-volume BraTS lesion-wise evaluation: (sorted rows, dice, hd95, n_fp)."""
    dil = ndimage.generate_binary_structure(3, 2)
    full = np.ones((3, 3, 3), dtype=bool)
    dilated_labels, n = ndimage.label(ndimage.binary_dilation(gt, dil, iterations=dilation), full)
    lesion_labels = np.where(gt, dilated_labels, 0)
    pred_labels, n_pred = ndimage.label(pred, full)
    used: set[int] = set()
    rows = []
    for i in range(1, n + 1):
        lesion = lesion_labels == i
        footprint = ndimage.binary_dilation(lesion, dil, iterations=dilation)
        ids = sorted(set(np.unique(pred_labels[footprint]).tolist()) - {0})
        used.update(ids)
        matched = np.isin(pred_labels, ids)
        dice = 2 * np.count_nonzero(matched & lesion) / (np.count_nonzero(matched) + np.count_nonzero(lesion))
        hd = full_hd95(matched, lesion, spacing).value if ids else 374.0
        rows.append((np.count_nonzero(lesion), round(dice, 9), round(hd, 9), len(ids)))
    kept = [r for r in rows if r[0] * float(np.prod(spacing)) > threshold]
    n_fp = n_pred - len(used)
    denominator = len(kept) + n_fp
    dice_score = sum(r[1] for r in kept) / denominator if denominator else 1.0
    hd_score = (sum(r[2] for r in kept) + 374.0 * n_fp) / denominator if denominator else 0.0
    return sorted(rows), dice_score, hd_score, n_fp


@pytest.mark.parametrize("seed", range(6))
def test_matches_whole_volume_reference(seed):
    rng = np.random.default_rng(seed)
    shape = (26, 24, 22)
    spacing = tuple(rng.uniform(0.6, 1.8, 3))
    gt = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.56
    pred = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.56
    if seed % 2:
        pred = ndimage.binary_dilation(gt) & (rng.random(shape) > 0.15)
    for dilation, threshold in ((3, 50.0), (1, 2.0)):
        rows, dice, hd, n_fp = _reference_brats(pred, gt, spacing, dilation, threshold)
        settings = LesionSettings(dilation_iterations=dilation, lesion_volume_threshold=threshold)
        table = lesion_table(pred, gt, spacing, settings)
        ours = sorted((r.volume_voxels, round(r.dice, 9), round(r.hd95, 9), len(r.matched_pred)) for r in table.lesions)
        assert len(ours) == len(rows) > 1
        for mine, ref in zip(ours, rows):
            assert mine[0] == ref[0] and mine[3] == ref[3]
            assert mine[1] == pytest.approx(ref[1], abs=1e-8) and mine[2] == pytest.approx(ref[2], abs=1e-8)
        s = table.scores()
        assert s.n_fp == n_fp
        assert s.lesion_dice == pytest.approx(dice, abs=1e-8)
        assert s.lesion_hd95 == pytest.approx(hd, abs=1e-7)


def test_2d_masks():
    shape = (30, 30)
    gt = _box(shape, (2, 10), (2, 10)) | _box(shape, (12, 20), (2, 10))  # gap 2 -> merged by dilation 3
    pred = _box(shape, (2, 10), (2, 10)) | _box(shape, (25, 28), (25, 28))
    s = lesion_scores(pred, gt, (1.0, 1.0), LesionSettings(lesion_volume_threshold=0))
    assert (s.n_gt, s.n_detected, s.n_fp) == (1, 1, 1)
    assert s.lesion_dice == pytest.approx((2 * 64 / (64 + 128)) / 2)
    assert (
        lesion_scores(pred, gt, (1.0, 1.0), LesionSettings(dilation_iterations=0, lesion_volume_threshold=0)).n_gt == 2
    )


# ------------------------------------------------------------------ FROC


def _froc_case_1() -> tuple[np.ndarray, np.ndarray]:
    prob = np.full(SHAPE, 0.1)
    a = _cube(SHAPE, (2, 2, 2), 4)
    b = _cube(SHAPE, (20, 20, 20), 4)
    prob[a] = 0.9
    prob[b] = 0.5
    prob[_cube(SHAPE, (30, 2, 30), 3)] = 0.7  # false positive
    return prob, a | b


def _froc_case_2() -> tuple[np.ndarray, np.ndarray]:
    prob = np.zeros(SHAPE)
    c = _cube(SHAPE, (10, 10, 10), 4)
    prob[c] = 0.6
    prob[_cube(SHAPE, (30, 30, 2), 3)] = 0.4
    prob[_cube(SHAPE, (2, 30, 30), 3)] = 0.8
    return prob, c


THRESHOLDS = [0.05, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]


def test_detection_counts_step_at_the_lesion_peaks():
    prob, gt = _froc_case_1()
    counts = detection_counts(prob, gt, THRESHOLDS)
    expected = [
        (2, 0, 0),  # 0.05: the whole volume is one component touching both lesions
        (2, 0, 1),
        (2, 0, 1),  # 0.5: B (exactly 0.5) still predicted: prob >= t
        (1, 1, 1),
        (1, 1, 1),  # 0.7: the false positive (exactly 0.7) still predicted
        (1, 1, 0),
        (1, 1, 0),  # 0.9: A (exactly 0.9) still predicted
        (0, 2, 0),
    ]
    assert counts.tolist() == [list(e) for e in expected]
    assert counts.dtype == np.int64
    # consistent with the lesion-wise evaluation of each thresholded mask
    for t, row in zip(THRESHOLDS, counts):
        s = lesion_scores(prob >= t, gt, ISO)
        assert (s.n_detected, s.n_gt - s.n_detected, s.n_fp) == tuple(row)


def test_froc_points_pool_over_cases():
    counts = [detection_counts(*_froc_case_1(), THRESHOLDS), detection_counts(*_froc_case_2(), THRESHOLDS)]
    assert counts[1].tolist() == [
        [1, 0, 2],  # background 0: the two blobs stay separate components at every threshold
        [1, 0, 2],
        [1, 0, 1],
        [1, 0, 1],
        [0, 1, 1],
        [0, 1, 1],
        [0, 1, 0],
        [0, 1, 0],
    ]
    points = froc_points(counts, THRESHOLDS)
    assert [p[0] for p in points] == THRESHOLDS
    sensitivity = [3 / 3, 3 / 3, 3 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3, 0 / 3]
    fp_per_case = [2 / 2, 3 / 2, 2 / 2, 2 / 2, 2 / 2, 1 / 2, 0 / 2, 0 / 2]
    assert [p[1] for p in points] == pytest.approx(sensitivity)
    assert [p[2] for p in points] == pytest.approx(fp_per_case)
    with pytest.raises(ValueError):
        froc_points(counts, THRESHOLDS[:-1])
    with pytest.raises(ValueError):
        froc_points([], THRESHOLDS)


def test_froc_sensitivity_is_nan_without_lesions():
    prob = np.zeros((10, 10, 10))
    counts = detection_counts(prob, prob > 0, [0.5])
    assert counts.tolist() == [[0, 0, 0]]
    assert math.isnan(froc_points([counts], [0.5])[0][1])


# ------------------------------------------------------------------ settings


def test_presets_and_validation():
    assert (LesionSettings.brats("MET").dilation_iterations, LesionSettings.brats("MET").lesion_volume_threshold) == (
        1,
        2.0,
    )
    men = LesionSettings.brats("BraTS-MEN")
    assert (men.dilation_iterations, men.lesion_volume_threshold, men.merge_dilations) == (1, 50.0, 1)
    assert LesionSettings.brats() == LesionSettings()
    mist = LesionSettings.mist()
    assert (mist.merge_dilations, mist.lesion_volume_threshold, mist.connectivity, mist.missed_distance_mm) == (
        0,
        10.0,
        18,
        None,
    )
    assert mist.ignored_match_is_fp and not mist.ignore_at_threshold
    with pytest.raises(ValueError):
        LesionSettings.brats("XYZ")
    with pytest.raises(ValueError):
        LesionSettings(dilation_iterations=-1)
    with pytest.raises(ValueError):
        LesionSettings(volume_unit="ml")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        lesion_scores(BIG, BIG[:-1], ISO)
    with pytest.raises(ValueError):
        detection_counts(np.full(SHAPE, np.nan), BIG, [0.5])


def test_connectivity_18_splits_corner_touching_lesions():
    # two cubes touching only at a corner: one component with 26-connectivity, two with 18 (MIST)
    gt = _cube(SHAPE, (2, 2, 2), 4) | _cube(SHAPE, (6, 6, 6), 4)
    assert lesion_scores(gt, gt, ISO, LesionSettings(merge_iterations=0)).n_gt == 1
    assert lesion_scores(gt, gt, ISO, LesionSettings.mist()).n_gt == 2
