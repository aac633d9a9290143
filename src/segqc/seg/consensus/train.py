"""Training consensus diffusion on a multi-rater folder: 2D slices, one stage on the shared stage runner.

Data: :mod:`segqc.seg.rater_slices`. Every step draws ``batch_size`` slices uniformly, and for
each slice a level by the config's ``mode`` (:func:`training_targets`): ``consensus`` — c uniform
over 1..C of that slice's C raters (Algorithm 1), target ``M^c = [Σ A ≥ c]``; ``annotator`` /
``no_annotator`` — a rater k uniform over 1..C, target ``A^k``; ``soft`` — the rater mean. The
draw of step k depends only on (seed, k), so a resumed run draws what an uninterrupted one would.
Augmentation: the same random flips and quarter turns of image and target. AdamW on the noise MSE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segqc.errors import InputError
from segqc.seg.consensus.config import ConsensusConfig
from segqc.seg.consensus.model import ConsensusDiffusion, level_index
from segqc.seg.rater_slices import RaterSliceData, build_rater_data, check_raters_per_case
from segqc.training import save_checkpoint
from segqc.training.stages import Stage, step_generators, train_single_stage

__all__ = ["METHOD", "check_training_cases", "save_model", "train", "train_from_dataset", "training_targets"]

METHOD = "consensus"
COMPONENTS = ("image_encoder", "unet")


def training_targets(config: ConsensusConfig, raters: np.ndarray, n_raters: int, rng: np.random.Generator,
                     rater_ids: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """``(target (S, S) float32 in [0, 1], lookup index)`` of one slice's ``raters`` ``(R, S, S)``
    (the first ``n_raters`` real) for the config's mode (module docstring). ``annotator``: the
    index is the rater's number in the data (``rater_ids``, 1-based; default its position)."""
    real = raters[:n_raters].astype(np.float32)
    if config.mode == "soft":
        return real.mean(axis=0), 0
    k = int(rng.integers(1, n_raters + 1))
    if config.mode == "consensus":
        return (real.sum(axis=0) >= k).astype(np.float32), level_index(config, k, n_raters)
    if config.mode == "annotator" and rater_ids is not None:
        number = int(rater_ids[k - 1])
        if not 1 <= number <= config.level_grid:
            raise ValueError(f"rater number {number} outside the {config.level_grid} annotator entries (level_grid)")
        return real[k - 1], number
    return real[k - 1], level_index(config, k, n_raters)


def _augment(image: np.ndarray, target: np.ndarray, rng: np.random.Generator,
             config: ConsensusConfig) -> tuple[np.ndarray, np.ndarray]:
    if config.flip:
        for axis in (-1, -2):
            if rng.random() < 0.5:
                image, target = np.flip(image, axis=axis), np.flip(target, axis=axis)
    if config.rotate:
        turns = int(rng.integers(0, 4))
        image, target = np.rot90(image, turns, axes=(-2, -1)), np.rot90(target, turns, axes=(-2, -1))
    return image, target


