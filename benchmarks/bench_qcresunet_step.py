"""Seconds per QCResUNet ``small`` training step on this machine, in float32 and in bfloat16 autocast.

    python benchmarks/bench_qcresunet_step.py [--precisions fp32,bf16] [--steps 6] [--threads 2]

One step is what a training step costs in compute: the forward pass of the ``small`` network for
ACDC-shaped input (batch 4, the image and the one-hot query of 3 classes, 10 slices of 96 x 96
px; strides and kernels resolved for 10 mm slices of 1.5625 mm pixels, as on ACDC), a loss on
all its outputs, the backward pass and one Adam update. bfloat16 runs the forward pass under
``segqc.training.precision.autocast`` with the network shielded as training shields it. Prints
the median of the steps after the first two (warm-up) and the CPU's bfloat16 capabilities, the
facts ``precision=auto`` decides by (native: AVX-512 BF16 or AMX-BF16).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from segqc.qc.qcresunet.config import QcResUNetConfig, resolve_kernels, resolve_strides
from segqc.qc.qcresunet.train import build_network
from segqc.training.precision import autocast, resolve_precision


def step_seconds(precision: str, steps: int) -> list[float]:
    config = QcResUNetConfig.preset("small")
    strides = resolve_strides(config, ndim=3, slice_spacing=10.0, inplane_spacing=1.5625)
    kernels = resolve_kernels(config, ndim=3, slice_spacing=10.0, inplane_spacing=1.5625, strides=strides)
    torch.manual_seed(0)
    network = build_network(config, spatial_dims=3, image_channels=1, n_classes=3, strides=strides,
                            precision=precision, kernels=kernels)
    optimiser = torch.optim.Adam(network.parameters(), 1e-3)
    image = torch.randn(4, 1, 10, 96, 96)
    query = torch.zeros(4, 4, 10, 96, 96)
    query[:, 0] = 1.0
    cpu = torch.device("cpu")
    seconds = []
    for _ in range(steps):
        began = time.perf_counter()
        optimiser.zero_grad()
        if precision == "bf16":
            with autocast(cpu, "bf16"):
                output = network(image, query)
        else:
            output = network(image, query)
        outputs = [value.float().mean() for value in vars(output).values() if isinstance(value, torch.Tensor)]
        torch.stack(outputs).sum().backward()
        optimiser.step()
        seconds.append(time.perf_counter() - began)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    capabilities = torch.cpu.get_capabilities()
    print(f"torch {torch.__version__}, {args.threads} thread(s); avx512_f {capabilities.get('avx512_f')}, "
          f"avx512_bf16 {capabilities.get('avx512_bf16')}, amx_bf16 {capabilities.get('amx_bf16')}; "
          f"precision=auto resolves to {resolve_precision('auto', torch.device('cpu'))}")
    for precision in args.precisions.split(","):
        seconds = step_seconds(precision, args.steps)
        print(f"{precision}: {statistics.median(seconds[2:]):.3f} s per step (median of steps 3-{args.steps}; "
              f"all: {', '.join(f'{s:.2f}' for s in seconds)})")


if __name__ == "__main__":
    main()
