"""Settings of the Probabilistic U-Net baseline (Kohl et al. 2018, "A Probabilistic U-Net for
Segmentation of Ambiguous Images").

:class:`ProbUnetConfig` is a frozen dataclass saved with every checkpoint. Presets:

* ``tiny`` — tests: 32 px, U-Net channels (8, 16, 32), latent 3, 300 steps of 8.
* ``small`` (the default) — 2 CPU cores: 64 px (LIDC crops as they are), U-Net channels
  (16, 32, 64, 128), latent dimension 6 (the paper's LIDC choice), prior and posterior encoders
  of the same widths, 8000 steps of batch 8 (consensus diffusion ``small``'s budget).
* ``paper`` — 128 px, channels (32, 64, 128, 192), latent 6, 240 000 steps of batch 32.

Network: a MONAI ``UNet`` whose last layer gives ``features`` channels; a latent sample z
(``latent`` dimensions) is tiled over the image and concatenated with them; three 1 x 1
convolutions (ReLU between) give the class logits. The prior net (image) and the posterior net
(image and the one-hot target) are convolutional encoders (stride-2 stages of the U-Net's widths,
global average pooling, a 1 x 1 convolution to the mean and log-variance of an axis-aligned
Gaussian).

Training on a multi-rater folder: every slice and step draws one rater (the paper: one of the
four LIDC graders at random), z from the posterior, loss = cross-entropy (mean over pixels) +
``beta`` · KL(posterior ‖ prior) / pixels — the paper's summed cross-entropy + β KL divided by
the number of pixels. Inference: z from the prior, one pass per sample.

Only ``steps_train`` and ``checkpoint_every`` may change when a stopped run is continued.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from segqc.config import ConfigBase, register_presets

__all__ = ["PRESETS", "ProbUnetConfig"]


@dataclass(frozen=True)
class ProbUnetConfig(ConfigBase):
    """Every setting of the Probabilistic U-Net (defaults: ``small``; module docstring).

    ``size`` (px), ``channels`` (U-Net and encoder widths; each level halves the size),
    ``res_units`` (MONAI UNet), ``features`` (channels of the U-Net output the latent joins),
    ``latent`` (dimensions of z), ``beta`` (KL weight), ``steps_train``, ``batch_size``, Adam
    ``lr``, ``flip`` (random flips), ``checkpoint_every``, ``samples`` (default samples at
    inference)."""

    KIND: ClassVar[str] = "probunet"
    LABEL: ClassVar[str] = "Probabilistic U-Net"
    RESUMABLE_FIELDS: ClassVar[tuple[str, ...]] = ("steps_train", "checkpoint_every")

    size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)
    res_units: int = 1
    features: int = 16
    latent: int = 6
    beta: float = 1.0
    steps_train: int = 8000
    batch_size: int = 8
    lr: float = 1e-4
    flip: bool = True
    checkpoint_every: int = 250
    samples: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) < 2:
            raise ValueError(f"channels needs at least two levels, got {self.channels}")
        if self.size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"size {self.size} cannot be halved {len(self.channels) - 1} times")
        for name in ("features", "latent", "steps_train", "batch_size", "checkpoint_every", "samples", "res_units"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")

    @property
    def steps(self) -> int:
        """Sampling steps: one pass per sample (reported as 1)."""
        return 1


PRESETS = {
    "tiny": ProbUnetConfig(size=32, channels=(8, 16, 32), features=8, latent=3, steps_train=300, lr=3e-3,
                           samples=4, checkpoint_every=1000),
    "small": ProbUnetConfig(),
    "paper": ProbUnetConfig(size=128, channels=(32, 64, 128, 192), steps_train=240_000, batch_size=32,
                            checkpoint_every=1000),
}
register_presets(ProbUnetConfig, PRESETS)
