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
from segqc.errors import InputError
from segqc.io.geometry import Geometry
from segqc.io.images import read_label_map, write_image
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
    from safetensors.torch import load_file

    from segqc.training import save_checkpoint

    weights = load_file(str(model / "autoencoder.safetensors"))
    meta = json.loads((model / "config.json").read_text())
    save_checkpoint(model, method=meta["method"], config=meta["config"],  # "retrained" into the same folder
                    weights={"autoencoder": {k: v * 0 for k, v in weights.items()}})
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


def test_benchmark_and_rank_check_the_ground_truths_before_any_qc(oracle_cli, qc_dataset, tmp_path):
    """Once: an empty ground-truth folder was found out only after every case's QC (exit 2)."""
    empty, others = tmp_path / "gt_empty", tmp_path / "gt_others"
    empty.mkdir()
    others.mkdir()
    shutil.copy(qc_dataset / "labelsTr" / "case0.nii.gz", others / "other0.nii.gz")
    images, segs = qc_dataset / "imagesTr", qc_dataset / "labelsTr"
    result = _run("qc", "benchmark", oracle_cli, images, segs, empty, "-o", tmp_path / "bench", "-q")
    assert result.exit_code == 2, result.output
    assert _error_lines(result.output) == [
        f"error: {empty}: no label files (.nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd, .png, .tif, .tiff) found"]
    assert not (tmp_path / "bench" / "qc").exists()
    result = _run("qc", "rank", oracle_cli, images, segs, segs, "--gt", others, "-o", tmp_path / "rank", "-q")
    assert result.exit_code == 2, result.output
    assert _error_lines(result.output) == [
        f"error: {segs}: no prediction matches a ground-truth case of {others} (4 prediction file(s), e.g. 'case0'; "
        "1 ground truth(s), e.g. 'other0')"]
    assert not any((tmp_path / "rank").glob("*/cases"))


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

    (out / "qc" / "pgt" / "notes.txt").write_text("a file of the user's")  # no map of this run
    _, _, report = qc_folder(model_dir, qc_dataset / "imagesTr", segs, out / "qc", settings=settings, model=regressor)
    assert [p.name for p in (out / "qc" / "pgt").iterdir()] == ["notes.txt"] and report["maps"] == ["errors"]

    _truncate(segs / "case1.nii.gz")  # a case that fails now keeps no map of an earlier run
    _, _, report = qc_folder(model_dir, qc_dataset / "imagesTr", segs, out / "qc", settings=settings, model=regressor)
    assert list(report["failed"]) == ["case1"] and sorted(report["reused"]) == ["case0", "case2", "case3"]
    assert sorted(p.name for p in (out / "qc" / "errors").iterdir()) == ["case0.nii.gz", "case2.nii.gz",
                                                                         "case3.nii.gz"]


def test_benchmark_scores_error_maps_only_of_cases_whose_ground_truth_compares(qc_dataset, tmp_path):
    """A ground truth on another grid fails its case in the benchmark; its error map was still
    scored against it: a numpy broadcast error stopped the whole benchmark (another shape), or a
    DSC_SEM of two grids entered the mean (same shape, another spacing)."""
    from segqc.qc.assessment import benchmark_qc_run

    segs = tmp_path / "segs"
    _segs(qc_dataset, segs, lambda case, array: np.roll(array, 2, axis=0))
    gt = tmp_path / "gt"
    shutil.copytree(qc_dataset / "labelsTr", gt)
    cropped = read_label_map(gt / "case1.nii.gz")
    write_image(gt / "case1.nii.gz", cropped.array[:-2], Geometry.from_shape(cropped.array[:-2].shape,
                                                                             cropped.geometry.spacing))
    stretched = read_label_map(gt / "case2.nii.gz")
    write_image(gt / "case2.nii.gz", stretched.array,
                Geometry.from_shape(stretched.array.shape, tuple(2.0 * v for v in stretched.geometry.spacing)))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    _, details = benchmark_qc_run(model_dir, qc_dataset / "imagesTr", segs, gt, tmp_path / "bench",
                                  settings=QcSettings(metrics=("dice",)), model=_oracle_regressor(qc_dataset))
    assert sorted(details["run"].failed) == ["case1", "case2"]
    sem = pd.read_csv(tmp_path / "bench" / "error_maps.csv", dtype={"case": str, "label": str})
    assert sorted(set(sem["case"])) == ["case0", "case3"]


