"""Preprocessing derived from a dataset fingerprint (nnQC section III-E), and its exact inverse.

Forward (:func:`preprocess_case`), for one case given as arrays in ITK index order with their
:class:`~segqc.io.geometry.Geometry`:

1. **Reorient to RAS** by permuting and flipping array axes (no interpolation): afterwards array
   axis 0 points towards the patient's Right, 1 Anterior, 2 Superior (nibabel/DICOM code
   ``"RAS"``; ITK's LPS direction matrix is read as such). Oblique grids go to the closest axes.
2. **Resample in-plane** (the two axes other than ``plan.slice_axis``; slices are not touched,
   they are usually thick) to ``plan.target_spacing``: images with spline order
   ``plan.image_order`` (default 1, linear), labels nearest neighbour. An axis whose spacing
   already matches (relative tolerance ``plan.spacing_rtol``) is not resampled, so the round trip
   is exact there. The new grid has ``round(n * spacing / target)`` voxels of exactly the target
   spacing and the same centre as the old one.
3. **Normalise** each channel (after resampling, so the output bounds hold exactly):
   ``"ct"``: clip to the dataset's foreground 0.5/99.5 percentiles, then ``(x - mean) / std``
   with the dataset's foreground mean and std (nnU-Net's CT scheme); ``"percentile"``: clip to
   this image's own ``plan.percentiles`` (default 0.5 and 99.5, over all its voxels) and scale to
   [0, 1].
4. **Crop / pad in-plane** to ``plan.size`` x ``plan.size`` voxels centred on the bounding box of
   the foreground: of the largest 26-connected component of the label map (label > 0) when given
   — so scattered false positives of an imperfect segmentation do not pull the window off the
   organ; for a ground truth that is one connected structure this is all of it — else of the
   non-zero region of the raw image (any channel != 0), else the grid centre. Padding gets the
   lowest normalised value
   (``"ct"``: ``(clip_low - mean) / std``; ``"percentile"``: 0), labels 0. Foreground beyond the
   window is cut (inverse: background there).
5. **Slices**: the output arrays put the slice axis last, in RAS order (inferior to superior for
   axial slices): image ``(C, size, size, n_slices)`` float32, label ``(size, size, n_slices)``
   with the input's integer dtype. ``slice_ratios[k] = k / (n_slices - 1)`` in [0, 1]
   (0 = first slice in RAS order); a single slice gets 0.5.

Inverse (:func:`restore_label`, :func:`restore_image`): a result on the preprocessed grid (the
layout of :class:`PreprocessedCase`) goes back onto the original grid: un-crop (0 / ``fill``
outside the window), resample back (labels nearest neighbour, images linear), un-flip,
un-permute. Intensities are not un-normalised. Where no resampling happens and the foreground fits
the window, ``restore_label(preprocess_case(..., label=x).label) == x`` exactly; with in-plane
upsampling (target spacing finer than the image) it is also exact because every original voxel
is the nearest neighbour of the output voxels nearest to it.

2D inputs (e.g. PNG, geometry with two axes) are treated as one axial slice (a third axis of 1 mm
pointing Superior) and restored as 2D.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cc3d
import numpy as np
from scipy import ndimage

from segqc.errors import InputError
from segqc.fingerprint.fingerprint import PERCENTILES, DatasetFingerprint
from segqc.io.atomic import write_text_atomic
from segqc.io.geometry import Geometry, check_same_geometry
from segqc.io.images import Image, read_image, read_label_map
from segqc.windows import crop_window, paste_window

__all__ = [
    "FIELDS_OF_VIEW",
    "ChannelNormalization",
    "PreprocessedCase",
    "PreprocessingPlan",
    "Transform",
    "check_field_of_view",
    "foreground_field_of_view",
    "plan_from_fingerprint",
    "preprocess_case",
    "preprocess_files",
    "preprocess_images",
    "ras_reorientation",
    "reorient_to_ras",
    "restore_image",
    "restore_label",
    "slice_count",
    "transform_label",
    "window_mask",
]

_LPS_TO_RAS = (-1.0, -1.0, 1.0)

_T = TypeVar("_T")


def _xyz(values: Iterable[_T]) -> tuple[_T, _T, _T]:
    """The per-axis values of a 3D grid as a 3-tuple (ValueError unless there are exactly three)."""
    x, y, z = values
    return x, y, z


# --------------------------------------------------------------------------------------------
# Plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelNormalization:
    """How one channel is normalised (see the module docstring).

    ``"ct"`` uses ``clip_low``/``clip_high`` (image units, e.g. HU) and ``mean``/``std``;
    ``"percentile"`` uses ``percentiles`` (in percent) of each image's own voxels.
    """

    scheme: str = "percentile"
    clip_low: float | None = None
    clip_high: float | None = None
    mean: float | None = None
    std: float | None = None
    percentiles: tuple[float, float] = PERCENTILES

    def __post_init__(self) -> None:
        if self.scheme not in ("ct", "percentile"):
            raise ValueError(f"unknown normalisation scheme {self.scheme!r}; use 'ct' or "
                             "'percentile'")
        if self.scheme == "ct":
            values = (self.clip_low, self.clip_high, self.mean, self.std)
            if any(v is None or not np.isfinite(v) for v in values):
                raise ValueError("the 'ct' scheme needs finite clip_low, clip_high, mean and std "
                                 "(the dataset has no foreground?)")
            assert self.std is not None and self.clip_low is not None and self.clip_high is not None
            if self.std <= 0 or self.clip_low > self.clip_high:
                raise ValueError(f"invalid CT normalisation: std {self.std}, clip "
                                 f"[{self.clip_low}, {self.clip_high}]")
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got "
                             f"{self.percentiles}")
        object.__setattr__(self, "percentiles", (float(low), float(high)))

    @property
    def pad_value(self) -> float:
        """Lowest value after normalisation, used for padding."""
        if self.scheme == "ct":
            assert self.clip_low is not None and self.mean is not None and self.std is not None
            return (self.clip_low - self.mean) / self.std
        return 0.0


@dataclass(frozen=True)
class PreprocessingPlan:
    """Settings of :func:`preprocess_case`; build one with :func:`plan_from_fingerprint`.

    ``target_spacing``: in-plane spacing in mm of the two non-slice axes, in RAS order (e.g.
    (R-L, A-P) for axial slices). ``size``: in-plane output size in voxels (256 as nnQC; 96-128
    for CPU configs). ``slice_axis``: RAS axis the slices are taken along (2 = axial).
    ``image_order``: spline order of image resampling (0-5). ``spacing_rtol``: spacings this close
    (relative) count as equal and are not resampled.
    """

    target_spacing: tuple[float, float]
    channels: tuple[ChannelNormalization, ...]
    size: int = 256
    slice_axis: int = 2
    image_order: int = 1
    spacing_rtol: float = 1e-3

    def __post_init__(self) -> None:
        spacing = tuple(float(s) for s in self.target_spacing)
        if len(spacing) != 2 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise ValueError(f"target_spacing needs two positive in-plane spacings (mm), got "
                             f"{self.target_spacing}")
        if not self.channels:
            raise ValueError("a plan needs at least one channel normalisation")
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis}")
        if not 0 <= self.image_order <= 5:
            raise ValueError(f"image_order must be 0..5, got {self.image_order}")
        object.__setattr__(self, "target_spacing", spacing)
        object.__setattr__(self, "channels", tuple(self.channels))

    @property
    def inplane_axes(self) -> tuple[int, int]:
        """The two RAS axes that span a slice, in increasing order."""
        a, b = (axis for axis in range(3) if axis != self.slice_axis)
        return a, b

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_spacing"] = list(self.target_spacing)
        data["channels"] = [dict(asdict(c), percentiles=list(c.percentiles))
                            for c in self.channels]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessingPlan:
        try:
            return cls(
                target_spacing=tuple(data["target_spacing"]),
                channels=tuple(
                    ChannelNormalization(**dict(c, percentiles=tuple(c["percentiles"])))
                    for c in data["channels"]
                ),
                size=int(data["size"]),
                slice_axis=int(data["slice_axis"]),
                image_order=int(data["image_order"]),
                spacing_rtol=float(data["spacing_rtol"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed preprocessing plan: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PreprocessingPlan:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise InputError(f"cannot read plan: {exc.strerror or exc}", path) from None
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON: {exc.msg} (line {exc.lineno})", path) from None
        except InputError as exc:
            raise InputError(exc.problem, path) from None


FIELDS_OF_VIEW = ("spacing", "foreground")
"""How a plan sizes its in-plane window (:func:`plan_from_fingerprint`): ``spacing`` — ``size`` pixels
at the dataset's median spacing; ``foreground`` — the same, widened where that is too narrow for
the training ground truths' foreground (:func:`foreground_field_of_view`); or a number: the
window's width in mm."""

