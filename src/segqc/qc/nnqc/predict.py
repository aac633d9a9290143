"""Loading a trained nnQC model and generating pseudo ground truths for preprocessed slices.

:func:`load` reads a model directory written by :func:`segqc.qc.nnqc.train.train` (method
``"nnqc"``; another method's directory, a missing or corrupt file, or weights that do not fit the
saved config raise :class:`~segqc.training.CheckpointError`). :func:`predict_slices` maps arrays to
arrays; :func:`load_qc_model` wraps the model for the dataset-level QC driver
(:mod:`segqc.qc.inference`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segqc.errors import InputError
from segqc.fingerprint.preprocessing import PreprocessingPlan
from segqc.qc.nnqc.config import NnqcConfig
from segqc.qc.nnqc.model import NnqcModel
from segqc.training import CheckpointError, checkpoint_fits, load_checkpoint, select_device

__all__ = ["load", "load_qc_model", "predict_slices"]

METHOD = "nnqc"


def _read(model_dir: str | Path) -> tuple[NnqcModel, dict, dict | None]:
    config, weights, fingerprint = load_checkpoint(model_dir, method=METHOD)
    with checkpoint_fits(model_dir, "nnQC model"):
        # models saved before the image_input field existed fed the denoiser no image
        nnqc = NnqcConfig.from_dict({"image_input": "none", **config["nnqc"]})
        model = NnqcModel(nnqc, config["labels"], int(config["image_channels"]))
        for name in ("autoencoder", "image_encoder", "toe", "denoiser"):
            getattr(model, name).load_state_dict(weights[name])
        model.latent_scale.fill_(float(config["latent_scale"]))
    model.eval()
    return model, config, fingerprint


def load(model_dir: str | Path, *, device: str = "cpu") -> NnqcModel:
    """The trained :class:`NnqcModel` (eval mode) of a model directory, on ``device``."""
    model, _, _ = _read(model_dir)
    return model.to(select_device(device))


def _label_dtype(labels: tuple[int, ...]) -> np.dtype:
    return np.dtype(np.uint8 if max(labels) < 256 else np.uint16 if max(labels) < 65536 else np.int64)


def predict_slices(model: NnqcModel, images: np.ndarray, segs: np.ndarray, ratios: np.ndarray, *,
                   steps: int | None = None, samples: int | None = None, seed: int = 0, batch_size: int = 16,
                   threads: int | None = None) -> np.ndarray:
    """Pseudo ground truths ``(samples, B, size, size)`` (label values; uint8 when they fit).

    ``images`` ``(B, C, size, size)`` float32 preprocessed with the model's plan, ``segs``
    ``(B, size, size)`` label values, ``ratios`` ``(B,)`` in [0, 1]. ``steps``/``samples``:
    DDIM steps and pGTs per slice (model defaults). Slices go through in chunks of
    ``batch_size`` with one generator seeded by ``seed``; noise is drawn slice by slice, so the
    result does not depend on ``batch_size`` (up to floating-point differences of batched
    convolutions). The networks take a few samples per pass
    (:meth:`~segqc.qc.nnqc.model.NnqcModel.generate_pgt`), so memory grows with ``samples`` by
    their latents and pGTs only (1 byte per voxel and sample when the labels fit in uint8).
    ``threads``: torch CPU threads for the call (restored afterwards).
    Inputs are not modified. Bad shapes or unknown label values raise :class:`InputError`.
    """
    images = np.asarray(images, dtype=np.float32)
    segs = np.asarray(segs)
    ratios = np.asarray(ratios, dtype=np.float32).reshape(-1)
    if images.ndim != 4 or segs.ndim != 3 or not (images.shape[0] == segs.shape[0] == ratios.shape[0]):
        raise InputError(f"need images (B, C, H, W), segs (B, H, W) and ratios (B,) with one B; got "
                         f"{images.shape}, {segs.shape}, {ratios.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    samples = int(model.config.samples if samples is None else samples)
    if samples < 1:
        raise ValueError(f"need samples >= 1, got {samples}")
    dtype = _label_dtype(model.labels)
    generator = torch.Generator().manual_seed(int(seed))
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        chunks = []
        for start in range(0, images.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            chunks.append(model.generate_pgt(images[sl], segs[sl], ratios[sl], steps=steps, samples=samples,
                                             generator=generator, dtype=_torch_dtype(dtype)).cpu().numpy())
    finally:
        torch.set_num_threads(before)
    if not chunks:
        return np.zeros((samples, 0, *segs.shape[1:]), dtype=dtype)
    return np.concatenate(chunks, axis=1).astype(dtype, copy=False)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype the pGTs of label dtype ``dtype`` are made in: uint8 for uint8, else int64
    (converted afterwards)."""
    return torch.uint8 if dtype == np.dtype(np.uint8) else torch.int64


def load_qc_model(model_dir: str | Path, *, device: str = "cpu"):
    """The model (on ``device``) as a :class:`segqc.qc.model_api.QcModel` for the QC driver (needs the
    preprocessing plan saved at training; a model trained on slices without a plan cannot be
    used on image folders)."""
    from segqc.qc.model_api import QcModel

    model, config, fingerprint = _read(model_dir)
    if not config.get("plan"):
        raise CheckpointError(f"{model_dir}: the nnQC model was trained without a preprocessing plan; "
                              "train it with build_training_data to use it on image folders")
    plan = PreprocessingPlan.from_dict(config["plan"])
    model = model.to(select_device(device))

    def generate(images, segs, ratios, samples, steps, seed):
        return predict_slices(model, images, segs, ratios, steps=steps, samples=samples, seed=seed,
                              batch_size=max(1, len(images)))

    return QcModel(method=METHOD, plan=plan, labels=model.labels, fingerprint=fingerprint, generate=generate,
                   batch_size=16, default_steps=model.config.inference_steps,
                   default_samples=model.config.samples)
