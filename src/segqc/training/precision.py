"""Mixed precision for training steps: one choice (``auto``, ``bf16``, ``fp32``) for the methods
that offer it (QCResUNet's ``precision``).

``bf16`` runs the forward pass under ``torch.autocast`` with bfloat16 (convolutions and matrix
products in bfloat16, reductions and normalisations where torch keeps them in float32); the loss
is computed by the caller on float32 copies of the outputs, and weights, gradients and the
optimiser state stay float32. On a CPU with native bfloat16 instructions (AVX-512 BF16 or AMX)
a QCResUNet ``small`` step takes about 0.35 s instead of 0.6 s on 2 cores; without them bfloat16
is emulated and slower (2.5 times a float32 step on an AVX-512 CPU without them), so ``auto``
picks ``bf16`` only where the hardware has it (a CUDA device with bfloat16 support, or such a
CPU) and ``fp32`` elsewhere.

A known defect of the CPU kernels (PyTorch 2.13, oneDNN): the bfloat16 weight gradient of a
3D convolution whose input has a depth of exactly 2 slices (and a batch of more than one) is
garbage read from uninitialised memory — NaN, or values of 1e30 and more, differently on every
call (``benchmarks/bf16_conv3d_check.py``: a 16-channel 3 x 3 x 3 convolution on a (4, 16, 2,
4, 4) input, 100 of 100 calls wrong; depths 1, 3, 4 and 8 right). :func:`shield_conv3d` makes
such convolutions run in float32; a model trained under ``bf16`` must be shielded.

A second defect, on CPUs whose oneDNN build picks its AMX kernels (``brg_conv``, e.g. Intel Xeon
processors reporting AVX10.1): the same weight gradient corrupts the heap and kills the process
("double free or corruption", a segmentation fault) for inputs of few slices at large in-plane
sizes — with 8 channels, 96 px slices up to 8 deep and 128 px slices up to 6 deep, for 1 x 3 x 3
and 3 x 3 x 3 kernels, at 1 and 2 threads; 48 and 64 px slices and 10 or more slices are right
(``benchmarks/bf16_conv3d_check.py --crash-sweep``). The 2D kernels are not affected, so
:func:`shield_conv3d` also runs such a convolution as 2D convolutions over the slices, which is
the same arithmetic: a kernel one slice deep as one 2D convolution of every slice (about as fast), a
deeper kernel, where the slices are at least 64 x 64 px, as the sum of one 2D convolution per
kernel slice over the shifted slices (about twice the time of that layer).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["PRECISIONS", "SLICE_ROUTE_MIN_AREA", "autocast", "conv3d_by_slices", "resolve_precision", "shield_conv3d"]

PRECISIONS = ("auto", "bf16", "fp32")


def _cpu_has_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX-BF16). oneDNN also runs
    bfloat16 on any AVX-512 CPU, by emulation: there a QCResUNet ``small`` training step took 2.1 s
    instead of 0.83 s in float32 (2 cores of an Intel Xeon with AVX-512 but neither), so that
    does not count."""
    import torch

    try:
        capabilities = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):
        return False
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


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


SLICE_ROUTE_MIN_AREA = 64 * 64
"""In-plane pixels from which a 3D convolution with a kernel more than one slice deep runs as 2D
convolutions over its slices under bfloat16 (the AMX defect of the module docstring)."""


def shield_conv3d(model: nn.Module) -> int:
    """Shield every 3D convolution of ``model`` from the CPU kernels' bfloat16 defects (module
    docstring) when autocast is on: inputs 2 slices deep run in float32; other inputs run as 2D
    convolutions over their slices where the convolution allows it (zero padding, a depth stride
    of 1; a kernel one slice deep, or one deeper on slices of at least
    :data:`SLICE_ROUTE_MIN_AREA` px). Other devices and float32 runs are untouched. Returns the
    number of convolutions shielded (once each)."""
    from torch import nn

    count = 0
    for module in model.modules():
        if isinstance(module, nn.Conv3d) and "forward" not in vars(module):
            module.forward = _shielded_forward(module)  # type: ignore[method-assign]
            count += 1
    return count


def _shielded_forward(conv: nn.Conv3d):
    import torch

    base = type(conv).forward
    # The slice route's arguments, fixed per convolution; None where the route does not apply
    padding = None if isinstance(conv.padding, str) or conv.padding_mode != "zeros" or conv.stride[0] != 1 \
        else tuple(conv.padding)
    dilation, stride, thin = tuple(conv.dilation), tuple(conv.stride), conv.kernel_size[0] == 1

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return base(conv, x)
        if x.shape[-3] == 2:
            with torch.autocast("cpu", enabled=False):
                return base(conv, x.float())
        if padding is not None and (thin or x.shape[-2] * x.shape[-1] >= SLICE_ROUTE_MIN_AREA):
            return conv3d_by_slices(x, conv.weight, conv.bias, padding, dilation, conv.groups, stride)
        return base(conv, x)

    return forward


def conv3d_by_slices(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, ...],
                     dilation: tuple[int, ...], groups: int, stride: tuple[int, ...]) -> torch.Tensor:
    """``torch.nn.functional.conv3d`` with a depth stride of 1 and zero padding, computed as one 2D
    convolution of all slices per kernel slice (summed): ``x`` ``(N, C, D, H, W)``, ``weight``
    ``(O, C / groups, kd, kh, kw)``; the result has the 3D convolution's shape."""
    import torch.nn.functional as F

    if stride[0] != 1:
        raise ValueError(f"conv3d_by_slices needs a depth stride of 1, got {stride}")
    n, c, depth = x.shape[:3]
    kd = weight.shape[2]
    padded = F.pad(x, (0, 0, 0, 0, padding[0], padding[0])) if padding[0] else x
    out_depth = depth + 2 * padding[0] - dilation[0] * (kd - 1)
    if out_depth < 1:
        raise ValueError(f"input of {depth} slices is too shallow for a kernel {kd} slices deep")
    total = None
    for k in range(kd):
        start = k * dilation[0]
        part = padded[:, :, start:start + out_depth].transpose(1, 2).reshape(n * out_depth, c, *x.shape[3:])
        y = F.conv2d(part, weight[:, :, k], bias if k == 0 else None, stride[1:], padding[1:], dilation[1:], groups)
        total = y if total is None else total + y
    assert total is not None
    return total.reshape(n, out_depth, *total.shape[1:]).transpose(1, 2)
