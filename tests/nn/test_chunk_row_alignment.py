"""Row ranges that do not start on a sample boundary are refused, not silently misaligned."""

from __future__ import annotations

import pytest
import torch

from segqc.nn.chunks import repeat_rows


def test_a_range_of_whole_length_starting_inside_a_sample_is_refused() -> None:
    """Rows 1..4 of a batch of 2 slices are 4 rows (two samples' worth) but start at slice 1 of
    sample 0: repeating the per-slice tensor would pair row 1 with slice 0's conditioning. A
    check of the length alone lets it through."""
    per_slice = torch.tensor([[10.0], [20.0]])
    with pytest.raises(ValueError, match="not whole samples"):
        repeat_rows(per_slice, slice(1, 5), 2)
    # the aligned range of the same length is fine: slice 0, slice 1, slice 0, slice 1
    assert repeat_rows(per_slice, slice(2, 6), 2).flatten().tolist() == [10.0, 20.0, 10.0, 20.0]
