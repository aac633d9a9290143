"""Settings of nnQC (Marciandò et al., diffusion-based QC with a Team of Experts).

:class:`NnqcConfig` is a frozen dataclass saved as JSON with every checkpoint. Presets
(``NnqcConfig.preset(name)``):

* ``tiny`` — for tests: 32 px slices, latent 2 x 8 x 8, ~0.3 M parameters in all, 30-40 steps per
  stage. Learns nothing useful; checks that everything runs.
* ``small`` (the default) — 2 CPU cores: 96 px slices over a window sized by the training
  foreground (``field_of_view="foreground"``; all 180 ACDC volumes: 153 mm around the heart, 1.60 mm pixels;
  every preset sizes it so), latent 2 x 24 x 24 (1/4), VAE (16, 32, 64), diffusion UNet (32, 64, 64) with
  attention on the two coarse levels, E2 a 3-stage CNN with 8 x 8 = 64 tokens of 64 dims, d = 64,
  4 query tokens; the slice itself also enters the denoiser (``image_input``); 2.2 M parameters
  (denoiser 1.7 M). SSL 500 + VAE 3000 + LDM 8000 steps of batch 16 / 8 / 8; inference 4 samples
  of 5 DDIM steps, fused by majority. Measured end to end on the idle 2-core machine (2 torch
  threads, all 180 ACDC volumes): 48 min 50 s — data preparation 2.7 min, SSL 29 s, VAE 19 min
  (0.36 s per step with the patch-GAN), LDM 27 min (0.19 s per step). Other jobs on the same
  cores slow every step (we saw 2-3x with two 2-thread jobs on 2 cores); then pass
  ``threads=1``, or expect over an hour.
* ``paper`` — for a GPU: the paper's settings where it gives them (latent C = 2 at 1/3 of the
  slice size, T = 1000, 20 DDIM steps and 1 sample, batch 32; ``image_input`` as in ``small`` —
  ``image_input=none`` gives the paper's denoiser input exactly) and wide networks where it does not (VAE (64,
  128) with 2 residual blocks, diffusion UNet (128, 256, 512) with 2 residual blocks and attention
  on the two coarse levels, E2 5 stages up to 256 channels, d = 256); ~106 M parameters (denoiser
  97 M). The paper standardises slices to 256 px, which a factor of 3 does not divide; the preset
  uses 264 px (= 3 x 88, and 88 survives the UNet's two halvings), the nearest size that works.
  Its step counts (SSL 20k, VAE 40k, LDM 100k) are a guess: the paper gives none.

Latent size. The autoencoder (MONAI ``AutoencoderKL``) halves the resolution at every level
(``len(vae_channels) - 1`` times). A ``latent_factor`` that is a power of two is reached exactly
that way. Any other factor (3 in the paper) uses the largest power of two below it in the network
and then resizes: the encoder's mean and log-variance maps are area-averaged to ``size //
latent_factor`` (the KL term and the sampling happen at that size, so it is a true bottleneck), and
the decoder bilinearly upsamples the latent back to its own input size before decoding. ``size``
must be divisible by ``latent_factor``, and the latent size by ``2 ** (len(ldm_channels) - 1)``.

Only ``checkpoint_every`` may differ when an interrupted training run is continued
(:meth:`NnqcConfig.resume_key`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

from segqc.config import ConfigBase, register_presets
from segqc.fingerprint.preprocessing import check_field_of_view

__all__ = ["CONDITIONING_MODES", "IMAGE_ENCODERS", "IMAGE_INPUTS", "PRESETS", "SEG_ENCODINGS", "NnqcConfig"]

CONDITIONING_MODES = ("full", "position", "image")
SEG_ENCODINGS = ("onehot", "unshuffle", "index")
IMAGE_INPUTS = ("none", "unshuffle")
IMAGE_ENCODERS = ("ssl", "file", "open_clip")
_TUPLE_FIELDS = ("vae_channels", "encoder_channels", "ldm_channels", "ldm_attention_levels")


@dataclass(frozen=True)
class NnqcConfig(ConfigBase):
    """Every setting of the nnQC model and its training (defaults: the ``small`` preset's, but
    ``field_of_view`` is ``spacing``, as in every model saved before the presets sized the window
    by the foreground).

    Geometry: ``size`` (slice size, voxels), ``field_of_view`` (the slices' in-plane width:
    ``spacing`` — ``size`` pixels at the training data's median spacing —, ``foreground`` — wide
    enough for the training ground truths' foreground —, or a width in mm;
    :func:`~segqc.fingerprint.preprocessing.plan_from_fingerprint`), ``latent_factor`` (latent =
    ``size // latent_factor``), ``latent_channels`` (C = 2 in the paper).

    Stage 1, mask VAE-GAN (MONAI ``AutoencoderKL`` + ``PatchDiscriminator``): ``vae_channels`` per
    level, ``vae_res_blocks``, ``vae_attention`` (non-local attention in the encoder/decoder mid
    blocks and at the lowest level), ``vae_norm_groups``; ``disc_channels``, ``disc_layers``; loss
    weights ``kl_weight``, ``dice_weight`` (generalized Dice on the softmax), ``adv_weight``
    (least-squares patch-GAN), ``perceptual_weight`` (used only with ``perceptual_network_path``,
    see :mod:`segqc.qc.nnqc.train`); ``adv_start``: step at which the adversarial terms start;
    ``vae_steps``, ``vae_batch_size``, ``vae_lr`` (Adam, generator), ``disc_lr``.

    Expert E2, the frozen image encoder: ``image_encoder`` = ``"ssl"`` (default: a small CNN
    pre-trained on the training images by masked denoising autoencoding, then frozen),
    ``"file"`` (the same CNN, weights from the safetensors file ``image_encoder_path``, e.g. the
    ``image_encoder.safetensors`` of another nnQC model; no pre-training) or ``"open_clip"``
    (an open_clip vision tower, ``image_encoder_path`` = ``"MODEL_NAME:/local/weights.pt"``; needs
    the optional ``open_clip`` package). ``encoder_channels`` per stride-2 stage,
    ``token_grid`` (tokens = ``token_grid**2``), ``ssl_steps``, ``ssl_batch_size``, ``ssl_lr``,
    ``ssl_mask_ratio`` (share of masked patches), ``ssl_noise`` (std of added Gaussian noise).

    Team of Experts: ``conditioning`` = ``"full"`` (cross-attention, Q from the slice ratio,
    K/V from the image tokens), ``"position"`` (the ratio embedding alone) or ``"image"`` (the
    image tokens alone); ``context_dim`` (d); ``query_tokens`` (tokens E1 makes from the ratio,
    i.e. context tokens in "full"/"position" mode); ``position_hidden`` (E1's hidden width).

    Stage 2, latent diffusion (MONAI ``DiffusionModelUNet``, 2D, in = C + channels of S_d, out =
    C, cross-attention to the ToE condition). ``seg_encoding``: how the imperfect segmentation S
    becomes S_d at the latent size — ``"onehot"`` (default; K channels: the share of every class
    in each latent cell, i.e. the area-downsampled one-hot map), ``"unshuffle"`` (K x f^2
    channels, f = ``latent_factor``: the one-hot map rearranged space-to-depth, lossless) or
    ``"index"`` (1 channel: class index / (K - 1), area-downsampled — the most literal reading of
    the paper, but averaging indices mixes classes: half LV (1.0) and half background (0.0) reads
    as myocardium (0.67)). ``image_input``: ``"none"`` (the paper: the image reaches the denoiser
    only through c) or ``"unshuffle"`` (default; the preprocessed slice is also concatenated to the
    denoiser's input, rearranged space-to-depth to the latent size: C_img x f^2 lossless channels
    — the few ToE tokens carry too little of *where* the structures are for the pGT to follow the
    image instead of S; a segqc addition, measured in the README). ``ldm_channels``, ``ldm_attention_levels``,
    ``ldm_res_blocks``, ``ldm_head_channels``, ``ldm_norm_groups``; ``train_timesteps`` (T),
    ``beta_schedule``, ``beta_start``, ``beta_end`` (default: the scaled-linear 0.00085-0.012
    schedule of Rombach et al.'s LDM; its last step keeps a little signal, alpha_bar(T) = 0.005,
    and the DDIM sampler stays stable there, unlike with 0.0015-0.0195 where alpha_bar(T) = 1e-4
    amplified the ε error 84-fold in the first x0 estimate); ``high_t_fraction``: share of each
    batch whose timestep is drawn from the noisier half [T/2, T) instead of [0, T) — the
    ε-MSE hardly rewards using S_d and c at low noise, where z_t alone gives z_0 away, so a short
    CPU training learns the conditioning faster when it sees more noisy inputs (the loss stays the
    paper's ε-MSE); ``ldm_steps``, ``ldm_batch_size``, ``ldm_lr``.

    Training data: ``degraded_per_slice`` imperfect segmentations per ground-truth slice, spread
    evenly over the paper's five Dice bins; at every LDM step a sample is replaced by its clean
    ground truth with ``clean_fraction`` and by an empty segmentation with ``empty_fraction``.

    Inference: ``inference_steps`` (DDIM), ``samples`` (pGTs per slice; the QC driver fuses them
    by per-voxel majority). Defaults 5 steps x 4 samples: the same 20 denoiser passes as the
    paper's 20 steps x 1 sample, and better estimates (README); the ``paper`` preset keeps 20 x 1.
    ``checkpoint_every``: steps between saved training states. ``seed``.
    """

    KIND: ClassVar[str] = "nnqc"
    LABEL: ClassVar[str] = "nnQC"
    RESUMABLE_FIELDS: ClassVar[tuple[str, ...]] = ("checkpoint_every",)

    size: int = 96
    field_of_view: str = "spacing"
    latent_factor: int = 4
    latent_channels: int = 2
    # stage 1
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_res_blocks: int = 1
    vae_attention: bool = False
    vae_norm_groups: int = 8
    disc_channels: int = 16
    disc_layers: int = 3
    kl_weight: float = 1e-6
    dice_weight: float = 1.0
    adv_weight: float = 0.01
    perceptual_weight: float = 0.001
    perceptual_network_path: str | None = None
    adv_start: int = 500
    vae_steps: int = 3000
    vae_batch_size: int = 8
    vae_lr: float = 5e-4
    disc_lr: float = 5e-4
    # expert E2
    image_encoder: str = "ssl"
    image_encoder_path: str | None = None
    encoder_channels: tuple[int, ...] = (16, 32, 64)
    token_grid: int = 8
    ssl_steps: int = 500
    ssl_batch_size: int = 16
    ssl_lr: float = 1e-3
    ssl_mask_ratio: float = 0.5
    ssl_noise: float = 0.1
    # team of experts
    conditioning: str = "full"
    context_dim: int = 64
    query_tokens: int = 4
    position_hidden: int = 64
    # stage 2
    seg_encoding: str = "onehot"
    image_input: str = "unshuffle"
    ldm_channels: tuple[int, ...] = (32, 64, 64)
    ldm_attention_levels: tuple[bool, ...] = (False, True, True)
    ldm_res_blocks: int = 1
    ldm_head_channels: int = 32
    ldm_norm_groups: int = 16
    train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear_beta"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    high_t_fraction: float = 0.5
    ldm_steps: int = 8000
    ldm_batch_size: int = 8
    ldm_lr: float = 5e-4
    # data
    degraded_per_slice: int = 5
    clean_fraction: float = 0.1
    empty_fraction: float = 0.05
    # inference
    inference_steps: int = 5
    samples: int = 4
    # bookkeeping
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "field_of_view", check_field_of_view(self.field_of_view))
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            cast = bool if name == "ldm_attention_levels" else int
            object.__setattr__(self, name, tuple(cast(v) for v in value))
        for name in ("perceptual_network_path", "image_encoder_path"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))
        self._validate()

    def _validate(self) -> None:
        def positive(*names: str) -> None:
            for name in names:
                value = getattr(self, name)
                if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                    raise ValueError(f"{name} must be positive, got {value!r}")

        positive("size", "latent_factor", "latent_channels", "vae_res_blocks", "vae_norm_groups",
                 "disc_channels", "disc_layers", "vae_steps", "vae_batch_size", "vae_lr", "disc_lr",
                 "token_grid", "ssl_batch_size", "ssl_lr", "context_dim", "query_tokens",
                 "position_hidden", "ldm_res_blocks", "ldm_head_channels", "ldm_norm_groups",
                 "train_timesteps", "ldm_steps", "ldm_batch_size", "ldm_lr", "degraded_per_slice",
                 "inference_steps", "samples", "checkpoint_every")
        for name in ("kl_weight", "dice_weight", "adv_weight", "perceptual_weight", "ssl_noise", "adv_start",
                     "ssl_steps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if self.latent_factor < 2:
            raise ValueError(f"latent_factor must be >= 2, got {self.latent_factor}")
        if self.size % self.latent_factor:
            raise ValueError(f"size {self.size} is not divisible by latent_factor {self.latent_factor}")
        levels = int(math.log2(self.native_factor)) + 1
        if len(self.vae_channels) != levels:
            raise ValueError(f"latent_factor {self.latent_factor} needs {levels} autoencoder levels "
                             f"(downsampling x{self.native_factor} in the network), "
                             f"got vae_channels {self.vae_channels}")
        if self.size % self.native_factor:
            raise ValueError(f"size {self.size} is not divisible by {self.native_factor}")
        for name, channels, groups in (("vae_channels", self.vae_channels, self.vae_norm_groups),
                                       ("ldm_channels", self.ldm_channels, self.ldm_norm_groups)):
            if min(channels) < 1 or any(c % groups for c in channels):
                raise ValueError(f"every entry of {name} {channels} must be a positive multiple "
                                 f"of the norm groups {groups}")
        if len(self.ldm_attention_levels) != len(self.ldm_channels):
            raise ValueError(f"ldm_attention_levels {self.ldm_attention_levels} needs one entry per level of "
                             f"ldm_channels {self.ldm_channels}")
        for c, attention in zip(self.ldm_channels, self.ldm_attention_levels):
            if attention and c % self.ldm_head_channels:
                raise ValueError(f"ldm channels {c} with attention must be a multiple of ldm_head_channels "
                                 f"{self.ldm_head_channels}")
        if self.ldm_channels[-1] % self.ldm_head_channels:
            raise ValueError(f"the last ldm level ({self.ldm_channels[-1]}) holds the mid-block attention and must "
                             f"be a multiple of ldm_head_channels {self.ldm_head_channels}")
        down = 2 ** (len(self.ldm_channels) - 1)
        if self.latent_size % down:
            raise ValueError(f"latent size {self.latent_size} (size {self.size} / {self.latent_factor}) must be "
                             f"divisible by {down} for {len(self.ldm_channels)} diffusion UNet levels")
        if self.disc_layers < 1:
            raise ValueError(f"disc_layers must be >= 1, got {self.disc_layers}")
        if not self.encoder_channels or min(self.encoder_channels) < 1:
            raise ValueError(f"encoder_channels must be positive, got {self.encoder_channels}")
        if self.conditioning not in CONDITIONING_MODES:
            raise ValueError(f"conditioning must be one of {', '.join(CONDITIONING_MODES)}, got {self.conditioning!r}")
        if self.seg_encoding not in SEG_ENCODINGS:
            raise ValueError(f"seg_encoding must be one of {', '.join(SEG_ENCODINGS)}, got {self.seg_encoding!r}")
        if self.image_input not in IMAGE_INPUTS:
            raise ValueError(f"image_input must be one of {', '.join(IMAGE_INPUTS)}, got {self.image_input!r}")
        if self.image_encoder not in IMAGE_ENCODERS:
            raise ValueError(f"image_encoder must be one of {', '.join(IMAGE_ENCODERS)}, got {self.image_encoder!r}")
        if self.image_encoder != "ssl" and not self.image_encoder_path:
            raise ValueError(f"image_encoder {self.image_encoder!r} needs image_encoder_path")
        if not 0 < self.ssl_mask_ratio < 1:
            raise ValueError(f"ssl_mask_ratio must lie in (0, 1), got {self.ssl_mask_ratio}")
        if self.beta_schedule not in ("linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine"):
            raise ValueError(f"unknown beta_schedule {self.beta_schedule!r}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.inference_steps > self.train_timesteps:
            raise ValueError(f"inference_steps {self.inference_steps} exceeds train_timesteps {self.train_timesteps}")
        if not 0 <= self.high_t_fraction <= 1:
            raise ValueError(f"high_t_fraction must lie in [0, 1], got {self.high_t_fraction}")
        for name in ("clean_fraction", "empty_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.clean_fraction + self.empty_fraction >= 1:
            raise ValueError("clean_fraction + empty_fraction must be < 1")

    # ----------------------------------------------------------------------------------------

    @property
    def native_factor(self) -> int:
        """Downsampling done by the autoencoder's levels: the largest power of two <= latent_factor."""
        return 2 ** int(math.floor(math.log2(self.latent_factor)))

    @property
    def latent_size(self) -> int:
        return self.size // self.latent_factor

    def seg_channels(self, n_classes: int) -> int:
        """Channels of S_d for ``n_classes`` classes (background included)."""
        if self.seg_encoding == "index":
            return 1
        return n_classes * (self.latent_factor ** 2 if self.seg_encoding == "unshuffle" else 1)

    def image_input_channels(self, image_channels: int) -> int:
        """Channels the preprocessed image adds to the denoiser's input (``image_input``)."""
        return image_channels * self.latent_factor ** 2 if self.image_input == "unshuffle" else 0

    @property
    def n_context_tokens(self) -> int:
        """Tokens of the condition c: ``query_tokens`` ("full", "position") or the image tokens."""
        return self.token_grid ** 2 if self.conditioning == "image" else self.query_tokens


_SMALL = NnqcConfig(field_of_view="foreground")

_TINY = replace(
    _SMALL,
    size=32, latent_factor=4,
    vae_channels=(8, 16, 16), vae_norm_groups=8, disc_channels=8, disc_layers=2, adv_start=10,
    vae_steps=40, vae_batch_size=8, vae_lr=2e-3, disc_lr=1e-3,
    encoder_channels=(8, 16, 16), token_grid=4, ssl_steps=30, ssl_batch_size=8, ssl_lr=3e-3,
    context_dim=16, query_tokens=2, position_hidden=16,
    ldm_channels=(16, 32), ldm_attention_levels=(False, True), ldm_head_channels=16, ldm_norm_groups=8,
    ldm_steps=40, ldm_batch_size=8, ldm_lr=2e-3,
    degraded_per_slice=5, inference_steps=5, samples=1, checkpoint_every=20,
)

_PAPER = replace(
    _SMALL,
    size=264, latent_factor=3,
    vae_channels=(64, 128), vae_res_blocks=2, vae_attention=False, vae_norm_groups=32,
    disc_channels=64, disc_layers=3, adv_start=5000,
    vae_steps=40000, vae_batch_size=32, vae_lr=1e-4, disc_lr=1e-4,
    encoder_channels=(32, 64, 128, 256, 256), token_grid=8, ssl_steps=20000, ssl_batch_size=32, ssl_lr=3e-4,
    context_dim=256, query_tokens=4, position_hidden=256,
    ldm_channels=(128, 256, 512), ldm_attention_levels=(False, True, True), ldm_res_blocks=2,
    ldm_head_channels=64, ldm_norm_groups=32,
    ldm_steps=100000, ldm_batch_size=32, ldm_lr=1e-4,
    inference_steps=20, samples=1, checkpoint_every=2000,
)

PRESETS: dict[str, NnqcConfig] = {"tiny": _TINY, "small": _SMALL, "paper": _PAPER}
register_presets(NnqcConfig, PRESETS)