FOREGROUND_QUANTILE = 95.0
"""Percentile over the training cases of their foreground's in-plane extent that the
``foreground`` field of view covers (so that one stray label far from the organ does not coarsen
every case)."""

FOREGROUND_MARGIN = 1.1
"""The ``foreground`` field of view is the extent at :data:`FOREGROUND_QUANTILE` times this."""

FINEST_PIXEL_SHARE = 0.25
"""A width in mm may not make pixels finer than this share of the data's median in-plane spacing
(every image is resampled whole before the crop: 4 x finer is 16 x the pixels of a slice)."""


def check_field_of_view(value: Any) -> str:
    """``value`` as a config stores it: ``"spacing"``, ``"foreground"`` or a positive width in mm
    written as a number (``150`` or ``"150"`` -> ``"150"``; a trailing ``mm`` is accepted).
    ValueError naming the choices otherwise."""
    text = str(value).strip().lower()
    if text in FIELDS_OF_VIEW:
        return text
    try:
        mm = float(text.removesuffix("mm").strip())
    except ValueError:
        mm = float("nan")
    if not (np.isfinite(mm) and mm > 0):
        raise ValueError(f"field_of_view must be spacing, foreground or a width in mm > 0, got {value!r}")
    return f"{mm:.12g}"


def foreground_field_of_view(fingerprint: DatasetFingerprint, *, slice_axis: int = 2,
                             quantile: float = FOREGROUND_QUANTILE, margin: float = FOREGROUND_MARGIN) -> float:
    """Width in mm of a square in-plane window that holds the training ground truths' foreground:
    per case the larger in-plane side (mm) of the bounding box of label > 0, its ``quantile``-th
    percentile over the cases with foreground (numpy's linear interpolation), times ``margin``.
    The window is centred on each case's largest connected part (module docstring), so
    structures far apart (e.g. both kidneys) can still reach beyond it; the QC drivers say so.
    0 when no case has foreground (nothing to hold)."""
    extents = []
    for case in fingerprint.cases:
        if not case.foreground_voxels:
            continue
        spacing = list(case.to_ras_order(case.spacing)) + [1.0] * (3 - len(case.spacing))
        box = list(case.to_ras_order(case.foreground_bbox_shape)) + [1] * (3 - len(case.foreground_bbox_shape))
        extents.append(max(box[a] * spacing[a] for a in range(3) if a != slice_axis))
    if not extents:
        return 0.0
    return float(np.percentile(extents, quantile)) * margin


