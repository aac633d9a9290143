"""The Probabilistic U-Net's networks and loss (Kohl et al. 2018; 2D).

* :class:`GaussianEncoder` — prior (image) or posterior (image + one-hot target) net: stride-2
  convolution stages (3 x 3, InstanceNorm, LeakyReLU) of the given widths, global average pooling,
  a 1 x 1 convolution to ``2 · latent`` numbers: mean and log-variance of an axis-aligned Gaussian.
* :class:`ProbUnet` — a MONAI ``UNet`` to ``features`` channels; z tiled over the image and
  concatenated; three 1 x 1 convolutions to the class logits (:meth:`ProbUnet.logits`);
  :meth:`ProbUnet.training_loss` (posterior sample, CE + beta KL / pixels) and
  :meth:`ProbUnet.sample` (prior samples).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segqc.seg.probunet.config import ProbUnetConfig

__all__ = ["GaussianEncoder", "ProbUnet", "gaussian_kl_divergence"]


class GaussianEncoder(nn.Module):
    """``(B, in_channels, S, S)`` -> ``(mean, log_var)``, each ``(B, latent)``."""

    def __init__(self, in_channels: int, widths: Sequence[int], latent: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for k, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, stride=1 if k == 0 else 2, padding=1),
                       nn.InstanceNorm2d(width, affine=True), nn.LeakyReLU(0.01)]
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels, 2 * latent, 1)
        self.latent = latent

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.body(x).mean(dim=(2, 3), keepdim=True)
        out = self.head(pooled).flatten(1)
        return out[:, : self.latent], out[:, self.latent:]


def gaussian_kl_divergence(mean_q: torch.Tensor, log_var_q: torch.Tensor, mean_p: torch.Tensor,
                           log_var_p: torch.Tensor) -> torch.Tensor:
    """KL(q ‖ p) of axis-aligned Gaussians ``(B, d)``, summed over d: ``(B,)``."""
    var_q, var_p = log_var_q.exp(), log_var_p.exp()
    return 0.5 * (log_var_p - log_var_q + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0).sum(dim=1)


class ProbUnet(nn.Module):
    """U-Net, prior net and posterior net of ``config`` for ``image_channels`` channels and
    ``classes`` classes (background included)."""

    def __init__(self, config: ProbUnetConfig, *, image_channels: int, classes: int) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        self.config, self.classes = config, classes
        self.unet = UNet(spatial_dims=2, in_channels=image_channels, out_channels=config.features,
                         channels=config.channels, strides=(2,) * (len(config.channels) - 1),
                         num_res_units=config.res_units)
        self.prior = GaussianEncoder(image_channels, config.channels, config.latent)
        self.posterior = GaussianEncoder(image_channels + classes, config.channels, config.latent)
        width = config.features
        self.combine = nn.Sequential(nn.Conv2d(width + config.latent, width, 1), nn.ReLU(),
                                     nn.Conv2d(width, width, 1), nn.ReLU(), nn.Conv2d(width, classes, 1))

    def logits(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Class logits from U-Net features ``(B, F, S, S)`` and latents ``(B, latent)``."""
        tiled = z[:, :, None, None].expand(-1, -1, *features.shape[2:])
        return self.combine(torch.cat([features, tiled], dim=1))

    def training_loss(self, image: torch.Tensor, target: torch.Tensor, *,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """``image`` (B, C, S, S), ``target`` (B, S, S) class indices -> CE + beta KL / pixels."""
        onehot = F.one_hot(target.long(), self.classes).permute(0, 3, 1, 2).float()
        mean_q, log_var_q = self.posterior(torch.cat([image, onehot], dim=1))
        mean_p, log_var_p = self.prior(image)
        noise = torch.randn(mean_q.shape, generator=generator).to(image.device)
        z = mean_q + (0.5 * log_var_q).exp() * noise
        ce = F.cross_entropy(self.logits(self.unet(image), z), target.long())
        kl = gaussian_kl_divergence(mean_q, log_var_q, mean_p, log_var_p).mean()
        loss = ce + self.config.beta * kl / float(target.shape[-1] * target.shape[-2])
        return loss, {"loss": loss.item(), "ce": ce.item(), "kl": kl.item()}

    @torch.no_grad()
    def sample(self, image: torch.Tensor, samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Class probabilities ``(samples, B, classes, S, S)``: z from the prior, one pass each
        through the combining layers (the U-Net runs once); :meth:`sample_each`, stacked."""
        return torch.stack(list(self.sample_each(image, samples, generator=generator)))

    @torch.no_grad()
    def sample_each(self, image: torch.Tensor, samples: int, *,
                    generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """The class probabilities ``(B, classes, S, S)`` of ``samples`` prior samples, one at a
        time (z drawn from ``generator`` just before its pass, in sample order; nothing for 0
        samples): memory does not grow with ``samples``."""
        features = self.unet(image)
        mean_p, log_var_p = self.prior(image)
        for _ in range(samples):
            noise = torch.randn(mean_p.shape, generator=generator).to(image.device)
            yield torch.softmax(self.logits(features, mean_p + (0.5 * log_var_p).exp() * noise), dim=1)
