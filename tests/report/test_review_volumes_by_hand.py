"""The review viewer's layers as NIfTI bytes, against values worked out by hand: the RAS affine
of 3D and 2D grids, the error layer of two label maps and of a stored error map, label values
above 255, where the viewer opens, and how many layers the cache keeps."""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np
import pytest

from segqc.io.geometry import Geometry
from segqc.io.images import write_image
from segqc.review.volumes import VolumeCache, nifti_bytes
from segqc.review.worklist import ReviewCase

_EYE3 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
_GRID = Geometry(shape=(6, 5, 3), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=_EYE3)


def _served(data: bytes) -> np.ndarray:
    return np.asarray(nibabel.Nifti1Image.from_bytes(data).dataobj)


def _case(tmp_path: Path, **arrays: np.ndarray) -> ReviewCase:
    files = {}
    for name, array in arrays.items():
        files[name] = tmp_path / f"{name}.nii.gz"
        write_image(files[name], array, _GRID)
    return ReviewCase("c0", False, "", None, {}, files=files)


def test_the_affine_is_the_lps_grid_turned_to_ras() -> None:
    """Spacing (2, 3, 4) mm, origin (10, 20, 30) LPS, identity directions: RAS axes x and y flip
    sign, so the affine is diag(-2, -3, 4) with translation (-10, -20, 30)."""
    geometry = Geometry(shape=(2, 2, 2), spacing=(2.0, 3.0, 4.0), origin=(10.0, 20.0, 30.0), direction=_EYE3)
    affine = nibabel.Nifti1Image.from_bytes(nifti_bytes(np.zeros((2, 2, 2), np.uint8), geometry)).affine
    expected = np.array([[-2.0, 0, 0, -10.0], [0, -3.0, 0, -20.0], [0, 0, 4.0, 30.0], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(affine, expected)


def test_a_2d_image_is_one_slice_with_its_spacing_and_origin() -> None:
    """A (3, 4) image of spacing (2, 3) mm at (5, 6): a (3, 4, 1) volume, in-plane affine
    diag(-2, -3) and translation (-5, -6)."""
    geometry = Geometry(shape=(3, 4), spacing=(2.0, 3.0), origin=(5.0, 6.0), direction=(1.0, 0.0, 0.0, 1.0))
    image = nibabel.Nifti1Image.from_bytes(nifti_bytes(np.ones((3, 4), np.uint8), geometry))
    assert image.shape == (3, 4, 1)
    np.testing.assert_allclose(image.affine[:2, :2], np.diag([-2.0, -3.0]))
    np.testing.assert_allclose(image.affine[:2, 3], [-5.0, -6.0])


def test_the_error_layer_marks_a_wrong_class_not_only_a_wrong_foreground(tmp_path: Path) -> None:
    """Class 2 where the reference says 1 is an error; a missed voxel is one too."""
    seg = np.zeros((6, 5, 3), np.uint8)
    ref = np.zeros_like(seg)
    seg[1, 1, 1], ref[1, 1, 1] = 2, 1   # wrong class
    seg[2, 2, 2], ref[2, 2, 2] = 1, 1   # right
    ref[4, 4, 0] = 1                     # missed
    expected = np.zeros(seg.shape, np.uint8)
    expected[1, 1, 1] = expected[4, 4, 0] = 1
    served = _served(VolumeCache().layer(_case(tmp_path, segmentation=seg, reference=ref), "error"))
    np.testing.assert_array_equal(served, expected)


def test_a_stored_error_map_is_1_wherever_any_class_is_wrong(tmp_path: Path) -> None:
    """Stored error maps hold a bit per class (1, 2, 3 = both): every non-zero voxel is an error."""
    stored = np.zeros((6, 5, 3), np.uint8)
    stored[0, 0, 0], stored[1, 0, 0], stored[2, 0, 0] = 1, 2, 3
    served = _served(VolumeCache().layer(_case(tmp_path, error=stored), "error"))
    assert served.sum() == 3 and served[0, 0, 0] == served[1, 0, 0] == served[2, 0, 0] == 1


def test_a_label_value_of_256_is_not_wrapped_to_0(tmp_path: Path) -> None:
    seg = np.zeros((6, 5, 3), np.uint16)
    seg[1, 2, 0], seg[3, 3, 1] = 256, 7
    served = _served(VolumeCache().layer(_case(tmp_path, segmentation=seg), "segmentation"))
    assert served[1, 2, 0] == 256 and served[3, 3, 1] == 7 and served.sum() == 263


def test_the_viewer_opens_at_the_centre_of_the_foreground_box(tmp_path: Path) -> None:
    """Foreground on rows 2..5, columns 1..2, slice 2: the centre voxel (3, 1, 2) (rounded down)."""
    seg = np.zeros((6, 5, 3), np.uint8)
    seg[2:6, 1:3, 2] = 1
    assert VolumeCache().focus(_case(tmp_path, segmentation=seg)) == [3, 1, 2]


def test_an_empty_segmentation_opens_the_viewer_on_the_reference(tmp_path: Path) -> None:
    seg = np.zeros((6, 5, 3), np.uint8)
    ref = np.zeros_like(seg)
    ref[0:2, 4, 0:3] = 1   # rows 0..1 -> 0, column 4, slices 0..2 -> 1
    assert VolumeCache().focus(_case(tmp_path, segmentation=seg, reference=ref)) == [0, 4, 1]
    assert VolumeCache().focus(_case(tmp_path, segmentation=seg, reference=seg)) is None


def test_a_cache_of_two_layers_keeps_two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two layers in a cache of size 2 are both served again without reading a file; a third
    pushes out the one asked for least recently."""
    reads: list[str] = []
    original = VolumeCache._read

    def counting(layer: str, sources: list[Path], case: str):
        reads.append(layer)
        return original(layer, sources, case)

    monkeypatch.setattr(VolumeCache, "_read", staticmethod(counting))
    seg = np.zeros((6, 5, 3), np.uint8)
    seg[1, 1, 1] = 1
    case = _case(tmp_path, segmentation=seg, reference=np.zeros_like(seg), image=np.ones((6, 5, 3), np.float32))
    cache = VolumeCache(size=2)
    cache.layer(case, "segmentation")
    cache.layer(case, "reference")
    cache.layer(case, "segmentation")
    cache.layer(case, "reference")
    assert reads == ["segmentation", "reference"]
    cache.layer(case, "image")        # pushes out the segmentation (asked for before the reference)
    cache.layer(case, "reference")
    cache.layer(case, "segmentation")
    assert reads == ["segmentation", "reference", "image", "segmentation"]
