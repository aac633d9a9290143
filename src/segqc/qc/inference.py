"""GT-free quality control of a folder: pseudo ground truths -> estimated metrics -> worklist.

For every case (``IMAGES_DIR/CASE_0000.nii.gz`` ..., ``SEGS_DIR/CASE.nii.gz``) the driver
preprocesses image and segmentation with the model's plan, asks the model for ``samples`` pseudo
ground truths (pGT) per axial slice, restores them to the input grid, and evaluates the
segmentation against the pGT with the segqc metric engine, exactly as it would be evaluated
against a real ground truth (the pGT takes the ground truth's place). With ``samples > 1`` the pGT
is the per-voxel majority over the samples (the *consensus*; it agrees with the ground truth better
than any single sample, and its estimates track the truth better than the mean of the per-sample
estimates — measured in the README), the estimate is the metric against the consensus and
``spread`` the standard deviation of the per-sample estimates — an uncertainty of the estimate that
the nnQC paper does not give. The consensus pGT is what is written to disk.

A case is refused with one line naming its file when its segmentation is not on its image's
voxel grid (shape, spacing, origin, direction), when it has another number of image channels than
the model normalises (an image folder holds one count, so the run is refused, naming the folder,
before any case), or when it is not what the model was trained on (:attr:`QcModel.spatial_dims`:
a model trained on volumes takes volumes of more than one slice, one trained on 2D images single
images). A case whose image intensities (median inside the segmentation) lie far outside the
training fingerprint's, or whose voxel spacing is more than :data:`SPACING_FACTOR` times finer or
coarser than every training case's along an axis, gets a warning naming the image: its
estimates may be wrong. A quality regressor
estimates NSD at its training tolerance only: a ``tolerance_mm`` other than that with ``nsd``
among the metrics is refused; left open (None) it follows the model (pGT generators: 1 mm).

Outputs: ``qc.csv`` (always the columns case, label, label_name, metric, estimate, spread, empty;
``spread`` is empty where a single pass or sample gives none), ``qc_slices.csv``
(per-slice Dice estimates), ``pgt/CASE.nii.gz`` on the input grid (a regressor's error maps:
``errors/CASE.nii.gz``), ``worklist.csv`` (cases from worst estimated quality, with a flag),
``report.json`` (``maps``: the map folders this run wrote). Per-case results are stored under
``cases/`` so an interrupted run continues; maps that this run's cases did not write (another
model's, an earlier run's) are removed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from segqc.config import ConfigBase, register_presets
from segqc.errors import InputError, out_of_memory_as
from segqc.evaluation.config import EvaluationConfig
from segqc.evaluation.label_maps import evaluate_label_maps
from segqc.execution import CaseResult, CaseTask, directory_digest, run_cases
from segqc.fingerprint.fingerprint import to_ras_order
from segqc.fingerprint.preprocessing import (
    OUTSIDE_WINDOW_SHARE,
    PreprocessingPlan,
    outside_window_share,
    preprocess_case,
    read_case_images,
    read_case_label,
    restore_label,
    slice_count,
    window_extent_mm,
    window_mask,
)
from segqc.io.atomic import write_csv_atomic, write_json_atomic
from segqc.io.datasets import Pairing, list_image_files, pair_segmentations, segmentation_files
from segqc.io.geometry import Geometry
from segqc.io.images import Image, blank_image_warning, write_image
from segqc.io.labels import LabelSet
from segqc.metrics.binary import MetricSettings
from segqc.metrics.counts import value_counts
from segqc.metrics.multiclass import multiclass_dice
from segqc.qc.model_api import QcModel, fuse_error_maps, load_qc_model, missing_fingerprint_warning

QC_COLUMNS = ["case", "label", "label_name", "metric", "estimate", "spread", "empty"]


@dataclass(frozen=True)
class QcSettings(ConfigBase):
    """``metrics``: segqc metric names estimated per label (``dice`` is also given for the whole
    map as label ``all``, the QCResUNet multi-class Dice, and ``nsd`` as the mean over the classes
    present in either map); ``samples``: pGTs per slice and
    ``steps``: sampler steps (None: the model's defaults; the ready-made ACDC model: 4 samples of
    5 DDIM steps); ``tolerance_mm``: the NSD tolerance (None: a quality regressor's training
    tolerance, the only one it estimates NSD at, else 1 mm); ``flag_dice``: worklist threshold on
    the estimated multi-class Dice; ``outlier_z``: robust z-score (median/MAD over the batch)
    below which a case is also flagged.
    On the config base: ``QcSettings.preset("default", samples=2)``, ``to_dict``/``from_dict``,
    ``save``/``load``, ``digest``."""

    KIND: ClassVar[str] = "qc"
    LABEL: ClassVar[str] = "QC"

    metrics: tuple[str, ...] = ("dice", "hd95", "nsd")
    samples: int | None = None
    steps: int | None = None
    tolerance_mm: float | None = None
    flag_dice: float = 0.75
    outlier_z: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        from segqc.metrics.registry import parse_metric_names

        names = (self.metrics,) if isinstance(self.metrics, str) else tuple(str(m) for m in self.metrics)
        if not names:
            raise ValueError("metrics: name at least one metric to estimate")
        object.__setattr__(self, "metrics", parse_metric_names(",".join(names)))  # known names, or ValueError
        if self.samples is not None and self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.tolerance_mm is not None and not (math.isfinite(self.tolerance_mm) and self.tolerance_mm > 0):
            raise ValueError(f"tolerance_mm must be a positive number of mm, got {self.tolerance_mm}")
        if not 0.0 <= self.flag_dice <= 1.0:  # also NaN, which would flag nothing
            raise ValueError(f"the Dice flag threshold (--flag-dice) must lie in [0, 1], got {self.flag_dice}")


register_presets(QcSettings, {"default": QcSettings()})


def _check_labels(seg: np.ndarray, model: QcModel, path: Path) -> None:
    present = set(value_counts(seg)[0].tolist())
    unknown = sorted(present - set(model.labels))
    if unknown:
        raise InputError(f"label value(s) {unknown} were not in the QC model's training labels {list(model.labels)}",
                         path)


def _check_channels(image_paths: Sequence[Path], model: QcModel) -> None:
    """One line naming the case's first image file when it has another number of channels than
    the model's plan normalises."""
    needed = len(model.plan.channels)
    if len(image_paths) != needed:
        names = ", ".join(Path(p).name for p in image_paths)
        raise InputError(f"the case has {len(image_paths)} image channel(s) ({names}) but the model needs {needed}",
                         Path(image_paths[0]))