def test_a_benchmark_rerun_reuses_the_true_metrics_of_unchanged_cases(qc_dataset, tmp_path, monkeypatch):
    """Every `qc benchmark` rerun evaluated every segmentation against its ground truth again
    (minutes for whole-body CT) while its QC cases were reused; the true metrics are now an
    evaluate folder (OUT/truth) that resumes like any other, keyed on the files' contents."""
    import segqc.evaluation.evaluate as evaluate_module
    from segqc.qc.assessment import benchmark_qc

    segs, gt = tmp_path / "segs", tmp_path / "gt"
    _segs(qc_dataset, segs, lambda case, array: np.roll(array, 2, axis=0))
    shutil.copytree(qc_dataset / "labelsTr", gt)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    args = (model_dir, qc_dataset / "imagesTr", segs, gt, tmp_path / "bench")
    settings, regressor = QcSettings(metrics=("dice",)), _oracle_regressor(qc_dataset)
    first = benchmark_qc(*args, settings=settings, model=regressor)
    evaluated: list[str] = []
    original = evaluate_module.evaluate_case
    monkeypatch.setattr(evaluate_module, "evaluate_case",
                        lambda task, **kwargs: evaluated.append(task.case) or original(task, **kwargs))
    again = benchmark_qc(*args, settings=settings, model=regressor)
    assert evaluated == [] and again.equals(first)
    edited = read_label_map(gt / "case2.nii.gz")
    write_image(gt / "case2.nii.gz", np.roll(edited.array, 1, axis=1), edited.geometry)  # a truth edited in place
    benchmark_qc(*args, settings=settings, model=regressor)
    assert evaluated == ["case2"]


def test_a_regressor_warns_of_metrics_it_lacks_only_when_they_were_asked_for(qc_dataset, tmp_path):
    """Every `qc predict` with QCResUNet and the default --metrics warned "not hd95": a warning
    on every run that the user never asked for. An explicit list still gets it."""
    segs = tmp_path / "segs"
    _segs(qc_dataset, segs, lambda case, array: np.roll(array, 2, axis=0))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    regressor = _oracle_regressor(qc_dataset)
    _, _, default = qc_folder(model_dir, qc_dataset / "imagesTr", segs, tmp_path / "a", settings=QcSettings(),
                              model=regressor)
    assert not [w for w in default["warnings"] if "estimates" in w], default["warnings"]
    _, _, asked = qc_folder(model_dir, qc_dataset / "imagesTr", segs, tmp_path / "b",
                            settings=QcSettings(metrics=("dice", "hd95")), model=regressor)
    assert [w for w in asked["warnings"] if w.endswith("estimates dice only; not hd95")], asked["warnings"]


# ------------------------------------------------------------------------------------------
# Inputs a model cannot QC: one line naming the file (the case fails alone) or, where it concerns
# the whole run, one line before any case; never a traceback and never a number
# ------------------------------------------------------------------------------------------

MODELS = Path(__file__).resolve().parents[2] / "models"
SHIPPED = ["acdc-qcresunet-small", "acdc-nnqc-small"]


def _one_case(qc_dataset: Path, root: Path, case: str = "case0") -> tuple[Path, Path]:
    """images/ and segs/ holding one toy case (the ground truth as the segmentation)."""
    images, segs = root / "images", root / "segs"
    images.mkdir(parents=True)
    segs.mkdir(parents=True)
    shutil.copy(qc_dataset / "imagesTr" / f"{case}_0000.nii.gz", images)
    shutil.copy(qc_dataset / "labelsTr" / f"{case}.nii.gz", segs)
    return images, segs


def _cut_rows(path: Path) -> None:
    """The label map without its last 10 rows (spacing, origin and direction unchanged)."""
    label = read_label_map(path)
    cut = label.array[:-10]
    write_image(path, cut, Geometry(shape=cut.shape, spacing=label.geometry.spacing, origin=label.geometry.origin,
                                    direction=label.geometry.direction))


