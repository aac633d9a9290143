"""Training QCResUNet: the training data, and one stage per ensemble member on the shared stage runner.

Data: imperfect segmentations of the training volumes (``segqc degrade`` of their ground truths,
and real ones such as ``segqc zoo predict`` outputs) with their true quality (Dice and NSD per
class and over all classes) and their per-class error maps. Every segmentation is preprocessed
exactly as the QC driver will preprocess a segmentation to check (the model's plan, the crop
window placed by that segmentation), the image with it; the ground truth goes through the same
transform. The true Dice and NSD are computed on the original grid with segqc's metric engine
(NSD at the config's tolerance in mm), so the targets are the numbers ``segqc evaluate``
reports. Error-map targets are made per batch from the preprocessed segmentation and ground
truth (class c is wrong where exactly one of them is c).

Training: every epoch draws ``samples_per_epoch`` segmentations evenly over the equal Dice bins
of their true multi-class Dice (QCResUNet §2.2: re-drawn every epoch, with replacement inside a bin that
holds fewer; the draw of epoch e depends only on (seed, member, e), so a resumed run draws the
same). A batch is padded along the slice axis to its deepest volume (rounded up to the network's
size multiple; zeros: background image and query); volumes deeper than ``max_depth`` are cropped
around the query's foreground. Augmentation: in-plane flips, Gaussian noise and a gamma change of
the image (the paper also rotates and scales; not here). Loss: MAE(Dice) + MAE(NSD) +
λ (Dice + BCE) on the error maps. Adam with weight decay; the learning rate is ``lr ·
lr_decay^epoch``, at least ``min_lr``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segqc.errors import InputError
from segqc.io.datasets import Dataset
from segqc.qc.qcresunet.config import QcResUNetConfig, resolve_kernels, resolve_strides
from segqc.qc.qcresunet.model import QcResUNet, qcresunet_loss
from segqc.training import save_checkpoint
from segqc.training.cases import NO_FOREGROUND, extra_segmentation_files
from segqc.training.precision import autocast, resolve_precision, shield_conv3d
from segqc.training.stages import (
    Stage,
    arrays_crc32,
    check_training_folder,
    run_stage,
    start_run,
    step_generators,
)

__all__ = ["METHOD", "THRESHOLD_GRID", "QcClass", "QcResUNetData", "add_readout", "best_error_thresholds",
           "build_network", "build_readout_data", "build_training_data", "class_masks", "dataset_classes",
           "epoch_order", "fit_readout", "make_batch", "prepare_samples", "quality_from_degrade_row", "query_channels",
           "readout_passes", "threshold_counts", "train", "train_from_dataset", "true_quality", "uses_readout"]

METHOD = "qcresunet"

QcClass = tuple[str, str, tuple[int, ...]]
"""One class QCResUNet assesses: its label in the QC tables (``"2"`` or a region name), its name
and the label values it is made of (one value, or a region's members)."""


def dataset_classes(info: Any, labels: Sequence[int], mode: str = "auto") -> tuple[QcClass, ...]:
    """The classes of a dataset (:class:`~segqc.io.datasets.DatasetInfo`): every non-zero label
    value (named as in ``dataset.json``), or its ``regions`` (``mode`` regions, or auto when it
    has some)."""
    regions = dict(getattr(info, "regions", {}) or {})
    if mode == "regions" and not regions:
        raise InputError("classes=regions, but dataset.json defines no regions", getattr(info, "path", None))
    if regions and mode in ("auto", "regions"):
        return tuple((str(name), str(name), tuple(int(v) for v in members)) for name, members in regions.items())
    names = dict(getattr(info, "labels", {}) or {})
    return tuple((str(v), str(names.get(v, v)), (int(v),)) for v in labels if v != 0)


def class_masks(seg: torch.Tensor, classes: Sequence[QcClass]) -> torch.Tensor:
    """``(B, K, ...)`` bool: voxels of ``seg`` (label values) in each class."""
    return torch.stack([torch.isin(seg, torch.tensor(c[2], dtype=seg.dtype, device=seg.device))
                        for c in classes], dim=1)


def query_channels(seg: torch.Tensor, classes: Sequence[QcClass]) -> torch.Tensor:
    """The query the network sees, ``(B, K + 1, ...)`` float: background, then each class's mask
    (one-hot for label classes; overlapping for regions)."""
    return torch.cat([(seg == 0).unsqueeze(1), class_masks(seg, classes)], dim=1).float()


@dataclass
class QcResUNetData:
    """``images[i]`` ``(C, n_i, S, S)`` float16, ``segs[i]`` / ``gts[i]`` ``(n_i, S, S)`` label values
    of sample i (one imperfect segmentation of one volume); ``targets`` ``(N, 2, K + 1)``: Dice and
    NSD over all classes (index 0) and per class (1..K) of ``classes`` (:data:`QcClass`);
    ``labels``: the label values (0 included); ``sources[i]``: where sample i came from
    (``degraded`` or the folder of real segmentations) and ``cases[i]`` its case;
    ``outside[i]`` ``(K, 2)``: per class the segmentation's voxels outside the network's
    window (on the original grid) and how many of them are wrong (:func:`outside_window_counts`)."""

    images: list[np.ndarray]
    segs: list[np.ndarray]
    gts: list[np.ndarray]
    targets: np.ndarray
    cases: list[str]
    sources: list[str]
    labels: tuple[int, ...]
    classes: tuple[QcClass, ...]
    plan: Any
    fingerprint: dict[str, Any]
    slice_spacing: float
    ndim: int
    notes: list[str] = field(default_factory=list)
    outside: list[np.ndarray] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return len(self.segs)

    @property
    def image_channels(self) -> int:
        return int(self.images[0].shape[0])

    def summary(self) -> dict[str, Any]:
        """What identifies the data in the run record (a rerun on other data is refused)."""
        dice = self.targets[:, 0, 0]
        histogram = np.histogram(np.nan_to_num(dice, nan=-1.0), bins=np.linspace(0, 1, 11))[0]
        return {"samples": self.n_samples, "cases": len(set(self.cases)), "labels": list(self.labels),
                "classes": [list(c[:2]) + [list(c[2])] for c in self.classes],
                "image_channels": self.image_channels, "size": int(self.plan.size),
                "dice_histogram": [int(h) for h in histogram], "sources": sorted(set(self.sources)),
                "crc32": arrays_crc32([*self.images, *self.segs, *self.gts, self.targets])}


def true_quality(seg: np.ndarray, gt: np.ndarray, spacing: Sequence[float], classes: Sequence[Sequence[int]], *,
                 tolerance_mm: float) -> np.ndarray:
    """``(2, K + 1)``: Dice and NSD (tolerance in mm) of ``seg`` against ``gt`` — index 0 over
    all classes (the multi-class Dice of the label maps, QCResUNet appendix A; NSD: mean over the
    classes present in either map), then per class (``classes``: the label values of each). A
    class absent from both maps scores 1 (nothing to get wrong); two empty maps score 1."""
    from segqc.metrics.binary import MetricSettings, compare_masks
    from segqc.metrics.masks import bounding_box
    from segqc.metrics.multiclass import multiclass_dice

    settings = MetricSettings(tolerance_mm=tolerance_mm)
    per_class: list[tuple[float, float] | None] = []
    for members in classes:
        s, g = np.isin(seg, members), np.isin(gt, members)
        box = bounding_box(s | g)
        if box is None:
            per_class.append(None)
            continue
        # the metrics of a tight crop are those of the whole grid
        dice, nsd = compare_masks(s[box], g[box], spacing, metrics=("dice", "nsd"), settings=settings)
        per_class.append((float(dice.value), float(nsd.value)))
    both_empty = not (seg > 0).any() and not (gt > 0).any()
    return _quality_table(per_class, None if both_empty else multiclass_dice(seg, gt).value)


def _quality_table(per_class: Sequence[tuple[float, float] | None], multiclass: float | None) -> np.ndarray:
    """:func:`true_quality`'s table from each class's (Dice, NSD) — None for a class absent from
    both maps, which scores 1 — and the multi-class Dice (None: both maps empty, 1). A non-finite
    NSD of a present class scores 0; the NSD over all classes is the mean over the present ones."""
    out = np.ones((2, len(per_class) + 1))
    for k, pair in enumerate(per_class, start=1):
        if pair is not None:
            out[0, k] = pair[0]
            out[1, k] = pair[1] if math.isfinite(pair[1]) else 0.0
    present = [k for k, pair in enumerate(per_class, start=1) if pair is not None]
    if multiclass is not None:
        out[0, 0] = multiclass
    out[1, 0] = float(np.mean(out[1, present])) if present else 1.0
    return out


def quality_from_degrade_row(row: dict[str, Any], seg: np.ndarray, gt: np.ndarray,
                             classes: Sequence[Sequence[int]]) -> np.ndarray | None:
    """:func:`true_quality` of a ``segqc degrade`` map read off its manifest row (``dice``,
    ``dice_L``, ``nsd_L``: the same metrics at the same tolerance, computed when the map was made),
    so the surface distances are not computed twice; presence of each class from ``seg`` and
    ``gt``. None when a class is not a single label value, the row lacks it, or a Dice in the row
    is not finite: the caller then computes the metrics."""
    per_class: list[tuple[float, float] | None] = []
    for members in classes:
        value = members[0]
        if len(members) != 1 or f"dice_{value}" not in row or f"nsd_{value}" not in row:
            return None
        if not (np.any(seg == value) or np.any(gt == value)):
            per_class.append(None)
            continue
        per_class.append((float(row[f"dice_{value}"]), float(row[f"nsd_{value}"])))
    both_empty = not (seg > 0).any() and not (gt > 0).any()
    multiclass = None if both_empty else float(row.get("dice", math.nan))
    if any(not math.isfinite(pair[0]) for pair in per_class if pair is not None) or not (
            multiclass is None or math.isfinite(multiclass)):
        return None
    return _quality_table(per_class, multiclass)


def _prepare_case(item: tuple[str, list[Path], Path, list[tuple[str, Path, dict[str, Any] | None]]], *,
                  plan: Any, classes: tuple[tuple[int, ...], ...], tolerance_mm: float) -> dict[str, Any]:
    """All samples of one case: preprocessed image, segmentation and ground truth per
    segmentation, and the true quality on the original grid (read off the ``segqc degrade``
    manifest row where the segmentation has one, :func:`quality_from_degrade_row`)."""
    from segqc.fingerprint.preprocessing import (
        preprocess_case,
        read_case_images,
        read_case_label,
        transform_label,
        window_mask,
    )

    case, image_paths, gt_path, segs = item
    images = read_case_images(image_paths)  # once per case, not once per segmentation
    channels = [image.array for image in images]
    gt = read_case_label(gt_path, images[0])
    out: dict[str, Any] = {"images": [], "segs": [], "gts": [], "targets": [], "sources": [], "outside": []}
    for source, seg_path, row in segs:
        seg = read_case_label(seg_path, images[0])
        prepared = preprocess_case(channels, images[0].geometry, plan, label=seg.array)
        image = np.moveaxis(prepared.image, -1, 1)  # (C, n, S, S)
        out["images"].append(image.astype(np.float16))
        out["segs"].append(np.moveaxis(prepared.required_label(), -1, 0).astype(np.int16))
        out["gts"].append(np.moveaxis(transform_label(gt.array, prepared.transform), -1, 0).astype(np.int16))
        known = None if row is None else quality_from_degrade_row(row, seg.array, gt.array, classes)
        out["targets"].append(known if known is not None else
                              true_quality(seg.array, gt.array, gt.geometry.spacing, classes,
                                           tolerance_mm=tolerance_mm))
        out["sources"].append(source)
        out["outside"].append(outside_window_counts(seg.array, gt.array, window_mask(prepared.transform), classes))
    return out


def outside_window_counts(seg: np.ndarray, gt: np.ndarray, window: np.ndarray,
                          classes: Sequence[Sequence[int]]) -> np.ndarray:
    """Per class (members' label values): the segmentation's voxels outside ``window`` and how
    many of them the ground truth does not give that class, ``(K, 2)`` int64 (0, 0 for a class
    with nothing outside). All arrays on one grid."""
    outside = ~np.asarray(window, dtype=bool)
    counts = np.zeros((len(classes), 2), dtype=np.int64)
    for k, members in enumerate(classes):
        s = np.isin(seg, members) & outside
        counts[k] = int(s.sum()), int((s & ~np.isin(gt, members)).sum())
    return counts


def _check_same_cases(links: Path, dataset: Dataset, cases: Sequence[str]) -> None:
    """:class:`InputError` naming the training folder when ``links`` (the ground truths an earlier
    run degraded) holds another case, or the same file name linked to another file: the folder
    belongs to a run on other training data, and degrading into it would replace that run's maps."""
    if not links.is_dir():
        return
    wanted = {Path(dataset.label_files[case]).name: Path(dataset.label_files[case]).resolve() for case in cases}
    for link in sorted(links.iterdir()):
        if not link.is_symlink():
            continue
        target = Path(os.readlink(link))
        if link.name not in wanted or (link.parent / target).resolve() != wanted[link.name]:
            raise InputError(f"holds a {METHOD} run on other training data (its degraded maps include {link.name}, "
                             f"of {target}); use another folder", links.parent.parent)


def _degraded_files(dataset: Dataset, cases: Sequence[str], config: QcResUNetConfig, work_dir: Path, *,
                    jobs: int, progress: bool) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """``segqc degrade`` of the training ground truths into ``work_dir/degraded`` (10 equal Dice
    bins, nnQC error types and SegGen; resumable): case -> its degraded maps, each with its
    manifest row (its true quality at ``config.tolerance_mm``)."""
    import shutil

    from segqc.degrade.folder import DegradeConfig, degrade_folder
    from segqc.degrade.targeting import bins_from_edges
    from segqc.io.labels import LabelSet

    links = work_dir / "labels"
    _check_same_cases(links, dataset, cases)
    links.mkdir(parents=True, exist_ok=True)
    for case in cases:
        source = Path(dataset.label_files[case])
        link = links / source.name
        if not link.exists():
            os.symlink(source.resolve(), link)
    if (dataset.root / "dataset.json").is_file():
        shutil.copyfile(dataset.root / "dataset.json", links / "dataset.json")
    bins = bins_from_edges(np.round(np.linspace(0.0, 1.0, config.bins + 1), 10))
    label_set = LabelSet.from_dataset_info(dataset.info)
    degrade = DegradeConfig(bins=tuple(bins), per_case=config.degraded_per_case, seed=config.seed,
                            tolerance_mm=config.tolerance_mm, label_set=label_set)
    result = degrade_folder(links, work_dir / "degraded", degrade, images_dir=None, jobs=jobs, progress=progress)
    files: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for row in result.manifest.to_dict("records"):
        files.setdefault(str(row["case"]), []).append((work_dir / "degraded" / str(row["file"]), row))
    return files


GROUND_TRUTH_SOURCE, DEGRADED_SOURCE = "ground truth", "degraded"
SYNTHETIC_SOURCES = (GROUND_TRUTH_SOURCE, DEGRADED_SOURCE)
"""Sample sources made from the ground truths; every other source is a folder of real segmentations."""


def build_training_data(dataset_dir: str | Path, cases: Sequence[str] | None, config: QcResUNetConfig,
                        work_dir: str | Path, *, extra_seg_dirs: Sequence[str | Path] = (), jobs: int = 1,
                        progress: bool = False) -> QcResUNetData:
    """The training samples of ``cases`` (default: all) of an nnU-Net folder: the degraded maps
    that ``segqc degrade`` makes in ``work_dir`` and the segmentations of ``extra_seg_dirs``
    (e.g. ``segqc zoo predict`` outputs; files of other cases are left out). Raises
    :class:`InputError` for a missing folder, an extra folder without a segmentation of the
    training cases, ground truths without foreground or no sample at all."""
    from segqc.fingerprint import compute_fingerprint, plan_from_fingerprint

    dataset = Dataset.open(dataset_dir)
    chosen = dataset.select(cases)
    # every extra folder must add segmentations of training cases (checked before anything is degraded)
    extras = [(str(folder), extra_segmentation_files(folder, chosen, file_ending=dataset.info.file_ending))
              for folder in extra_seg_dirs]
    fingerprint = compute_fingerprint(dataset.root, cases=chosen)
    ignore = dataset.info.ignore
    if not set(fingerprint.label_values_present) - {0, ignore}:  # nothing to assess: refused, not trained
        raise InputError(NO_FOREGROUND, dataset.root)
    plan = plan_from_fingerprint(fingerprint, size=config.size, field_of_view=config.field_of_view)
    labels = tuple(sorted(set(fingerprint.labels) | set(fingerprint.label_values_present) | {0}))
    classes = dataset_classes(dataset.info, labels, config.classes)
    work = Path(work_dir)
    per_case: dict[str, list[tuple[str, Path, dict[str, Any] | None]]] = {case: [] for case in chosen}
    if config.ground_truth_samples:  # a perfect segmentation too: Dice 1, no error voxel
        for case in chosen:
            per_case[case].append((GROUND_TRUTH_SOURCE, Path(dataset.label_files[case]), None))
    for case, made in _degraded_files(dataset, chosen, config, work, jobs=jobs, progress=progress).items():
        per_case[case] += [(DEGRADED_SOURCE, path, row) for path, row in made]
    for source, files in extras:
        for case, path in files:
            per_case[case].append((source, path, None))
    items = [(case, list(dataset.image_files[case]), Path(dataset.label_files[case]), per_case[case])
             for case in chosen if per_case[case]]
    if not items:
        raise InputError("no imperfect segmentation of the training cases", dataset.root)
    data = prepare_samples(items, plan=plan, classes=classes, labels=labels, fingerprint=fingerprint.to_dict(),
                           tolerance_mm=config.tolerance_mm, jobs=jobs, progress=progress)
    median = list(fingerprint.median_spacing)
    data.ndim = len(median)
    if data.ndim == 3:
        data.slice_spacing = float(median[plan.slice_axis])
    return data


def prepare_samples(items: Sequence[tuple[str, list[Path], Path, list[tuple[str, Path, dict[str, Any] | None]]]], *,
                    plan: Any, classes: tuple[QcClass, ...], labels: tuple[int, ...], fingerprint: dict[str, Any],
                    tolerance_mm: float, jobs: int = 1, progress: bool = False) -> QcResUNetData:
    """The samples of ``items`` — per case its id, image files, ground-truth file and its
    segmentations as ``(source, file, segqc degrade manifest row or None)`` — preprocessed by
    ``plan`` with their true Dice and NSD (``tolerance_mm``), ``jobs`` cases at a time. The
    result is 3D with no slice spacing set (the caller sets ``ndim`` and ``slice_spacing``)."""
    from segqc.execution import map_cases

    data = QcResUNetData([], [], [], np.zeros((0, 2, len(classes) + 1)), [], [], labels, classes, plan, fingerprint,
                         0.0, 3)
    targets = []
    function = partial(_prepare_case, plan=plan, classes=tuple(c[2] for c in classes), tolerance_mm=tolerance_mm)
    for item, result in map_cases(function, items, jobs=jobs, description="prepare", progress=progress):
        if isinstance(result, Exception):
            raise result
        data.images += result["images"]
        data.segs += result["segs"]
        data.gts += result["gts"]
        targets += result["targets"]
        data.sources += result["sources"]
        data.outside += result["outside"]
        data.cases += [item[0]] * len(result["segs"])
    data.targets = np.stack(targets)
    return data


def build_network(config: QcResUNetConfig, *, spatial_dims: int, image_channels: int, n_classes: int,
                  strides: Sequence[Sequence[int]], precision: str = "fp32",
                  kernels: Sequence[Sequence[int]] | None = None) -> QcResUNet:
    """The network of ``config`` for data of this shape (``strides`` and ``kernels`` resolved for
    the data: :func:`~segqc.qc.qcresunet.config.resolve_strides`,
    :func:`~segqc.qc.qcresunet.config.resolve_kernels`; None: 3 everywhere); to be trained at
    ``precision`` (a resolved one: ``bf16`` shields its 3D convolutions,
    :func:`segqc.training.precision.shield_conv3d`)."""
    network = QcResUNet(spatial_dims, image_channels, n_classes, widths=config.widths, blocks=config.blocks,
                        strides=[tuple(s) for s in strides], dropout=config.dropout, attention=config.attention,
                        kernels=kernels,
                        decoder=config.decoder, regression=config.regression, readout=uses_readout(config),
                        readout_fourier=(config.readout_fourier * config.readout_corrections
                                         if uses_readout(config) else 0),
                        readout_surface=config.readout_surface and uses_readout(config))
    if precision == "bf16":
        shield_conv3d(network)
    return network


def uses_readout(config: QcResUNetConfig) -> bool:
    """Whether networks of ``config`` get the linear read-out (it reads the decoder)."""
    return config.readout_per_case > 0 and config.decoder


WHOLE_VOLUME = 1 << 30
"""A ``max_depth`` that never crops: the read-out sees whole volumes, as prediction does."""

READOUT_SEED_OFFSET = 1000
"""The read-out's degraded segmentations use ``seed + READOUT_SEED_OFFSET``: none is a training sample."""


def build_readout_data(dataset_dir: str | Path, cases: Sequence[str] | None, config: QcResUNetConfig,
                       work_dir: str | Path, *, extra_seg_dirs: Sequence[str | Path] = (), jobs: int = 1,
                       progress: bool = False) -> QcResUNetData:
    """The read-out's samples: ``readout_per_case`` fresh degraded segmentations of every
    training ground truth (another seed than the training data), the ground truths, and the
    real segmentations of ``extra_seg_dirs`` (the training's own: the read-out then learns how
    the maps behave on real errors too, which synthetic degradations do not show)."""
    fresh = dataclasses.replace(config, degraded_per_case=config.readout_per_case,
                                seed=config.seed + READOUT_SEED_OFFSET, ground_truth_samples=True)
    return build_training_data(dataset_dir, cases, fresh, work_dir, extra_seg_dirs=extra_seg_dirs, jobs=jobs,
                               progress=progress)


def readout_weights(data: QcResUNetData, real_weight: float) -> np.ndarray:
    """Each sample's weight in the read-out's fit, ``(N,)``: ``real_weight`` for a real
    segmentation (an ``extra_seg_dirs`` sample), 1 for a degraded one or a ground truth."""
    return np.array([1.0 if source in SYNTHETIC_SOURCES else float(real_weight) for source in data.sources])


def fit_readout(model: QcResUNet, data: QcResUNetData, config: QcResUNetConfig, dev: torch.device, *,
                progress: bool = False) -> dict[str, Any]:
    """Fit ``model``'s read-out (it must have one) on ``data``: its features of every sample
    (eval mode, one whole volume at a time at ``config.precision`` resolved for ``dev``, as at
    prediction; ``model`` must be built for that precision) against the true Dice and NSD —
    ridge regression with the penalty chosen by 5-fold cross-validation over the cases
    (:func:`segqc.training.ridge.fit_ridge`), then, with ``config.readout_fourier`` > 0, a ridge
    fit of its residuals on random Fourier features of the standardised features
    (:func:`segqc.training.fourier.fit_fourier_correction`, kernel width and penalty
    cross-validated the same way) — ``config.readout_corrections`` such fits, each on its own
    draw of features (:func:`correction_seed`) and kept only if it lowers the cross-validated
    squared error, their mean the correction (:func:`segqc.training.fourier.average_corrections`;
    one draw alone leaves the NSD estimate dependent on the draw, docs/evidence.md).
    The read-out is installed only if its cross-validated squared error is below that of the
    regression heads' own estimates on the same (fresh) samples — on too little data the heads
    stay in charge. The same samples calibrate ``model.sem_threshold``: per class the threshold
    of :data:`THRESHOLD_GRID` with the best mean Dice between predicted and true error maps
    (:func:`best_error_thresholds`), and ``model.outside_errors``: a class's voxels outside the
    network's window are marked erroneous when more than half of those of the samples are
    (:func:`outside_error_rates`). Each real segmentation counts ``config.readout_real_weight``
    times in all of these (:func:`readout_weights`). Returns what the run record keeps (``used``: whether the
    read-out was installed; ``correction``: whether a Fourier correction was; ``corrections``:
    each one's kernel width, penalty, cross-validated errors and whether it was kept;
    ``readout_cv_mse``: the linear fit's cross-validated error, or with a correction the mean of
    the corrected fits' (the linear one's for a correction not kept), which bounds their average's
    from above;
    ``sem_threshold`` and ``sem_dice``: the thresholds and their mean Dice, ``sem_dice_at_half``
    the mean Dice at 0.5; ``outside_error_rate`` per class, None where no sample has a voxel
    outside, and ``outside_errors``)."""
    from segqc.training.fourier import FourierCorrection, average_corrections, fit_fourier_correction
    from segqc.training.ridge import fit_ridge

    if model.readout is None:
        raise ValueError("this network has no read-out")
    precision = resolve_precision(config.precision, dev)  # as at prediction (predict.load)
    x, counts = readout_passes(model, data, precision, dev, progress=progress)
    weights = readout_weights(data, config.readout_real_weight)
    thresholds, sem_dice = best_error_thresholds(counts, weights)
    model.sem_threshold.copy_(torch.from_numpy(thresholds.astype(np.float32)))
    outside = outside_error_rates(data, weights)
    model.outside_errors.copy_(torch.from_numpy((np.nan_to_num(outside, nan=0.0) > 0.5).astype(np.float32)))
    targets = data.targets.reshape(data.n_samples, -1)  # Dice (K + 1), then NSD (K + 1)
    fit = fit_ridge(x, targets, data.cases, weights=weights)
    record: dict[str, Any] = {"samples": data.n_samples, "real_weight": float(config.readout_real_weight),
                              "alpha": fit.alpha,
                              "cv_mse": {str(k): v for k, v in fit.cv_mse.items()},
                              "linear_cv_mse": fit.cv_mse[fit.alpha], "readout_cv_mse": fit.cv_mse[fit.alpha],
                              "correction": False, "sem_threshold": thresholds.tolist(),
                              "sem_dice": sem_dice["best"].tolist(), "sem_dice_at_half": sem_dice["half"].tolist(),
                              "outside_error_rate": [None if np.isnan(r) else float(r) for r in outside],
                              "outside_errors": model.outside_errors.tolist()}
    correction = None
    if model.readout.fourier:
        parts: list[FourierCorrection | None] = []
        for k in range(config.readout_corrections):
            part = fit_fourier_correction(fit.standardise(x), targets - fit.predict(x), data.cases,
                                          n_features=config.readout_fourier, seed=correction_seed(config.seed, k),
                                          weights=weights)
            error = part.cv_mse[part.gamma]
            kept = error < record["linear_cv_mse"]
            parts.append(part if kept else None)
            record.setdefault("corrections", []).append(
                {"gamma": part.gamma, "alpha": part.fit.alpha, "cv_mse": {str(g): v for g, v in part.cv_mse.items()},
                 "used": kept})
        errors = [min(c["cv_mse"][str(c["gamma"])], record["linear_cv_mse"]) for c in record["corrections"]]
        if any(p is not None for p in parts):  # their mean's error is at most the mean of theirs
            correction = average_corrections(parts)
            record.update(correction=True, readout_cv_mse=float(np.mean(errors)))
    if model.use_regression:  # the heads' own estimates are the last columns; they never saw these samples
        heads_error = ((x[:, -targets.shape[1]:] - targets) ** 2).mean(axis=1)
        record["heads_mse"] = float(np.average(heads_error, weights=weights))
    record["used"] = "heads_mse" not in record or record["readout_cv_mse"] < record["heads_mse"]
    if record["used"]:
        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(a, dtype=np.float32))

        model.readout.set(*(tensor(a) for a in (fit.mean, fit.scale, fit.weight, fit.bias)))
        if record["correction"]:
            assert correction is not None
            c = correction.fit
            model.readout.set_correction(*(tensor(a) for a in (correction.frequencies, correction.phases, c.mean,
                                                               c.scale, c.weight, c.bias)))
    return record


