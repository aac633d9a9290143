"""Network passes over many samples a bounded number of rows at a time.

The samplers (LDSeg, consensus diffusion, nnQC) keep every sample's state — its noise or latent,
a tensor of the size of the starting noise — but run the networks on at most
:data:`SLICES_PER_PASS` slice images at once, so the memory a pass needs (the networks'
activations, many times the state) does not grow with the number of samples. The rows of a
batch are sample-major (row ``s * B + b`` is sample ``s`` of slice ``b``) and a pass takes whole
samples of every slice of the batch, so a chunk is a contiguous range of rows whose conditioning
is the batch's own, repeated.

Why a fixed number and not a budget read from the free memory: the same passes on every
machine and nothing to probe on a shared one. Why 8: on a CPU, passes of 8 slices were no slower
than passes of 64 (LDSeg ``small``, 128 samples of one 128 px slice; nnQC ``small``, 16 samples of
an ACDC volume) and need a fraction of the memory; a batch of more slices than that goes one
sample of every slice per pass, so the memory is bounded by the batch, whatever the number of
samples. Results do not depend on the chunk size beyond the floating-point rounding of batched
convolutions (below 1e-6 on probabilities).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["SLICES_PER_PASS", "by_rows", "repeat_rows", "row_chunks", "samples_per_pass"]

SLICES_PER_PASS = 8
"""At most this many slice images go through a network in one sampling pass (a 3D stack of D
slices counts D); at least one whole sample of every slice of a batch (module docstring)."""


def samples_per_pass(batch: int, depth: int = 1, *, per_pass: int = SLICES_PER_PASS) -> int:
    """Samples of a batch of ``batch`` slices (or stacks of ``depth`` slices) one pass takes:
    ``per_pass // (batch * depth)``, at least 1."""
    if batch < 1 or depth < 1 or per_pass < 1:
        raise ValueError(f"need batch, depth and per_pass >= 1, got {batch}, {depth}, {per_pass}")
    return max(1, per_pass // (batch * depth))


def row_chunks(samples: int, batch: int, per_sample_chunk: int) -> list[slice]:
    """The row ranges of consecutive chunks of ``per_sample_chunk`` samples (the last one may be
    shorter) of ``samples`` samples of ``batch`` slices, rows sample-major; empty for 0 samples."""
    if per_sample_chunk < 1:
        raise ValueError(f"per_sample_chunk must be >= 1, got {per_sample_chunk}")
    return [slice(start * batch, min(start + per_sample_chunk, samples) * batch)
            for start in range(0, samples, per_sample_chunk)]


def repeat_rows(tensor: torch.Tensor, rows: slice, batch: int) -> torch.Tensor:
    """The per-slice ``tensor`` ``(batch, ...)`` for the sample-major rows ``rows`` (a range of
    whole samples, :func:`row_chunks`): repeated once per sample of the range."""
    count = rows.stop - rows.start
    if count % batch or rows.start % batch:
        raise ValueError(f"rows {rows.start}:{rows.stop} are not whole samples of {batch} slices")
    return tensor.repeat(count // batch, *([1] * (tensor.ndim - 1)))


def by_rows(function: Callable[[slice], torch.Tensor], chunks: list[slice]) -> torch.Tensor:
    """``function`` of every row range of ``chunks`` (in order), concatenated along the rows."""
    return torch.cat([function(rows) for rows in chunks], dim=0)
