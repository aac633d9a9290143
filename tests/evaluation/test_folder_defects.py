"""Regressions of `segqc evaluate` on folders: each test names the wrong result it once gave.

Every expected value is computed here with numpy from the arrays written, never by segqc.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.errors import InputError
from segqc.evaluation.evaluate import FolderEvaluation, evaluate_folder
from segqc.io.geometry import Geometry
from segqc.io.images import write_image
from segqc.synthetic import multiclass_phantom

runner = CliRunner()
SPACING = (1.0, 1.0, 2.5)


def _dice(pred: np.ndarray, gt: np.ndarray, label: int) -> float:
    p, g = pred == label, gt == label
    return 2.0 * np.logical_and(p, g).sum() / (p.sum() + g.sum())


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "metrics.csv", dtype={"case": str, "label": str})


def _value(table: pd.DataFrame, case: str, label: str, metric: str) -> float:
    rows = table[(table.case == case) & (table.label == label) & (table.metric == metric) & table.component.isna()]
    assert len(rows) == 1, (case, label, metric)
    return float(rows.value.iloc[0])


def _write_case(folder: Path, case: str, array: np.ndarray, *, ending: str = ".nii.gz",
                geometry: Geometry | None = None) -> Path:
    path = folder / f"{case}{ending}"
    write_image(path, array, geometry or Geometry.from_shape(array.shape, SPACING))
    return path


@pytest.fixture()
def gt_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    gt_dir = tmp_path / "gt"
    arrays = {}
    for i in range(2):
        gt = multiclass_phantom((40, 40, 12), SPACING, seed=i)
        _write_case(gt_dir, f"case{i}", gt)
        arrays[f"case{i}"] = gt
    (gt_dir / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1, "b": 2, "c": 3},
                                                     "file_ending": ".nii.gz"}))
    return gt_dir, arrays


def _predictions(folder: Path, arrays: dict[str, np.ndarray], shift: int) -> dict[str, np.ndarray]:
    preds = {}
    for case, gt in arrays.items():
        preds[case] = np.roll(gt, shift, axis=0)
        _write_case(folder, case, preds[case])
    return preds


def test_another_prediction_folder_into_the_same_output_is_recomputed(gt_folder, tmp_path):
    """Once: `evaluate predB gt -o out` after `evaluate predA gt -o out` reported predA's numbers."""
    gt_dir, arrays = gt_folder
    out = tmp_path / "out"
    _predictions(tmp_path / "predA", arrays, 1)
    preds_b = _predictions(tmp_path / "predB", arrays, 4)
    assert _run("evaluate", tmp_path / "predA", gt_dir, "-o", out, "--metrics", "dice", "-q").exit_code == 0
    result = _run("evaluate", tmp_path / "predB", gt_dir, "-o", out, "--metrics", "dice", "-q")
    assert result.exit_code == 0 and "reused" not in result.output
    table = _table(out)
    for case, pred in preds_b.items():
        assert _value(table, case, "1", "dice") == pytest.approx(_dice(pred, arrays[case], 1), abs=1e-12)


def test_a_prediction_regenerated_in_place_is_recomputed_and_an_unchanged_one_reused(gt_folder, tmp_path):
    gt_dir, arrays = gt_folder
    out = tmp_path / "out"
    _predictions(tmp_path / "pred", arrays, 1)
    assert _run("evaluate", tmp_path / "pred", gt_dir, "-o", out, "--metrics", "dice", "-q").exit_code == 0
    regenerated = np.roll(arrays["case0"], 6, axis=1)
    _write_case(tmp_path / "pred", "case0", regenerated)
    result = _run("evaluate", tmp_path / "pred", gt_dir, "-o", out, "--metrics", "dice", "-q")
    assert "reused 1 finished case" in result.output  # case1 unchanged
    assert _value(_table(out), "case0", "1", "dice") == pytest.approx(_dice(regenerated, arrays["case0"], 1))


