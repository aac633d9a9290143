"""Fixtures of the report tests: small QC, benchmark and evaluate output folders, made with the
toy dataset and the oracle QC model of ``tests/qc`` (its pseudo ground truth is the ground truth)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "qc"))

from qc_toy_data import make_qc_dataset, oracle_model

from segqc.io.images import read_label_map, write_image


def _worse_segmentations(labels: Path, target: Path) -> Path:
    """Shift some ground truths so the estimates differ between cases (case0 stays perfect)."""
    for i, path in enumerate(sorted(labels.glob("*.nii.gz"))):
        label = read_label_map(path)
        write_image(target / path.name, np.roll(label.array, 2 * i, axis=0), label.geometry)
    return target


@pytest.fixture(scope="session")
def toy(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report_toy")
    dataset = make_qc_dataset(root / "data", n_cases=4)
    segs = _worse_segmentations(dataset / "labelsTr", root / "segs")
    model_dir = root / "model"
    model_dir.mkdir()
    return {"root": root, "dataset": dataset, "images": dataset / "imagesTr", "gt": dataset / "labelsTr",
            "segs": segs, "model_dir": model_dir}


@pytest.fixture(scope="session")
def qc_out(toy) -> Path:
    from segqc.qc.inference import QcSettings, qc_folder

    out = toy["root"] / "qc"
    qc_folder(toy["model_dir"], toy["images"], toy["segs"], out, settings=QcSettings(metrics=("dice",)),
              model=oracle_model(toy["dataset"]))
    return out


@pytest.fixture(scope="session")
def benchmark_out(toy) -> Path:
    from segqc.qc.assessment import benchmark_qc
    from segqc.qc.inference import QcSettings

    out = toy["root"] / "benchmark"
    benchmark_qc(toy["model_dir"], toy["images"], toy["segs"], toy["gt"], out,
                 settings=QcSettings(metrics=("dice",)), model=oracle_model(toy["dataset"]))
    return out


@pytest.fixture(scope="session")
def evaluate_out(toy) -> Path:
    from segqc.evaluation.evaluate import evaluate_folder

    out = toy["root"] / "evaluate"
    evaluate_folder(toy["segs"], toy["gt"], out, metrics=("dice", "hd95"), multiclass_all=True)
    return out
