"""Seconds per ACDC volume for ``segqc qc predict`` with a shipped QC model (nnQC: per DDIM step count).

Run from the repository root::

    python benchmarks/bench_qc_predict.py [--model models/acdc-nnqc-small] [--data ../shared/data/acdc]
                                          [--cases 10] [--runs 5x4 20x1 2x1 5x1 10x1] [--jobs 1]
                                          [--out benchmarks/results/qc_predict.json] [--metrics dice,hd95,nsd]

A QC model without sampling (QCResUNet) takes ``--runs model`` (its own settings) or ``xK`` (K
mirrored passes: ``--runs x1 x2 x4``) and ``--metrics dice,nsd``.

What it does: links the first ``--cases`` ACDC images and their ground-truth label maps (as the
segmentations to check) into a temporary folder, then runs the real command line,
``segqc qc predict MODEL IMAGES SEGS -o OUT --steps N --samples K --jobs J --quiet --metrics
dice,hd95,nsd``, once per ``NxK`` of ``--runs`` (DDIM steps x pGT samples per slice; the model's
default is 5x4, the paper's 20x1), each in a fresh process and a fresh output folder (the time includes
interpreter start-up, imports, model loading, reading, preprocessing, sampling, restoring the pGT
to the input grid, the metrics and writing every output). It prints the wall time and the seconds
per volume.
Set the number of CPU threads with ``OMP_NUM_THREADS``/``--threads`` (default 2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/acdc-nnqc-small"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/acdc"))
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--runs", nargs="+", default=["5x4", "20x1", "2x1", "5x1", "10x1"],
                        help="STEPSxSAMPLES per run")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/qc_predict.json"))
    parser.add_argument("--metrics", default="dice,hd95,nsd")
    args = parser.parse_args()
    labels = sorted((args.data / "labelsTr").glob("*.nii.gz"))[: args.cases]
    if not labels:
        sys.exit(f"no label maps in {args.data / 'labelsTr'}")
    segqc = Path(sys.executable).with_name("segqc")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images, segs = Path(tmp) / "images", Path(tmp) / "segs"
        images.mkdir()
        segs.mkdir()
        for label in labels:
            case = label.name[: -len(".nii.gz")]
            os.symlink(label.resolve(), segs / label.name)
            os.symlink((args.data / "imagesTr" / f"{case}_0000.nii.gz").resolve(), images / f"{case}_0000.nii.gz")
        for index, run in enumerate(args.runs):
            out = Path(tmp) / f"qc_{index}_{run}"  # a fresh folder per run: a repeated run is timed again
            command = [str(segqc), "qc", "predict", str(args.model), str(images), str(segs), "-o", str(out),
                       "--jobs", str(args.jobs), "--quiet", "--metrics", args.metrics]
            steps: int | str = run
            samples = 1
            if run != "model":
                text_steps, _, text_samples = run.partition("x")
                samples = int(text_samples or 1)
                command += ["--samples", str(samples)]
                if text_steps:  # "xK": a regressor's K passes, no sampler steps
                    steps = int(text_steps)
                    command += ["--steps", str(steps)]
                else:
                    steps = "model"
            began = time.perf_counter()
            subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - began
            per_volume = wall / len(labels)
            rows.append({"steps": steps, "samples": samples, "volumes": len(labels), "wall_seconds": round(wall, 2),
                         "seconds_per_volume": round(per_volume, 3)})
            print(f"{run:>6}: {wall:7.1f} s for {len(labels)} volumes = "
                  f"{per_volume:6.2f} s/volume", flush=True)
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "threads": args.threads,
                          "jobs": args.jobs}, "model": str(args.model), "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
