"""The field of view of the ``segqc seg`` slices (``spacing_mm``): a window of ``size * spacing_mm``
mm centred on each slice, padded where it reaches past the image, and its inverse at inference
(outside the window: background with certainty). Expected values are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from segqc.errors import InputError
from segqc.seg.inference import restore_case, segment_case
from segqc.seg.slices import crop_or_pad, image_slices, label_slices, slice_window


def test_the_window_is_size_times_spacing_in_mm_centred_on_the_slice():
    # 10 x 20 px at 1 x 2 mm; 4 px of 2.5 mm = 10 mm: 10 rows of 1 mm, 5 columns of 2 mm
    assert slice_window((10, 20), (1.0, 2.0), 4, 2.5) == (0, 7, 10, 5)
    # 8 mm of 1 mm rows inside 4 px of an 8 x 8 image: 4 px wide window with a 2 px margin
    assert slice_window((8, 8, 3), (1.0, 1.0, 5.0), 4, 1.0) == (2, 2, 4, 4)
    # a window larger than the image starts before it (padding)
    assert slice_window((4, 4), (1.0, 1.0), 8, 1.0) == (-2, -2, 8, 8)
    assert slice_window((4, 4), (1.0, 1.0), 8, 0.0) is None
    with pytest.raises(ValueError, match="spacing"):
        slice_window((4, 4), None, 8, 1.0)


def test_crop_or_pad_cuts_the_window_and_fills_what_lies_outside():
    array = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_array_equal(crop_or_pad(array, (1, 1, 2, 2)), [[5, 6], [9, 10]])
    padded = crop_or_pad(array, (-1, -1, 6, 6), fill=-7)
    assert padded.shape == (6, 6)
    np.testing.assert_array_equal(padded[1:5, 1:5], array)
    assert (padded[0] == -7).all() and (padded[:, 5] == -7).all()
    # one fill value per channel: (n, C, H, W) with fill (1, C)
    stack = np.zeros((2, 3, 4, 4), np.float32)
    out = crop_or_pad(stack, (-1, 0, 5, 4), fill=np.array([[1.0, 2.0, 3.0]], np.float32))
    np.testing.assert_array_equal(out[:, :, 0, 0], [[1, 2, 3], [1, 2, 3]])
    assert (out[:, :, 1:] == 0).all()
    assert crop_or_pad(array, None) is array


def test_slices_of_a_field_of_view_magnify_the_centre():
    label = np.zeros((40, 40), np.uint8)
    label[18:22, 18:22] = 1  # a 4 x 4 mm square in the centre of a 40 x 40 mm image
    whole = label_slices(label, (0, 1), 20)
    window = label_slices(label, (0, 1), 20, spacing=(1.0, 1.0), spacing_mm=0.5)  # 10 x 10 mm around the centre
    assert whole[0].sum() == 4  # 2 x 2 px at 2 mm per pixel
    assert window[0].sum() == 64  # 8 x 8 px at 0.5 mm per pixel
    # the image is padded with its own minimum (after z-scoring), not with 0
    image = np.full((4, 4), 5.0, np.float32)
    image[0, 0] = 1.0
    slices = image_slices([image], 8, spacing=(1.0, 1.0), spacing_mm=1.0)  # 8 mm window around 4 mm
    z_min = (1.0 - image.mean()) / image.std()
    assert slices[0, 0, 0, 0] == pytest.approx(z_min, abs=1e-5)


class _Identity:
    """A "model" whose probabilities are the one-hot label slices it was given as images."""

    labels = (0, 1)
    image_channels = 1
    size = 8
    spacing_mm = 1.0


def _one_hot(model, slices, *, samples, steps, seed, keep_samples=True):
    fg = (slices[:, 0] > 0).astype(np.float32)
    mean = np.stack([1.0 - fg, fg], axis=1)
    return {"mean": mean, "std": np.zeros_like(mean), "samples": mean[None]}


def test_segment_case_puts_the_window_back_and_outside_is_certain_background():
    image = np.zeros((16, 12, 2), np.float32)
    image[6:10, 4:8, :] = 1.0  # inside the central 8 x 8 mm window
    image[0, 0, :] = 1.0  # outside it: the model never sees this pixel
    result = segment_case(_Identity(), _one_hot, [image], spacing=(1.0, 1.0, 10.0), outputs=("std",))
    expected = np.zeros((16, 12, 2), np.uint8)
    expected[6:10, 4:8, :] = 1
    np.testing.assert_array_equal(result["label"], expected)
    assert result["mean"].shape == (2, 16, 12, 2)
    assert (result["mean"][0, :4] == 1).all() and (result["entropy"][:4] == 0).all()
    with pytest.raises(InputError, match="spacing"):
        segment_case(_Identity(), _one_hot, [image])


def test_restore_case_drops_the_padding_of_a_window_larger_than_the_image():
    mean = np.zeros((1, 2, 8, 8), np.float32)
    mean[:, 0] = 1.0
    mean[0, :, 3:5, 3:5] = [[[0.0]], [[1.0]]]
    out = restore_case(_Identity(), {"mean": mean}, (4, 4), window=(-2, -2, 8, 8))
    expected = np.zeros((4, 4), np.uint8)
    expected[1:3, 1:3] = 1
    np.testing.assert_array_equal(out["label"], expected)


def test_configs_take_a_non_negative_field_of_view():
    from segqc.seg.ldseg.config import LdsegConfig
    from segqc.seg.unet.config import UnetConfig

    for config in (LdsegConfig.preset("tiny"), UnetConfig.preset("tiny")):
        assert config.spacing_mm == 0.0
        assert config.with_overrides(spacing_mm=2.0).spacing_mm == 2.0
        with pytest.raises(ValueError, match="spacing_mm"):
            config.with_overrides(spacing_mm=-1.0)


def test_label_slices_pad_a_field_of_view_larger_than_the_map_with_background():
    """The 8 mm window of a 4 x 4 px map reaches 2 px past every side: that padding is class 0."""
    label = np.zeros((4, 4), np.uint8)
    label[1:3, 1:3] = 1
    slices = label_slices(label, (0, 1), 8, spacing=(1.0, 1.0), spacing_mm=1.0)
    expected = np.zeros((1, 8, 8), np.uint8)
    expected[0, 3:5, 3:5] = 1
    np.testing.assert_array_equal(slices, expected)


def test_restored_probabilities_are_bilinear_as_scipys_grid_mode_zoom():
    """Each slice's mean probabilities go from size x size back to the image bilinearly with pixel
    centres aligned (scipy's zoom with grid_mode=True and edge values held)."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    p = rng.random((4, 4)).astype(np.float32)
    mean = np.stack([1.0 - p, p])[None]  # (1 slice, 2 classes, 4, 4)
    out = restore_case(_Identity(), {"mean": mean}, (8, 8))
    expected = ndimage.zoom(p.astype(np.float64), 2, order=1, grid_mode=True, mode="nearest")
    np.testing.assert_allclose(np.squeeze(out["mean"][1]), expected, atol=1e-6)


def test_the_case_uncertainty_is_the_mean_entropy_inside_the_predicted_foreground():
    from segqc.seg.inference import case_uncertainty

    label = np.zeros((4, 4), np.uint8)
    label[0, :2] = 1
    entropy = np.full((4, 4), 0.9, np.float32)
    entropy[0, :2] = [0.1, 0.3]
    assert case_uncertainty(label, entropy) == (pytest.approx(0.2), "foreground", 2)
    assert case_uncertainty(np.zeros_like(label), entropy) == (pytest.approx(entropy.mean()), "image", 0)
