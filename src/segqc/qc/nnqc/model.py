"""nnQC's networks and the pseudo-ground-truth sampler.

* :class:`MaskAutoencoder` — stage 1, MONAI ``AutoencoderKL`` on one-hot label maps (K channels,
  background included) -> latent ``(C, size/f, size/f)``; decoder -> K logits. Non-power-of-two
  factors (the paper's 3) resize inside the bottleneck (see :mod:`.config`).
* :func:`build_discriminator` — MONAI ``PatchDiscriminator`` on K-channel masks (one-hot ground
  truths vs. softmax reconstructions).
* :func:`build_image_encoder` — expert E2: the frozen image encoder that turns a slice into a grid
  of image tokens ``o2`` (a small CNN pre-trained self-supervised by default).
* :class:`TeamOfExperts` — expert E1 (an MLP on the slice-to-volume ratio, trained with the LDM)
  and the cross-attention "dynamic switch": ``Q = F_Q(o1)``, ``K = F_K(o2)``, ``V = F_V(o2)``,
  ``c = softmax(Q K^T / sqrt(d)) V`` over the ``token_grid**2`` image tokens, so the softmax has a
  real choice and the ratio decides where the condition looks. Ablations: ``"position"`` (c from
  o1 alone, one linear map), ``"image"`` (c = the projected image tokens).
* :class:`LatentDenoiser` — stage 2, MONAI ``DiffusionModelUNet`` (2D, in = C + S channels: the
  noisy latent and the downsampled segmentation S_d; out = C; cross-attention to c).
* :class:`NnqcModel` — the container used at inference; :meth:`NnqcModel.generate_pgt`.

Conventions: images ``(B, C_img, size, size)`` float32 (normalised by the preprocessing plan),
segmentations ``(B, size, size)`` integer *label values* (mapped to class indices 0..K-1 through
the model's ``labels``), ratios ``(B,)`` in [0, 1]. S_d: ``config.seg_encoding`` (default the
one-hot map area-averaged to the latent size, K channels of class shares in [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segqc.errors import InputError
from segqc.nn import ConvTokenEncoder, CrossAttention, sincos_2d
from segqc.nn.chunks import SLICES_PER_PASS, by_rows, repeat_rows, row_chunks, samples_per_pass
from segqc.nn.diffusion import trailing_timesteps
from segqc.qc.nnqc.config import NnqcConfig

__all__ = [
    "LatentDenoiser",
    "MaskAutoencoder",
    "NnqcModel",
    "TeamOfExperts",
    "build_discriminator",
    "build_image_encoder",
    "make_scheduler",
]


# --------------------------------------------------------------------------------------------
# Stage 1: mask autoencoder and discriminator
# --------------------------------------------------------------------------------------------


class MaskAutoencoder(nn.Module):
    """One-hot masks ``(B, K, H, W)`` <-> latents ``(B, C, H/f, W/f)`` (MONAI AutoencoderKL)."""

    def __init__(self, config: NnqcConfig, n_classes: int) -> None:
        super().__init__()
        from monai.networks.nets import AutoencoderKL

        levels = len(config.vae_channels)
        self.n_classes = int(n_classes)
        self.latent_size = config.latent_size
        self.native_size = config.size // config.native_factor
        self.net = AutoencoderKL(
            spatial_dims=2, in_channels=n_classes, out_channels=n_classes, channels=config.vae_channels,
            latent_channels=config.latent_channels, num_res_blocks=config.vae_res_blocks,
            attention_levels=(False,) * (levels - 1) + (config.vae_attention,),
            norm_num_groups=config.vae_norm_groups, with_encoder_nonlocal_attn=config.vae_attention,
            with_decoder_nonlocal_attn=config.vae_attention,
        )

    def encode(self, one_hot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance at the latent size."""
        h = self.net.encoder(one_hot)
        mu = self.net.quant_conv_mu(h)
        log_var = torch.clamp(self.net.quant_conv_log_sigma(h), -30.0, 20.0)
        if mu.shape[-1] != self.latent_size:
            mu = F.adaptive_avg_pool2d(mu, self.latent_size)
            log_var = F.adaptive_avg_pool2d(log_var, self.latent_size)
        return mu, log_var

    @staticmethod
    def sample(mu: torch.Tensor, log_var: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        return mu + noise * torch.exp(0.5 * log_var)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K, H, W)`` of latents ``(B, C, h, w)``."""
        if z.shape[-1] != self.native_size:
            z = F.interpolate(z, size=(self.native_size, self.native_size), mode="bilinear", align_corners=False)
        return self.net.decode(z)

    def forward(self, one_hot: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, log_var = self.encode(one_hot)
        return self.decode(self.sample(mu, log_var, generator)), mu, log_var


def build_discriminator(config: NnqcConfig, n_classes: int) -> nn.Module:
    """MONAI ``PatchDiscriminator`` on K-channel masks (last output: patch logits)."""
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(spatial_dims=2, channels=config.disc_channels, in_channels=n_classes,
                              out_channels=1, num_layers_d=config.disc_layers)


# --------------------------------------------------------------------------------------------
# Expert E2: the frozen image encoder
# --------------------------------------------------------------------------------------------


class _OpenClipTokens(nn.Module):
    """An open_clip vision tower returning its patch tokens (untested hook: open_clip is not a
    dependency of segqc). Slices are resized to the tower's input size, grey channels repeated to
    RGB and normalised with the CLIP mean/std (inputs are assumed to lie roughly in [0, 1])."""

    _MEAN = (0.48145466, 0.4578275, 0.40821073)
    _STD = (0.26862954, 0.26130258, 0.27577711)
    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, spec: str, in_channels: int, *, pretrained: bool) -> None:
        super().__init__()
        try:
            import open_clip
        except ImportError:
            raise InputError("image_encoder 'open_clip' needs the open_clip package (pip install "
                             "open_clip_torch), which is not installed; use image_encoder 'ssl' or 'file'") from None
        name, sep, path = spec.partition(":")
        if not sep or not name or not path:
            raise InputError(f"image_encoder_path for open_clip must be 'MODEL_NAME:/path/to/weights', got {spec!r}")
        model = open_clip.create_model(name, pretrained=path if pretrained else None)
        self.visual = model.visual
        self.visual.output_tokens = True
        size = self.visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        self.in_channels = int(in_channels)
        self.register_buffer("mean", torch.tensor(self._MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self._STD).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():
            tokens = self.forward(torch.zeros(1, in_channels, *self.image_size))
        self.n_tokens, self.token_dim = int(tokens.shape[1]), int(tokens.shape[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        x = x.mean(dim=1, keepdim=True).repeat(1, 3, 1, 1) if x.shape[1] != 3 else x
        _, tokens = self.visual((x - self.mean) / self.std)
        return tokens


def build_image_encoder(config: NnqcConfig, image_channels: int, *,
                        pretrained: bool = False) -> ConvTokenEncoder | _OpenClipTokens:
    """Expert E2 (module docstring). ``pretrained``: load the weights named by
    ``config.image_encoder_path`` ("file", "open_clip"); a saved nnQC model overrides them anyway.
    The result has ``token_dim`` and ``n_tokens`` attributes."""
    if config.image_encoder == "open_clip":
        assert config.image_encoder_path is not None
        return _OpenClipTokens(config.image_encoder_path, image_channels, pretrained=pretrained)
    encoder = ConvTokenEncoder(image_channels, config.encoder_channels, grid=config.token_grid, norm_groups=8)
    if config.image_encoder == "file" and pretrained:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = config.image_encoder_path
        try:
            encoder.load_state_dict(load_file(str(path)))
        except (SafetensorError, OSError, RuntimeError, ValueError) as error:
            raise InputError(f"cannot load a segqc image encoder of channels {config.encoder_channels} for "
                             f"{image_channels} image channel(s): {str(error).splitlines()[0]}", path) from None
    return encoder


# --------------------------------------------------------------------------------------------
# Team of Experts
# --------------------------------------------------------------------------------------------


class TeamOfExperts(nn.Module):
    """Ratios ``(B,)`` and image tokens ``(B, N, e)`` -> condition ``c`` ``(B, n_ctx, d)``.

    E1: ``MLP(ratio) -> o1 (B, query_tokens, d)``. The image tokens get fixed 2D sine-cosine
    position codes (so a query can address *where* in the slice to look, not only what).
    ``"full"``: ``c = softmax(F_Q(o1) F_K(o2)^T / sqrt(d)) F_V(o2)``; ``"position"``:
    ``c = F_P(o1)``; ``"image"``: ``c = F_V(o2)`` (all N tokens).
    """

    token_position: torch.Tensor  # buffer

    def __init__(self, config: NnqcConfig, token_dim: int, n_tokens: int) -> None:
        super().__init__()
        d, hidden = config.context_dim, config.position_hidden
        self.mode = config.conditioning
        self.query_tokens = config.query_tokens
        self.context_dim = d
        self.position_expert = nn.Sequential(
            nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, config.query_tokens * d),
        )
        grid = int(round(math.sqrt(n_tokens)))
        codes = sincos_2d(grid, token_dim) if grid * grid == n_tokens else torch.zeros(n_tokens, token_dim)
        self.register_buffer("token_position", codes, persistent=False)
        if self.mode == "full":
            self.attention = CrossAttention(d, token_dim, d)
        elif self.mode == "position":
            self.project = nn.Linear(d, d)
        else:
            self.project = nn.Linear(token_dim, d)

    def position_opinion(self, ratios: torch.Tensor) -> torch.Tensor:
        """o1 ``(B, query_tokens, d)``; the ratio is centred to [-1, 1] first."""
        o1 = self.position_expert((2.0 * ratios.reshape(-1, 1) - 1.0).float())
        return o1.reshape(-1, self.query_tokens, self.context_dim)

    def attend(self, ratios: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(c, attention weights (B, query_tokens, N) or None)``."""
        if self.mode == "image":
            return self.project(tokens + self.token_position), None
        o1 = self.position_opinion(ratios)
        if self.mode == "position":
            return self.project(o1), None
        return self.attention(o1, tokens + self.token_position)

    def forward(self, ratios: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.attend(ratios, tokens)[0]


# --------------------------------------------------------------------------------------------
# Stage 2: the denoiser and the noise schedule
# --------------------------------------------------------------------------------------------


class LatentDenoiser(nn.Module):
    """ε-prediction UNet: ``(z_t (B, C, h, w), S_d (B, S, h, w), t (B,), c (B, n, d)) -> ε̂``
    (``S = config.seg_channels(n_classes) + config.image_input_channels(image_channels)``: the
    spatial condition, S_d and, with ``image_input``, the rearranged image)."""

    def __init__(self, config: NnqcConfig, n_classes: int, image_channels: int = 1) -> None:
        super().__init__()
        from monai.networks.nets import DiffusionModelUNet

        self.unet = DiffusionModelUNet(
            spatial_dims=2, in_channels=config.latent_channels + config.seg_channels(n_classes)
            + config.image_input_channels(image_channels), out_channels=config.latent_channels,
            num_res_blocks=config.ldm_res_blocks, channels=config.ldm_channels,
            attention_levels=config.ldm_attention_levels, norm_num_groups=config.ldm_norm_groups,
            num_head_channels=config.ldm_head_channels, with_conditioning=True,
            cross_attention_dim=config.context_dim,
        )

    def forward(self, z_t: torch.Tensor, s_d: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat([z_t, s_d], dim=1), timesteps=t, context=c)


def make_scheduler(config: NnqcConfig):
    """MONAI ``DDPMScheduler`` with the config's T and beta schedule (training: ``add_noise``;
    inference: its ``alphas_cumprod`` drive the DDIM updates)."""
    from monai.networks.schedulers import DDPMScheduler

    if config.beta_schedule == "cosine":
        return DDPMScheduler(num_train_timesteps=config.train_timesteps, schedule=config.beta_schedule,
                             clip_sample=False)
    return DDPMScheduler(num_train_timesteps=config.train_timesteps, schedule=config.beta_schedule,
                         clip_sample=False, beta_start=config.beta_start, beta_end=config.beta_end)


# --------------------------------------------------------------------------------------------
# The container
# --------------------------------------------------------------------------------------------


class NnqcModel(nn.Module):
    """Everything needed at inference: autoencoder, frozen image encoder (E2), Team of Experts
    (E1 + fusion), denoiser, the latent scale factor, and the label table.

    ``labels``: the dataset's label values, background (0) first; K = ``len(labels)`` channels.
    ``image_channels``: channels of the preprocessed images. ``pretrained``: load E2's weights from
    ``config.image_encoder_path`` (training only). ``latent_scale`` (a buffer, saved with the
    weights) multiplies the autoencoder's latents before diffusion: 1 / std of the training latents.
    """

    latent_scale: torch.Tensor  # buffers
    label_lookup: torch.Tensor
    label_values: torch.Tensor

    def __init__(self, config: NnqcConfig, labels: Sequence[int], image_channels: int, *,
                 pretrained: bool = False) -> None:
        super().__init__()
        labels = tuple(int(v) for v in labels)
        if len(labels) < 2 or labels[0] != 0 or len(set(labels)) != len(labels) or min(labels) < 0:
            raise ValueError(f"labels must start with background 0 and list distinct non-negative values, got {labels}")
        self.config = config
        self.labels = labels
        self.image_channels = int(image_channels)
        self.autoencoder = MaskAutoencoder(config, len(labels))
        self.image_encoder = build_image_encoder(config, image_channels, pretrained=pretrained)
        self.image_encoder.requires_grad_(False)
        self.toe = TeamOfExperts(config, self.image_encoder.token_dim, self.image_encoder.n_tokens)
        self.denoiser = LatentDenoiser(config, len(labels), self.image_channels)
        self.register_buffer("latent_scale", torch.ones(()))
        lookup = torch.full((max(labels) + 1,), -1, dtype=torch.long)
        lookup[list(labels)] = torch.arange(len(labels))
        self.register_buffer("label_lookup", lookup, persistent=False)
        self.register_buffer("label_values", torch.tensor(labels, dtype=torch.long), persistent=False)

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    # -- conversions -------------------------------------------------------------------------

    def class_indices(self, segs: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Label values -> class indices 0..K-1; InputError for values the model does not know."""
        segs = torch.as_tensor(np.asarray(segs) if not isinstance(segs, torch.Tensor) else segs).long()
        segs = segs.to(self.label_lookup.device)
        if segs.numel() and (segs.min() < 0 or segs.max() >= self.label_lookup.numel()
                             or (self.label_lookup[segs.clamp(0, self.label_lookup.numel() - 1)] < 0).any()):
            unknown = sorted(set(torch.unique(segs).tolist()) - set(self.labels))
            raise InputError(f"label value(s) {unknown} are not among the model's labels {list(self.labels)}")
        return self.label_lookup[segs]

    def one_hot(self, indices: torch.Tensor) -> torch.Tensor:
        return F.one_hot(indices, self.n_classes).permute(0, 3, 1, 2).float()

    def seg_condition(self, indices: torch.Tensor) -> torch.Tensor:
        """S_d ``(B, S, h, w)`` of class-index maps ``(B, H, W)`` (``config.seg_encoding``)."""
        encoding, h = self.config.seg_encoding, self.config.latent_size
        if encoding == "index":
            return F.adaptive_avg_pool2d(indices.float().unsqueeze(1) / (self.n_classes - 1), h)
        one_hot = self.one_hot(indices)
        if encoding == "unshuffle":
            return F.pixel_unshuffle(one_hot, self.config.latent_factor)
        return F.adaptive_avg_pool2d(one_hot, h)

    def image_condition(self, images: torch.Tensor) -> torch.Tensor | None:
        """The image part of the denoiser's spatial input: images ``(B, C_img, size, size)``
        rearranged space-to-depth to ``(B, C_img f^2, h, w)`` (``image_input="unshuffle"``), else None."""
        if self.config.image_input != "unshuffle":
            return None
        return F.pixel_unshuffle(images.float(), self.config.latent_factor)

    def spatial_condition(self, indices: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The denoiser's spatial input besides z_t: S_d, then :meth:`image_condition` if any."""
        s_d = self.seg_condition(indices)
        image = self.image_condition(images)
        return s_d if image is None else torch.cat([s_d, image], dim=1)

    @torch.no_grad()
    def encode_latents(self, indices: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``mu * latent_scale`` of ground-truth class maps (posterior means)."""
        mu, _ = self.autoencoder.encode(self.one_hot(indices))
        return mu * self.latent_scale

    @torch.no_grad()
    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(images)

    def condition(self, images: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
        """The ToE condition c ``(B, n_ctx, d)``."""
        return self.toe(ratios, self.image_tokens(images))

    # -- inference ---------------------------------------------------------------------------

    def _check_inputs(self, images, segs, ratios) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = self.latent_scale.device
        images = torch.as_tensor(np.asarray(images, dtype=np.float32) if not isinstance(images, torch.Tensor)
                                 else images).float().to(device)
        ratios = torch.as_tensor(np.asarray(ratios, dtype=np.float32) if not isinstance(ratios, torch.Tensor)
                                 else ratios).float().reshape(-1).to(device)
        size = self.config.size
        if images.ndim != 4 or images.shape[1] != self.image_channels or images.shape[2:] != (size, size):
            raise InputError(f"images must have shape (B, {self.image_channels}, {size}, {size}), "
                             f"got {tuple(images.shape)}")
        indices = self.class_indices(segs)
        if indices.shape != (images.shape[0], size, size):
            raise InputError(f"segmentations must have shape ({images.shape[0]}, {size}, {size}), "
                             f"got {tuple(indices.shape)}")
        if ratios.shape[0] != images.shape[0]:
            raise InputError(f"need one slice ratio per slice: {ratios.shape[0]} ratios for {images.shape[0]} slices")
        if not torch.isfinite(images).all():
            raise InputError("images contain NaN or infinite values")
        if ((ratios < 0) | (ratios > 1) | ~torch.isfinite(ratios)).any():
            raise InputError("slice ratios must lie in [0, 1]")
        return images, indices, ratios

    @torch.no_grad()
    def generate_pgt(self, images, segs, ratios, *, steps: int | None = None, samples: int | None = None,
                     generator: torch.Generator | int | None = None, per_pass: int = SLICES_PER_PASS,
                     dtype: torch.dtype = torch.int64) -> torch.Tensor:
        """Pseudo ground truths ``(samples, B, size, size)`` (label values, ``dtype``: int64 unless
        asked for a smaller type the labels fit).

        ``images`` ``(B, C_img, size, size)``, ``segs`` ``(B, size, size)`` label values,
        ``ratios`` ``(B,)`` in [0, 1] (numpy arrays or tensors). ``steps``: DDIM steps (default
        ``config.inference_steps``); ``samples``: pGTs per slice (default ``config.samples``).
        ``generator``: a CPU ``torch.Generator`` or an integer seed (default ``config.seed``); the
        initial noise is drawn from it slice by slice (all samples of slice 0, then slice 1, ...),
        and DDIM with η = 0 is deterministic after that: the same weights, inputs and seed give the
        same pGTs, and feeding the slices in several calls with one generator gives the same noise
        as one call. The denoiser and the decoder take at most ``per_pass`` slices per pass (whole
        samples of every slice, :mod:`segqc.nn.chunks`; the latents of all samples stay in
        memory), so memory beyond the latents and the pGTs does not grow with ``samples``, and the
        result does not depend on ``per_pass`` beyond float rounding.
        """
        steps = int(self.config.inference_steps if steps is None else steps)
        samples = int(self.config.samples if samples is None else samples)
        if steps < 1 or steps > self.config.train_timesteps or samples < 1:
            raise ValueError(f"need 1 <= steps <= {self.config.train_timesteps} and samples >= 1, "
                             f"got {steps}, {samples}")
        if generator is None or isinstance(generator, int):
            generator = torch.Generator().manual_seed(int(self.config.seed if generator is None else generator))
        was_training = self.training
        self.eval()
        try:
            images, indices, ratios = self._check_inputs(images, segs, ratios)
            b = images.shape[0]
            c = self.condition(images, ratios)
            s_d = self.spatial_condition(indices, images)
            h = self.config.latent_size
            noise = torch.randn((b, samples, self.config.latent_channels, h, h), generator=generator)
            z = noise.transpose(0, 1).reshape(samples * b, self.config.latent_channels, h, h).to(images.device)
            chunks = row_chunks(samples, b, samples_per_pass(b, per_pass=per_pass))
            alphas = make_scheduler(self.config).alphas_cumprod.to(images.device)
            timesteps = trailing_timesteps(steps, self.config.train_timesteps)
            for i, t in enumerate(timesteps):
                eps = self._noise_estimate(z, t, s_d, c, chunks)
                a_t = alphas[t]
                a_prev = alphas[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.ones((), device=images.device)
                x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
                z = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
            pgt = self._decode_labels(z, chunks, dtype)
            return pgt.reshape(samples, b, *pgt.shape[1:])
        finally:
            self.train(was_training)

    def _decode_labels(self, z: torch.Tensor, chunks: list[slice], dtype: torch.dtype) -> torch.Tensor:
        """The label values ``(rows, H, W)`` (``dtype``) of the decoded latents ``z``, one row range
        of ``chunks`` per pass (the chunks cover every row of ``z``, :func:`segqc.nn.chunks.row_chunks`)."""
        pgt: torch.Tensor | None = None
        for rows in chunks:
            labels = self.label_values[self.autoencoder.decode(z[rows] / self.latent_scale).argmax(dim=1)].to(dtype)
            if pgt is None:
                pgt = torch.empty((z.shape[0], *labels.shape[1:]), dtype=dtype, device=labels.device)
            pgt[rows] = labels
        if pgt is None:
            raise ValueError("no rows to decode")
        return pgt

    def _noise_estimate(self, z: torch.Tensor, t: int, s_d: torch.Tensor, c: torch.Tensor,
                        chunks: list[slice]) -> torch.Tensor:
        """The denoiser's noise estimate of the sample-major latents ``z`` ``(N B, ...)`` at the
        0-based timestep ``t``, one row range of ``chunks`` per pass; ``s_d`` ``(B, ...)`` and ``c``
        ``(B, n_ctx, d)`` are the batch's spatial input and condition."""
        b = s_d.shape[0]

        def rows_estimate(rows: slice) -> torch.Tensor:
            times = torch.full((rows.stop - rows.start,), t, dtype=torch.long, device=z.device)
            return self.denoiser(z[rows], repeat_rows(s_d, rows, b), times, repeat_rows(c, rows, b))
        return by_rows(rows_estimate, chunks)