def test_a_segmentation_of_another_shape_fails_alone_naming_it(oracle_cli, qc_dataset, tmp_path):
    """Once: a traceback (IndexError of the intensity check, which ran before the grid check)."""
    segs = tmp_path / "segs"
    _segs(qc_dataset, segs, lambda case, array: array)
    _cut_rows(segs / "case1.nii.gz")
    out = tmp_path / "qc"
    result = _run("qc", "predict", oracle_cli, qc_dataset / "imagesTr", segs, "-o", out, "-q", "--metrics", "dice")
    assert result.exit_code == 1, result.output
    errors = _error_lines(result.output)
    assert len(errors) == 1 and errors[0].startswith(f"error: {segs / 'case1.nii.gz'}: shape (30, 40, 6) differs")
    assert "3 of 4 case(s) done, 1 failed" in result.output and "Traceback" not in result.output
    assert sorted(set(pd.read_csv(out / "qc.csv").case)) == ["case0", "case2", "case3"]


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_models_name_a_segmentation_of_another_shape(name, qc_dataset, tmp_path):
    images, segs = _one_case(qc_dataset, tmp_path)
    _cut_rows(segs / "case0.nii.gz")
    result = _run("qc", "predict", MODELS / name, images, segs, "-o", tmp_path / "qc", "-q")
    assert result.exit_code == 1, result.output
    errors = _error_lines(result.output)
    assert len(errors) == 1 and errors[0].startswith(f"error: {segs / 'case0.nii.gz'}: shape (30, 40, 6) differs")


def test_a_folder_of_another_number_of_channels_is_refused_before_any_case(oracle_cli, qc_dataset, tmp_path):
    """Once: `error: the plan normalises 1 channel(s), got 2`, naming no file or folder."""
    images = tmp_path / "images"
    shutil.copytree(qc_dataset / "imagesTr", images)
    for path in sorted(images.glob("*_0000.nii.gz")):
        shutil.copy(path, str(path).replace("_0000", "_0001"))
    out = tmp_path / "qc"
    result = _run("qc", "predict", oracle_cli, images, qc_dataset / "labelsTr", "-o", out, "-q", "--metrics", "dice")
    assert result.exit_code == 2, result.output
    assert _error_lines(result.output) == [f"error: {images}: cases have [2] channel(s) but the model needs 1"]
    assert not (out / "qc.csv").exists()


def test_a_case_of_another_number_of_channels_is_one_line_naming_its_files(qc_dataset, tmp_path):
    """A folder mixes no channel counts (its reader refuses that, naming the folder); a case given
    to the driver's case function directly is checked too, before its files are read."""
    from segqc.qc.inference import qc_case

    images = tmp_path / "images"
    shutil.copytree(qc_dataset / "imagesTr", images)
    shutil.copy(images / "case2_0000.nii.gz", images / "case2_0001.nii.gz")
    with pytest.raises(InputError) as caught:
        qc_case(oracle_model(qc_dataset), "case2", [images / "case2_0000.nii.gz", images / "case2_0001.nii.gz"],
                qc_dataset / "labelsTr" / "case2.nii.gz", QcSettings(metrics=("dice",)))
    assert str(caught.value) == (f"{images / 'case2_0000.nii.gz'}: the case has 2 image channel(s) "
                                 "(case2_0000.nii.gz, case2_0001.nii.gz) but the model needs 1")


def _slices_as_2d(qc_dataset: Path, root: Path, z: int = 3) -> tuple[Path, Path]:
    """Slice z of every toy case as 2D files (image and segmentation)."""
    images, segs = root / "images2d", root / "segs2d"
    for path in sorted((qc_dataset / "labelsTr").glob("*.nii.gz")):
        case = path.name.removesuffix(".nii.gz")
        image = read_label_map(qc_dataset / "imagesTr" / f"{case}_0000.nii.gz")  # integer-valued toy image
        label = read_label_map(path)
        geometry = Geometry.from_shape(label.array.shape[:2], (1.0, 1.0))
        write_image(images / f"{case}_0000.nii.gz", image.array[:, :, z].astype(np.float32), geometry)
        write_image(segs / path.name, label.array[:, :, z], geometry)
    return images, segs


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_volume_models_refuse_2d_images_and_single_slices(name, qc_dataset, tmp_path):
    """Once: a 2D slice gave numbers (QCResUNet: Dice 0.77 for the ground truth itself). Both
    models were trained on ACDC volumes (nnQC slice by slice, with each slice's place in its volume)."""
    from segqc.qc.model_api import load_qc_model

    assert load_qc_model(MODELS / name).spatial_dims == 3
    images, segs = _slices_as_2d(qc_dataset, tmp_path)
    for path in sorted(images.glob("*"))[1:]:
        path.unlink()
    for path in sorted(segs.glob("*"))[1:]:
        path.unlink()
    result = _run("qc", "predict", MODELS / name, images, segs, "-o", tmp_path / "qc", "-q")
    assert result.exit_code == 1, result.output
    assert _error_lines(result.output) == [
        f"error: {images / 'case0_0000.nii.gz'}: is 2D but the model was trained on 3D volumes"]
    flat_images, flat_segs = tmp_path / "flat" / "images", tmp_path / "flat" / "segs"
    for source, target in ((qc_dataset / "imagesTr" / "case0_0000.nii.gz", flat_images / "case0_0000.nii.gz"),
                           (qc_dataset / "labelsTr" / "case0.nii.gz", flat_segs / "case0.nii.gz")):
        volume = read_label_map(source)
        write_image(target, volume.array[:, :, 3:4], Geometry.from_shape((40, 40, 1), (1.0, 1.0, 3.0)))
    result = _run("qc", "predict", MODELS / name, flat_images, flat_segs, "-o", tmp_path / "qc1", "-q")
    assert result.exit_code == 1, result.output
    assert _error_lines(result.output) == [f"error: {flat_images / 'case0_0000.nii.gz'}: has a single slice "
                                           "(shape (40, 40, 1)) but the model was trained on 3D volumes"]


