"""Segmenting whole cases and folders with any registered segmentation method (``segqc seg predict``).

A segmentation method's ``predict`` module provides ``load(model_dir, *, device)`` returning a
loaded model with ``labels`` (label value per class index), ``image_channels``, ``size`` (slice side
in px), ``samples`` and ``steps`` (defaults) and ``names``, and ``predict_slices(model, slices, *,
samples, steps, seed, keep_samples)`` from preprocessed slices ``(n, C, size, size)`` to ``mean``
``(n, K, size, size)`` class probabilities (and more; every sample's probabilities ``samples`` only
with ``keep_samples``). The method is read from the checkpoint's ``config.json``. The methods draw
their samples a few at a time (:mod:`segqc.nn.chunks`) into :class:`SampleStatistics`, so memory
does not grow with ``samples`` unless every sample is kept (``--save samples``).

:func:`segment_case` (pure): the slices of a case (:func:`segqc.seg.slices.image_slices`), the
method's probabilities resampled bilinearly from ``size`` x ``size`` back to each slice's shape
(:func:`restore_case`), the label map as their argmax there and the entropy of the mean (nats).

:func:`predict_folder` writes, per case of an image folder (``CASE_0000.nii.gz`` ...), through the
case engine (:func:`segqc.execution.run_cases`): ``OUT/CASE.nii.gz`` (label values on the input
grid, the input's geometry), ``OUT/uncertainty/CASE.nii.gz`` (entropy, float32, same grid) and
``OUT/cases.csv``: ``case``, ``uncertainty`` (the mean entropy inside the predicted foreground, or
over the whole image when nothing is predicted as foreground; ``region`` says which),
``foreground_voxels``, ``mean_entropy`` (over the whole image), ``samples``, ``steps`` (what ran: a
model without a sampler has 0 steps, one without dropout draws one sample); on request
the mean probability and the standard deviation of every class and every sample's label map
(:func:`predict_folder`). Results are cached on the content of the image files and of the weights.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from segqc.errors import InputError, out_of_memory_as
from segqc.execution.cache import directory_digest
from segqc.seg.slices import Window, image_slices, slice_window
from segqc.windows import paste_window

__all__ = ["OUTPUTS", "LoadedSegModel", "SampleStatistics", "case_uncertainty", "check_outputs", "class_entropy",
           "concat_statistics", "load_seg_model", "model_directory", "predict_folder", "restore_case",
           "sample_statistics", "segment_case"]


class LoadedSegModel:
    """What every loaded segmentation model offers the folder inference besides its own fields
    (``config``, ``labels``, ``names``, ``image_channels``): the slice ``size`` (px) and the default
    ``samples`` and ``steps``, read from its config. A mixin for the methods' loaded-model
    dataclasses."""

    config: Any

    @property
    def size(self) -> int:
        return int(self.config.size)

    @property
    def samples(self) -> int:
        return int(self.config.samples)

    @property
    def steps(self) -> int:
        return int(self.config.steps)

    @property
    def spacing_mm(self) -> float:
        """The field of view's pixel size (mm; 0: whole slices), :func:`segqc.seg.slices.slice_window`."""
        return float(getattr(self.config, "spacing_mm", 0.0))