def plan_from_fingerprint(
    fingerprint: DatasetFingerprint,
    *,
    size: int = 256,
    target_spacing: tuple[float, float] | None = None,
    field_of_view: str | float = "spacing",
    slice_axis: int = 2,
    image_order: int = 1,
    percentiles: tuple[float, float] = PERCENTILES,
) -> PreprocessingPlan:
    """Plan for a dataset: per-channel normalisation from the channel's scheme and foreground
    statistics, and the target in-plane spacing (mm) from ``field_of_view``
    (:data:`FIELDS_OF_VIEW`): ``"spacing"`` — the fingerprint's median spacing of the two non-slice
    RAS axes, so the window is ``size`` times that wide; ``"foreground"`` — per axis the larger of
    that median spacing and :func:`foreground_field_of_view` / ``size`` (pixels never finer than
    the data's, the window never narrower than the foreground needs); a number — that width in mm
    / ``size`` on both axes; :class:`InputError` when that makes pixels finer than
    :data:`FINEST_PIXEL_SHARE` of the median spacing. ``target_spacing`` (mm) overrides it."""
    if target_spacing is None:
        choice = check_field_of_view(field_of_view)
        in_plane = [a for a in range(3) if a != slice_axis]
        median = list(fingerprint.median_spacing) + [1.0] * (3 - len(fingerprint.median_spacing))
        target_spacing = (median[in_plane[0]], median[in_plane[1]])
        if choice == "foreground":
            needed = foreground_field_of_view(fingerprint, slice_axis=slice_axis) / size
            target_spacing = (max(target_spacing[0], needed), max(target_spacing[1], needed))
        elif choice != "spacing":
            pixel, finest = float(choice) / size, FINEST_PIXEL_SHARE * min(target_spacing)
            if pixel < finest:
                raise InputError(f"field_of_view {choice} mm at {size} px makes {pixel:.3g} mm pixels, finer than "
                                 f"{FINEST_PIXEL_SHARE:g} of the data's median spacing ({min(target_spacing):.4g} mm); "
                                 f"give at least {finest * size:.4g} mm", fingerprint.dataset_dir)
            target_spacing = (pixel, pixel)
    channels = []
    for channel in fingerprint.channels:
        stats = channel.intensity
        if channel.normalization == "ct":
            channels.append(ChannelNormalization(
                scheme="ct", clip_low=stats.percentile_00_5, clip_high=stats.percentile_99_5,
                mean=stats.mean, std=stats.std, percentiles=percentiles))
        else:
            channels.append(ChannelNormalization(scheme="percentile", percentiles=percentiles))
    return PreprocessingPlan(target_spacing=target_spacing,
                             channels=tuple(channels), size=size, slice_axis=slice_axis,
                             image_order=image_order)


