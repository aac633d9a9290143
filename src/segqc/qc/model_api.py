"""What every GT-free QC model offers the dataset-level driver, and how a model directory is loaded.

A QC model is one of two kinds:

* a *pseudo-ground-truth generator* (nnQC, the CAE): given preprocessed 2D slices (image,
  segmentation to check, slice-to-volume ratio) it returns ``samples`` plausible ground truths per
  slice (:data:`GenerateFn`). Any segqc metric of (segmentation, pGT) then estimates the
  segmentation's quality;
* a *quality regressor* (QCResUNet): given the preprocessed slices of one volume it returns the
  estimated Dice and NSD per class and per-class error probability maps (:data:`AssessFn`).

The driver (:mod:`segqc.qc.inference`) does everything else — preprocessing with the model's plan,
restoring pGTs or error maps to the input grid, metrics, worklists — identically for every method.
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
class Assessment:
    """What a quality regressor says of one volume (M ensemble members, C classes):
    ``dice`` and ``nsd`` ``(E, C + 1)`` in [0, 1], one row per estimate (a member's pass: E = M
    times the passes per member) — index 0 the whole segmentation (multi-class Dice; NSD: the
    mean over the classes), 1..C the classes in the order of the model's labels;
    ``errors`` ``(M, C, n, H, W)`` the probability (0-1) that each voxel of each slice is wrong
    for each class (prediction and ground truth disagree), or None for a model without error maps;
    ``error_threshold`` ``(M, C)`` (or ``(C,)`` for every member): the probability from which a
    member marks a voxel wrong (None: 0.5); ``error_fusion``: how the members' maps make one,
    :func:`fuse_error_maps`; ``outside_errors`` ``(C,)`` bool: mark each class's segmentation
    voxels outside the model's crop window wrong (the maps cover only the window; None: mark
    nothing there)."""

    dice: np.ndarray
    nsd: np.ndarray
    errors: np.ndarray | None
    error_threshold: np.ndarray | None = None
    outside_errors: np.ndarray | None = None
    error_fusion: str = "vote"


def fuse_error_maps(errors: np.ndarray, thresholds: np.ndarray | None = None, fusion: str = "vote") -> np.ndarray:
    """One binary error map per class ``(C, ...)`` from M members' error probabilities
    ``errors`` ``(M, C, ...)`` and their thresholds ``(M, C)`` (or ``(C,)``, shared; None: 0.5).

    ``vote`` (the QCResUNet paper's ensemble): a voxel is wrong for a class where more than half of
    the members mark it (probability at or above the member's own threshold); where exactly half
    do (an even number of members), the ``mean`` rule decides. ``mean``: the members' mean
    probability at or above their mean threshold. One member: its own map either way."""
    errors = np.asarray(errors)
    members, classes = errors.shape[:2]
    shape = (members, classes) + (1,) * (errors.ndim - 2)
    limits = np.broadcast_to(np.asarray(0.5 if thresholds is None else thresholds, dtype=float),
                             (members, classes)).reshape(shape)
    by_mean = errors.mean(axis=0) >= limits.mean(axis=0)
    if fusion == "mean":
        return np.asarray(by_mean)
    if fusion != "vote":
        raise ValueError(f"fusion must be vote or mean, got {fusion!r}")
    votes = (errors >= limits).sum(axis=0) * 2
    return np.asarray(np.where(votes == members, by_mean, votes > members))


# images (n, C, H, W) float32 and segmentations (n, H, W) int of ONE volume, ratios (n,),
# samples (passes per member; None: the model's default) -> Assessment
AssessFn = Callable[[np.ndarray, np.ndarray, np.ndarray, "int | None"], Assessment]


@dataclass
class QcModel:
    """A loaded QC model. ``labels``: label values it was trained on (0 included); ``fingerprint``:
    the training dataset's fingerprint (dict) for modality checks; ``generate`` (pGT generators)
    or ``assess`` (quality regressors): exactly one is set; ``batch_size``: slices per
    ``generate`` call; ``default_steps`` / ``default_samples``: what the driver uses when the
    settings leave them open (a regressor's samples: its passes per member, e.g. QCResUNet's
    mirrored passes); ``sample_choices``: the only sample counts the model takes (None: any);
    ``metrics``: what a regressor estimates (``dice``, ``nsd``);
    ``tolerance_mm``: the NSD tolerance a regressor was trained for (its NSD estimates hold at
    that tolerance only); ``classes``: a regressor's classes as (label in the tables, name, member
    label values), in the order of its outputs (None: every non-zero label value);
    ``spatial_dims``: what the model was trained on, 3 (volumes of several slices) or 2 (single
    images), and so the only input it takes (None: read off the fingerprint,
    :func:`training_dims`; unknown without one)."""

    method: str
    plan: PreprocessingPlan
    labels: tuple[int, ...]
    fingerprint: Mapping | None
    generate: GenerateFn | None = None
    batch_size: int = 16
    default_steps: int | None = None
    default_samples: int = 1
    sample_choices: tuple[int, ...] | None = None
    assess: AssessFn | None = None
    metrics: tuple[str, ...] = ()
    tolerance_mm: float | None = None
    classes: tuple[tuple[str, str, tuple[int, ...]], ...] | None = None
    spatial_dims: int | None = None

    def __post_init__(self) -> None:
        if (self.generate is None) == (self.assess is None):
            raise ValueError("a QC model needs exactly one of generate (pGT generator) and assess (regressor)")
        if self.spatial_dims is None:
            self.spatial_dims = training_dims(self.fingerprint)
        if self.spatial_dims not in (None, 2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")


def training_dims(fingerprint: Mapping | None) -> int | None:
    """The dimensionality (2 or 3) of the images of the dataset a fingerprint describes (its
    median spacing has one entry per axis), or None where the fingerprint does not say."""
    spacing = (fingerprint or {}).get("median_spacing")
    if isinstance(spacing, (list, tuple)) and len(spacing) in (2, 3):
        return len(spacing)
    return None


def load_qc_model(model_dir: str | Path, *, device: str = "cpu") -> QcModel:
    """Load any segqc QC model directory (the method is read from its ``config.json`` and looked
    up in :data:`segqc.methods.METHODS`). ``device`` ("cpu", "cuda", "auto"...) is where the model
    runs (the CAE baseline always runs on the CPU)."""
    from segqc.methods import check_model_folder, qc_method_of

    model_dir = Path(model_dir)
    check_model_folder(model_dir)
    if not (model_dir / "config.json").exists() and (model_dir / "model" / "config.json").exists():
        model_dir = model_dir / "model"  # a training run folder: the model sits in model/
    model = qc_method_of(read_checkpoint_meta(model_dir), model_dir).load_qc_model(model_dir, device=device)
    _check_fingerprint(model.fingerprint, model_dir)
    return model


def _check_fingerprint(fingerprint: Mapping | None, model_dir: Path) -> None:
    """A model's ``fingerprint.json`` must be a segqc dataset fingerprint: a :class:`CheckpointError`
    naming the file otherwise (label names and the intensity, spacing and dimension checks read
    it). A model without one loads; :func:`missing_fingerprint_warning` says what that costs."""
    from segqc.errors import InputError
    from segqc.fingerprint.fingerprint import DatasetFingerprint
    from segqc.training.checkpoints import CheckpointError

    if fingerprint is None:
        return
    try:
        DatasetFingerprint.from_dict(fingerprint)
    except InputError as error:
        raise CheckpointError(f"{model_dir / 'fingerprint.json'}: {error.problem}") from None


def missing_fingerprint_warning(model: QcModel, model_dir: Path) -> str | None:
    """The warning of a model loaded without ``fingerprint.json`` (None when it has one): which
    checks are off without it."""
    if model.fingerprint is not None:
        return None
    text = ("no fingerprint.json; without it the images' intensities and voxel spacings are not compared with "
            "the training data's")
    if model.spatial_dims is None:
        text += ", nor is it checked that they are 2D or 3D as in training"
    if model.classes is None:
        text += ", and classes are named by their label values"
    return f"{model_dir}: {text}"
