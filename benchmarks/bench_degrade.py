"""Throughput of ``segqc degrade`` (degraded masks per second) on a subset of ACDC.

Run from the repository root::

    python benchmarks/bench_degrade.py [--data ../shared/data/acdc] [--cases 10] [--per-case 5]
                                       [--jobs 1 2] [--slices] [--out benchmarks/results/degrade.json]

What it does: links the first ``--cases`` label maps (and their images, so the geometry check
runs as in real use) of an nnU-Net dataset into a temporary ``labelsTr``/``imagesTr``, then runs
the real command line, ``segqc degrade ... --per-case N --seed 0 --jobs J --quiet``, once per
``--jobs`` value, each into a fresh output folder, in a fresh process (so the time includes
interpreter start-up, imports, reading, the Dice search, writing the NIfTI files and measuring
Dice/HD95/NSD for the manifest). It prints, per run, the wall time, masks written, masks per
second and the share of masks inside their requested bin, and writes the numbers as JSON.
``--slices`` adds the same runs in 2D-slice mode (``--slices``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _subset(data: Path, n_cases: int, into: Path) -> Path:
    labels = sorted((data / "labelsTr").glob("*.nii.gz"))[:n_cases]
    if not labels:
        raise SystemExit(f"no label maps in {data / 'labelsTr'}")
    (into / "labelsTr").mkdir(parents=True)
    (into / "imagesTr").mkdir()
    if (data / "dataset.json").is_file():
        shutil.copy(data / "dataset.json", into / "dataset.json")
    for label in labels:
        (into / "labelsTr" / label.name).symlink_to(label.resolve())
        case = label.name[: -len(".nii.gz")]
        for image in sorted((data / "imagesTr").glob(f"{case}_*.nii.gz")):
            (into / "imagesTr" / image.name).symlink_to(image.resolve())
    return into / "labelsTr"


def _run(labels: Path, out: Path, per_case: int, jobs: int, slices: bool) -> dict:
    segqc = Path(sys.executable).with_name("segqc")
    command = [str(segqc) if segqc.exists() else "segqc", "degrade", str(labels), "-o", str(out),
               "--per-case", str(per_case), "--seed", "0", "--jobs", str(jobs), "--quiet"]
    if slices:
        command.append("--slices")
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    manifest = pd.read_csv(out / "manifest.csv")
    n = len(manifest)
    return {
        "mode": "2D slices" if slices else "3D volumes",
        "jobs": jobs,
        "cases": len(list(labels.iterdir())),
        "masks": n,
        "wall_s": wall,
        "masks_per_s": n / wall,
        "in_bin": float(manifest["in_bin"].astype(str).str.lower().eq("true").mean()) if n else None,
        "command": " ".join(command),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "acdc")
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--per-case", type=int, default=5)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--slices", action="store_true", help="also time the 2D-slice mode")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "degrade.json")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_degrade_") as tmp:
        labels = _subset(args.data, args.cases, Path(tmp) / "data")
        modes = [False, True] if args.slices else [False]
        for slices in modes:
            for jobs in args.jobs:
                out = Path(tmp) / f"out_{'2d' if slices else '3d'}_j{jobs}"
                result = _run(labels, out, args.per_case, jobs, slices)
                results.append(result)
                print(f"{result['mode']:>10s}  jobs={jobs}  {result['masks']:5d} masks  {result['wall_s']:7.1f} s  "
                      f"{result['masks_per_s']:6.2f} masks/s  in bin {100 * result['in_bin']:.1f} %", flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    record = {
        "data": str(args.data),
        "cases": args.cases,
        "per_case": args.per_case,
        "cpu_count": os.cpu_count(),
        "load_average_after": load,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
