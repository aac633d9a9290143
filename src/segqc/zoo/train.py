"""Train the zoo's 2D UNet on an nnU-Net-style dataset and keep it at several epochs.

:func:`train_zoo` does, for ``dataset_dir`` (``imagesTr/``, ``labelsTr/``, ``dataset.json``):

1. **Split** the cases by patient (:mod:`segqc.io.split`) -> ``split.json``. Only the training
   side is ever read for learning; the fingerprint and plan come from it too.
2. **Fingerprint and plan** (:mod:`segqc.fingerprint`) with the config's slice size (and target
   spacing, default the training median) -> ``fingerprint.json``, ``plan.json``.
3. **Slices**: every training case is preprocessed (RAS, in-plane resampling, per-channel
   normalisation, a ``size`` x ``size`` window centred on the ground truth); all slices with
   foreground are kept and a seeded ``empty_slice_fraction`` of the others. Label values are
   mapped to class indices 0..K-1 (``classes`` in ``zoo.json``: the values named in
   ``dataset.json`` or present, background first).
4. **Training**: MONAI ``DiceCELoss`` (softmax, batch Dice), Adam, ``steps_per_epoch`` batches per
   epoch drawn from seeded permutations, augmentation from a generator seeded by
   ``(seed, epoch)`` (:class:`~segqc.zoo.config.ZooConfig`). After every epoch in
   ``config.saved_epochs`` the model is saved as a checkpoint directory
   ``models/unet_eNNN/`` (:func:`segqc.training.save_checkpoint`, method ``"zoo_unet"``). The
   epochs are the steps of one stage of the shared runner (:mod:`segqc.training.stages`): after
   every epoch the resumable state (weights, optimizer, loss history, time) goes to
   ``stages/train/``, and ``run.json`` records the settings, the training cases and a checksum of
   their prepared slices.

**Resume**: rerunning with the same dataset and settings continues after the last finished epoch
(an interrupted epoch is redone; batches and augmentation depend only on the seed and the epoch,
so the weights equal those of an uninterrupted run up to floating-point non-determinism of the
device). ``epochs`` and ``snapshot_epochs`` may be raised to train further; any other change —
other settings, other cases, images or label maps edited in place (the fingerprint and plan are
made afresh on every run, and the slices' checksum compared) — is refused with an
:class:`~segqc.errors.InputError` (use another output folder) before anything in the folder is
written, and so is a folder that holds a model but no zoo (:func:`segqc.training.stages.check_training_folder`).
Training data without any foreground are refused too.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from segqc.errors import InputError, SegqcError
from segqc.execution import map_cases
from segqc.fingerprint import (
    PreprocessingPlan,
    compute_fingerprint,
    plan_from_fingerprint,
    preprocess_files,
)
from segqc.io.atomic import write_text_atomic
from segqc.io.datasets import Dataset
from segqc.io.split import Split, make_split
from segqc.training import save_checkpoint, seed_everything, select_device
from segqc.training.cases import NO_FOREGROUND
from segqc.training.stages import (
    Stage,
    arrays_crc32,
    check_run_record,
    check_training_folder,
    finished_steps,
    run_stage,
)
from segqc.zoo.config import ZooConfig
from segqc.zoo.model import build_unet

__all__ = ["METHOD", "ZooInfo", "read_zoo", "train_zoo"]

#: ``method`` of the zoo's checkpoints (:func:`segqc.training.load_checkpoint`).
METHOD = "zoo_unet"
_FORMAT = "segqc-zoo"
_VERSION = 1


@dataclass(frozen=True)
class ZooInfo:
    """What ``zoo.json`` records: the settings, the data it was trained on, the class table."""

    config: ZooConfig
    dataset_dir: str
    classes: tuple[int, ...]  # class index -> label value; classes[0] == 0 (background)
    label_names: dict[int, str] = field(default_factory=dict)
    in_channels: int = 1

    @property
    def labels(self) -> tuple[int, ...]:
        """Foreground label values."""
        return self.classes[1:]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "method": METHOD,
            "dataset_dir": self.dataset_dir,
            "classes": list(self.classes),
            "label_names": {str(k): v for k, v in self.label_names.items()},
            "in_channels": self.in_channels,
            "config": self.config.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZooInfo:
        if data.get("format") != _FORMAT:
            raise InputError("not a segqc zoo (zoo.json lacks \"format\": \"segqc-zoo\")")
        if data.get("version") != _VERSION:
            raise InputError(f"zoo format version {data.get('version')!r} is not supported (expected {_VERSION})")
        try:
            return cls(config=ZooConfig.from_dict(data["config"]), dataset_dir=str(data["dataset_dir"]),
                       classes=tuple(int(v) for v in data["classes"]),
                       label_names={int(k): str(v) for k, v in data.get("label_names", {}).items()},
                       in_channels=int(data["in_channels"]))
        except KeyError as exc:
            raise InputError(f"malformed zoo.json: the entry {exc.args[0]!r} is missing") from None
        except TypeError:
            raise InputError("malformed zoo.json: an entry holds a value of the wrong kind") from None
        except ValueError as exc:
            raise InputError(f"malformed zoo.json: {exc}") from None


def read_zoo(zoo_dir: str | os.PathLike[str]) -> ZooInfo:
    """``zoo.json`` of a zoo folder; :class:`InputError` (one line) if the folder is not a zoo."""
    zoo_dir = Path(zoo_dir)
    if not zoo_dir.is_dir():
        raise InputError("zoo folder not found" if not zoo_dir.exists() else "not a folder", zoo_dir)
    path = zoo_dir / "zoo.json"
    if not path.is_file():
        raise InputError("not a segqc zoo folder (no zoo.json; make one with `segqc zoo train`)", zoo_dir)
    try:
        return ZooInfo.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg} (line {exc.lineno})", path) from None
    except InputError as exc:
        raise InputError(exc.problem, path) from None


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CaseTask:
    case: str
    image_paths: tuple[Path, ...]
    label_path: Path


def _class_lookup(classes: Sequence[int]) -> np.ndarray:
    table = np.full(max(classes) + 1, -1, dtype=np.int64)
    table[list(classes)] = np.arange(len(classes))
    return table


def _load_case(task: _CaseTask, *, plan: PreprocessingPlan, classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed image ``(C, size, size, n)`` float32 and class indices ``(size, size, n)`` uint8."""
    case = preprocess_files(list(task.image_paths), plan, label_path=task.label_path)
    assert case.label is not None
    label = case.label.astype(np.int64)
    table = _class_lookup(classes)
    if label.min() < 0 or label.max() >= table.size or (table[label] < 0).any():
        unknown = sorted(set(np.unique(label).tolist()) - set(classes))
        raise InputError(f"label value(s) {unknown} are not classes of the zoo {list(classes)}", task.label_path)
    return case.image, table[label].astype(np.uint8)


