"""The row ranges of chunked sampling passes, by hand."""

from __future__ import annotations

import pytest
import torch

from segqc.nn.chunks import SLICES_PER_PASS, by_rows, repeat_rows, row_chunks, samples_per_pass


def test_a_pass_takes_whole_samples_of_every_slice_and_at_least_one():
    assert SLICES_PER_PASS == 8
    assert samples_per_pass(1) == 8 and samples_per_pass(3) == 2 and samples_per_pass(16) == 1
    assert samples_per_pass(1, 4) == 2 and samples_per_pass(2, 8) == 1  # a stack of D slices counts D
    assert samples_per_pass(3, per_pass=100) == 33
    with pytest.raises(ValueError):
        samples_per_pass(0)


def test_row_chunks_cover_every_row_once_with_a_short_last_chunk():
    assert row_chunks(7, 3, 3) == [slice(0, 9), slice(9, 18), slice(18, 21)]  # samples 0-2, 3-5, 6
    assert row_chunks(4, 2, 10) == [slice(0, 8)]
    assert row_chunks(0, 2, 3) == []
    with pytest.raises(ValueError):
        row_chunks(4, 2, 0)


def test_repeat_rows_gives_each_row_its_slice_and_by_rows_keeps_the_order():
    per_slice = torch.tensor([[10.0], [20.0]])  # batch of 2 slices
    assert repeat_rows(per_slice, slice(4, 10), 2).flatten().tolist() == [10, 20, 10, 20, 10, 20]
    with pytest.raises(ValueError):
        repeat_rows(per_slice, slice(1, 4), 2)  # not whole samples
    rows = torch.arange(10.0)
    assert torch.equal(by_rows(lambda r: rows[r] * 2, row_chunks(5, 2, 2)), rows * 2)
