"""QCResUNet training helpers checked against values worked out by hand: the training target of
an empty segmentation, the Dice bins of the balanced epochs, the weighted outside-the-window
error rates, the read-out weights of each sample source, the slice window of a batch and the
flips of the augmentation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from segqc.qc.qcresunet.train import (
    QcResUNetData,
    epoch_order,
    make_batch,
    outside_error_rates,
    readout_weights,
    true_quality,
)


def _data(segs: list[np.ndarray], gts: list[np.ndarray], labels: tuple[int, ...] = (0, 1, 2),
          images: list[np.ndarray] | None = None) -> QcResUNetData:
    n = len(segs)
    if images is None:
        images = [np.zeros((1, *s.shape), dtype=np.float16) for s in segs]
    classes = tuple((str(v), str(v), (v,)) for v in labels if v)
    return QcResUNetData(images, list(segs), list(gts), np.zeros((n, 2, len(labels))), ["c"] * n,
                         ["degraded"] * n, tuple(labels), classes, SimpleNamespace(size=segs[0].shape[-1]),
                         {}, 5.0, 3)


def test_an_empty_segmentation_of_a_non_empty_truth_scores_multiclass_dice_0() -> None:
    """Only two empty maps score a perfect 1 over all classes; an empty segmentation of a
    structure that is there misses all of it: multi-class Dice 0."""
    gt = np.zeros((6, 6, 2), dtype=np.uint8)
    gt[1:4, 1:4] = 1
    seg = np.zeros_like(gt)
    out = true_quality(seg, gt, (1.0, 1.0, 1.0), [(1,), (2,)], tolerance_mm=1.0)
    assert out[0, 0] == 0.0 and out[0, 1] == 0.0
    assert out[0, 2] == 1.0 and out[1, 2] == 1.0  # class 2 in neither map
    # and the mirror case: a segmentation of a structure the truth does not have
    out = true_quality(gt, seg, (1.0, 1.0, 1.0), [(1,), (2,)], tolerance_mm=1.0)
    assert out[0, 0] == 0.0


def test_epoch_bins_are_floored_not_rounded() -> None:
    """Dice 0.11 and 0.19 both fall in the bin [0.1, 0.2) of 10 bins: two bins are used, each
    gets half of the epoch, and the two low-Dice samples each come exactly once."""
    dice = np.array([0.11, 0.19, 0.91, 0.93])
    order = epoch_order(dice, 4, 10, np.random.default_rng(0))
    assert sorted(order[order < 2].tolist()) == [0, 1]
    assert sorted(order.tolist()) == [0, 1, 2, 3]


def test_outside_error_rates_pool_the_counts_times_each_samples_weight() -> None:
    """Class 1: (2 * 1 + 1 * 3) wrong of (2 * 4 + 1 * 4) outside; class 2: (2 * 0 + 1 * 2)
    of (2 * 2 + 1 * 2)."""
    seg = np.zeros((1, 4, 4), dtype=np.int16)
    data = _data([seg, seg], [seg, seg])
    data.outside = [np.array([[4, 1], [2, 0]]), np.array([[4, 3], [2, 2]])]
    rates = outside_error_rates(data, np.array([2.0, 1.0]))
    assert rates.tolist() == pytest.approx([5 / 12, 2 / 6])
    assert outside_error_rates(data).tolist() == pytest.approx([4 / 8, 2 / 4])


def test_readout_weights_of_each_source() -> None:
    """Degraded maps and ground truths are synthetic (weight 1); only the real segmentations of
    another folder get the real weight."""
    seg = np.zeros((1, 4, 4), dtype=np.int16)
    data = _data([seg] * 3, [seg] * 3)
    data.sources = ["degraded", "ground truth", "zoo/unet"]
    assert readout_weights(data, 4.0).tolist() == [1.0, 1.0, 4.0]


def test_the_slice_window_is_centred_on_the_foreground() -> None:
    """10 slices, foreground only on slice 7, a window of 4: slices 5..8 (centre 7 minus half
    the depth), so the foreground is the window's third slice."""
    seg = np.zeros((10, 4, 4), dtype=np.int16)
    seg[7, 1, 1] = 1
    image = np.broadcast_to(np.arange(10, dtype=np.float16)[None, :, None, None], (1, 10, 4, 4)).copy()
    batch = make_batch(_data([seg], [seg], images=[image]), [0], multiple=1, max_depth=4)
    assert batch["image"][0, 0, :, 0, 0].tolist() == [5.0, 6.0, 7.0, 8.0]
    assert batch["query"][0, 1].sum(dim=(1, 2)).tolist() == [0.0, 0.0, 1.0, 0.0]


def test_the_augmentation_flips_the_truth_with_the_segmentation() -> None:
    """A segmentation equal to its truth has no error whatever flips the augmentation draws,
    and the query is one of the four in-plane flips of the segmentation."""
    seg = np.zeros((2, 4, 4), dtype=np.int16)
    seg[0, 0, :3] = 1
    seg[1, 1:3, 0] = 2
    flips = [seg, seg[:, :, ::-1], seg[:, ::-1, :], seg[:, ::-1, ::-1]]
    seen = set()
    for seed in range(12):
        batch = make_batch(_data([seg], [seg.copy()]), [0], multiple=1, max_depth=8,
                           rng=np.random.default_rng(seed))
        assert not batch["sem"].any()
        query = batch["query"][0].argmax(0).numpy()
        matches = [k for k, f in enumerate(flips) if np.array_equal(query, f)]
        assert matches
        seen.update(matches)
    assert len(seen) > 1  # the flips did happen
