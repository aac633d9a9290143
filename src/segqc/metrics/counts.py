"""Voxel counts per label value without a whole-volume copy (pure numpy, no I/O)."""

from __future__ import annotations

import numpy as np

#: Elements per ``np.bincount`` call: 2**20 int64 values (8 MB) of working memory at a time.
CHUNK = 1 << 20


def chunked_bincount(values: np.ndarray, *, minlength: int = 0, chunk: int = CHUNK) -> np.ndarray:
    """``np.bincount(values.ravel(), minlength=minlength)`` for an array of non-negative integers
    (or bools), in slices of ``chunk`` elements: ``np.bincount`` itself first copies its input to
    int64, 8 bytes per voxel (1.6 GB for a 512 × 512 × 800 CT), where this needs ``8 × chunk``
    bytes (plus one same-dtype copy of a non-contiguous array). int64 counts, at least
    ``minlength`` long; an empty array gives ``minlength`` zeros. ``ValueError`` for negative
    values, ``TypeError`` for a float array, as ``np.bincount``."""
    flat = np.asarray(values).reshape(-1)
    if flat.dtype == bool:
        flat = flat.view(np.uint8)
    if flat.dtype.kind not in "iu":
        raise TypeError(f"counts need integer label values, got dtype {flat.dtype}")
    if flat.dtype == np.intp or flat.size <= chunk:  # no copy, or a small one
        return np.bincount(flat, minlength=minlength)
    counts = np.zeros(minlength, dtype=np.int64)
    for start in range(0, flat.size, chunk):
        part = np.bincount(flat[start:start + chunk], minlength=minlength)
        if part.size > counts.size:
            counts = np.pad(counts, (0, part.size - counts.size))
        counts[:part.size] += part
    return counts


#: Largest value counted with a dense table of 8-byte counts (beyond it, and beyond the number of
#: elements, :func:`value_counts` sorts instead): memory never grows with a large value itself.
DENSE_LIMIT = 1 << 20


def value_counts(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values present in ``array``, ascending, 0 included; their element counts), both int64. A
    chunked count table (:func:`chunked_bincount`) where the values are non-negative integers up
    to ``max(DENSE_LIMIT, array.size)``, else ``np.unique``. An empty array gives two empty
    arrays; bools count as 0 and 1; ``TypeError`` for a float array."""
    flat = np.asarray(array).reshape(-1)
    if flat.dtype == bool:
        flat = flat.view(np.uint8)
    kind = flat.dtype.kind
    if kind not in "iu":
        raise TypeError(f"counts need integer label values, got dtype {flat.dtype}")
    if not flat.size:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if kind in "iu" and flat.dtype != np.uint64 and (kind == "u" or int(flat.min()) >= 0) \
            and int(flat.max()) <= max(DENSE_LIMIT, flat.size):
        counts = chunked_bincount(flat)
        values = np.flatnonzero(counts)
        return values.astype(np.int64), counts[values].astype(np.int64)
    values, counts = np.unique(flat, return_counts=True)
    return values.astype(np.int64), counts.astype(np.int64)
