"""Mixed precision for training steps: one choice (``auto``, ``bf16``, ``fp32``) for the methods
that offer it (QCResUNet's ``precision``).

``bf16`` runs the forward pass under ``torch.autocast`` with bfloat16 (convolutions and matrix
products in bfloat16, reductions and normalisations where torch keeps them in float32); the loss
is computed by the caller on float32 copies of the outputs, and weights, gradients and the
optimiser state stay float32. On a CPU with native bfloat16 instructions (AVX-512 BF16 or AMX)
a QCResUNet ``small`` step takes about 0.35 s instead of 0.6 s on 2 cores; without them bfloat16
is emulated and slower, so ``auto`` picks ``bf16`` only where the hardware has it (a CUDA device
with bfloat16 support, or such a CPU) and ``fp32`` elsewhere.

A known defect of the CPU kernels (PyTorch 2.13, oneDNN): the bfloat16 weight gradient of a
3D convolution whose input has a depth of exactly 2 slices (and a batch of more than one) is
garbage read from uninitialised memory — NaN, or values of 1e30 and more, differently on every
call (``benchmarks/bf16_conv3d_check.py``: a 16-channel 3 x 3 x 3 convolution on a (4, 16, 2,
4, 4) input, 100 of 100 calls wrong; depths 1, 3, 4 and 8 right). :func:`shield_conv3d` makes
such convolutions run in float32; a model trained under ``bf16`` must be shielded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["PRECISIONS", "autocast", "resolve_precision", "shield_conv3d"]

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


def shield_conv3d(model: nn.Module) -> int:
    """Run every 3D convolution of ``model`` in float32 when autocast is on and its input is 2
    slices deep on a CPU (the module docstring's kernel defect); other inputs, other devices and
    float32 runs are untouched. Returns the number of convolutions shielded (once each)."""
    from torch import nn

    count = 0
    for module in model.modules():
        if isinstance(module, nn.Conv3d) and "forward" not in vars(module):
            module.forward = _float32_at_depth_two(module)  # type: ignore[method-assign]
            count += 1
    return count


def _float32_at_depth_two(conv: nn.Conv3d):
    import torch

    base = type(conv).forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.shape[-3] == 2 and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return base(conv, x.float())
        return base(conv, x)

    return forward
