"""Loading a trained LDSeg and segmenting images: arrays to arrays, then folders to files.

:func:`load` reads a model directory written by :func:`segqc.seg.ldseg.train.train` (another
method's directory, a missing or corrupt file, or weights that do not fit the saved config
raise :class:`~segqc.training.CheckpointError`). :func:`predict_slices` and
:func:`segment_case` are pure (no I/O): ``samples`` DDIM samples of every slice, batched
together, give the mean class probabilities; the label map is the argmax of the mean; the
uncertainty is the per-pixel entropy of the mean (nats, ``-sum_c p_c log p_c``: 0 when every
sample is certain and agrees; at most log K), and ``std`` the per-class standard deviation over
the samples. The noise is drawn from a CPU generator seeded by ``seed``, so the same seed gives
the same output on any device count or job count.

:func:`predict_folder` writes, per case of an image folder (``CASE_0000.nii.gz`` ...), through
the case engine (:func:`segqc.execution.run_cases`, hence ``map_cases``):
``OUT/CASE.nii.gz`` (label values on the input grid: slice by slice for a volume, probabilities
resampled bilinearly back to each slice's shape before the argmax, written with the input's
geometry), ``OUT/uncertainty/CASE.nii.gz`` (entropy, float32, same grid) and ``OUT/cases.csv``:
``case``, ``uncertainty`` (the mean entropy inside the predicted foreground, or over the whole
image when nothing is predicted as foreground; ``region`` says which), ``foreground_voxels``,
``mean_entropy`` (over the whole image), ``samples``, ``steps``.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from segqc.errors import InputError
from segqc.seg.ldseg.config import LdsegConfig
from segqc.seg.ldseg.model import COMPONENTS, Ldseg
from segqc.seg.ldseg.train import METHOD, image_slices
from segqc.training import CheckpointError, load_checkpoint, select_device

__all__ = ["LoadedLdseg", "load", "model_directory", "predict_folder", "predict_slices", "segment_case"]


@dataclass
class LoadedLdseg:
    """A trained LDSeg (eval mode), its config, the label value of each class index, the label
    names and the number of image channels."""

    model: Ldseg
    config: LdsegConfig
    labels: tuple[int, ...]
    names: dict[str, str]
    image_channels: int


def model_directory(path: str | Path) -> Path:
    """The model directory of ``path``: itself, or ``path/model`` for a training run folder."""
    path = Path(path)
    return path / "model" if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file() \
        else path


def load(model_dir: str | Path, *, device: str = "cpu") -> LoadedLdseg:
    """The trained LDSeg of a model directory (or of a training run folder), on ``device``."""
    directory = model_directory(model_dir)
    saved, weights, _ = load_checkpoint(directory, method=METHOD)
    try:
        config = LdsegConfig.from_dict(saved["ldseg"])
        labels = tuple(int(v) for v in saved["labels"])
        channels = int(saved["image_channels"])
        model = Ldseg(config, image_channels=channels, classes=len(labels))
        missing = [name for name in COMPONENTS if name not in weights]
        if missing:
            raise KeyError(f"no weights for {', '.join(missing)}")
        for name in COMPONENTS:
            model.component(name).load_state_dict(weights[name])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{directory}: checkpoint does not match the LDSeg model "
                              f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
    return LoadedLdseg(model.eval().to(select_device(device)), config, labels,
                       {str(k): str(v) for k, v in dict(saved.get("names", {})).items()}, channels)


def predict_slices(model: LoadedLdseg, images: np.ndarray, *, samples: int | None = None, steps: int | None = None,
                   seed: int = 0, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Sample ``images`` ``(n, C, S, S)`` (preprocessed slices, :func:`~segqc.seg.ldseg.train.image_slices`):
    ``mean`` ``(n, K, S, S)`` mean class probabilities over the ``samples`` samples, ``std``
    ``(n, K, S, S)`` their standard deviation per class, ``entropy`` ``(n, S, S)`` of the mean
    (nats) and ``label`` ``(n, S, S)`` class indices (argmax of the mean). ``samples`` / ``steps``
    default to the model's config. Slices go ``batch_size`` at a time, with all their samples in
    one batch; the result does not depend on ``batch_size`` (one generator per slice, seeded by
    ``seed`` and the slice's index)."""
    cfg = model.config
    samples = int(samples or cfg.samples)
    steps = int(steps or cfg.steps)
    if samples < 1 or steps < 1 or steps > cfg.timesteps:
        raise InputError(f"need samples >= 1 and 1 <= steps <= {cfg.timesteps}; got {samples}, {steps}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != model.image_channels or images.shape[2:] != (cfg.size, cfg.size):
        raise InputError(f"need slices (n, {model.image_channels}, {cfg.size}, {cfg.size}); got {images.shape}")
    device = next(model.model.parameters()).device
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
            probs = model.model.sample(torch.from_numpy(chunk).to(device), samples=samples, steps=steps, noise=noise)
            chunks.append(probs.cpu())
    probs = torch.cat(chunks, dim=1)  # (samples, n, K, S, S)
    mean = probs.mean(dim=0)
    std = probs.std(dim=0, unbiased=False)
    entropy = -(mean * torch.log(mean.clamp_min(1e-12))).sum(dim=1)
    return {"mean": mean.numpy(), "std": std.numpy(), "entropy": entropy.numpy(),
            "label": mean.argmax(dim=1).numpy().astype(np.uint8)}


def segment_case(model: LoadedLdseg, channels: Sequence[np.ndarray], *, samples: int | None = None,
                 steps: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Segment one case given as its channel arrays (each 2D ``(H, W)`` or 3D ``(H, W, n)``, ITK
    index order: slices along the last axis; all of one shape): ``label`` label values and
    ``entropy`` (nats, float32) on the input array's shape, and ``mean`` ``(K, *shape)`` mean
    probabilities. The mean probabilities of
    each slice are resampled bilinearly from ``size`` x ``size`` back to ``(H, W)`` and the label
    map is their argmax there."""
    if len(channels) != model.image_channels:
        raise InputError(f"the model needs {model.image_channels} image channel(s), got {len(channels)}")
    shape = np.asarray(channels[0]).shape
    if any(np.asarray(c).shape != shape for c in channels) or len(shape) not in (2, 3):
        shapes = [np.asarray(c).shape for c in channels]
        raise InputError(f"channels must be 2D or 3D arrays of one shape; got {shapes}")
    result = predict_slices(model, image_slices(channels, model.config.size), samples=samples, steps=steps, seed=seed)
    height, width = shape[:2]
    mean = F.interpolate(torch.from_numpy(result["mean"]), size=(height, width), mode="bilinear",
                         align_corners=False)
    mean = mean / mean.sum(dim=1, keepdim=True).clamp_min(1e-12)
    entropy = -(mean * torch.log(mean.clamp_min(1e-12))).sum(dim=1)
    index = mean.argmax(dim=1).numpy()
    labels = np.asarray(model.labels)[index].astype(np.uint8 if max(model.labels) < 256 else np.uint16)
    mean_np = np.moveaxis(mean.numpy(), 0, -1)  # (K, H, W, n)
    if len(shape) == 2:
        return {"label": labels[0], "entropy": entropy.numpy()[0].astype(np.float32), "mean": mean_np[..., 0]}
    return {"label": np.ascontiguousarray(np.moveaxis(labels, 0, -1)),
            "entropy": np.ascontiguousarray(np.moveaxis(entropy.numpy(), 0, -1)).astype(np.float32), "mean": mean_np}


def case_uncertainty(label: np.ndarray, entropy: np.ndarray) -> tuple[float, str, int]:
    """``(score, region, foreground voxels)``: the mean entropy inside the predicted foreground
    (label > 0), or over the whole image (region ``image``) when there is no foreground."""
    foreground = np.asarray(label) > 0
    count = int(foreground.sum())
    if count:
        return float(np.asarray(entropy)[foreground].mean()), "foreground", count
    return float(np.asarray(entropy).mean()), "image", 0


_MODELS: dict[tuple[str, str, str], LoadedLdseg] = {}


def _cached(model_dir: str, digest: str, device: str) -> LoadedLdseg:
    key = (model_dir, digest, device)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load(model_dir, device=device)
    return _MODELS[key]


def _weights_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")) + [directory / "config.json"]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _predict_case(task: Any, *, model_dir: str, digest: str, device: str, samples: int, steps: int, seed: int,
                  out_dir: str) -> Any:
    from segqc.execution import CaseResult
    from segqc.io.images import read_image, write_image

    model = _cached(model_dir, digest, device)
    images = [read_image(path) for path in task.inputs["image"]]
    first = images[0]
    for image in images[1:]:
        if image.array.shape != first.array.shape:
            raise InputError(f"channel shape {image.array.shape} differs from {first.array.shape} of {first.path}",
                             image.path)
    case_seed = (int(seed) * 7919 + zlib.crc32(task.case.encode())) % 2**31  # per case: independent of job order
    result = segment_case(model, [image.array for image in images], samples=samples, steps=steps, seed=case_seed)
    out = Path(out_dir)
    write_image(out / f"{task.case}.nii.gz", result["label"], first.geometry)
    write_image(out / "uncertainty" / f"{task.case}.nii.gz", result["entropy"], first.geometry)
    score, region, count = case_uncertainty(result["label"], result["entropy"])
    row = {"case": task.case, "uncertainty": score, "region": region, "foreground_voxels": count,
           "mean_entropy": float(result["entropy"].mean()), "samples": samples, "steps": steps}
    return CaseResult(table=pd.DataFrame([row]), files=[f"{task.case}.nii.gz", f"uncertainty/{task.case}.nii.gz"])


def predict_folder(model_dir: str | Path, images_dir: str | Path, out_dir: str | Path, *, samples: int | None = None,
                   steps: int | None = None, seed: int = 0, jobs: int = 1, device: str = "cpu",
                   progress: bool = False) -> Any:
    """Segment every case of ``images_dir`` into ``out_dir`` (module docstring); returns the
    :class:`~segqc.execution.RunReport`. A missing folder, a folder without images or a model of
    another number of channels is one :class:`InputError`; a bad case fails alone."""
    from segqc.execution import CaseTask, run_cases
    from segqc.io.atomic import write_text_atomic
    from segqc.io.datasets import list_image_files

    images_dir, out = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise InputError("image folder not found" if not images_dir.exists() else "not a folder", images_dir)
    directory = model_directory(model_dir)
    model = load(directory, device="cpu")  # checks the model before any case runs
    files = list_image_files(images_dir)
    if not files:
        raise InputError("holds no image files", images_dir)
    channels = {len(paths) for paths in files.values()}
    if channels != {model.image_channels}:
        raise InputError(f"cases have {sorted(channels)} channel(s) but the model needs {model.image_channels}",
                         images_dir)
    samples = int(samples or model.config.samples)
    steps = int(steps or model.config.steps)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [CaseTask(case, {"image": tuple(paths)}) for case, paths in sorted(files.items())]
    digest = _weights_digest(directory)
    function = partial(_predict_case, model_dir=str(directory), digest=digest, device=device, samples=samples,
                       steps=steps, seed=seed, out_dir=str(out))
    report = run_cases(function, tasks, out, settings={"method": METHOD, "samples": samples, "steps": steps,
                                                       "seed": seed, "version": 1},
                       extra_digest=digest, jobs=jobs, progress=progress, description="ldseg")
    table = report.table if len(report.table) else pd.DataFrame(
        columns=["case", "uncertainty", "region", "foreground_voxels", "mean_entropy", "samples", "steps"])
    write_text_atomic(out / "cases.csv", table.to_csv(index=False))
    return report
