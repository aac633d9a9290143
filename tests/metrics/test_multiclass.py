"""Multi-class Dice (QCResUNet appendix A) and per-class Dice against brute-force counting."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from segqc.metrics.multiclass import generalized_dice, multiclass_counts, multiclass_dice, per_class_dice
from segqc.metrics.registry import EmptyPolicy


def _brute_force(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int]:
    """Voxel by voxel, word for word from appendix A."""
    tp = fp = fn = 0
    for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
        if p != 0 and p == g:
            tp += 1
        if p != 0 and p != g:
            fp += 1
        if g != 0 and p != g:
            fn += 1
    return tp, fp, fn


def _random_pair(rng: np.random.Generator, shape, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    gt = rng.integers(0, n_labels + 1, size=shape).astype(np.uint8)
    pred = gt.copy()
    flip = rng.random(shape) < rng.uniform(0.05, 0.8)
    pred[flip] = rng.integers(0, n_labels + 1, size=int(flip.sum()))
    return pred, gt


@pytest.mark.parametrize("shape", [(7, 9), (5, 6, 4)])
def test_multiclass_dice_matches_brute_force_definition(shape):
    rng = np.random.default_rng(1)
    for _ in range(20):
        pred, gt = _random_pair(rng, shape, int(rng.integers(1, 5)))
        tp, fp, fn = _brute_force(pred, gt)
        assert tuple(multiclass_counts(pred, gt)) == (tp, fp, fn)
        result = multiclass_dice(pred, gt)
        if tp + fp + fn == 0:
            assert math.isnan(result.value) and result.empty == "both_empty:nan"
        else:
            assert result.value == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-15)
            assert result.empty == ""


def test_wrong_class_counts_as_false_positive_and_false_negative():
    gt = np.array([[1, 1, 2, 0]], dtype=np.uint8)
    pred = np.array([[1, 2, 2, 0]], dtype=np.uint8)
    assert tuple(multiclass_counts(pred, gt)) == (2, 1, 1)
    assert multiclass_dice(pred, gt).value == pytest.approx(4 / 6)


def test_multiclass_dice_is_the_micro_average_of_per_class_counts():
    rng = np.random.default_rng(5)
    pred, gt = _random_pair(rng, (20, 20, 6), 3)
    tp = sum(int(((pred == c) & (gt == c)).sum()) for c in (1, 2, 3))
    size = sum(int((pred == c).sum() + (gt == c).sum()) for c in (1, 2, 3))
    assert multiclass_dice(pred, gt).value == pytest.approx(2 * tp / size)


def test_per_class_dice_matches_independent_counts_and_empty_policy():
    rng = np.random.default_rng(2)
    pred, gt = _random_pair(rng, (12, 11, 5), 3)
    pred[pred == 3] = 1  # class 3 only in the ground truth
    gt[gt == 2] = 0  # class 2 only in the prediction
    result = per_class_dice(pred, gt, [1, 2, 3, 7])
    p, g = pred == 1, gt == 1
    assert result[1].value == pytest.approx(2 * (p & g).sum() / (p.sum() + g.sum()))
    assert (result[2].value, result[2].empty) == (0.0, "gt_empty:worst")
    assert (result[3].value, result[3].empty) == (0.0, "pred_empty:worst")
    assert math.isnan(result[7].value) and result[7].empty == "both_empty:nan"
    best = per_class_dice(pred, gt, [7], empty=EmptyPolicy(both_empty="best"))
    assert best[7].value == 1.0


def test_empty_rules_of_the_multiclass_dice():
    empty = np.zeros((4, 4), dtype=np.uint8)
    some = empty.copy()
    some[1, 1] = 2
    assert math.isnan(multiclass_dice(empty, empty).value)
    assert multiclass_dice(some, empty).empty == "gt_empty:worst"
    assert multiclass_dice(empty, some).value == 0.0
    assert multiclass_dice(empty, some, empty=EmptyPolicy(pred_empty="nan")).empty == "pred_empty:nan"
    assert multiclass_dice(some, some).value == 1.0


def test_inputs_are_validated_and_not_modified():
    pred = np.array([[1, 2]], dtype=np.uint16)
    gt = pred.copy()
    multiclass_dice(pred, gt)
    per_class_dice(pred, gt, [1, 2])
    assert pred.tolist() == [[1, 2]]
    with pytest.raises(ValueError, match="shape"):
        multiclass_dice(pred, gt[:, :1])
    with pytest.raises(ValueError, match="integer"):
        multiclass_dice(pred.astype(float), gt)


def _two_classes(dtype) -> np.ndarray:
    label = np.zeros((10, 10), dtype=dtype)
    label[1:4, 1:4] = 1
    label[5:9, 5:9] = 2
    return label


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint32, np.int64, np.uint64])
def test_generalized_and_per_class_dice_take_label_maps_of_every_integer_dtype(dtype):
    """Once: uint64 maps were a numpy casting TypeError (int64 * n + uint64 is float64)."""
    gt = _two_classes(dtype)
    pred = gt.copy()
    pred[1, 1] = 0  # class 1: 8 of 9 voxels -> Dice 16/17
    assert generalized_dice(gt, gt, [1, 2]).value == 1.0
    assert per_class_dice(pred, gt, [1, 2])[1].value == pytest.approx(16 / 17, rel=1e-14)
    # square weights: w1 = 1/81, w2 = 1/256
    expected = 2 * (8 / 81 + 16 / 256) / ((8 + 9) / 81 + 32 / 256)
    assert generalized_dice(pred, gt, [1, 2]).value == pytest.approx(expected, rel=1e-14)


def test_negative_label_values_are_refused_not_miscounted():
    """Once: gt with label -1 gave a generalized Dice of 0.4608 instead of 0.5294 (the joint
    histogram key pred * n + gt aliased -1 with another pair)."""
    gt = _two_classes(np.int64)
    negative = np.where(gt == 2, -1, gt)
    for call in (lambda: generalized_dice(gt, negative, [1, 2]), lambda: per_class_dice(negative, gt, [1]),
                 lambda: multiclass_dice(gt, negative)):
        with pytest.raises(ValueError, match="negative label values"):
            call()
    with pytest.raises(ValueError, match="label values are 0 \\(background\\) and positive"):
        per_class_dice(gt, gt, [-1])


@pytest.mark.parametrize(("labels", "words"), [([1.5], "labels hold 1.5; label values are integers"),
                                               ([], "at least one class"), ([0, 1], "hold 0, the background")])
def test_generalized_dice_refuses_labels_that_are_no_classes(labels, words):
    """Once: [1.5] was truncated to class 1 (0.86), [] gave NaN tagged both_empty for two non-empty
    maps, and [0, 1] scored the background as a class."""
    gt = _two_classes(np.uint8)
    with pytest.raises(ValueError, match=re.escape(words)):
        generalized_dice(gt, gt, labels)
