"""Losses shared by segqc's learned methods (those MONAI has, e.g. Dice + CE or generalized Dice,
are used from MONAI directly)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1e-5) -> torch.Tensor:
    """``1 -`` the mean foreground soft Dice (classes 1..C-1) of ``softmax(logits)`` against integer
    targets, with TP/FP/FN summed over the batch and the pixels (batch Dice).

    ``logits``: ``(B, C, H, W)``; ``target``: ``(B, H, W)`` class indices. A class absent from both
    the batch's targets and predictions scores ``smooth / smooth = 1`` (no loss)."""
    probs = logits.softmax(dim=1)
    one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    denominator = probs.sum(dims) + one_hot.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return 1.0 - dice[1:].mean()


def mean_dice_loss(probs: torch.Tensor, onehot: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``1 - 2 sum(p y) / (sum p + sum y)`` per sample and class (background included), averaged
    (LDSeg Eq. 15; the U-Net baseline of ``segqc seg`` uses the same). ``probs`` and ``onehot``:
    ``(B, K, ...)``. A class absent from a sample's target and prediction scores 0 loss."""
    dims = tuple(range(2, probs.ndim))
    inter = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    return (1.0 - (2.0 * inter + eps) / (total + eps)).mean()


def gaussian_kl(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over the latent elements and averaged over the batch
    (``log_var`` = log sigma^2; both ``(B, ...)``)."""
    return 0.5 * (mu.pow(2) + log_var.exp() - log_var - 1.0).flatten(1).sum(1).mean()


def feature_consistency(features: Sequence[torch.Tensor | None],
                        targets: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """The mean over the feature maps of ``mean((f - t)^2) / var(t)``: each map's squared
    difference to its target relative to the target's variance over the batch (so shrinking the
    features cannot lower it); pairs with None are skipped. The ``noise_consistency`` loss of
    ``segqc seg``'s methods: ``features`` of noise-augmented slices against ``targets``, the same
    slices' features without noise. 0 for identical features; about 2
    for features unrelated to targets of the same spread."""
    terms = [((f - t) ** 2).mean() / (t.var() + 1e-8) for f, t in zip(features, targets, strict=True)
             if f is not None and t is not None]
    if not terms:
        raise ValueError("no feature map to compare")
    return torch.stack(terms).mean()