# --------------------------------------------------------------------------------------------
# Reorientation
# --------------------------------------------------------------------------------------------


def ras_reorientation(geometry: Geometry) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """``(permutation, flips)`` that bring an array on ``geometry`` to RAS.

    ``np.transpose(array, permutation)`` followed by reversing every axis ``a`` with
    ``flips[a]`` gives an array whose axes point towards R, A, S (2D: R, A). Each array axis goes
    to the anatomical axis its direction cosine is closest to (as
    :meth:`Geometry.orientation`).
    """
    n = geometry.ndim
    m = np.diag(_LPS_TO_RAS[:n]) @ geometry.direction_matrix()  # RAS direction of each axis
    best = max(itertools.permutations(range(n)),
               key=lambda perm: sum(abs(m[perm[d], d]) for d in range(n)))
    # best[d] = RAS axis of array axis d; output axis a takes the input axis d with best[d] == a
    permutation = tuple(int(d) for d in np.argsort(best))
    flips = tuple(bool(m[a, permutation[a]] < 0) for a in range(n))
    return permutation, flips


def _reoriented_geometry(geometry: Geometry, permutation: Sequence[int],
                         flips: Sequence[bool]) -> Geometry:
    direction = geometry.direction_matrix()
    columns = np.stack([direction[:, d] * (-1.0 if flip else 1.0)
                        for d, flip in zip(permutation, flips)], axis=1)
    first = np.zeros(geometry.ndim)
    for d, flip in zip(permutation, flips):
        first[d] = geometry.shape[d] - 1 if flip else 0
    origin = (geometry.affine() @ np.append(first, 1.0))[: geometry.ndim]
    return Geometry(
        shape=tuple(geometry.shape[d] for d in permutation),
        spacing=tuple(geometry.spacing[d] for d in permutation),
        origin=tuple(origin),
        direction=tuple(columns.ravel()),
    )


def _apply_reorientation(array: np.ndarray, permutation: Sequence[int],
                         flips: Sequence[bool]) -> np.ndarray:
    out = np.transpose(array, permutation)
    return out[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]


def reorient_to_ras(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry]:
    """The array (a view, not a copy) and geometry reoriented to RAS by axis permutation and
    flips; every voxel keeps its physical position."""
    if array.shape != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not match geometry {geometry.shape}")
    permutation, flips = ras_reorientation(geometry)
    return (_apply_reorientation(array, permutation, flips),
            _reoriented_geometry(geometry, permutation, flips))


