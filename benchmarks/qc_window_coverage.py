"""How much ground-truth foreground lies beyond a QC model's window, per field of view.

    python benchmarks/qc_window_coverage.py ../shared/data/hc18 --size 96
    python benchmarks/qc_window_coverage.py ../shared/data/acdc --size 96 --split benchmarks/results/qc_acdc/split.json

The plan is made as ``segqc qc train`` makes it: the fingerprint of the training cases (the
split's ``train`` list, or every case) and ``plan_from_fingerprint`` with each field of view
(``spacing``: ``size`` pixels at the median spacing; ``foreground``: widened to hold the training
foreground). Every case of the folder is then preprocessed with its ground truth, as nnQC's
training does, and the share of its foreground outside the window is measured on the original
grid (``outside_window_share``). Prints one line per field of view; ``--out`` writes the per-case
shares as CSV.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from segqc.fingerprint import compute_fingerprint
from segqc.fingerprint.preprocessing import (
    OUTSIDE_WINDOW_SHARE,
    foreground_field_of_view,
    outside_window_share,
    plan_from_fingerprint,
    preprocess_images,
    read_case_images,
    read_case_label,
    window_extent_mm,
    window_mask,
)
from segqc.io.datasets import Dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--size", type=int, default=96, help="slice size (px), as the config's")
    parser.add_argument("--split", type=Path, help="split.json: the fingerprint of its train cases")
    parser.add_argument("--fields", default="spacing,foreground", help="fields of view to compare")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, help="CSV of the per-case shares")
    args = parser.parse_args()
    began = time.perf_counter()
    dataset = Dataset.open(args.dataset)
    train = json.loads(args.split.read_text())["train"] if args.split else None
    fingerprint = compute_fingerprint(args.dataset, cases=dataset.select(train), jobs=args.jobs)
    print(f"{args.dataset}: fingerprint of {fingerprint.n_cases} case(s); the foreground's in-plane extent "
          f"(95th percentile x 1.1): {foreground_field_of_view(fingerprint):.1f} mm")
    cases = dataset.select(None)
    plans = {field: plan_from_fingerprint(fingerprint, size=args.size, field_of_view=field)
             for field in args.fields.split(",")}
    rows = []
    for case in cases:
        images = read_case_images(list(dataset.image_files[case]))
        truth = read_case_label(dataset.label_files[case], images[0])
        for field, plan in plans.items():
            prepared = preprocess_images(images, plan, label=truth)
            rows.append({"case": case, "field_of_view": field,
                         "share": outside_window_share(truth.array, window_mask(prepared.transform))})
    table = pd.DataFrame(rows)
    for field, plan in plans.items():
        shares = table.loc[table["field_of_view"] == field, "share"].to_numpy()
        cut = int((shares > OUTSIDE_WINDOW_SHARE).sum())
        print(f"  {field}: window {window_extent_mm(plan)} mm at {args.size} px; {cut} "
              f"of {len(shares)} ground truths cut by more than {100 * OUTSIDE_WINDOW_SHARE:g} %; foreground beyond "
              f"the window: mean {100 * np.mean(shares):.2f} %, worst {100 * np.max(shares):.1f} %")
    if args.out:
        table.to_csv(args.out, index=False)
    print(f"{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
