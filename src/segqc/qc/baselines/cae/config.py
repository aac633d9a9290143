"""Configuration of the convolutional-autoencoder QC baseline."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping


@dataclass(frozen=True)
class CaeConfig:
    """``size``: slice size (px, divisible by 2**len(channels)); ``channels``: encoder widths, one
    stride-2 stage each; ``latent_channels``: bottleneck channels; ``epochs``/``batch_size``/
    ``lr``: optimisation; ``corrupt_inputs``: train as a denoiser on degraded masks (False = the
    original baseline, GT in, GT out)."""

    size: int = 128
    channels: tuple[int, ...] = (16, 32, 64, 64)
    latent_channels: int = 8
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    corrupt_inputs: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size % (2 ** len(self.channels)):
            raise ValueError(f"size {self.size} must be divisible by 2**{len(self.channels)}")

    @classmethod
    def preset(cls, name: str) -> "CaeConfig":
        presets = {
            "tiny": cls(size=32, channels=(4, 8), latent_channels=2, epochs=3, batch_size=8),
            "small": cls(),
            "paper": cls(size=256, channels=(32, 64, 128, 256, 256), latent_channels=16, epochs=200, batch_size=32),
        }
        if name not in presets:
            raise ValueError(f"unknown CAE config {name!r}; choose one of {', '.join(presets)}")
        return presets[name]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CaeConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown CAE config keys {sorted(unknown)}")
        values = dict(data)
        values["channels"] = tuple(values.get("channels", cls.channels))
        return cls(**values)
