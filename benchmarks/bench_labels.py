"""Label tooling at cohort scale: ``segqc labels rules``, ``check``, ``merge`` and ``quality`` over N
whole-body phantoms, timed as whole command lines, and whether the rules undo injected errors.

    python benchmarks/bench_labels.py --cases 100 --spacing 3 --jobs 2 --out /tmp/bench_labels \
        [--json benchmarks/results/labels.json]

Cases: the phantom of :mod:`segqc.anatomy.phantom` (``total`` scheme, CT-like image) on a grid of
``--spacing`` mm, every other case on a flipped and permuted grid, sex alternating (metadata CSV).
Every case gets errors with a known answer: left and right kidneys swapped, the left ribs numbered
bottom-up, a stray liver component in the head, and in female cases a prostate. A second source
(``fast``) is the clean map with every structure's outer layer removed (one voxel of erosion),
standing in for a coarser model. Commands, each timed once as a subprocess on ``--jobs`` workers:
``rules`` (broken -> fixed), ``check`` (flags on the broken maps), ``merge`` (broken + fast ->
total, priority), ``quality`` (clean as base; broken, fixed and fast as pseudo-label datasets).
Printed and written: seconds per command and per case, voxels the rules left different from the
clean phantom (the brain voxels the stray component overwrote cannot come back: they become
background), flags per kind, and the Table-5 scores of the broken / fixed / fast datasets against
the clean one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from segqc.anatomy.phantom import make_phantom
from segqc.io.images import read_label_map, write_image

FLIPPED = (-1.0, 0, 0, 0, 0, 1.0, 0, -1.0, 0)


def _write_cases(root: Path, cases: int, spacing: float) -> int:
    """Write the cases; return the voxels the stray liver overwrote (brain: not restorable)."""
    for folder in ("clean", "broken", "fast", "images"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    templates = {}
    overwritten = 0
    for i in range(cases):
        sex = "M" if i % 2 == 0 else "F"
        direction = FLIPPED if i % 4 >= 2 else None
        key = (sex, i % 4 >= 2)
        if key not in templates:
            templates[key] = make_phantom(spacing=spacing, sex="M", direction=direction)
        phantom = templates[key]
        case = f"case_{i:03d}"
        clean = phantom.labels.copy()
        if sex == "F":
            clean[clean == phantom.value("prostate")] = 0
        broken = clean.copy()
        kl, kr = phantom.value("kidney_left"), phantom.value("kidney_right")
        broken[clean == kl], broken[clean == kr] = kr, kl
        for n in range(1, 13):
            broken[clean == phantom.value(f"rib_left_{n}")] = phantom.value(f"rib_left_{13 - n}")
        brain = np.argwhere(clean == phantom.value("brain")).mean(axis=0).astype(int)
        blob = tuple(slice(c - 1, c + 2) for c in brain)
        overwritten += int((clean[blob] != phantom.value("liver")).sum())
        broken[blob] = phantom.value("liver")
        if sex == "F":
            broken[phantom.labels == phantom.value("prostate")] = phantom.value("prostate")
        fast = clean.copy()
        for value in np.unique(clean)[1:]:
            mask = clean == value
            fast[mask & ~ndimage.binary_erosion(mask)] = 0
        write_image(root / "clean" / f"{case}.nii.gz", clean, phantom.geometry)
        write_image(root / "broken" / f"{case}.nii.gz", broken, phantom.geometry)
        write_image(root / "fast" / f"{case}.nii.gz", fast, phantom.geometry)
        write_image(root / "images" / f"{case}_0000.nii.gz", phantom.image, phantom.geometry)
        rows.append({"case": case, "sex": sex})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return overwritten


def _timed(command: list[str]) -> float:
    began = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if result.returncode not in (0, 1):
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--spacing", type=float, default=3.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = args.out
    if root.exists():
        shutil.rmtree(root)
    began = time.perf_counter()
    overwritten = _write_cases(root, args.cases, args.spacing)
    generate = time.perf_counter() - began
    segqc = [str(Path(sys.executable).with_name("segqc"))]
    jobs = ["-j", str(args.jobs), "-q"]
    seconds = {
        "rules": _timed([*segqc, "labels", "rules", str(root / "broken"), "--metadata", str(root / "metadata.csv"),
                         "-o", str(root / "fixed"), *jobs]),
        "check": _timed([*segqc, "labels", "check", str(root / "broken"), str(root / "images"),
                         "-o", str(root / "flags"), *jobs]),
        "merge": _timed([*segqc, "labels", "merge", str(root / "broken"), str(root / "fast"), "--scheme", "total",
                         "--strategy", "priority", "-o", str(root / "merged"), *jobs]),
        "quality": _timed([*segqc, "labels", "quality", str(root / "clean"), str(root / "broken"),
                           str(root / "fixed"), str(root / "fast"), "-o", str(root / "quality"), *jobs]),
    }
    residual = 0
    for path in sorted((root / "clean").glob("*.nii.gz")):
        residual += int((read_label_map(path).array != read_label_map(root / "fixed" / path.name).array).sum())
    quality = pd.read_csv(root / "quality" / "quality.csv")
    flags = pd.read_csv(root / "flags" / "flags.csv")
    shape = read_label_map(next((root / "clean").glob("*.nii.gz"))).array.shape
    result = {
        "cases": args.cases, "spacing_mm": args.spacing, "voxels_per_case": int(np.prod(shape)), "jobs": args.jobs,
        "seconds_generate": round(generate, 1),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "seconds_per_case": {k: round(v / args.cases, 3) for k, v in seconds.items()},
        "voxels_differing_from_clean_after_rules": residual,
        "of_which_overwritten_by_the_stray_component": overwritten,
        "flags_per_kind": {str(k): int(v) for k, v in flags["flag"].value_counts().items()} if len(flags) else {},
        "quality": quality.to_dict("records"),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
