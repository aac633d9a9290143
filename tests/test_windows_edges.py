"""Edge rules of the window paste: the output keeps the window's dtype (hand-made arrays)."""

from __future__ import annotations

import numpy as np

from segqc.windows import paste_window


def test_paste_keeps_the_dtype_of_the_window():
    """A uint8 label window pasted into a (3, 3) grid stays uint8 with its values (by hand)."""
    window = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    out = paste_window(window, (1, 1), (3, 3))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 0, 0], [0, 1, 2], [0, 3, 4]])
