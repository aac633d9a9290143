"""The multi-rater folder layout (``CASE/rater_k.nii.gz``): numbered raters in numeric order,
skipped folders, the chosen foreground values and the masks' spacing. Expected values come from
the files written here (listed by hand, read back with nibabel), not from the module's code."""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np

from segqc.io.geometry import Geometry
from segqc.io.images import write_image
from segqc.io.raters import case_folder_images, find_rater_cases, foreground_mask, read_rater_masks


def _write(path: Path, array: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    direction = tuple(float(v) for v in np.eye(array.ndim).ravel())
    write_image(path, array, Geometry(shape=array.shape, spacing=spacing, origin=(0.0,) * array.ndim,
                                      direction=direction))


def _mask(pixels: int) -> np.ndarray:
    """A 3 x 4 map whose first ``pixels`` pixels (row by row) are foreground: rater k has k pixels."""
    mask = np.zeros(12, np.uint8)
    mask[:pixels] = 1
    return mask.reshape(3, 4)


def test_numbered_raters_come_in_numeric_order_past_nine(tmp_path):
    """Reference: the files written, rater_1 ... rater_11 (rater k marks k pixels); by name,
    rater_10 and rater_11 would come before rater_2."""
    for k in range(1, 12):
        _write(tmp_path / "raters" / "a" / f"rater_{k}.nii.gz", _mask(k))
    [case] = find_rater_cases(tmp_path / "raters")
    assert case.names == tuple(str(k) for k in range(1, 12))
    assert [p.name for p in case.raters] == [f"rater_{k}.nii.gz" for k in range(1, 12)]
    masks, _ = read_rater_masks(case)
    assert masks.sum(axis=(1, 2)).tolist() == list(range(1, 12))


def test_hidden_and_underscore_folders_are_not_cases(tmp_path):
    """Reference: the folders written; ``_unused`` and ``.cache`` hold rater and image files too
    but are skipped, ``a`` and ``b`` are the cases."""
    root = tmp_path / "raters"
    for folder in ("b", "a", "_unused", ".cache"):
        _write(root / folder / "rater_1.nii.gz", _mask(2))
        _write(root / folder / "image.nii.gz", _mask(2).astype(np.float32))
    assert [c.case for c in find_rater_cases(root)] == ["a", "b"]
    assert sorted(case_folder_images(root)) == ["a", "b"]


def test_the_foreground_values_select_only_those_labels(tmp_path):
    """Reference: hand-made map of values 0, 1, 2 and 3; foreground (2,) marks only the 2s,
    (1, 3) the 1s and 3s, none given every non-zero value."""
    labels = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [2, 2, 0, 1]], np.uint8)
    np.testing.assert_array_equal(foreground_mask(labels, [2]), labels == 2)
    np.testing.assert_array_equal(foreground_mask(labels, (1, 3)), (labels == 1) | (labels == 3))
    np.testing.assert_array_equal(foreground_mask(labels), labels != 0)
    _write(tmp_path / "raters" / "a" / "rater_1.nii.gz", labels)
    _write(tmp_path / "raters" / "a" / "rater_2.nii.gz", np.where(labels == 2, 0, labels).astype(np.uint8))
    [case] = find_rater_cases(tmp_path / "raters")
    masks, _ = read_rater_masks(case, foreground=[2])
    assert masks.sum(axis=(1, 2)).tolist() == [int((labels == 2).sum()), 0] == [4, 0]


def test_the_masks_spacing_is_in_the_arrays_axis_order(tmp_path):
    """Reference: nibabel's voxel sizes of the written file (its data array has the same axis order
    as the mask array, checked by the shape): 0.7, 0.8 and 2.5 mm along the axes of a 4 x 5 x 3
    volume."""
    labels = np.zeros((4, 5, 3), np.uint8)
    labels[1:3, 2:4, 1] = 1
    path = tmp_path / "raters" / "a" / "rater_1.nii.gz"
    _write(path, labels, spacing=(0.7, 0.8, 2.5))
    stored = nibabel.load(path)
    assert stored.shape == (4, 5, 3)
    [case] = find_rater_cases(tmp_path / "raters")
    masks, spacing = read_rater_masks(case)
    assert masks.shape == (1, 4, 5, 3)
    np.testing.assert_array_equal(masks[0], np.asarray(stored.dataobj) > 0)
    np.testing.assert_allclose(spacing, [float(z) for z in stored.header.get_zooms()], rtol=1e-6)
    np.testing.assert_allclose(spacing, (0.7, 0.8, 2.5), rtol=1e-6)