def test_a_model_trained_on_2d_images_takes_2d_images_and_refuses_volumes(qc_dataset, tmp_path):
    """The rule follows the training data's fingerprint: 2D images in, 2D images only."""
    images, segs = _slices_as_2d(qc_dataset, tmp_path)
    dataset2d = tmp_path / "dataset2d"
    shutil.copytree(images, dataset2d / "imagesTr")
    shutil.copytree(segs, dataset2d / "labelsTr")
    shutil.copy(qc_dataset / "dataset.json", dataset2d)
    model = oracle_model(dataset2d)
    assert model.spatial_dims == 2
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    settings = QcSettings(metrics=("dice",))
    table, _, report = qc_folder(model_dir, images, segs, tmp_path / "qc2d", settings=settings, model=model)
    assert not report["failed"] and (_all_dice(table) == 1).all()
    table, _, report = qc_folder(model_dir, qc_dataset / "imagesTr", qc_dataset / "labelsTr", tmp_path / "qc3d",
                                 settings=settings, model=model)
    assert table.empty and sorted(report["failed"]) == [f"case{i}" for i in range(4)]
    assert report["failed"]["case0"] == (f"{qc_dataset / 'imagesTr' / 'case0_0000.nii.gz'}: is 3D (6 slices, shape "
                                         "(40, 40, 6)) but the model was trained on 2D images")


def _nsd_regressor(dataset: Path, tolerance_mm: float):
    """The oracle regressor of both Dice and NSD, trained (so it says) at ``tolerance_mm``."""
    import dataclasses

    return dataclasses.replace(_oracle_regressor(dataset), metrics=("dice", "nsd"), tolerance_mm=tolerance_mm)


def test_a_tolerance_the_shipped_qcresunet_cannot_estimate_nsd_at_is_refused(qc_dataset, tmp_path):
    """Once: `--metrics nsd --tolerance 5` gave the estimate at the model's 1 mm, labelled 5 mm."""
    images, segs = _one_case(qc_dataset, tmp_path)
    model = MODELS / "acdc-qcresunet-small"
    result = _run("qc", "predict", model, images, segs, "-o", tmp_path / "qc", "-q", "--metrics", "nsd",
                  "--tolerance", "5")
    assert result.exit_code == 2, result.output
    assert _error_lines(result.output) == [
        f"error: {model}: the qcresunet model estimates NSD at its training tolerance of 1 mm only, not --tolerance 5 "
        "(leave --tolerance out, or nsd out of --metrics)"]


def test_metrics_the_shipped_qcresunet_estimates_none_of_are_refused_before_any_case(qc_dataset, tmp_path):
    """Once: `--metrics hd95` ran every case, warned, printed "done" and exited 0 with an empty qc.csv."""
    images, segs = _one_case(qc_dataset, tmp_path)
    model, out = MODELS / "acdc-qcresunet-small", tmp_path / "qc"
    result = _run("qc", "predict", model, images, segs, "-o", out, "-q", "--metrics", "hd95,cc_dice")
    assert result.exit_code == 2, result.output
    assert _error_lines(result.output) == [
        f"error: {model}: the qcresunet model estimates dice, nsd only, not hd95, cc_dice; choose --metrics among "
        "dice, nsd"]
    assert not (out / "cases").exists() and not (out / "qc.csv").exists()