def class_entropy(mean: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy (nats) of class probabilities ``(n, K, ...)`` over the class axis."""
    return -(mean * torch.log(mean.clamp_min(1e-12))).sum(dim=1)


class SampleStatistics:
    """Per-pixel statistics of class probabilities over samples, fed a chunk of samples at a
    time (:meth:`add`) so that memory does not grow with their number: the sum and the sum of
    squares of every class probability (float64, so the variance ``E[p^2] - E[p]^2`` of
    probabilities in [0, 1] loses nothing a float32 standard deviation would keep) and the count.
    :meth:`result` gives what a method's ``predict_slices`` returns: ``mean`` and the population
    standard deviation (ddof 0) per class over the samples (float32), the ``entropy`` of the mean
    (nats), the ``label`` argmax of the mean (uint8) and, only with ``keep_samples``, every
    sample's probabilities ``samples`` ``(N, n, K, ...)`` (memory linear in N)."""

    def __init__(self, *, keep_samples: bool = False) -> None:
        self.keep_samples = keep_samples
        self.count = 0
        self._sum: torch.Tensor | None = None
        self._squares: torch.Tensor | None = None
        self._kept: list[torch.Tensor] = []

    def add(self, probs: torch.Tensor) -> None:
        """Add a chunk of ``probs.shape[0]`` samples ``(c, n, K, ...)`` of the same ``n`` slices
        (any device; a chunk of 0 samples adds nothing)."""
        chunk = probs.detach().cpu()
        wide = chunk.double()
        if self._sum is None or self._squares is None:
            self._sum, self._squares = wide.sum(dim=0), (wide * wide).sum(dim=0)
        else:
            self._sum += wide.sum(dim=0)
            self._squares += (wide * wide).sum(dim=0)
        self.count += int(chunk.shape[0])
        if self.keep_samples:
            self._kept.append(chunk.float())

    def result(self) -> dict[str, np.ndarray]:
        """``mean``, ``std``, ``entropy``, ``label`` (and ``samples``) of the samples added so far
        (class docstring); ValueError before any sample was added."""
        if self._sum is None or self._squares is None or self.count == 0:
            raise ValueError("no samples were added")
        mean = self._sum / self.count
        variance = (self._squares / self.count - mean * mean).clamp_min(0.0)
        mean32 = mean.float()
        out = {"mean": mean32.numpy(), "std": variance.sqrt().float().numpy(),
               "entropy": class_entropy(mean32).numpy(), "label": mean32.argmax(dim=1).numpy().astype(np.uint8)}
        if self.keep_samples:
            out["samples"] = torch.cat(self._kept, dim=0).numpy()
        return out


def sample_statistics(probs: torch.Tensor, *, keep_samples: bool = True) -> dict[str, np.ndarray]:
    """:meth:`SampleStatistics.result` of per-sample class probabilities ``(samples, n, K, ...)``
    given all at once (``samples`` the probabilities themselves with ``keep_samples``)."""
    statistics = SampleStatistics(keep_samples=keep_samples)
    statistics.add(probs)
    return statistics.result()


def concat_statistics(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The :meth:`SampleStatistics.result` of consecutive batches of slices as one: every array
    concatenated along the slices (axis 1 for ``samples``, axis 0 for the others); ValueError
    for no parts."""
    if not parts:
        raise ValueError("no batches of slices to concatenate")
    return {key: np.concatenate([part[key] for part in parts], axis=1 if key == "samples" else 0)
            for key in parts[0]}


def model_directory(path: str | Path) -> Path:
    """The model directory of ``path``: itself, or ``path/model`` for a training run folder."""
    path = Path(path)
    return path / "model" if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file() \
        else path


def _method_of(directory: Path) -> Any:
    from segqc.methods import method_of_checkpoint
    from segqc.training.checkpoints import read_checkpoint_meta

    return method_of_checkpoint(read_checkpoint_meta(directory), directory, "seg")


def load_seg_model(model_dir: str | Path, *, device: str = "cpu") -> tuple[Any, Callable[..., dict[str, np.ndarray]]]:
    """The loaded model of a model directory (or training run folder) of any segmentation method,
    and that method's ``predict_slices``."""
    from segqc.methods import check_model_folder

    directory = model_directory(model_dir)
    check_model_folder(directory)
    predict = _method_of(directory).module("predict")
    return predict.load(directory, device=device), partial(predict.predict_slices)


OUTPUTS = ("probabilities", "std", "samples", "levels")
"""What ``segment_case`` / ``seg predict --save`` can give besides the label map and the entropy
(``levels``: the map at each consensus level, for methods that have levels)."""


def _on_grid(slices: np.ndarray, height: int, width: int, window: Window | None = None,
             fill: Sequence[float] | None = None) -> torch.Tensor:
    """``(n, C, S, S)`` -> ``(n, C, height, width)``, bilinear; with a ``window`` (the slice window
    the slices were cut from) resampled onto the window and pasted into the slice, ``fill`` (one
    value per channel, default 0) outside it."""
    tensor = torch.from_numpy(np.ascontiguousarray(slices))
    if window is None:
        return F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)
    top, left, win_h, win_w = window
    resized = F.interpolate(tensor, size=(win_h, win_w), mode="bilinear", align_corners=False).numpy()
    outside = np.reshape(fill if fill is not None else 0.0, (1, -1, 1, 1)).astype(resized.dtype)
    return torch.from_numpy(paste_window(resized, (top, left), (height, width), outside))


def _case_layout(array: np.ndarray, three_d: bool) -> np.ndarray:
    """``(n, ..., H, W)`` slices -> ``(..., H, W, n)`` (3D case) or ``(..., H, W)`` (2D case)."""
    if not three_d:
        return np.ascontiguousarray(array[0])
    return np.ascontiguousarray(np.moveaxis(array, 0, -1))


def check_outputs(outputs: Sequence[str]) -> None:
    """Raise :class:`InputError` for a name not in :data:`OUTPUTS`."""
    unknown = sorted(set(outputs) - set(OUTPUTS))
    if unknown:
        raise InputError(f"unknown output(s) {unknown}; choose from {', '.join(OUTPUTS)}")


def segment_case(model: Any, predict_slices: Callable[..., dict[str, np.ndarray]], channels: Sequence[np.ndarray], *,
                 samples: int | None = None, steps: int | None = None, seed: int = 0,
                 outputs: Sequence[str] = (), spacing: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """Segment one case given as its channel arrays (each 2D ``(H, W)`` or 3D ``(H, W, n)``, ITK
    index order: slices along the last axis; all of one shape; ``spacing`` in mm, needed by a
    model with a field of view): its slices (:func:`segqc.seg.slices.image_slices`) through the
    method's ``predict_slices`` (every sample's probabilities kept only for ``outputs``
    ``samples``), then :func:`restore_case`."""
    if len(channels) != model.image_channels:
        raise InputError(f"the model needs {model.image_channels} image channel(s), got {len(channels)}")
    check_outputs(outputs)
    shape = np.asarray(channels[0]).shape
    if any(np.asarray(c).shape != shape for c in channels) or len(shape) not in (2, 3):
        shapes = [np.asarray(c).shape for c in channels]
        raise InputError(f"channels must be 2D or 3D arrays of one shape; got {shapes}")
    spacing_mm = float(getattr(model, "spacing_mm", 0.0))
    if spacing_mm > 0 and spacing is None:
        raise InputError(f"the model works on a field of view of {spacing_mm} mm per pixel; the image's spacing is "
                         "needed")
    window = slice_window(shape, spacing, model.size, spacing_mm)
    slices = image_slices(channels, model.size, spacing=spacing, spacing_mm=spacing_mm)
    result = predict_slices(model, slices, samples=samples, steps=steps, seed=seed,
                            keep_samples="samples" in outputs)
    return restore_case(model, result, shape, outputs=outputs, window=window)


def restore_case(model: Any, result: dict[str, np.ndarray], shape: tuple[int, ...], *,
                 outputs: Sequence[str] = (), window: Window | None = None) -> dict[str, np.ndarray]:
    """A method's slice results (``predict_slices`` of one case's slices) back on the case's grid
    ``shape`` (``(H, W)`` or ``(H, W, n)``): ``label`` label values and ``entropy`` (nats,
    float32) on ``shape``, and ``mean`` ``(K, *shape)`` mean probabilities. The mean probabilities
    of each slice are resampled bilinearly from ``size`` x ``size`` back to ``(H, W)`` and the label
    map is their argmax there. ``outputs`` (of :data:`OUTPUTS`) adds ``std`` ``(K, *shape)``
    (per-class standard deviation over the samples, resampled the same way) and ``samples`` ``(N,
    *shape)`` (the label map of every sample: its probabilities resampled, then the argmax);
    ``probabilities`` is ``mean``, always there. With a ``window`` (the field of view the slices
    were cut from, :func:`segqc.seg.slices.slice_window`) the results are resampled onto the
    window; outside it the image is background with certainty (entropy 0, std 0)."""
    height, width = shape[:2]
    three_d = len(shape) == 3
    values = np.asarray(model.labels)
    dtype = np.uint8 if max(model.labels) < 256 else np.uint16
    background = [1.0] + [0.0] * (len(model.labels) - 1)  # class index 0 is label 0
    mean = _on_grid(result["mean"], height, width, window, background)
    mean = mean / mean.sum(dim=1, keepdim=True).clamp_min(1e-12)
    out = {"label": _case_layout(values[mean.argmax(dim=1).numpy()].astype(dtype), three_d),
           "entropy": _case_layout(class_entropy(mean).numpy().astype(np.float32), three_d),
           "mean": _case_layout(mean.numpy(), three_d)}
    if "std" in outputs:
        out["std"] = _case_layout(_on_grid(result["std"], height, width, window).numpy().astype(np.float32), three_d)
    if "samples" in outputs:
        per_sample = [values[_on_grid(sample, height, width, window, background).argmax(dim=1).numpy()].astype(dtype)
                      for sample in result["samples"]]
        out["samples"] = np.stack([_case_layout(labels, three_d) for labels in per_sample])
    if "levels" in outputs:
        if "levels" not in result:
            raise InputError("--save levels: this model has no consensus levels (only the consensus method has)")
        per_level = [(_on_grid(level[:, None], height, width, window)[:, 0] >= 0.5).numpy().astype(np.uint8)
                     for level in result["levels"]]
        out["levels"] = np.stack([_case_layout(level, three_d) for level in per_level])
    return out


def case_uncertainty(label: np.ndarray, entropy: np.ndarray) -> tuple[float, str, int]:
    """``(score, region, foreground voxels)``: the mean entropy inside the predicted foreground
    (label > 0), or over the whole image (region ``image``) when there is no foreground."""
    foreground = np.asarray(label) > 0
    count = int(foreground.sum())
    if count:
        return float(np.asarray(entropy)[foreground].mean()), "foreground", count
    return float(np.asarray(entropy).mean()), "image", 0


_MODELS: dict[tuple[str, str, str], tuple[Any, Callable[..., dict[str, np.ndarray]]]] = {}


def _cached(model_dir: str, digest: str, device: str) -> tuple[Any, Callable[..., dict[str, np.ndarray]]]:
    key = (model_dir, digest, device)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_seg_model(model_dir, device=device)
    return _MODELS[key]


def _predict_case(task: Any, *, model_dir: str, digest: str, device: str, samples: int, steps: int, seed: int,
                  out_dir: str, save: tuple[str, ...] = ()) -> Any:
    from segqc.execution import CaseResult
    from segqc.io.images import blank_image_warning, read_image, write_image

    model, predict_slices = _cached(model_dir, digest, device)
    images = [read_image(path, finite=True) for path in task.inputs["image"]]
    first = images[0]
    for image in images[1:]:
        if image.array.shape != first.array.shape:
            raise InputError(f"channel shape {image.array.shape} differs from {first.array.shape} of {first.path}",
                             image.path)
    warnings = [line for path, image in zip(task.inputs["image"], images, strict=True) for line in blank_image_warning(
        path, image.array, "its segmentation is the model's answer to an empty picture")]
    case_seed = (int(seed) * 7919 + zlib.crc32(task.case.encode())) % 2**31  # per case: independent of job order
    hint = "; lower --samples" if samples > 1 else ""
    with out_of_memory_as(f"ran out of memory drawing {samples} sample(s) per slice{hint}", first.path):
        result = segment_case(model, predict_slices, [image.array for image in images], samples=samples,
                              steps=steps, seed=case_seed, outputs=save, spacing=first.geometry.spacing)
    out = Path(out_dir)
    write_image(out / f"{task.case}.nii.gz", result["label"], first.geometry)
    write_image(out / "uncertainty" / f"{task.case}.nii.gz", result["entropy"], first.geometry)
    files = [f"{task.case}.nii.gz", f"uncertainty/{task.case}.nii.gz"]
    for name, key in (("probabilities", "mean"), ("std", "std")):
        if name in save:
            for index, value in enumerate(model.labels):
                files.append(f"{name}/{task.case}_{value}.nii.gz")
                write_image(out / files[-1], np.asarray(result[key][index], dtype=np.float32), first.geometry)
    if "samples" in save:
        for k, labels in enumerate(result["samples"]):
            files.append(f"samples/{task.case}_{k:02d}.nii.gz")
            write_image(out / files[-1], labels, first.geometry)
    if "levels" in save:
        for c, level in enumerate(result["levels"], start=1):
            files.append(f"levels/{task.case}_{c}.nii.gz")
            write_image(out / files[-1], level, first.geometry)
    score, region, count = case_uncertainty(result["label"], result["entropy"])
    row = {"case": task.case, "uncertainty": score, "region": region, "foreground_voxels": count,
           "mean_entropy": float(result["entropy"].mean()), "samples": samples, "steps": steps}
    return CaseResult(table=pd.DataFrame([row]), files=files, warnings=warnings)


def predict_folder(model_dir: str | Path, images_dir: str | Path, out_dir: str | Path, *, samples: int | None = None,
                   steps: int | None = None, seed: int = 0, jobs: int = 1, device: str = "cpu",
                   progress: bool = False, save: Sequence[str] = ()) -> Any:
    """Segment every case of ``images_dir`` into ``out_dir`` (module docstring); returns the
    :class:`~segqc.execution.RunReport`. A missing folder, a folder without images or a model of
    another number of channels is one :class:`InputError`; a bad case fails alone. ``save`` (of
    :data:`OUTPUTS`) also writes ``probabilities/CASE_<value>.nii.gz`` (mean probability of each
    label value), ``std/CASE_<value>.nii.gz`` (its standard deviation over the samples) and
    ``samples/CASE_<k>.nii.gz`` (the label map of sample k, two digits) and, for consensus models,
    ``levels/CASE_<c>.nii.gz`` (the map at consensus level c), all on the input grid. Images are
    ``CASE_0000.nii.gz``, ... or, in a multi-rater folder, ``CASE/image.nii.gz``."""
    check_outputs(save)
    from segqc.execution import CaseTask, run_cases
    from segqc.io.atomic import write_text_atomic
    from segqc.io.datasets import list_image_files

    images_dir, out = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise InputError("image folder not found" if not images_dir.exists() else "not a folder", images_dir)
    if out.resolve() == images_dir.resolve():
        raise InputError("the output folder is the image folder; the label maps would mix with the images "
                         "(use another -o)", out)
    directory = model_directory(model_dir)
    model, _ = load_seg_model(directory, device="cpu")  # checks the model before any case runs
    if "levels" in save and not hasattr(model, "level_indices"):
        raise InputError("--save levels: this model has no consensus levels (only the consensus method has)",
                         directory)
    files = list_image_files(images_dir)
    if not files:  # a multi-rater layout: CASE/image.nii.gz
        from segqc.io.raters import case_folder_images

        files = case_folder_images(images_dir)
    if not files:
        raise InputError("holds no image files (CASE_0000.nii.gz, ... or CASE/image.nii.gz)", images_dir)
    channels = {len(paths) for paths in files.values()}
    if channels != {model.image_channels}:
        raise InputError(f"cases have {sorted(channels)} channel(s) but the model needs {model.image_channels}",
                         images_dir)
    timesteps = getattr(model.config, "timesteps", None)  # diffusion models only
    if samples is not None and samples < 1:
        raise InputError(f"--samples must be at least 1, got {samples}")
    if steps is not None and steps < 1:
        raise InputError(f"--steps must be at least 1, got {steps}")
    if steps is not None and timesteps is not None and steps > timesteps:
        raise InputError(f"--steps must be at most the model's {timesteps} diffusion steps, got {steps}")
    method = _method_of(directory).name
    notes = []
    if timesteps is None and steps is not None:  # a U-Net or Probabilistic U-Net: no sampler
        notes.append(f"the {method} model takes no sampler steps; --steps {steps} was ignored")
    if samples is not None and samples > 1 and float(getattr(model.config, "dropout", 1.0)) == 0.0:
        notes.append(f"the model has no dropout, so every pass is the same: one pass instead of --samples {samples}")
        samples = 1
    samples = int(model.samples if samples is None else samples)
    steps = int(model.steps if steps is None else steps) if timesteps is not None else 0  # cases.csv: what ran
    out.mkdir(parents=True, exist_ok=True)
    tasks = [CaseTask(case, {"image": tuple(paths)}) for case, paths in sorted(files.items())]
    digest = directory_digest(directory)
    function = partial(_predict_case, model_dir=str(directory), digest=digest, device=device, samples=samples,
                       steps=steps, seed=seed, out_dir=str(out), save=tuple(sorted(set(save))))
    settings = {"method": method, "samples": samples, "steps": steps, "seed": seed,
                "save": sorted(set(save)), "version": 1}
    report = run_cases(function, tasks, out, settings=settings,
                       extra_digest=digest, jobs=jobs, progress=progress, description="segment")
    report.warnings[:0] = notes
    table = report.table if len(report.table) else pd.DataFrame(
        columns=["case", "uncertainty", "region", "foreground_voxels", "mean_entropy", "samples", "steps"])
    write_text_atomic(out / "cases.csv", table.to_csv(index=False))
    return report
