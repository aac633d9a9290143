"""The U-Net baseline's network: MONAI ``UNet`` in 2D, and its loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segqc.nn.losses import mean_dice_loss
from segqc.seg.unet.config import UnetConfig

__all__ = ["build_unet", "segmentation_loss", "set_mc_dropout"]


def build_unet(config: UnetConfig, *, image_channels: int, classes: int) -> nn.Module:
    """A 2D MONAI ``UNet`` from ``image_channels`` to ``classes`` logits (instance norm, PReLU,
    ``config.dropout`` after every convolution unit)."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=image_channels, out_channels=classes, channels=config.channels,
                strides=(2,) * (len(config.channels) - 1), num_res_units=config.res_units, dropout=config.dropout)


def segmentation_loss(logits: torch.Tensor, gt: torch.Tensor, gamma: float) -> tuple[torch.Tensor, dict[str, float]]:
    """``CE + gamma Dice`` of ``logits`` (B, K, S, S) against class indices ``gt`` (B, S, S), or
    against class probabilities ``gt`` (B, K, S, S) (soft targets: the cross-entropy with the
    target distribution and the Dice with the soft masks), and its parts."""
    soft = gt.ndim == logits.ndim
    onehot = gt.float() if soft else F.one_hot(gt.long(), logits.shape[1]).permute(0, 3, 1, 2).float()
    ce = F.cross_entropy(logits, onehot if soft else gt.long())
    dice = mean_dice_loss(torch.softmax(logits, dim=1), onehot)
    loss = ce + gamma * dice
    return loss, {"loss": loss.item(), "ce": ce.item(), "dice": dice.item()}


def set_mc_dropout(network: nn.Module, active: bool) -> int:
    """Put ``network`` in eval mode with its dropout layers in training mode when ``active``
    (Monte-Carlo dropout); returns the number of dropout layers switched."""
    network.eval()
    count = 0
    for module in network.modules():
        if isinstance(module, (nn.Dropout, nn.Dropout2d, nn.Dropout3d)):
            module.train(active)
            count += 1
    return count
