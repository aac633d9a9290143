"""Degradation helpers at their stated boundaries, worked out by hand."""

from __future__ import annotations

import numpy as np

from segqc.degrade.operations import _lowest, slice_axis, smooth_field
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


def _disc(shape, centre, radius_mm, spacing):
    grid = np.indices(shape).astype(float)
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing)) <= radius_mm ** 2


def test_full_dilation_grows_a_disc_about_nine_fold():
    """The default reach is twice the equivalent radius: radius r becomes 3r, area 9x."""
    from segqc.degrade.operations import dilation

    label = _disc((64, 64), (32, 32), 6.0, (1.0, 1.0)).astype(np.uint8)
    grown = dilation(label, 0, 1.0, spacing=(1.0, 1.0))
    assert 8.0 < np.count_nonzero(grown) / np.count_nonzero(label) < 10.0


def test_dilation_of_stacked_discs_grows_in_plane_by_their_in_plane_radius():
    """Thick slices (10 mm): the equivalent radius is that of the mean disc per slice, so each slice
    grows about nine-fold and the 8 mm reach does not cross into the empty slices."""
    from segqc.degrade.operations import dilation

    spacing = (1.0, 1.0, 10.0)
    label = np.zeros((48, 48, 5), np.uint8)
    label[..., 1:4] = _disc((48, 48), (24, 24), 4.0, (1.0, 1.0))[..., None]
    grown = dilation(label, 0, 1.0, spacing=spacing)
    assert not grown[..., 0].any() and not grown[..., 4].any()
    assert 7.5 < np.count_nonzero(grown[..., 2]) / np.count_nonzero(label[..., 2]) < 10.5


def test_erosion_removes_the_voxels_within_its_depth_in_millimetres():
    """Eroding half the thickness removes the voxels whose distance to the outside, in mm
    (scipy's EDT with the spacing), is at most half the largest one."""
    from scipy import ndimage

    from segqc.degrade.operations import erosion

    spacing = (1.0, 3.0)
    label = np.zeros((30, 14), np.uint8)
    label[3:27, 2:12] = 1
    depth = ndimage.distance_transform_edt(np.pad(label, 1), sampling=spacing)[1:-1, 1:-1]
    expected = (label == 1) & (depth > 0.5 * depth.max() + 1e-9)
    np.testing.assert_array_equal(erosion(label, 0, 0.5, spacing=spacing) == 1, expected)


def test_near_false_positives_add_strength_times_amount_times_the_foreground():
    from segqc.degrade.operations import false_positives_near

    label = _disc((80, 80), (40, 40), 6.0, (1.0, 1.0)).astype(np.uint8)
    n_fg = np.count_nonzero(label)
    out = false_positives_near(label, 0, 0.25, spacing=(1.0, 1.0), amount=2.0)
    assert np.count_nonzero(out) - n_fg == round(0.25 * 2.0 * n_fg)


def test_full_split_removes_the_strip_of_half_the_extent():
    """|projection| <= E/4 of a disc of radius R: R² (√3/2 + π/3) of its π R², 60.9 %."""
    from segqc.degrade.operations import split

    label = _disc((81, 81), (40, 40), 30.0, (1.0, 1.0)).astype(np.uint8)
    for seed in range(3):
        removed = 1 - np.count_nonzero(split(label, seed, 1.0, spacing=(1.0, 1.0))) / np.count_nonzero(label)
        assert abs(removed - (np.sqrt(3) / 2 + np.pi / 3) / np.pi) < 0.02


def test_a_shift_moves_the_centroid_by_its_reach_in_millimetres():
    from scipy import ndimage

    from segqc.degrade.operations import shift

    spacing = np.array([1.0, 2.0])
    label = _disc((80, 60), (40, 30), 8.0, spacing).astype(np.uint8)
    before = np.array(ndimage.center_of_mass(label)) * spacing
    for seed in range(6):
        moved = shift(label, seed, 1.0, spacing=tuple(spacing), max_mm=12.0)
        after = np.array(ndimage.center_of_mass(moved)) * spacing
        assert abs(np.linalg.norm(after - before) - 12.0) < 1.2  # rounded to whole voxels


