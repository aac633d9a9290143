"""Mixed precision for training steps: one choice (``auto``, ``bf16``, ``fp32``) for the methods
that offer it (QCResUNet's ``precision``).

``bf16`` runs the forward pass under ``torch.autocast`` with bfloat16 (convolutions and matrix
products in bfloat16, reductions and normalisations where torch keeps them in float32); the loss
is computed by the caller on float32 copies of the outputs, and weights, gradients and the
optimiser state stay float32. On a CPU with native bfloat16 instructions (AVX-512 BF16 or AMX)
a QCResUNet ``small`` step takes about 0.35 s instead of 0.6 s on 2 cores; without them bfloat16
is emulated and slower, so ``auto`` picks ``bf16`` only where the hardware has it (a CUDA device
with bfloat16 support, or such a CPU) and ``fp32`` elsewhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["PRECISIONS", "autocast", "resolve_precision"]

PRECISIONS = ("auto", "bf16", "fp32")


def _cpu_has_bf16() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``bf16`` or ``fp32`` for ``precision`` (one of :data:`PRECISIONS`) on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "auto":
        return precision
    import torch

    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if _cpu_has_bf16() else "fp32"
    return "fp32"


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Run the enclosed forward pass at ``precision`` (``bf16`` or ``fp32``, as resolved by
    :func:`resolve_precision`) on ``device``; ``fp32`` changes nothing."""
    if precision == "fp32":
        yield
        return
    if precision != "bf16":
        raise ValueError(f"autocast needs a resolved precision (bf16 or fp32), got {precision!r}")
    import torch

    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield
