"""Settings of a segmentation-model zoo: one 2D UNet trained on a dataset, saved at several epochs.

:class:`ZooConfig` is a frozen dataclass saved as JSON with the zoo (``zoo.json``) and with every
snapshot checkpoint. Two named presets (``ZooConfig.preset(name)``):

* ``small``: 128 px slices at the dataset's median in-plane spacing, a 4-level MONAI UNet with
  (16, 32, 64, 128) channels and no residual units, Adam at 3e-3, batches of 16, 24 "epochs" of
  25 batches (nnU-Net style: an epoch is a fixed number of batches, not a pass over the data)
  with snapshots at epochs 1, 2, 4, 8, 16 and 24. Trains in a few minutes on 2 CPU cores; the
  early snapshots are deliberately under-trained, which is the point of a zoo. Random flips and
  90-degree rotations are off: in a run this short they cost more than they bring (ACDC, 16
  held-out cases, epoch 16: mean multi-class Dice 0.59 with them, 0.71 without), and scans of one
  dataset share an orientation, so left and right are information (e.g. right vs left ventricle).
* ``paper`` (alias ``large``): 256 px, (32, 64, 128, 256, 512) channels with 2 residual units,
  batches of 32, 100 epochs of 250 batches (nnU-Net's epoch), snapshots at 1, 2, 5, 10, 25, 50,
  100, flips and rotations on. Meant for a GPU. (The zoo follows no paper; the name keeps the
  convention that every learned method has a ``small`` and a ``paper`` config.)

Only ``epochs`` and ``snapshot_epochs`` may change when a stopped training run is continued
(:meth:`ZooConfig.resume_key`); every other field changes what the weights are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from segqc.config import ConfigBase, register_presets

__all__ = ["PRESETS", "ZooConfig"]



@dataclass(frozen=True)
class ZooConfig(ConfigBase):
    """How the zoo's UNet is trained (module docstring). Defaults are the ``small`` preset.

    * ``size``: in-plane size (voxels) of the preprocessed slices; must be divisible by
      ``2 ** (len(channels) - 1)``. ``target_spacing_mm``: in-plane spacing of the slices (RAS
      order); ``None`` takes the training cases' median (the fingerprint's).
    * ``channels``: feature channels per UNet level (MONAI ``UNet``, strides 2);
      ``num_res_units``: residual units per level (0 = plain convolutions; much faster on a CPU).
    * ``batch_size``, ``lr`` (Adam), ``weight_decay``; ``epochs``; ``steps_per_epoch``: batches per
      epoch (``None``: one pass over the training slices); ``snapshot_epochs``: epochs after which
      a model is saved (the last epoch is always saved).
    * ``seed``: seeds the split, the initial weights, the batch order and the augmentation.
      ``holdout_fraction``: share of *patients* held out (never trained on; predicted by
      ``segqc zoo predict``).
    * ``empty_slice_fraction``: share of the training slices without foreground that are kept
      (all slices with foreground are kept).
    * Augmentation: ``flips`` (random flips and 90-degree rotations in-plane),
      ``max_shift_fraction`` (random in-plane translation up to this fraction of ``size``; the
      training windows are centred on the ground truth, the prediction windows on the image, so
      the network must not rely on the object being in the centre), ``intensity_jitter``
      (``x * (1 + a) + b`` with ``a, b`` uniform in ``[-jitter, jitter]``).
    """

    KIND: ClassVar[str] = "zoo"
    RESUMABLE_FIELDS: ClassVar[tuple[str, ...]] = ("epochs", "snapshot_epochs")

    size: int = 128
    target_spacing_mm: tuple[float, float] | None = None
    channels: tuple[int, ...] = (16, 32, 64, 128)
    num_res_units: int = 0
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.0
    epochs: int = 24
    steps_per_epoch: int | None = 25
    snapshot_epochs: tuple[int, ...] = (1, 2, 4, 8, 16, 24)
    seed: int = 0
    holdout_fraction: float = 0.25
    empty_slice_fraction: float = 0.1
    flips: bool = False
    max_shift_fraction: float = 0.25
    intensity_jitter: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "snapshot_epochs", tuple(sorted({int(e) for e in self.snapshot_epochs})))
        if self.target_spacing_mm is not None:
            spacing = tuple(float(s) for s in self.target_spacing_mm)
            if len(spacing) != 2 or not all(math.isfinite(s) and s > 0 for s in spacing):
                raise ValueError(f"target_spacing_mm needs two positive spacings (mm), got {self.target_spacing_mm}")
            object.__setattr__(self, "target_spacing_mm", spacing)
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise ValueError(f"channels needs at least two positive widths (UNet levels), got {self.channels}")
        factor = 2 ** (len(self.channels) - 1)
        if self.size < factor or self.size % factor:
            raise ValueError(f"size {self.size} must be a multiple of {factor} (2 ** (levels - 1)) for "
                             f"channels {self.channels}")
        if self.num_res_units < 0:
            raise ValueError(f"num_res_units must be >= 0, got {self.num_res_units}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 or None, got {self.steps_per_epoch}")
        if any(e < 1 for e in self.snapshot_epochs):
            raise ValueError(f"snapshot epochs must be >= 1, got {self.snapshot_epochs}")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must lie in (0, 1), got {self.holdout_fraction}")
        if not 0 <= self.empty_slice_fraction <= 1:
            raise ValueError(f"empty_slice_fraction must lie in [0, 1], got {self.empty_slice_fraction}")
        if not 0 <= self.max_shift_fraction < 0.5:
            raise ValueError(f"max_shift_fraction must lie in [0, 0.5), got {self.max_shift_fraction}")
        if not 0 <= self.intensity_jitter < 1:
            raise ValueError(f"intensity_jitter must lie in [0, 1), got {self.intensity_jitter}")

    # ----------------------------------------------------------------------------------------

    @property
    def strides(self) -> tuple[int, ...]:
        return (2,) * (len(self.channels) - 1)

    @property
    def saved_epochs(self) -> tuple[int, ...]:
        """Epochs whose model is saved: the snapshot epochs up to ``epochs``, and ``epochs``."""
        return tuple(sorted({e for e in self.snapshot_epochs if e <= self.epochs} | {self.epochs}))

    @staticmethod
    def model_name(epoch: int) -> str:
        """Folder (and manifest ``source``) name of the snapshot after ``epoch``: ``unet_e008``."""
        return f"unet_e{epoch:03d}"


_SMALL = ZooConfig()
_PAPER = ZooConfig(size=256, channels=(32, 64, 128, 256, 512), num_res_units=2, batch_size=32, lr=1e-3,
                   weight_decay=1e-5, epochs=100, steps_per_epoch=250, snapshot_epochs=(1, 2, 5, 10, 25, 50, 100),
                   flips=True)

#: Named configs: ``small`` (2 CPU cores, minutes) and ``paper``/``large`` (a GPU).
PRESETS: dict[str, ZooConfig] = {"small": _SMALL, "paper": _PAPER, "large": _PAPER}
register_presets(ZooConfig, PRESETS)
