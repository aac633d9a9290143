"""Fit QCResUNet's read-out to a trained model (one without a read-out, or to replace it).

    python benchmarks/qc_acdc/fit_readout.py --model MODEL_DIR --dataset ../shared/data/acdc \
        --split benchmarks/results/qc_acdc/split.json --out OUT_DIR [--extra-segs zoo_all/unet_e001 ...] \
        [--fourier 1024] [--corrections K] [--no-surface] [--per-case N] [--real-weight W]

Runs the step ``segqc qc train qcresunet`` runs after training each network (fresh degraded
segmentations of the training cases — ``--split``'s ``train`` list, or every case — and a
closed-form ridge fit and its random-Fourier-feature correction,
:func:`segqc.qc.qcresunet.train.fit_readout`) on a trained model and
writes the model with its read-out to ``OUT_DIR/model``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from segqc.qc.qcresunet.config import QcResUNetConfig
from segqc.qc.qcresunet.train import add_readout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", type=Path, help="split JSON; its 'train' cases (default: every case)")
    small = QcResUNetConfig.preset("small")
    parser.add_argument("--per-case", type=int, default=QcResUNetConfig.readout_per_case,
                        help=f"fresh degraded segmentations per volume (default: %(default)s; the small preset "
                             f"fits {small.readout_per_case})")
    parser.add_argument("--extra-segs", type=Path, action="append", default=[],
                        help="the training's real segmentations (segqc qc train --extra-segs); repeatable")
    parser.add_argument("--fourier", type=int, default=1024,
                        help="random Fourier features of the read-out's correction (0: linear read-out)")
    parser.add_argument("--corrections", type=int, default=QcResUNetConfig.readout_corrections,
                        help=f"Fourier corrections, each on its own random features, averaged (default: %(default)s; "
                             f"small: {small.readout_corrections})")
    parser.add_argument("--no-surface", action="store_true",
                        help="leave out the boundary numbers of the error maps (the read-out before they existed)")
    parser.add_argument("--real-weight", type=float, default=QcResUNetConfig.readout_real_weight,
                        help=f"each --extra-segs segmentation's weight in the fit (default: %(default)s; small: "
                             f"{small.readout_real_weight:g})")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(max(1, args.jobs))
    cases = json.loads(args.split.read_text())["train"] if args.split else None
    add_readout(args.model, args.dataset, args.out, cases=cases, readout_per_case=args.per_case,
                readout_fourier=args.fourier, readout_corrections=args.corrections,
                readout_surface=not args.no_surface, readout_real_weight=args.real_weight,
                extra_seg_dirs=args.extra_segs, jobs=args.jobs, progress=True)


if __name__ == "__main__":
    main()
