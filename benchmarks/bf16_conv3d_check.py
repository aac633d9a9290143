"""How often PyTorch's CPU bfloat16 kernel gets the weight gradient of a 3D convolution wrong,
by input depth, with and without :func:`segqc.training.precision.shield_conv3d`.

    python benchmarks/bf16_conv3d_check.py [--calls 200] [--threads 2]
    python benchmarks/bf16_conv3d_check.py --crash-sweep [--threads 2]

For each depth, ``calls`` backward passes of a 16-channel 3 x 3 x 3 convolution on a (4, 16, D,
4, 4) input under bfloat16 autocast; a call is wrong when its weight gradient is not finite or
differs from the float32 one by more than 5 % of the largest entry (bfloat16 rounding alone stays
under 0.5 %).

``--crash-sweep``: whether one bfloat16 forward and backward pass of an 8-channel convolution
(kernels 1 x 3 x 3 and 3 x 3 x 3) on a (4, 8, D, H, H) input kills the process, for H in 48, 64,
96, 128 and D in 2 … 16, plain and shielded, each in a fresh process (the AMX kernels' heap
corruption of ``segqc.training.precision``)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import torch

from segqc.training.precision import autocast, shield_conv3d


def wrong_calls(depth: int, calls: int, shielded: bool) -> int:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(16, 16, 3, padding=1, bias=False)
    if shielded:
        shield_conv3d(conv)
    x = torch.randn(4, 16, depth, 4, 4).bfloat16().float()
    g = torch.randn(4, 16, depth, 4, 4).bfloat16().float()
    weight = conv.weight.detach().clone().requires_grad_(True)
    torch.nn.functional.conv3d(x, weight, padding=1).backward(g)  # float32: the reference
    reference = weight.grad
    assert reference is not None
    wrong = 0
    for _ in range(calls):
        conv.weight.grad = None
        with autocast(torch.device("cpu"), "bf16"):
            out = conv(x)
        out.backward(g.to(out.dtype))
        gradient = conv.weight.grad
        assert gradient is not None
        error = float(((gradient - reference).abs().max() / reference.abs().max()).nan_to_num(float("inf")))
        wrong += error > 0.05
    return wrong


ONE_PASS = """
import sys, torch
from segqc.training.precision import autocast, shield_conv3d
torch.set_num_threads(int(sys.argv[1]))
kd, depth, size, shielded = (int(a) for a in sys.argv[2:6])
conv = torch.nn.Conv3d(8, 8, (kd, 3, 3), padding=(kd // 2, 1, 1))
if shielded:
    shield_conv3d(conv)
x = torch.randn(4, 8, depth, size, size, requires_grad=True)
with autocast(torch.device("cpu"), "bf16"):
    out = conv(x)
out.float().sum().backward()
print("ok")
"""


def survives(threads: int, kd: int, depth: int, size: int, shielded: bool) -> bool:
    run = subprocess.run([sys.executable, "-c", ONE_PASS, str(threads), str(kd), str(depth), str(size),
                          str(int(shielded))], capture_output=True, text=True, timeout=300)
    return run.returncode == 0 and run.stdout.strip() == "ok"


def crash_sweep(threads: int) -> None:
    print("kernel  H    depths that kill the process: plain | shielded")
    for kd in (1, 3):
        for size in (48, 64, 96, 128):
            depths = (2, 4, 6, 8, 10, 12, 16)
            plain = [d for d in depths if not survives(threads, kd, d, size, False)]
            shielded = [d for d in depths if not survives(threads, kd, d, size, True)]
            print(f"{kd}x3x3  {size:3d}  {plain or '-'} | {shielded or '-'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--crash-sweep", action="store_true", help="the AMX heap corruption, per shape")
    args = parser.parse_args()
    if args.crash_sweep:
        print(f"torch {torch.__version__}, {args.threads} threads")
        crash_sweep(args.threads)
        return
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, native bfloat16: "
          f"{bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}")
    print("depth  wrong (plain)  wrong (shielded)")
    for depth in (1, 2, 3, 4, 8):
        print(f"{depth:5d}  {wrong_calls(depth, args.calls, False):6d}/{args.calls}  "
              f"{wrong_calls(depth, args.calls, True):8d}/{args.calls}")


if __name__ == "__main__":
    main()
