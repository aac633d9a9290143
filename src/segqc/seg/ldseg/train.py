"""Training LDSeg on an nnU-Net-style dataset: 2D slices, one stage on the shared stage runner.

Data: :mod:`segqc.seg.slices` (2D slices resampled to ``size`` x ``size``; a 3D config,
``spatial_dims`` 3, trains on stacks of ``depth`` consecutive slices of one case around each
drawn slice, :func:`~segqc.seg.slices.make_stack_batch`).

Training (paper Algorithm 1): every step draws ``batch_size`` slices uniformly from all training
slices (the draw of step k depends only on (seed, k): a resumed run draws what an uninterrupted
one would), ``t`` uniform over 1..T per slice, Gaussian ``eps``, and takes an Adam step on
``CE + gamma Dice + lambda MSE(eps, eps_hat)`` through all four networks end to end (with
``noise_consistency``, plus that weight times the image features' consistency under the
augmentation noise). The learning rate is ``lr * lr_decay ** (k / 1000)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from segqc.errors import InputError
from segqc.seg.ldseg.config import LdsegConfig
from segqc.seg.ldseg.model import COMPONENTS, Ldseg
from segqc.seg.slices import SliceData, build_training_data, make_batch, make_stack_batch, noisy_and_clean
from segqc.training import save_checkpoint
from segqc.training.stages import Stage, step_generators, train_single_stage

__all__ = ["METHOD", "checkpoint_config", "save_model", "train", "train_from_dataset"]

METHOD = "ldseg"


def _stage(config: LdsegConfig, data: SliceData, model: Ldseg, dev: torch.device) -> Stage:
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)

    def step(k: int) -> dict[str, float]:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * config.lr_decay ** (k / 1000)
        rng, generator = step_generators(config.seed, 0, k)
        indices = rng.integers(0, data.n_slices, size=config.batch_size).tolist()
        consistency = config.noise_consistency > 0  # then the batch is built clean and the noise added after
        noise = 0.0 if consistency else config.noise_aug
        if config.spatial_dims == 3:
            image, gt = make_stack_batch(data, indices, config.depth, rng=rng, flip=config.flip, noise=noise)
        else:
            image, gt = make_batch(data, indices, rng=rng, flip=config.flip, noise=noise)
        clean = None
        if consistency:
            image, clean = noisy_and_clean(image, rng, config.noise_aug)
            clean = clean.to(dev)
        loss, parts = model.training_loss(image.to(dev), gt.to(dev), generator=generator, clean=clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return parts

    return Stage(name="train", steps=config.steps_train, modules={name: model.component(name) for name in COMPONENTS},
                 optimizers={"adam": optimizer}, step=step)


def checkpoint_config(config: LdsegConfig, data: SliceData) -> dict[str, Any]:
    """What :func:`segqc.seg.ldseg.predict.load` needs besides the weights."""
    return {"ldseg": config.to_dict(), "labels": list(data.labels), "names": dict(data.names),
            "image_channels": data.image_channels}


def train(config: LdsegConfig, data: SliceData, out_dir: str | Path, *, device: str = "auto",
          log: Callable[[str], None] | None = None, progress: bool = False) -> Path:
    """Train LDSeg on ``data`` into ``out_dir`` (resumable; a folder with another run is
    refused); returns the model directory ``out_dir/model``."""
    if data.n_slices == 0:
        raise InputError("the training data hold no slice")
    if int(data.gts.shape[-1]) != config.size:
        raise InputError(f"the data have {data.gts.shape[-1]} px slices but the config needs {config.size}")
    return train_single_stage(
        out_dir, method=METHOD, config=config, data=data.summary(), device=device, log=log, progress=progress,
        build=lambda: Ldseg(config, image_channels=data.image_channels, classes=len(data.labels)),
        stage=lambda model, dev: _stage(config, data, model, dev),
        save=lambda model, directory, metrics: save_model(model, data, directory, metrics=metrics))


def save_model(model: Ldseg, data: SliceData, model_dir: str | Path, *, metrics: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a checkpoint directory: one safetensors file per network
    (:data:`~segqc.seg.ldseg.model.COMPONENTS`) and ``config.json`` (the config, the label
    values and names, the image channels of ``data``)."""
    weights = {name: {k: v.detach().cpu() for k, v in model.component(name).state_dict().items()}
               for name in COMPONENTS}
    return save_checkpoint(model_dir, method=METHOD, config=checkpoint_config(model.config, data), weights=weights,
                           metrics=metrics, seed=model.config.seed)


def train_from_dataset(dataset_dir: str | Path, out_dir: str | Path, *, config: LdsegConfig,
                       cases: Sequence[str] | None = None, jobs: int = 1, log: Callable[[str], None] = print,
                       progress: bool = False, device: str = "auto") -> Path:
    """The registry's training entry point (:mod:`segqc.methods`): prepare the slices of
    ``cases`` and :func:`train`; returns the model directory ``out_dir/model``."""
    data = build_training_data(dataset_dir, cases, config.size, spacing_mm=config.spacing_mm, jobs=jobs,
                               progress=progress)
    log(f"training data: {data.n_slices} slices of {len(set(data.cases))} cases, labels {list(data.labels)}")
    return train(config, data, out_dir, device=device, log=log, progress=progress)
