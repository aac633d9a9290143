"""Configuration of the convolutional-autoencoder QC baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from segqc.config import ConfigBase, register_presets
from segqc.fingerprint.preprocessing import check_field_of_view


@dataclass(frozen=True)
class CaeConfig(ConfigBase):
    """``size``: slice size (px, divisible by 2**len(channels)); ``field_of_view``: the slices'
    in-plane width (``spacing``, ``foreground`` or mm, as nnQC's,
    :func:`~segqc.fingerprint.preprocessing.plan_from_fingerprint`; ``spacing`` unless a preset
    says otherwise, as in every model saved before the presets sized it by the foreground);
    ``channels``: encoder widths, one stride-2 stage each; ``latent_channels``: bottleneck
    channels; ``epochs``/``batch_size``/``lr``: optimisation; ``corrupt_inputs``: train as a
    denoiser on degraded masks (False = the original baseline, GT in, GT out). Only ``epochs`` may
    change when a stopped training run is continued."""

    KIND: ClassVar[str] = "cae"
    LABEL: ClassVar[str] = "CAE"
    RESUMABLE_FIELDS: ClassVar[tuple[str, ...]] = ("epochs",)

    size: int = 128
    field_of_view: str = "spacing"
    channels: tuple[int, ...] = (16, 32, 64, 64)
    latent_channels: int = 8
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    corrupt_inputs: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "field_of_view", check_field_of_view(self.field_of_view))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.size % (2 ** len(self.channels)):
            raise ValueError(f"size {self.size} must be divisible by 2**{len(self.channels)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")


PRESETS: dict[str, CaeConfig] = {
    "tiny": CaeConfig(size=32, channels=(4, 8), latent_channels=2, epochs=3, batch_size=8, field_of_view="foreground"),
    "small": CaeConfig(field_of_view="foreground"),
    "paper": CaeConfig(size=256, channels=(32, 64, 128, 256, 256), latent_channels=16, epochs=200, batch_size=32,
                       field_of_view="foreground"),
}
register_presets(CaeConfig, PRESETS)
