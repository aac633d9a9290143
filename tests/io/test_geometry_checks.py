"""Geometry comparison of prediction and ground truth: the full physical grid, origin included.

Regression: ``check_same_geometry`` used to compare the origin only when ``origin_atol_mm`` was
given, so a prediction 50 mm off passed. References are hand-made grids, nibabel-written files and
the documented default tolerance ``max(1e-3 mm, 1e-2 * smallest spacing)``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segqc.errors import GeometryDifference, GeometryMismatchError, InputError
from segqc.io.geometry import Geometry, check_same_geometry, geometry_differences
from segqc.io.images import read_label_map


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert "--" not in message, "library messages name no command-line options"
    return message


def test_origin_50_mm_off_is_a_mismatch_by_default():
    gt = Geometry.from_shape((40, 50, 12), spacing=(1.5625, 1.5625, 10.0), origin=(0.0, 0.0, 0.0))
    pred = Geometry.from_shape((40, 50, 12), spacing=(1.5625, 1.5625, 10.0), origin=(50.0, 0.0, 0.0))
    with pytest.raises(GeometryMismatchError) as exc:
        check_same_geometry(pred, gt, pred_path="pred/p1.nii.gz", gt_path="gt/p1.nii.gz")
    assert _one_line(exc) == (
        "pred/p1.nii.gz: origin (50.0, 0.0, 0.0) mm differs from ground truth gt/p1.nii.gz "
        "(0.0, 0.0, 0.0) mm"
    )
    assert exc.value.path == Path("pred/p1.nii.gz")
    assert exc.value.differences == (
        GeometryDifference("origin", "(50.0, 0.0, 0.0) mm", "(0.0, 0.0, 0.0) mm"),
    )


@pytest.mark.parametrize(
    ("spacing", "tolerance"),
    [
        ((0.5, 0.5, 2.0), 0.005),  # 1e-2 * 0.5 mm
        ((3.0, 1.0, 1.0), 0.01),  # 1e-2 * 1 mm: the smallest spacing counts
        ((0.02, 0.02), 0.001),  # 1e-2 * 0.02 = 2e-4 < 1e-3: the floor
    ],
)
def test_default_origin_tolerance_is_a_hundredth_of_the_smallest_spacing_at_least_a_micrometre(
    spacing, tolerance
):
    shape = (4,) * len(spacing)
    gt = Geometry.from_shape(shape, spacing=spacing)
    for axis in range(len(spacing)):
        for sign in (1.0, -1.0):
            inside = [0.0] * len(spacing)
            inside[axis] = sign * 0.9 * tolerance
            outside = [0.0] * len(spacing)
            outside[axis] = sign * 1.1 * tolerance
            check_same_geometry(Geometry.from_shape(shape, spacing=spacing, origin=inside), gt)
            with pytest.raises(GeometryMismatchError) as exc:
                check_same_geometry(Geometry.from_shape(shape, spacing=spacing, origin=outside), gt)
            assert [d.what for d in exc.value.differences] == ["origin"]


def test_explicit_origin_tolerance_overrides_the_default():
    gt = Geometry.from_shape((4, 5, 6))
    pred = Geometry.from_shape((4, 5, 6), origin=(0.0, 0.0, 5.0))
    check_same_geometry(pred, gt, origin_atol_mm=5.5)
    with pytest.raises(GeometryMismatchError, match=r"origin \(0.0, 0.0, 5.0\) mm"):
        check_same_geometry(pred, gt, origin_atol_mm=1.0)


def test_geometry_differences_lists_every_difference_as_records():
    gt = Geometry.from_shape((4, 5, 6), spacing=(1.0, 1.0, 2.5))
    assert geometry_differences(gt, gt) == []
    flipped = (-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
    pred = Geometry((4, 5, 8), (1.0, 1.0, 2.0), (3.0, 0.0, 0.0), flipped)
    assert geometry_differences(pred, gt) == [
        GeometryDifference("shape", "(4, 5, 8)", "(4, 5, 6)"),
        GeometryDifference("spacing", "(1.0, 1.0, 2.0) mm", "(1.0, 1.0, 2.5) mm"),
        GeometryDifference("orientation", "RPS", "LPS"),
        GeometryDifference("origin", "(3.0, 0.0, 0.0) mm", "(0.0, 0.0, 0.0) mm"),
    ]
    with pytest.raises(GeometryMismatchError) as exc:
        check_same_geometry(pred, gt, pred_path="p.nii.gz", gt_path="g.nii.gz")
    assert _one_line(exc) == (
        "p.nii.gz: shape (4, 5, 8), spacing (1.0, 1.0, 2.0) mm, orientation RPS, origin (3.0, 0.0, 0.0) mm "
        "differ from ground truth g.nii.gz: shape (4, 5, 6), spacing (1.0, 1.0, 2.5) mm, orientation LPS, "
        "origin (0.0, 0.0, 0.0) mm"
    )
    assert list(exc.value.differences) == geometry_differences(pred, gt)


def test_oblique_direction_with_same_axis_codes_is_a_direction_difference():
    t = np.deg2rad(10.0)
    rotated = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    gt = Geometry.from_shape((4, 5, 6))
    pred = Geometry((4, 5, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(rotated.ravel()))
    (difference,) = geometry_differences(pred, gt)
    assert difference.what == "direction" and difference.gt == "(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)"


def test_dimension_mismatch_is_a_single_dimension_difference():
    with pytest.raises(GeometryMismatchError) as exc:
        check_same_geometry(Geometry.from_shape((4, 5)), Geometry.from_shape((4, 5, 1)), pred_path="p.png")
    message = _one_line(exc)
    assert message.startswith("p.png: 2D prediction cannot be compared with 3D ground truth")
    assert exc.value.differences == (GeometryDifference("dimension", "2D", "3D"),)


def test_geometry_methods_same_grid_and_differences():
    gt = Geometry.from_shape((4, 5, 6), spacing=(0.8, 0.8, 3.0), origin=(-10.0, 20.0, 5.0))
    near = Geometry.from_shape((4, 5, 6), spacing=(0.8, 0.8, 3.0), origin=(-10.0, 20.0, 5.005))
    far = Geometry.from_shape((4, 5, 6), spacing=(0.8, 0.8, 3.0), origin=(-10.0, 20.0, 5.009))
    assert gt.same_grid(gt) and near.same_grid(gt) and gt.same_grid(near)  # 0.005 < 0.008 mm
    assert not far.same_grid(gt) and not gt.same_grid(far)  # 0.009 > 0.008 mm
    assert far.differences(gt) == [
        GeometryDifference("origin", "(-10.0, 20.0, 5.009) mm", "(-10.0, 20.0, 5.0) mm")
    ]
    assert far.differences(gt, origin_atol_mm=0.01) == []


def test_geometry_error_survives_pickling_with_path_and_differences():
    """Errors cross process boundaries when cases are evaluated in worker processes."""
    gt = Geometry.from_shape((4, 5, 6))
    pred = Geometry.from_shape((4, 5, 6), origin=(1.0, 0.0, 0.0))
    with pytest.raises(GeometryMismatchError) as exc:
        check_same_geometry(pred, gt, pred_path="p.nii.gz")
    copy = pickle.loads(pickle.dumps(exc.value))
    assert type(copy) is GeometryMismatchError
    assert str(copy) == str(exc.value) and copy.path == Path("p.nii.gz")
    assert copy.differences == exc.value.differences
    plain = pickle.loads(pickle.dumps(InputError("bad", "x.nii")))
    assert str(plain) == "x.nii: bad" and plain.path == Path("x.nii") and plain.problem == "bad"


def test_real_label_map_shifted_50_mm_by_nibabel_is_rejected(tmp_path, shared_data):
    """A real HC18 mask (2D, spacing in the header) and a copy whose affine nibabel moved by 50 mm
    along x: the same pixels and spacing, a different place."""
    source = min(shared_data("hc18/labelsTr").glob("*.nii.gz"))
    ref = nib.load(source)
    affine = ref.affine.copy()
    affine[0, 3] += 50.0  # RAS x: the LPS x origin moves by -50 mm
    shifted_path = tmp_path / source.name
    nib.save(nib.Nifti1Image(np.asarray(ref.dataobj), affine, ref.header), shifted_path)

    gt = read_label_map(source)
    pred = read_label_map(shifted_path)
    np.testing.assert_array_equal(pred.array, gt.array)
    np.testing.assert_allclose(pred.geometry.spacing, gt.geometry.spacing, rtol=1e-6)
    check_same_geometry(gt.geometry, gt.geometry)
    with pytest.raises(GeometryMismatchError) as exc:
        check_same_geometry(pred.geometry, gt.geometry, pred_path=shifted_path, gt_path=source)
    message = _one_line(exc)
    assert str(shifted_path) in message and "origin" in message
    (difference,) = exc.value.differences
    assert difference.what == "origin"
    assert pred.geometry.origin[0] - gt.geometry.origin[0] == pytest.approx(-50.0, abs=1e-3)


def test_a_spacing_five_percent_off_is_a_difference_even_for_fine_grids():
    """The tolerance is relative (1e-3): 0.100 and 0.105 mm differ, 0.1 and 0.10005 do not."""
    from segqc.io.geometry import Geometry, geometry_differences

    def grid(spacing: float) -> Geometry:
        return Geometry(shape=(4, 4), spacing=(spacing, spacing), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0))

    assert [d.what for d in geometry_differences(grid(0.105), grid(0.100))] == ["spacing"]
    assert geometry_differences(grid(0.10005), grid(0.1)) == []
