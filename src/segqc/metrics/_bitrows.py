"""Bit-packed row arithmetic: the fast kernels behind surface extraction and surface distances.

A binary 2D/3D mask is packed along its last axis into ``uint64`` words (bit ``t`` of word ``w``
is voxel ``64 * w + t``). Shifting a packed row by one bit moves every voxel one step along the
last axis, so neighbourhood tests over a 2x2x2 cube or a 6-neighbourhood become a handful of
word-wide AND/OR operations: 64 voxels per instruction instead of one. Only the words that contain
a boundary are unpacked afterwards, so the cost after packing scales with the surface, not with the
volume.

A set of grid points is addressed by its *key* ``flat_word_index * 64 + bit``; keys of a packed
array are increasing in the array's C order, so sorting keys sorts points.
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 64
_ONE = np.uint64(1)


def pack_rows(mask: np.ndarray, *, n_bits: int, pad: int = 1) -> np.ndarray:
    """Pack ``mask`` (bool, 2D or 3D) along its last axis into uint64 words.

    Returns an array of shape ``(*(s + 2 * pad for s in mask.shape[:-1]), n_words)``: ``pad``
    all-zero rows are added before and after every axis except the last, and the words hold at
    least ``n_bits`` bits (bits past the mask's last index are zero).
    """
    n_words = max(1, -(-n_bits // WORD_BITS))
    packed = np.packbits(mask, axis=-1, bitorder="little")
    out = np.zeros(tuple(s + 2 * pad for s in mask.shape[:-1]) + (n_words * 8,), dtype=np.uint8)
    inner = tuple(slice(pad, pad + s) for s in mask.shape[:-1])
    out[inner + (slice(0, packed.shape[-1]),)] = packed
    return out.view(np.uint64)


def shift_up(words: np.ndarray) -> np.ndarray:
    """Bit ``k`` of the result is bit ``k - 1`` of the input (voxel ``k - 1`` moves to ``k``)."""
    out = words << _ONE
    out[..., 1:] |= words[..., :-1] >> np.uint64(WORD_BITS - 1)
    return out


def shift_down(words: np.ndarray) -> np.ndarray:
    """Bit ``k`` of the result is bit ``k + 1`` of the input (voxel ``k + 1`` moves to ``k``)."""
    out = words >> _ONE
    out[..., :-1] |= words[..., 1:] << np.uint64(WORD_BITS - 1)
    return out


def set_bit_keys(words: np.ndarray) -> np.ndarray:
    """Sorted keys (``flat_word_index * 64 + bit``) of every set bit of ``words``."""
    flat = words.reshape(-1)
    word_index = np.flatnonzero(flat)  # surfaces are sparse: skip empty words first
    if word_index.size == 0:
        return np.zeros(0, dtype=np.int64)
    some_bytes = flat[word_index].view(np.uint8)
    nonzero = np.flatnonzero(some_bytes)
    byte_index = word_index[nonzero >> 3] * 8 + (nonzero & 7)
    bits = np.unpackbits(some_bytes[nonzero], bitorder="little")
    hit = np.flatnonzero(bits)
    # byte b holds bits 8*b .. 8*b+7 of the flat bit stream (little-endian words)
    return byte_index[hit >> 3].astype(np.int64) * 8 + (hit & 7)


def bits_at(words: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Value (0/1, uint8) of the bits of ``words`` at the given keys."""
    as_bytes = words.reshape(-1).view(np.uint8)
    return (as_bytes[keys >> 3] >> (keys & 7).astype(np.uint8)) & np.uint8(1)


def key_coordinates(keys: np.ndarray, words_shape: tuple[int, ...]) -> np.ndarray:
    """Grid coordinates ``(n, ndim)`` of keys into a packed array of shape ``words_shape``."""
    n_words = words_shape[-1]
    lead, pos = np.divmod(keys, n_words * WORD_BITS)
    coords = list(np.unravel_index(lead, words_shape[:-1])) + [pos]
    return np.stack(coords, axis=1)
