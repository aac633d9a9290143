"""Regressions of the `segqc qc` commands, with the (fast, deterministic) CAE baseline.

Each test names the wrong result the command once gave. True values are computed here with numpy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from qc_toy_data import oracle_model
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.io.images import Geometry, read_label_map, write_image
from segqc.qc.inference import QcSettings, qc_folder

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def cae(qc_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("defects") / "cae"
    assert _run("qc", "train", "cae", qc_dataset, "-o", out, "--config", "tiny").exit_code == 0
    return out


def _estimates(out: Path) -> pd.DataFrame:
    table = pd.read_csv(out / "qc.csv", dtype={"case": str, "label": str})
    return table[(table.label == "all") & (table.metric == "dice")].set_index("case")["estimate"]


def _empty_segs(source: Path, target: Path) -> None:
    for path in sorted(source.glob("*.nii.gz")):
        label = read_label_map(path)
        write_image(target / path.name, np.zeros_like(label.array), label.geometry)


def test_another_segmentation_folder_into_the_same_output_is_recomputed(qc_dataset, tmp_path):
    """Once: `qc predict` with another segmentation folder into the same -o reused the old
    estimates. With the oracle model (its pGT is the ground truth) the estimate of the ground
    truth itself is 1 and that of an empty segmentation 0."""
    model = oracle_model(qc_dataset)
    out = tmp_path / "qc"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    settings = QcSettings(metrics=("dice",))
    first, _, _ = qc_folder(model_dir, qc_dataset / "imagesTr", qc_dataset / "labelsTr", out, settings=settings,
                            model=model)
    _empty_segs(qc_dataset / "labelsTr", tmp_path / "empty")
    second, _, report = qc_folder(model_dir, qc_dataset / "imagesTr", tmp_path / "empty", out, settings=settings,
                                  model=model)
    assert not report["reused"]
    assert (_all_dice(first) == 1).all() and (_all_dice(second) == 0).all()
    assert (_estimates(out) == 0).all()


def _all_dice(table: pd.DataFrame) -> pd.Series:
    return table[(table.label == "all") & (table.metric == "dice")]["estimate"]


def test_a_retrained_model_in_the_same_folder_is_not_served_from_the_cache(cae, qc_dataset, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(cae, model)
    out = tmp_path / "qc"
    args = ("qc", "predict", model, qc_dataset / "imagesTr", qc_dataset / "labelsTr", "-o", out, "-q", "--metrics",
            "dice")
    assert _run(*args).exit_code == 0
    from safetensors.torch import load_file, save_file

    weights = load_file(str(model / "autoencoder.safetensors"))
    save_file({k: v * 0 for k, v in weights.items()}, str(model / "autoencoder.safetensors"))  # "retrained"
    result = _run(*args)
    assert "reused" not in result.output
    assert _run(*args).output.count("reused 4 finished case") == 1  # unchanged now: reused


def test_rank_keeps_folders_with_the_same_basename_apart_and_inside_the_output(cae, qc_dataset, tmp_path):
    """Once: runA/preds and runB/preds shared one output folder and one estimate (tau = nan), and
    runB/preds/sub/.. wrote outside -o."""
    good = tmp_path / "runA" / "preds"
    shutil.copytree(qc_dataset / "labelsTr", good, ignore=shutil.ignore_patterns("*.json"))
    _empty_segs(qc_dataset / "labelsTr", tmp_path / "runB" / "preds")
    (tmp_path / "runB" / "preds" / "sub").mkdir()
    out = tmp_path / "rank"
    result = _run("qc", "rank", cae, qc_dataset / "imagesTr", good, tmp_path / "runB" / "preds" / "sub" / "..",
                  "--gt", qc_dataset / "labelsTr", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    ranking = pd.read_csv(out / "ranking.csv")
    assert list(ranking.model) == ["runA__preds", "runB__preds"]
    assert ranking.true_dice.tolist() == [1.0, 0.0]
    written = {p.resolve() for p in tmp_path.rglob("qc.csv")}
    assert written == {(out / "runA__preds" / "qc.csv").resolve(), (out / "runB__preds" / "qc.csv").resolve()}


def test_a_blank_image_gives_a_warning_and_a_nan_image_an_error(cae, qc_dataset, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(qc_dataset / "imagesTr", images)
    first = sorted(images.glob("*_0000.nii.gz"))
    blank, broken = first[0], first[1]
    geometry = read_label_map(qc_dataset / "labelsTr" / "case0.nii.gz").geometry
    write_image(blank, np.zeros(geometry.shape, dtype=np.float32), geometry)
    values = np.full(geometry.shape, 10.0, dtype=np.float32)
    values[3, 3, 1] = np.nan
    write_image(broken, values, geometry)
    result = _run("qc", "predict", cae, images, qc_dataset / "labelsTr", "-o", tmp_path / "qc", "-q")
    assert result.exit_code == 1
    assert "blank" in result.output and "NaN" in result.output and broken.name in result.output


def test_benchmark_drops_a_ground_truth_on_another_grid_from_every_row(cae, qc_dataset, tmp_path):
    """Once: a ground truth of another spacing was dropped from the per-class rows but kept,
    misaligned, in the multi-class row `all`."""
    gts = tmp_path / "gt"
    shutil.copytree(qc_dataset / "labelsTr", gts)
    moved = read_label_map(gts / "case0.nii.gz")
    write_image(gts / "case0.nii.gz", moved.array, Geometry.from_shape(moved.array.shape, (2.0, 2.0, 3.0)))
    out = tmp_path / "bench"
    result = _run("qc", "benchmark", cae, qc_dataset / "imagesTr", qc_dataset / "labelsTr", gts, "-o", out,
                  "--metrics", "dice", "-q")
    assert result.exit_code == 0, result.output
    pairs = pd.read_csv(out / "pairs.csv", dtype={"case": str, "label": str})
    assert "case0" not in set(pairs.case) and len(pairs[pairs.label == "all"]) == 3


def test_cc_metrics_can_be_estimated(cae, qc_dataset, tmp_path):
    """Once: `qc predict --metrics cc_dice` was refused though CC-metrics were said estimable."""
    out = tmp_path / "qc"
    result = _run("qc", "predict", cae, qc_dataset / "imagesTr", qc_dataset / "labelsTr", "-o", out, "-q",
                  "--metrics", "dice,cc_dice")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "qc.csv", dtype={"label": str})
    cc = table[table.metric == "cc_dice"]
    assert set(cc.label) == {"1", "2"} and cc.estimate.between(0, 1).all()
    # one component per class: the CC-Dice is the Dice
    dice = table[table.metric == "dice"].set_index(["case", "label"]).estimate
    assert np.allclose(cc.set_index(["case", "label"]).estimate, dice.loc[cc.set_index(["case", "label"]).index])


def test_cuda_without_cuda_and_missing_torch_are_one_line(cae, qc_dataset, tmp_path, monkeypatch):
    import torch

    if not torch.cuda.is_available():
        result = _run("qc", "predict", cae, qc_dataset / "imagesTr", qc_dataset / "labelsTr", "-o", tmp_path / "o",
                      "--device", "cuda")
        assert result.exit_code == 2 and "CUDA is not available" in result.output
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    result = _run("qc", "predict", cae, qc_dataset / "imagesTr", qc_dataset / "labelsTr", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "needs torch" in result.output and "pip install" in result.output
    assert result.output.count("\n") <= 3


@pytest.mark.parametrize("command", ["predict", "benchmark", "rank", "train"])
def test_every_qc_option_has_help(command):
    from segqc.cli.qc import app as qc_app

    info = next(c for c in qc_app.registered_commands if c.name == command)
    import inspect

    for name, parameter in inspect.signature(info.callback).parameters.items():
        assert getattr(parameter.default, "help", None), f"qc {command}: {name} has no help"


def test_degrade_output_is_benchmarked_through_its_manifest(qc_dataset, tmp_path):
    """Once: `qc benchmark` could not read `segqc degrade` output although its help said so. With
    the oracle model the estimates are the true values of every degraded file."""
    from segqc.qc.assessment import benchmark_qc

    degraded = tmp_path / "degraded"
    assert _run("degrade", qc_dataset / "labelsTr", "-o", degraded, "--per-case", "2", "-q").exit_code == 0
    files = pd.read_csv(degraded / "manifest.csv", dtype=str)["file"]
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    benchmark_qc(model_dir, qc_dataset / "imagesTr", degraded, qc_dataset / "labelsTr", tmp_path / "bench",
                 settings=QcSettings(metrics=("dice",)), model=oracle_model(qc_dataset))
    pairs = pd.read_csv(tmp_path / "bench" / "pairs.csv", dtype={"case": str, "label": str})
    overall = pairs[pairs.label == "all"]
    assert sorted(overall.case) == sorted(Path(f).name.removesuffix(".nii.gz") for f in files)
    np.testing.assert_allclose(overall.estimate, overall.true, atol=1e-12)


def test_numeric_case_ids_keep_their_leading_zeros_in_qc_csv(qc_dataset, tmp_path):
    """Once: the driver read its per-case parts back without types, and "0042" became 42."""
    images, segs = tmp_path / "images", tmp_path / "segs"
    images.mkdir()
    segs.mkdir()
    shutil.copy(qc_dataset / "imagesTr" / "case0_0000.nii.gz", images / "0042_0000.nii.gz")
    shutil.copy(qc_dataset / "labelsTr" / "case0.nii.gz", segs / "0042.nii.gz")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    qc_folder(model_dir, images, segs, tmp_path / "qc", settings=QcSettings(metrics=("dice",)),
              model=oracle_model(qc_dataset))
    for name in ("qc.csv", "worklist.csv", "qc_slices.csv"):
        cases = pd.read_csv(tmp_path / "qc" / name, dtype=str)["case"]
        assert set(cases) == {"0042"}, name


def test_qc_tables_name_the_classes_as_the_training_dataset_did(cae, qc_dataset, tmp_path):
    """The names come from the model's fingerprint of its training dataset.json (outer, inner)."""
    out = tmp_path / "qc"
    assert _run("qc", "predict", cae, qc_dataset / "imagesTr", qc_dataset / "labelsTr", "-o", out, "-q",
                "--metrics", "dice").exit_code == 0
    table = pd.read_csv(out / "qc.csv", dtype={"label": str})
    names = dict(zip(table.label, table.label_name))
    assert names == {"1": "outer", "2": "inner", "all": "all"}