# --------------------------------------------------------------------------------------------
# Transform record
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """Everything :func:`restore_label` needs to put a result back on the original grid.

    Shapes, spacings and offsets below are 3D, per RAS axis (after reorientation), except
    ``original_geometry`` (the input grid, 2D or 3D).
    ``resample_factors[a]``: input voxels per output voxel (target / original spacing; 1 where
    not resampled); ``resample_offsets[a]``: input voxel coordinate of output voxel 0, so output
    voxel ``i`` samples the reoriented input at ``i * factor + offset``.
    ``crop_start[a]``: index in the resampled grid of output voxel 0 (negative: padding before);
    0 on the slice axis.
    """

    original_geometry: Geometry
    permutation: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    reoriented_geometry: Geometry
    resampled_shape: tuple[int, int, int]
    resample_factors: tuple[float, float, float]
    resample_offsets: tuple[float, float, float]
    crop_start: tuple[int, int, int]
    size: int
    slice_axis: int

    @property
    def resampled(self) -> bool:
        """Whether any axis was resampled (the inverse is then not exact in general)."""
        return any(f != 1.0 for f in self.resample_factors)

    @property
    def n_slices(self) -> int:
        return self.resampled_shape[self.slice_axis]

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Shape of a preprocessed label map: ``(size, size, n_slices)``."""
        return (self.size, self.size, self.n_slices)

    def _window_shape(self) -> tuple[int, int, int]:
        shape = [self.size] * 3
        shape[self.slice_axis] = self.n_slices
        return _xyz(shape)

    def preprocessed_geometry(self) -> Geometry:
        """Physical grid of the preprocessed volume, in RAS axis order (before the slice axis is
        moved last); use it to write a preprocessed volume for inspection."""
        g = self.reoriented_geometry
        offsets = np.array(self.resample_offsets) + np.array(self.crop_start) * np.array(
            self.resample_factors)
        origin = (g.affine() @ np.append(offsets, 1.0))[:3]
        return Geometry(shape=self._window_shape(),
                        spacing=tuple(s * f for s, f in zip(g.spacing, self.resample_factors)),
                        origin=tuple(origin), direction=g.direction)

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_geometry": self.original_geometry.to_dict(),
            "permutation": list(self.permutation),
            "flips": list(self.flips),
            "reoriented_geometry": self.reoriented_geometry.to_dict(),
            "resampled_shape": list(self.resampled_shape),
            "resample_factors": list(self.resample_factors),
            "resample_offsets": list(self.resample_offsets),
            "crop_start": list(self.crop_start),
            "size": self.size,
            "slice_axis": self.slice_axis,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transform:
        try:
            return cls(
                original_geometry=Geometry.from_dict(data["original_geometry"]),
                permutation=_xyz(int(v) for v in data["permutation"]),
                flips=_xyz(bool(v) for v in data["flips"]),
                reoriented_geometry=Geometry.from_dict(data["reoriented_geometry"]),
                resampled_shape=_xyz(int(v) for v in data["resampled_shape"]),
                resample_factors=_xyz(float(v) for v in data["resample_factors"]),
                resample_offsets=_xyz(float(v) for v in data["resample_offsets"]),
                crop_start=_xyz(int(v) for v in data["crop_start"]),
                size=int(data["size"]),
                slice_axis=int(data["slice_axis"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed preprocessing transform: {exc}") from None


@dataclass
class PreprocessedCase:
    """Output of :func:`preprocess_case` (layouts in the module docstring)."""

    image: np.ndarray  # (C, size, size, n_slices) float32
    label: np.ndarray | None  # (size, size, n_slices), integer dtype of the input, or None
    slice_ratios: np.ndarray  # (n_slices,) float64 in [0, 1], increasing
    transform: Transform = field(repr=False)

    @property
    def n_slices(self) -> int:
        return int(self.slice_ratios.size)

    def required_label(self) -> np.ndarray:
        """``label`` of a case preprocessed with a label map; ValueError for one preprocessed without."""
        if self.label is None:
            raise ValueError("the case was preprocessed without a label map")
        return self.label

    def slices(self) -> list[tuple[np.ndarray, np.ndarray | None, float]]:
        """``(image (C, size, size), label (size, size) or None, slice ratio)`` per slice."""
        return [
            (self.image[..., k], None if self.label is None else self.label[..., k],
             float(self.slice_ratios[k]))
            for k in range(self.n_slices)
        ]


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------


def preprocess_case(
    images: np.ndarray | Sequence[np.ndarray],
    geometry: Geometry,
    plan: PreprocessingPlan,
    *,
    label: np.ndarray | None = None,
) -> PreprocessedCase:
    """Reorient, resample in-plane, normalise, crop/pad and slice one case (module docstring).

    ``images``: one array (one channel), a channel-first array ``(C, *geometry.shape)`` or a
    sequence of arrays, in ITK index order, all on ``geometry``; ``label`` optional, integer, on
    the same grid. Inputs are not modified. Raises ValueError for shapes or channel counts that
    do not fit.
    """
    channels = _channel_list(images, geometry)
    if len(channels) != len(plan.channels):
        raise ValueError(f"the plan normalises {len(plan.channels)} channel(s), got "
                         f"{len(channels)}")
    if label is not None:
        label = np.asarray(label)
        if label.shape != geometry.shape:
            raise ValueError(f"label shape {label.shape} does not match geometry "
                             f"{geometry.shape}")
        if not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
            raise ValueError(f"label must be an integer array, got {label.dtype}")
        if label.dtype == bool:
            label = label.astype(np.uint8)

    geometry3, channels, label = _lift_2d(geometry, channels, label)
    permutation, flips = ras_reorientation(geometry3)
    reoriented = _reoriented_geometry(geometry3, permutation, flips)
    channels = [_apply_reorientation(c, permutation, flips) for c in channels]
    if label is not None:
        label = _apply_reorientation(label, permutation, flips)

    factors, offsets, resampled_shape = _resampling(reoriented, plan)
    channels = [_resample(c.astype(np.float32, copy=False), factors, offsets, resampled_shape,
                          plan.image_order) for c in channels]
    if label is not None:
        label = _resample(label, factors, offsets, resampled_shape, 0)

    if label is not None and label.any():
        box_mask = _largest_component(label > 0)
    else:
        box_mask = np.zeros(resampled_shape, dtype=bool)
        for c in channels:
            box_mask |= c != 0
    crop_start = _crop_start(box_mask, plan)

    window = [plan.size] * 3
    window[plan.slice_axis] = resampled_shape[plan.slice_axis]
    out_image = np.empty((len(channels), *window), dtype=np.float32)
    for k, (array, norm) in enumerate(zip(channels, plan.channels)):
        out_image[k] = crop_window(_normalise(array, norm), crop_start, window, norm.pad_value)
    out_label = None if label is None else crop_window(label, crop_start, window, 0)

    out_image = np.moveaxis(out_image, 1 + plan.slice_axis, -1)
    if out_label is not None:
        out_label = np.ascontiguousarray(np.moveaxis(out_label, plan.slice_axis, -1))
    transform = Transform(
        original_geometry=geometry,
        permutation=_xyz(permutation),
        flips=_xyz(flips),
        reoriented_geometry=reoriented,
        resampled_shape=resampled_shape,
        resample_factors=factors,
        resample_offsets=offsets,
        crop_start=crop_start,
        size=plan.size,
        slice_axis=plan.slice_axis,
    )
    n = resampled_shape[plan.slice_axis]
    ratios = np.full(1, 0.5) if n == 1 else np.arange(n) / (n - 1)
    return PreprocessedCase(image=np.ascontiguousarray(out_image), label=out_label,
                            slice_ratios=ratios, transform=transform)


def preprocess_files(
    image_paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    plan: PreprocessingPlan,
    *,
    label_path: str | os.PathLike[str] | None = None,
) -> PreprocessedCase:
    """Read a case (one file per channel, optional label map) with :mod:`segqc.io` and
    preprocess it. Raises :class:`InputError` naming the file for unreadable files, for
    channels or label maps on another voxel grid than the first channel and for another number
    of channels than the plan normalises."""
    return preprocess_images(read_case_images(image_paths), plan, label_path=label_path)


def preprocess_images(images: Sequence[Image], plan: PreprocessingPlan, *,
                      label_path: str | os.PathLike[str] | None = None,
                      label: Image | None = None) -> PreprocessedCase:
    """:func:`preprocess_files` of channel images already read (:func:`read_case_images`), e.g.
    one case's images with each of several segmentations: the same checks, the images read once.
    ``label``: a label map already read with :func:`read_case_label` (instead of ``label_path``)."""
    if len(images) != len(plan.channels):
        names = ", ".join(i.path.name if i.path is not None else "?" for i in images)
        raise InputError(f"the case has {len(images)} image channel(s) ({names}) but the plan normalises "
                         f"{len(plan.channels)}", images[0].path)
    if label is None and label_path is not None:
        label = read_case_label(label_path, images[0])
    return preprocess_case([i.array for i in images], images[0].geometry, plan,
                           label=None if label is None else label.array)


def slice_count(geometry: Geometry, plan: PreprocessingPlan) -> int:
    """How many slices :func:`preprocess_case` cuts a grid into: its number of voxels along the
    plan's slice axis after reorientation to RAS (a 2D grid: one)."""
    if geometry.ndim == 2:
        return 1
    if geometry.ndim != 3:
        raise ValueError(f"preprocessing needs 2D or 3D images, got {geometry.ndim}D")
    permutation, _ = ras_reorientation(geometry)
    return int(geometry.shape[permutation[plan.slice_axis]])


