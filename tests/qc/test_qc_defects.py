"""Regressions of the `segqc qc` commands, with the (fast, deterministic) CAE baseline.

Each test names the wrong result the command once gave. True values are computed here with numpy.
"""

from __future__ import annotations

import json
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
    misaligned, in the multi-class row `all`; later it was dropped from every row but without a
    word (exit 0). It is a failed case: one error line, the footer, exit 1."""
    gts = tmp_path / "gt"
    shutil.copytree(qc_dataset / "labelsTr", gts)
    moved = read_label_map(gts / "case0.nii.gz")
    write_image(gts / "case0.nii.gz", moved.array, Geometry.from_shape(moved.array.shape, (2.0, 2.0, 3.0)))
    out = tmp_path / "bench"
    result = _run("qc", "benchmark", cae, qc_dataset / "imagesTr", qc_dataset / "labelsTr", gts, "-o", out,
                  "--metrics", "dice", "-q")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(gts / "case0.nii.gz") in errors[0] and "spacing" in errors[0]
    assert "3 of 4 case(s) done, 1 failed" in result.output
    assert "--resample" not in result.output  # `qc benchmark` has no such option
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


# ------------------------------------------------------------------------------------------
# Failed cases, rankings over one case set, and maps of this run only (the oracle model: its
# estimates are the true values, so every expected number is a numpy Dice of the files written)
# ------------------------------------------------------------------------------------------


def _multiclass_dice(seg: np.ndarray, gt: np.ndarray) -> float:
    inter = sum(int(((seg == c) & (gt == c)).sum()) for c in (1, 2))
    total = sum(int((seg == c).sum() + (gt == c).sum()) for c in (1, 2))
    return 2.0 * inter / total


@pytest.fixture()
def oracle_cli(qc_dataset, tmp_path, monkeypatch) -> Path:
    """A model folder that every `segqc qc` command loads as the oracle model."""
    import segqc.qc.inference as inference

    model = oracle_model(qc_dataset)
    monkeypatch.setattr(inference, "load_qc_model", lambda *args, **kwargs: model)
    folder = tmp_path / "oracle"
    folder.mkdir()
    return folder


def _segs(qc_dataset: Path, target: Path, change) -> dict[str, np.ndarray]:
    """Copies of the ground truths changed by ``change(case, array)`` (None: no file)."""
    written = {}
    for path in sorted((qc_dataset / "labelsTr").glob("*.nii.gz")):
        label = read_label_map(path)
        case = path.name.removesuffix(".nii.gz")
        array = change(case, label.array.copy())
        if array is not None:
            write_image(target / path.name, array, label.geometry)
            written[case] = array
    return written


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _gt(qc_dataset: Path, case: str) -> np.ndarray:
    return read_label_map(qc_dataset / "labelsTr" / f"{case}.nii.gz").array


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_rank_reports_a_failed_case_and_ranks_every_model_on_the_same_cases(oracle_cli, qc_dataset, tmp_path):
    """Once: a case that failed was dropped silently (exit 0, no error line, no footer), and the
    folder with the broken file ranked first on the mean of its remaining, easier cases."""
    def fine(case, array):  # its hard case0 is empty; the others are perfect
        return np.zeros_like(array) if case == "case0" else array

    def broken(case, array):  # case0's file is cut below; the others a little off
        return np.roll(array, 1, axis=0)

    fine_segs = _segs(qc_dataset, tmp_path / "fine", fine)
    broken_segs = _segs(qc_dataset, tmp_path / "broken", broken)
    _truncate(tmp_path / "broken" / "case0.nii.gz")
    out = tmp_path / "rank"
    result = _run("qc", "rank", oracle_cli, qc_dataset / "imagesTr", tmp_path / "fine", tmp_path / "broken",
                  "--gt", qc_dataset / "labelsTr", "-o", out, "-q")
    assert result.exit_code == 1, result.output
    errors = _error_lines(result.output)
    assert len(errors) == 1 and errors[0].startswith(f"error: {tmp_path / 'broken' / 'case0.nii.gz'}: ")
    assert "7 of 8 case(s) done, 1 failed" in result.output
    assert "case0 (failed in broken)" in result.output  # the note of the case left out

    common = ["case1", "case2", "case3"]
    expected = {name: np.mean([_multiclass_dice(segs[c], _gt(qc_dataset, c)) for c in common])
                for name, segs in (("fine", fine_segs), ("broken", broken_segs))}
    assert expected["fine"] == 1.0 and expected["broken"] < 0.95
    ranking = pd.read_csv(out / "ranking.csv").set_index("model")
    assert list(ranking.index) == ["fine", "broken"]
    for name in ("fine", "broken"):
        assert ranking.loc[name, "n_cases"] == 3
        assert ranking.loc[name, "estimated_dice"] == pytest.approx(expected[name], abs=1e-9)
        assert ranking.loc[name, "true_dice"] == pytest.approx(expected[name], abs=1e-9)
    assert list(ranking.true_rank) == [1, 2]
    report = json.loads((out / "ranking.json").read_text())
    assert report["cases"] == common and list(report["left_out"]) == ["case0"]


def test_rank_with_a_missing_segmentation_estimates_and_measures_the_same_cases(oracle_cli, qc_dataset, tmp_path):
    """Once: the estimate averaged the cases present while the true value counted the missing
    case as an empty segmentation (estimated 1.0, true 0.75), without a word."""
    full = _segs(qc_dataset, tmp_path / "full", lambda case, array: np.roll(array, 2, axis=1))
    _segs(qc_dataset, tmp_path / "partial", lambda case, array: None if case == "case1" else array)
    out = tmp_path / "rank"
    result = _run("qc", "rank", oracle_cli, qc_dataset / "imagesTr", tmp_path / "full", tmp_path / "partial",
                  "--gt", qc_dataset / "labelsTr", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert "case1 (no segmentation in partial)" in result.output and "left out" in result.output
    ranking = pd.read_csv(out / "ranking.csv").set_index("model")
    common = ["case0", "case2", "case3"]
    assert (ranking.n_cases == 3).all()
    assert ranking.loc["partial", "estimated_dice"] == ranking.loc["partial", "true_dice"] == pytest.approx(1.0)
    shifted = np.mean([_multiclass_dice(full[c], _gt(qc_dataset, c)) for c in common])
    assert ranking.loc["full", "estimated_dice"] == pytest.approx(shifted, abs=1e-9)
    assert ranking.loc["full", "true_dice"] == pytest.approx(shifted, abs=1e-9)


def test_benchmark_reports_a_failed_case_with_an_error_line_a_footer_and_exit_1(oracle_cli, qc_dataset, tmp_path):
    """Once: a case that failed was only listed inside benchmark.json; the command exited 0."""
    _segs(qc_dataset, tmp_path / "segs", lambda case, array: array)
    _truncate(tmp_path / "segs" / "case2.nii.gz")
    out = tmp_path / "bench"
    result = _run("qc", "benchmark", oracle_cli, qc_dataset / "imagesTr", tmp_path / "segs", qc_dataset / "labelsTr",
                  "-o", out, "--metrics", "dice", "-q")
    assert result.exit_code == 1, result.output
    errors = _error_lines(result.output)
    assert len(errors) == 1 and errors[0].startswith(f"error: {tmp_path / 'segs' / 'case2.nii.gz'}: ")
    assert "3 of 4 case(s) done, 1 failed" in result.output
    pairs = pd.read_csv(out / "pairs.csv", dtype={"case": str, "label": str})
    assert sorted(set(pairs.case)) == ["case0", "case1", "case3"]
    assert list(json.loads((out / "benchmark.json").read_text())["cases"]["failed"]) == ["case2"]


def _oracle_regressor(dataset: Path):
    """A quality regressor with error maps: the oracle's truth (read off the image) gives its
    error maps (segmentation XOR truth per class) and its Dice."""
    import dataclasses

    from segqc.qc.model_api import Assessment

    oracle = oracle_model(dataset)

    def assess(images, segs, ratios, samples):
        truth = np.clip(np.rint(images[:, 0] * 2.0), 0, 2).astype(np.int64)
        errors = np.stack([(segs == c) ^ (truth == c) for c in (1, 2)]).astype(np.float32)[None]
        dice = np.array([[_multiclass_dice(segs, truth), 1.0, 1.0]])
        return Assessment(dice=dice, nsd=dice.copy(), errors=errors)

    return dataclasses.replace(oracle, method="oracle-regressor", generate=None, assess=assess, metrics=("dice",))


def test_a_rerun_with_another_model_keeps_no_maps_of_the_first(qc_dataset, tmp_path):
    """Once: `qc benchmark` with nnQC into a folder of an earlier QCResUNet benchmark scored the
    QCResUNet error maps left in qc/errors (error_maps.csv, benchmark.json), and `qc predict`
    left the other model's maps beside its own."""
    from segqc.qc.assessment import benchmark_qc

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    settings = QcSettings(metrics=("dice",))
    segs = tmp_path / "segs"
    _segs(qc_dataset, segs, lambda case, array: np.roll(array, 2, axis=0))
    out = tmp_path / "bench"
    regressor, generator = _oracle_regressor(qc_dataset), oracle_model(qc_dataset)
    args = (model_dir, qc_dataset / "imagesTr", segs, qc_dataset / "labelsTr", out)
    benchmark_qc(*args, settings=settings, model=regressor)
    assert len(list((out / "qc" / "errors").iterdir())) == 4 and (out / "error_maps.csv").is_file()
    assert json.loads((out / "benchmark.json").read_text())["error_maps"]

    benchmark_qc(*args, settings=settings, model=generator)  # a pGT model: no error maps
    assert not (out / "qc" / "errors").exists()
    assert not (out / "error_maps.csv").exists()
    assert json.loads((out / "benchmark.json").read_text())["error_maps"] is None
    assert sorted(p.name for p in (out / "qc" / "pgt").iterdir()) == [f"case{i}.nii.gz" for i in range(4)]
    assert json.loads((out / "qc" / "report.json").read_text())["maps"] == ["pgt"]

    _, _, report = qc_folder(model_dir, qc_dataset / "imagesTr", segs, out / "qc", settings=settings, model=regressor)
    assert not (out / "qc" / "pgt").exists() and report["maps"] == ["errors"]

    _truncate(segs / "case1.nii.gz")  # a case that fails now keeps no map of an earlier run
    _, _, report = qc_folder(model_dir, qc_dataset / "imagesTr", segs, out / "qc", settings=settings, model=regressor)
    assert list(report["failed"]) == ["case1"] and sorted(report["reused"]) == ["case0", "case2", "case3"]
    assert sorted(p.name for p in (out / "qc" / "errors").iterdir()) == ["case0.nii.gz", "case2.nii.gz",
                                                                         "case3.nii.gz"]
