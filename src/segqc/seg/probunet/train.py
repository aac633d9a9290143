"""Training the Probabilistic U-Net on a multi-rater folder: one stage on the shared stage runner;
every step draws ``batch_size`` slices and one of each slice's raters from (seed, k), with random
flips (:mod:`segqc.seg.probunet.config`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segqc.errors import InputError
from segqc.seg.probunet.config import ProbUnetConfig
from segqc.seg.probunet.model import ProbUnet
from segqc.seg.rater_slices import RaterSliceData, build_rater_data, check_raters_per_case
from segqc.seg.slices import flip_rows
from segqc.training import save_checkpoint
from segqc.training.stages import Stage, step_generators, train_single_stage

__all__ = ["METHOD", "check_training_cases", "save_model", "train", "train_from_dataset"]

METHOD = "probunet"


def _batch(config: ProbUnetConfig, data: RaterSliceData, indices: list[int],
           rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    images = data.images[indices].astype(np.float32)
    targets = np.stack([data.raters[i, int(rng.integers(0, int(data.n_raters[i])))] for i in indices]).astype(np.int64)
    if config.flip:
        flip_rows(images, targets, rng)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(np.ascontiguousarray(targets))


def _stage(config: ProbUnetConfig, data: RaterSliceData, model: ProbUnet, dev: torch.device) -> Stage:
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)

    def step(k: int) -> dict[str, float]:
        rng, generator = step_generators(config.seed, 0, k)
        indices = rng.integers(0, data.n_slices, size=config.batch_size).tolist()
        image, target = _batch(config, data, indices, rng)
        loss, parts = model.training_loss(image.to(dev), target.to(dev), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return parts

    return Stage(name="train", steps=config.steps_train, modules={"probunet": model}, optimizers={"adam": optimizer},
                 step=step)


def save_model(model: ProbUnet, data: RaterSliceData, model_dir: str | Path, *,
               metrics: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory: ``probunet.safetensors`` and ``config.json``."""
    weights = {"probunet": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    saved = {"probunet": model.config.to_dict(), "labels": [0, 1], "names": {"0": "background", "1": "foreground"},
             "image_channels": data.image_channels}
    return save_checkpoint(model_dir, method=METHOD, config=saved, weights=weights, metrics=metrics,
                           seed=model.config.seed)


def train(config: ProbUnetConfig, data: RaterSliceData, out_dir: str | Path, *, device: str = "auto",
          log: Callable[[str], None] | None = None, progress: bool = False) -> Path:
    """Train on ``data`` into ``out_dir`` (resumable); returns ``out_dir/model``."""
    if data.n_slices == 0:
        raise InputError("the training data hold no slice")
    if int(data.raters.shape[-1]) != config.size:
        raise InputError(f"the data have {data.raters.shape[-1]} px slices but the config needs {config.size}")
    return train_single_stage(
        out_dir, method=METHOD, config=config, data=data.summary(), device=device, log=log, progress=progress,
        build=lambda: ProbUnet(config, image_channels=data.image_channels, classes=2),
        stage=lambda model, dev: _stage(config, data, model, dev),
        save=lambda model, directory, metrics: save_model(model, data, directory, metrics=metrics))


def check_training_cases(dataset_dir: str | Path, cases: Sequence[str] | None) -> str | None:
    """What the Probabilistic U-Net needs of its training folder, from the file names alone (no
    image is read, nothing is written): a multi-rater folder whose training ``cases`` (default:
    all) show the raters' disagreement (:func:`~segqc.seg.rater_slices.check_raters_per_case`).
    :class:`InputError` naming the folder when it is not one or no case has two raters; the
    warning line when some have one, else None."""
    return check_raters_per_case(dataset_dir, cases, several="the Probabilistic U-Net")


def train_from_dataset(dataset_dir: str | Path, out_dir: str | Path, *, config: ProbUnetConfig,
                       cases: Sequence[str] | None = None, jobs: int = 1, log: Callable[[str], None] = print,
                       progress: bool = False, device: str = "auto", cases_checked: bool = False) -> Path:
    """The registry's training entry point: :func:`check_training_cases` first (its warning line
    to ``log``; skipped with ``cases_checked``: the caller ran it, as ``segqc seg train`` does
    before it creates the output folder), then the slices of a multi-rater folder and
    :func:`train`."""
    if not cases_checked:
        note = check_training_cases(dataset_dir, cases)
        if note:
            log(f"warning: {note}")
    data = build_rater_data(dataset_dir, cases, config.size, jobs=jobs, progress=progress)
    log(f"training data: {data.n_slices} slices of {len(set(data.cases))} cases")
    return train(config, data, out_dir, device=device, log=log, progress=progress)
