"""Speed of the distribution metrics: segqc's GED and Hungarian-matched IoU (every pairwise IoU in
one matrix product) against the per-pair loop that public evaluation scripts of probabilistic
segmentation use (IoU of each pair of masks computed on its own, as in the Probabilistic U-Net
and PHiSeg evaluation code), on the same masks; the values must agree.

    python benchmarks/bench_distribution.py [--size 128] [--samples 16] [--raters 4] [--images 50]

Prints the seconds per image of both and their ratio.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from segqc.metrics.distribution import generalized_energy_distance, hungarian_iou


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def loop_ged2(samples: np.ndarray, raters: np.ndarray) -> float:
    """GED² with one IoU per pair (self-pairs included), the loop way."""
    cross = np.mean([1 - _iou(s, y) for s in samples for y in raters])
    within_s = np.mean([1 - _iou(s, t) for s in samples for t in samples])
    within_y = np.mean([1 - _iou(y, z) for y in raters for z in raters])
    return float(2 * cross - within_s - within_y)


def loop_hungarian(samples: np.ndarray, raters: np.ndarray) -> float:
    """HM-IoU with both sets repeated to the lcm, one IoU per pair of the repeated sets."""
    size = math.lcm(len(samples), len(raters))
    s = [samples[i % len(samples)] for i in range(size)]
    y = [raters[j % len(raters)] for j in range(size)]
    cost = np.array([[1 - _iou(a, b) for b in y] for a in s])
    rows, cols = linear_sum_assignment(cost)
    return float(1 - cost[rows, cols].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--raters", type=int, default=4)
    parser.add_argument("--images", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: args.size, : args.size]
    images = []
    for _ in range(args.images):  # disks of varying radius around a common centre: realistic overlaps
        centre = rng.uniform(0.3, 0.7, 2) * args.size
        distance = np.hypot(yy - centre[0], xx - centre[1])
        images.append((np.stack([distance < args.size * rng.uniform(0.1, 0.25) for _ in range(args.samples)]),
                       np.stack([distance < args.size * rng.uniform(0.1, 0.25) for _ in range(args.raters)])))
    timings = {}
    values = {}
    for name, ged, hm in (("segqc", lambda s, y: generalized_energy_distance(s, y)[0], hungarian_iou),
                          ("per-pair loop", loop_ged2, loop_hungarian)):
        began = time.perf_counter()
        values[name] = [(ged(s, y), hm(s, y)) for s, y in images]
        timings[name] = (time.perf_counter() - began) / len(images)
    np.testing.assert_allclose(values["segqc"], values["per-pair loop"], atol=1e-9)
    print(f"{args.images} images of {args.size}^2 px, {args.samples} samples, {args.raters} raters "
          f"(GED and HM-IoU per image; values agree to 1e-9)")
    for name, seconds in timings.items():
        print(f"  {name:>14}: {seconds * 1000:8.2f} ms / image")
    print(f"  ratio: segqc is {timings['per-pair loop'] / timings['segqc']:.1f}x faster")


if __name__ == "__main__":
    main()
