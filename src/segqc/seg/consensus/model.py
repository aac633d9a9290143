"""The consensus diffusion network (Amit et al., eq. 3) and its diffusion arithmetic (2D).

``eps_theta(x_t, I, t, c) = D(E(F(x_t, t, c) + G(I), t, c), t, c)``:

* :class:`ImageEncoder` — G: a 3 x 3 input convolution, ``rrdb_blocks`` Residual-in-Residual
  Dense Blocks (ESRGAN, Wang et al. 2018: three dense blocks of five convolutions with LeakyReLU
  0.2, residual scaling 0.2, no normalisation) with a residual connection around them, a 3 x 3
  convolution, LeakyReLU and a 3 x 3 output convolution; full resolution, ``rrdb_width`` channels.
* E and D — MONAI's ``DiffusionModelUNet`` (residual blocks of GroupNorm, SiLU and convolution,
  the time embedding added after the first convolution block, attention at the configured levels,
  stride-2 convolution down, nearest + convolution up, skips). Its first convolution reads the
  concatenation ``[x_t, G(I)]``: a convolution of a concatenation is the sum of one convolution
  per part, ``F(x_t) + F'(G(I))``, which is eq. 3's ``F(x_t) + G(I)`` with G's output layer
  followed by one more linear convolution. The level (or annotator) is MONAI's class embedding: a
  lookup table added to the time embedding, so it reaches every residual block as in the paper
  (index 0 = no condition).

:class:`ConsensusDiffusion` holds both, the noise schedule (``abar``) and
:meth:`~ConsensusDiffusion.training_loss` (Algorithm 1: ``||eps - eps_theta||^2``) and
:meth:`~ConsensusDiffusion.sample` (Algorithm 2 with the posterior variance, or DDIM).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segqc.nn.chunks import SLICES_PER_PASS, by_rows, repeat_rows, row_chunks, samples_per_pass
from segqc.nn.diffusion import ancestral_loop, ddim_loop, ddim_timesteps
from segqc.seg.consensus.config import ConsensusConfig

__all__ = ["ConsensusDiffusion", "ImageEncoder", "ResidualDenseBlock", "RRDB", "level_index"]


class ResidualDenseBlock(nn.Module):
    """Five 3 x 3 convolutions, each reading the block input and every earlier output (``growth``
    channels each, LeakyReLU 0.2 between), the last back to ``channels``; output ``x + 0.2 * y``."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(channels + k * growth, growth if k < 4 else channels, 3, padding=1)
                                    for k in range(5)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for k, conv in enumerate(self.convs):
            out = conv(torch.cat(features, dim=1))
            if k < 4:
                features.append(F.leaky_relu(out, 0.2))
        return x + 0.2 * out