def test_rows_of_an_interrupted_run_with_other_settings_never_enter_the_table(gt_folder, tmp_path):
    """Once: a run with --metrics dice killed, then runs with --metrics hd95 mixed dice-only rows
    of the old run into metrics.csv."""
    gt_dir, arrays = gt_folder
    out = tmp_path / "out"
    _predictions(tmp_path / "pred", arrays, 1)
    assert _run("evaluate", tmp_path / "pred", gt_dir, "-o", out, "--metrics", "dice", "-q").exit_code == 0
    (out / "cases" / "case1.parquet").unlink()  # as if killed after case0 of a second (hd95) run
    assert _run("evaluate", tmp_path / "pred", gt_dir, "-o", out, "--metrics", "hd95", "-q").exit_code == 0
    assert _run("evaluate", tmp_path / "pred", gt_dir, "-o", out, "--metrics", "hd95", "-q").exit_code == 0
    assert set(_table(out)["metric"]) == {"hd95"}


def test_nii_predictions_pair_with_nii_gz_ground_truths_of_a_dataset_json(gt_folder, tmp_path):
    """Once: `.nii` predictions beside a dataset.json saying `.nii.gz` were ignored silently and
    every Dice was 0."""
    gt_dir, arrays = gt_folder
    preds = {}
    for case, gt in arrays.items():
        preds[case] = np.roll(gt, 2, axis=1)
        _write_case(tmp_path / "pred", case, preds[case], ending=".nii")
    out = tmp_path / "out"
    assert _run("evaluate", tmp_path / "pred", gt_dir, "-o", out, "--metrics", "dice", "-q").exit_code == 0
    table = _table(out)
    for case, pred in preds.items():
        assert _value(table, case, "2", "dice") == pytest.approx(_dice(pred, arrays[case], 2))


def test_with_nii_and_nii_gz_of_one_case_the_dataset_ending_is_read_and_the_other_reported(gt_folder, tmp_path):
    """Once: with CASE.nii and CASE.nii.gz both present, the .nii.gz case was read from the .nii
    file (ITK's behaviour), silently."""
    gt_dir, arrays = gt_folder
    good = arrays["case0"]
    wrong = np.zeros_like(good)
    _write_case(tmp_path / "pred", "case0", good)  # the file the dataset.json ending names
    _write_case(tmp_path / "pred", "case0", wrong, ending=".nii")
    out = tmp_path / "out"
    result = _run("evaluate", tmp_path / "pred", gt_dir, "-o", out, "--metrics", "dice", "-q")
    assert "case0.nii: ignored" in result.output
    assert _value(_table(out), "case0", "1", "dice") == 1.0


