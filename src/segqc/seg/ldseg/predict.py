"""Loading a trained LDSeg and sampling slices: arrays to arrays (no I/O besides :func:`load`).

:func:`load` reads a model directory written by :func:`segqc.seg.ldseg.train.train` (another
method's directory, a missing or corrupt file, or weights that do not fit the saved config
raise :class:`~segqc.training.CheckpointError`). :func:`predict_slices`: ``samples`` DDIM samples
of every slice, batched together, give the mean class probabilities; the label map is the argmax
of the mean; the uncertainty is the per-pixel entropy of the mean (nats, ``-sum_c p_c log p_c``:
0 when every sample is certain and agrees; at most log K), and ``std`` the per-class standard
deviation over the samples. The noise is drawn from a CPU generator seeded by ``seed`` and the
slice's index, so the same seed gives the same output on any device, batch size or job count.
A 3D model (config ``spatial_dims`` 3) denoises a case's slices as stacks of exactly its
training ``depth`` consecutive slices, as it was trained: windows overlapping by half (the last
one ending at the case's last slice; a case of fewer slices is one stack padded at its end,
:func:`~segqc.seg.slices.pad_stack`), each with its own noise seeded by ``seed`` and its first
slice's index; a slice's probabilities (per sample) are the mean over the windows that hold it.
Whole cases and folders:
:mod:`segqc.seg.inference` (``segqc seg predict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segqc.errors import InputError
from segqc.seg.inference import LoadedSegModel, model_directory, sample_statistics
from segqc.seg.ldseg.config import LdsegConfig
from segqc.seg.ldseg.model import COMPONENTS, Ldseg
from segqc.seg.ldseg.train import METHOD
from segqc.seg.slices import pad_stack
from segqc.training import checkpoint_fits, load_checkpoint, select_device

__all__ = ["LoadedLdseg", "load", "predict_slices", "stack_starts"]


@dataclass
class LoadedLdseg(LoadedSegModel):
    """A trained LDSeg (eval mode), its config, the label value of each class index, the label
    names and the number of image channels."""

    model: Ldseg
    config: LdsegConfig
    labels: tuple[int, ...]
    names: dict[str, str]
    image_channels: int


def load(model_dir: str | Path, *, device: str = "cpu") -> LoadedLdseg:
    """The trained LDSeg of a model directory (or of a training run folder), on ``device``."""
    directory = model_directory(model_dir)
    saved, weights, _ = load_checkpoint(directory, method=METHOD)
    with checkpoint_fits(directory, "LDSeg model"):
        config = LdsegConfig.from_dict(saved["ldseg"])
        labels = tuple(int(v) for v in saved["labels"])
        channels = int(saved["image_channels"])
        model = Ldseg(config, image_channels=channels, classes=len(labels))
        missing = [name for name in COMPONENTS if name not in weights]
        if missing:
            raise KeyError(f"no weights for {', '.join(missing)}")
        for name in COMPONENTS:
            model.component(name).load_state_dict(weights[name])
    return LoadedLdseg(model.eval().to(select_device(device)), config, labels,
                       {str(k): str(v) for k, v in dict(saved.get("names", {})).items()}, channels)


def predict_slices(model: LoadedLdseg, images: np.ndarray, *, samples: int | None = None, steps: int | None = None,
                   seed: int = 0, batch_size: int = 16, sampler: str = "ddim") -> dict[str, np.ndarray]:
    """Sample ``images`` ``(n, C, S, S)`` (preprocessed slices, :func:`~segqc.seg.ldseg.train.image_slices`):
    ``mean`` ``(n, K, S, S)`` mean class probabilities over the ``samples`` samples, ``std``
    ``(n, K, S, S)`` their standard deviation per class, ``entropy`` ``(n, S, S)`` of the mean
    (nats) and ``label`` ``(n, S, S)`` class indices (argmax of the mean). ``samples`` / ``steps``
    default to the model's config. Slices go ``batch_size`` at a time, with all their samples in
    one batch; the result does not depend on ``batch_size`` (one generator per slice, seeded by
    ``seed`` and the slice's index). ``sampler``: ``ddim`` (``steps`` steps) or ``ddpm`` (ancestral
    sampling over all T steps; :meth:`~segqc.seg.ldseg.model.Ldseg.sample`)."""
    cfg = model.config
    samples = int(cfg.samples if samples is None else samples)
    steps = int(cfg.steps if steps is None else steps)
    if samples < 1 or steps < 1 or steps > cfg.timesteps:
        raise InputError(f"need samples >= 1 and 1 <= steps <= {cfg.timesteps}; got {samples}, {steps}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != model.image_channels or images.shape[2:] != (cfg.size, cfg.size):
        raise InputError(f"need slices (n, {model.image_channels}, {cfg.size}, {cfg.size}); got {images.shape}")
    device = next(model.model.parameters()).device
    if cfg.spatial_dims == 3:
        return sample_statistics(_predict_stacks(model, images, samples=samples, steps=steps, seed=seed,
                                                 sampler=sampler, device=device))
    chunks = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start:start + batch_size]
            per_slice = []
            for row in range(chunk.shape[0]):  # one generator per slice: independent of batch_size
                generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + start + row)
                per_slice.append(torch.randn((samples, cfg.latent_channels, cfg.latent_size, cfg.latent_size),
                                             generator=generator))
            noise = torch.stack(per_slice, dim=1).reshape(-1, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
            probs = model.model.sample(torch.from_numpy(chunk).to(device), samples=samples, steps=steps, noise=noise,
                                       sampler=sampler, generator=torch.Generator().manual_seed(int(seed) + start))
            chunks.append(probs.cpu())
    probs = torch.cat(chunks, dim=1)  # (samples, n, K, S, S)
    return sample_statistics(probs)


def stack_starts(n: int, depth: int) -> list[int]:
    """First slices of the prediction windows of ``depth`` slices over ``n`` slices: every
    ``depth // 2`` slices, the last window ending at the last slice; ``[0]`` when ``n <= depth``."""
    if n <= depth:
        return [0]
    starts = list(range(0, n - depth + 1, max(depth // 2, 1)))
    if starts[-1] != n - depth:
        starts.append(n - depth)
    return starts


def _predict_stacks(model: LoadedLdseg, images: np.ndarray, *, samples: int, steps: int, seed: int, sampler: str,
                    device: torch.device) -> torch.Tensor:
    """A 3D model's class probabilities ``(samples, n, K, S, S)`` of the slices ``images`` ``(n, C, S, S)``
    of one case (module docstring)."""
    cfg = model.config
    n = images.shape[0]
    total = torch.zeros((samples, n, len(model.labels), cfg.size, cfg.size))
    counts = torch.zeros(n)
    with torch.no_grad():
        for start in stack_starts(n, cfg.depth):
            stack = images[start:start + cfg.depth]
            m = stack.shape[0]
            padded, _ = pad_stack(stack, cfg.depth)
            generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + start)
            noise = torch.randn((samples, cfg.latent_channels, cfg.depth, cfg.latent_size, cfg.latent_size),
                                generator=generator)
            volume = torch.from_numpy(np.ascontiguousarray(np.moveaxis(padded, 0, 1))[None]).to(device)
            probs = model.model.sample(volume, samples=samples, steps=steps, noise=noise, sampler=sampler,
                                       generator=torch.Generator().manual_seed(int(seed) + start))
            total[:, start:start + m] += probs[:, 0, :, :m].transpose(1, 2).cpu()  # (samples, m, K, S, S)
            counts[start:start + m] += 1
    return total / counts.view(1, -1, 1, 1, 1)
