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


def _shifted_segmentations(labels: Path, target: Path, perfect: int) -> Path:
    """The first ``perfect`` ground truths as they are, the others shifted by 6 to 11 voxels
    (true Dice well below 0.75, so the QC run flags them)."""
    for i, path in enumerate(sorted(labels.glob("*.nii.gz"), key=lambda p: int(p.name[4:].split(".")[0]))):
        label = read_label_map(path)
        shift = 0 if i < perfect else 6 + i % 6
        write_image(target / path.name, np.roll(label.array, shift, axis=0), label.geometry)
    return target


@pytest.fixture(scope="session")
def qc_out_24(tmp_path_factory) -> Path:
    """A QC output of 24 toy cases of which 20 are flagged (oracle model: estimate = true Dice)."""
    from segqc.qc.inference import QcSettings, qc_folder

    root = tmp_path_factory.mktemp("review_toy")
    dataset = make_qc_dataset(root / "data", n_cases=24)
    segs = _shifted_segmentations(dataset / "labelsTr", root / "segs", perfect=4)
    out = root / "qc"
    (root / "model").mkdir()
    qc_folder(root / "model", dataset / "imagesTr", segs, out, settings=QcSettings(metrics=("dice",)),
              model=oracle_model(dataset))
    return out


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium (no browser download), headless, WebGL through SwiftShader."""
    if not CHROMIUM.exists():
        pytest.fail(f"the browser tests need Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "headless": True,
            "args": ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                     "--disable-background-networking", "--disable-component-update", "--no-first-run"]}
