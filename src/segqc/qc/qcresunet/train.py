"""Training QCResUNet: one stage per ensemble member on the shared stage runner.

Every epoch draws ``samples_per_epoch`` segmentations evenly over the equal Dice bins of their
true multi-class Dice (QCResUNet §2.2: re-drawn every epoch, with replacement inside a bin that
holds fewer; the draw of epoch e depends only on (seed, member, e), so a resumed run draws the
same). A batch is padded along the slice axis to its deepest volume (rounded up to the network's
size multiple; zeros: background image and query); volumes deeper than ``max_depth`` are cropped
around the query's foreground. Augmentation: in-plane flips, Gaussian noise and a gamma change of
the image (the paper also rotates and scales; not here). Loss: MAE(Dice) + MAE(NSD) +
λ (Dice + BCE) on the error maps. Adam with weight decay; the learning rate is ``lr ·
lr_decay^epoch``, at least ``min_lr``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segqc.errors import InputError
from segqc.qc.qcresunet.config import QcResUNetConfig, resolve_strides
from segqc.qc.qcresunet.data import QcResUNetData, build_training_data
from segqc.qc.qcresunet.model import QcResUNet, one_hot_query, qcresunet_loss
from segqc.training import save_checkpoint, seed_everything, select_device
from segqc.training.stages import Stage, check_run_record, run_stage, step_generators

__all__ = ["METHOD", "build_network", "epoch_order", "make_batch", "train", "train_from_dataset"]

METHOD = "qcresunet"


def build_network(config: QcResUNetConfig, *, spatial_dims: int, image_channels: int, n_classes: int,
                  strides: Sequence[Sequence[int]]) -> QcResUNet:
    """The network of ``config`` for data of this shape."""
    return QcResUNet(spatial_dims, image_channels, n_classes, widths=config.widths, blocks=config.blocks,
                     strides=[tuple(s) for s in strides], dropout=config.dropout, attention=config.attention,
                     decoder=config.decoder, regression=config.regression)


def epoch_order(dice: np.ndarray, n: int, bins: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` sample indices drawn evenly over ``bins`` equal bins of ``dice`` in [0, 1] (the last
    bin closed), shuffled; within a bin without replacement while it lasts."""
    which = np.clip(np.floor(np.asarray(dice, dtype=float) * bins), 0, bins - 1).astype(int)
    members = [np.flatnonzero(which == b) for b in range(bins)]
    members = [m for m in members if m.size]
    share = [n // len(members) + (1 if k < n % len(members) else 0) for k in range(len(members))]
    chosen = [rng.choice(m, size=k, replace=k > m.size) for m, k in zip(members, share)]
    order = np.concatenate(chosen)
    rng.shuffle(order)
    return order


def _window(seg: np.ndarray, depth: int) -> slice:
    """``depth`` consecutive slices around the foreground of ``seg`` ``(n, H, W)``."""
    n = seg.shape[0]
    if n <= depth:
        return slice(0, n)
    present = np.flatnonzero(seg.reshape(n, -1).any(axis=1))
    centre = int(present.mean()) if present.size else n // 2
    start = min(max(centre - depth // 2, 0), n - depth)
    return slice(start, start + depth)


def make_batch(data: QcResUNetData, indices: Sequence[int], *, multiple: int, max_depth: int,
               rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
    """Tensors of samples ``indices``: ``image`` (B, C, D, H, W) (or (B, C, H, W) for 2D data),
    ``query`` (B, K+1, ...) one-hot, ``sem`` (B, K, ...) error maps, ``dice`` / ``nsd`` (B, K+1).
    ``multiple``: the depth is padded up to a multiple of it. With ``rng``: augmentation."""
    classes = [v for v in data.labels if v != 0]
    lookup = np.zeros(max(data.labels) + 1, dtype=np.int64)
    lookup[list(classes)] = np.arange(1, len(classes) + 1)
    windows = [_window(data.segs[i], max_depth) for i in indices]
    depth = max(w.stop - w.start for w in windows)
    depth = -(-depth // multiple) * multiple
    size = data.segs[indices[0]].shape[-1]
    images = np.zeros((len(indices), data.image_channels, depth, size, size), dtype=np.float32)
    segs = np.zeros((len(indices), depth, size, size), dtype=np.int64)
    gts = np.zeros_like(segs)
    for row, (i, window) in enumerate(zip(indices, windows)):
        n = window.stop - window.start
        images[row, :, :n] = data.images[i][:, window]
        segs[row, :n] = lookup[data.segs[i][window]]
        gts[row, :n] = lookup[data.gts[i][window]]
    if rng is not None:
        for row in range(len(indices)):
            for axis in (-1, -2):
                if rng.random() < 0.5:
                    images[row] = np.flip(images[row], axis=axis)
                    segs[row] = np.flip(segs[row], axis=axis)
                    gts[row] = np.flip(gts[row], axis=axis)
            if rng.random() < 0.3:  # gamma on the image's own [min, max]
                low, high = float(images[row].min()), float(images[row].max())
                if high > low:
                    unit = (images[row] - low) / (high - low)
                    images[row] = unit ** float(np.exp(rng.uniform(-0.4, 0.4))) * (high - low) + low
            if rng.random() < 0.3:
                images[row] += rng.normal(0.0, rng.uniform(0.0, 0.1), images[row].shape).astype(np.float32)
    seg_t, gt_t = torch.from_numpy(segs), torch.from_numpy(gts)
    n_classes = len(classes)
    sem = torch.stack([(seg_t == c) ^ (gt_t == c) for c in range(1, n_classes + 1)], dim=1).float()
    targets = torch.from_numpy(data.targets[list(indices)].astype(np.float32))
    batch = {"image": torch.from_numpy(images), "query": one_hot_query(seg_t, n_classes), "sem": sem,
             "dice": targets[:, 0], "nsd": targets[:, 1]}
    if data.ndim == 2:  # one slice per sample: the 2D network
        batch = {k: v[:, :, 0] if v.ndim == 5 else v for k, v in batch.items()}
    return batch


def _member_stage(config: QcResUNetConfig, data: QcResUNetData, member: int, model: QcResUNet,
                  dev: torch.device) -> Stage:
    seed = config.seed + member
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    per_epoch = config.steps_per_epoch
    multiple = model.size_multiple[0] if data.ndim == 3 else 1
    orders: dict[int, np.ndarray] = {}

    def step(k: int) -> dict[str, float]:
        epoch = k // per_epoch
        if epoch not in orders:
            orders.clear()
            rng_epoch, _ = step_generators(seed, member, 0, epoch)
            orders[epoch] = epoch_order(data.targets[:, 0, 0], per_epoch * config.batch_size, config.bins, rng_epoch)
        for group in optimizer.param_groups:
            group["lr"] = max(config.lr * config.lr_decay ** epoch, config.min_lr)
        rng, generator = step_generators(seed, member, 1, k)
        torch.manual_seed(int(rng.integers(2**31)))  # the dropout masks of this step
        start = (k % per_epoch) * config.batch_size
        indices = orders[epoch][start:start + config.batch_size].tolist()
        batch = {name: t.to(dev) for name, t in make_batch(data, indices, multiple=multiple,
                                                               max_depth=config.max_depth, rng=rng).items()}
        output = model(batch["image"], batch["query"])
        loss, parts = qcresunet_loss(output, batch["dice"] if config.regression else None,
                                     batch["nsd"] if config.regression else None,
                                     batch["sem"] if config.decoder else None, lam=config.loss_lambda)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {name: float(value) for name, value in parts.items()}

    return Stage(name=f"member{member}", steps=config.epochs * per_epoch, modules={"model": model},
                 optimizers={"adam": optimizer}, step=step)


def train(config: QcResUNetConfig, data: QcResUNetData, out_dir: str | Path, *, device: str = "auto",
          log: Callable[[str], None] | None = None, progress: bool = False) -> Path:
    """Train ``config.members`` networks on ``data`` into ``out_dir`` (resumable; a folder with
    another run is refused); returns the model directory ``out_dir/model``."""
    if data.n_samples == 0:
        raise InputError("the training data holds no segmentation")
    if int(data.plan.size) != config.size:
        raise InputError(f"the data have {data.plan.size} px slices but the config needs {config.size}")
    say = log or (lambda _line: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_run_record(out, method=METHOD, settings=config.resume_key(), data=data.summary(),
                     may_change="epochs, checkpoint_every")
    seed_everything(config.seed)
    dev = select_device(device)
    strides = resolve_strides(config, ndim=data.ndim, slice_spacing=data.slice_spacing,
                              inplane_spacing=float(min(data.plan.target_spacing)))
    n_classes = len(data.labels) - 1
    metrics: dict[str, Any] = {"data": data.summary(), "device": str(dev), "threads": torch.get_num_threads(),
                               "strides": [list(s) for s in strides]}
    weights = {}
    with torch.enable_grad():
        for member in range(config.members):
            torch.manual_seed(config.seed + member)
            model = build_network(config, spatial_dims=data.ndim, image_channels=data.image_channels,
                                  n_classes=n_classes, strides=strides).to(dev)
            metrics[f"member{member}"] = run_stage(_member_stage(config, data, member, model, dev), out,
                                                   checkpoint_every=config.checkpoint_every, log=say,
                                                   progress=progress, prefix="qcresunet ")
            weights[f"member{member}"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    model_dir = out / "model"
    save_checkpoint(model_dir, method=METHOD,
                    config={"qcresunet": config.to_dict(), "labels": list(data.labels),
                            "image_channels": data.image_channels, "plan": data.plan.to_dict(),
                            "strides": [list(s) for s in strides], "spatial_dims": data.ndim},
                    weights=weights, fingerprint=data.fingerprint, metrics=metrics, seed=config.seed)
    say(f"model saved to {model_dir}")
    return model_dir


def train_from_dataset(dataset_dir: str | Path, out_dir: str | Path, *, config: QcResUNetConfig,
                       cases: Sequence[str] | None = None, jobs: int = 1, log: Callable[[str], None] = print,
                       extra_seg_dirs: Sequence[str | Path] = (), progress: bool = False) -> Path:
    """The registry's training entry point (:mod:`segqc.methods`): degrade the ground truths of
    ``cases`` (kept in ``out_dir/data`` for a rerun), add the segmentations of ``extra_seg_dirs``
    (e.g. ``segqc zoo predict`` outputs), prepare the samples and :func:`train`; returns the model
    directory."""
    data = build_training_data(dataset_dir, cases, config, Path(out_dir) / "data", extra_seg_dirs=extra_seg_dirs,
                               jobs=jobs, progress=progress)
    counts = {source: data.sources.count(source) for source in sorted(set(data.sources))}
    log(f"training data: {data.n_samples} segmentations of {len(set(data.cases))} volumes ({counts})")
    return train(config, data, out_dir, log=log, progress=progress)

