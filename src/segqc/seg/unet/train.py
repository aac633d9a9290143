"""Training the U-Net baseline: the slices of :mod:`segqc.seg.slices`, one stage on the shared
stage runner, the step-k batch drawn from (seed, k) exactly as LDSeg draws it (same slices, same
flips: the two methods see the same data in the same order). A multi-rater folder gives the
slices of :mod:`segqc.seg.rater_slices` and the target of the config's ``raters``
(:func:`rater_targets`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segqc.errors import InputError
from segqc.nn.losses import feature_consistency
from segqc.seg.rater_slices import RaterSliceData, build_rater_data
from segqc.seg.slices import SliceData, add_noise_rows, build_training_data, flip_rows, make_batch, noisy_and_clean
from segqc.seg.unet.config import UnetConfig
from segqc.seg.unet.model import build_unet, encoder_features, encoder_outputs, segmentation_loss
from segqc.training import save_checkpoint
from segqc.training.stages import Stage, step_generators, train_single_stage

__all__ = ["METHOD", "check_training_cases", "rater_targets", "save_model", "train", "train_from_dataset"]

METHOD = "unet"


def rater_targets(mode: str, raters: np.ndarray, n_raters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Targets of slices with raters ``(B, R, S, S)`` (the first ``n_raters[b]`` real):
    ``majority`` class indices ``(B, S, S)`` (Σ A ≥ R/2), ``random`` one random rater's mask
    ``(B, S, S)``, ``soft`` class probabilities ``(B, 2, S, S)`` (1 − mean, mean)."""
    out = []
    for masks, n in zip(raters, n_raters):
        real = masks[: int(n)].astype(np.float32)
        if mode == "majority":
            out.append((real.sum(axis=0) >= n / 2.0).astype(np.int64))
        elif mode == "random":
            out.append(real[int(rng.integers(0, int(n)))].astype(np.int64))
        else:
            mean = real.mean(axis=0)
            out.append(np.stack([1.0 - mean, mean]).astype(np.float32))
    return np.stack(out)


def _rater_batch(config: UnetConfig, data: RaterSliceData, indices: list[int],
                 rng: np.random.Generator, *, noise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    images = data.images[indices].astype(np.float32)
    targets = rater_targets(config.raters, data.raters[indices], data.n_raters[indices], rng)
    if config.flip:
        flip_rows(images, targets, rng)
    if noise:
        add_noise_rows(images, rng, config.noise_aug)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(np.ascontiguousarray(targets))


def _stage(config: UnetConfig, data: SliceData | RaterSliceData, network: nn.Module, dev: torch.device) -> Stage:
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)

    def step(k: int) -> dict[str, float]:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * config.lr_decay ** (k / 1000)
        rng, generator = step_generators(config.seed, 0, k)
        # dropout draws from torch's global generator: seed it per step so a resumed run draws the same masks
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        indices = rng.integers(0, data.n_slices, size=config.batch_size).tolist()
        consistency = config.noise_consistency > 0  # then the batch is built clean and the noise added after
        if isinstance(data, RaterSliceData):
            image, gt = _rater_batch(config, data, indices, rng, noise=not consistency)
        else:
            image, gt = make_batch(data, indices, rng=rng, flip=config.flip,
                                   noise=0.0 if consistency else config.noise_aug)
        if not consistency:
            loss, parts = segmentation_loss(network(image.to(dev)), gt.to(dev), config.gamma)
        else:
            image, clean = noisy_and_clean(image, rng, config.noise_aug)
            logits, maps = encoder_features(network, image.to(dev))
            with torch.no_grad():
                clean_maps = encoder_outputs(network, clean.to(dev))
            loss, parts = segmentation_loss(logits, gt.to(dev), config.gamma)
            term = feature_consistency(maps, clean_maps)
            loss = loss + config.noise_consistency * term
            parts = {**parts, "loss": loss.item(), "consistency": term.item()}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return parts

    return Stage(name="train", steps=config.steps_train, modules={"unet": network}, optimizers={"adam": optimizer},
                 step=step)


