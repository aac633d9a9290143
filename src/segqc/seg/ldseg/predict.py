"""Loading a trained LDSeg and sampling slices: arrays to arrays (no I/O besides :func:`load`).

:func:`load` reads a model directory written by :func:`segqc.seg.ldseg.train.train` (another
method's directory, a missing or corrupt file, or weights that do not fit the saved config
raise :class:`~segqc.training.CheckpointError`). :func:`predict_slices`: ``samples`` DDIM samples
of every slice give the mean class probabilities; the label map is the argmax
of the mean; the uncertainty is the per-pixel entropy of the mean (nats, ``-sum_c p_c log p_c``:
0 when every sample is certain and agrees; at most log K), and ``std`` the per-class (population)
standard deviation over the samples. The noise is drawn from a CPU generator seeded by ``seed``
and the slice's index, so the same seed gives the same output on any device, batch size or job
count. The networks take a few samples per pass (:mod:`segqc.nn.chunks`) and the statistics are
summed as the chunks come, so memory does not grow with the number of samples (beyond their
latents) unless every sample's probabilities are kept.
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
from segqc.nn.chunks import SLICES_PER_PASS, samples_per_pass
from segqc.seg.inference import LoadedSegModel, SampleStatistics, concat_statistics, model_directory
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
                   seed: int = 0, batch_size: int = 16, sampler: str = "ddim", keep_samples: bool = True,
                   per_pass: int = SLICES_PER_PASS) -> dict[str, np.ndarray]:
    """Sample ``images`` ``(n, C, S, S)`` (preprocessed slices, :func:`~segqc.seg.ldseg.train.image_slices`):
    ``mean`` ``(n, K, S, S)`` mean class probabilities over the ``samples`` samples, ``std``
    ``(n, K, S, S)`` their population standard deviation per class, ``entropy`` ``(n, S, S)`` of
    the mean (nats), ``label`` ``(n, S, S)`` class indices (argmax of the mean) and, with
    ``keep_samples``, ``samples`` ``(samples, n, K, S, S)`` every sample's probabilities (the only
    output whose memory grows with ``samples``). ``samples`` / ``steps`` default to the model's
    config. Slices go ``batch_size`` at a time; the networks take at most ``per_pass`` slice images
    per pass (:meth:`~segqc.seg.ldseg.model.Ldseg.sample_chunks`) and the statistics are summed
    chunk by chunk (:class:`~segqc.seg.inference.SampleStatistics`). The result does not depend
    on ``batch_size`` or ``per_pass`` beyond float rounding (one generator per slice, seeded by
    ``seed`` and the slice's index, draws all of its samples' noise at once). ``sampler``:
    ``ddim`` (``steps`` steps) or ``ddpm`` (ancestral sampling over all T steps;
    :meth:`~segqc.seg.ldseg.model.Ldseg.sample`)."""
    cfg = model.config
    samples = int(cfg.samples if samples is None else samples)
    steps = int(cfg.steps if steps is None else steps)
    if samples < 1 or steps < 1 or steps > cfg.timesteps:
        raise InputError(f"need samples >= 1 and 1 <= steps <= {cfg.timesteps}; got {samples}, {steps}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != model.image_channels or images.shape[2:] != (cfg.size, cfg.size):
        raise InputError(f"need slices (n, {model.image_channels}, {cfg.size}, {cfg.size}); got {images.shape}")
    with torch.no_grad():
        if cfg.spatial_dims == 3:
            return _predict_stacks(model, images, samples=samples, steps=steps, seed=seed, sampler=sampler,
                                   keep_samples=keep_samples, per_pass=per_pass)
        return concat_statistics([_predict_batch(model, images[start:start + batch_size], start, samples=samples,
                                                 steps=steps, seed=seed, sampler=sampler, keep_samples=keep_samples,
                                                 per_pass=per_pass)
                                  for start in range(0, images.shape[0], batch_size)])


def _slice_noise(cfg: LdsegConfig, samples: int, seed: int, first: int, count: int) -> torch.Tensor:
    """The starting latents ``(samples * count, latent_channels, L, L)`` (sample-major) of the
    slices ``first .. first + count - 1``: each slice's from its own generator (seeded by
    ``seed`` and its index), so they do not depend on how the slices are batched."""
    per_slice = []
    for row in range(count):
        generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + first + row)
        per_slice.append(torch.randn((samples, cfg.latent_channels, cfg.latent_size, cfg.latent_size),
                                     generator=generator))
    return torch.stack(per_slice, dim=1).reshape(-1, cfg.latent_channels, cfg.latent_size, cfg.latent_size)


def _predict_batch(model: LoadedLdseg, batch: np.ndarray, start: int, *, samples: int, steps: int, seed: int,
                   sampler: str, keep_samples: bool, per_pass: int) -> dict[str, np.ndarray]:
    """A 2D model's :class:`~segqc.seg.inference.SampleStatistics` result for the slices
    ``batch`` ``(m, C, S, S)``, the slices ``start ..`` of the case."""
    device = next(model.model.parameters()).device
    noise = _slice_noise(model.config, samples, seed, start, batch.shape[0])
    statistics = SampleStatistics(keep_samples=keep_samples)
    for probs in model.model.sample_chunks(torch.from_numpy(batch).to(device), samples=samples, steps=steps,
                                           noise=noise, sampler=sampler, per_pass=per_pass,
                                           generator=torch.Generator().manual_seed(int(seed) + start)):
        statistics.add(probs)
    return statistics.result()


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
                    keep_samples: bool, per_pass: int) -> dict[str, np.ndarray]:
    """A 3D model's :class:`~segqc.seg.inference.SampleStatistics` result for the slices
    ``images`` ``(n, C, S, S)`` of one case (module docstring). A slice's probabilities are the
    mean over the windows that hold it, per sample, so the samples go in chunks through every
    window in turn: each chunk of ``per_pass // depth`` samples (at least 1) takes its rows of
    every window's starting latents, drawn once for all ``samples`` from the window's generator
    (memory linear in ``samples`` by those latents only). The ``ddpm`` sampler draws each step's
    noise for all samples in every chunk and keeps the chunk's rows (the same numbers, at the
    cost of drawing them once per chunk)."""
    cfg = model.config
    n = images.shape[0]
    noises = {start: torch.randn((samples, cfg.latent_channels, cfg.depth, cfg.latent_size, cfg.latent_size),
                                 generator=torch.Generator().manual_seed(int(seed) * 1_000_003 + start))
              for start in stack_starts(n, cfg.depth)}
    statistics = SampleStatistics(keep_samples=keep_samples)
    chunk = samples_per_pass(1, cfg.depth, per_pass=per_pass)
    for first in range(0, samples, chunk):
        count = min(chunk, samples - first)
        statistics.add(_stack_chunk(model, images, noises, first, count, samples=samples, steps=steps, seed=seed,
                                    sampler=sampler))
    return statistics.result()


def _stack_chunk(model: LoadedLdseg, images: np.ndarray, noises: dict[int, torch.Tensor], first: int, count: int, *,
                 samples: int, steps: int, seed: int, sampler: str) -> torch.Tensor:
    """A 3D model's class probabilities ``(count, n, K, S, S)`` of the samples ``first .. first +
    count - 1`` (of ``samples``) of the slices ``images`` ``(n, C, S, S)``: each slice's mean over
    the windows that hold it; ``noises``: every window's starting latents (of all samples) by its
    first slice."""
    cfg = model.config
    device = next(model.model.parameters()).device
    n = images.shape[0]
    total = torch.zeros((count, n, len(model.labels), cfg.size, cfg.size))
    counts = torch.zeros(n)
    for start, noise in noises.items():
        stack = images[start:start + cfg.depth]
        m = stack.shape[0]
        padded, _ = pad_stack(stack, cfg.depth)
        volume = torch.from_numpy(np.ascontiguousarray(np.moveaxis(padded, 0, 1))[None]).to(device)
        probs = torch.cat(list(model.model.sample_chunks(
            volume, samples=count, steps=steps, noise=noise[first:first + count], sampler=sampler,
            per_pass=count * cfg.depth, part=(first, samples),
            generator=torch.Generator().manual_seed(int(seed) + start))), dim=0)
        total[:, start:start + m] += probs[:, 0, :, :m].transpose(1, 2).cpu()  # (count, m, K, S, S)
        counts[start:start + m] += 1
    return total / counts.view(1, -1, 1, 1, 1)