def make_batch(config: ConsensusConfig, data: RaterSliceData, indices: Sequence[int],
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``image`` (B, C, S, S), ``target`` (B, S, S) and lookup ``index`` (B,) of slices ``indices``."""
    images, targets, index = [], [], []
    for i in indices:
        ids = data.rater_ids[i] if data.rater_ids is not None else None
        target, k = training_targets(config, data.raters[i], int(data.n_raters[i]), rng, ids)
        image, target = _augment(data.images[i].astype(np.float32), target, rng, config)
        images.append(np.ascontiguousarray(image))
        targets.append(np.ascontiguousarray(target))
        index.append(k)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets)), torch.tensor(index)


def _stage(config: ConsensusConfig, data: RaterSliceData, model: ConsensusDiffusion, dev: torch.device) -> Stage:
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def step(k: int) -> dict[str, float]:
        rng, generator = step_generators(config.seed, 0, k)
        indices = rng.integers(0, data.n_slices, size=config.batch_size).tolist()
        image, target, index = make_batch(config, data, indices, rng)
        loss, parts = model.training_loss(image.to(dev), target.to(dev), index.to(dev), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return parts

    return Stage(name="train", steps=config.steps_train,
                 modules={name: getattr(model, name) for name in COMPONENTS}, optimizers={"adamw": optimizer},
                 step=step)


def save_model(model: ConsensusDiffusion, data: RaterSliceData, model_dir: str | Path, *,
               metrics: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a checkpoint directory (one safetensors file per network, config.json
    with the config, the image channels and the most raters of a training slice)."""
    weights = {name: {k: v.detach().cpu() for k, v in getattr(model, name).state_dict().items()}
               for name in COMPONENTS}
    config = {"consensus": model.config.to_dict(), "image_channels": data.image_channels,
              "max_raters": data.max_raters, "rater_names": list(data.rater_names), "labels": [0, 1],
              "names": {"0": "background", "1": "foreground"}}
    return save_checkpoint(model_dir, method=METHOD, config=config, weights=weights, metrics=metrics,
                           seed=model.config.seed)


def train(config: ConsensusConfig, data: RaterSliceData, out_dir: str | Path, *, device: str = "auto",
          log: Callable[[str], None] | None = None, progress: bool = False) -> Path:
    """Train on ``data`` into ``out_dir`` (resumable; a folder with another run is refused);
    returns the model directory ``out_dir/model``."""
    if data.n_slices == 0:
        raise InputError("the training data hold no slice")
    if int(data.raters.shape[-1]) != config.size:
        raise InputError(f"the data have {data.raters.shape[-1]} px slices but the config needs {config.size}")
    say = log or (lambda _line: None)
    counts = sorted(int(c) for c in np.unique(data.n_raters))
    if config.mode == "consensus" and any(config.level_grid % c for c in counts):
        say(f"note: level_grid {config.level_grid} is not a multiple of every rater count {counts}; "
            "some levels share a lookup entry")
    annotators = max(len(data.rater_names), data.max_raters)
    if config.mode == "annotator" and annotators > config.level_grid:
        raise InputError(f"{annotators} raters but only {config.level_grid} annotator entries; "
                         f"--set level_grid={annotators}")
    return train_single_stage(
        out_dir, method=METHOD, config=config, data=data.summary(), device=device, log=log, progress=progress,
        build=lambda: ConsensusDiffusion(config, image_channels=data.image_channels),
        stage=lambda model, dev: _stage(config, data, model, dev),
        save=lambda model, directory, metrics: save_model(model, data, directory, metrics=metrics))


def check_training_cases(dataset_dir: str | Path, cases: Sequence[str] | None) -> str | None:
    """What consensus diffusion needs of its training folder, from the file names alone (no image
    is read, nothing is written): a multi-rater folder whose training ``cases`` (default: all)
    show the raters' disagreement, the levels it learns
    (:func:`~segqc.seg.rater_slices.check_raters_per_case`). :class:`InputError` naming the
    folder when it is not one or no case has two raters; the warning line when some have one,
    else None."""
    return check_raters_per_case(dataset_dir, cases, several="consensus diffusion")


def train_from_dataset(dataset_dir: str | Path, out_dir: str | Path, *, config: ConsensusConfig,
                       cases: Sequence[str] | None = None, jobs: int = 1, log: Callable[[str], None] = print,
                       progress: bool = False, device: str = "auto", cases_checked: bool = False) -> Path:
    """The registry's training entry point (:mod:`segqc.methods`): :func:`check_training_cases`
    first (its warning line to ``log``; skipped with ``cases_checked``: the caller ran it, as
    ``segqc seg train`` does before it creates the output folder), then the slices of ``cases``
    of a multi-rater folder (``CASE/image.*``, ``CASE/rater_k.*``) and :func:`train`."""
    if not cases_checked:
        note = check_training_cases(dataset_dir, cases)
        if note:
            log(f"warning: {note}")
    data = build_rater_data(dataset_dir, cases, config.size, jobs=jobs, progress=progress)
    counts = data.raters_per_slice()
    log(f"training data: {data.n_slices} slices of {len(set(data.cases))} cases, raters per slice {counts}")
    return train(config, data, out_dir, device=device, log=log, progress=progress)
