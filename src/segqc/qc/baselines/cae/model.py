"""The convolutional autoencoder: one-hot mask in, class logits out."""

from __future__ import annotations

import torch
from torch import nn

from segqc.qc.baselines.cae.config import CaeConfig


def _stage(cin: int, cout: int, *, down: bool) -> nn.Sequential:
    conv: nn.Module
    if down:
        conv = nn.Conv2d(cin, cout, 4, stride=2, padding=1)
    else:
        conv = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


class ConvAutoencoder(nn.Module):
    """Encoder of stride-2 stages to a ``latent_channels`` bottleneck at 1/2**depth of the size,
    mirrored decoder; input one-hot (B, n_classes, H, W), output logits of the same shape."""

    def __init__(self, n_classes: int, config: CaeConfig) -> None:
        super().__init__()
        self.n_classes = int(n_classes)
        widths = (n_classes,) + tuple(config.channels)
        self.encoder = nn.Sequential(*[_stage(a, b, down=True) for a, b in zip(widths[:-1], widths[1:])],
                                     nn.Conv2d(widths[-1], config.latent_channels, 1))
        back = (config.latent_channels,) + tuple(reversed(config.channels))
        self.decoder = nn.Sequential(*[_stage(a, b, down=False) for a, b in zip(back[:-1], back[1:])],
                                     nn.Conv2d(back[-1], n_classes, 1))

    def forward(self, one_hot: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(one_hot))
