"""Preprocessing: RAS reorientation, resampling, normalisation, crop/pad, slices and the inverse."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dataset_folders import write_dataset
from scipy.spatial.transform import Rotation

from segqc.fingerprint import (
    ChannelNormalization,
    PreprocessingPlan,
    Transform,
    compute_fingerprint,
    plan_from_fingerprint,
    preprocess_case,
    preprocess_files,
    ras_reorientation,
    reorient_to_ras,
    restore_image,
    restore_label,
    transform_label,
)
from segqc.io.geometry import Geometry
from segqc.io.images import Image, read_image, read_label_map, resample_nearest, write_image

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _direction(columns) -> tuple[float, ...]:
    """Direction cosines (ITK, LPS) from the physical direction of each array axis."""
    return tuple(np.stack([np.asarray(c, float) for c in columns], axis=1).ravel())


X, Y, Z = np.eye(3)  # LPS unit vectors: towards Left, Posterior, Superior
GRIDS = {
    "LPS (identity)": _direction([X, Y, Z]),
    "RAS": _direction([-X, -Y, Z]),
    "flipped S": _direction([X, -Y, -Z]),
    "permuted SRA": _direction([Z, -X, -Y]),
    "permuted IPL": _direction([-Z, Y, X]),
    "oblique": tuple((Rotation.from_euler("xyz", [12, -8, 20], degrees=True).as_matrix()
                      @ np.column_stack([Y, -X, Z])).ravel()),
}


def _plan(size: int, spacing=(1.0, 1.0), channels=1, **kwargs) -> PreprocessingPlan:
    return PreprocessingPlan(target_spacing=spacing, size=size,
                             channels=(ChannelNormalization(),) * channels, **kwargs)


def _blobs(shape, seed=0, n_labels=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    label = np.zeros(shape, np.uint8)
    centre = np.array(shape) / 2
    for value in range(1, n_labels + 1):
        c = centre + rng.uniform(-0.15, 0.15, 3) * np.array(shape)
        r = rng.uniform(0.12, 0.25) * min(shape)
        inside = sum(((g - ci) / (r * (1.5 if k == 0 else 1))) ** 2
                     for k, (g, ci) in enumerate(zip(grid, c))) <= 1
        label[inside] = value
    return label


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("name", list(GRIDS))
def test_reorientation_points_axes_to_r_a_s_and_keeps_every_voxel_in_place(name):
    geometry = Geometry(shape=(5, 6, 7), spacing=(0.7, 1.1, 2.3), origin=(10.0, -20.0, 5.0),
                        direction=GRIDS[name])
    array = np.arange(np.prod(geometry.shape)).reshape(geometry.shape)
    out, ras = reorient_to_ras(array, geometry)
    assert ras.orientation() == "RAS"
    # RAS direction of each new axis has a positive dominant component on its own axis
    m = LPS_TO_RAS @ ras.direction_matrix()
    assert np.all(np.argmax(np.abs(m), axis=0) == [0, 1, 2]) and np.all(np.diag(m) > 0)
    # every voxel keeps its physical position: map new indices to old ones through the affines
    new_idx = np.indices(out.shape).reshape(3, -1)
    physical = ras.affine() @ np.vstack([new_idx, np.ones(new_idx.shape[1])])
    old_idx = np.rint(np.linalg.solve(geometry.affine(), physical)[:3]).astype(int)
    assert np.array_equal(out.reshape(-1), array[tuple(old_idx)])


def test_reorientation_of_identity_direction_flips_x_and_y():
    permutation, flips = ras_reorientation(Geometry.from_shape((4, 5, 6)))
    assert permutation == (0, 1, 2) and flips == (True, True, False)
    permutation, flips = ras_reorientation(Geometry((4, 5, 6), (1, 1, 1), (0, 0, 0),
                                                    GRIDS["permuted SRA"]))
    assert permutation == (1, 2, 0) and flips == (False, False, False)


@pytest.mark.parametrize("name", list(GRIDS))
def test_round_trip_is_exact_without_resampling(name):
    geometry = Geometry(shape=(30, 26, 9), spacing=(1.0, 1.0, 1.0), origin=(0, 0, 0),
                        direction=GRIDS[name])
    label = _blobs(geometry.shape, seed=1)
    image = np.random.default_rng(0).normal(size=geometry.shape).astype(np.float32)
    for size in (40, 24):  # padding, and cropping that still holds the foreground
        case = preprocess_case(image, geometry, _plan(size), label=label)
        assert not case.transform.resampled
        n_slices = case.transform.reoriented_geometry.shape[2]
        assert case.image.shape == (1, size, size, n_slices)
        assert case.label.shape == (size, size, n_slices) and case.label.dtype == np.uint8
        assert np.array_equal(restore_label(case.label, case.transform), label)
        assert np.bincount(case.label.ravel(), minlength=4)[1:].tolist() == \
            np.bincount(label.ravel(), minlength=4)[1:].tolist()
    # a float map (e.g. probabilities) restores exactly too where the window covers the grid
    case = preprocess_case(image, geometry, _plan(40), label=label)
    prob = (case.label == 2).astype(np.float32)
    assert np.array_equal(restore_image(prob, case.transform), (label == 2).astype(np.float32))
    two = restore_image(np.stack([prob, 1 - prob]), case.transform)
    assert two.shape == (2, *geometry.shape)


def test_crop_window_is_centred_on_the_label_foreground():
    geometry = Geometry.from_shape((60, 50, 4), spacing=(1.0, 1.0, 5.0))
    geometry = Geometry(geometry.shape, geometry.spacing, geometry.origin, GRIDS["RAS"])
    label = np.zeros(geometry.shape, np.uint8)
    label[40:50, 5:15, 1:3] = 1  # off-centre foreground
    image = np.ones(geometry.shape, np.float32)
    case = preprocess_case(image, geometry, _plan(20, spacing=(1.0, 1.0)), label=label)
    assert case.transform.crop_start[:2] == (35, 0)  # centre (45, 10) - size/2
    assert case.label[5:15, 5:15, 1:3].all() and case.label.sum() == label.sum()
    # without a label, the window centres on the non-zero image region
    image = np.zeros(geometry.shape, np.float32)
    image[0:10, 30:50, :] = 5.0
    no_label = preprocess_case(image, geometry, _plan(20, spacing=(1.0, 1.0)))
    assert no_label.label is None and no_label.transform.crop_start[:2] == (-5, 30)


def test_scattered_false_positives_do_not_move_the_crop_window():
    geometry = Geometry.from_shape((60, 50, 4), spacing=(1.0, 1.0, 5.0))
    geometry = Geometry(geometry.shape, geometry.spacing, geometry.origin, GRIDS["RAS"])
    organ = np.zeros(geometry.shape, np.uint8)
    organ[40:50, 5:15, 1:3] = 3
    noisy = organ.copy()
    noisy[2:4, 45:48, 0] = 1  # two small islands far from the organ (an imperfect segmentation)
    noisy[10, 40, 3] = 2
    plan = _plan(20, spacing=(1.0, 1.0))
    image = np.ones(geometry.shape, np.float32)
    clean = preprocess_case(image, geometry, plan, label=organ)
    case = preprocess_case(image, geometry, plan, label=noisy)
    assert case.transform.crop_start == clean.transform.crop_start and clean.transform.crop_start[:2] == (35, 0)
    # the islands fall outside the window and come back as background; the organ round-trips
    restored = restore_label(case.label, case.transform)
    assert np.array_equal(restored, organ)


def test_slice_ratios_are_in_unit_interval_increasing_and_follow_ras_order():
    direction = GRIDS["flipped S"]  # array axis 2 points Inferior: slices are reversed
    geometry = Geometry((16, 16, 7), (1, 1, 3), (0, 0, 0), direction)
    label = np.zeros(geometry.shape, np.uint8)
    label[4:12, 4:12, 0] = 1  # the first stored slice is the most superior one
    case = preprocess_case(np.ones(geometry.shape), geometry, _plan(16), label=label)
    ratios = case.slice_ratios
    assert ratios[0] == 0 and ratios[-1] == 1 and np.all(np.diff(ratios) > 0)
    assert case.label[..., -1].any() and not case.label[..., :-1].any()
    assert case.slices()[-1][2] == 1.0
    single = preprocess_case(np.ones((16, 16, 1)), Geometry.from_shape((16, 16, 1)), _plan(16))
    assert single.slice_ratios.tolist() == [0.5]


def test_2d_images_are_one_slice_and_restore_as_2d():
    geometry = Geometry.from_shape((40, 30))
    label = _blobs((40, 30, 1), seed=3)[..., 0]
    case = preprocess_case(np.ones((40, 30), np.float32), geometry, _plan(48), label=label)
    assert case.label.shape == (48, 48, 1) and case.slice_ratios.tolist() == [0.5]
    assert np.array_equal(restore_label(case.label, case.transform), label)


def test_ct_normalisation_clips_then_z_scores_with_fingerprint_statistics(tmp_path):
    rng = np.random.default_rng(5)
    shape, geometry = (40, 40, 6), Geometry.from_shape((40, 40, 6), spacing=(0.8, 0.8, 2.0))
    root = tmp_path / "ct"
    label = np.zeros(shape, np.uint8)
    label[10:30, 8:32, :] = 1
    images = []
    for _ in range(2):
        image = np.full(shape, -1000.0, np.float32)  # air
        image[label > 0] = rng.normal(60.0, 25.0, int(label.sum()))
        images.append(image)
    write_dataset(root, {f"c{i}": (image, label, geometry) for i, image in enumerate(images)},
                  labels={"background": 0, "organ": 1}, channel="CT")
    fp = compute_fingerprint(root)
    plan = plan_from_fingerprint(fp, size=48)
    norm = plan.channels[0]
    assert norm.scheme == "ct" and plan.target_spacing == pytest.approx((0.8, 0.8))
    fg_all = np.concatenate([im[label > 0] for im in images]).astype(np.float64)
    assert norm.mean == pytest.approx(fg_all.mean(), rel=1e-5)
    assert norm.clip_low == pytest.approx(np.percentile(fg_all, 0.5), rel=1e-5)
    case = preprocess_case(images[0], geometry, plan, label=label)
    fg = case.image[0][case.label > 0]
    assert abs(fg.mean()) < 0.05 and abs(fg.std() - 1) < 0.05
    low, high = ((np.array([norm.clip_low, norm.clip_high]) - norm.mean) / norm.std)
    assert case.image.min() == pytest.approx(low) and case.image.max() <= high + 1e-5
    assert case.image[0, 0, 0, 0] == pytest.approx(low)  # air and padding: the clip floor


def test_percentile_normalisation_scales_each_image_to_unit_interval():
    rng = np.random.default_rng(2)
    geometry = Geometry.from_shape((32, 32, 5), spacing=(1.3, 1.3, 8.0))
    image = rng.gamma(2.0, 300.0, geometry.shape).astype(np.float32)
    low, high = np.percentile(image, [0.5, 99.5])
    case = preprocess_case(image, geometry, _plan(32, spacing=(1.3, 1.3)))  # no resampling
    expected = np.clip((image - low) / (high - low), 0, 1)[::-1, ::-1]  # LPS grid -> RAS
    assert np.allclose(case.image[0], expected, atol=1e-6)
    assert case.image.min() == 0.0 and case.image.max() == 1.0
    resampled = preprocess_case(image, geometry, _plan(40, spacing=(1.0, 1.0)))
    assert resampled.transform.resampled_shape == (42, 42, 5)  # 32 * 1.3 mm / 1 mm, rounded
    assert resampled.image.min() == 0.0 and resampled.image.max() == 1.0


def test_plan_and_transform_survive_json(tmp_path):
    plan = PreprocessingPlan(target_spacing=(1.25, 1.5), size=96, channels=(
        ChannelNormalization("ct", -100.0, 300.0, 50.0, 80.0), ChannelNormalization()))
    assert PreprocessingPlan.load(plan.save(tmp_path / "plan.json")) == plan
    geometry = Geometry((20, 18, 5), (1.0, 1.2, 4.0), (3, 4, 5), GRIDS["oblique"])
    case = preprocess_case(np.ones((2, 20, 18, 5)), geometry, plan, label=_blobs((20, 18, 5)))
    restored = Transform.from_dict(json.loads(json.dumps(case.transform.to_dict())))
    assert restored == case.transform
    assert np.array_equal(restore_label(case.label, restored),
                          restore_label(case.label, case.transform))


@pytest.mark.parametrize("name", list(GRIDS))
def test_transform_label_reproduces_the_forward_label_path_on_every_grid(name):
    geometry = Geometry(shape=(30, 26, 7), spacing=(1.3, 0.9, 4.0), origin=(3.0, -2.0, 1.0),
                        direction=GRIDS[name])
    label = _blobs(geometry.shape, seed=2)
    image = np.random.default_rng(1).normal(size=geometry.shape).astype(np.float32)
    case = preprocess_case(image, geometry, _plan(24, spacing=(1.1, 1.1)), label=label)
    assert np.array_equal(transform_label(label, case.transform), case.label)
    assert transform_label(label.astype(bool), case.transform).dtype == np.uint8


def test_transform_label_puts_another_map_into_the_same_window():
    """The window of an imperfect segmentation applied to its ground truth: the ground truth lands
    at the same physical place (restoring it gives it back where the window covers it), not in a
    window of its own."""
    geometry = Geometry.from_shape((60, 50, 4), spacing=(1.0, 1.0, 5.0))
    geometry = Geometry(geometry.shape, geometry.spacing, geometry.origin, GRIDS["RAS"])
    truth = np.zeros(geometry.shape, np.uint8)
    truth[20:30, 20:30, 1:3] = 1
    shifted = np.roll(truth, (12, 6), axis=(0, 1))  # a misplaced segmentation
    plan = _plan(40, spacing=(1.0, 1.0))
    case = preprocess_case(np.ones(geometry.shape, np.float32), geometry, plan, label=shifted)
    own = preprocess_case(np.ones(geometry.shape, np.float32), geometry, plan, label=truth)
    assert case.transform.crop_start != own.transform.crop_start
    moved = transform_label(truth, case.transform)
    assert moved.shape == case.label.shape
    inside = restore_label(np.ones_like(moved), case.transform).astype(bool)
    assert np.array_equal(restore_label(moved, case.transform), np.where(inside, truth, 0))
    # in window coordinates the two maps are offset by the shift
    assert np.array_equal(np.argwhere(case.label[..., 1]).min(0) - np.argwhere(moved[..., 1]).min(0), [12, 6])
    with pytest.raises(ValueError, match="does not match"):
        transform_label(truth[:-1], case.transform)
    with pytest.raises(ValueError, match="integer"):
        transform_label(truth.astype(np.float32), case.transform)


def test_bad_shapes_are_rejected():
    geometry = Geometry.from_shape((10, 10, 3))
    with pytest.raises(ValueError, match="label shape"):
        preprocess_case(np.ones((10, 10, 3)), geometry, _plan(8), label=np.ones((10, 9, 3), int))
    with pytest.raises(ValueError, match="channel"):
        preprocess_case(np.ones((2, 10, 10, 3)), geometry, _plan(8))
    case = preprocess_case(np.ones((10, 10, 3)), geometry, _plan(8))
    with pytest.raises(ValueError, match="preprocessed shape"):
        restore_label(np.zeros((3, 8, 8), np.uint8), case.transform)


def test_preprocess_files_rejects_label_on_another_grid(tmp_path):
    from segqc.errors import InputError

    label = _blobs((40, 36, 8), seed=4)
    g = Geometry.from_shape(label.shape, (1.5625, 1.5625, 10.0), origin=(3.0, -7.0, 1.0))
    image_path, moved = tmp_path / "image.nii.gz", tmp_path / "label.nii.gz"
    write_image(image_path, label.astype(np.float32) * 40 + 10, g)
    write_image(moved, label, Geometry(g.shape, (1.0, 1.0, 10.0), g.origin, g.direction))
    with pytest.raises(InputError, match="spacing") as info:
        preprocess_files(image_path, _plan(64, (1.5625, 1.5625)), label_path=moved)
    assert info.value.path == moved
    assert read_image(image_path).geometry == g


def test_preprocess_files_names_the_first_image_for_another_number_of_channels(tmp_path):
    """Once: a bare ValueError (`the plan normalises 1 channel(s), got 2`) naming no file."""
    from segqc.errors import InputError

    label = _blobs((20, 20, 4), seed=1)
    g = Geometry.from_shape(label.shape, (1.0, 1.0, 3.0))
    paths = [tmp_path / "case_0000.nii.gz", tmp_path / "case_0001.nii.gz"]
    for path in paths:
        write_image(path, label.astype(np.float32) + 1, g)
    with pytest.raises(InputError) as info:
        preprocess_files(paths, _plan(16))
    assert info.value.path == paths[0]
    assert info.value.problem == ("the case has 2 image channel(s) (case_0000.nii.gz, case_0001.nii.gz) but the plan "
                                  "normalises 1")
    assert preprocess_files(paths, _plan(16, channels=2)).image.shape == (2, 16, 16, 4)


@pytest.mark.parametrize("name", list(GRIDS))
def test_slice_count_is_the_number_of_slices_preprocessing_cuts(name):
    from segqc.fingerprint.preprocessing import slice_count

    geometry = Geometry((9, 11, 5), (1.0, 1.2, 3.0), (0.0, 0.0, 0.0), GRIDS[name])
    for axis in (0, 1, 2):
        plan = _plan(8, slice_axis=axis)
        assert slice_count(geometry, plan) == preprocess_case(np.ones(geometry.shape), geometry, plan).n_slices
    assert slice_count(Geometry.from_shape((9, 11)), _plan(8)) == 1


# ------------------------------------------------------------------------------------------
# Real data
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acdc_cases(shared_data):
    shared_data("acdc/dataset.json")
    acdc = shared_data("acdc")
    fp = compute_fingerprint(acdc, max_cases=6)
    return fp, [(acdc / c.image_files[0], acdc / c.label_file) for c in fp.cases]


def test_acdc_round_trip_is_exact_at_the_fingerprint_spacing(acdc_cases):
    fp, files = acdc_cases
    plan = plan_from_fingerprint(fp, size=256)
    assert plan.target_spacing == pytest.approx((1.5625, 1.5625))
    for image_path, label_path in files[:3]:
        case = preprocess_files(image_path, plan, label_path=label_path)
        label = read_label_map(label_path).array
        assert not case.transform.resampled
        assert np.array_equal(restore_label(case.label, case.transform), label)
        assert case.image.min() >= 0 and case.image.max() <= 1


@pytest.mark.parametrize("size", [128, 256])
@pytest.mark.parametrize("spacing", [1.25, 1.0])
def test_acdc_round_trip_with_resampling_keeps_dice_above_0_99(acdc_cases, size, spacing):
    fp, files = acdc_cases
    plan = plan_from_fingerprint(fp, size=size, target_spacing=(spacing, spacing))
    for image_path, label_path in files[:4]:
        gt = read_label_map(label_path)
        case = preprocess_files(image_path, plan, label_path=label_path)
        assert case.transform.resampled and case.image.shape[1:3] == (size, size)
        restored = restore_label(case.label, case.transform)
        for value in (1, 2, 3):
            assert _dice(restored == value, gt.array == value) >= 0.99
        # the preprocessed grid sits where the transform says it does in physical space:
        # ITK's nearest-neighbour resampling through preprocessed_geometry() agrees (up to ties)
        pre = case.transform.preprocessed_geometry()
        assert np.mean(resample_nearest(gt, pre).array == case.label) > 0.998
        assert np.mean(resample_nearest(Image(case.label, pre), gt.geometry).array
                       == restored) > 0.998


def test_acdc_downsampling_loses_detail_but_stays_close(acdc_cases):
    """Forward nearest-neighbour downsampling (1.5625 -> 2 mm) discards detail no inverse can
    recover; the round trip still keeps Dice >= 0.95 per class on ACDC."""
    fp, files = acdc_cases
    plan = plan_from_fingerprint(fp, size=128, target_spacing=(2.0, 2.0))
    dice = []
    for image_path, label_path in files[:4]:
        gt = read_label_map(label_path).array
        case = preprocess_files(image_path, plan, label_path=label_path)
        restored = restore_label(case.label, case.transform)
        dice += [_dice(restored == v, gt == v) for v in (1, 2, 3)]
    assert min(dice) >= 0.95 and np.mean(dice) >= 0.97


def test_the_planned_in_plane_spacing_is_the_median_of_each_in_plane_axis():
    """Median spacing (0.7, 1.3, 8) mm with slices along the third axis: the slices are resampled
    to 0.7 x 1.3 mm, each axis keeping its own median (a swap would stretch every slice)."""
    from types import SimpleNamespace

    from segqc.fingerprint.preprocessing import plan_from_fingerprint

    fingerprint = SimpleNamespace(median_spacing=(0.7, 1.3, 8.0),
                                  channels=[SimpleNamespace(normalization="mr", intensity=None)])
    assert plan_from_fingerprint(fingerprint).target_spacing == (0.7, 1.3)
    assert plan_from_fingerprint(fingerprint, slice_axis=0).target_spacing == (1.3, 8.0)


def test_the_crop_window_is_centred_on_the_foreground_rounding_half_up():
    """Foreground rows 3..7 (centre 5.5 in voxel-edge coordinates) and a 4-voxel window: the start
    is 5.5 - 2 = 3.5, rounded half up to 4 (the window's centre is then 6, half a voxel off either
    way, and ties go up); columns 2..5 (centre 4) start at 2."""
    from types import SimpleNamespace

    from segqc.fingerprint.preprocessing import _crop_start

    mask = np.zeros((12, 12, 3), bool)
    mask[3:8, 2:6, 1] = True
    assert _crop_start(mask, SimpleNamespace(inplane_axes=(0, 1), size=4)) == (4, 2, 0)
