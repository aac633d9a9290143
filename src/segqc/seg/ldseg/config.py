"""Settings of LDSeg (Zaman et al., latent diffusion for medical image segmentation).

:class:`LdsegConfig` is a frozen dataclass saved as JSON with every checkpoint. Presets
(``LdsegConfig.preset(name)``):

* ``tiny`` — for tests: 32 px slices (a 2 x 2 latent), widths (8, 8, 16, 16), a two-level
  denoiser, 300 steps of 8 slices (about 15 s on one core). Learns easy synthetic shapes.
* ``small`` (the default) — 2 CPU cores: 128 px slices (an 8 x 8 latent after the paper's four
  down-samplings), widths (16, 32, 48, 64), 4 latent channels, a three-level denoiser
  (32, 64, 64) with attention at the two deepest levels, image skips into the label decoder
  (``decoder_skips``, below), 3000 steps of batch 8 (about 0.3 s per step with 2 threads: 16 min
  on HC18).
* ``paper`` — for a GPU: 256 px slices (16 x 16 latent), widths (32, 64, 128, 256), one latent
  channel (the paper's "two channel input to the denoiser": noisy label latent + image
  embedding), attention in the image encoder's last two stages, a four-level denoiser, 50 000
  steps of batch 16, learning rate 1e-3 decayed exponentially.

Loss (paper Eq. 14-18): ``CE + gamma * Dice + lambda * MSE`` with gamma = 2 and lambda = 1; T =
1000 diffusion steps; the noise schedule ``schedule`` is one of MONAI's (``DDPMScheduler``;
default ``cosine``, Nichol & Dhariwal, which the paper names for its DDIM sampling).

Two settings differ from the paper's text by default, both measured (docs/evidence.md, LDSeg on
HC18): ``train_decode`` — what the label decoder sees during training: ``paper``, Eq. 12
literally, ``z_dn = z_t - eps_hat``; ``x0`` (default), the clean-latent estimate clipped to
``+-clip_latent``, which is what DDIM hands the decoder at inference. With ``paper`` the decoder
learns to read ``z_t - eps_hat`` (at t = T that is ``eps - eps_hat``, not a latent), so the DDIM
output it gets at inference is foreign to it: Dice 0.79 after DDIM vs 0.96 on the training
decode of the same held-out images. ``prediction`` — what the denoiser outputs: ``epsilon`` (the
paper: the noise; the MSE is the paper's ``||eps - eps_hat||^2``) or ``v`` (default; Salimans & Ho
2022: ``v = sqrt(abar) eps - sqrt(1 - abar) z_0``, MSE against v). With the cosine schedule
``abar`` at t = T is 2.4e-9, so the clean estimate ``(z_t - sqrt(1 - abar) eps_hat) / sqrt(abar)``
of the first DDIM step amplifies the noise estimate's error 20 000-fold; ``v`` gives the same
quantities without the division. ``--set train_decode=paper --set prediction=epsilon`` trains
Algorithm 1 as written. Inference: DDIM (eta = 0) with ``steps`` evenly spaced timesteps between
1 and T (default 2, the paper's Fig. 5) and ``samples`` samples per slice.

A third, ``decoder_skips`` (on in ``small``, off in ``tiny`` and ``paper``), changes the
architecture: the label decoder also reads the image encoder's feature maps at each of its sizes,
as a U-Net decoder does; the paper's decoder has no skips. Without them the sampled latent alone
has to carry every boundary through the 8 x 8 or 16 x 16 bottleneck, and the ``small`` model
stays 0.01 (HC18) to 0.03 (ACDC) Dice behind a U-Net trained the same way; with them it matches
the U-Net (HC18 0.957 against 0.956, ACDC 0.862 against 0.867) and keeps the better entropy
map, at the price of robustness to image noise: on HC18 the paper's decoder loses a third (noise
up to 0.2 x the intensity range) to a half (up to 0.45) of the Dice that the skip decoder and
the U-Net lose (docs/evidence.md, LDSeg on HC18; on ACDC no LDSeg beats the U-Net there).
``--set decoder_skips=false`` gives the paper's decoder.

Only ``steps_train`` (the number of optimiser steps) and ``checkpoint_every`` may change when a
stopped run is continued.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from segqc.config import ConfigBase, register_presets
from segqc.seg.slice_options import check_slice_options

__all__ = ["PRESETS", "LdsegConfig"]

SCHEDULES = ("linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine")


@dataclass(frozen=True)
class LdsegConfig(ConfigBase):
    """Every setting of the LDSeg model and its training (defaults: the ``small`` preset's, but
    ``decoder_skips`` is off, as in every model saved before the setting existed).

    Network: ``size`` (slices are resampled in-plane to ``size`` x ``size`` px; divisible by
    ``2 ** len(widths)``), ``spacing_mm`` (0: whole slices; > 0: a field of view of ``size *
    spacing_mm`` mm around each slice's centre, :func:`segqc.seg.slices.slice_window`),
    ``widths`` (one encoder / decoder stage per entry, each a stride-2
    down-sampling: the paper has four; ``blocks`` residual blocks per stage), ``latent_channels``
    (channels of the label embedding and of the image embedding), ``image_attention``
    (multi-head self-attention after the image encoder's last two stages where their feature
    maps have at most 32 x 32 pixels, :func:`segqc.seg.ldseg.model.attention_stages`),
    ``denoiser_channels`` / ``denoiser_attention`` / ``denoiser_res_blocks`` (MONAI ``DiffusionModelUNet`` levels),
    ``norm_groups`` (group norm of the denoiser). The image encoder has the label encoder's shape
    unless ``image_widths`` (one entry per stage of ``widths``: the embedding keeps the latent's
    size), ``image_blocks`` or ``image_embedding_channels`` say otherwise (empty / 0: as the label
    side; the paper: the same size as the label embedding). ``decoder_skips``: the label decoder
    also gets the image encoder's feature maps at each of its sizes (U-Net-style skips from the
    image; the paper's decoder has none); ``decoder_skip_from``: the finest of those maps the
    decoder takes (0: all, from the full-resolution one; k: only the maps ``2^k`` times coarser
    than the slice and coarser — the fine maps carry pixel noise straight to the output).

    Diffusion: ``timesteps`` (T), ``schedule`` (MONAI schedule name), ``train_decode``
    (``paper`` or ``x0``) and ``prediction`` (``epsilon`` or ``v``; module docstring),
    ``clip_latent`` (bound of the estimated clean latent at inference and for ``x0``),
    ``sampling_t_share`` (the expected share of training slices whose ``t`` is drawn from the
    DDIM timesteps of ``steps`` instead of uniformly over 1..T; 0: the paper's uniform draw).

    Loss and optimisation: ``gamma`` (Dice weight), ``lam`` (denoiser weight), ``steps_train``
    optimiser steps of ``batch_size`` slices drawn uniformly from all training slices, Adam
    ``lr`` multiplied by ``lr_decay`` every 1000 steps (exponential decay), ``flip``
    (random flips as augmentation; off by default: left/right classes), ``noise_aug`` (0: off;
    > 0: half of the training slices get Gaussian noise of up to ``noise_aug`` times the slice's
    intensity range, :func:`segqc.seg.slices.add_noise_rows`), ``noise_consistency`` (0: off; > 0,
    with ``noise_aug``: the weight of a loss that pulls the image encoder's embedding and the feature
    maps the label decoder reads, computed on the noisy slices, towards the same slices' clean
    features — :meth:`segqc.seg.ldseg.model.Ldseg.training_loss`; outside the paper, which credits
    LDSeg's robustness to its image embedding), ``checkpoint_every``.

    Inference defaults: ``samples`` per slice, ``steps`` DDIM steps.

    Volumes (an option outside the paper, which is 2D): ``spatial_dims`` 3 makes every network
    3D (:mod:`segqc.seg.ldseg.model`). Training then draws stacks of ``depth`` consecutive slices
    of one case (:func:`segqc.seg.slices.make_stack_batch`; ``batch_size`` stacks per step;
    ``depth`` a multiple of ``2 ** (len(denoiser_channels) - 1)``, the denoiser halves every axis)
    and prediction denoises each case in half-overlapping stacks of ``depth`` slices
    (:mod:`segqc.seg.ldseg.predict`). ``thin_levels``: the finest levels (0: the
    full-resolution one, k: ``2^k`` times coarser in-plane) whose convolutions take one slice
    only — for slices far thicker than the pixels, as nnU-Net does; the denoiser is always 3 x 3 x 3.
    """

    KIND: ClassVar[str] = "ldseg"
    LABEL: ClassVar[str] = "LDSeg"
    RESUMABLE_FIELDS: ClassVar[tuple[str, ...]] = ("steps_train", "checkpoint_every")

    size: int = 128
    spacing_mm: float = 0.0
    spatial_dims: int = 2
    depth: int = 8
    thin_levels: int = 0
    widths: tuple[int, ...] = (16, 32, 48, 64)
    blocks: int = 1
    latent_channels: int = 4
    image_attention: bool = True
    image_widths: tuple[int, ...] = ()
    image_blocks: int = 0
    image_embedding_channels: int = 0
    decoder_skips: bool = False
    decoder_skip_from: int = 0
    denoiser_channels: tuple[int, ...] = (32, 64, 64)
    denoiser_attention: tuple[bool, ...] = (False, True, True)
    denoiser_res_blocks: int = 1
    norm_groups: int = 8
    timesteps: int = 1000
    schedule: str = "cosine"
    train_decode: str = "x0"
    prediction: str = "v"
    clip_latent: float = 5.0
    sampling_t_share: float = 0.0
    gamma: float = 2.0
    lam: float = 1.0
    steps_train: int = 3000
    batch_size: int = 8
    lr: float = 1e-3
    lr_decay: float = 0.9
    flip: bool = False
    noise_aug: float = 0.0
    noise_consistency: float = 0.0
    checkpoint_every: int = 250
    samples: int = 1
    steps: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        check_slice_options(self.spacing_mm, self.noise_aug, self.noise_consistency)
        for name in ("widths", "denoiser_channels", "image_widths"):
            object.__setattr__(self, name, tuple(int(w) for w in getattr(self, name)))
        object.__setattr__(self, "denoiser_attention", tuple(bool(a) for a in self.denoiser_attention))
        if not 2 <= len(self.widths) <= 5:
            raise ValueError("widths needs one entry per down-sampling stage (2 to 5; the paper: 4); "
                             f"got {self.widths}")
        if self.image_widths and len(self.image_widths) != len(self.widths):
            raise ValueError(f"image_widths needs one entry per stage of widths {self.widths} (the image embedding has "
                             f"the latent's size); got {self.image_widths}")
        if self.image_blocks < 0 or self.image_embedding_channels < 0:
            raise ValueError("image_blocks and image_embedding_channels must be >= 0 (0: as the label side)")
        factor = 2 ** len(self.widths)
        if self.size % factor or self.size < factor:
            raise ValueError(f"size {self.size} must be a positive multiple of {factor} "
                             f"({len(self.widths)} stride-2 stages)")
        if len(self.denoiser_attention) != len(self.denoiser_channels):
            raise ValueError("denoiser_attention needs one entry per denoiser level "
                             f"({len(self.denoiser_channels)}); got {self.denoiser_attention}")
        if any(c % self.norm_groups for c in self.denoiser_channels):
            raise ValueError(f"denoiser_channels {self.denoiser_channels} must be multiples of norm_groups "
                             f"{self.norm_groups}")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 (slices) or 3 (stacks of slices), got {self.spatial_dims}")
        if self.spatial_dims == 3 and (self.depth < 1 or self.depth % self.depth_multiple):
            raise ValueError(f"depth ({self.depth} slices) must be a positive multiple of {self.depth_multiple}: the "
                             f"3D denoiser halves the slice axis {len(self.denoiser_channels) - 1} times")
        if not 0 <= self.thin_levels <= len(self.widths) + 1:
            raise ValueError(f"thin_levels must lie in 0..{len(self.widths) + 1}, got {self.thin_levels}")
        if self.latent_size % 2 ** (len(self.denoiser_channels) - 1):
            raise ValueError(f"the {self.latent_size} px latent cannot be halved {len(self.denoiser_channels) - 1} "
                             "times by the denoiser; use fewer denoiser levels or another size")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.prediction not in ("epsilon", "v"):
            raise ValueError(f"prediction must be epsilon or v, got {self.prediction!r}")
        if self.train_decode not in ("paper", "x0"):
            raise ValueError(f"train_decode must be paper or x0, got {self.train_decode!r}")
        for name in ("blocks", "latent_channels", "timesteps", "steps_train", "batch_size", "samples", "steps",
                     "checkpoint_every", "denoiser_res_blocks"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= int(self.decoder_skip_from) < len(self.widths):
            raise ValueError(f"decoder_skip_from must lie in 0..{len(self.widths) - 1} (one per up-sampling), "
                             f"got {self.decoder_skip_from}")
        if not 0.0 <= self.sampling_t_share <= 1.0:
            raise ValueError(f"sampling_t_share must lie in [0, 1], got {self.sampling_t_share}")
        if self.steps > self.timesteps:
            raise ValueError(f"steps ({self.steps}) cannot exceed timesteps ({self.timesteps})")

    @property
    def image_encoder_shape(self) -> tuple[tuple[int, ...], int, int]:
        """The image encoder's ``(widths, blocks, embedding channels)``, the label side's where unset."""
        return (self.image_widths or self.widths, self.image_blocks or self.blocks,
                self.image_embedding_channels or self.latent_channels)

    @property
    def depth_multiple(self) -> int:
        """Slices of a 3D stack must be a multiple of this (the denoiser halves every axis)."""
        return 2 ** (len(self.denoiser_channels) - 1)

    @property
    def latent_size(self) -> int:
        """Side of the label and image embeddings (``size / 2 ** len(widths)``; 4 stages: ``size / 16``)."""
        return self.size // 2 ** len(self.widths)


PRESETS = {
    "tiny": LdsegConfig(size=32, widths=(8, 8, 16, 16), latent_channels=2, image_attention=False,
                        denoiser_channels=(16, 16), denoiser_attention=(False, False), norm_groups=8,
                        steps_train=300, batch_size=8, lr=3e-3, checkpoint_every=1000),
    "small": LdsegConfig(decoder_skips=True),
    "paper": LdsegConfig(size=256, widths=(32, 64, 128, 256), latent_channels=1,
                         denoiser_channels=(64, 128, 128, 128), denoiser_attention=(False, False, True, True),
                         denoiser_res_blocks=2, norm_groups=32, steps_train=50_000, batch_size=16,
                         checkpoint_every=1000),
}
register_presets(LdsegConfig, PRESETS)
