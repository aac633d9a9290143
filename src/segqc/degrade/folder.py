"""A folder of ground truths -> degraded label maps at requested Dice bins + ``manifest.csv``.

:func:`degrade_folder` is what ``segqc degrade`` runs. For every case (``CASE.nii.gz`` in an
nnU-Net ``labelsTr``-style folder) it makes ``per_case`` degraded maps spread evenly over the
bins (:func:`~segqc.degrade.targeting.assign_bins`; with 5 bins and ``per_case=5`` one per bin),
or, with ``slices=True``, ``per_case`` maps for every 2D slice whose ground truth has foreground
(slices are cut across the slice axis: the axis of largest spacing, the last axis if isotropic).

Outputs under ``out_dir``:

* ``labels/CASE__b{bin}_k{k}.nii.gz`` (3D) or ``labels/CASE__z{slice}__b{bin}_k{k}.nii.gz`` (2D),
  with the ground truth's geometry (2D: the in-plane part of it); ``k`` counts the maps of a
  case (slice) in one bin. With ``slices``, the ground-truth slices are written too
  (``gt/CASE__z{slice}.nii.gz``).
* ``manifest.csv``: one row per map with the columns of :data:`BASE_COLUMNS` and, per label
  ``L``, ``dice_L``, ``hd95_L``, ``nsd_L``. ``dice`` is the multi-class Dice (QCResUNet appendix
  A), ``dice_L`` the one-vs-rest Dice of class ``L``, all computed from the written file against
  its ground truth. ``hd95`` (mm) and ``nsd`` (at ``tolerance_mm``) are the means over the
  classes present in the ground truth *or* the map of the one-vs-rest values, with segqc's
  default empty policy (a class on one side only counts as worst: 50 mm, NSD 0; a class on
  neither side is left out). ``bin`` is the requested interval (``[0.25,0.50)``), ``in_bin``
  whether the Dice it was binned on (``binned_on``: ``dice``, or ``dice_L`` with
  ``target_label``) landed inside it, and ``note`` says why when it did not. ``seed`` rebuilds
  the map: ``degrade_to_bin(gt, spacing, bin, numpy.random.default_rng(seed), labels=...)``.
* ``summary.json``: settings, per-bin counts and hit rates, failed/skipped/reused cases.
* ``cases/CASE.parquet``: the finished part of the manifest per case (the shared case engine,
  :mod:`segqc.execution`). A rerun reuses a case only when the settings and the content of its
  ground truth (and image) files are unchanged and its written files still exist (an
  interrupted run continues).

Bad input: a folder without label files is an :class:`~segqc.errors.InputError`. Per case (the
others go on; reported in ``failed``): label values that ``dataset.json`` does not name, an image
(``imagesTr`` next to ``labelsTr``, or ``images_dir``) whose grid differs from its label map, an
unreadable file. A case without foreground is skipped and reported; when every case is skipped
(no ground truth has foreground, or the ``target_label``), that is an :class:`InputError` naming
the folder (after ``manifest.csv`` and ``summary.json`` are written). A bin that cannot be reached
still gets its closest map, with ``in_bin`` False and a note; the search is bounded.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from segqc.config import ConfigBase, register_presets
from segqc.degrade.operations import present_labels, slice_axis
from segqc.degrade.targeting import NNQC_BINS, DiceBin, assign_bins, degrade_to_bin
from segqc.errors import InputError
from segqc.execution import CaseResult, CaseSkipped, CaseTask, RunReport, run_cases
from segqc.io.atomic import write_csv_atomic, write_json_atomic
from segqc.io.datasets import LABEL_EXTENSIONS, find_dataset_json, list_image_files, list_label_files
from segqc.io.geometry import Geometry
from segqc.io.images import read_label_map, write_image
from segqc.io.labels import LabelSet
from segqc.metrics.binary import MetricSettings, compare_masks
from segqc.metrics.multiclass import multiclass_dice, per_class_dice

__all__ = ["BASE_COLUMNS", "DegradeConfig", "DegradeResult", "degrade_folder", "mask_quality"]

BASE_COLUMNS = [
    "case", "file", "source", "bin", "bin_index", "k", "slice", "binned_on", "in_bin", "dice", "hd95", "nsd",
    "operations", "strength", "attempts", "evaluations", "seed", "gt_file", "gt_slice_file", "note",
]
_VERSION = 1  # bump when the generator changes what a seed produces


@dataclass(frozen=True)
class DegradeConfig(ConfigBase):
    """Settings of a degradation run (all of them go into the cache key). On the config base
    (``to_dict``/``from_dict``, JSON, digest; the one preset is ``default``)."""

    KIND: ClassVar[str] = "degrade"

    bins: tuple[DiceBin, ...] = NNQC_BINS
    per_case: int = 5
    seed: int = 0
    slices: bool = False
    target_label: int | None = None
    tolerance_mm: float = 1.0
    max_attempts: int = 8
    label_set: LabelSet = field(default_factory=LabelSet)  # dataset.json's classes (known) or none

    @property
    def labels(self) -> tuple[int, ...] | None:
        """The dataset's foreground labels, or None when the label maps decide."""
        return self.label_set.foreground if self.label_set.known else None

    def __post_init__(self) -> None:
        if self.per_case < 1:
            raise ValueError(f"per_case (maps per case) must be at least 1, got {self.per_case}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not self.bins:
            raise ValueError("at least one Dice bin is needed")
        if self.target_label is not None and self.labels is not None and self.target_label not in self.labels:
            raise ValueError(f"target label {self.target_label} is not a foreground label of dataset.json "
                             f"{list(self.labels)}")

    def to_dict(self) -> dict:
        return {
            "bins": [[b.lo, b.hi, b.closed] for b in self.bins],  # exact (str(b) rounds to 2 digits)
            "per_case": self.per_case,
            "seed": self.seed,
            "slices": self.slices,
            "target_label": self.target_label,
            "tolerance_mm": self.tolerance_mm,
            "max_attempts": self.max_attempts,
            "labels": None if self.labels is None else list(self.labels),
            "label_set": self.label_set.to_dict(),
            "version": _VERSION,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DegradeConfig:
        """Inverse of :meth:`to_dict` (``labels`` and ``version`` are derived, not read back)."""
        values = {k: v for k, v in data.items() if k not in ("format", "labels", "version")}
        try:
            if "bins" in values:
                values["bins"] = tuple(DiceBin(float(b[0]), float(b[1]), closed=bool(b[2])) if isinstance(b, list)
                                       else _parse_bin(str(b)) for b in values["bins"])
            if "label_set" in values:
                values["label_set"] = LabelSet.from_dict(values["label_set"])
            unknown = sorted(set(values) - cls.field_names())
            if unknown:
                raise InputError(f"unknown degrade config field(s): {', '.join(unknown)}")
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise InputError(f"invalid degrade config: {error}") from None


def _parse_bin(text: str) -> DiceBin:
    """``"[0.05,0.10)"`` or ``"[0.75,0.95]"`` -> DiceBin (the form ``str(DiceBin)`` writes)."""
    match = re.fullmatch(r"\[\s*([0-9.eE+-]+)\s*,\s*([0-9.eE+-]+)\s*([\)\]])", text.strip())
    if match is None:
        raise ValueError(f"not a Dice bin: {text!r} (expected e.g. [0.05,0.10) or [0.75,0.95])")
    return DiceBin(float(match[1]), float(match[2]), closed=match[3] == "]")


register_presets(DegradeConfig, {"default": DegradeConfig()})



@dataclass
class DegradeResult:
    """What :func:`degrade_folder` did: the manifest and what happened to every case."""

    manifest: pd.DataFrame
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    failure_kinds: dict[str, str] = field(default_factory=dict)
    report: RunReport | None = None  # the case engine's report


# --------------------------------------------------------------------------------------------
# Quality of one map
# --------------------------------------------------------------------------------------------


def mask_quality(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], labels: Sequence[int],
                 *, settings: MetricSettings | None = None) -> dict[str, float]:
    """``dice`` (multi-class), ``hd95``/``nsd`` (class means, module docstring) and per label
    ``dice_L``, ``hd95_L``, ``nsd_L`` of a label map against its ground truth."""
    settings = settings or MetricSettings()
    row: dict[str, float] = {"dice": multiclass_dice(pred, gt, empty=settings.empty).value}
    for c, r in per_class_dice(pred, gt, labels, empty=settings.empty).items():
        row[f"dice_{c}"] = r.value
    present = set(present_labels(pred)) | set(present_labels(gt))
    hd, sd = [], []
    for c in labels:
        box = _class_box(pred, gt, c)
        if box is None:  # absent from both: the both-empty rule (NaN by default), not averaged
            p = g = np.zeros((1,) * gt.ndim, dtype=bool)
        else:
            p, g = pred[box] == c, gt[box] == c
        h, n = compare_masks(p, g, spacing, metrics=("hd95", "nsd"), settings=settings)
        row[f"hd95_{c}"], row[f"nsd_{c}"] = h.value, n.value
        if c in present:
            hd.append(h.value)
            sd.append(n.value)
    row["hd95"] = float(np.mean(hd)) if hd else math.nan
    row["nsd"] = float(np.mean(sd)) if sd else math.nan
    return row


def _class_box(pred: np.ndarray, gt: np.ndarray, c: int) -> tuple[slice, ...] | None:
    either = (pred == c) | (gt == c)
    found = ndimage.find_objects(either.astype(np.uint8))
    return found[0] if found and found[0] is not None else None


# --------------------------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------------------------


def _seed_state(*words: int) -> int:
    state = np.random.SeedSequence([int(w) & 0xFFFFFFFF for w in words]).generate_state(2, np.uint32)
    return int(state.view(np.uint64)[0] >> np.uint64(1))


def _case_key(case: str) -> int:
    return zlib.crc32(case.encode("utf-8"))


def _header_geometry(path: Path) -> Geometry:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError("cannot read image header", path) from None
    return Geometry(shape=tuple(reader.GetSize()), spacing=tuple(reader.GetSpacing()), origin=tuple(reader.GetOrigin()),
                    direction=tuple(reader.GetDirection()))


def _check_image_geometry(label_path: Path, label: Geometry, image_paths: Sequence[Path]) -> None:
    for path in image_paths:
        image = _header_geometry(path)
        problems = []
        if image.shape != label.shape:
            problems.append(f"shape {label.shape} vs image {image.shape}")
        elif not np.allclose(image.spacing, label.spacing, rtol=1e-3, atol=0):
            problems.append(f"spacing {label.spacing} mm vs image {image.spacing} mm")
        elif not np.allclose(image.direction, label.direction, atol=1e-3):
            problems.append(f"orientation {label.orientation()} vs image {image.orientation()}")
        elif not np.allclose(image.origin, label.origin, rtol=1e-5, atol=1e-3):
            problems.append(f"origin {tuple(round(o, 3) for o in label.origin)} mm vs image "
                            f"{tuple(round(o, 3) for o in image.origin)} mm")
        if problems:
            raise InputError(f"label map and image {path.name} have different geometry: {problems[0]}", label_path)


def _slice_geometry(geometry: Geometry, axis: int, index: int) -> Geometry:
    keep = [d for d in range(3) if d != axis]
    direction = geometry.direction_matrix()
    origin = geometry.affine() @ np.array([*(index if d == axis else 0 for d in range(3)), 1.0])
    sub = direction[np.ix_(keep, keep)]
    if abs(np.linalg.det(sub)) < 1e-3:  # oblique slice not representable in 2D: plain grid
        sub = np.eye(2)
    return Geometry(shape=tuple(geometry.shape[d] for d in keep), spacing=tuple(geometry.spacing[d] for d in keep),
                    origin=tuple(origin[d] for d in keep), direction=tuple(sub.ravel()))


def _items(gt: np.ndarray, geometry: Geometry, slices: bool) -> list[tuple[int | None, np.ndarray, Geometry]]:
    """(slice index or None, array, geometry) of what gets degraded."""
    if not slices or gt.ndim == 2:
        return [(None, gt, geometry)]
    axis = slice_axis(geometry.spacing)
    axis = 2 if axis is None else axis
    other = tuple(d for d in range(3) if d != axis)
    occupied = np.flatnonzero((gt != 0).any(axis=other))
    return [(int(z), np.ascontiguousarray(np.take(gt, z, axis=axis)), _slice_geometry(geometry, axis, int(z)))
            for z in occupied]


def degrade_case(task: CaseTask, config: DegradeConfig, out_dir: Path) -> CaseResult:
    """Make, write and measure the degraded maps of one case (task inputs: ``gt``, and ``image``
    files whose grid must match); its rows of the manifest are the result's table."""
    gt_path = task.path("gt")
    assert gt_path is not None
    gt_image = read_label_map(gt_path)
    gt, geometry = gt_image.array, gt_image.geometry
    warnings = config.label_set.check(gt, gt_path)
    _check_image_geometry(gt_path, geometry, task.inputs.get("image", ()))
    if not present_labels(gt):
        raise CaseSkipped("the ground truth has no foreground; nothing to degrade")
    if config.target_label is not None and config.target_label not in present_labels(gt):
        raise CaseSkipped(f"label {config.target_label} is absent from the ground truth")
    labels = list(config.labels) if config.labels is not None else present_labels(gt)
    settings = MetricSettings(tolerance_mm=config.tolerance_mm)
    key = _case_key(task.case)
    binned_on = "dice" if config.target_label is None else f"dice_{config.target_label}"
    rows = []
    for z, array, geom in _items(gt, geometry, config.slices):
        if config.target_label is not None and config.target_label not in present_labels(array):
            continue
        zword = 0 if z is None else z + 1
        stem = task.case if z is None else f"{task.case}__z{z:02d}"
        gt_slice_file = ""
        if z is not None:
            gt_slice_file = f"gt/{stem}.nii.gz"
            write_image(out_dir / gt_slice_file, array, geom)
        assignment = assign_bins(config.per_case, len(config.bins), _seed_state(config.seed, key, zword, 0))
        seen: dict[int, int] = {}
        for index, b in enumerate(assignment):
            k = seen.get(b, 0)
            seen[b] = k + 1
            seed = _seed_state(config.seed, key, zword, 1, index)
            result = degrade_to_bin(array, geom.spacing, config.bins[b], np.random.default_rng(seed), labels=labels,
                                    target_label=config.target_label, max_attempts=config.max_attempts)
            rel = f"labels/{stem}__b{b}_k{k}.nii.gz"
            write_image(out_dir / rel, result.label.astype(array.dtype, copy=False), geom)
            quality = mask_quality(result.label, array, geom.spacing, labels, settings=settings)
            rows.append({
                "case": task.case, "file": rel, "source": "synthetic", "bin": str(config.bins[b]), "bin_index": b,
                "k": k, "slice": "" if z is None else z, "binned_on": binned_on,
                "in_bin": config.bins[b].contains(quality[binned_on]),
                **quality,
                "operations": ";".join(result.operations), "strength": round(result.strength, 6),
                "attempts": result.attempts, "evaluations": result.evaluations, "seed": seed,
                "gt_file": str(gt_path), "gt_slice_file": gt_slice_file,
                "note": result.note if not config.bins[b].contains(quality[binned_on]) else "",
            })
    frame = _frame(rows, labels)
    files = [f for f in list(frame["file"]) + list(frame["gt_slice_file"]) if f]
    return CaseResult(table=frame, files=files, warnings=warnings)


def _frame(rows: list[dict], labels: Sequence[int]) -> pd.DataFrame:
    per_class = [f"{m}_{c}" for m in ("dice", "hd95", "nsd") for c in labels]
    columns = BASE_COLUMNS[:12] + per_class + BASE_COLUMNS[12:]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------
# A folder
# --------------------------------------------------------------------------------------------


def _images_for(gt_dir: Path, images_dir: Path | str | None) -> dict[str, list[Path]]:
    if images_dir is None:
        return {}
    if images_dir == "auto":
        name = gt_dir.name
        candidate = gt_dir.parent / ("images" + name[len("labels"):]) if name.startswith("labels") else None
        if candidate is None or not candidate.is_dir():
            return {}
        images_dir = candidate
    return list_image_files(Path(images_dir))


def degrade_folder(
    gt_dir: str | Path,
    out_dir: str | Path,
    config: DegradeConfig | None = None,
    *,
    per_case: int = 5,
    seed: int = 0,
    bins: Sequence[DiceBin] = NNQC_BINS,
    slices: bool = False,
    target_label: int | None = None,
    tolerance_mm: float = 1.0,
    max_attempts: int = 8,
    images_dir: str | Path | None = "auto",
    jobs: int = 1,
    scheduler: str | None = None,
    progress: bool = False,
) -> DegradeResult:
    """Degrade every ground truth of ``gt_dir`` into ``out_dir`` (module docstring).

    ``images_dir``: folder of the images whose geometry must match the labels (``"auto"``: the
    sibling ``imagesTr`` of a ``labelsTr`` folder when there is one; ``None``: no check).
    Deterministic for a given ``seed`` whatever ``jobs``. ``config``: a :class:`DegradeConfig`
    to use instead of the keyword settings (its label set, when left at the default, comes from
    ``dataset.json``).
    """
    gt_dir, out = Path(gt_dir), Path(out_dir)
    info = find_dataset_json(gt_dir)
    files = list_label_files(gt_dir, file_ending=info.file_ending if info else None)
    if not files:
        endings = (info.file_ending if info and info.file_ending else ", ".join(LABEL_EXTENSIONS))
        raise InputError(f"no label files ({endings}) found", gt_dir)
    label_set = LabelSet.from_dataset_info(info)
    if config is None:
        config = DegradeConfig(
            bins=tuple(bins), per_case=per_case, seed=seed, slices=slices, target_label=target_label,
            tolerance_mm=tolerance_mm, max_attempts=max_attempts, label_set=label_set,
        )
    elif config.label_set == LabelSet():
        config = replace(config, label_set=label_set)
    dataset_labels = config.labels
    images = _images_for(gt_dir, images_dir)
    tasks = [CaseTask(case, {"gt": (path,), "image": tuple(images.get(case, ()))}) for case, path in files.items()]
    report = run_cases(partial(degrade_case, config=config, out_dir=out), tasks, out, settings=config, jobs=jobs,
                       scheduler=scheduler, progress=progress, description="degrade")
    manifest = report.table if len(report.table) else _frame([], dataset_labels or ())
    manifest = manifest[[c for c in _column_order(manifest.columns)]]
    if len(manifest):  # a reused case's row holds the path of the run that made it: this run's instead
        paths = {task.case: str(task.path("gt")) for task in tasks}
        manifest = manifest.assign(gt_file=manifest["case"].map(paths).fillna(manifest["gt_file"]))
    write_csv_atomic(out / "manifest.csv", manifest)
    summary = {
        "settings": config.to_dict(),
        "bins": bin_summary(manifest, config.bins),
        "cases": {"degraded": sorted(report.done), "failed": report.failed, "skipped": report.skipped,
                  "reused": sorted(report.reused)},
    }
    write_json_atomic(out / "summary.json", summary)
    if tasks and not report.done and not report.failed:  # every case skipped: nothing was made, say so
        what = "foreground" if config.target_label is None else f"label {config.target_label}"
        raise InputError(f"no case has {what} to degrade ({len(report.skipped)} case(s), all skipped)", gt_dir)
    return DegradeResult(manifest=manifest, failed=report.failed, skipped=report.skipped, reused=sorted(report.reused),
                         summary=summary, warnings=report.warnings, failure_kinds=report.failure_kinds, report=report)


def _column_order(columns) -> list[str]:
    per_class = sorted((c for c in columns if c.split("_")[0] in ("dice", "hd95", "nsd") and "_" in c),
                       key=lambda c: (("dice", "hd95", "nsd").index(c.split("_")[0]), _label_key(c.split("_", 1)[1])))
    head = [c for c in BASE_COLUMNS[:12] if c in columns]
    tail = [c for c in BASE_COLUMNS[12:] if c in columns]
    return head + per_class + tail


def _label_key(text: str):
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def bin_summary(manifest: pd.DataFrame, bins: Sequence[DiceBin]) -> list[dict]:
    """Per requested bin: count, min/median/max of the Dice it was binned on, share inside."""
    out = []
    for b in bins:
        rows = manifest[manifest["bin"] == str(b)] if len(manifest) else manifest
        if len(rows):
            column = rows["binned_on"].iloc[0]
            values = rows[column].astype(float)
            out.append({"bin": str(b), "n": int(len(rows)), "min": float(values.min()),
                        "median": float(values.median()), "max": float(values.max()),
                        "in_bin": int(rows["in_bin"].sum()), "fraction_in_bin": float(rows["in_bin"].mean())})
        else:
            out.append({"bin": str(b), "n": 0, "min": None, "median": None, "max": None, "in_bin": 0,
                        "fraction_in_bin": None})
    return out
