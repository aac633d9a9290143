"""Crop and paste of array windows that may reach past the array (pure numpy, no I/O).

One mechanism for every place that cuts a fixed-size window out of an image and puts results
back: the preprocessing crop of :mod:`segqc.fingerprint.preprocessing` and the field of view of
the ``segqc seg`` slices. Windows act on the *last* ``len(start)`` axes; leading axes (slices,
channels) are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["crop_window", "paste_window"]


def _overlap(start: Sequence[int], window: Sequence[int], shape: Sequence[int]) -> tuple[tuple[slice, ...],
                                                                                         tuple[slice, ...]] | None:
    """(slices into the big array, slices into the window) of their overlap; None when empty."""
    big, small = [], []
    for s, w, n in zip(start, window, shape):
        lo, hi = max(int(s), 0), min(int(s) + int(w), int(n))
        if hi <= lo:
            return None
        big.append(slice(lo, hi))
        small.append(slice(lo - int(s), hi - int(s)))
    return tuple(big), tuple(small)


def _trailing(slices: tuple[slice, ...]) -> tuple[Any, ...]:
    """An index that applies ``slices`` to the last axes of an array."""
    return (Ellipsis, *slices)


def crop_window(array: np.ndarray, start: Sequence[int], window: Sequence[int],
                fill: float | np.ndarray = 0) -> np.ndarray:
    """``out[..., i] = array[..., start + i]`` over the last ``len(start)`` axes where that
    exists, ``fill`` elsewhere (a scalar, or an array broadcastable to the output)."""
    array = np.asarray(array)
    lead = array.shape[:array.ndim - len(start)]
    out = np.empty((*lead, *(int(w) for w in window)), dtype=array.dtype)
    out[...] = fill
    parts = _overlap(start, window, array.shape[len(lead):])
    if parts is not None:
        big, small = parts
        out[_trailing(small)] = array[_trailing(big)]
    return out


def paste_window(array: np.ndarray, start: Sequence[int], shape: Sequence[int],
                 fill: float | np.ndarray = 0) -> np.ndarray:
    """The inverse of :func:`crop_window`: an array whose last axes have ``shape``, ``fill``
    everywhere (scalar or broadcastable) except where the window ``array`` placed at ``start``
    lies (parts of the window outside ``shape`` are dropped)."""
    array = np.asarray(array)
    lead = array.shape[:array.ndim - len(start)]
    out = np.empty((*lead, *(int(n) for n in shape)), dtype=array.dtype)
    out[...] = fill
    parts = _overlap(start, array.shape[len(lead):], shape)
    if parts is not None:
        big, small = parts
        out[_trailing(big)] = array[_trailing(small)]
    return out
