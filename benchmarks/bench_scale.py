"""Seconds and peak memory of the whole command line over thousands of cases: `segqc evaluate`
(first run, and an unchanged rerun that reuses every case) and `segqc report` (the worst 300
cases drawn, and optionally every case).

    python benchmarks/bench_scale.py 300 1000 3000 [--jobs 1] [--report-all-up-to 1000] [--keep DIR]

Each size gets its own generated cases: 32 x 32 x 16 voxels at 1 x 1 x 2 mm, three classes
(random ellipsoids), predictions shifted by up to two voxels and every third one with an eroded
class 2. Prints one line per size and the results as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from segqc.io.geometry import Geometry
from segqc.io.images import write_image

SHAPE = (32, 32, 16)
SPACING = (1.0, 1.0, 2.0)


def _generate(root: Path, n: int) -> None:
    rng = np.random.default_rng(n)
    grid = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    geometry = Geometry.from_shape(SHAPE, SPACING)
    for i in range(n):
        gt = np.zeros(SHAPE, np.uint8)
        for label in (1, 2, 3):
            centre = rng.uniform([8, 8, 4], [24, 24, 12])
            radius = rng.uniform([3, 3, 2], [7, 7, 4])
            gt[sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius)) <= 1] = label
        pred = np.roll(gt, tuple(int(v) for v in rng.integers(-2, 3, 3)), axis=(0, 1, 2))
        if i % 3 == 0:
            pred[(pred == 2) & ~ndimage.binary_erosion(pred == 2)] = 0
        write_image(root / "gt" / f"case_{i:05d}.nii.gz", gt, geometry)
        write_image(root / "pred" / f"case_{i:05d}.nii.gz", pred, geometry)


def _run(command: list[str]) -> tuple[float, float]:
    """Wall seconds and the peak resident memory (MB) of one command in a fresh process."""
    script = ("import resource, subprocess, sys, time\n"
              "start = time.perf_counter()\n"
              "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
              "seconds = time.perf_counter() - start\n"
              "print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n")
    out = subprocess.run([sys.executable, "-c", script, *command], check=True, capture_output=True, text=True)
    seconds, peak = out.stdout.split()
    return float(seconds), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", type=int, nargs="+")
    parser.add_argument("--jobs", type=int, default=1, help="--jobs of evaluate and report")
    parser.add_argument("--report-all-up-to", type=int, default=1000,
                        help="also time `report --pictures 0` (every case drawn) up to this many cases")
    parser.add_argument("--keep", type=Path, default=None, help="generate here and keep the folders")
    args = parser.parse_args()
    segqc = [sys.executable, "-m", "segqc"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for n in args.sizes:
            root = base / f"n{n}"
            start = time.perf_counter()
            _generate(root, n)
            generated = time.perf_counter() - start
            out = root / "evaluate"
            evaluate = [*segqc, "evaluate", str(root / "pred"), str(root / "gt"), "-o", str(out), "-q",
                        "--jobs", str(args.jobs)]
            first = _run(evaluate)
            rerun = _run(evaluate)
            report = _run([*segqc, "report", str(out), "-o", str(root / "report.html"), "-q", "--pictures", "300",
                           "--jobs", str(max(args.jobs, 1))])
            row = {"cases": n, "generate_s": round(generated, 1),
                   "evaluate_s": round(first[0], 1), "evaluate_mb": round(first[1]),
                   "rerun_s": round(rerun[0], 1), "rerun_mb": round(rerun[1]),
                   "report_s": round(report[0], 1), "report_mb": round(report[1]),
                   "report_html_mb": round((root / "report.html").stat().st_size / 1e6, 1)}
            if n <= args.report_all_up_to:
                every = _run([*segqc, "report", str(out), "-o", str(root / "report_all.html"), "-q", "--pictures", "0",
                              "--jobs", str(max(args.jobs, 1))])
                row.update({"report_all_s": round(every[0], 1), "report_all_mb": round(every[1]),
                            "report_all_html_mb": round((root / "report_all.html").stat().st_size / 1e6, 1)})
            results.append(row)
            print(" ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    print(json.dumps({"jobs": args.jobs, "results": results}))


if __name__ == "__main__":
    main()