def _training_slices(images: list[np.ndarray], labels: list[np.ndarray], fraction_empty: float,
                     rng: np.random.Generator, *,
                     dataset: Path | None = None) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Stacked slices ``(N, C, H, W)``, ``(N, H, W)``; counts of foreground and empty slices kept.
    :class:`InputError` (naming ``dataset``) when no slice has foreground: a zoo of models that
    learnt background only is useless."""
    xs, ys, n_fg, n_empty = [], [], 0, 0
    for image, label in zip(images, labels):
        for k in range(label.shape[-1]):
            has_fg = bool(label[..., k].any())
            if not has_fg and rng.random() >= fraction_empty:
                continue
            xs.append(image[..., k])
            ys.append(label[..., k])
            n_fg += has_fg
            n_empty += not has_fg
    if not n_fg:
        raise InputError(NO_FOREGROUND, dataset)
    return np.stack(xs).astype(np.float32), np.stack(ys), n_fg, n_empty


def _batch_indices(epoch: int, steps: int, batch: int, n: int, seed: int) -> list[np.ndarray]:
    """Batches of epoch ``epoch`` (1-based) from an endless stream of seeded permutations of ``n``."""
    first = (epoch - 1) * steps * batch
    positions = np.arange(first, first + steps * batch)
    passes = positions // n
    out = np.empty_like(positions)
    for p in np.unique(passes):
        permutation = np.random.default_rng([seed, 11, int(p)]).permutation(n)
        chosen = passes == p
        out[chosen] = permutation[positions[chosen] % n]
    return [out[i * batch:(i + 1) * batch] for i in range(steps)]


def _shift(array: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """Translate the last two axes by (dy, dx) voxels, ``fill`` where nothing moves in."""
    out = np.full_like(array, fill)
    h, w = array.shape[-2:]
    src_y, dst_y = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    src_x, dst_x = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., dst_y, dst_x] = array[..., src_y, src_x]
    return out


def _augment(x: np.ndarray, y: np.ndarray, config: ZooConfig, pad: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random dihedral transform, translation and intensity jitter per slice (copies)."""
    x, y = x.copy(), y.copy()
    max_shift = int(round(config.max_shift_fraction * config.size))
    for i in range(x.shape[0]):
        xi, yi = x[i], y[i]
        if config.flips:
            k = int(rng.integers(4))
            xi, yi = np.rot90(xi, k, axes=(1, 2)), np.rot90(yi, k, axes=(0, 1))
            if rng.random() < 0.5:
                xi, yi = xi[:, :, ::-1], yi[:, ::-1]
        if max_shift:
            dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
            xi = np.stack([_shift(c, dy, dx, float(p)) for c, p in zip(xi, pad)])
            yi = _shift(yi, dy, dx, 0)
        if config.intensity_jitter:
            scale = 1.0 + rng.uniform(-config.intensity_jitter, config.intensity_jitter, size=(xi.shape[0], 1, 1))
            offset = rng.uniform(-config.intensity_jitter, config.intensity_jitter, size=(xi.shape[0], 1, 1))
            xi = xi * scale.astype(np.float32) + offset.astype(np.float32)
        x[i], y[i] = xi, yi
    return x, y


