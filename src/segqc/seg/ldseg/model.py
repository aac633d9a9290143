"""The four LDSeg networks (2D slices, or 3D stacks of slices) and the diffusion arithmetic they share.

* :class:`Encoder` — ResNet-style, one stride-2 residual stage per width (the paper: four; no
  skip connections to a decoder), then a 1 x 1 convolution to ``latent_channels``. As the label encoder it reads the
  one-hot label map and ends in a normalisation without parameters (every channel of every
  sample's embedding is standardised to mean 0, standard deviation 1 over its pixels, so each
  channel has mean 0 and standard deviation 1 on any batch too: the paper's "normalization layer
  ... to ensure standardized distribution"); as the image encoder it may add multi-head
  self-attention after its last two stages (paper §IV-B).
* the conditional denoiser — MONAI's ``DiffusionModelUNet`` on ``[noisy label latent, image
  embedding]`` concatenated along channels, with the timestep; it predicts the noise (``epsilon``)
  or the velocity ``v`` (config ``prediction``).
* :class:`LabelDecoder` — a ResUNet-style decoder: one (x2 up-sampling, residual block) stage
  per width to class logits (softmax in the loss and at inference); without skips as in the
  paper, or (config ``decoder_skips``) with the image encoder's feature map of each size
  concatenated after each up-sampling (:meth:`Encoder.features`).

:class:`Ldseg` holds the four, the noise schedule (``abar``, from MONAI's ``DDPMScheduler``) and
:meth:`Ldseg.training_loss` (paper Algorithm 1) and :meth:`Ldseg.sample` (DDIM, Algorithm 2
with the paper's few evenly spaced steps).

With the config's ``spatial_dims`` 3 every network works on stacks of consecutive slices
``(B, C, D, S, S)``: the encoders and the decoder halve and double only the in-plane axes (the
slice axis keeps its ``D`` slices, which are usually far thicker than the pixels), their finest
``thin_levels`` levels use kernels of 1 across the slices, and the denoiser is MONAI's 3D
``DiffusionModelUNet`` on ``(D, S/2^n, S/2^n)`` latents (it halves every axis, so ``D`` must be a
multiple of ``2 ** (denoiser levels - 1)``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segqc.nn.chunks import SLICES_PER_PASS, by_rows, repeat_rows, row_chunks, samples_per_pass
from segqc.nn.diffusion import ancestral_loop, ddim_loop, ddim_timesteps
from segqc.nn.losses import feature_consistency, mean_dice_loss
from segqc.seg.ldseg.config import LdsegConfig

__all__ = ["COMPONENTS", "Encoder", "LabelDecoder", "Ldseg"]

COMPONENTS = ("label_encoder", "image_encoder", "denoiser", "label_decoder")
"""The networks, each saved as its own safetensors file."""


def _groups(channels: int) -> int:
    for groups in (8, 4, 2):
        if channels % groups == 0:
            return groups
    return 1


Kernel = tuple[int, ...]


def _conv(dims: int, in_channels: int, out_channels: int, kernel: int | Kernel, *, stride: int | Kernel = 1,
          bias: bool = True) -> nn.Module:
    """A ``dims``-D convolution with 'same' padding for odd kernels."""
    kernel_t = (kernel,) * dims if isinstance(kernel, int) else tuple(kernel)
    conv: Callable[..., nn.Module] = nn.Conv2d if dims == 2 else nn.Conv3d
    return conv(in_channels, out_channels, kernel_t, stride=stride, padding=tuple(k // 2 for k in kernel_t), bias=bias)


def down_stride(dims: int) -> Kernel:
    """The stride of a down-sampling stage: 2 along every axis in 2D; in 3D only in-plane (the
    slice axis, the first spatial one, keeps its slices)."""
    return (2, 2) if dims == 2 else (1, 2, 2)


def level_kernel(dims: int, level: int, thin_levels: int) -> Kernel:
    """The convolution kernel at ``level`` (0: full resolution, k: ``2^k`` times coarser in-plane):
    3 along every axis, but 1 across the slices at the ``thin_levels`` finest levels of a 3D network."""
    if dims == 2:
        return (3, 3)
    return (1, 3, 3) if level < thin_levels else (3, 3, 3)


class ResBlock(nn.Module):
    """conv - GroupNorm - SiLU - conv - GroupNorm, plus the (projected) input; ``stride`` 2 (or
    :func:`down_stride`) halves the size; ``kernel`` 3 along every axis unless given."""

    def __init__(self, in_channels: int, out_channels: int, stride: int | Kernel = 1, *, dims: int = 2,
                 kernel: Kernel | None = None) -> None:
        super().__init__()
        kernel = kernel or (3,) * dims
        self.conv1 = _conv(dims, in_channels, out_channels, kernel, stride=stride, bias=False)
        self.norm1 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.conv2 = _conv(dims, out_channels, out_channels, kernel, bias=False)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.skip: nn.Module = nn.Identity()
        strided = any(s != 1 for s in ((stride,) if isinstance(stride, int) else stride))
        if strided or in_channels != out_channels:
            self.skip = nn.Sequential(_conv(dims, in_channels, out_channels, 1, stride=stride, bias=False),
                                      nn.GroupNorm(_groups(out_channels), out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.norm1(self.conv1(x)))
        return F.silu(self.norm2(self.conv2(y)) + self.skip(x))


class _SpatialAttention(nn.Module):
    """Multi-head self-attention over the pixels (voxels) of a feature map (pre-norm, residual)."""

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        heads = heads if channels % heads == 0 else 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        out, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return x + out.transpose(1, 2).reshape(x.shape)


ATTENTION_MAX_PIXELS = 32 * 32
"""Largest feature map (pixels) the image encoder attends over: attention costs the square of
the pixel count, and on 2 CPU cores one over 64 x 64 pixels makes a whole ``small``
training step of 32 x 32 latents 6.5 times slower (1.9 s against 0.29 s per batch of 8 slices of 128 px)."""


def attention_stages(size: int, stages: int, depth: int = 1) -> tuple[int, ...]:
    """The image encoder's stages followed by self-attention: of the last two, those whose output
    (``size / 2^(stage + 1)`` px square, times ``depth`` slices in 3D) has at most
    :data:`ATTENTION_MAX_PIXELS` pixels."""
    return tuple(s for s in range(max(stages - 2, 0), stages)
                 if depth * (size >> (s + 1)) ** 2 <= ATTENTION_MAX_PIXELS)


class Encoder(nn.Module):
    """``(B, in_channels, S, S)`` -> ``(B, latent_channels, S/2^n, S/2^n)`` for ``n = len(widths)``
    stages (the paper: 4, ``S/16``); with ``dims`` 3, ``(B, in_channels, D, S, S)`` -> ``(B,
    latent_channels, D, S/2^n, S/2^n)`` (module docstring; ``thin_levels``). ``standardise``: the
    label encoder's final normalisation (GroupNorm with one group per channel, no affine parameters);
    ``attention_stages``: the (0-based) stages followed by self-attention over their output's
    pixels (the image encoder: :func:`attention_stages`)."""

    def __init__(self, in_channels: int, latent_channels: int, widths: Sequence[int], *, blocks: int = 1,
                 standardise: bool = False, attention_stages: Collection[int] = (), dims: int = 2,
                 thin_levels: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(dims, in_channels, widths[0], level_kernel(dims, 0, thin_levels))]
        channels = widths[0]
        self.taps = [0]  # layers whose outputs are the feature maps above the latent's size
        self.tap_channels = [widths[0]]
        for stage, width in enumerate(widths):
            kernel = level_kernel(dims, stage + 1, thin_levels)
            layers.append(ResBlock(channels, width, stride=down_stride(dims), dims=dims, kernel=kernel))
            layers += [ResBlock(width, width, dims=dims, kernel=kernel) for _ in range(blocks - 1)]
            if stage in attention_stages:
                layers.append(_SpatialAttention(width))
            channels = width
            if stage < len(widths) - 1:
                self.taps.append(len(layers) - 1)
                self.tap_channels.append(width)
        layers.append(_conv(dims, channels, latent_channels, 1))
        self.body = nn.Sequential(*layers)
        self.norm: nn.Module = (nn.GroupNorm(latent_channels, latent_channels, affine=False) if standardise
                                else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.body(x))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The embedding and the feature maps above its size, finest first: the stem's (``S``
        px, ``widths[0]`` channels) and every stage's but the last (``S / 2^(s+1)`` px,
        ``widths[s]`` channels) — :attr:`tap_channels` channels each."""
        maps = []
        for index, layer in enumerate(self.body):
            x = layer(x)
            if index in self.taps:
                maps.append(x)
        return self.norm(x), maps