def readout_passes(model: QcResUNet, data: QcResUNetData, precision: str, dev: torch.device, *,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One eval-mode pass of ``model`` per sample of ``data``, a whole volume at a time at
    ``precision`` (as at prediction): the read-out's features, float32 ``(N, width)``, and
    :func:`threshold_counts` of the error probabilities against the true error maps, ``(N, C,
    len(THRESHOLD_GRID), 3)``. The model's training mode is restored."""
    from rich.progress import track

    multiple = model.size_multiple[0] if data.ndim == 3 else 1
    was_training = model.training
    model.eval()
    features, counts = [], []
    for i in track(range(data.n_samples), description="read-out", disable=not progress):
        batch = make_batch(data, [i], multiple=multiple, max_depth=WHOLE_VOLUME, rng=None)  # as at prediction
        image, query = batch["image"].to(dev), batch["query"].to(dev)
        with autocast(dev, precision):
            x_i, probs = model.readout_inputs(image, query)
        features.append(x_i.cpu().numpy()[0])
        counts.append(threshold_counts(probs[0].cpu(), batch["sem"][0] > 0.5))
    model.train(was_training)
    return np.stack(features), np.stack(counts)


def correction_seed(seed: int, draw: int) -> int | tuple[int, int]:
    """The random Fourier features' seed of the read-out's correction number ``draw`` (0 the
    first): ``seed`` itself for the first (a single correction as before corrections were
    averaged), ``(seed, draw)`` for the others."""
    return seed if draw == 0 else (seed, draw)


def outside_error_rates(data: QcResUNetData, weights: np.ndarray | None = None) -> np.ndarray:
    """Per class: the share of the samples' segmentation voxels outside the network's window
    that are wrong (pooled over the samples, each sample's counts times its weight, default 1),
    ``(K,)``; NaN for a class with no such voxel."""
    if not data.outside:
        return np.full(len(data.classes), np.nan)
    w = np.ones(len(data.outside)) if weights is None else np.asarray(weights, dtype=float)
    total = np.tensordot(w, np.stack(data.outside).astype(float), axes=1)  # (K, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total[:, 0] > 0, total[:, 1] / np.maximum(total[:, 0], 1.0), np.nan)


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
"""The error-probability thresholds :func:`fit_readout` chooses from."""


def threshold_counts(probs: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """Per class and threshold of :data:`THRESHOLD_GRID`: true positives and predicted voxels of
    ``probs >= threshold`` against the boolean ``truth``, and the true voxels; ``probs`` and
    ``truth`` ``(C, *spatial)`` -> int64 ``(C, len(grid), 3)``."""
    grid = torch.as_tensor(THRESHOLD_GRID, dtype=probs.dtype)
    p = probs.flatten(1)  # (C, N)
    t = truth.flatten(1)
    out = np.zeros((p.shape[0], grid.numel(), 3), dtype=np.int64)
    for c in range(p.shape[0]):
        marked = p[c].unsqueeze(0) >= grid.unsqueeze(1)  # (G, N)
        out[c, :, 0] = (marked & t[c]).sum(dim=1).numpy()
        out[c, :, 1] = marked.sum(dim=1).numpy()
        out[c, :, 2] = int(t[c].sum())
    return out


def best_error_thresholds(counts: np.ndarray, weights: np.ndarray | None = None
                          ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per class the threshold of :data:`THRESHOLD_GRID` whose error maps have the best mean
    per-sample Dice with the true ones (both empty: 1; the mean weighted by ``weights`` ``(S,)``,
    default equal), from ``counts`` ``(S, C, G, 3)`` of :func:`threshold_counts`; ties go to the
    threshold nearest 0.5. Returns the thresholds ``(C,)`` and the mean Dice per class at them
    (``best``) and at 0.5 (``half``)."""
    tp, predicted, true = counts[..., 0], counts[..., 1], counts[..., 2]
    total = predicted + true
    per_sample = np.where(total > 0, 2.0 * tp / np.maximum(total, 1), 1.0)  # (S, C, G)
    dice = np.average(per_sample, axis=0, weights=weights)  # (C, G)
    distance = np.abs(THRESHOLD_GRID - 0.5)
    best = np.array([np.lexsort((distance, -np.round(row, 12)))[0] for row in dice])
    half = int(np.argmin(distance))
    return THRESHOLD_GRID[best], {"best": dice[np.arange(dice.shape[0]), best], "half": dice[:, half]}


def _readout_summary(record: dict[str, Any]) -> str:
    parts = record.get("corrections", [])
    kept = sum(bool(c["used"]) for c in parts)
    kind = ("linear" if not record.get("correction") else "with its Fourier correction" if len(parts) <= 1
            else f"with the mean of {kept} of {len(parts)} Fourier corrections")
    weight = f" (real ones x{record['real_weight']:g})" if record.get("real_weight", 1.0) != 1.0 else ""
    return (f"read-out ({kind}) fitted on {record['samples']} segmentations{weight}: squared error "
            f"{record['readout_cv_mse']:.4f} "
            f"(cross-validated), the heads' {record.get('heads_mse', math.nan):.4f}; "
            f"{'used' if record['used'] else 'not used, the heads give the estimates'}; error-map thresholds "
            f"{', '.join(f'{t:.2f}' for t in record['sem_threshold'])} (mean Dice of the maps "
            f"{', '.join(f'{d:.3f}' for d in record['sem_dice'])}; at 0.5: "
            f"{', '.join(f'{d:.3f}' for d in record['sem_dice_at_half'])}); voxels outside the window wrong: "
            f"{', '.join('-' if r is None else f'{r:.3f}' for r in record.get('outside_error_rate', []))}")


def epoch_order(dice: np.ndarray, n: int, bins: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` sample indices drawn evenly over ``bins`` equal bins of ``dice`` in [0, 1] (the last
    bin closed; empty bins get none), shuffled. A bin that holds at least its share is drawn
    without replacement; a smaller one entirely with replacement (so a member of it may be left
    out of an epoch while another comes twice)."""
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
        segs[row, :n] = data.segs[i][window]
        gts[row, :n] = data.gts[i][window]
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
    sem = (class_masks(seg_t, data.classes) ^ class_masks(gt_t, data.classes)).float()
    targets = torch.from_numpy(data.targets[list(indices)].astype(np.float32))
    batch = {"image": torch.from_numpy(images), "query": query_channels(seg_t, data.classes), "sem": sem,
             "dice": targets[:, 0], "nsd": targets[:, 1]}
    if data.ndim == 2:  # one slice per sample: the 2D network
        batch = {k: v[:, :, 0] if v.ndim == 5 else v for k, v in batch.items()}
    return batch


def _member_stage(config: QcResUNetConfig, data: QcResUNetData, member: int, model: QcResUNet,
                  dev: torch.device, precision: str) -> Stage:
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
        with autocast(dev, precision):
            output = model(batch["image"], batch["query"])
        output = output.float()
        loss, parts = qcresunet_loss(output, batch["dice"] if config.regression else None,
                                     batch["nsd"] if config.regression else None,
                                     batch["sem"] if config.decoder else None, lam=config.loss_lambda,
                                     per_sample_dice=config.sem_dice == "sample", weighting=config.loss_weighting)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {name: float(value) for name, value in parts.items()}

    return Stage(name=f"member{member}", steps=config.epochs * per_epoch, modules={"model": model},
                 optimizers={"adam": optimizer}, step=step)


def readout_error(record: dict[str, Any]) -> float:
    """The cross-validated squared error of a member's estimates on its read-out samples (a
    :func:`fit_readout` record): the read-out's where it was installed, else the heads'."""
    return float(record["readout_cv_mse"] if record["used"] else record["heads_mse"])


def best_members(records: Sequence[dict[str, Any]], keep: int) -> list[int]:
    """The indices (ascending) of the ``keep`` members with the lowest :func:`readout_error`
    (ties: the earlier member); ``keep`` 0 or at least ``len(records)``: all of them."""
    ranked = sorted(range(len(records)), key=lambda k: (readout_error(records[k]), k))
    return sorted(ranked[:keep] if keep > 0 else ranked)


_MAY_CHANGE = ", ".join(QcResUNetConfig.RESUMABLE_FIELDS)


def train(config: QcResUNetConfig, data: QcResUNetData, out_dir: str | Path, *, device: str = "auto",
          log: Callable[[str], None] | None = None, progress: bool = False,
          readout_data: QcResUNetData | None = None) -> Path:
    """Train ``config.members`` networks on ``data`` into ``out_dir`` (resumable; a folder with
    another run is refused) and fit each one's read-out on ``readout_data`` (needed when the
    config has a read-out); with ``config.keep_members`` only the best of them by
    :func:`best_members` are saved (renumbered from 0; ``metrics.json`` keeps every member's record
    under its training number and ``kept_members``, the training numbers saved). Returns the model
    directory ``out_dir/model``."""
    if data.n_samples == 0:
        raise InputError("the training data holds no segmentation")
    if int(data.plan.size) != config.size:
        raise InputError(f"the data have {data.plan.size} px slices but the config needs {config.size}")
    say = log or (lambda _line: None)
    if uses_readout(config) and (readout_data is None or readout_data.n_samples == 0):
        raise InputError("the config has a read-out (readout_per_case > 0) but no read-out data were given")
    summary = data.summary()  # once: it checksums every training array
    out, dev = start_run(out_dir, method=METHOD, settings=config.resume_key(), data=summary, seed=config.seed,
                         device=device, may_change=_MAY_CHANGE)
    inplane_spacing = float(min(data.plan.target_spacing))
    strides = resolve_strides(config, ndim=data.ndim, slice_spacing=data.slice_spacing,
                              inplane_spacing=inplane_spacing)
    kernels = resolve_kernels(config, ndim=data.ndim, slice_spacing=data.slice_spacing,
                              inplane_spacing=inplane_spacing, strides=strides)
    n_classes = len(data.classes)
    precision = resolve_precision(config.precision, dev)
    layout = {"strides": [list(s) for s in strides], "kernels": [list(k) for k in kernels]}  # what load rebuilds
    metrics: dict[str, Any] = {"data": summary, "device": str(dev), "threads": torch.get_num_threads(),
                               **layout, "precision": precision}
    say(f"training precision: {precision}")
    weights = {}
    with torch.enable_grad():
        for member in range(config.members):
            torch.manual_seed(config.seed + member)
            model = build_network(config, spatial_dims=data.ndim, image_channels=data.image_channels,
                                  n_classes=n_classes, strides=strides, precision=precision,
                                  kernels=kernels).to(dev)
            metrics[f"member{member}"] = run_stage(_member_stage(config, data, member, model, dev, precision), out,
                                                   checkpoint_every=config.checkpoint_every, log=say,
                                                   progress=progress, prefix="qcresunet ")
            if uses_readout(config):
                assert readout_data is not None
                metrics[f"member{member}_readout"] = fit_readout(model, readout_data, config, dev, progress=progress)
                say(f"member{member} {_readout_summary(metrics[f'member{member}_readout'])}")
            weights[f"member{member}"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if config.keep_members:
        kept = best_members([metrics[f"member{m}_readout"] for m in range(config.members)], config.keep_members)
        weights = {f"member{new}": weights[f"member{old}"] for new, old in enumerate(kept)}
        metrics["kept_members"] = kept
        errors = ", ".join(f"member{m} {readout_error(metrics[f'member{m}_readout']):.4f}"
                           for m in range(config.members))
        say(f"kept members {', '.join(map(str, kept))} of {config.members} (read-out errors: {errors})")
    model_dir = out / "model"
    save_checkpoint(model_dir, method=METHOD,
                    config={"qcresunet": config.to_dict(), "labels": list(data.labels),
                            "classes": [[c[0], c[1], list(c[2])] for c in data.classes],
                            "image_channels": data.image_channels, "plan": data.plan.to_dict(),
                            **layout, "spatial_dims": data.ndim},
                    weights=weights, fingerprint=data.fingerprint, metrics=metrics, seed=config.seed)
    say(f"model saved to {model_dir}")
    return model_dir


def train_from_dataset(dataset_dir: str | Path, out_dir: str | Path, *, config: QcResUNetConfig,
                       cases: Sequence[str] | None = None, jobs: int = 1, log: Callable[[str], None] = print,
                       extra_seg_dirs: Sequence[str | Path] = (), progress: bool = False) -> Path:
    """The registry's training entry point (:mod:`segqc.methods`): degrade the ground truths of
    ``cases`` (kept in ``out_dir/data`` for a rerun), add the segmentations of ``extra_seg_dirs``
    (e.g. ``segqc zoo predict`` outputs), prepare the samples and :func:`train`; returns the model
    directory. A folder that is not this run's own (a model, another run, other settings) is refused
    before anything is written to it."""
    check_training_folder(out_dir, method=METHOD, settings=config.resume_key(), may_change=_MAY_CHANGE)
    data = build_training_data(dataset_dir, cases, config, Path(out_dir) / "data", extra_seg_dirs=extra_seg_dirs,
                               jobs=jobs, progress=progress)
    counts = {source: data.sources.count(source) for source in sorted(set(data.sources))}
    log(f"training data: {data.n_samples} segmentations of {len(set(data.cases))} volumes ({counts})")
    readout_data = None
    if uses_readout(config):
        readout_data = build_readout_data(dataset_dir, cases, config, Path(out_dir) / "readout_data",
                                          extra_seg_dirs=extra_seg_dirs, jobs=jobs, progress=progress)
        log(f"read-out data: {readout_data.n_samples} segmentations")
        if len(set(readout_data.cases)) < 2:  # found before the network trains, not after
            raise InputError("the read-out is fitted by cross-validation over the training volumes and needs at "
                             f"least two; found {len(set(readout_data.cases))} (add volumes, or train without a "
                             "read-out: --set readout_per_case=0)", dataset_dir)
    return train(config, data, out_dir, log=log, progress=progress, readout_data=readout_data)


def add_readout(model_dir: str | Path, dataset_dir: str | Path, out_dir: str | Path, *,
                cases: Sequence[str] | None = None, readout_per_case: int = QcResUNetConfig.readout_per_case,
                readout_fourier: int = QcResUNetConfig.readout_fourier,
                readout_corrections: int = QcResUNetConfig.readout_corrections,
                readout_surface: bool = True, readout_real_weight: float = QcResUNetConfig.readout_real_weight,
                extra_seg_dirs: Sequence[str | Path] = (), jobs: int = 1,
                log: Callable[[str], None] = print, progress: bool = False) -> Path:
    """Fit a read-out to every member of a trained model, replacing any it has (the step training runs
    after each member, for a model trained without it): read-out data of ``cases`` of the
    dataset (the model's own training cases, and ``extra_seg_dirs``, its training's real
    segmentations; work files in ``out_dir/readout_data``; ``readout_fourier`` random Fourier
    features for its correction, 0 for none, ``readout_corrections`` such corrections averaged;
    ``readout_surface``: read the boundary numbers too;
    ``readout_real_weight``: each real segmentation's weight in the fit; the
    error-map thresholds are calibrated again), the fitted model written to ``out_dir/model``.
    Returns that directory."""
    from segqc.qc.qcresunet.predict import load
    from segqc.training.checkpoints import read_checkpoint_meta

    if readout_per_case < 1:
        raise InputError(f"readout_per_case must be >= 1, got {readout_per_case}")
    loaded = load(model_dir)  # checks the method and the weights
    saved = read_checkpoint_meta(model_dir)["config"]  # what to save again, beside the new read-out
    config = dataclasses.replace(loaded.config, readout_per_case=readout_per_case, readout_fourier=readout_fourier,
                                 readout_corrections=readout_corrections, readout_surface=readout_surface,
                                 readout_real_weight=readout_real_weight)
    if not uses_readout(config):
        raise InputError("a model without the decoder cannot have a read-out", model_dir)
    data = build_readout_data(dataset_dir, cases, config, Path(out_dir) / "readout_data",
                              extra_seg_dirs=extra_seg_dirs, jobs=jobs, progress=progress)
    if data.classes != loaded.classes or data.plan.to_dict() != loaded.plan.to_dict():
        raise InputError("the dataset's classes or preprocessing differ from the model's", dataset_dir)
    weights: dict[str, Any] = {}
    previous = Path(model_dir) / "metrics.json"  # the training's record, kept
    metrics: dict[str, Any] = json.loads(previous.read_text()) if previous.is_file() else {}
    dev = next(loaded.members[0].parameters()).device  # load's, where loaded.precision was resolved
    numbers = metrics.get("kept_members") or list(range(len(loaded.members)))  # the members' training numbers
    for member, network in enumerate(loaded.members):
        fitted = build_network(config, spatial_dims=loaded.spatial_dims, image_channels=int(saved["image_channels"]),
                               n_classes=len(loaded.classes), strides=saved["strides"], precision=loaded.precision,
                               kernels=saved.get("kernels"))
        kept = {k: v for k, v in network.state_dict().items() if not k.startswith("readout.")}
        fitted.load_state_dict(kept, strict=False)  # all but the (new) read-out
        record = metrics[f"member{numbers[member]}_readout"] = fit_readout(fitted, data, config, dev,
                                                                            progress=progress)
        weights[f"member{member}"] = {k: v.detach().cpu() for k, v in fitted.state_dict().items()}
        log(f"member{numbers[member]} {_readout_summary(record)}")
    target = Path(out_dir) / "model"
    save_checkpoint(target, method=METHOD, config={**saved, "qcresunet": config.to_dict()}, weights=weights,
                    fingerprint=loaded.fingerprint, metrics=metrics, seed=config.seed)
    return target