# --------------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------------


def _check_resumable(out: Path, info: ZooInfo, plan: PreprocessingPlan) -> None:
    """Refuse a folder holding another zoo: one trained on another dataset folder, other classes
    or channels, or another preprocessing plan (the dataset's images or labels changed since)."""
    path = out / "zoo.json"
    if not path.is_file():
        if (out / "models").exists() or (out / "stages").exists():
            raise InputError("holds models or a training state but no zoo.json; use an empty folder", out)
        return
    old = read_zoo(out)
    if Path(old.dataset_dir).resolve() != Path(info.dataset_dir).resolve():
        raise InputError(f"holds a zoo trained on {old.dataset_dir}, not {info.dataset_dir}; use another folder", out)
    if old.classes != info.classes or old.in_channels != info.in_channels:
        raise InputError(f"holds a zoo with classes {list(old.classes)} and {old.in_channels} channel(s); the "
                         f"dataset now has {list(info.classes)} and {info.in_channels}; use another folder", out)
    saved_plan = out / "plan.json"
    if saved_plan.is_file():
        try:  # compared as JSON text: NaN equals NaN there
            before = json.dumps(json.loads(saved_plan.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError):
            before = None
        if before != json.dumps(json.loads(json.dumps(plan.to_dict()))):
            raise InputError("holds a zoo trained with another preprocessing plan (plan.json): the training data "
                             "changed since; use another folder", out)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train_zoo(
    dataset_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: ZooConfig | None = None,
    *,
    device: str = "auto",
    threads: int = 2,
    jobs: int = 1,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Train the zoo (module docstring) into ``out_dir``; return ``out_dir / "models"``.

    ``config``: default the ``small`` preset. ``device``: ``"auto"`` (CUDA if available),
    ``"cpu"``, ``"cuda:0"``... ``threads``: torch CPU threads. ``jobs``: processes for the
    fingerprint and preprocessing. ``log`` receives one line per epoch. Bad input (no dataset,
    no ``dataset.json``, unreadable or mismatched files, one patient only, a folder holding a zoo
    trained differently) raises :class:`InputError`.
    """
    import torch

    config = config or ZooConfig.preset("small")
    say = log or (lambda _line: None)
    dataset = Dataset.open(dataset_dir)
    root, out = dataset.root, Path(out_dir)
    label_files = dataset.label_files
    may_change = "epochs and snapshot_epochs"
    # nothing is written before every check has passed: a refused run leaves the folder as it was
    check_training_folder(out, method=METHOD, settings=config.resume_key(), may_change=may_change)

    split = make_split(label_files, holdout_fraction=config.holdout_fraction, seed=config.seed)
    if (out / "split.json").is_file() and (out / "zoo.json").is_file():
        saved = Split.load(out / "split.json")
        if (saved.train, saved.holdout) != (split.train, split.holdout):
            raise InputError("split.json differs from the split of the dataset now (cases added or removed?); "
                             "use another folder", out / "split.json")

    # computed afresh on every run (the same data give the same fingerprint): a changed dataset never
    # reuses the fingerprint and plan of the data a zoo was trained on
    say(f"fingerprint of {len(split.train)} training case(s)")
    fingerprint = compute_fingerprint(root, cases=split.train, jobs=jobs, seed=config.seed)
    plan = plan_from_fingerprint(fingerprint, size=config.size, target_spacing=config.target_spacing_mm)
    classes = tuple(sorted({0} | set(fingerprint.labels) | set(fingerprint.label_values_present)))
    info = ZooInfo(config=config, dataset_dir=str(root.resolve()), classes=classes,
                   label_names={k: v for k, v in fingerprint.labels.items()},
                   in_channels=len(fingerprint.channels))
    _check_resumable(out, info, plan)

    tasks = [_CaseTask(c, tuple(dataset.image_files[c]), label_files[c]) for c in split.train]
    torch.set_num_threads(max(1, threads))
    say(f"preprocessing {len(tasks)} training case(s) to {config.size} px slices")
    loaded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for task, result in map_cases(partial(_load_case, plan=plan, classes=classes), tasks, jobs=jobs,
                                  description="preprocess", progress=progress):
        if isinstance(result, SegqcError):
            raise result
        loaded[task.case] = result
    x_all, y_all, n_fg, n_empty = _training_slices(
        [loaded[t.case][0] for t in tasks], [loaded[t.case][1] for t in tasks], config.empty_slice_fraction,
        np.random.default_rng([config.seed, 7]), dataset=root)
    del loaded
    # the checksum of the prepared slices: labels or images edited in place are other data
    check_run_record(out, method=METHOD, settings=config.resume_key(),
                     data={"dataset": info.dataset_dir, "train_cases": list(split.train),
                           "crc32": arrays_crc32((x_all, y_all))},
                     may_change=may_change)
    split.save(out / "split.json")
    fingerprint.save(out / "fingerprint.json")
    plan.save(out / "plan.json")
    write_text_atomic(out / "zoo.json", json.dumps(info.to_dict(), indent=2) + "\n")

    models_dir = out / "models"
    if finished_steps(out, "train") >= config.epochs:  # complete: nothing to train
        say(f"train: done before ({config.epochs} epochs), reusing it")
        return models_dir
    steps = config.steps_per_epoch or math.ceil(len(x_all) / config.batch_size)
    say(f"{len(x_all)} training slices ({n_fg} with foreground, {n_empty} without) from "
        f"{len(split.train_patients)} patient(s); {steps} batches of {config.batch_size} per epoch")

    seed_everything(config.seed)
    torch_device = select_device(device)
    model = build_unet(config, info.in_channels, len(classes)).to(torch_device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    from monai.losses import DiceCELoss

    loss_function = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    pad = np.array([c.pad_value for c in plan.channels], dtype=np.float32)
    fingerprint_dict = fingerprint.to_dict()
    checkpoint_config = {"zoo": config.to_dict(), "plan": plan.to_dict(), "classes": list(classes),
                         "label_names": {str(k): v for k, v in info.label_names.items()},
                         "in_channels": info.in_channels}

    def epoch_step(k: int) -> dict[str, float]:
        epoch = k + 1
        rng = np.random.default_rng([config.seed, 13, epoch])
        total = 0.0
        for indices in _batch_indices(epoch, steps, config.batch_size, len(x_all), config.seed):
            xb, yb = _augment(x_all[indices], y_all[indices], config, pad, rng)
            inputs = torch.from_numpy(np.ascontiguousarray(xb)).to(torch_device)
            target = torch.from_numpy(np.ascontiguousarray(yb).astype(np.int64))[:, None].to(torch_device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(model(inputs), target)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        return {"loss": total / steps}

    last: dict[str, Any] = {}

    def snapshot(epoch: int, history: dict[str, list[float]], seconds: float) -> None:
        last.update(loss_history=list(history["loss"]), train_seconds=round(seconds, 3), epochs=epoch)
        if epoch not in config.saved_epochs:
            return
        losses = history["loss"]
        metrics = {"epoch": epoch, "train_loss": losses[-1], "loss_history": list(losses),
                   "train_seconds": round(seconds, 3), "n_train_slices": int(len(x_all)),
                   "n_train_cases": len(split.train), "n_train_patients": len(split.train_patients)}
        save_checkpoint(models_dir / config.model_name(epoch), method=METHOD,
                        config={**checkpoint_config, "epoch": epoch}, weights={"unet": model.state_dict()},
                        fingerprint=fingerprint_dict, metrics=metrics, seed=config.seed)
        say(f"saved {config.model_name(epoch)}")

    stage = Stage("train", config.epochs, {"unet": model}, {"adam": optimizer}, epoch_step, after_step=snapshot,
                  unit="epoch")
    with torch.enable_grad():
        run_stage(stage, out, checkpoint_every=1, log=say, progress=progress, prefix="zoo ")
    missing = [e for e in config.saved_epochs if not (models_dir / config.model_name(e) / "config.json").is_file()]
    if missing:
        say(f"snapshot(s) of epoch(s) {missing} were not saved when those epochs ran and cannot be made now")
    if last:  # epochs ran in this call (else the log of the run that trained them stays)
        write_text_atomic(out / "train_log.json", json.dumps(last, indent=2))
    return models_dir