class LabelDecoder(nn.Module):
    """``(B, latent_channels, S/2^n, S/2^n)`` -> class logits ``(B, classes, S, S)`` (``dims`` 3:
    with the slice axis ``D`` kept, in-plane up-sampling only): a ResUNet
    decoder without skip connections (the paper). ``skip_channels`` (finest first, one per
    up-sampling; :meth:`Encoder.features` of the image encoder): after each x2 up-sampling the
    image feature map of that size is concatenated before the residual block — image skips, an
    option outside the paper; an entry of 0 leaves its level without one."""

    def __init__(self, latent_channels: int, classes: int, widths: Sequence[int], *, blocks: int = 1,
                 skip_channels: Sequence[int] = (), dims: int = 2, thin_levels: int = 0) -> None:
        super().__init__()
        reversed_widths = list(widths)[::-1]
        skips = list(skip_channels)[::-1]
        if skips and len(skips) != len(widths):
            raise ValueError(f"need one skip per up-sampling ({len(widths)}), got {len(skips)}")
        n = len(widths)
        layers: list[nn.Module] = [_conv(dims, latent_channels, reversed_widths[0], level_kernel(dims, n, thin_levels))]
        channels = reversed_widths[0]
        scale = tuple(float(f) for f in down_stride(dims))
        for stage, width in enumerate(reversed_widths):
            kernel = level_kernel(dims, n - 1 - stage, thin_levels)  # the level this stage up-samples to
            layers.append(nn.Upsample(scale_factor=scale, mode="nearest"))
            layers.append(ResBlock(channels + (skips[stage] if skips else 0), width, dims=dims, kernel=kernel))
            layers += [ResBlock(width, width, dims=dims, kernel=kernel) for _ in range(blocks - 1)]
            channels = width
        layers.append(_conv(dims, channels, classes, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, skips: Sequence[torch.Tensor | None] = ()) -> torch.Tensor:
        """Logits of the latents ``z``; ``skips``: the image feature maps, finest first (only
        and always with ``skip_channels``; None where that entry is 0)."""
        pending = list(skips)
        for layer in self.body:
            z = layer(z)
            if pending and isinstance(layer, nn.Upsample):
                skip = pending.pop()
                if skip is not None:
                    z = torch.cat([z, skip], dim=1)
        return z


class Ldseg(nn.Module):
    """The four LDSeg networks and the noise schedule of ``config`` for ``image_channels``
    input channels and ``classes`` classes (background included)."""

    abar: torch.Tensor  # cumulative products of (1 - beta_t), t = 0 .. T-1 (a buffer)

    def __init__(self, config: LdsegConfig, *, image_channels: int, classes: int) -> None:
        super().__init__()
        from monai.networks.nets import DiffusionModelUNet
        from monai.networks.schedulers import DDPMScheduler

        self.config = config
        self.classes = classes
        dims, thin = config.spatial_dims, config.thin_levels
        latent = config.latent_channels
        self.label_encoder = Encoder(classes, latent, config.widths, blocks=config.blocks, standardise=True, dims=dims,
                                     thin_levels=thin)
        image_widths, image_blocks, embedding = config.image_encoder_shape
        depth = config.depth if dims == 3 else 1
        self.image_encoder = Encoder(image_channels, embedding, image_widths, blocks=image_blocks,
                                     attention_stages=attention_stages(config.size, len(image_widths), depth)
                                     if config.image_attention else (), dims=dims, thin_levels=thin)
        self.denoiser = DiffusionModelUNet(
            spatial_dims=dims, in_channels=latent + embedding, out_channels=latent,
            num_res_blocks=config.denoiser_res_blocks,
            channels=config.denoiser_channels, attention_levels=config.denoiser_attention,
            norm_num_groups=config.norm_groups, num_head_channels=[max(c // 4, 1) for c in config.denoiser_channels])
        skip_channels = [c if level >= config.decoder_skip_from else 0
                         for level, c in enumerate(self.image_encoder.tap_channels)]
        self.label_decoder = LabelDecoder(latent, classes, config.widths, blocks=config.blocks,
                                          skip_channels=skip_channels if config.decoder_skips else (), dims=dims,
                                          thin_levels=thin)
        schedule = DDPMScheduler(num_train_timesteps=config.timesteps, schedule=config.schedule)
        self.register_buffer("abar", schedule.alphas_cumprod.float().clone(), persistent=False)

    def encode_image(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """The image embedding and, with ``decoder_skips``, the image feature maps the label
        decoder concatenates (finest first, None for those finer than ``decoder_skip_from``;
        otherwise none)."""
        if self.config.decoder_skips:
            embedding, maps = self.image_encoder.features(image)
            start = self.config.decoder_skip_from
            return embedding, [m if level >= start else None for level, m in enumerate(maps)]
        return self.image_encoder(image), []

    def decode(self, z: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits of the latents ``z``; ``image`` (required with ``decoder_skips``, one per
        row of ``z``) gives the decoder its feature maps."""
        if not self.config.decoder_skips:
            return self.label_decoder(z)
        if image is None:
            raise ValueError("a decoder with image skips needs the image")
        return self.label_decoder(z, self.encode_image(image)[1])

    def component(self, name: str) -> nn.Module:
        module: nn.Module = getattr(self, name)
        return module

    def denoise(self, z_t: torch.Tensor, z_image: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps_hat, z0_hat)``: the noise and the clean-latent estimates of the noisy latents
        ``z_t`` at 0-based timesteps ``t`` (B,) from one denoiser pass. ``prediction`` ``epsilon``:
        the denoiser outputs ``eps_hat`` and ``z0_hat = (z_t - sqrt(1 - abar) eps_hat) /
        sqrt(abar)``; ``v``: it outputs ``v_hat`` and ``z0_hat = sqrt(abar) z_t - sqrt(1 - abar)
        v_hat``, ``eps_hat = sqrt(1 - abar) z_t + sqrt(abar) v_hat`` (unclipped)."""
        out = self.denoiser(torch.cat([z_t, z_image], dim=1), timesteps=t)
        return self._estimates(out, z_t, _per_row(self.abar[t], z_t))

    def _estimates(self, out: torch.Tensor, z_t: torch.Tensor, abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps_hat, z0_hat)`` from the denoiser's output ``out`` (:meth:`denoise`)."""
        if self.config.prediction == "v":
            return (1 - abar).sqrt() * z_t + abar.sqrt() * out, abar.sqrt() * z_t - (1 - abar).sqrt() * out
        return out, (z_t - (1 - abar).sqrt() * out) / abar.sqrt()

    def training_timesteps(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` 0-based training timesteps: uniform over 0..T-1, except that each slice, with
        probability ``sampling_t_share``, gets one of the DDIM timesteps of the config's ``steps``
        (:func:`ddim_timesteps`, drawn uniformly among them) — the timesteps inference evaluates.
        Share 0 (the paper) draws exactly as ``torch.randint`` with the same generator."""
        cfg = self.config
        t = torch.randint(0, cfg.timesteps, (n,), generator=generator)
        if cfg.sampling_t_share > 0:
            times = torch.tensor(ddim_timesteps(cfg.steps, cfg.timesteps))
            pick = torch.rand(n, generator=generator) < cfg.sampling_t_share
            which = torch.randint(0, len(times), (n,), generator=generator)
            t = torch.where(pick, times[which], t)
        return t

    def training_loss(self, image: torch.Tensor, gt: torch.Tensor, *, generator: torch.Generator | None = None,
                      clean: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Algorithm 1 on a batch: ``image`` (B, C, S, S), ``gt`` (B, S, S) class indices (3D:
        ``(B, C, D, S, S)`` and ``(B, D, S, S)``) ->
        ``CE + gamma Dice + lambda MSE`` and its parts. ``t`` is drawn per slice (uniform over
        1..T, 0-based here; :meth:`training_timesteps`), ``eps`` from ``generator``. The MSE
        compares the denoiser's output with its target: ``eps`` (``prediction`` ``epsilon``, the
        paper's ``||eps - eps_hat||^2``) or ``v = sqrt(abar) eps - sqrt(1 - abar) z_0`` (``v``).

        ``clean`` (the same slices before noise augmentation; used when ``noise_consistency`` > 0)
        adds ``noise_consistency`` times :func:`segqc.nn.losses.feature_consistency` of the image features of
        ``image`` against those of ``clean`` (the latter without gradient, a fixed target)."""
        cfg = self.config
        onehot = F.one_hot(gt.long(), self.classes).movedim(-1, 1).float()
        z_image, skips = self.encode_image(image)
        z_label = self.label_encoder(onehot)
        t = self.training_timesteps(image.shape[0], generator=generator).to(image.device)
        eps = torch.randn(z_label.shape, generator=generator).to(image.device)
        abar = _per_row(self.abar[t], z_label)
        z_t = abar.sqrt() * z_label + (1 - abar).sqrt() * eps
        out = self.denoiser(torch.cat([z_t, z_image], dim=1), timesteps=t)
        eps_hat, z0_hat = self._estimates(out, z_t, abar)
        target = abar.sqrt() * eps - (1 - abar).sqrt() * z_label if cfg.prediction == "v" else eps
        if cfg.train_decode == "paper":
            z_dn = z_t - eps_hat  # Eq. 12, as written
        else:
            z_dn = z0_hat.clamp(-cfg.clip_latent, cfg.clip_latent)
        logits = self.label_decoder(z_dn, skips)
        ce = F.cross_entropy(logits, gt.long())
        dice = mean_dice_loss(torch.softmax(logits, dim=1), onehot)
        mse = F.mse_loss(out, target)
        loss = ce + cfg.gamma * dice + cfg.lam * mse
        parts = {"ce": ce.item(), "dice": dice.item(), "mse": mse.item()}
        if cfg.noise_consistency > 0 and clean is not None:
            with torch.no_grad():
                clean_image, clean_skips = self.encode_image(clean)
            consistency = feature_consistency([z_image, *skips], [clean_image, *clean_skips])
            loss = loss + cfg.noise_consistency * consistency
            parts["consistency"] = consistency.item()
        return loss, {"loss": loss.item(), **parts}

    @torch.no_grad()
    def sample(self, image: torch.Tensor, *, samples: int, steps: int, generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None, sampler: str = "ddim") -> torch.Tensor:
        """Class probabilities ``(samples, B, classes, S, S)`` of ``image`` (B, C, S, S) (3D:
        ``(samples, B, classes, D, S, S)`` of ``(B, C, D, S, S)``, any ``D`` the denoiser can halve): the
        image is encoded once, ``samples`` Gaussian latents per slice are denoised together and
        decoded. ``sampler``: ``ddim`` — deterministic DDIM (eta = 0) over ``steps``
        :func:`ddim_timesteps` (:func:`ddim_loop`); ``ddpm`` — ancestral sampling over all T
        steps (:func:`ancestral_loop`; ``steps`` is ignored, the fresh noise of every step comes
        from ``generator``). The clean-latent estimate is clipped to ``+-clip_latent``. The
        starting latents are ``noise`` ``(samples * B, latent_channels, [D,] L, L)`` (``L`` the
        config's ``latent_size``)
        (sample-major: row ``s * B + b``) or drawn from ``generator`` (CPU). Every sample's
        probabilities at once (memory linear in ``samples``): :meth:`sample_chunks`, concatenated."""
        return torch.cat(list(self.sample_chunks(image, samples=samples, steps=steps, generator=generator,
                                                 noise=noise, sampler=sampler)), dim=0)

    @torch.no_grad()
    def sample_chunks(self, image: torch.Tensor, *, samples: int, steps: int, generator: torch.Generator | None = None,
                      noise: torch.Tensor | None = None, sampler: str = "ddim", per_pass: int = SLICES_PER_PASS,
                      part: tuple[int, int] | None = None) -> Iterator[torch.Tensor]:
        """:meth:`sample`'s class probabilities a chunk of samples at a time: ``(c, B, classes, [D,]
        S, S)`` for consecutive chunks of ``c = per_pass // (B D)`` samples (at least 1; the last
        chunk may be shorter). The denoiser and the label decoder take one chunk per pass
        (:mod:`segqc.nn.chunks`), the image features are repeated per chunk only, and the sampler
        runs on the latents of all samples (the size of ``noise``), so the noise drawn — the
        starting latents and, for ``ddpm``, every step's — is the noise :meth:`sample` draws.
        ``part`` ``(first, total)``: these ``samples`` (and ``noise``) are samples ``first ..
        first + samples - 1`` of a draw of ``total``; the ``ddpm`` sampler then draws every step's
        noise for all ``total`` and keeps these rows (:func:`ancestral_loop`). Yields nothing for
        0 samples."""
        cfg = self.config
        b = image.shape[0]
        z_image, skips = self.encode_image(image)
        depth = tuple(image.shape[2:-2])  # () in 2D, (D,) in 3D
        shape = (samples * b, cfg.latent_channels, *depth, cfg.latent_size, cfg.latent_size)
        if noise is None:
            noise = torch.randn(shape, generator=generator)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        chunks = row_chunks(samples, b, samples_per_pass(b, depth[0] if depth else 1, per_pass=per_pass))

        def predict_clean(z: torch.Tensor, t: int) -> torch.Tensor:
            def clean(rows: slice) -> torch.Tensor:
                times = torch.full((rows.stop - rows.start,), t, device=z.device, dtype=torch.long)
                return self.denoise(z[rows], repeat_rows(z_image, rows, b), times)[1]
            return by_rows(clean, chunks)

        z = noise.to(image.device)
        if sampler == "ddim":
            z = ddim_loop(predict_clean, z, self.abar, ddim_timesteps(steps, cfg.timesteps), clip=cfg.clip_latent)
        elif sampler == "ddpm":
            first, total = part if part is not None else (0, samples)
            drawn = None if part is None else (total * b, slice(first * b, (first + samples) * b))
            z = ancestral_loop(predict_clean, z, self.abar, clip=cfg.clip_latent, rows=drawn,
                               generator=generator if generator is not None else torch.Generator().manual_seed(0))
        else:
            raise ValueError(f"sampler must be ddim or ddpm, got {sampler!r}")
        for rows in chunks:
            chunk_skips = [None if m is None else repeat_rows(m, rows, b) for m in skips]
            probs = torch.softmax(self.label_decoder(z[rows], chunk_skips), dim=1)
            yield probs.view(-1, b, self.classes, *depth, cfg.size, cfg.size)


def _per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` (B,) shaped to broadcast over the rows of ``like`` (B, ...)."""
    return values.view(-1, *([1] * (like.ndim - 1)))