def _check_dimensions(image: Image, model: QcModel) -> None:
    """One line naming the image unless it is what the model was trained on: a model trained on
    volumes takes volumes of more than one slice (a slice has no place in a volume, which the
    models' slice positions and 3D convolutions need), one trained on 2D images single images
    (a volume's estimate would be a mean over its slices, not the volume's)."""
    dims, geometry = model.spatial_dims, image.geometry
    if dims is None:
        return
    slices = slice_count(geometry, model.plan)
    if dims == 3 and slices < 2:
        what = "is 2D" if geometry.ndim == 2 else f"has a single slice (shape {geometry.shape})"
        raise InputError(f"{what} but the model was trained on 3D volumes", image.path)
    if dims == 2 and slices > 1:
        raise InputError(f"is 3D ({slices} slices, shape {geometry.shape}) but the model was trained on 2D images",
                         image.path)


def _check_intensity(image: np.ndarray, seg: np.ndarray, model: QcModel, path: Path) -> str | None:
    """A warning when the raw image intensities inside the segmentation (the fingerprint's
    foreground statistics) look unlike the training data's."""
    if not model.fingerprint:
        return None
    channels = model.fingerprint.get("channels") or []
    if not channels:
        return None
    stats = channels[0].get("intensity") or {}
    low, high = stats.get("percentile_00_5"), stats.get("percentile_99_5")
    if low is None or high is None or not np.isfinite(image).any():
        return None
    region = image[seg > 0] if np.any(seg > 0) else image[image != 0]
    if region.size == 0:
        return None
    median = float(np.median(region))
    width = max(float(high) - float(low), 1e-6)
    if median < float(low) - 0.5 * width or median > float(high) + 0.5 * width:
        return (f"{path}: median intensity {median:.4g} is far outside the training data's "
                f"[{low:.4g}, {high:.4g}] (0.5-99.5 percentiles): is this the same modality?")
    return None


