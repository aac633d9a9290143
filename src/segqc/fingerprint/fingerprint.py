"""Dataset fingerprints: the properties of an nnU-Net-style folder that preprocessing adapts to.

A fingerprint (nnU-Net, Isensee et al. 2021; nnQC section III-E) records per case and as medians
over the dataset: voxel spacing (mm), array shape, the shape after cropping to the non-zero image
region, the foreground (label > 0) size, orientation codes, label values and names, and per image
channel the foreground intensity distribution (mean, std, min, max, 0.5 and 99.5 percentiles) and
the normalisation scheme that follows from the channel's modality.

Conventions:

* Per-case ``shape``, ``spacing``, ``cropped_shape`` and ``foreground_bbox_shape`` are in the
  file's own array axis order (ITK index order, see :mod:`segqc.io.images`) and come with the
  case's orientation code (e.g. ``"RAS"``, ``"LPS"``: the anatomical direction each array axis
  points towards).
* Dataset medians (``median_spacing``, ``median_shape``, ...) are in **RAS axis order**: entry 0
  belongs to the left-right axis, 1 to anterior-posterior, 2 to inferior-superior, whatever the
  files' axis order. This is the axis order of the arrays after :mod:`segqc.fingerprint.
  preprocessing` reoriented them, so the medians apply there directly. (2D images: R, A.)
* "Non-zero region": voxels where any channel is non-zero (nnU-Net's crop); its bounding box gives
  ``cropped_shape`` (all zeros for an all-zero image). "Foreground": label > 0.
* Intensities: each case contributes up to ``samples_per_case`` foreground voxels, drawn without
  replacement by a generator seeded from ``(seed, crc32(case id))`` (all voxels when there are
  fewer), so the same folder always gives the same fingerprint, serially or in parallel. Mean, std
  (population, ddof 0) and the percentiles (numpy's linear interpolation) come from those samples,
  pooled over the dataset; min and max are exact over all foreground voxels.
* Modality per channel from the ``dataset.json`` channel name: ``"CT"`` if the name contains CT as
  a separate token (``"CT"``, ``"ct_venous"``, ``"PET-CT"``; case-insensitive), ``"MR"`` if it
  mentions MR / T1 / T2 / FLAIR / ADC / DWI, else ``"other"``. CT channels are normalised with the
  ``"ct"`` scheme (clip to the dataset foreground 0.5/99.5 percentiles, z-score with the dataset
  foreground mean/std); all other channels with ``"percentile"`` (per image: clip to its own
  0.5/99.5 percentiles, scale to [0, 1]), because MR and other intensities have no fixed unit.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segqc.errors import GeometryMismatchError, InputError, SegqcError
from segqc.io.atomic import write_text_atomic
from segqc.io.datasets import Dataset, DatasetInfo
from segqc.io.geometry import check_same_geometry
from segqc.io.images import read_image, read_label_map
from segqc.metrics.counts import value_counts

__all__ = [
    "CaseFingerprint",
    "ChannelFingerprint",
    "DatasetFingerprint",
    "IntensityStats",
    "channel_modality",
    "check_image_label_grid",
    "compute_fingerprint",
    "normalization_scheme",
    "to_ras_order",
]

FORMAT_VERSION = 1
PERCENTILES: tuple[float, float] = (0.5, 99.5)
#: Origins of image channels and label map may differ by this much (mm) and still count as one grid.
ORIGIN_ATOL_MM = 0.01

_RAS_AXIS = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}
_CT_TOKEN = re.compile(r"(?<![a-z])ct(?![a-z])")
_MR_TOKEN = re.compile(r"mr|(?<![a-z])(t1|t2|flair|adc|dwi|pd)")


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntensityStats:
    """Foreground intensity distribution of one channel (the image's own units, e.g. HU).

    ``n_samples`` voxels were used for mean, std and percentiles; ``min``/``max`` are exact over
    all foreground voxels. NaN everywhere (``null`` in JSON) when there is no foreground.
    """

    mean: float
    std: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float
    n_samples: int

    @classmethod
    def from_samples(cls, samples: np.ndarray, *, low: float | None = None,
                     high: float | None = None) -> IntensityStats:
        """Statistics of ``samples``; ``low``/``high`` override min/max (exact values)."""
        samples = np.asarray(samples, dtype=np.float64).ravel()
        if samples.size == 0:
            nan = float("nan")
            return cls(nan, nan, nan, nan, nan, nan, 0)
        p_low, p_high = np.percentile(samples, PERCENTILES)
        return cls(
            mean=float(samples.mean()),
            std=float(samples.std()),
            min=float(samples.min() if low is None else low),
            max=float(samples.max() if high is None else high),
            percentile_00_5=float(p_low),
            percentile_99_5=float(p_high),
            n_samples=int(samples.size),
        )

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "mean": _json_float(self.mean),
            "std": _json_float(self.std),
            "min": _json_float(self.min),
            "max": _json_float(self.max),
            "percentile_00_5": _json_float(self.percentile_00_5),
            "percentile_99_5": _json_float(self.percentile_99_5),
            "n_samples": self.n_samples,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntensityStats:
        return cls(
            mean=_float(data["mean"]),
            std=_float(data["std"]),
            min=_float(data["min"]),
            max=_float(data["max"]),
            percentile_00_5=_float(data["percentile_00_5"]),
            percentile_99_5=_float(data["percentile_99_5"]),
            n_samples=int(data["n_samples"]),
        )


def to_ras_order(values: Sequence[float], orientation: str) -> tuple[float, ...]:
    """Per-array-axis ``values`` (e.g. a spacing) in RAS axis order, for an array whose axes
    point as the axis codes ``orientation`` say (e.g. ``"LPS"``; ``"LP"`` in 2D)."""
    out = [0.0] * len(values)
    for axis, code in enumerate(orientation):
        out[_RAS_AXIS[code]] = float(values[axis])
    return tuple(out)


@dataclass(frozen=True)
class CaseFingerprint:
    """Properties of one case. Shapes and spacings are in the file's array axis order."""

    case: str
    image_files: tuple[str, ...]  # relative to the dataset folder, one per channel
    label_file: str  # relative to the dataset folder
    shape: tuple[int, ...]
    spacing: tuple[float, ...]  # mm per array axis
    orientation: str  # e.g. "RAS": direction each array axis points towards
    cropped_shape: tuple[int, ...]  # bounding box of the non-zero image region (voxels)
    foreground_voxels: int  # label > 0
    foreground_volume_ml: float  # ml; a 2D case counts as one slice 1 mm thick (mm² / 1000)
    foreground_bbox_shape: tuple[int, ...]  # bounding box of label > 0 (voxels); zeros if empty
    label_values: tuple[int, ...]  # values present in the label map, background included
    intensity: tuple[IntensityStats, ...]  # per channel, this case's foreground

    @property
    def ras_axes(self) -> tuple[int, ...]:
        """RAS axis (0 = R-L, 1 = A-P, 2 = S-I) of each array axis, from the orientation code."""
        return tuple(_RAS_AXIS[c] for c in self.orientation)

    def to_ras_order(self, values: Sequence[float]) -> tuple[float, ...]:
        """Reorder per-array-axis ``values`` (e.g. ``spacing``) into RAS axis order."""
        return to_ras_order(values, self.orientation)

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "image_files": list(self.image_files),
            "label_file": self.label_file,
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "orientation": self.orientation,
            "cropped_shape": list(self.cropped_shape),
            "foreground_voxels": self.foreground_voxels,
            "foreground_volume_ml": self.foreground_volume_ml,
            "foreground_bbox_shape": list(self.foreground_bbox_shape),
            "label_values": list(self.label_values),
            "intensity": [s.to_dict() for s in self.intensity],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseFingerprint:
        return cls(
            case=str(data["case"]),
            image_files=tuple(data["image_files"]),
            label_file=str(data["label_file"]),
            shape=tuple(int(v) for v in data["shape"]),
            spacing=tuple(float(v) for v in data["spacing"]),
            orientation=str(data["orientation"]),
            cropped_shape=tuple(int(v) for v in data["cropped_shape"]),
            foreground_voxels=int(data["foreground_voxels"]),
            foreground_volume_ml=float(data["foreground_volume_ml"]),
            foreground_bbox_shape=tuple(int(v) for v in data["foreground_bbox_shape"]),
            label_values=tuple(int(v) for v in data["label_values"]),
            intensity=tuple(IntensityStats.from_dict(s) for s in data["intensity"]),
        )


@dataclass(frozen=True)
class ChannelFingerprint:
    """One image channel: its name, modality, normalisation scheme and foreground intensities
    pooled over the dataset."""

    index: int
    name: str
    modality: str  # "CT", "MR" or "other"
    normalization: str  # "ct" or "percentile" (see the module docstring)
    intensity: IntensityStats

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "modality": self.modality,
            "normalization": self.normalization,
            "intensity": self.intensity.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChannelFingerprint:
        return cls(
            index=int(data["index"]),
            name=str(data["name"]),
            modality=str(data["modality"]),
            normalization=str(data["normalization"]),
            intensity=IntensityStats.from_dict(data["intensity"]),
        )


@dataclass(frozen=True)
class DatasetFingerprint:
    """Fingerprint of a dataset folder. Medians are in RAS axis order (see module docstring)."""

    dataset_dir: str
    name: str | None
    labels: dict[int, str]  # from dataset.json, value -> name
    label_values_present: tuple[int, ...]  # union over the label maps
    channels: tuple[ChannelFingerprint, ...]
    orientation: str  # most common orientation code (ties: alphabetically first)
    orientations: dict[str, int]  # orientation code -> number of cases
    median_spacing: tuple[float, ...]  # mm, RAS axis order
    median_shape: tuple[float, ...]  # voxels, RAS axis order
    median_cropped_shape: tuple[float, ...]  # voxels, RAS axis order
    median_foreground_bbox_shape: tuple[float, ...]  # voxels, RAS axis order
    median_foreground_voxels: float
    median_foreground_volume_ml: float
    samples_per_case: int
    seed: int
    cases: tuple[CaseFingerprint, ...] = field(repr=False)

    @property
    def n_cases(self) -> int:
        return len(self.cases)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality of each channel."""
        return tuple(c.modality for c in self.channels)

    @property
    def n_classes(self) -> int:
        """Number of label values named in dataset.json or present, background included."""
        return len(set(self.labels) | set(self.label_values_present) | {0})

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "segqc-fingerprint",
            "version": FORMAT_VERSION,
            "dataset_dir": self.dataset_dir,
            "name": self.name,
            "n_cases": self.n_cases,
            "axis_order_of_medians": "RAS",
            "median_spacing": list(self.median_spacing),
            "median_shape": list(self.median_shape),
            "median_cropped_shape": list(self.median_cropped_shape),
            "median_foreground_bbox_shape": list(self.median_foreground_bbox_shape),
            "median_foreground_voxels": self.median_foreground_voxels,
            "median_foreground_volume_ml": self.median_foreground_volume_ml,
            "orientation": self.orientation,
            "orientations": dict(self.orientations),
            "labels": {str(k): v for k, v in self.labels.items()},
            "label_values_present": list(self.label_values_present),
            "channels": [c.to_dict() for c in self.channels],
            "sampling": {"samples_per_case": self.samples_per_case, "seed": self.seed,
                         "percentiles": list(PERCENTILES)},
            "cases": [c.to_dict() for c in self.cases],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetFingerprint:
        """Inverse of :meth:`to_dict`; raises :class:`InputError` on malformed data."""
        if data.get("format") != "segqc-fingerprint":
            raise InputError("not a segqc fingerprint (missing \"format\": \"segqc-fingerprint\")")
        if data.get("version") != FORMAT_VERSION:
            raise InputError(f"fingerprint version {data.get('version')!r} is not supported "
                             f"(expected {FORMAT_VERSION})")
        try:
            sampling = data["sampling"]
            return cls(
                dataset_dir=str(data["dataset_dir"]),
                name=data.get("name"),
                labels={int(k): str(v) for k, v in data["labels"].items()},
                label_values_present=tuple(int(v) for v in data["label_values_present"]),
                channels=tuple(ChannelFingerprint.from_dict(c) for c in data["channels"]),
                orientation=str(data["orientation"]),
                orientations={str(k): int(v) for k, v in data["orientations"].items()},
                median_spacing=tuple(_float(v) for v in data["median_spacing"]),
                median_shape=tuple(_float(v) for v in data["median_shape"]),
                median_cropped_shape=tuple(_float(v) for v in data["median_cropped_shape"]),
                median_foreground_bbox_shape=tuple(
                    _float(v) for v in data["median_foreground_bbox_shape"]),
                median_foreground_voxels=_float(data["median_foreground_voxels"]),
                median_foreground_volume_ml=_float(data["median_foreground_volume_ml"]),
                samples_per_case=int(sampling["samples_per_case"]),
                seed=int(sampling["seed"]),
                cases=tuple(CaseFingerprint.from_dict(c) for c in data["cases"]),
            )
        except KeyError as exc:
            raise InputError(f"malformed fingerprint: an entry {exc.args[0]!r} is missing") from None
        except (TypeError, ValueError, AttributeError):
            raise InputError("malformed fingerprint: an entry holds a value of the wrong kind (e.g. text where "
                             "numbers or a list belong)") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fingerprint as JSON atomically; return the path."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DatasetFingerprint:
        """Read a fingerprint written by :meth:`save`; InputError naming the file if malformed."""
        path = Path(path)
        if not path.is_file():
            raise InputError("file not found", path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON: {exc.msg} (line {exc.lineno})", path) from None
        except InputError as exc:
            raise InputError(exc.problem, path) from None


# --------------------------------------------------------------------------------------------
# Modality
# --------------------------------------------------------------------------------------------


def channel_modality(name: str) -> str:
    """``"CT"``, ``"MR"`` or ``"other"`` from a ``dataset.json`` channel name (see module doc)."""
    lower = name.lower()
    if _CT_TOKEN.search(lower):
        return "CT"
    if _MR_TOKEN.search(lower):
        return "MR"
    return "other"


def normalization_scheme(modality: str) -> str:
    """``"ct"`` for CT, ``"percentile"`` for every other modality."""
    return "ct" if modality == "CT" else "percentile"


# --------------------------------------------------------------------------------------------
# Computing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CaseJob:
    case: str
    image_paths: tuple[Path, ...]
    label_path: Path
    root: Path
    allowed_labels: frozenset[int]
    dataset_json: Path


def compute_fingerprint(
    dataset_dir: str | os.PathLike[str],
    *,
    cases: Iterable[str] | None = None,
    max_cases: int | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    samples_per_case: int = 10_000,
    seed: int = 0,
    progress: bool = False,
) -> DatasetFingerprint:
    """Fingerprint of an nnU-Net-style folder (``imagesTr/``, ``labelsTr/``, ``dataset.json``).

    ``cases`` restricts to these case ids, ``max_cases`` to the first N cases in sorted order
    (both for quick looks and tests). ``jobs`` worker processes, or ``scheduler`` a Dask
    scheduler address (see :mod:`segqc.execution`); the result does not depend on them.
    ``samples_per_case`` foreground voxels per case feed the intensity statistics
    (deterministic given ``seed``).

    Raises :class:`InputError` (one line naming the file or folder) when ``dataset.json`` is
    missing or names no labels, ``labelsTr``/``imagesTr`` is missing or empty, a case has a label
    map but no image or the reverse, the number of channels differs from ``dataset.json``, a file
    cannot be read, a label map holds values that ``dataset.json`` does not name, or an image and
    its label map do not share one voxel grid (shape, spacing, direction, origin within
    ``ORIGIN_ATOL_MM``). The first failing case in sorted order is reported.
    """
    from segqc.execution import map_cases

    if samples_per_case < 1:
        raise ValueError(f"samples_per_case must be >= 1, got {samples_per_case}")
    dataset = Dataset.open(dataset_dir)
    if not dataset.info.labels and not dataset.info.regions:
        raise InputError("names no labels; add e.g. \"labels\": {\"background\": 0, ...}", dataset.info.path)
    root, info = dataset.root, dataset.info
    jobs_list = _case_jobs(dataset, cases=cases, max_cases=max_cases)

    function = functools.partial(_fingerprint_case, samples_per_case=samples_per_case, seed=seed)
    results: dict[str, tuple[CaseFingerprint, np.ndarray] | SegqcError] = {}
    for job, result in map_cases(function, jobs_list, jobs=jobs, scheduler=scheduler, description="fingerprint",
                                 progress=progress):
        results[job.case] = result
    failed = [outcome for job in jobs_list if isinstance(outcome := results[job.case], SegqcError)]
    if len(failed) == 1:
        raise failed[0]
    if failed:  # every broken case at once, on one line: a fingerprint of part of the dataset would mislead
        shown = "; ".join(str(error) for error in failed[:3])
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        raise InputError(f"{len(failed)} of {len(jobs_list)} cases cannot be used, and the fingerprint needs every "
                         f"case: {shown}{more}", root)
    ordered = [outcome for job in jobs_list if not isinstance(outcome := results[job.case], SegqcError)]
    return _aggregate(root, info, ordered, samples_per_case, seed)


def _case_jobs(dataset: Dataset, *, cases: Iterable[str] | None, max_cases: int | None) -> list[_CaseJob]:
    info, label_files, image_files = dataset.info, dataset.label_files, dataset.image_files
    selected = sorted(dataset.select(cases))
    if max_cases is not None:
        if max_cases < 1:
            raise ValueError(f"max_cases must be >= 1, got {max_cases}")
        selected = selected[:max_cases]
    allowed = frozenset(info.labels) | {v for vs in info.regions.values() for v in vs} | {0}
    assert info.path is not None
    return [
        _CaseJob(case=c, image_paths=tuple(image_files[c]), label_path=label_files[c], root=dataset.root,
                 allowed_labels=frozenset(allowed), dataset_json=info.path)
        for c in selected
    ]


def _fingerprint_case(job: _CaseJob, *, samples_per_case: int,
                      seed: int) -> tuple[CaseFingerprint, np.ndarray]:
    """CaseFingerprint and the sampled foreground intensities, shape (channels, n_samples)."""
    label = read_label_map(job.label_path)
    label_values = _label_values(label.array)
    unknown = sorted(set(label_values) - job.allowed_labels)
    if unknown:
        raise InputError(
            f"label value(s) {', '.join(map(str, unknown))} not named in {job.dataset_json}",
            job.label_path,
        )
    channels = []
    for path in job.image_paths:
        image = read_image(path, finite=True)
        check_image_label_grid(image.geometry, label.geometry, path, job.label_path)
        channels.append(image.array)

    fg = label.array > 0
    n_fg = int(np.count_nonzero(fg))
    geometry = label.geometry
    rng = np.random.default_rng([seed, zlib.crc32(job.case.encode("utf-8"))])
    chosen = None
    if n_fg > samples_per_case:
        chosen = np.sort(rng.choice(n_fg, size=samples_per_case, replace=False))
    samples, stats = [], []
    for array in channels:
        values = array[fg]  # C order of the logical (x, y, z) array: independent of memory layout
        picked = values if chosen is None else values[chosen]
        samples.append(picked.astype(np.float32, copy=False))
        stats.append(IntensityStats.from_samples(
            picked,
            low=float(values.min()) if values.size else None,
            high=float(values.max()) if values.size else None,
        ))
    nonzero = np.zeros(geometry.shape, dtype=bool)
    for array in channels:
        nonzero |= array != 0
    fingerprint = CaseFingerprint(
        case=job.case,
        image_files=tuple(_relative(p, job.root) for p in job.image_paths),
        label_file=_relative(job.label_path, job.root),
        shape=geometry.shape,
        spacing=geometry.spacing,
        orientation=geometry.orientation(),
        cropped_shape=_bbox_shape(nonzero),
        foreground_voxels=n_fg,
        foreground_volume_ml=n_fg * geometry.voxel_volume_ml(),
        foreground_bbox_shape=_bbox_shape(fg),
        label_values=label_values,
        intensity=tuple(stats),
    )
    sample_array = (np.stack(samples) if samples else np.zeros((0, 0), np.float32))
    return fingerprint, sample_array


def check_image_label_grid(image_geometry, label_geometry, image_path: Path, label_path: Path) -> None:
    """InputError naming the image file unless image and label map share one voxel grid (origins
    within :data:`ORIGIN_ATOL_MM`)."""
    try:
        check_same_geometry(image_geometry, label_geometry, pred_path=image_path,
                            gt_path=label_path, origin_atol_mm=ORIGIN_ATOL_MM, roles=("image", "label map"))
    except GeometryMismatchError as exc:
        raise InputError(f"{exc.problem}; an image and its label map must share one voxel grid",
                         image_path) from None


def _label_values(array: np.ndarray) -> tuple[int, ...]:
    values, _ = value_counts(array)
    return tuple(int(v) for v in values)


def _bbox_shape(mask: np.ndarray) -> tuple[int, ...]:
    """Extent (voxels) of the bounding box of ``mask`` along each axis; zeros if empty."""
    extents = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        extents.append(int(hit[-1] - hit[0] + 1) if hit.size else 0)
    return tuple(extents)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _aggregate(root: Path, info: DatasetInfo, results: list[tuple[CaseFingerprint, np.ndarray]],
               samples_per_case: int, seed: int) -> DatasetFingerprint:
    cases = tuple(fp for fp, _ in results)
    _check_dimensions(root, cases)
    n_channels = len(cases[0].image_files)
    channels = []
    for index in range(n_channels):
        pooled = np.concatenate([samples[index] for _, samples in results])
        lows = [c.intensity[index].min for c in cases if c.foreground_voxels]
        highs = [c.intensity[index].max for c in cases if c.foreground_voxels]
        stats = IntensityStats.from_samples(pooled, low=min(lows) if lows else None,
                                            high=max(highs) if highs else None)
        name = info.channel_names.get(index, str(index))
        modality = channel_modality(name)
        channels.append(ChannelFingerprint(index=index, name=name, modality=modality,
                                           normalization=normalization_scheme(modality),
                                           intensity=stats))
    counts = Counter(c.orientation for c in cases)
    orientation = min(counts, key=lambda code: (-counts[code], code))

    def ras_median(attribute: str) -> tuple[float, ...]:
        rows = np.array([c.to_ras_order(getattr(c, attribute)) for c in cases], dtype=float)
        return tuple(float(v) for v in np.median(rows, axis=0))

    present = sorted({v for c in cases for v in c.label_values})
    return DatasetFingerprint(
        dataset_dir=str(root),
        name=_dataset_name(info),
        labels=dict(info.labels),
        label_values_present=tuple(present),
        channels=tuple(channels),
        orientation=orientation,
        orientations=dict(sorted(counts.items())),
        median_spacing=ras_median("spacing"),
        median_shape=ras_median("shape"),
        median_cropped_shape=ras_median("cropped_shape"),
        median_foreground_bbox_shape=ras_median("foreground_bbox_shape"),
        median_foreground_voxels=float(np.median([c.foreground_voxels for c in cases])),
        median_foreground_volume_ml=float(np.median([c.foreground_volume_ml for c in cases])),
        samples_per_case=samples_per_case,
        seed=seed,
        cases=cases,
    )


def _check_dimensions(root: Path, cases: Sequence[CaseFingerprint]) -> None:
    """InputError naming the first label map whose number of dimensions differs from most cases'
    (ties: the first case's): spacings and shapes of one dataset have one length."""
    counts = Counter(len(c.shape) for c in cases)  # in case order: a tie goes to the first case's
    common = max(counts, key=counts.__getitem__)
    for case in cases:
        if len(case.shape) != common:
            raise InputError(f"{len(case.shape)}D while other cases are {common}D", root / case.label_file)


def _dataset_name(info: DatasetInfo) -> str | None:
    if info.path is None:
        return None
    try:
        name = json.loads(info.path.read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)
