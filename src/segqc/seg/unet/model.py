"""The U-Net baseline's network: MONAI ``UNet`` in 2D, and its loss."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from segqc.nn.losses import mean_dice_loss
from segqc.seg.unet.config import UnetConfig

__all__ = ["build_unet", "encoder_features", "encoder_modules", "encoder_outputs", "segmentation_loss",
           "set_mc_dropout"]


def build_unet(config: UnetConfig, *, image_channels: int, classes: int) -> nn.Module:
    """A 2D MONAI ``UNet`` from ``image_channels`` to ``classes`` logits (instance norm, PReLU,
    ``config.dropout`` after every convolution unit)."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=image_channels, out_channels=classes, channels=config.channels,
                strides=(2,) * (len(config.channels) - 1), num_res_units=config.res_units, dropout=config.dropout)


def encoder_modules(network: nn.Module) -> list[nn.Module]:
    """The units of a MONAI ``UNet``'s contracting path, finest first: each level's down-sampling
    unit and the bottom unit — the modules whose outputs the decoder reads. Each level is
    ``Sequential(down, SkipConnection(next level), up)``; the bottom is one unit (itself a
    ``Sequential`` when it is a plain ``Convolution``, i.e. ``res_units`` 0)."""
    from monai.networks.layers import SkipConnection

    layer = cast(nn.Module, network.model)
    units: list[nn.Module] = []
    while isinstance(layer, nn.Sequential) and len(layer) == 3 and isinstance(layer[1], SkipConnection):
        units.append(layer[0])
        layer = layer[1].submodule
    return [*units, layer]


def encoder_features(network: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``network(image)`` and the outputs of its :func:`encoder_modules`, finest first (with the
    graph, as the forward pass makes them)."""
    maps: list[torch.Tensor] = []
    handles = [unit.register_forward_hook(lambda _m, _i, out: maps.append(out)) for unit in encoder_modules(network)]
    try:
        logits = network(image)
    finally:
        for handle in handles:
            handle.remove()
    return logits, maps


def encoder_outputs(network: nn.Module, image: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of :func:`encoder_modules` for ``image``, finest first, without running the
    decoder: the maps :func:`encoder_features` gives, without the decoder's cost (the clean pass
    of ``noise_consistency``)."""
    maps: list[torch.Tensor] = []
    out = image
    for unit in encoder_modules(network):
        out = unit(out)
        maps.append(out)
    return maps


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