def read_case_images(image_paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[Image]:
    """The channel images of one case, read once (e.g. to preprocess them with several label
    maps); :class:`InputError` for a channel on another voxel grid than the first."""
    if isinstance(image_paths, (str, os.PathLike)):
        image_paths = [image_paths]
    images = [read_image(p, finite=True) for p in image_paths]
    if not images:
        raise ValueError("no image files given")
    for other in images[1:]:
        _same_grid(other.geometry, images[0].geometry, other.path, images[0].path)
    return images


def read_case_label(label_path: str | os.PathLike[str], reference: Image) -> Image:
    """A label map of the case whose first channel is ``reference``; :class:`InputError` when
    it lies on another voxel grid."""
    label = read_label_map(label_path)
    _same_grid(label.geometry, reference.geometry, label.path, reference.path)
    return label


def _same_grid(geometry: Geometry, reference: Geometry, path: Path | None,
               reference_path: Path | None) -> None:
    from segqc.errors import GeometryMismatchError

    try:
        check_same_geometry(geometry, reference, pred_path=path, gt_path=reference_path,
                            origin_atol_mm=0.01, roles=("file", "image"))
    except GeometryMismatchError as exc:
        raise InputError(f"{exc.problem}; a case's files must share one voxel grid", path) from None


def _channel_list(images: np.ndarray | Sequence[np.ndarray], geometry: Geometry
                  ) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.shape == geometry.shape:
            channels = [images]
        elif images.ndim == geometry.ndim + 1 and images.shape[1:] == geometry.shape:
            channels = list(images)
        else:
            raise ValueError(f"image shape {images.shape} does not match geometry "
                             f"{geometry.shape} (channel-first for several channels)")
    else:
        channels = [np.asarray(c) for c in images]
        for c in channels:
            if c.shape != geometry.shape:
                raise ValueError(f"image shape {c.shape} does not match geometry "
                                 f"{geometry.shape}")
    if not channels:
        raise ValueError("no image channels given")
    return channels


def _lift_2d(geometry: Geometry, channels: list[np.ndarray], label: np.ndarray | None
             ) -> tuple[Geometry, list[np.ndarray], np.ndarray | None]:
    if geometry.ndim == 3:
        return geometry, channels, label
    if geometry.ndim != 2:
        raise ValueError(f"preprocessing needs 2D or 3D images, got {geometry.ndim}D")
    direction = np.eye(3)
    direction[:2, :2] = geometry.direction_matrix()
    lifted = Geometry(shape=(*geometry.shape, 1), spacing=(*geometry.spacing, 1.0),
                      origin=(*geometry.origin, 0.0), direction=tuple(direction.ravel()))
    return (lifted, [c[..., None] for c in channels],
            None if label is None else label[..., None])


def _resampling(reoriented: Geometry, plan: PreprocessingPlan
                ) -> tuple[tuple[float, float, float], tuple[float, float, float],
                           tuple[int, int, int]]:
    factors, offsets, shape = [1.0] * 3, [0.0] * 3, list(reoriented.shape)
    for axis, target in zip(plan.inplane_axes, plan.target_spacing):
        spacing, n = reoriented.spacing[axis], reoriented.shape[axis]
        if abs(target - spacing) <= plan.spacing_rtol * spacing:
            continue
        n_out = max(1, int(round(n * spacing / target)))
        factor = target / spacing
        factors[axis] = factor
        offsets[axis] = ((n - 1) - (n_out - 1) * factor) / 2.0  # same grid centre
        shape[axis] = n_out
    return _xyz(factors), _xyz(offsets), _xyz(shape)


def _resample(array: np.ndarray, factors: Sequence[float], offsets: Sequence[float],
              out_shape: Sequence[int], order: int) -> np.ndarray:
    """``out[i] = array[i * factor + offset]`` per axis (spline of ``order``; edge-extended)."""
    if all(f == 1.0 for f in factors) and tuple(out_shape) == array.shape:
        return array
    return ndimage.affine_transform(array, np.asarray(factors, dtype=float),
                                    offset=np.asarray(offsets, dtype=float),
                                    output_shape=tuple(out_shape), order=order, mode="nearest",
                                    prefilter=order > 1)


def _normalise(array: np.ndarray, norm: ChannelNormalization) -> np.ndarray:
    if norm.scheme == "ct":
        assert norm.clip_low is not None and norm.clip_high is not None
        assert norm.mean is not None and norm.std is not None
        out = np.clip(array, norm.clip_low, norm.clip_high)
        return ((out - norm.mean) / norm.std).astype(np.float32)
    low, high = np.percentile(array, norm.percentiles)
    if not high > low:
        return np.zeros(array.shape, dtype=np.float32)
    out = (np.clip(array, low, high) - low) / (high - low)
    return out.astype(np.float32)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a non-empty 3D boolean mask."""
    return cc3d.largest_k(np.ascontiguousarray(mask), k=1, connectivity=26) > 0


def _crop_start(mask: np.ndarray, plan: PreprocessingPlan) -> tuple[int, int, int]:
    start = [0, 0, 0]
    for axis in plan.inplane_axes:
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size:
            centre = (hit[0] + hit[-1] + 1) / 2.0  # in voxel-edge coordinates
        else:
            centre = mask.shape[axis] / 2.0
        start[axis] = int(np.floor(centre - plan.size / 2.0 + 0.5))
    return _xyz(start)


def transform_label(label: np.ndarray, transform: Transform) -> np.ndarray:
    """Apply a case's forward transform to another label map on the same original grid (e.g. the
    ground truth of a case whose crop window was centred on an imperfect segmentation): reorient,
    resample nearest neighbour, crop with ``transform.crop_start`` (background outside), slice
    axis last. Returns ``(size, size, n_slices)`` of ``label``'s dtype, as
    ``preprocess_case(..., label=label)`` would with the same crop window."""
    label = np.asarray(label)
    geometry = transform.original_geometry
    if label.shape != geometry.shape:
        raise ValueError(f"label shape {label.shape} does not match the transform's grid {geometry.shape}")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
        raise ValueError(f"label must be an integer array, got {label.dtype}")
    if label.dtype == bool:
        label = label.astype(np.uint8)
    if geometry.ndim == 2:
        label = label[..., None]
    label = _apply_reorientation(label, transform.permutation, transform.flips)
    label = _resample(label, transform.resample_factors, transform.resample_offsets, transform.resampled_shape, 0)
    out = crop_window(label, transform.crop_start, transform._window_shape(), 0)
    return np.ascontiguousarray(np.moveaxis(out, transform.slice_axis, -1))


# --------------------------------------------------------------------------------------------
# Inverse
# --------------------------------------------------------------------------------------------


def restore_label(label: np.ndarray, transform: Transform) -> np.ndarray:
    """Put a label map on the preprocessed grid, ``(size, size, n_slices)`` (stack 2D slice
    results with ``np.stack(slices, axis=-1)``), back onto the original grid (nearest
    neighbour; background outside the crop window). Returns an array of ``label``'s dtype with
    ``transform.original_geometry.shape``."""
    label = np.asarray(label)
    if label.shape != transform.output_shape:
        raise ValueError(f"label shape {label.shape} does not match the preprocessed shape "
                         f"{transform.output_shape}")
    return _restore(label, transform, order=0, fill=0)


def window_mask(transform: Transform) -> np.ndarray:
    """The voxels of the original grid inside the crop window (what the preprocessed arrays
    hold), boolean with ``transform.original_geometry.shape``."""
    return restore_label(np.ones(transform.output_shape, dtype=np.uint8), transform) > 0


OUTSIDE_WINDOW_SHARE = 0.01
"""The share of a label map's foreground beyond a plan's window from which the QC driver and nnQC's
training say that the window cuts it (:func:`outside_window_share`)."""


def window_extent_mm(plan: PreprocessingPlan) -> str:
    """The in-plane extent of a plan's window, e.g. ``150 x 150``: ``size`` pixels of ``target_spacing`` (mm)."""
    return " x ".join(f"{plan.size * s:.4g}" for s in plan.target_spacing)


