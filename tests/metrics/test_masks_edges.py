"""Mask and spacing checks (segqc.metrics.masks): what counts as foreground and which spacings are
refused, against numpy's own ``!= 0`` and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from segqc.metrics.binary import compare_masks
from segqc.metrics.masks import as_mask, check_spacing, find_values, label_boxes


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_negative_values_are_foreground_like_every_non_zero_value(dtype: type) -> None:
    """``non-zero = foreground``: a mask holding -1 (e.g. a signed label map) marks those voxels,
    so they count in the overlap like positive ones."""
    mask = np.array([[-1, 0, 2], [0, -3, 0]], dtype=dtype)
    np.testing.assert_array_equal(as_mask(mask), mask != 0)
    gt = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.uint8)
    assert compare_masks(mask, gt, (1.0, 1.0), metrics=("dice",))[0].value == 1.0


def test_a_bytes_spacing_is_refused_like_a_string() -> None:
    """A bytes object iterates as small integers; it is not a sequence of numbers and must be
    refused (a string is refused already by its characters)."""
    with pytest.raises(TypeError, match="sequence of numbers"):
        check_spacing(b"\x01\x01\x01", 3)
    with pytest.raises(TypeError, match="sequence of numbers"):
        check_spacing("111", 3)


@pytest.mark.parametrize("values", [(3,), (2, 5), (5, 2, 9)])
def test_find_values_gives_the_tight_box_and_mask_of_every_listed_value(values: tuple[int, ...]) -> None:
    """``find_values`` returns the tight bounding box of the voxels holding ANY of ``values`` and
    the mask of those voxels within it, as numpy's argwhere and isin give them."""
    rng = np.random.default_rng(3)
    labels = np.zeros((14, 12, 10), np.uint8)
    for value in (2, 3, 5, 9):
        corner = rng.integers(0, 8, size=3)
        size = rng.integers(1, 5, size=3)
        labels[tuple(slice(int(c), int(c + s)) for c, s in zip(corner, size))] = value
    wanted = np.isin(labels, values)
    where = np.argwhere(wanted)
    box = tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(where.min(axis=0), where.max(axis=0)))
    found = find_values(labels, values, label_boxes(labels))
    assert found is not None
    assert found[0] == box
    np.testing.assert_array_equal(found[1], wanted[box])
