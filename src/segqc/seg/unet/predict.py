"""Loading the U-Net baseline and predicting slices (arrays to arrays; folders:
:mod:`segqc.seg.inference`).

:func:`predict_slices` returns what LDSeg's does: ``mean`` class probabilities, per-class ``std``,
``entropy`` of the mean (nats) and the ``label`` argmax. With ``samples`` = 1, or a model trained
without dropout, it is one deterministic pass (std 0). With ``samples`` > 1 and dropout it is
Monte-Carlo dropout: the dropout layers stay active and the passes are averaged; the dropout masks
come from torch's generator seeded with ``seed`` and the chunk's first slice, so a case gives the
same result for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segqc.errors import InputError
from segqc.seg.inference import LoadedSegModel, SampleStatistics, concat_statistics, model_directory
from segqc.seg.unet.config import UnetConfig
from segqc.seg.unet.model import build_unet, set_mc_dropout
from segqc.seg.unet.train import METHOD
from segqc.training import checkpoint_fits, load_checkpoint, select_device

__all__ = ["LoadedUnet", "load", "predict_slices"]


@dataclass
class LoadedUnet(LoadedSegModel):
    """A trained U-Net (eval mode), its config, label values per class index, names and image channels."""

    network: nn.Module
    config: UnetConfig
    labels: tuple[int, ...]
    names: dict[str, str]
    image_channels: int


def load(model_dir: str | Path, *, device: str = "cpu") -> LoadedUnet:
    """The trained U-Net of a model directory (or of a training run folder), on ``device``."""
    directory = model_directory(model_dir)
    saved, weights, _ = load_checkpoint(directory, method=METHOD)
    with checkpoint_fits(directory, "U-Net"):
        config = UnetConfig.from_dict(saved["unet"])
        labels = tuple(int(v) for v in saved["labels"])
        channels = int(saved["image_channels"])
        network = build_unet(config, image_channels=channels, classes=len(labels))
        network.load_state_dict(weights["unet"])
    return LoadedUnet(network.eval().to(select_device(device)), config, labels,
                      {str(k): str(v) for k, v in dict(saved.get("names", {})).items()}, channels)


def predict_slices(model: LoadedUnet, images: np.ndarray, *, samples: int | None = None, steps: int | None = None,
                   seed: int = 0, batch_size: int = 16, keep_samples: bool = True) -> dict[str, np.ndarray]:
    """Predict ``images`` ``(n, C, S, S)`` (module docstring); ``steps`` is ignored (one pass per
    sample). Every pass adds its probabilities to :class:`~segqc.seg.inference.SampleStatistics`
    as it is made, so memory does not grow with ``samples``; ``keep_samples`` also returns every
    pass's probabilities ``samples`` ``(passes, n, K, S, S)`` (linear in ``samples``)."""
    cfg = model.config
    samples = int(cfg.samples if samples is None else samples)
    if samples < 1:
        raise InputError(f"need samples >= 1, got {samples}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != model.image_channels or images.shape[2:] != (cfg.size, cfg.size):
        raise InputError(f"need slices (n, {model.image_channels}, {cfg.size}, {cfg.size}); got {images.shape}")
    mc = samples > 1 and cfg.dropout > 0
    passes = samples if mc else 1
    set_mc_dropout(model.network, mc)
    device = next(model.network.parameters()).device
    parts = []
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                torch.manual_seed(int(seed) * 1_000_003 + start)
                chunk = torch.from_numpy(images[start:start + batch_size]).to(device)
                statistics = SampleStatistics(keep_samples=keep_samples)
                for _ in range(passes):
                    statistics.add(torch.softmax(model.network(chunk), dim=1)[None])
                parts.append(statistics.result())
    finally:
        set_mc_dropout(model.network, False)
    return concat_statistics(parts)