class RRDB(nn.Module):
    """Residual in Residual Dense Block: three dense blocks, ``x + 0.2 * blocks(x)``."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualDenseBlock(channels, growth) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.blocks(x)


class ImageEncoder(nn.Module):
    """G: ``(B, image_channels, S, S)`` -> ``(B, width, S, S)`` (module docstring)."""

    def __init__(self, image_channels: int, width: int, growth: int, blocks: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(image_channels, width, 3, padding=1)
        self.trunk = nn.Sequential(*(RRDB(width, growth) for _ in range(blocks)))
        self.conv_mid = nn.Conv2d(width, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(image)
        h = h + self.trunk(h)
        return self.conv_out(F.leaky_relu(self.conv_mid(h), 0.2))


def level_index(config: ConsensusConfig, level: int, raters: int) -> int:
    """The lookup-table index of level ``level`` (1..``raters``) of a case with ``raters`` raters:
    ``round(level_grid * level / raters)`` for ``consensus``, the rater number for ``annotator``
    (1..level_grid), 0 (no condition) otherwise. ValueError outside the table."""
    if not 1 <= level <= raters:
        raise ValueError(f"level {level} outside 1..{raters}")
    if config.mode == "consensus":
        return int(round(config.level_grid * level / raters))
    if config.mode == "annotator":
        if level > config.level_grid:
            raise ValueError(f"rater {level} beyond the {config.level_grid} annotator entries (level_grid)")
        return level
    return 0


class ConsensusDiffusion(nn.Module):
    """G, the denoising U-Net and the noise schedule of ``config`` for ``image_channels`` input
    channels. Maps are ``(B, S, S)`` in [0, 1]; the diffusion runs on ``2 m - 1``."""

    abar: torch.Tensor  # cumulative products of (1 - beta_t), t = 0 .. T-1 (a buffer)

    def __init__(self, config: ConsensusConfig, *, image_channels: int) -> None:
        super().__init__()
        from monai.networks.nets import DiffusionModelUNet
        from monai.networks.schedulers import DDPMScheduler

        self.config = config
        self.image_encoder = ImageEncoder(image_channels, config.rrdb_width, config.rrdb_growth, config.rrdb_blocks)
        self.unet = DiffusionModelUNet(
            spatial_dims=2, in_channels=1 + config.rrdb_width, out_channels=1, num_res_blocks=config.res_blocks,
            channels=config.channels, attention_levels=config.attention, norm_num_groups=config.norm_groups,
            num_head_channels=[max(c // 4, 1) for c in config.channels], num_class_embeds=config.level_grid + 1)
        start, end = config.betas_range
        schedule = DDPMScheduler(num_train_timesteps=config.timesteps, schedule="linear_beta", beta_start=start,
                                 beta_end=end)
        self.register_buffer("abar", schedule.alphas_cumprod.float().clone(), persistent=False)

    def output(self, x_t: torch.Tensor, features: torch.Tensor, t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The network's output ``(B, 1, S, S)`` for ``x_t`` given the image features G(I) ``(B,
        W, S, S)``, 0-based timesteps ``t`` (B,) and lookup indices ``index`` (B,): the noise, v
        or the clean map, by the config's ``prediction``."""
        return self.unet(torch.cat([x_t, features], dim=1), timesteps=t, class_labels=index)

    def clean_estimate(self, out: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """The clean-map estimate from the network's output ``out`` at noise level ``abar``."""
        if self.config.prediction == "x0":
            return out
        if self.config.prediction == "v":
            return abar.sqrt() * x_t - (1 - abar).sqrt() * out
        return (x_t - (1 - abar).sqrt() * out) / abar.sqrt()

    def training_loss(self, image: torch.Tensor, target: torch.Tensor, index: torch.Tensor, *,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Algorithm 1 on a batch: ``image`` (B, C, S, S), ``target`` (B, S, S) maps in [0, 1],
        ``index`` (B,) lookup indices; ``t`` uniform over the T steps, ``eps`` from ``generator``
        -> the MSE between the network's output and its target (``eps``, ``v = sqrt(abar) eps -
        sqrt(1 - abar) x0`` or ``x0``, by ``prediction``)."""
        x0 = (2.0 * target.float() - 1.0).unsqueeze(1)
        t = torch.randint(0, self.config.timesteps, (image.shape[0],), generator=generator).to(image.device)
        eps = torch.randn(x0.shape, generator=generator).to(image.device)
        abar = self.abar[t].view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        out = self.output(x_t, self.image_encoder(image), t, index.to(image.device).long())
        prediction = self.config.prediction
        goal = eps if prediction == "epsilon" else (abar.sqrt() * eps - (1 - abar).sqrt() * x0 if prediction == "v"
                                                     else x0)
        loss = F.mse_loss(out, goal)
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def sample(self, image: torch.Tensor, indices: Sequence[int], *, generations: int, sampler: str = "ddpm",
               steps: int | None = None, generator: torch.Generator | None = None,
               per_pass: int = SLICES_PER_PASS) -> torch.Tensor:
        """Maps ``(L, G, B, S, S)`` in [0, 1] for every lookup index of ``indices`` (L), generation
        (G) and image of ``image`` (B, C, S, S): G(I) is computed once, all L x G x B chains are
        sampled together. ``sampler`` ``ddpm``: Algorithm 2 (ancestral, T steps, the posterior variance;
        the clean estimate clipped to [-1, 1] at every step as in the improved-diffusion code);
        ``ddim``: deterministic DDIM over ``steps`` evenly spaced steps. Starting noise and the
        noise of every step come from ``generator`` (CPU), drawn for all chains at once. The
        network takes at most ``per_pass`` chains per pass (whole chains of every image,
        :mod:`segqc.nn.chunks`) with G(I) repeated for those only, so memory beyond the chains'
        maps (the size of the noise) does not grow with L x G."""
        cfg = self.config
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        b, n_levels = image.shape[0], len(indices)
        chains = n_levels * generations * b
        features = self.image_encoder(image)
        index = torch.tensor(list(indices), dtype=torch.long).repeat_interleave(generations * b).to(image.device)
        x = torch.randn((chains, 1, cfg.size, cfg.size), generator=generator).to(image.device)
        chunks = row_chunks(n_levels * generations, b, samples_per_pass(b, per_pass=per_pass))

        def predict_clean(x_t: torch.Tensor, t: int) -> torch.Tensor:
            def clean(rows: slice) -> torch.Tensor:
                times = torch.full((rows.stop - rows.start,), t, device=x_t.device, dtype=torch.long)
                out = self.output(x_t[rows], repeat_rows(features, rows, b), times, index[rows])
                return self.clean_estimate(out, x_t[rows], self.abar[t])
            return by_rows(clean, chunks)

        if sampler == "ddpm":
            x = ancestral_loop(predict_clean, x, self.abar, generator=generator, clip=1.0)
        elif sampler == "ddim":
            x = ddim_loop(predict_clean, x, self.abar, ddim_timesteps(int(steps or cfg.steps), cfg.timesteps), clip=1.0)
        else:
            raise ValueError(f"sampler must be ddpm or ddim, got {sampler!r}")
        maps = ((x[:, 0] + 1.0) / 2.0).clamp(0.0, 1.0)
        return maps.view(n_levels, generations, b, cfg.size, cfg.size)