def test_seggen_scaling_keeps_the_centroid_in_millimetres_on_an_anisotropic_grid():
    from scipy import ndimage

    from segqc.degrade.seggen import affine

    spacing = np.array([1.0, 2.0])
    label = _disc((80, 50), (30, 20), 9.0, spacing).astype(np.uint8)
    scaled = affine(label, spacing=tuple(spacing), scale=1.2)
    before = np.array(ndimage.center_of_mass(label)) * spacing
    after = np.array(ndimage.center_of_mass(scaled)) * spacing
    assert np.linalg.norm(after - before) < 0.5
    assert 1.3 < np.count_nonzero(scaled) / np.count_nonzero(label) < 1.6  # 1.2² = 1.44


def test_seggen_scale_shrinks_or_grows_by_the_ends_of_its_range_at_full_strength():
    """Area ratios 0.85² (shrink) and 1.25² (grow); across seeds both branches occur."""
    from segqc.degrade.seggen import scale

    label = _disc((100, 100), (50, 50), 20.0, (1.0, 1.0)).astype(np.uint8)
    ratios = {round(np.count_nonzero(scale(label, seed, 1.0, spacing=(1.0, 1.0))) / np.count_nonzero(label), 1)
              for seed in range(8)}
    assert ratios == {round(0.85 ** 2, 1), round(1.25 ** 2, 1)}


def test_seggen_rotates_an_isotropic_volume_about_its_last_axis():
    """Rotation in the plane of the first two axes: every slice along the last axis keeps its
    area and no voxel leaves the slices it occupied."""
    from segqc.degrade.seggen import affine

    label = np.zeros((40, 40, 40), np.uint8)
    label[10:30, 15:25, 5:35] = 1
    rotated = affine(label, spacing=(1.0, 1.0, 1.0), angle_deg=30.0)
    per_slice = np.count_nonzero(rotated, axis=(0, 1))
    assert not per_slice[:5].any() and not per_slice[35:].any()
    assert np.all(np.abs(per_slice[5:35] - 200) <= 20)


def test_a_positive_seggen_angle_turns_the_first_axis_towards_the_second():
    """A bar along +axis 0 from the centre of rotation, turned by +90 degrees, lies along +axis 1."""
    from segqc.degrade.seggen import affine

    label = np.zeros((21, 21), np.uint8)
    label[10:16, 10] = 1
    turned = affine(label, spacing=(1.0, 1.0), angle_deg=90.0, centre_mm=(10.0, 10.0))
    expected = np.zeros_like(label)
    expected[10, 10:16] = 1
    np.testing.assert_array_equal(turned, expected)


def test_elastic_displacements_stay_within_their_reach_in_millimetres_on_every_axis():
    """max_vox voxels of the finest axis (0.5 mm) = 10 mm: at most 20 voxels along the fine axis
    and 5 along the 2 mm one, and the fields come close to that reach."""
    from segqc.degrade.seggen import _displacement_field

    spacing = np.array([0.5, 2.0])
    reach = []
    for seed in range(4):
        fields = _displacement_field((120, 40), spacing, np.random.default_rng(seed), 20.0, None)
        millimetres = [np.abs(f).max() * s for f, s in zip(fields, spacing)]
        assert max(millimetres) <= 10.0 + 1e-6
        reach += millimetres
    assert max(reach) > 6.0


def _correlation_at(field: np.ndarray, lag: int, axis: int) -> float:
    n = field.shape[axis]
    a, b = np.take(field, range(0, n - lag), axis=axis), np.take(field, range(lag, n), axis=axis)
    return float(np.mean(a * b) / np.sqrt(np.mean(a * a) * np.mean(b * b)))


def test_the_smooth_field_correlates_as_gaussian_smoothed_noise_in_millimetres():
    """White noise smoothed by a Gaussian of std s correlates exp(-d^2 / 4 s^2) at distance d:
    0.779 at d = s and 0.368 at d = 2 s, on each axis of an anisotropic grid alike."""
    sigma_mm, spacing = 6.0, (1.0, 3.0)
    expected = {1: np.exp(-0.25), 2: np.exp(-1.0)}
    measured = {(axis, k): [] for axis in (0, 1) for k in expected}
    for seed in range(4):
        field = smooth_field((480, 160), spacing, sigma_mm, np.random.default_rng(seed))
        assert field.dtype == np.float32
        assert abs(float(field.mean())) < 1e-5 and abs(float(field.std()) - 1.0) < 1e-4
        for axis, k in measured:
            measured[(axis, k)].append(_correlation_at(field, round(k * sigma_mm / spacing[axis]), axis))
    for (axis, k), values in measured.items():
        assert abs(np.mean(values) - expected[k]) < 0.06, (axis, k, np.mean(values))