def test_an_open_tolerance_follows_a_regressors_training_tolerance(qc_dataset, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    regressor = _nsd_regressor(qc_dataset, 2.0)
    args = (model_dir, qc_dataset / "imagesTr", qc_dataset / "labelsTr")
    _, _, report = qc_folder(*args, tmp_path / "open", settings=QcSettings(metrics=("nsd",)), model=regressor)
    assert report["settings"]["tolerance_mm"] == 2.0 and not report["failed"]
    with pytest.raises(InputError, match="training tolerance of 2 mm only, not --tolerance 1 "):
        qc_folder(*args, tmp_path / "one", settings=QcSettings(metrics=("dice", "nsd"), tolerance_mm=1.0),
                  model=regressor)
    # without nsd the tolerance changes nothing the model says: no reason to refuse
    _, _, report = qc_folder(*args, tmp_path / "dice", settings=QcSettings(metrics=("dice",), tolerance_mm=1.0),
                             model=regressor)
    assert not report["failed"]
    # a pGT generator evaluates its pGT at any tolerance; left open, 1 mm
    _, _, report = qc_folder(*args, tmp_path / "pgt", settings=QcSettings(metrics=("nsd",)),
                             model=oracle_model(qc_dataset))
    assert report["settings"]["tolerance_mm"] == 1.0


def test_benchmark_measures_the_true_nsd_at_the_tolerance_the_estimate_is_for(qc_dataset, tmp_path):
    from segqc.evaluation.evaluate import evaluate_folder
    from segqc.qc.assessment import benchmark_qc

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    segs = tmp_path / "segs"
    _segs(qc_dataset, segs, lambda case, array: np.roll(array, 3, axis=0))
    benchmark_qc(model_dir, qc_dataset / "imagesTr", segs, qc_dataset / "labelsTr", tmp_path / "bench",
                 settings=QcSettings(metrics=("nsd",)), model=_nsd_regressor(qc_dataset, 3.0))
    pairs = pd.read_csv(tmp_path / "bench" / "pairs.csv", dtype={"case": str, "label": str})
    def true_nsd(tolerance_mm):
        table = evaluate_folder(segs, qc_dataset / "labelsTr", metrics=("nsd",), tolerance_mm=tolerance_mm)
        table = table[(table.label.astype(str) == "1") & table.component.isna()]
        return table.set_index(table.case.astype(str))["value"]

    got = pairs[pairs.label == "1"].set_index("case")["true"]
    at_3mm, at_1mm = true_nsd(3.0).loc[got.index], true_nsd(1.0).loc[got.index]
    assert np.allclose(got, at_3mm) and not np.allclose(got, at_1mm)
    assert json.loads((tmp_path / "bench" / "benchmark.json").read_text())["settings"]["tolerance_mm"] == 3.0


@pytest.mark.parametrize("samples", [None, 1])
def test_qc_csv_always_has_the_spread_column(oracle_cli, qc_dataset, tmp_path, samples):
    """Once: `--samples 1` dropped the spread column the same single pass kept without it."""
    out = tmp_path / "qc"
    extra = ["--samples", samples] if samples else []
    result = _run("qc", "predict", oracle_cli, qc_dataset / "imagesTr", qc_dataset / "labelsTr", "-o", out, "-q",
                  "--metrics", "dice", *extra)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "qc.csv")
    assert list(table.columns) == ["case", "label", "label_name", "metric", "estimate", "spread", "empty"]
    assert table.spread.isna().all()


@pytest.mark.parametrize("command", ["predict", "benchmark"])
def test_the_cli_leaves_the_tolerance_open_unless_given(command):
    """With a fixed default of 1 mm, a QCResUNet trained at another tolerance was refused on every
    run that did not name its tolerance; left open, the tolerance follows the model."""
    import inspect

    from segqc.cli.qc import app as qc_app

    info = next(c for c in qc_app.registered_commands if c.name == command)
    assert inspect.signature(info.callback).parameters["tolerance"].default.default is None


