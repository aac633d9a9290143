"""Loading a trained Probabilistic U-Net and sampling slices (arrays to arrays; folders:
:mod:`segqc.seg.inference`). :func:`predict_slices` returns what every ``segqc seg`` method returns
(``mean``, ``std``, ``entropy``, ``label``, ``samples``) from ``samples`` prior draws per slice;
the draws come from a CPU generator seeded by ``seed`` and the slice's index."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segqc.errors import InputError
from segqc.seg.inference import LoadedSegModel, SampleStatistics, concat_statistics, model_directory
from segqc.seg.probunet.config import ProbUnetConfig
from segqc.seg.probunet.model import ProbUnet
from segqc.seg.probunet.train import METHOD
from segqc.training import checkpoint_fits, load_checkpoint, select_device

__all__ = ["LoadedProbUnet", "load", "predict_slices"]


@dataclass
class LoadedProbUnet(LoadedSegModel):
    """A trained Probabilistic U-Net (eval mode), its config, labels, names and image channels."""

    model: ProbUnet
    config: ProbUnetConfig
    labels: tuple[int, ...]
    names: dict[str, str]
    image_channels: int


def load(model_dir: str | Path, *, device: str = "cpu") -> LoadedProbUnet:
    """The trained model of a model directory (or training run folder), on ``device``."""
    directory = model_directory(model_dir)
    saved, weights, _ = load_checkpoint(directory, method=METHOD)
    with checkpoint_fits(directory, "Probabilistic U-Net"):
        config = ProbUnetConfig.from_dict(saved["probunet"])
        labels = tuple(int(v) for v in saved["labels"])
        channels = int(saved["image_channels"])
        model = ProbUnet(config, image_channels=channels, classes=len(labels))
        model.load_state_dict(weights["probunet"])
    return LoadedProbUnet(model.eval().to(select_device(device)), config, labels,
                          {str(k): str(v) for k, v in dict(saved.get("names", {})).items()}, channels)


def predict_slices(model: LoadedProbUnet, images: np.ndarray, *, samples: int | None = None, steps: int | None = None,
                   seed: int = 0, keep_samples: bool = True) -> dict[str, np.ndarray]:
    """``samples`` prior samples of every slice of ``images`` ``(n, C, S, S)``; ``steps`` is
    ignored. Each sample is added to :class:`~segqc.seg.inference.SampleStatistics` as it is
    drawn (:meth:`~segqc.seg.probunet.model.ProbUnet.sample_each`), so memory does not grow with
    ``samples``; ``keep_samples`` also returns them all, ``samples`` ``(samples, n, K, S, S)``."""
    cfg = model.config
    samples = int(cfg.samples if samples is None else samples)
    if samples < 1:
        raise InputError(f"need samples >= 1, got {samples}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != model.image_channels or images.shape[2:] != (cfg.size, cfg.size):
        raise InputError(f"need slices (n, {model.image_channels}, {cfg.size}, {cfg.size}); got {images.shape}")
    device = next(model.model.parameters()).device
    parts = []
    for row in range(images.shape[0]):
        generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + row)
        statistics = SampleStatistics(keep_samples=keep_samples)
        for probs in model.model.sample_each(torch.from_numpy(images[row:row + 1]).to(device), samples,
                                             generator=generator):
            statistics.add(probs[None])
        parts.append(statistics.result())
    return concat_statistics(parts)