def train(config: UnetConfig, data: SliceData | RaterSliceData, out_dir: str | Path, *, device: str = "auto",
          log: Callable[[str], None] | None = None, progress: bool = False) -> Path:
    """Train the U-Net on ``data`` into ``out_dir`` (resumable; another run's folder is refused);
    returns the model directory ``out_dir/model``."""
    if data.n_slices == 0:
        raise InputError("the training data hold no slice")
    side = data.raters.shape[-1] if isinstance(data, RaterSliceData) else data.gts.shape[-1]
    if int(side) != config.size:
        raise InputError(f"the data have {side} px slices but the config needs {config.size}")
    return train_single_stage(
        out_dir, method=METHOD, config=config, data=data.summary(), device=device, log=log, progress=progress,
        build=lambda: build_unet(config, image_channels=data.image_channels, classes=len(_labels(data))),
        stage=lambda network, dev: _stage(config, data, network, dev),
        save=lambda network, directory, metrics: save_model(network, config, data, directory, metrics=metrics))


def _labels(data: SliceData | RaterSliceData) -> tuple[int, ...]:
    return (0, 1) if isinstance(data, RaterSliceData) else data.labels


def save_model(network: nn.Module, config: UnetConfig, data: SliceData | RaterSliceData, model_dir: str | Path, *,
               metrics: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory: ``unet.safetensors`` and ``config.json`` (config, label
    values and names, image channels; multi-rater data: labels 0 and 1)."""
    weights = {"unet": {k: v.detach().cpu() for k, v in network.state_dict().items()}}
    names = {"0": "background", "1": "foreground"} if isinstance(data, RaterSliceData) else dict(data.names)
    saved = {"unet": config.to_dict(), "labels": list(_labels(data)), "names": names,
             "image_channels": data.image_channels}
    return save_checkpoint(model_dir, method=METHOD, config=saved, weights=weights, metrics=metrics, seed=config.seed)


def check_training_cases(dataset_dir: str | Path, cases: Sequence[str] | None) -> str | None:
    """What the U-Net has to say about its training folder, from the file names alone (no image
    is read, nothing is written): for a multi-rater folder whose training ``cases`` (default: all)
    each have a single rater, a warning line (the target is then that rater's mask, whatever the
    config's ``raters`` rule; :func:`~segqc.seg.rater_slices.check_raters_per_case`); None for an
    nnU-Net dataset and otherwise."""
    from segqc.io.raters import is_rater_folder
    from segqc.seg.rater_slices import check_raters_per_case

    if not is_rater_folder(dataset_dir):
        return None
    return check_raters_per_case(dataset_dir, cases, several=None)


def train_from_dataset(dataset_dir: str | Path, out_dir: str | Path, *, config: UnetConfig,
                       cases: Sequence[str] | None = None, jobs: int = 1, log: Callable[[str], None] = print,
                       progress: bool = False, device: str = "auto", cases_checked: bool = False) -> Path:
    """The registry's training entry point: :func:`check_training_cases` first (its warning line
    to ``log``; skipped with ``cases_checked``: the caller ran it, as ``segqc seg train`` does
    before it creates the output folder), then the slices of ``cases`` (an nnU-Net dataset, or a
    multi-rater folder trained on the config's ``raters`` target) and :func:`train`."""
    from segqc.io.raters import is_rater_folder

    if not cases_checked:
        note = check_training_cases(dataset_dir, cases)
        if note:
            log(f"warning: {note}")
    if is_rater_folder(dataset_dir):
        if config.spacing_mm > 0:
            raise InputError("spacing_mm (a field of view) is for nnU-Net datasets; multi-rater folders are "
                             "trained on whole images", dataset_dir)
        rater_data = build_rater_data(dataset_dir, cases, config.size, jobs=jobs, progress=progress)
        log(f"training data: {rater_data.n_slices} slices of {len(set(rater_data.cases))} cases, "
            f"target: the raters' {config.raters}")
        return train(config, rater_data, out_dir, device=device, log=log, progress=progress)
    data = build_training_data(dataset_dir, cases, config.size, spacing_mm=config.spacing_mm, jobs=jobs,
                               progress=progress)
    log(f"training data: {data.n_slices} slices of {len(set(data.cases))} cases, labels {list(data.labels)}")
    return train(config, data, out_dir, device=device, log=log, progress=progress)