def test_a_worker_loads_the_model_again_when_the_folders_weights_changed(monkeypatch, tmp_path):
    """The per-process model cache was keyed on the folder's path only: a Dask worker, which
    outlives a run, kept estimating with the old weights after they were replaced (the run's
    case keys changed, so every case was recomputed — with the stale model)."""
    from segqc.qc import inference

    loads = []
    monkeypatch.setattr(inference, "load_qc_model", lambda path: loads.append(path) or object())
    monkeypatch.setattr(inference, "_MODEL_CACHE", {})
    first = inference._cached_model(tmp_path, "digest-1")
    assert inference._cached_model(tmp_path, "digest-1") is first and len(loads) == 1
    assert inference._cached_model(tmp_path, "digest-2") is not first and len(loads) == 2


def test_benchmark_fails_a_case_whose_ground_truth_has_a_label_the_model_does_not_know(oracle_cli, qc_dataset,
                                                                                        tmp_path):
    """A truth labelling class 2 as 9 was evaluated as it was: the model's class 2 scored as
    missed (true Dice 0) and compared with the estimate, exit 0. A segmentation with an unknown
    label was refused; its truth was not."""
    _segs(qc_dataset, tmp_path / "segs", lambda case, array: array)
    _segs(qc_dataset, tmp_path / "gt", lambda case, array: np.where(array == 2, 9, array) if case == "case1" else array)
    out = tmp_path / "bench"
    result = _run("qc", "benchmark", oracle_cli, qc_dataset / "imagesTr", tmp_path / "segs", tmp_path / "gt",
                  "-o", out, "--metrics", "dice", "-q")
    assert result.exit_code == 1, result.output
    assert _error_lines(result.output) == [f"error: {tmp_path / 'gt' / 'case1.nii.gz'}: label value(s) [9] were not "
                                           "in the QC model's training labels [0, 1, 2]"]
    pairs = pd.read_csv(out / "pairs.csv", dtype={"case": str, "label": str})
    assert "case1" not in set(pairs.case) and set(pairs.case) == {"case0", "case2", "case3"}
    assert (pairs["true"] == 1.0).all()  # the others are perfect


def _respaced(qc_dataset: Path, root: Path, spacings: dict[str, tuple[float, ...]]) -> tuple[Path, Path]:
    """images/ and segs/ with the toy cases of ``spacings`` (same voxels) written at that spacing."""
    from segqc.io.images import read_image

    images, segs = root / "images", root / "segs"
    images.mkdir(parents=True)
    segs.mkdir(parents=True)
    for case, spacing in spacings.items():
        image = read_image(qc_dataset / "imagesTr" / f"{case}_0000.nii.gz").array
        label = read_label_map(qc_dataset / "labelsTr" / f"{case}.nii.gz").array
        write_image(images / f"{case}_0000.nii.gz", image, Geometry.from_shape(image.shape, spacing))
        write_image(segs / f"{case}.nii.gz", label, Geometry.from_shape(label.shape, spacing))
    return images, segs


def test_a_spacing_far_from_the_training_data_gets_a_warning_naming_the_image(qc_dataset, tmp_path):
    """Once: an image written with 0.01 mm pixels (a header in the wrong unit) was QC'd without a
    word, and the estimates of its own ground truth came out wrong. Training spacing: (1, 1, 3)
    mm; more than 10 times finer or coarser along any axis warns, twice as coarse does not."""
    spacings = {"case0": (0.01, 0.01, 3.0), "case1": (1.0, 1.0, 300.0), "case2": (2.0, 2.0, 6.0)}
    images, segs = _respaced(qc_dataset, tmp_path, spacings)
    _, _, report = qc_folder(tmp_path, images, segs, tmp_path / "qc", settings=QcSettings(metrics=("dice",)),
                             model=oracle_model(qc_dataset))
    spacing_lines = [w for w in report["warnings"] if "voxel spacing" in w]
    assert spacing_lines == [
        f"{images / 'case0_0000.nii.gz'}: voxel spacing (0.01, 0.01, 3) mm is more than 10 times off the training "
        "data's (1, 1, 3) mm (RAS axis order): is the header's spacing right?",
        f"{images / 'case1_0000.nii.gz'}: voxel spacing (1, 1, 300) mm is more than 10 times off the training "
        "data's (1, 1, 3) mm (RAS axis order): is the header's spacing right?"]
    assert sorted(report["cases"]) == ["case0", "case1", "case2"]