def outside_window_share(label: np.ndarray, window: np.ndarray) -> float:
    """The share (0-1) of ``label``'s foreground voxels outside ``window`` (:func:`window_mask`,
    both on the original grid); 0 for a label map without foreground."""
    foreground = np.asarray(label) > 0
    total = int(np.count_nonzero(foreground))
    return 0.0 if not total else float(np.count_nonzero(foreground & ~np.asarray(window, dtype=bool)) / total)


def restore_image(image: np.ndarray, transform: Transform, *, order: int = 1,
                  fill: float = 0.0) -> np.ndarray:
    """Put a float map (probabilities, error maps, images) on the preprocessed grid back onto
    the original grid with spline ``order`` (default linear); ``fill`` outside the crop window.

    ``image``: ``(size, size, n_slices)`` or channel-first ``(C, size, size, n_slices)``;
    returns float32 ``original shape`` or ``(C, *original shape)``. Intensities are not
    un-normalised."""
    image = np.asarray(image, dtype=np.float32)
    if image.shape == transform.output_shape:
        return _restore(image, transform, order=order, fill=fill)
    if image.ndim == 4 and image.shape[1:] == transform.output_shape:
        return np.stack([_restore(c, transform, order=order, fill=fill) for c in image])
    raise ValueError(f"image shape {image.shape} does not match the preprocessed shape "
                     f"{transform.output_shape} (or channel-first)")


def _restore(array: np.ndarray, transform: Transform, *, order: int, fill: float) -> np.ndarray:
    array = np.moveaxis(array, -1, transform.slice_axis)
    full = paste_window(array, transform.crop_start, transform.resampled_shape, fill)
    reoriented_shape = transform.reoriented_geometry.shape
    if transform.resampled or tuple(reoriented_shape) != tuple(transform.resampled_shape):
        factors = np.asarray(transform.resample_factors, dtype=float)
        offsets = np.asarray(transform.resample_offsets, dtype=float)
        # original voxel j sits at output coordinate (j - offset) / factor
        full = ndimage.affine_transform(full, 1.0 / factors, offset=-offsets / factors,
                                        output_shape=tuple(reoriented_shape), order=order,
                                        mode="nearest", prefilter=order > 1)
    flipped = full[tuple(slice(None, None, -1) if f else slice(None) for f in transform.flips)]
    restored = np.transpose(flipped, np.argsort(transform.permutation))
    if transform.original_geometry.ndim == 2:
        restored = restored[..., 0]
    return np.ascontiguousarray(restored)
