"""Shared losses against independent references (torch.distributions, MONAI)."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss

from segqc.nn.losses import gaussian_kl, soft_dice_loss


def test_gaussian_kl_equals_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 2, 4, 4, generator=generator)
    log_var = torch.randn(3, 2, 4, 4, generator=generator) * 0.5
    posterior = torch.distributions.Normal(mu, (0.5 * log_var).exp())
    prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(posterior, prior).flatten(1).sum(1).mean()
    assert torch.allclose(gaussian_kl(mu, log_var), expected, atol=1e-5)


def test_soft_dice_loss_equals_monai_batch_dice_without_background():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, 8, 8, generator=generator)
    target = torch.randint(0, 3, (4, 8, 8), generator=generator)
    reference = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True,
                         smooth_nr=1e-5, smooth_dr=1e-5)(logits, target[:, None])
    assert torch.allclose(soft_dice_loss(logits, target), reference, atol=1e-6)