def test_no_matching_prediction_is_an_error_not_a_table_of_zeros(gt_folder, tmp_path):
    gt_dir, arrays = gt_folder
    (tmp_path / "empty").mkdir()
    result = _run("evaluate", tmp_path / "empty", gt_dir, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "no prediction matches" in result.output
    _write_case(tmp_path / "misnamed", "other_case", arrays["case0"])
    result = _run("evaluate", tmp_path / "misnamed", gt_dir, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "other_case" in result.output
    assert not (tmp_path / "out" / "metrics.csv").exists()


def test_the_same_folder_as_prediction_and_ground_truth_is_refused(gt_folder, tmp_path):
    gt_dir, _ = gt_folder
    result = _run("evaluate", gt_dir, gt_dir / ".." / "gt", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "both the prediction and the ground-truth folder" in result.output


def test_an_intensity_image_given_as_label_maps_is_warned_about(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(30, 30, 6)).astype(np.uint8)  # 255 values, no dataset.json
    _write_case(tmp_path / "gt", "case0", image)
    _write_case(tmp_path / "pred", "case0", image)
    result = _run("evaluate", tmp_path / "pred", tmp_path / "gt", "-o", tmp_path / "out", "--metrics", "dice", "-q")
    assert "distinct label values" in result.output and "intensity image" in result.output


def test_numeric_case_ids_keep_their_leading_zeros(tmp_path):
    gt = multiclass_phantom((30, 30, 8), SPACING, seed=3)
    for folder in ("gt", "pred"):
        _write_case(tmp_path / folder, "0042", gt)
    assert _run("evaluate", tmp_path / "pred", tmp_path / "gt", "-o", tmp_path / "out", "--metrics", "dice",
                "-q").exit_code == 0
    assert set(pd.read_csv(tmp_path / "out" / "metrics.csv", dtype=str)["case"]) == {"0042"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cases"]["evaluated"] == ["0042"]


def test_the_nnunet_ignore_label_is_excluded_from_every_class(tmp_path):
    """Once: the `ignore` label of dataset.json was scored as a class."""
    gt = np.zeros((20, 20, 4), dtype=np.uint8)
    gt[2:10, 2:10] = 1
    gt[10:18, 2:10] = 3  # ignore region, partly predicted as class 1
    pred = np.zeros_like(gt)
    pred[2:10, 2:10] = 1
    pred[10:14, 2:10] = 1  # false positives inside the ignored region: not counted
    _write_case(tmp_path / "gt", "c", gt)
    _write_case(tmp_path / "pred", "c", pred)
    (tmp_path / "gt" / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1, "ignore": 3}}))
    assert _run("evaluate", tmp_path / "pred", tmp_path / "gt", "-o", tmp_path / "out", "--metrics", "dice,fp",
                "-q").exit_code == 0
    table = _table(tmp_path / "out")
    assert set(table["label"]) == {"1"}
    assert _value(table, "c", "1", "dice") == 1.0 and _value(table, "c", "1", "fp") == 0


def test_labels_option_restricts_the_classes_instead_of_failing_every_case(gt_folder, tmp_path):
    """Once: `--labels 1` failed every case whose maps held other labels."""
    gt_dir, arrays = gt_folder
    preds = _predictions(tmp_path / "pred", arrays, 2)
    out = tmp_path / "out"
    result = _run("evaluate", tmp_path / "pred", gt_dir, "-o", out, "--metrics", "dice", "--labels", "1", "-q")
    assert result.exit_code == 0, result.output
    table = _table(out)
    assert set(table["label"]) == {"1"}
    for case, pred in preds.items():
        assert _value(table, case, "1", "dice") == pytest.approx(_dice(pred, arrays[case], 1))


def test_soft_dice_of_label_maps_is_the_mean_dice_over_thresholds(gt_folder, tmp_path):
    """Once: soft_dice was listed as a metric and failed every case. On binary masks every
    threshold in (0, 1) gives the same mask, so the soft Dice equals the Dice."""
    gt_dir, arrays = gt_folder
    preds = _predictions(tmp_path / "pred", arrays, 3)
    out = tmp_path / "out"
    assert _run("evaluate", tmp_path / "pred", gt_dir, "-o", out, "--metrics", "soft_dice", "-q").exit_code == 0
    assert _value(_table(out), "case1", "3", "soft_dice") == pytest.approx(_dice(preds["case1"], arrays["case1"], 3))


def test_degrade_output_is_evaluated_through_its_manifest(gt_folder, tmp_path):
    """Once: `CASE__b0_k0.nii.gz` files of `segqc degrade` could not be fed to evaluate."""
    gt_dir, arrays = gt_folder
    degraded = tmp_path / "degraded"
    assert _run("degrade", gt_dir, "-o", degraded, "--per-case", "2", "--seed", "0", "-q").exit_code == 0
    manifest = pd.read_csv(degraded / "manifest.csv", dtype=str)
    out = tmp_path / "out"
    assert _run("evaluate", degraded, gt_dir, "-o", out, "--metrics", "dice", "-q").exit_code == 0
    table = _table(out)
    from segqc.io.images import read_label_map

    for case, file in zip(manifest["case"], manifest["file"]):
        pred = read_label_map(degraded / file).array
        sid = Path(file).name.removesuffix(".nii.gz")
        for label in (1, 2, 3):
            if (pred == label).any() or (arrays[case] == label).any():
                assert _value(table, sid, str(label), "dice") == pytest.approx(_dice(pred, arrays[case], label))


def test_swapped_folders_are_warned_about_and_named_options_work(gt_folder, tmp_path):
    """nnU-Net's order is GT PRED; segqc's is PRED GT. A dataset.json beside the "prediction"
    folder only means the folders are probably swapped (precision and recall exchanged)."""
    gt_dir, arrays = gt_folder
    preds = _predictions(tmp_path / "pred", arrays, 2)
    swapped = _run("evaluate", gt_dir, tmp_path / "pred", "-o", tmp_path / "o1", "--metrics", "dice", "-q")
    assert "are the folders swapped" in swapped.output
    named = _run("evaluate", "--gt", gt_dir, "--pred", tmp_path / "pred", "-o", tmp_path / "o2", "--metrics",
                 "precision", "-q")
    assert named.exit_code == 0 and "are the folders swapped" not in named.output
    p, g = preds["case0"] == 1, arrays["case0"] == 1
    assert _value(_table(tmp_path / "o2"), "case0", "1", "precision") == pytest.approx((p & g).sum() / p.sum())


def test_a_prediction_50_mm_off_the_ground_truth_grid_fails_and_resample_honours_the_origin(gt_folder, tmp_path):
    """Once: an origin 50 mm off was evaluated voxel by voxel as if aligned (Dice 1.0)."""
    gt_dir, arrays = gt_folder
    gt = arrays["case0"]
    moved = Geometry.from_shape(gt.shape, SPACING, origin=(20.0, 0.0, 0.0))  # 20 voxels along x
    _write_case(tmp_path / "pred", "case0", gt, geometry=moved)
    result = _run("evaluate", tmp_path / "pred", gt_dir, "-o", tmp_path / "o1", "--metrics", "dice", "-q")
    assert result.exit_code == 1 and "origin" in result.output and "--resample" in result.output
    assert _run("evaluate", tmp_path / "pred", gt_dir, "-o", tmp_path / "o2", "--metrics", "dice", "-q",
                "--resample").exit_code == 0
    shifted = np.zeros_like(gt)
    shifted[20:] = gt[:-20]  # the same labels in the ground truth's grid
    assert _value(_table(tmp_path / "o2"), "case0", "1", "dice") == pytest.approx(_dice(shifted, gt, 1))


@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_a_bad_output_path_is_one_line(gt_folder, tmp_path, kind):
    gt_dir, arrays = gt_folder
    _predictions(tmp_path / "pred", arrays, 1)
    if kind == "file":
        out = tmp_path / "out.txt"
        out.write_text("x")
    else:
        import os

        if os.geteuid() == 0:  # root writes anywhere: use a path below a file instead
            (tmp_path / "blocker").write_text("x")
            out = tmp_path / "blocker" / "out"
        else:
            (tmp_path / "ro").mkdir(mode=0o500)
            out = tmp_path / "ro" / "out"
    result = _run("evaluate", tmp_path / "pred", gt_dir, "-o", out)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.count("error:") == 1 and str(out).split("/")[-1] in result.output


def test_an_unreachable_scheduler_is_one_line(gt_folder, tmp_path):
    gt_dir, arrays = gt_folder
    _predictions(tmp_path / "pred", arrays, 1)
    result = _run("evaluate", tmp_path / "pred", gt_dir, "-o", tmp_path / "out", "--scheduler", "tcp://127.0.0.1:9",
                  "-q")
    assert result.exit_code == 2 and "cannot reach the Dask scheduler" in result.output


def test_fingerprint_output_an_existing_folder_and_degrade_output_an_existing_file(gt_folder, tmp_path):
    gt_dir, _ = gt_folder
    folder = tmp_path / "a_folder"
    folder.mkdir()
    result = _run("fingerprint", tmp_path, "-o", folder)
    assert result.exit_code == 2 and "is a folder" in result.output
    existing = tmp_path / "file.txt"
    existing.write_text("x")
    result = _run("degrade", gt_dir, "-o", existing)
    assert result.exit_code == 2 and "is a file" in result.output


def test_png_pairs_without_spacing_report_pixels_and_spacing_gives_millimetres(tmp_path):
    """Once: PNG/TIFF files silently got 1 mm spacing and "mm" metrics."""
    gt = np.zeros((40, 30), dtype=np.uint8)
    gt[5:25, 5:20] = 1
    pred = np.zeros_like(gt)
    pred[8:25, 5:20] = 1  # the top edge 3 rows lower: HD = 3 pixels
    for folder, array in (("gt", gt), ("pred", pred)):
        _write_case(tmp_path / folder, "cell", array, ending=".png", geometry=Geometry.from_shape(array.shape))
    assert _run("evaluate", tmp_path / "pred", tmp_path / "gt", "-o", tmp_path / "px", "--metrics", "hd",
                "-q").exit_code == 0
    table = _table(tmp_path / "px")
    assert _value(table, "cell", "1", "hd") == pytest.approx(3.0) and set(table["unit"]) == {"pixel"}
    assert _run("evaluate", tmp_path / "pred", tmp_path / "gt", "-o", tmp_path / "mm", "--metrics", "hd",
                "--spacing", "0.5,0.25", "-q").exit_code == 0
    table = _table(tmp_path / "mm")
    assert _value(table, "cell", "1", "hd") == pytest.approx(1.5) and set(table["unit"]) == {"mm"}


def test_a_config_object_gives_what_the_keyword_settings_give(gt_folder, tmp_path):
    from segqc.evaluation.evaluate import EvaluationConfig, evaluate_folder
    from segqc.metrics import MetricSettings

    gt_dir, arrays = gt_folder
    preds = _predictions(tmp_path / "pred", arrays, 2)
    by_config = evaluate_folder(tmp_path / "pred", gt_dir, None,
                                EvaluationConfig(metrics=("dice", "nsd"), settings=MetricSettings(tolerance_mm=2.0)))
    by_keywords = evaluate_folder(tmp_path / "pred", gt_dir, metrics=("dice", "nsd"), tolerance_mm=2.0)
    pd.testing.assert_frame_equal(by_config, by_keywords)
    assert set(by_config["label_name"]) == {"a", "b", "c"}  # names from dataset.json
    assert _value(by_config, "case0", "2", "dice") == pytest.approx(_dice(preds["case0"], arrays["case0"], 2))


def test_a_corrupt_stored_part_is_recomputed_not_a_traceback(gt_folder, tmp_path):
    """Once: a corrupt OUT/cases/settings.json gave a traceback naming no file; stored parts are a
    cache now, and a damaged one is simply recomputed."""
    gt_dir, arrays = gt_folder
    preds = _predictions(tmp_path / "pred", arrays, 1)
    out = tmp_path / "out"
    assert _run("evaluate", tmp_path / "pred", gt_dir, "-o", out, "--metrics", "dice", "-q").exit_code == 0
    (out / "cases" / "case0.parquet").write_bytes(b"not parquet")
    result = _run("evaluate", tmp_path / "pred", gt_dir, "-o", out, "--metrics", "dice", "-q")
    assert result.exit_code == 0 and "reused 1 finished case" in result.output
    assert _value(_table(out), "case0", "1", "dice") == pytest.approx(_dice(preds["case0"], arrays["case0"], 1))


def test_an_unrelated_manifest_beside_the_prediction_folder_is_ignored(gt_folder, tmp_path):
    gt_dir, arrays = gt_folder
    preds = _predictions(tmp_path / "pred", arrays, 1)
    (tmp_path / "manifest.csv").write_text("run,score\na,1\n")  # some other table in the parent folder
    out = tmp_path / "out"
    assert _run("evaluate", tmp_path / "pred", gt_dir, "-o", out, "--metrics", "dice", "-q").exit_code == 0
    assert _value(_table(out), "case1", "3", "dice") == pytest.approx(_dice(preds["case1"], arrays["case1"], 3))


def test_a_file_rewritten_in_place_with_its_time_stamp_restored_is_recomputed_in_one_process(tmp_path):
    """Once: the content digest was memoised per process on path, size, mtime and inode, so the
    Python API called twice in one process served the first Dice (1.0) after a prediction was
    rewritten in place (same size, same inode, time stamp put back)."""
    import os

    import segqc

    geometry = Geometry.from_shape((6, 6, 1), SPACING)
    gt = np.zeros((6, 6, 1), dtype=np.uint8)
    gt[1:4, 2, 0] = 1  # 3 voxels
    write_image(tmp_path / "gt" / "a.nii", gt, geometry)
    pred_path = tmp_path / "pred" / "a.nii"
    write_image(pred_path, gt, geometry)
    out = tmp_path / "out"
    first = segqc.evaluate_folder(tmp_path / "pred", tmp_path / "gt", out, metrics=["dice"])
    assert first[first.label == "1"]["value"].iloc[0] == 1.0

    moved = np.zeros_like(gt)
    moved[2:5, 2, 0] = 1  # overlaps the ground truth in 2 of 3 voxels: Dice 2*2/6
    write_image(tmp_path / "other" / "a.nii", moved, geometry)
    before = os.stat(pred_path)
    data = (tmp_path / "other" / "a.nii").read_bytes()
    assert len(data) == before.st_size
    with open(pred_path, "r+b") as handle:  # in place: same inode
        handle.write(data)
    os.utime(pred_path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(pred_path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)

    second = segqc.evaluate_folder(tmp_path / "pred", tmp_path / "gt", out, metrics=["dice"])
    assert second[second.label == "1"]["value"].iloc[0] == pytest.approx(_dice(moved, gt, 1)) == pytest.approx(2 / 3)


@pytest.mark.parametrize(("labels", "match"), [([0], "label 0 is the background"),
                                               ([1, 0], "label 0 is the background"), ([-1], "label -1 is negative")])
def test_labels_holding_the_background_are_refused_not_an_empty_table(gt_folder, tmp_path, labels, match):
    """Once: labels=[0] evaluated no class and returned an empty table without a word."""
    gt_dir, arrays = gt_folder
    _predictions(tmp_path / "pred", arrays, 2)
    with pytest.raises(ValueError, match=match):
        evaluate_folder(tmp_path / "pred", gt_dir, metrics=["dice"], labels=labels)
    result = _run("evaluate", tmp_path / "pred", gt_dir, "-o", tmp_path / "out", "--labels", "0", "-q")
    assert result.exit_code == 2 and "label 0 is the background" in result.output


def test_every_case_failing_is_an_error_not_an_empty_table(gt_folder, tmp_path):
    """Once: spacing=(1, 1) for 3D images returned an empty table; the reason was only in
    return_details' ``failed``."""
    gt_dir, arrays = gt_folder
    _predictions(tmp_path / "pred", arrays, 2)
    with pytest.raises(InputError, match=r"case0\.nii\.gz: spacing override \(1\.0, 1\.0\) has 2 value\(s\).*"
                                         r"\(all 2 case\(s\) failed\)"):
        evaluate_folder(tmp_path / "pred", gt_dir, metrics=["dice"], spacing=(1, 1))
    details = evaluate_folder(tmp_path / "pred", gt_dir, metrics=["dice"], spacing=(1, 1), return_details=True)
    assert isinstance(details, FolderEvaluation) and sorted(details.failed) == ["case0", "case1"]
    assert len(details.table) == 0


def test_every_prediction_off_the_grid_raises_in_python_and_the_cli_still_reports_and_exits_1(gt_folder, tmp_path):
    """The Python call and the CLI agree: the first failure raised; the CLI's report of every
    failure, its files and exit code 1 as before."""
    gt_dir, arrays = gt_folder
    for case, gt in arrays.items():
        _write_case(tmp_path / "pred", case, gt[:-1])  # one slice short: a geometry mismatch
    with pytest.raises(InputError, match=r"case0\.nii\.gz: .*shape.*\(all 2 case\(s\) failed\)"):
        evaluate_folder(tmp_path / "pred", gt_dir, metrics=["dice"])
    out = tmp_path / "out"
    result = _run("evaluate", tmp_path / "pred", gt_dir, "-o", out, "--metrics", "dice", "-q")
    assert result.exit_code == 1 and "2 failed" in result.output and (out / "metrics.csv").exists()


def test_one_failing_case_of_two_still_gives_the_table_of_the_other(gt_folder, tmp_path):
    gt_dir, arrays = gt_folder
    preds = _predictions(tmp_path / "pred", arrays, 2)
    _write_case(tmp_path / "pred", "case1", arrays["case1"][:-1])  # one slice short: a geometry mismatch
    table = evaluate_folder(tmp_path / "pred", gt_dir, metrics=["dice"])
    assert isinstance(table, pd.DataFrame) and set(table["case"]) == {"case0"}
    assert _value(table, "case0", "1", "dice") == pytest.approx(_dice(preds["case0"], arrays["case0"], 1))


def test_a_label_that_dataset_json_lacks_is_refused(gt_folder, tmp_path):
    """Once: `--labels 7` with a dataset.json of classes 1-3 scored class 7 as both-empty (NaN) in
    every case, silently, while regions naming an unknown label were refused."""
    gt_dir, arrays = gt_folder
    _predictions(tmp_path / "pred", arrays, 2)
    result = _run("evaluate", tmp_path / "pred", gt_dir, "-o", tmp_path / "out", "--labels", "1,7", "-q")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["error: label 7 is not a class of the label list (dataset.json: 1, 2, 3)"], result.output