SPACING_FACTOR = 10.0
"""A case's voxel spacing more than this factor below the smallest or above the largest spacing
of the model's training cases, along any axis (RAS order), gets a warning: the model sees the
anatomy at a scale it never saw (e.g. a header written in metres, not millimetres)."""


def _training_spacing_range(fingerprint: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """(smallest, largest) spacing per RAS axis over the fingerprint's training cases (its
    median spacing where the cases do not say), or None where the fingerprint has neither."""
    rows = []
    for case in fingerprint.get("cases") or []:
        spacing, orientation = case.get("spacing"), case.get("orientation")
        if isinstance(spacing, list) and isinstance(orientation, str) and len(orientation) == len(spacing):
            rows.append(to_ras_order(spacing, orientation))
    if not rows and isinstance(fingerprint.get("median_spacing"), list):
        rows.append(tuple(float(v) for v in fingerprint["median_spacing"]))
    if not rows or len({len(r) for r in rows}) != 1:
        return None
    table = np.asarray(rows, dtype=float)
    return table.min(axis=0), table.max(axis=0)


def _spacing_text(values: Sequence[float] | np.ndarray) -> str:
    """Spacings as people write them: ``(1.562, 1.562, 10)``."""
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _check_spacing(geometry: Geometry, model: QcModel, path: Path) -> str | None:
    """A warning when the image's voxel spacing is more than :data:`SPACING_FACTOR` times
    finer or coarser than every training case's along some axis (RAS order)."""
    limits = _training_spacing_range(model.fingerprint) if model.fingerprint else None
    if limits is None or len(limits[0]) != geometry.ndim:
        return None
    low, high = limits
    spacing = np.asarray(to_ras_order(geometry.spacing, geometry.orientation()), dtype=float)
    if np.all(spacing * SPACING_FACTOR >= low) and np.all(spacing <= high * SPACING_FACTOR):
        return None
    trained = _spacing_text(low) if np.array_equal(low, high) else f"{_spacing_text(low)} to {_spacing_text(high)}"
    return (f"{path}: voxel spacing {_spacing_text(spacing)} mm is more than {SPACING_FACTOR:g} times off the "
            f"training data's {trained} mm (RAS axis order): is the header's spacing right?")


def outside_window_warning(share: float, plan: PreprocessingPlan, path: Path) -> str | None:
    """A warning when ``share`` (:func:`~segqc.fingerprint.preprocessing.outside_window_share`) of
    the segmentation's foreground lying beyond the model's window exceeds
    :data:`~segqc.fingerprint.preprocessing.OUTSIDE_WINDOW_SHARE`, else None. A pGT model sees the
    slices cut to ``plan.size`` pixels of ``plan.target_spacing`` around the segmentation's largest
    part (the nnQC paper standardises them by the dataset's median cropped size; the training's
    ``field_of_view`` sets this window); its pGT is background beyond that, so the estimates count
    every segmentation voxel there as wrong, right or not."""
    if not share > OUTSIDE_WINDOW_SHARE:
        return None
    return (f"{path}: {100 * share:.2g} % of the segmentation's foreground lies outside the {window_extent_mm(plan)} "
            "mm window the model sees; its pseudo ground truth is background there, so the estimates count those "
            "voxels as wrong (a model trained with a wider --set field_of_view sees more)")


def majority_vote(samples: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Per-voxel majority of label maps ``(K, ...)`` whose values are among ``labels`` (ascending);
    ties go to the smaller label value."""
    if samples.shape[0] == 1:
        return samples[0]
    values = np.asarray(sorted(labels))
    counts = np.stack([(samples == v).sum(axis=0) for v in values])
    return values[counts.argmax(axis=0)].astype(samples.dtype)


def _label_set(model: QcModel) -> LabelSet:
    """The model's classes, named as in its training dataset's fingerprint (e.g. RV, MYO, LV)."""
    names = (model.fingerprint or {}).get("labels") or {}
    return LabelSet(names={v: str(names.get(str(v), names.get(v, v))) for v in model.labels if v != 0}, known=True)


def qc_case(model: QcModel, case: str, image_paths: Sequence[Path], seg_path: Path,
            settings: QcSettings) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray], Geometry, list[str]]:
    """QC of one case: (estimates table, per-slice table, maps on the input grid — ``pgt`` for a
    pGT generator, ``errors`` for a regressor with error maps —, their geometry, warnings).
    Files the model cannot QC raise one :class:`InputError` naming the file (module docstring)
    before anything is computed."""
    _check_channels(image_paths, model)
    channels = read_case_images(list(image_paths))  # NaN voxels, channels on another grid: refused
    seg_image = read_case_label(seg_path, channels[0])  # on the image's grid, or one line naming it
    _check_dimensions(channels[0], model)
    _check_labels(seg_image.array, model, seg_path)
    raw = channels[0].array
    notes = blank_image_warning(Path(image_paths[0]), raw, "its QC estimate says nothing about the segmentation")
    notes += [w for w in [_check_intensity(raw, seg_image.array, model, Path(image_paths[0])),
                          _check_spacing(channels[0].geometry, model, Path(image_paths[0]))] if w]
    prepared = preprocess_case([c.array for c in channels], channels[0].geometry, model.plan, label=seg_image.array)
    images = np.moveaxis(prepared.image, -1, 0)  # (n, C, H, W)
    segs = np.moveaxis(prepared.required_label(), -1, 0).astype(np.int64)  # (n, H, W)
    ratios = prepared.slice_ratios

    def restore(slices: np.ndarray, dtype: Any = seg_image.array.dtype) -> np.ndarray:
        return restore_label(np.moveaxis(slices, 0, -1).astype(dtype), prepared.transform)

    if model.assess is None:  # a pGT is background beyond the window; a regressor marks such voxels itself
        share = outside_window_share(seg_image.array, window_mask(prepared.transform))
        notes += [w for w in [outside_window_warning(share, model.plan, seg_path)] if w]

    n_samples = settings.samples or model.default_samples
    what = "pass(es)" if model.assess is not None else "pGT sample(s) per slice"
    hint = "; lower --samples" if n_samples > 1 else ""
    with out_of_memory_as(f"ran out of memory with {n_samples} {what}{hint}", Path(image_paths[0])):
        if model.assess is not None:
            estimates, slices, maps = _assess_case(model, case, images, segs, ratios, settings, restore,
                                                   original_seg=seg_image.array)
            return estimates, slices, maps, seg_image.geometry, notes
        pgt_slices = _generate(model, images, segs, ratios, n_samples, settings)  # (K, n, H, W)
    consensus_slices = majority_vote(pgt_slices, model.labels)
    spacing = seg_image.geometry.spacing
    config = EvaluationConfig(metrics=tuple(settings.metrics),
                              settings=MetricSettings(tolerance_mm=nsd_tolerance(model, settings)),
                              label_set=_label_set(model), multiclass_all=True)

    def evaluate(pgt: np.ndarray) -> pd.DataFrame:
        table = evaluate_label_maps(seg_image.array, pgt, spacing, config, case=case)
        return table[table["component"].isna()]

    pgt = restore(consensus_slices)
    estimates = evaluate(pgt).rename(columns={"value": "estimate"})
    estimates["spread"] = math.nan
    if n_samples > 1:
        stacked = pd.concat([evaluate(restore(pgt_slices[k])) for k in range(n_samples)])
        spread = stacked.groupby(["label", "metric"], sort=False)["value"].std(ddof=1)
        estimates["spread"] = [spread.get((label, metric), math.nan)
                               for label, metric in zip(estimates["label"], estimates["metric"])]
    estimates["empty"] = estimates["empty"].fillna("").astype(str)
    estimates["case"] = case
    slice_rows = [{"case": case, "slice": z, "slice_ratio": float(ratios[z]), "label": "all", "metric": "dice",
                   "estimate": multiclass_dice(segs[z], consensus_slices[z]).value} for z in range(segs.shape[0])]
    slices = pd.DataFrame(slice_rows, columns=SLICE_COLUMNS)
    return estimates[QC_COLUMNS].reset_index(drop=True), slices, {"pgt": pgt}, seg_image.geometry, notes


SLICE_COLUMNS = ["case", "slice", "slice_ratio", "label", "metric", "estimate"]


def _generate(model: QcModel, images: np.ndarray, segs: np.ndarray, ratios: np.ndarray, n_samples: int,
              settings: QcSettings) -> np.ndarray:
    """A pGT generator's ``n_samples`` pseudo ground truths of every slice ``(K, n, H, W)``, in
    batches of the model's ``batch_size`` slices (each seeded by its first slice)."""
    assert model.generate is not None
    chunks = []
    for start in range(0, images.shape[0], model.batch_size):
        sl = slice(start, start + model.batch_size)
        chunks.append(model.generate(images[sl], segs[sl], ratios[sl], n_samples,
                                     settings.steps, settings.seed + start))
    return np.concatenate(chunks, axis=1)


def error_bitmask(errors: np.ndarray) -> np.ndarray:
    """One label map of per-class binary error maps ``(C, ...)``: voxel value = the sum of
    2^(c-1) over the classes c = 1..C marked wrong there (0: no error; ACDC: 1 RV, 2 MYO, 4 LV,
    3 = RV and MYO, ...). uint8 up to 8 classes, else uint16 / uint32."""
    n = errors.shape[0]
    dtype = np.uint8 if n <= 8 else np.uint16 if n <= 16 else np.uint32
    out = np.zeros(errors.shape[1:], dtype=dtype)
    for c in range(n):
        out |= (errors[c] > 0).astype(dtype) << dtype(c)
    return out


def implied_slice_dice(segs: np.ndarray, errors: np.ndarray, classes: Sequence[Sequence[int]]) -> np.ndarray:
    """Per-slice Dice over all classes of ``segs`` ``(n, H, W)`` against the ground truth its
    binary error maps ``errors`` ``(C, n, H, W)`` imply (class c's truth = the segmentation's
    class-c mask with the error voxels flipped): 2 Σ_c |S_c ∩ G_c| / Σ_c (|S_c| + |G_c|) per slice
    (for label classes the multi-class Dice); ``classes``: the label values of each class; 1.0
    for a slice where both are empty."""
    inter = np.zeros(segs.shape[0])
    total = np.zeros(segs.shape[0])
    for c, members in enumerate(classes):
        s = np.isin(segs, members)
        g = s ^ (errors[c] > 0)
        inter += (s & g).sum(axis=(1, 2))
        total += s.sum(axis=(1, 2)) + g.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * inter / np.maximum(total, 1), 1.0)


def _assess_case(model: QcModel, case: str, images: np.ndarray, segs: np.ndarray, ratios: np.ndarray,
                 settings: QcSettings, restore, *, original_seg: np.ndarray
                 ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Estimates, per-slice table and error map of one volume from a quality regressor: the mean
    of its estimates (ensemble members times passes, ``settings.samples`` or the model's default)
    is the estimate, their standard deviation the spread. The error
    map covers the model's window; beyond it, ``original_seg``'s voxels of the classes the model
    says so of (``outside_errors``) are marked wrong."""
    assert model.assess is not None
    assessment = model.assess(images, segs, ratios, settings.samples or model.default_samples)
    names = _label_set(model).names
    classes = model.classes or tuple((str(v), names[v], (v,)) for v in model.labels if v != 0)
    spread_of = (lambda a: np.std(a, axis=0, ddof=1)) if assessment.dice.shape[0] > 1 else (
        lambda a: np.full(a.shape[1:], math.nan))
    rows = []
    for metric, values in (("dice", assessment.dice), ("nsd", assessment.nsd)):
        if metric not in settings.metrics or metric not in model.metrics:
            continue
        mean, spread = values.mean(axis=0), spread_of(values)
        for index, (label, name) in enumerate([("all", "all"), *((c[0], c[1]) for c in classes)]):
            rows.append({"case": case, "label": label, "label_name": name,
                         "metric": metric, "estimate": float(mean[index]), "spread": float(spread[index]),
                         "empty": ""})
    estimates = pd.DataFrame(rows, columns=QC_COLUMNS)
    maps: dict[str, np.ndarray] = {}
    if assessment.errors is not None:
        binary = fuse_error_maps(assessment.errors, assessment.error_threshold, assessment.error_fusion)  # (C, n, H, W)
        bitmask = error_bitmask(binary)
        restored = restore(bitmask, bitmask.dtype)  # more than 8 classes need more than 8 bits
        if assessment.outside_errors is not None and np.any(assessment.outside_errors):
            outside = restore(np.ones(bitmask.shape, dtype=np.uint8), np.uint8) == 0  # beyond the crop window
            for bit, (flag, cls) in enumerate(zip(assessment.outside_errors, classes)):
                if flag:
                    restored[outside & np.isin(original_seg, cls[2])] |= restored.dtype.type(1 << bit)
        maps["errors"] = restored
        per_slice = implied_slice_dice(segs, binary, [c[2] for c in classes])
    else:
        per_slice = np.full(segs.shape[0], math.nan)
    slices = pd.DataFrame([{"case": case, "slice": z, "slice_ratio": float(ratios[z]), "label": "all",
                            "metric": "dice", "estimate": float(per_slice[z])} for z in range(segs.shape[0])],
                          columns=SLICE_COLUMNS)
    return estimates, slices, maps


def _run_case(task: CaseTask, model_dir: Path, settings: QcSettings, out_dir: Path,
              model: QcModel | None = None, digest: str = "") -> CaseResult:
    model = model or _cached_model(model_dir, digest)
    seg_path = task.path("seg")
    assert seg_path is not None
    estimates, slices, maps, geometry, notes = qc_case(model, task.case, task.inputs["image"], seg_path, settings)
    files = []
    for name, array in maps.items():  # pgt/ (pGT generators), errors/ (regressors)
        files.append(f"{name}/{task.case}.nii.gz")
        write_image(out_dir / files[-1], array, geometry)
    return CaseResult(table=estimates, extra={"slices": slices}, warnings=notes, files=files)


_MODEL_CACHE: dict[tuple[str, str], QcModel] = {}


def _cached_model(model_dir: Path, digest: str) -> QcModel:
    """The model of a worker process, loaded once per folder and content (``digest``: a Dask
    worker outlives a run, and a folder whose weights were replaced is another model)."""
    key = (str(Path(model_dir).resolve()), digest)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = load_qc_model(model_dir)
    return _MODEL_CACHE[key]


def qc_tasks(images_dir: Path, segs_dir: Path) -> tuple[list[CaseTask], Pairing]:
    """One task per segmentation with an image: id = the segmentation's id (its case id, or with a
    ``manifest.csv`` of ``segqc degrade`` its file stem), inputs ``image`` (channel files) and
    ``seg``; the pairing lists segmentations without an image (``extra``)."""
    images = list_image_files(images_dir)
    pairing = pair_segmentations(segmentation_files(segs_dir), images)
    tasks = [CaseTask(sid, {"image": tuple(image_paths), "seg": (seg_path,)}, payload=case)
             for sid, case, seg_path, image_paths in pairing.matched]
    return tasks, pairing


def worklist(table: pd.DataFrame, settings: QcSettings) -> pd.DataFrame:
    """Cases sorted from worst estimated multi-class Dice, flagged below ``flag_dice`` or as a
    robust low outlier (z = (x - median) / (1.4826 MAD) < -outlier_z)."""
    overall = table[(table["label"] == "all") & (table["metric"] == "dice")][["case", "estimate", "spread"]]
    overall = overall.rename(columns={"estimate": "dice_estimate", "spread": "dice_spread"}).copy()
    values = overall["dice_estimate"].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]  # NaN estimates (nothing to compare) are flagged below
    median = float(np.median(finite)) if finite.size else math.nan
    mad = 1.4826 * float(np.median(np.abs(finite - median))) if finite.size else math.nan
    z = (values - median) / mad if np.isfinite(mad) and mad > 0 else np.zeros_like(values)
    overall["robust_z"] = z
    reasons = []
    for value, score in zip(values, z):
        why = []
        if not np.isfinite(value) or value < settings.flag_dice:
            why.append(f"estimated Dice < {settings.flag_dice}")
        if score < -settings.outlier_z:
            why.append(f"outlier (robust z < -{settings.outlier_z})")
        reasons.append("; ".join(why))
    overall["flag"] = [bool(r) for r in reasons]
    overall["reason"] = reasons
    return overall.sort_values("dice_estimate", na_position="first").reset_index(drop=True)


def nsd_tolerance(model: QcModel, settings: QcSettings, model_dir: Path | None = None) -> float:
    """The NSD tolerance (mm) of a run: ``settings.tolerance_mm``, or where it is None a quality
    regressor's training tolerance (pGT generators: 1 mm). A regressor estimates NSD at its
    training tolerance only: another tolerance with ``nsd`` among the metrics is an
    :class:`InputError` naming ``model_dir`` rather than an estimate labelled with a tolerance it
    was not made for."""
    trained = model.tolerance_mm if model.assess is not None else None
    if trained is None:
        return 1.0 if settings.tolerance_mm is None else float(settings.tolerance_mm)
    asked = settings.tolerance_mm
    if (asked is not None and not math.isclose(asked, trained, rel_tol=1e-9, abs_tol=1e-9)
            and "nsd" in settings.metrics and "nsd" in model.metrics):
        raise InputError(f"the {model.method} model estimates NSD at its training tolerance of {trained:g} mm only, "
                         f"not --tolerance {asked:g} (leave --tolerance out, or nsd out of --metrics)", model_dir)
    return float(trained)


def _check_estimable(model: QcModel, settings: QcSettings, model_dir: Path) -> None:
    """A quality regressor estimates its own metrics only (QCResUNet: Dice and NSD): settings
    naming none of them are an :class:`InputError` naming ``model_dir`` before any case runs,
    rather than a run that writes an empty table. Some of them: the rest is a warning of the
    run."""
    if model.assess is None or any(m in model.metrics for m in settings.metrics):
        return
    raise InputError(f"the {model.method} model estimates {', '.join(model.metrics)} only, not "
                     f"{', '.join(settings.metrics)}; choose --metrics among {', '.join(model.metrics)}", model_dir)


def model_directory(model_dir: str | Path) -> Path:
    """The folder holding the model's ``config.json`` (a training run's ``model/`` subfolder)."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists() and (model_dir / "model" / "config.json").exists():
        return model_dir / "model"
    return model_dir


MAP_KINDS = ("pgt", "errors")
"""The map folders of a QC output: pseudo ground truths (pGT generators), error maps (regressors)."""


def run_map_kinds(out_dir: Path, cases: Iterable[str]) -> list[str]:
    """The map folders (:data:`MAP_KINDS`) that hold a map (``KIND/CASE.nii.gz``) of one of
    ``cases`` (this run's finished cases) after the run. The case engine has already removed the
    maps that no finished case of this run wrote (another model's, an earlier run's, a case that
    failed now); a folder holding only files segqc did not write is not named."""
    cases = list(cases)
    return [kind for kind in MAP_KINDS if any((out_dir / kind / f"{case}.nii.gz").is_file() for case in cases)]


def qc_folder(model_dir: str | Path, images_dir: str | Path, segs_dir: str | Path, out_dir: str | Path, *,
              settings: QcSettings | None = None, jobs: int = 1, scheduler: str | None = None,
              progress: bool = False, model: QcModel | None = None,
              device: str = "cpu") -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """QC every segmentation in ``segs_dir``; returns (qc table, worklist, report dict) and writes
    the files of the module docstring. ``model`` (already loaded) overrides ``model_dir``.
    ``device``: where the model samples ("cpu", "cuda", "auto"); any other device than the CPU
    runs the cases in this process (``jobs`` then only matters for the CPU). With ``jobs`` > 1
    (0 = one per core) the cases run in that many worker processes, each with its share of the
    cores as torch threads; ``scheduler``: a Dask scheduler address. A rerun reuses a case only
    when the settings, the content of its image and segmentation files and the model weights are
    unchanged. Raises :class:`InputError` when no segmentation has an image, when the cases have
    another number of image channels than the model needs, for ``samples`` the model cannot run, for
    ``metrics`` of which a quality regressor estimates none, and for a
    ``tolerance_mm`` a quality regressor cannot estimate NSD at (:func:`nsd_tolerance`; the
    report's ``settings`` hold the tolerance used)."""
    settings = settings or QcSettings()
    model_dir, out_dir = model_directory(model_dir), Path(out_dir)
    loaded = model or load_qc_model(model_dir, device=device)
    settings = dataclasses.replace(settings, tolerance_mm=nsd_tolerance(loaded, settings, model_dir))
    if settings.samples is not None and loaded.sample_choices and settings.samples not in loaded.sample_choices:
        choices = [str(c) for c in loaded.sample_choices]
        allowed = choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"
        raise InputError(f"the {loaded.method} model takes --samples {allowed} (passes per volume), "
                         f"not {settings.samples}", model_dir)
    _check_estimable(loaded, settings, model_dir)
    tasks, pairing = qc_tasks(Path(images_dir), Path(segs_dir))
    if not tasks:
        if not pairing.matched and not pairing.extra:
            raise InputError("holds no segmentations (CASE.nii.gz)", segs_dir)
        raise InputError(f"no segmentation has an image (CASE_0000...) in {images_dir}", segs_dir)
    needed = len(loaded.plan.channels)
    channels = sorted({len(task.inputs["image"]) for task in tasks})  # one count: folders mix none
    if channels != [needed]:  # the folder is not for this model: before any case
        raise InputError(f"cases have {channels} channel(s) but the model needs {needed}", images_dir)
    in_process = (jobs == 1 and scheduler is None) or model is not None or device != "cpu"
    digest = directory_digest(model_dir)
    work = partial(_run_case, model_dir=model_dir, settings=settings, out_dir=out_dir,
                   model=loaded if in_process else None, digest=digest)
    report = run_cases(work, tasks, out_dir, settings={"qc": settings.to_dict(), "method": loaded.method},
                       extra_digest=digest, jobs=1 if in_process else jobs,
                       scheduler=None if in_process else scheduler, progress=progress, description="qc")
    table = report.table if len(report.table) else pd.DataFrame(columns=QC_COLUMNS)
    slices = report.extra.get("slices", pd.DataFrame())
    work_list = worklist(table, settings)
    write_csv_atomic(out_dir / "qc.csv", table)
    write_csv_atomic(out_dir / "qc_slices.csv", slices)
    write_csv_atomic(out_dir / "worklist.csv", work_list)
    ignored = [f"{path}: ignored ({why})" for path, why in pairing.ignored]
    ignored += [w for w in [missing_fingerprint_warning(loaded, model_dir)] if w]
    if pairing.missing:  # images of the folder that no segmentation came with
        shown = ", ".join(case for case, _ in pairing.missing[:3]) + (", ..." if len(pairing.missing) > 3 else "")
        ignored.append(f"{len(pairing.missing)} image(s) of {images_dir} have no segmentation in {segs_dir} and "
                       f"were not checked ({shown})")
    if loaded.assess is not None and settings.steps is not None:
        ignored.append(f"the {loaded.method} model estimates in one pass and takes no sampler steps; --steps "
                       f"{settings.steps} was ignored")
    if loaded.assess is not None and settings.metrics != QcSettings().metrics:  # asked for, not the default
        lacking = [m for m in settings.metrics if m not in loaded.metrics]
        if lacking:
            ignored.append(f"the {loaded.method} model estimates {', '.join(loaded.metrics)} only; "
                           f"not {', '.join(lacking)}")
    notes = ignored + report.warnings
    maps = run_map_kinds(out_dir, report.done)
    result: dict[str, Any] = {"cases": report.done, "failed": report.failed, "failure_kinds": report.failure_kinds,
              "reused": report.reused, "missing_image": [sid for sid, _ in pairing.extra],
              "missing_segmentation": [case for case, _ in pairing.missing], "warnings": notes,
              "settings": settings.to_dict(), "method": loaded.method, "model": str(model_dir),
              "labels": [int(v) for v in loaded.labels],
              "inputs": report.inputs, "maps": maps}
    if loaded.classes is not None:
        result["classes"] = [{"label": c[0], "name": c[1], "values": list(c[2])} for c in loaded.classes]
    write_json_atomic(out_dir / "report.json", result)
    result["run"] = report  # the engine's RunReport (not in report.json)
    result["notes"] = ignored  # the driver's own warnings (ignored files)
    return table, work_list, result
