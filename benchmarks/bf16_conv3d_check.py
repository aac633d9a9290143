"""How often PyTorch's CPU bfloat16 kernel gets the weight gradient of a 3D convolution wrong,
by input depth, with and without :func:`segqc.training.precision.shield_conv3d`.

    python benchmarks/bf16_conv3d_check.py [--calls 200] [--threads 2]

For each depth, ``calls`` backward passes of a 16-channel 3 x 3 x 3 convolution on a (4, 16, D,
4, 4) input under bfloat16 autocast; a call is wrong when its weight gradient is not finite or
differs from the float32 one by more than 5 % of the largest entry (bfloat16 rounding alone stays
under 0.5 %)."""

from __future__ import annotations

import argparse

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, native bfloat16: "
          f"{bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}")
    print("depth  wrong (plain)  wrong (shielded)")
    for depth in (1, 2, 3, 4, 8):
        print(f"{depth:5d}  {wrong_calls(depth, args.calls, False):6d}/{args.calls}  "
              f"{wrong_calls(depth, args.calls, True):8d}/{args.calls}")


if __name__ == "__main__":
    main()
