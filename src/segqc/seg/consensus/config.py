"""Settings of consensus diffusion (Amit et al., "Annotator Consensus Prediction for Medical Image
Segmentation with Diffusion Models").

:class:`ConsensusConfig` is a frozen dataclass saved as JSON with every checkpoint. Presets
(``ConsensusConfig.preset(name)``):

* ``tiny`` — for tests: 32 px, a two-level U-Net of 16 channels, one small RRDB, T = 50, a few
  hundred steps.
* ``small`` (the default) — 2 CPU cores: 64 px (LIDC crops as they are), a four-level U-Net of
  (16, 32, 64, 64) channels with attention at 16 x 16 and 8 x 8 (the paper's rule), one residual
  block per level, an image encoder of one RRDB of 16 channels (growth 8), T = 100 (the paper),
  batch 8, 8000 steps.
* ``paper`` — for a GPU: 256 px, seven levels of [L, L, L, 2L, 2L, 4L, 4L] channels with L = 128,
  attention at 16 x 16 and 8 x 8, eight RRDBs, batch 4, AdamW 1e-4.

Diffusion in image space (the maps are small): ``x_0 = 2 M - 1`` (a binary map scaled to
[-1, 1]; the paper writes M, the usual diffusion convention is [-1, 1]), T =
``timesteps`` (100, the paper) with a linear β schedule. Algorithm 1 writes β from 1e-4 to 2e-2
over the T steps — the 1000-step DDPM values; with T = 100 that leaves ᾱ_T = 0.36, so the last
training step still holds 60 % of the map while sampling starts from pure noise. The schedule here
is that of the improved-diffusion code the paper builds on: β from ``beta_start · 1000 / T`` to
``beta_end · 1000 / T`` (1e-3 to 0.2 for T = 100; ᾱ_T = 2e-5).

What the network predicts (``prediction``): ``epsilon`` — the noise, the paper's loss
``||ε − ε_θ||²``; ``v`` — ``√ᾱ ε − √(1−ᾱ) x_0``; ``x0`` (default) — the clean map itself. On
the synthetic rater disks of the tests (``tiny``, 600 steps, one CPU thread, 100 s each) the soft
Dice against the rater mean is 0.39 with ``epsilon``, 0.77 with ``v`` and 0.91 with ``x0``: a
binary map is far easier to predict than the noise, and within a CPU budget that decides.
``--set prediction=epsilon`` trains the paper's parameterisation.

Inference: ``sampler`` ``ddpm`` (Algorithm 2: ancestral over all T steps, the posterior variance
β̃_t) or ``ddim`` with ``steps`` evenly spaced steps; ``generations`` samples per level, averaged.

Levels (``mode``):

* ``consensus`` (the paper): level c of a case with C raters is the map ``M^c = [Σ A ≥ c]``. Cases
  may have different numbers of raters, so a level is looked up by its *fraction* ``c / C`` on a
  grid of ``level_grid`` steps (index ``round(level_grid · c / C)``, 1..level_grid). With
  ``level_grid`` a multiple of every C in the data (12 for LIDC's 2, 3 and 4 readers; 10 for
  BU-BIL's 10 masks) every training level has its own entry, and a dataset where every case has
  C raters with ``level_grid = C`` is exactly the paper's lookup table. Inference samples the
  levels of ``inference_raters`` raters (default: the most raters of a training case), c = 1..C,
  and averages them: the soft map.
* ``annotator`` (ablation): condition on the rater number k, target rater k's mask.
* ``no_annotator`` (ablation): no condition; the target is a random rater's mask; the soft map is
  the mean of ``inference_raters × generations`` samples.
* ``soft`` (ablation): the target is the rater mean itself (scaled to [-1, 1]); the soft map is
  the mean of ``inference_raters × generations`` samples, clipped to [0, 1].

Only ``steps_train`` and ``checkpoint_every`` may change when a stopped run is continued.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from segqc.config import ConfigBase, register_presets

__all__ = ["MODES", "PRESETS", "ConsensusConfig"]

MODES = ("consensus", "annotator", "no_annotator", "soft")


@dataclass(frozen=True)
class ConsensusConfig(ConfigBase):
    """Every setting of the consensus diffusion model and its training (defaults: ``small``).

    Network: ``size`` (maps and images are resampled to ``size`` x ``size`` px), ``channels`` /
    ``attention`` / ``res_blocks`` / ``norm_groups`` of the denoising U-Net (MONAI
    ``DiffusionModelUNet``: networks E and D, with the time and level embeddings in every residual
    block), ``rrdb_blocks`` / ``rrdb_width`` / ``rrdb_growth`` of the image encoder G, whose
    ``rrdb_width`` output channels enter the U-Net's first convolution with the noisy map (one
    convolution of the concatenation = ``F(x_t) + G(I)``, eq. 3).

    Levels: ``mode`` (module docstring), ``level_grid``, ``inference_raters`` (0 = the most raters
    of a training case).

    Diffusion: ``timesteps`` (T), ``beta_start`` / ``beta_end`` (linear schedule), ``prediction``
    (``epsilon``, ``v`` or ``x0``), ``sampler``
    (``ddpm`` or ``ddim``), ``steps`` (DDIM steps), ``generations`` per level.

    Optimisation: ``steps_train`` steps of ``batch_size`` (image, level) pairs, AdamW ``lr``,
    ``weight_decay``, augmentation ``flip`` (both axes, p = 1/2 each) and ``rotate`` (multiples
    of 90°; the paper rotates by up to 15° and scales, not done here), ``checkpoint_every``.
    """

    KIND: ClassVar[str] = "consensus"
    LABEL: ClassVar[str] = "consensus diffusion"
    RESUMABLE_FIELDS: ClassVar[tuple[str, ...]] = ("steps_train", "checkpoint_every")

    size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 64)
    attention: tuple[bool, ...] = (False, False, True, True)
    res_blocks: int = 1
    norm_groups: int = 8
    rrdb_blocks: int = 1
    rrdb_width: int = 16
    rrdb_growth: int = 8
    mode: str = "consensus"
    level_grid: int = 12
    inference_raters: int = 0
    timesteps: int = 100
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    prediction: str = "x0"
    sampler: str = "ddpm"
    steps: int = 100
    generations: int = 4
    steps_train: int = 8000
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 1e-4
    flip: bool = True
    rotate: bool = True
    checkpoint_every: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "attention", tuple(bool(a) for a in self.attention))
        if len(self.attention) != len(self.channels):
            raise ValueError(f"attention needs one entry per U-Net level ({len(self.channels)}); got {self.attention}")
        factor = 2 ** (len(self.channels) - 1)
        if self.size % factor:
            raise ValueError(f"size {self.size} must be a multiple of {factor} ({len(self.channels)} U-Net levels)")
        if any(c % self.norm_groups for c in (*self.channels, self.rrdb_width)):
            raise ValueError(f"channels {self.channels} and rrdb_width {self.rrdb_width} must be multiples of "
                             f"norm_groups {self.norm_groups}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.prediction not in ("epsilon", "v", "x0"):
            raise ValueError(f"prediction must be epsilon, v or x0, got {self.prediction!r}")
        if self.sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be ddpm or ddim, got {self.sampler!r}")
        for name in ("timesteps", "steps", "generations", "steps_train", "batch_size", "level_grid", "res_blocks",
                     "rrdb_blocks", "rrdb_width", "rrdb_growth", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.inference_raters < 0:
            raise ValueError(f"inference_raters must be >= 0 (0: the most raters of a training case), "
                             f"got {self.inference_raters}")
        if self.steps > self.timesteps:
            raise ValueError(f"steps ({self.steps}) cannot exceed timesteps ({self.timesteps})")
        if not 0 < self.beta_start < self.beta_end or self.beta_end * 1000 / self.timesteps >= 1:
            raise ValueError(f"need 0 < beta_start < beta_end and beta_end * 1000 / timesteps < 1; got "
                             f"{self.beta_start}, {self.beta_end}, T = {self.timesteps}")

    @property
    def betas_range(self) -> tuple[float, float]:
        """First and last β of the schedule (module docstring): the 1000-step values scaled by 1000 / T."""
        scale = 1000.0 / self.timesteps
        return self.beta_start * scale, self.beta_end * scale


PRESETS = {
    "tiny": ConsensusConfig(size=32, channels=(16, 16), attention=(False, False), rrdb_blocks=1, rrdb_width=16,
                            rrdb_growth=8, timesteps=50, steps=50, generations=2, steps_train=300, batch_size=8,
                            lr=2e-3, level_grid=12, checkpoint_every=1000),
    "small": ConsensusConfig(),
    "paper": ConsensusConfig(size=256, channels=(128, 128, 128, 256, 256, 512, 512),
                             attention=(False, False, False, False, True, True, False), res_blocks=2,
                             norm_groups=32, rrdb_blocks=8, rrdb_width=64, rrdb_growth=32, batch_size=4, lr=1e-4,
                             generations=25, steps_train=100_000, checkpoint_every=1000),
}
register_presets(ConsensusConfig, PRESETS)
