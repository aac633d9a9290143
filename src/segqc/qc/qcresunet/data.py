"""Training data of QCResUNet: imperfect segmentations of the training volumes with their true
quality (Dice and NSD per class and over all classes) and their per-class error maps.

Every segmentation is preprocessed exactly as the QC driver will preprocess a segmentation to
check (the model's plan, the crop window placed by that segmentation), the image with it; the
ground truth goes through the same transform. The true Dice and NSD are computed on the original
grid with segqc's metric engine (NSD at the config's tolerance in mm), so the targets are the
numbers ``segqc evaluate`` reports. Error-map targets are made per batch from the preprocessed
segmentation and ground truth (class c is wrong where exactly one of them is c).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from segqc.errors import InputError
from segqc.io.datasets import Dataset, segmentation_files
from segqc.qc.qcresunet.config import QcResUNetConfig

__all__ = ["QcResUNetData", "build_training_data", "true_quality"]


@dataclass
class QcResUNetData:
    """``images[i]`` ``(C, n_i, S, S)`` float16, ``segs[i]`` / ``gts[i]`` ``(n_i, S, S)`` label values
    of sample i (one imperfect segmentation of one volume); ``targets`` ``(N, 2, K + 1)``: Dice and
    NSD over all classes (index 0) and per class (1..K); ``sources[i]``: where sample i came from
    (``degraded`` or the folder of real segmentations) and ``cases[i]`` its case."""

    images: list[np.ndarray]
    segs: list[np.ndarray]
    gts: list[np.ndarray]
    targets: np.ndarray
    cases: list[str]
    sources: list[str]
    labels: tuple[int, ...]
    plan: Any
    fingerprint: dict[str, Any]
    slice_spacing: float
    ndim: int
    notes: list[str] = field(default_factory=list)

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
                "image_channels": self.image_channels, "size": int(self.plan.size),
                "dice_histogram": [int(h) for h in histogram], "sources": sorted(set(self.sources))}


def true_quality(seg: np.ndarray, gt: np.ndarray, spacing: Sequence[float], labels: Sequence[int], *,
                 tolerance_mm: float) -> np.ndarray:
    """``(2, K + 1)``: Dice and NSD (tolerance in mm) of ``seg`` against ``gt`` — index 0 over
    all classes (multi-class Dice, QCResUNet appendix A; NSD: mean over the classes present in
    either map), then per class (``labels`` without 0). A class absent from both maps scores 1
    (nothing to get wrong); two empty maps score 1 throughout."""
    from segqc.metrics.binary import MetricSettings, compare_masks
    from segqc.metrics.multiclass import multiclass_dice

    classes = [v for v in labels if v != 0]
    out = np.ones((2, len(classes) + 1))
    present_nsd = []
    settings = MetricSettings(tolerance_mm=tolerance_mm)
    for k, value in enumerate(classes, start=1):
        s, g = seg == value, gt == value
        if not s.any() and not g.any():
            continue
        dice, nsd_result = compare_masks(s, g, spacing, metrics=("dice", "nsd"), settings=settings)
        out[0, k] = float(dice.value)
        nsd = float(nsd_result.value)
        out[1, k] = nsd if math.isfinite(nsd) else 0.0
        present_nsd.append(out[1, k])
    out[0, 0] = multiclass_dice(seg, gt).value if (seg > 0).any() or (gt > 0).any() else 1.0
    out[1, 0] = float(np.mean(present_nsd)) if present_nsd else 1.0
    return out


def _prepare_case(item: tuple[str, list[Path], Path, list[tuple[str, Path]]], *, plan: Any,
                  labels: tuple[int, ...], tolerance_mm: float) -> dict[str, Any]:
    """All samples of one case: preprocessed image, segmentation and ground truth per
    segmentation, and the true quality on the original grid."""
    from segqc.fingerprint.preprocessing import preprocess_files, transform_label
    from segqc.io.images import read_label_map

    case, image_paths, gt_path, segs = item
    gt = read_label_map(gt_path)
    out: dict[str, Any] = {"images": [], "segs": [], "gts": [], "targets": [], "sources": []}
    for source, seg_path in segs:
        seg = read_label_map(seg_path)
        if seg.array.shape != gt.array.shape:
            raise InputError(f"has shape {seg.array.shape}, its ground truth {gt.array.shape}", seg_path)
        prepared = preprocess_files(list(image_paths), plan, label_path=seg_path)
        image = np.moveaxis(prepared.image, -1, 1)  # (C, n, S, S)
        out["images"].append(image.astype(np.float16))
        out["segs"].append(np.moveaxis(prepared.required_label(), -1, 0).astype(np.int16))
        out["gts"].append(np.moveaxis(transform_label(gt.array, prepared.transform), -1, 0).astype(np.int16))
        out["targets"].append(true_quality(seg.array, gt.array, gt.geometry.spacing, labels,
                                           tolerance_mm=tolerance_mm))
        out["sources"].append(source)
    return out


def _degraded_files(dataset: Dataset, cases: Sequence[str], config: QcResUNetConfig, work_dir: Path, *,
                    jobs: int, progress: bool) -> dict[str, list[Path]]:
    """``segqc degrade`` of the training ground truths into ``work_dir/degraded`` (10 equal Dice
    bins, nnQC error types and SegGen; resumable): case -> its degraded maps."""
    import shutil

    from segqc.degrade.folder import DegradeConfig, degrade_folder
    from segqc.degrade.targeting import bins_from_edges
    from segqc.io.labels import LabelSet

    links = work_dir / "labels"
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
    files: dict[str, list[Path]] = {}
    for row in result.manifest.itertuples():
        files.setdefault(str(row.case), []).append(work_dir / "degraded" / str(row.file))
    return files


def build_training_data(dataset_dir: str | Path, cases: Sequence[str] | None, config: QcResUNetConfig,
                        work_dir: str | Path, *, extra_seg_dirs: Sequence[str | Path] = (), jobs: int = 1,
                        progress: bool = False) -> QcResUNetData:
    """The training samples of ``cases`` (default: all) of an nnU-Net folder: the degraded maps
    that ``segqc degrade`` makes in ``work_dir`` and the segmentations of ``extra_seg_dirs``
    (e.g. ``segqc zoo predict`` outputs; files of other cases are left out). Raises
    :class:`InputError` for a missing folder or no sample at all."""
    from segqc.execution import map_cases
    from segqc.fingerprint import compute_fingerprint, plan_from_fingerprint

    dataset = Dataset.open(dataset_dir)
    for folder in extra_seg_dirs:
        if not Path(folder).is_dir():
            raise InputError("segmentation folder not found", folder)
    chosen = dataset.select(cases)
    fingerprint = compute_fingerprint(dataset.root, cases=chosen)
    plan = plan_from_fingerprint(fingerprint, size=config.size)
    labels = tuple(sorted(set(fingerprint.labels) | set(fingerprint.label_values_present) | {0}))
    work = Path(work_dir)
    per_case: dict[str, list[tuple[str, Path]]] = {case: [] for case in chosen}
    for case, paths in _degraded_files(dataset, chosen, config, work, jobs=jobs, progress=progress).items():
        per_case[case] += [("degraded", p) for p in paths]
    for folder in extra_seg_dirs:
        for case, path in segmentation_files(folder).files.values():
            if case in per_case:
                per_case[case].append((str(folder), path))
    items = [(case, list(dataset.image_files[case]), Path(dataset.label_files[case]), per_case[case])
             for case in chosen if per_case[case]]
    if not items:
        raise InputError("no imperfect segmentation of the training cases", dataset.root)
    data = QcResUNetData([], [], [], np.zeros((0, 2, len(labels))), [], [], labels, plan, fingerprint.to_dict(),
                         0.0, 3)
    targets = []
    function = partial(_prepare_case, plan=plan, labels=labels, tolerance_mm=config.tolerance_mm)
    for item, result in map_cases(function, items, jobs=jobs, description="prepare", progress=progress):
        if isinstance(result, Exception):
            raise result
        case = item[0]
        data.images += result["images"]
        data.segs += result["segs"]
        data.gts += result["gts"]
        targets += result["targets"]
        data.sources += result["sources"]
        data.cases += [case] * len(result["segs"])
    data.targets = np.stack(targets)
    median = list(fingerprint.median_spacing)
    data.ndim = len(median)
    if data.ndim == 3:
        data.slice_spacing = float(median[plan.slice_axis])
    return data
