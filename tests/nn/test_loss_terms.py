"""The terms of ``mean_dice_loss`` and ``feature_consistency`` against plain numpy formulas and
hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segqc.nn.losses import feature_consistency, mean_dice_loss


def test_mean_dice_loss_is_per_sample_and_class_then_averaged():
    """numpy: Dice per (sample, class) over the pixels, eps in numerator and denominator, mean of
    1 - Dice over the B x K entries (MONAI-free reference)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 5))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 3, size=(2, 4, 5))
    onehot = np.moveaxis(np.eye(3)[labels], -1, 1)
    eps = 1e-5
    inter = (probs * onehot).sum(axis=(2, 3))
    total = probs.sum(axis=(2, 3)) + onehot.sum(axis=(2, 3))
    expected = float((1 - (2 * inter + eps) / (total + eps)).mean())
    got = mean_dice_loss(torch.from_numpy(probs), torch.from_numpy(onehot))
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_a_class_absent_from_target_and_prediction_costs_nothing():
    """Docstring: absent class -> (0 + eps) / (0 + eps) = 1, loss 0; a perfect prediction of the
    other classes -> total loss 0 (hand)."""
    onehot = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    onehot[0, 0, 0, :] = 1.0
    onehot[0, 1, 1, :] = 1.0  # class 2 absent
    assert float(mean_dice_loss(onehot.clone(), onehot)) == pytest.approx(0.0, abs=1e-12)


def test_feature_consistency_by_hand():
    """Two maps; term = mean((f - t)^2) / var(t) (unbiased, torch's default, as numpy ddof=1),
    averaged over the maps. Map 1: t = [0, 2], f = [1, 5]: mean sq diff (1 + 9)/2 = 5, var(t) = 2
    -> 2.5. Map 2: t = [0, 1, 2, 3], f = t: 0. Mean 1.25."""
    t1, f1 = torch.tensor([0.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 5.0], dtype=torch.float64)
    t2 = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    assert np.var([0.0, 2.0], ddof=1) == 2.0
    got = feature_consistency([f1, t2.clone(), None], [t1, t2, t1])
    assert float(got) == pytest.approx(1.25, rel=1e-6)
