"""Peak memory per voxel of whole command lines on one large CT: `segqc labels check` (with the
image), `segqc labels rules` and `segqc evaluate` (dice, hd95, nsd of 117 classes).

    python benchmarks/bench_volume_memory.py [--data ../shared/data/totalseg] [--zoom 3 3 5] \
        [--segqc-src DIR] [--json benchmarks/results/volume_memory.json]

The case is TotalSegmentator's example CT (122 x 101 x 30 voxels of 3 mm) and its two label maps
(`example_seg` and `example_seg_fast`), enlarged by `--zoom` (linear for the image, nearest for the
labels): 366 x 303 x 150 = 16.6 M voxels by default. Each command runs in a fresh process, once on
the original case (start-up, imports) and once on the enlarged one; the figure is the difference of
the two peak resident set sizes (`ru_maxrss` of the child, `os.wait4`) divided by the difference in
voxels. `--segqc-src` runs another checkout's `src/` (e.g. an older commit in a git worktree) with
the same interpreter, to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from segqc.io.images import read_image, read_label_map, write_image


def _write_case(root: Path, data: Path, zoom: tuple[float, ...]) -> int:
    image = read_image(data / "example_ct_sm.nii.gz")
    geometry = replace(image.geometry, shape=tuple(round(n * z) for n, z in zip(image.geometry.shape, zoom)),
                       spacing=tuple(s / z for s, z in zip(image.geometry.spacing, zoom)))
    ct = ndimage.zoom(image.array, zoom, order=1).round().astype(np.int16)
    write_image(root / "images" / "ct_0000.nii.gz", ct, replace(geometry, shape=ct.shape))
    for folder, name in (("labels", "example_seg"), ("fast", "example_seg_fast")):
        labels = ndimage.zoom(read_label_map(data / f"{name}.nii.gz").array, zoom, order=0).astype(np.uint8)
        write_image(root / folder / "ct.nii.gz", labels, replace(geometry, shape=labels.shape))
    return int(ct.size)


def _peak_mb(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one child process; a failed command stops the benchmark."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    error = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        sys.exit(f"failed: {' '.join(command)}\n{error.decode(errors='replace')}")
    return usage.ru_maxrss / 1024, seconds


COMMANDS = {
    "labels check": lambda case, out: ["labels", "check", str(case / "labels"), str(case / "images"), "-o", out, "-q"],
    "labels rules": lambda case, out: ["labels", "rules", str(case / "labels"), "-o", out, "-q"],
    "evaluate": lambda case, out: ["evaluate", str(case / "fast"), str(case / "labels"), "-o", out,
                                   "--metrics", "dice,hd95,nsd", "-q"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/totalseg")
    parser.add_argument("--zoom", type=float, nargs=3, default=(3.0, 3.0, 5.0))
    parser.add_argument("--segqc-src", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    env = dict(os.environ)
    if args.segqc_src is not None:
        env["PYTHONPATH"] = str(args.segqc_src.resolve())
    segqc = [sys.executable, "-m", "segqc"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        small = _write_case(root / "small", args.data, (1.0, 1.0, 1.0))
        large = _write_case(root / "large", args.data, tuple(args.zoom))
        for name, make in COMMANDS.items():
            found = {}
            for size in ("small", "large"):
                out = root / f"out_{size}"
                found[size] = _peak_mb(segqc + make(root / size, str(out)), env)
                shutil.rmtree(out)
            per_voxel = (found["large"][0] - found["small"][0]) * 2**20 / (large - small)
            rows.append({"command": name, "voxels": large, "peak_mb": round(found["large"][0], 1),
                         "start_mb": round(found["small"][0], 1), "bytes_per_voxel": round(per_voxel, 1),
                         "seconds": round(found["large"][1], 2)})
            print(f"{name:13s} {large / 1e6:.1f} M voxels: peak {found['large'][0]:6.0f} MB "
                  f"(start-up case {found['small'][0]:4.0f} MB) = {per_voxel:5.1f} B/voxel, {found['large'][1]:.1f} s")
    result = {"command": " ".join(sys.argv), "segqc_src": str(args.segqc_src or "installed"), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
