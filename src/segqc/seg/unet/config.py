"""Settings of the U-Net baseline of ``segqc seg`` (a deterministic MONAI U-Net, or its MC-dropout
variant), made to compare with LDSeg in the same harness.

:class:`UnetConfig` is a frozen dataclass saved with every checkpoint. Presets
(``UnetConfig.preset(name)``) match LDSeg's data and step budget:

* ``tiny`` — tests: 32 px slices, channels (8, 16, 32), 300 steps of 8 slices.
* ``small`` (the default) — 2 CPU cores: 128 px slices, channels (16, 32, 64, 128, 256), two
  residual units per level, 3000 steps of batch 8 (LDSeg ``small``'s slices, steps and batch).
* ``paper`` — GPU: 256 px, channels (32, 64, 128, 256, 512), 50 000 steps of batch 16.

Loss: ``CE + gamma Dice`` (gamma = 2, the segmentation part of LDSeg's loss, same Dice). The
MC-dropout variant is the same network with ``dropout`` > 0 (MONAI's dropout after every
convolution unit) and ``samples`` > 1: at inference the dropout layers stay active and the
``samples`` passes are averaged like LDSeg's samples (``--set dropout=0.2 --set samples=8``, or
``segqc seg predict --samples 8`` on a model trained with dropout). With ``dropout`` = 0 every
pass is the same: one pass, zero spread.

Multi-rater folders (``CASE/image.*`` + ``CASE/rater_k.*``, :mod:`segqc.io.raters`) are
trained on the target ``raters`` names: ``majority`` — the raters' majority ``Σ A ≥ R/2`` (the
MV-UNet baseline of the consensus-diffusion paper), ``soft`` — the rater mean as soft class
probabilities (cross-entropy and Dice with soft targets), ``random`` — one rater drawn at random
for every slice and step (label sampling, Jensen et al. 2019). nnU-Net datasets ignore it.

Only ``steps_train`` and ``checkpoint_every`` may change when a stopped run is continued.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from segqc.config import ConfigBase, register_presets
from segqc.seg.slice_options import check_slice_options

__all__ = ["PRESETS", "UnetConfig"]


@dataclass(frozen=True)
class UnetConfig(ConfigBase):
    """Every setting of the U-Net baseline (defaults: the ``small`` preset).

    ``size`` (slices resampled to ``size`` x ``size`` px, :mod:`segqc.seg.slices`), ``spacing_mm``
    (0: whole slices; > 0: a field of view of ``size * spacing_mm`` mm around each slice's
    centre, :func:`segqc.seg.slices.slice_window`; single-label data only), ``channels``
    per level (each level halves the size: ``size`` must be divisible by 2^(levels−1)),
    ``res_units`` per level, ``dropout`` (probability; > 0 makes MC-dropout possible);
    ``gamma`` (Dice weight), ``steps_train`` Adam steps of ``batch_size`` slices drawn uniformly,
    learning rate ``lr`` multiplied by ``lr_decay`` every 1000 steps, ``flip`` augmentation,
    ``noise_aug`` (Gaussian noise augmentation as LDSeg's: :func:`segqc.seg.slices.add_noise_rows`),
    ``noise_consistency`` (as LDSeg's, on the encoder's feature maps:
    :func:`segqc.seg.unet.model.encoder_features`), ``checkpoint_every``; ``samples`` (default
    passes at inference: MC-dropout when > 1)."""

    KIND: ClassVar[str] = "unet"
    LABEL: ClassVar[str] = "U-Net"
    RESUMABLE_FIELDS: ClassVar[tuple[str, ...]] = ("steps_train", "checkpoint_every")

    size: int = 128
    spacing_mm: float = 0.0
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    res_units: int = 2
    dropout: float = 0.0
    gamma: float = 2.0
    steps_train: int = 3000
    batch_size: int = 8
    lr: float = 1e-3
    lr_decay: float = 0.9
    flip: bool = False
    noise_aug: float = 0.0
    noise_consistency: float = 0.0
    checkpoint_every: int = 250
    samples: int = 1
    raters: str = "majority"
    seed: int = 0

    def __post_init__(self) -> None:
        check_slice_options(self.spacing_mm, self.noise_aug, self.noise_consistency)
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) < 2:
            raise ValueError(f"channels needs at least two levels, got {self.channels}")
        if self.size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"size {self.size} cannot be halved {len(self.channels) - 1} times")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.raters not in ("majority", "soft", "random"):
            raise ValueError(f"raters must be majority, soft or random, got {self.raters!r}")
        for name in ("steps_train", "batch_size", "checkpoint_every", "samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def steps(self) -> int:
        """Sampling steps: a U-Net takes one pass per sample (reported as 1)."""
        return 1


PRESETS = {
    "tiny": UnetConfig(size=32, channels=(8, 16, 32), res_units=1, steps_train=300, batch_size=8, lr=3e-3,
                       checkpoint_every=1000),
    "small": UnetConfig(),
    "paper": UnetConfig(size=256, channels=(32, 64, 128, 256, 512), steps_train=50_000, batch_size=16,
                        checkpoint_every=1000),
}
register_presets(UnetConfig, PRESETS)
