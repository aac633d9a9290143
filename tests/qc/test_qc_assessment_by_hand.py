"""Benchmark helpers by hand: DSC_SEM of stored error bitmasks against numpy counts, the failure
count taken from the true Dice (not from the estimate), and the output names of nested folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segqc.io.geometry import Geometry
from segqc.io.images import read_label_map, write_image


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def test_dsc_sem_reads_bit_c_minus_one_for_class_c_and_scores_only_the_cases_asked_for(tmp_path: Path) -> None:
    """Classes 1 and 2: bit 0 of the error map is class 1's predicted error, bit 1 class 2's. The
    true error of class c is ``(seg == c) XOR (gt == c)``; the Dice of each pair is counted here
    with numpy. ``cases`` restricts the scored cases to those of the benchmark."""
    from segqc.qc.assessment import error_map_agreement

    geometry = Geometry.from_shape((6, 6, 1))
    rng = np.random.default_rng(0)
    expected = {}
    for case in ("case0", "case1"):
        seg = rng.integers(0, 3, size=(6, 6, 1)).astype(np.uint8)
        gt = rng.integers(0, 3, size=(6, 6, 1)).astype(np.uint8)
        predicted = {1: rng.random((6, 6, 1)) < 0.5, 2: rng.random((6, 6, 1)) < 0.5}
        errors = (predicted[1].astype(np.uint8) | (predicted[2].astype(np.uint8) << 1)).astype(np.uint8)
        for folder, array in (("segs", seg), ("gt", gt), ("qc/errors", errors)):
            write_image(tmp_path / folder / f"{case}.nii.gz", array, geometry)
        for c in (1, 2):
            expected[(case, str(c))] = _dice(predicted[c], (seg == c) ^ (gt == c))
    (tmp_path / "qc" / "report.json").write_text(json.dumps({"cases": ["case0", "case1"]}))
    pd.DataFrame({"case": "case0", "label": ["all", "1", "2"], "label_name": ["all", "A", "B"], "metric": "dice",
                  "estimate": 1.0}).to_csv(tmp_path / "qc" / "qc.csv", index=False)
    table = error_map_agreement(tmp_path / "qc", tmp_path / "segs", tmp_path / "gt")
    assert len(table) == 4 and len(set(expected.values())) == 4  # four different numbers to tell apart
    for row in table.itertuples(index=False):
        assert row.dsc_sem == pytest.approx(expected[(row.case, row.label)])
    only = error_map_agreement(tmp_path / "qc", tmp_path / "segs", tmp_path / "gt", cases=["case1", "case9"])
    assert sorted(set(only["case"])) == ["case1"]


def test_the_failure_count_is_of_true_dice_below_the_threshold(qc_dataset: Path, tmp_path: Path) -> None:
    """A "model" whose pseudo ground truth is the segmentation itself estimates Dice 1 for every
    case. One segmentation is a 3 x 3 blob in a corner (its true Dice is far below 0.7), the others
    are the ground truths: one failure, although no estimate is below the threshold."""
    from qc_toy_data import oracle_model

    from segqc.qc.assessment import benchmark_qc
    from segqc.qc.inference import QcSettings
    from segqc.qc.model_api import QcModel

    oracle = oracle_model(qc_dataset)

    def generate(images, segs, ratios, samples, steps, seed):
        return np.repeat(np.asarray(segs, dtype=np.int64)[None], samples, axis=0)

    self_agreeing = QcModel(method="self", plan=oracle.plan, labels=oracle.labels, fingerprint=oracle.fingerprint,
                            generate=generate)
    segs = tmp_path / "segs"
    for i, path in enumerate(sorted((qc_dataset / "labelsTr").glob("*.nii.gz"))):
        label = read_label_map(path)
        seg = label.array.copy()
        if i == 0:
            seg[:] = 0
            seg[0:3, 0:3, :] = 1
        write_image(segs / path.name, seg, label.geometry)
    benchmark_qc(tmp_path, qc_dataset / "imagesTr", segs, qc_dataset / "labelsTr", tmp_path / "b",
                 settings=QcSettings(metrics=("dice",)), model=self_agreeing)
    failures = json.loads((tmp_path / "b" / "benchmark.json").read_text())["failure_detection"]
    assert failures["threshold"] == 0.7 and failures["n"] == 4 and failures["failed"] == 1


def test_a_folder_inside_another_keeps_the_outer_folders_name(tmp_path: Path) -> None:
    """``runA`` and ``runA/preds``: their common parent is the folder holding ``runA``, so the
    names are ``runA`` and ``runA__preds`` (never an empty path for the outer folder)."""
    from segqc.qc.assessment import run_names

    outer = tmp_path / "runA"
    inner = outer / "preds"
    inner.mkdir(parents=True)
    assert run_names([outer, inner]) == ["runA", "runA__preds"]
    assert run_names([tmp_path / "x" / "preds", tmp_path / "y" / "preds"]) == ["x__preds", "y__preds"]
