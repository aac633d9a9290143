"""What every GT-free QC model offers the dataset-level driver, and how a model directory is loaded.

A QC model here is a *pseudo-ground-truth generator*: given preprocessed 2D slices (image,
segmentation to check, slice-to-volume ratio) it returns ``samples`` plausible ground truths per
slice. Any segqc metric of (segmentation, pGT) then estimates the segmentation's quality. The
driver (:mod:`segqc.qc.inference`) does everything else — preprocessing with the model's plan,
restoring pGTs to the input grid, metrics, worklists — identically for every method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segqc.fingerprint.preprocessing import PreprocessingPlan
from segqc.training.checkpoints import read_checkpoint_meta

# images (B, C, H, W) float32, segmentations (B, H, W) int, ratios (B,), samples, steps, seed
# -> pGT label maps (samples, B, H, W)
GenerateFn = Callable[[np.ndarray, np.ndarray, np.ndarray, int, "int | None", int], np.ndarray]


@dataclass
class QcModel:
    """A loaded QC model. ``labels``: label values it was trained on (0 included); ``fingerprint``:
    the training dataset's fingerprint (dict) for modality checks; ``batch_size``: slices per call;
    ``default_steps`` / ``default_samples``: what the driver uses when the settings leave them open."""

    method: str
    plan: PreprocessingPlan
    labels: tuple[int, ...]
    fingerprint: Mapping | None
    generate: GenerateFn
    batch_size: int = 16
    default_steps: int | None = None
    default_samples: int = 1


def load_qc_model(model_dir: str | Path, *, device: str = "cpu") -> QcModel:
    """Load any segqc QC model directory (the method is read from its ``config.json`` and looked
    up in :data:`segqc.methods.METHODS`). ``device`` ("cpu", "cuda", "auto"...) is where the model
    runs (the CAE baseline always runs on the CPU)."""
    from segqc.methods import qc_method_of

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists() and (model_dir / "model" / "config.json").exists():
        model_dir = model_dir / "model"  # a training run folder: the model sits in model/
    return qc_method_of(read_checkpoint_meta(model_dir), model_dir).load_qc_model(model_dir, device=device)
