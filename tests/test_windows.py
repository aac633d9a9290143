"""Crop and paste of windows reaching past the array: values worked out by hand."""

from __future__ import annotations

import numpy as np

from segqc.windows import crop_window, paste_window


def test_crop_keeps_leading_axes_and_fills_outside():
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    out = crop_window(array, (-1, 2), (3, 3), fill=-1)  # rows -1..1, columns 2..4 of each leading entry
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[0], [[-1, -1, -1], [2, 3, -1], [6, 7, -1]])
    np.testing.assert_array_equal(out[1], [[-1, -1, -1], [14, 15, -1], [18, 19, -1]])
    assert (crop_window(array, (5, 5), (2, 2), fill=9) == 9).all()  # no overlap at all


def test_paste_is_the_inverse_of_crop_inside_the_array():
    array = np.arange(20, dtype=np.float32).reshape(4, 5)
    window = crop_window(array, (1, -2), (2, 4), fill=0)
    back = paste_window(window, (1, -2), (4, 5), fill=-5)
    expected = np.full((4, 5), -5, np.float32)
    expected[1:3, 0:2] = array[1:3, 0:2]
    np.testing.assert_array_equal(back, expected)