def test_a_garbage_fingerprint_is_refused_and_a_missing_one_is_named_in_a_warning(qc_dataset, tmp_path):
    """Once: a model folder whose fingerprint.json was another JSON object, or missing, ran without a
    word, its classes unnamed and its intensity check off."""
    model = tmp_path / "model"
    shutil.copytree(MODELS / "acdc-nnqc-small", model)
    (model / "fingerprint.json").write_text('{"x": 1}')
    images, segs = _one_case(qc_dataset, tmp_path)
    options = ("-q", "--metrics", "dice", "--samples", "1", "--steps", "1")
    result = _run("qc", "predict", model, images, segs, "-o", tmp_path / "garbage", *options)
    assert result.exit_code == 2, result.output
    assert _error_lines(result.output) == [
        f"error: {model / 'fingerprint.json'}: not a segqc fingerprint (missing \"format\": \"segqc-fingerprint\")"]
    (model / "fingerprint.json").unlink()
    result = _run("qc", "predict", model, images, segs, "-o", tmp_path / "missing", *options)
    assert result.exit_code == 0, result.output
    assert (f"warning: {model}: no fingerprint.json; without it the images' intensities and voxel spacings are not "
            "compared with the training data's, nor is it checked that they are 2D or 3D as in training, and classes "
            "are named by their label values") in result.output.splitlines()


def test_running_out_of_memory_in_the_model_fails_the_case_with_one_line_naming_the_option(qc_dataset, tmp_path):
    """Once: `--samples 100000` ended in a traceback of PyTorch's allocator (exit 1)."""
    import dataclasses

    def allocate(*args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 46080000000 bytes. Error code 12 (Cannot allocate memory)")

    model = dataclasses.replace(oracle_model(qc_dataset), generate=allocate)
    images, segs = _one_case(qc_dataset, tmp_path)
    _, _, report = qc_folder(tmp_path, images, segs, tmp_path / "qc", model=model,
                             settings=QcSettings(metrics=("dice",), samples=100000))
    assert report["failed"] == {"case0": f"{images / 'case0_0000.nii.gz'}: ran out of memory with 100000 pGT "
                                         "sample(s) per slice; lower --samples"}


def test_a_model_path_that_is_a_file_or_names_no_method_is_named_in_plain_words(qc_dataset, tmp_path):
    """Once: a file given as the model was "model directory not found", and a config.json without
    a method "model of method 'None'"."""
    images, segs = _one_case(qc_dataset, tmp_path)
    config = MODELS / "acdc-qcresunet-small" / "config.json"
    result = _run("qc", "predict", config, images, segs, "-o", tmp_path / "file", "-q")
    assert _error_lines(result.output) == [
        f"error: {config}: is a file; give the model's folder (the one holding config.json)"]
    assert result.exit_code == 2, result.output
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    result = _run("qc", "predict", model, images, segs, "-o", tmp_path / "nomethod", "-q")
    assert _error_lines(result.output) == [
        f"error: {model / 'config.json'}: names no method; expected a QC model (nnqc, cae, qcresunet)"]
    assert result.exit_code == 2, result.output


def test_images_without_a_segmentation_and_steps_a_regressor_ignores_are_named(qc_dataset, tmp_path):
    """Images that no segmentation came with were listed only in report.json, and `--steps` given
    to a one-pass regressor was dropped without a word."""
    import shutil

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    segs = tmp_path / "segs"
    segs.mkdir()
    labels = sorted((qc_dataset / "labelsTr").glob("*.nii.gz"))
    shutil.copy(labels[0], segs)
    _, _, report = qc_folder(model_dir, qc_dataset / "imagesTr", segs, tmp_path / "qc",
                             settings=QcSettings(metrics=("nsd",), steps=3), model=_nsd_regressor(qc_dataset, 2.0))
    missing = len(labels) - 1
    assert report["notes"] == [
        f"{missing} image(s) of {qc_dataset / 'imagesTr'} have no segmentation in {segs} and were not checked "
        f"({', '.join(p.name[:-len('.nii.gz')] for p in labels[1:4])}{', ...' if missing > 3 else ''})",
        f"the {report['method']} model estimates in one pass and takes no sampler steps; --steps 3 was ignored"]
    _, _, report = qc_folder(model_dir, qc_dataset / "imagesTr", qc_dataset / "labelsTr", tmp_path / "all",
                             settings=QcSettings(metrics=("nsd",)), model=_nsd_regressor(qc_dataset, 2.0))
    assert report["notes"] == []
