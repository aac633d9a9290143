"""Checks and boxes of binary masks shared by the metric kernels (pure numpy/scipy, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from segqc.metrics.counts import DENSE_LIMIT, value_counts


def as_mask(mask: np.ndarray, name: str = "mask", *, ndims: Sequence[int] | None = (2, 3)) -> np.ndarray:
    """A C-contiguous bool copy or view of ``mask`` (non-zero = foreground). ``ValueError`` when the
    number of dimensions is not in ``ndims`` (``None``: any) or a float mask holds NaN or inf;
    ``TypeError`` unless the dtype is bool, integer or float (strings, objects, complex numbers)."""
    array = np.asarray(mask)
    if ndims is not None and array.ndim not in ndims:
        wanted = " or ".join(f"{n}D" for n in ndims)
        raise ValueError(f"{name}: expected a {wanted} mask, got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name}: a mask must be a bool, integer or float array, got dtype {array.dtype}")
    if array.dtype == bool:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(array != 0)


def mask_pair(pred: np.ndarray, gt: np.ndarray, *, ndims: Sequence[int] | None = (2, 3)
              ) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``gt`` as :func:`as_mask` gives them, checked to have one shape
    (``ValueError`` naming both shapes otherwise)."""
    pred, gt = as_mask(pred, "pred", ndims=ndims), as_mask(gt, "gt", ndims=ndims)
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} differs from gt shape {gt.shape}")
    return pred, gt


def numbers(values: Sequence[float], what: str) -> tuple[float, ...]:
    """``values`` as a tuple of floats; ``TypeError`` naming ``what`` unless it is a sequence of
    numbers (a string is not, nor is a sequence holding one)."""
    try:
        items = tuple(values)
        if isinstance(values, (str, bytes)) or any(isinstance(v, (str, bytes)) for v in items):
            raise TypeError
        return tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a sequence of numbers, got {values!r}") from None


#: The voxel spacings (mm) the metric kernels take: far beyond any imaging scale either way.
SPACING_RANGE_MM = (1e-12, 1e9)


def check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    """``spacing`` (mm per axis) as floats; ``TypeError`` unless it is a sequence of numbers,
    ``ValueError`` unless it has ``ndim`` positive finite entries within
    [:data:`SPACING_RANGE_MM`] (1 fm to 1000 km: squared distances neither underflow nor overflow)."""
    values = numbers(spacing, "spacing")
    if len(values) != ndim:
        raise ValueError(f"spacing {values} does not match a {ndim}D mask")
    if any(not math.isfinite(s) or s <= 0 for s in values):
        raise ValueError(f"spacing must be positive and finite, got {values}")
    low, high = SPACING_RANGE_MM
    if any(not low <= s <= high for s in values):
        raise ValueError(f"spacing {values} mm is outside [{low:g}, {high:g}] mm")
    return values


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box (one slice per axis) of the non-zero voxels; ``None`` for an empty mask
    (also one of size 0)."""
    if np.size(mask) == 0:
        return None
    boxes = ndimage.find_objects((np.asarray(mask) != 0).view(np.uint8))
    return tuple(boxes[0]) if boxes else None


#: Label value -> the bounding box of its voxels (:func:`label_boxes`).
LabelBoxes = Mapping[int, tuple[slice, ...]]


def label_boxes(labels: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """Label value -> tight bounding box of every value > 0 present in an integer label map, in one
    pass (scipy's ``find_objects``). ``find_objects`` keeps one slot per value up to the largest
    (16 GB of slots for a value of 2^31), so maps with values above
    :data:`~segqc.metrics.counts.DENSE_LIMIT` are first renumbered 1..n (an int64 copy of the
    map). Empty or all-background maps give an empty dict; values <= 0 are not labels."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return {}
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    if labels.dtype.kind == "i" and int(labels.min()) < 0:
        labels = np.maximum(labels, 0)
    if (labels.dtype.kind == "u" and labels.dtype.itemsize <= 2) or int(labels.max()) <= DENSE_LIMIT:
        return {i + 1: box for i, box in enumerate(ndimage.find_objects(labels)) if box is not None}
    values, _ = value_counts(labels)
    values = values[values > 0]
    ids = np.where(labels > 0, np.searchsorted(values, labels) + 1, 0)
    return {int(values[i]): box for i, box in enumerate(ndimage.find_objects(ids)) if box is not None}


def find_values(labels: np.ndarray, values: Sequence[int],
                boxes: LabelBoxes) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """(tight bounding box, mask within it) of the voxels of ``labels`` holding any of ``values``;
    None when there are none. Only the boxes of ``values`` in ``boxes`` are read (e.g.
    :func:`label_boxes`; a box may be larger than its value's voxels, never smaller; a value
    without a box is absent)."""
    outer = union_box([boxes.get(int(v)) for v in values], np.ndim(labels))
    if outer is None:
        return None
    view = labels[outer]
    mask = view == values[0] if len(values) == 1 else np.isin(view, np.asarray(values))
    inner = bounding_box(mask)
    if inner is None:
        return None
    box = tuple(slice(o.start + i.start, o.start + i.stop) for o, i in zip(outer, inner))
    return box, mask[inner]


def nonempty_box(mask: np.ndarray) -> tuple[slice, ...]:
    """:func:`bounding_box` of a mask the caller knows to be non-empty (``ValueError`` if it is empty)."""
    box = bounding_box(mask)
    if box is None:
        raise ValueError("the mask is empty; it has no bounding box")
    return box


def union_box(boxes: Sequence[tuple[slice, ...] | None], ndim: int) -> tuple[slice, ...] | None:
    """Smallest box holding every given box (``None`` entries are skipped; ``None`` if none is left)."""
    present = [b for b in boxes if b is not None]
    if not present:
        return None
    return tuple(slice(min(b[d].start for b in present), max(b[d].stop for b in present)) for d in range(ndim))
