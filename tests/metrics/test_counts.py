"""Voxel counts per value: equal to numpy's own bincount / unique on every dtype and layout, and
without the whole-array int64 copy np.bincount makes (the reason the module exists)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from segqc.metrics.counts import chunked_bincount, value_counts

DTYPES = [bool, np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.int64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", [1, 7, 1000, 1 << 20])
def test_chunked_bincount_equals_numpys_on_every_dtype_layout_and_chunk(dtype, chunk):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 2 if dtype is bool else 40, size=(13, 11, 9)).astype(dtype)
    for view in (array, array.transpose(2, 0, 1), array[::2, :, 1:]):  # contiguous and not
        expected = np.bincount(np.asarray(view).astype(np.int64).ravel())
        np.testing.assert_array_equal(chunked_bincount(view, chunk=chunk), expected)
        np.testing.assert_array_equal(chunked_bincount(view, minlength=60, chunk=chunk),
                                      np.bincount(np.asarray(view).astype(np.int64).ravel(), minlength=60))


def test_chunked_bincount_of_a_value_only_in_a_later_chunk_and_of_nothing():
    array = np.zeros(100, np.uint8)
    array[95] = 200  # the largest value lies in the last chunk: the table grows
    counts = chunked_bincount(array, chunk=10)
    assert counts.size == 201 and counts[0] == 99 and counts[200] == 1
    np.testing.assert_array_equal(chunked_bincount(np.zeros(0, np.uint8), minlength=3), [0, 0, 0])


def test_bad_values_raise_as_numpy_does():
    with pytest.raises(ValueError):
        chunked_bincount(np.array([1, -1, 2], np.int16), chunk=2)
    with pytest.raises(TypeError):
        chunked_bincount(np.array([0.5, 1.0]))
    with pytest.raises(TypeError):
        value_counts(np.array([0.5, 1.0]))  # once silently truncated to 0 and 1


@pytest.mark.parametrize("values", [
    np.array([[0, 3], [3, 7]], np.uint8),
    np.array([5, 0, 5, 2**30], np.int64),          # a large id: counted by sorting
    np.array([-4, 0, 2, 2], np.int32),             # negative values are present values too
    np.array([True, False, True]),
    np.zeros((0, 3), np.uint16),
])
def test_value_counts_equals_numpys_unique(values):
    found, counts = value_counts(values)
    expected, expected_counts = np.unique(values.astype(np.int64), return_counts=True)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_array_equal(counts, expected_counts)
    assert found.dtype == counts.dtype == np.int64


def test_counting_a_uint8_volume_does_not_copy_it_to_int64():
    """np.bincount on a uint8 volume allocates 8 bytes per voxel (its int64 copy): 1.6 GB for a
    512 x 512 x 800 CT label map. The chunked count allocates a few MB whatever the volume."""
    volume = np.random.default_rng(1).integers(0, 118, size=(64, 256, 256), dtype=np.uint8)  # 4.2 M voxels
    tracemalloc.start()
    try:
        chunked_bincount(volume)
        value_counts(volume)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.3 * 8 * volume.size, peak  # an int64 copy would be 33.5 MB; one chunk takes 8.4 MB
    np.testing.assert_array_equal(chunked_bincount(volume), np.bincount(volume.ravel()))


def _reference_boxes(labels):
    out = {}
    for value in np.unique(labels):
        if value > 0:
            points = np.argwhere(labels == value)
            out[int(value)] = tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(points.min(0), points.max(0)))
    return out


@pytest.mark.parametrize("values", [(1, 2, 7), (3, 2**31 - 1, 10**8), (5, 2**20 + 1, 65535)])
def test_label_boxes_equal_each_values_own_box_whatever_the_largest_value(values):
    """find_objects keeps a slot per value up to the largest: a label of 2^31 - 1 raised
    MemoryError in `evaluate` and 10^8 took 37 s and 5.7 GB for a 4000-voxel map."""
    from segqc.metrics.masks import label_boxes

    labels = np.zeros((9, 8, 7), np.int64)
    labels[1:3, 2:5, 0:2] = values[0]
    labels[4:9, 0:1, 3:7] = values[1]
    labels[0, 7, 6] = values[2]
    labels[2, 2, 2] = -4  # not a label
    for dtype in (np.int64, np.int32) if max(values) < 2**31 else (np.int64,):
        assert label_boxes(labels.astype(dtype)) == _reference_boxes(labels)
    assert label_boxes(np.zeros((3, 3), np.uint8)) == {} and label_boxes(np.zeros((0, 3), np.int32)) == {}
