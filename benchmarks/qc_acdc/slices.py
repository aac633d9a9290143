"""Preprocessed nnQC slices of an nnU-Net dataset, saved to one file that travels to another machine.

    python benchmarks/qc_acdc/slices.py ../shared/data/acdc SPLIT.json OUT_DIR [--config small] [--jobs 2] \
        [--extra-segs ZOO_TRAIN_PREDICTIONS/unet_e001 ...] [--set field_of_view=spacing ...]

writes ``OUT_DIR/train.pkl.gz`` (the ``train`` cases of the split, degraded as for training, plus
the segmentations of those cases in each ``--extra-segs`` folder, as ``segqc qc train nnqc
--extra-segs`` adds them) and
``OUT_DIR/holdout.pkl.gz`` (the holdout cases, preprocessed with the training plan and degraded
with another seed: slice-level validation data). Both hold a :class:`NnqcTrainingData` whose
images are stored as float16 (``load_slices`` returns float32). Used by ``train_variants.py``
to train and compare nnQC variants where SimpleITK is not installed (e.g. a GPU machine).
"""

from __future__ import annotations

import argparse
import gzip
import pickle
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def save_slices(data, path: Path) -> None:
    light = replace(data, images=data.images.astype(np.float16))
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wb", compresslevel=6) as handle:
        pickle.dump(light, handle, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)


def load_slices(path: Path):
    with gzip.open(path, "rb") as handle:
        data = pickle.load(handle)
    data.images = data.images.astype(np.float32)
    return data


def main() -> None:
    from segqc.fingerprint import compute_fingerprint, plan_from_fingerprint
    from segqc.io.split import Split
    from segqc.qc.nnqc import NnqcConfig
    from segqc.qc.nnqc.train import build_training_data
    from segqc.qc.training_api import parse_overrides

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("split", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--config", default="small")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--extra-segs", type=Path, action="append", default=[])
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a field of the preset, as `segqc qc train --set` (e.g. field_of_view=spacing)")
    args = parser.parse_args()
    split = Split.load(args.split)
    config = NnqcConfig.preset(args.config).with_overrides(**parse_overrides(args.set))
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    fingerprint = compute_fingerprint(args.dataset, cases=list(split.train))
    plan = plan_from_fingerprint(fingerprint, size=config.size, field_of_view=config.field_of_view)
    train = build_training_data(args.dataset, list(split.train), config, config.seed, fingerprint=fingerprint,
                                plan=plan, extra_seg_dirs=args.extra_segs, jobs=args.jobs)
    save_slices(train, args.out / "train.pkl.gz")
    holdout = build_training_data(args.dataset, list(split.holdout), config, config.seed + 1000,
                                  fingerprint=fingerprint, plan=plan, jobs=args.jobs)
    save_slices(holdout, args.out / "holdout.pkl.gz")
    print(f"train {train.summary()}\nholdout {holdout.summary()}\n{time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
