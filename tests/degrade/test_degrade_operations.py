"""Every degradation does what it claims, in 2D and 3D, and is reproducible from its seed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from segqc.degrade import OPERATIONS, seggen
from segqc.degrade import operations as ops
from segqc.metrics.multiclass import multiclass_dice
from segqc.synthetic import multiclass_phantom

SPACING_3D = (1.0, 1.0, 2.5)
SPACING_2D = (0.8, 0.8)
LABELS = [1, 2, 3]


@pytest.fixture(scope="module")
def phantom_3d() -> np.ndarray:
    return multiclass_phantom((80, 64, 24), SPACING_3D, seed=0)


@pytest.fixture(scope="module")
def phantom_2d(phantom_3d) -> np.ndarray:
    return np.ascontiguousarray(phantom_3d[:, :, 12])


def _volumes(label: np.ndarray) -> np.ndarray:
    return np.bincount(label.ravel(), minlength=4)[1:4]


@pytest.fixture(params=["2d", "3d"])
def case(request, phantom_2d, phantom_3d):
    return (phantom_2d, SPACING_2D) if request.param == "2d" else (phantom_3d, SPACING_3D)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_operation_is_seeded_pure_and_keeps_shape_and_dtype(name, case):
    label, spacing = case
    before = label.copy()
    first = OPERATIONS[name](label, 7, 0.5, spacing=spacing, labels=LABELS)
    again = OPERATIONS[name](label, np.random.default_rng(7), 0.5, spacing=spacing, labels=LABELS)
    assert np.array_equal(label, before)  # input untouched
    assert first.shape == label.shape and first.dtype == label.dtype
    assert np.array_equal(first, again)
    assert set(np.unique(first).tolist()) <= {0, *LABELS}
    assert np.array_equal(OPERATIONS[name](label, 7, 0.0, spacing=spacing, labels=LABELS), label)
    assert not np.array_equal(first, label), f"{name} at strength 0.5 changed nothing"


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_damage_grows_with_strength(name, case):
    label, spacing = case
    dice = [multiclass_dice(OPERATIONS[name](label, 3, s, spacing=spacing, labels=LABELS), label).value
            for s in (0.0, 0.25, 0.5, 1.0)]
    assert dice[0] == 1.0
    assert dice[-1] < dice[0]
    assert all(b <= a + 0.1 for a, b in zip(dice, dice[1:])), dice  # monotone up to rounding effects


def test_erosion_shrinks_the_class_inside_its_outline(case):
    label, spacing = case
    out = ops.erosion(label, 0, 0.4, spacing=spacing, target=3)
    assert (out == 3).sum() < (label == 3).sum()
    assert not ((out == 3) & (label != 3)).any()
    assert np.array_equal(out == 1, label == 1)  # other classes untouched
    assert (ops.erosion(label, 0, 1.0, spacing=spacing) == 0).all()  # full strength removes everything


def test_dilation_grows_the_class_and_keeps_it(case):
    label, spacing = case
    out = ops.dilation(label, 0, 0.3, spacing=spacing, target=1)
    assert (out == 1).sum() > (label == 1).sum()
    assert (out[label == 1] == 1).all()
    grown = (out == 1) & (label != 1)
    distance = ndimage.distance_transform_edt(label != 1, sampling=spacing)
    reach = 0.3 * 2 * ops._equivalent_radius_mm(label == 1, np.asarray(spacing))
    assert distance[grown].max() <= reach + 1e-6


def test_holes_keep_the_outline_of_the_class(case):
    label, spacing = case
    out = ops.holes(label, 0, 0.8, spacing=spacing, target=3)
    mask = label == 3
    rim = mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(label.ndim, 1))
    assert (out[rim] == 3).all()
    assert (out == 3).sum() < mask.sum()
    assert set(np.unique(out[mask & (out != 3)]).tolist()) == {0}


def test_collapse_leaves_one_class(case):
    label, spacing = case
    out = ops.collapse(label, 0, 1.0, spacing=spacing, labels=LABELS)
    assert len(ops.present_labels(out)) == 1
    assert np.array_equal(out != 0, label != 0)
    partial = ops.collapse(label, 0, 0.5, spacing=spacing, labels=LABELS)
    assert np.array_equal(partial != 0, label != 0) and len(ops.present_labels(partial)) > 1


def test_swap_permutes_class_volumes(case):
    label, spacing = case
    out = ops.swap(label, 0, 1.0, spacing=spacing, labels=LABELS)
    assert sorted(_volumes(out).tolist()) == sorted(_volumes(label).tolist())
    assert np.array_equal(out != 0, label != 0)
    for c in LABELS:  # every class went to another label, whole
        assert len(np.unique(out[label == c])) == 1 and np.unique(out[label == c])[0] != c


def test_swap_of_a_single_class_uses_the_dataset_labels(phantom_2d):
    only = np.where(phantom_2d == 3, 3, 0).astype(np.uint8)
    out = ops.swap(only, 0, 1.0, spacing=SPACING_2D, labels=LABELS)
    assert set(ops.present_labels(out)) <= {1, 2} and np.array_equal(out != 0, only != 0)


def test_false_positives_land_near_or_far_from_the_organ(case):
    label, spacing = case
    distance = ndimage.distance_transform_edt(label == 0, sampling=spacing)
    near = ops.false_positives_near(label, 0, 0.5, spacing=spacing, labels=LABELS, near_mm=6.0)
    far = ops.false_positives_far(label, 0, 0.2, spacing=spacing, labels=LABELS, far_mm=12.0)
    added_near, added_far = (near != label), (far != label)
    assert added_near.any() and added_far.any()
    assert (label[added_near] == 0).all() and (label[added_far] == 0).all()
    assert distance[added_near].max() <= 6.0 + 1e-6
    assert distance[added_far].min() >= 12.0 - 1e-6
    assert np.array_equal(near[label != 0], label[label != 0])


def test_boundary_perturbation_moves_surfaces_by_at_most_the_amplitude(case):
    label, spacing = case
    out = ops.boundary(label, 0, 0.5, spacing=spacing, target=1, max_mm=4.0)
    mask = label == 1
    changed = (out == 1) != mask
    assert changed.any()
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    assert np.maximum(inside, outside)[changed].max() <= 2.0 + max(spacing)


def test_split_cuts_a_class_in_two(phantom_3d):
    out = ops.split(phantom_3d, 4, 0.3, spacing=SPACING_3D, target=1)
    assert ndimage.label(phantom_3d == 1)[1] == 1
    assert ndimage.label(out == 1)[1] == 2
    assert not ((out == 1) & (phantom_3d != 1)).any()


def test_shift_moves_a_class_rigidly_in_plane(phantom_3d):
    out = ops.shift(phantom_3d, 1, 0.5, spacing=(1.0, 1.0, 5.0), target=1)
    before = np.argwhere(phantom_3d == 1).mean(axis=0)
    after = np.argwhere(out == 1).mean(axis=0)
    assert np.linalg.norm(after - before) > 2
    assert after[2] == pytest.approx(before[2])  # slice axis (5 mm) untouched
    assert (out == 1).sum() == (phantom_3d == 1).sum()


def test_seggen_rotation_preserves_volume_and_turns_in_plane(phantom_3d):
    spacing = (1.0, 1.0, 4.0)
    out = seggen.affine(phantom_3d, spacing=spacing, angle_deg=15.0)
    for c in LABELS:
        assert (out == c).sum() == pytest.approx((phantom_3d == c).sum(), rel=0.03)
    np.testing.assert_array_equal((out != 0).any(axis=(0, 1)), (phantom_3d != 0).any(axis=(0, 1)))
    assert not np.array_equal(out, phantom_3d)


def test_seggen_scaling_and_translation_do_what_they_say(phantom_2d):
    grown = seggen.affine(phantom_2d, spacing=SPACING_2D, scale=1.2)
    assert (grown != 0).sum() == pytest.approx(1.44 * (phantom_2d != 0).sum(), rel=0.05)
    moved = seggen.affine(phantom_2d, spacing=SPACING_2D, translation_vox=(5, -3))
    assert np.array_equal(moved[5:, :-3], phantom_2d[:-5, 3:])


def test_elastic_deformation_stays_within_its_displacement(phantom_2d):
    out = seggen.elastic(phantom_2d, 0, spacing=SPACING_2D, max_displacement_vox=4.0)
    assert not np.array_equal(out, phantom_2d)
    fg = phantom_2d != 0
    distance = ndimage.distance_transform_edt(~fg)
    assert distance[(out != 0)].max() <= 4.0 * np.sqrt(2) + 1e-6


def test_seggen_applies_each_transform_with_probability_one_half(phantom_2d):
    counts = {"rotation": 0, "scaling": 0, "translation": 0, "elastic": 0}
    rng = np.random.default_rng(0)
    n = 200
    for _ in range(n):
        _, done = seggen.seggen(phantom_2d[::2, ::2].copy(), rng, spacing=SPACING_2D)
        for text in done:
            counts[text.split("(")[0]] += 1
    for name, count in counts.items():
        assert 0.38 < count / n < 0.62, (name, count)
    _, done = seggen.seggen(phantom_2d, 1, spacing=SPACING_2D, probability=1.0)
    angle = float(done[0].split("=")[1].rstrip(")"))
    factor = float(done[1].split("=")[1].rstrip(")"))
    assert -15 <= angle <= 15 and 0.85 <= factor <= 1.25


def test_operations_reject_bad_arguments(phantom_2d):
    with pytest.raises(ValueError, match="strength"):
        ops.erosion(phantom_2d, 0, 1.5, spacing=SPACING_2D)
    with pytest.raises(ValueError, match="spacing"):
        ops.erosion(phantom_2d, 0, 0.5, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="integer"):
        ops.erosion(phantom_2d.astype(float), 0, 0.5, spacing=SPACING_2D)
