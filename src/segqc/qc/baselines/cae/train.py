"""Training of the autoencoder baseline on ground-truth masks (preprocessed with the dataset plan)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segqc.errors import InputError
from segqc.fingerprint import compute_fingerprint, plan_from_fingerprint, preprocess_files
from segqc.fingerprint.preprocessing import PreprocessingPlan
from segqc.io.datasets import Dataset
from segqc.nn.losses import soft_dice_loss
from segqc.qc.baselines.cae.config import CaeConfig
from segqc.qc.baselines.cae.model import ConvAutoencoder
from segqc.training import save_checkpoint, seed_everything
from segqc.training.cases import NO_FOREGROUND
from segqc.training.stages import Stage, arrays_crc32, check_run_record, run_stage, step_generators

METHOD = "cae"


def ground_truth_slices(dataset_dir: str | Path, cases: Sequence[str], plan: PreprocessingPlan) -> np.ndarray:
    """Preprocessed axial GT slices with foreground, ``(N, size, size)`` integer labels;
    :class:`InputError` naming the dataset when there is none (a shape prior of background only
    is useless)."""
    dataset = Dataset.open(dataset_dir)
    slices = []
    for case in dataset.select(cases):
        prepared = preprocess_files(dataset.image_files[case], plan, label_path=dataset.label_files[case])
        label = prepared.required_label()
        for k in range(prepared.n_slices):
            if label[..., k].any():
                slices.append(label[..., k].astype(np.int64))
    if not slices:
        raise InputError(NO_FOREGROUND, dataset.root)
    return np.stack(slices)


def train(config: CaeConfig, slices: np.ndarray, labels: Sequence[int], plan: PreprocessingPlan,
          out_dir: str | Path, *, fingerprint: dict | None = None, log=print, progress: bool = False) -> Path:
    """Train the autoencoder to reproduce GT masks (cross-entropy + soft Dice) and save it.

    One epoch is one step of the shared stage runner (:mod:`segqc.training.stages`): a rerun in
    the same folder continues after the last finished epoch (``epochs`` may be raised); the
    batches and flips of epoch ``e`` depend only on ``(seed, e)``."""
    seed_everything(config.seed)
    n_classes = max(labels) + 1
    model = ConvAutoencoder(n_classes, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    data = torch.from_numpy(slices.astype(np.int64))
    check_run_record(out_dir, method=METHOD, settings=config.resume_key(),
                     data={"n_slices": int(len(data)), "labels": [int(v) for v in labels],
                           "crc32": arrays_crc32([slices])}, may_change="epochs")

    def epoch(k: int) -> dict[str, float]:
        rng, _ = step_generators(config.seed, 1, k)
        order = rng.permutation(len(data))
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            target = data[order[start:start + config.batch_size]]
            if rng.random() < 0.5:  # flips keep the shape prior orientation-free
                target = torch.flip(target, dims=(2,))
            one_hot = F.one_hot(target, n_classes).permute(0, 3, 1, 2).float()
            logits = model(one_hot)
            loss = F.cross_entropy(logits, target) + soft_dice_loss(logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(target)
        return {"loss": total / len(data)}

    stage = Stage("train", config.epochs, {"autoencoder": model}, {"adam": optimizer}, epoch, unit="epoch")
    with torch.enable_grad():
        result = run_stage(stage, out_dir, checkpoint_every=5, log=log, progress=progress, prefix="cae ")
    model.eval()
    return save_checkpoint(out_dir, method=METHOD, config={"cae": config.to_dict(), "plan": plan.to_dict(),
                                                          "labels": list(range(n_classes))},
                           weights={"autoencoder": model.state_dict()}, fingerprint=fingerprint,
                           metrics={"loss": result["losses"].get("loss", []), "seconds": result["seconds"]},
                           seed=config.seed)


def train_from_dataset(dataset_dir: str | Path, out_dir: str | Path, *, config: CaeConfig,
                       cases: Sequence[str] | None = None, jobs: int = 1, log=print, progress: bool = False,
                       **options) -> Path:
    """Fingerprint the dataset, preprocess the GT of ``cases`` (default: all) and train (the
    registry's training entry point; the CAE learns from ground truths only, so options such as
    extra segmentation folders are refused)."""
    given = [k for k, v in options.items() if v]
    if given:
        raise ValueError(f"the CAE baseline learns from ground truths only; {', '.join(given)} is for nnqc and "
                         "qcresunet")
    fingerprint = compute_fingerprint(dataset_dir, cases=cases, jobs=jobs)
    plan = plan_from_fingerprint(fingerprint, size=config.size, field_of_view=config.field_of_view)
    cases = list(cases) if cases is not None else sorted(c.case for c in fingerprint.cases)
    slices = ground_truth_slices(dataset_dir, cases, plan)
    labels = sorted(int(v) for v in fingerprint.labels)
    return train(config, slices, labels, plan, out_dir, fingerprint=fingerprint.to_dict(), log=log, progress=progress)
