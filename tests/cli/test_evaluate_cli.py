"""The `segqc evaluate` contract: output files and columns, bad input, resume, parallel runs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.io.geometry import Geometry
from segqc.io.images import write_image
from segqc.synthetic import multiclass_phantom

runner = CliRunner()
SPACING = (1.0, 1.0, 2.5)


def _independent_dice(pred: np.ndarray, gt: np.ndarray, label: int) -> float:
    p, g = pred == label, gt == label
    return 2.0 * np.logical_and(p, g).sum() / (p.sum() + g.sum())


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Three phantom cases: ground truths and shifted/eroded predictions, with a dataset.json."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    arrays = {}
    for i in range(3):
        gt = multiclass_phantom((48, 48, 20), SPACING, seed=i)
        pred = np.roll(gt, i, axis=0)
        pred[(pred == 1) & ~ndimage.binary_erosion(pred == 1)] = 0
        geometry = Geometry.from_shape(gt.shape, SPACING)
        write_image(gt_dir / f"case{i}.nii.gz", gt, geometry)
        write_image(pred_dir / f"case{i}.nii.gz", pred, geometry)
        arrays[f"case{i}"] = (pred, gt)
    (gt_dir / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "a": 1, "wall": 2, "b": 3, "heart": [1, 2, 3]},
                    "file_ending": ".nii.gz"})
    )
    return pred_dir, gt_dir, arrays


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_evaluate_writes_tidy_metrics_and_summary(folders, tmp_path):
    pred_dir, gt_dir, arrays = folders
    out = tmp_path / "out"
    result = _run("evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--metrics", "dice,hd95,nsd", "--quiet")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "metrics.csv", dtype={"label": str}, keep_default_na=False)
    assert {"case", "label", "label_name", "metric", "value", "empty", "component"} <= set(table.columns)
    assert set(table["metric"]) == {"dice", "hd95", "nsd"}
    assert set(table["label"]) == {"1", "2", "3", "heart"}  # labels and the region from dataset.json
    for case, (pred, gt) in arrays.items():
        for label in (1, 2, 3):
            row = table[(table.case == case) & (table.label == str(label)) & (table.metric == "dice")]
            assert float(row.value.iloc[0]) == pytest.approx(_independent_dice(pred, gt, label), abs=1e-12)
        union = table[(table.case == case) & (table.label == "heart") & (table.metric == "dice")]
        expected = 2.0 * ((pred > 0) & (gt > 0)).sum() / ((pred > 0).sum() + (gt > 0).sum())
        assert float(union.value.iloc[0]) == pytest.approx(expected, abs=1e-12)
    assert table[table.label == "2"]["label_name"].iloc[0] == "wall"
    summary = json.loads((out / "summary.json").read_text())
    dice_wall = [_independent_dice(p, g, 2) for p, g in arrays.values()]
    entry = summary["labels"]["2"]["dice"]
    assert entry["mean"] == pytest.approx(np.mean(dice_wall))
    assert entry["median"] == pytest.approx(np.median(dice_wall))
    assert entry["n"] == 3 and entry["n_nan"] == 0
    assert summary["settings"]["tolerance_mm"] == 1.0


def test_per_component_rows_carry_component_ids_and_cc_means(folders, tmp_path):
    pred_dir, gt_dir, _ = folders
    out = tmp_path / "out"
    result = _run("evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--metrics", "dice,hd95",
                  "--per-component", "--quiet")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "metrics.csv", dtype={"label": str})
    per_component = table[table.component.notna()]
    assert set(per_component.metric) == {"cc_dice", "cc_hd95"}
    means = table[table.component.isna() & table.metric.str.startswith("cc_")]
    for (case, label), group in per_component[per_component.metric == "cc_dice"].groupby(["case", "label"]):
        mean = means[(means.case == case) & (means.label == label) & (means.metric == "cc_dice")].value.iloc[0]
        assert mean == pytest.approx(group.value.mean())
    assert {"gt_components", "gt_components_missed", "pred_components_unmatched"} <= set(table.metric)


def test_missing_prediction_is_evaluated_as_empty_and_extra_is_skipped(folders, tmp_path):
    pred_dir, gt_dir, arrays = folders
    (pred_dir / "case1.nii.gz").unlink()
    gt = arrays["case0"][1]
    write_image(pred_dir / "stray.nii.gz", gt, Geometry.from_shape(gt.shape, SPACING))
    out = tmp_path / "out"
    result = runner.invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--metrics", "dice,hd95",
                                 "-q"])
    assert result.exit_code == 0
    assert "case1: no prediction" in result.output and "stray: prediction has no ground truth" in result.output
    table = pd.read_csv(out / "metrics.csv", dtype={"label": str}, keep_default_na=False)
    missing = table[table.case == "case1"]
    assert (missing[missing.metric == "dice"].value.astype(float) == 0.0).all()
    assert set(missing["empty"]) == {"pred_empty:worst"}
    assert (missing[missing.metric == "hd95"].value.astype(float) == 50.0).all()
    assert "stray" not in set(table.case)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"]["missing_prediction"] == ["case1"]
    assert summary["cases"]["extra_prediction"] == ["stray"]


def test_empty_policy_options_change_the_values_and_are_recorded(folders, tmp_path):
    pred_dir, gt_dir, _ = folders
    (pred_dir / "case2.nii.gz").unlink()
    out = tmp_path / "out"
    result = runner.invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--metrics", "hd95",
                                 "--empty-pred", "nan", "-q"])
    assert result.exit_code == 0
    table = pd.read_csv(out / "metrics.csv", keep_default_na=False)
    rows = table[table.case == "case2"]
    assert set(rows["empty"]) == {"pred_empty:nan"}
    assert rows.value.astype(str).str.lower().isin(["nan", ""]).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"]["1"]["hd95"]["n_nan"] == 1
    assert summary["settings"]["empty"]["pred_empty"] == "nan"


@pytest.mark.parametrize("problem", ["shape", "spacing", "flipped", "corrupt", "truncated", "negative", "nan"])
def test_bad_prediction_gives_one_line_naming_the_file_and_a_failing_exit_code(folders, tmp_path, problem):
    pred_dir, gt_dir, arrays = folders
    pred, gt = arrays["case0"]
    target = pred_dir / "case0.nii.gz"
    if problem == "shape":
        write_image(target, pred[:-1], Geometry.from_shape(pred[:-1].shape, SPACING))
    elif problem == "spacing":
        write_image(target, pred, Geometry.from_shape(pred.shape, (1.0, 1.0, 3.0)))
    elif problem == "flipped":
        geometry = Geometry(pred.shape, SPACING, (0.0, 0.0, 0.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1))
        write_image(target, pred, geometry)
    elif problem == "corrupt":
        target.write_bytes(b"this is not an image at all" * 10)
    elif problem == "truncated":
        data = gzip.decompress(target.read_bytes())
        target.write_bytes(gzip.compress(data[: len(data) // 2]))
    elif problem == "negative":
        write_image(target, pred.astype(np.int16) - 1, Geometry.from_shape(pred.shape, SPACING))
    elif problem == "nan":
        values = pred.astype(np.float32)
        values[0, 0, 0] = np.nan
        write_image(target, values, Geometry.from_shape(pred.shape, SPACING))
    out = tmp_path / "out"
    result = runner.invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--metrics", "dice", "-q"])
    assert result.exit_code == 1
    error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.output
    assert "case0.nii.gz" in error_lines[0]
    assert "Traceback" not in result.output
    # the other cases were still evaluated
    table = pd.read_csv(out / "metrics.csv")
    assert set(table.case) == {"case1", "case2"}


def test_unexpected_label_is_an_error_naming_the_file(folders, tmp_path):
    pred_dir, gt_dir, arrays = folders
    pred, _ = arrays["case0"]
    bad = pred.copy()
    bad[0, 0, 0] = 7
    write_image(pred_dir / "case0.nii.gz", bad, Geometry.from_shape(bad.shape, SPACING))
    result = runner.invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "-o", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 1
    assert "case0.nii.gz" in result.output and "unexpected label value(s) [7]" in result.output


def test_resample_option_maps_a_prediction_on_another_grid(folders, tmp_path):
    pred_dir, gt_dir, arrays = folders
    pred, gt = arrays["case0"]
    fine = np.repeat(gt, 2, axis=0)  # same content at half the spacing along x
    geometry = Geometry(fine.shape, (0.5, 1.0, 2.5), (-0.25, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_image(pred_dir / "case0.nii.gz", fine, geometry)
    out = tmp_path / "out"
    refused = runner.invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--metrics", "dice", "-q"])
    assert refused.exit_code == 1 and "--resample" in refused.output
    result = runner.invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--metrics", "dice", "-q",
                                 "--resample"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "metrics.csv")
    assert (table[table.case == "case0"].value == 1.0).all()


def test_missing_ground_truth_folder_stops_with_exit_code_2(tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path), str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "nope" in result.output and "Traceback" not in result.output


def test_unknown_metric_is_refused(folders, tmp_path):
    pred_dir, gt_dir, _ = folders
    result = runner.invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "-o", str(tmp_path / "o"),
                                 "--metrics", "dice,foo"])
    assert result.exit_code == 2 and "unknown metric(s) foo" in result.output


def test_rerun_reuses_finished_cases_and_recomputes_after_settings_change(folders, tmp_path):
    pred_dir, gt_dir, _ = folders
    out = tmp_path / "out"
    args = ["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "--metrics", "dice", "-q"]
    assert runner.invoke(app, args).exit_code == 0
    first = pd.read_csv(out / "metrics.csv")
    # simulate an interrupted run: one case result lost, a stale temporary file left behind
    (out / "cases" / "case1.parquet").unlink()
    (out / "cases" / ".tmp-dead-case1.csv").write_text("half a file")
    (out / "metrics.csv").unlink()
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "reused 2 finished case(s)" in second.output
    pd.testing.assert_frame_equal(first, pd.read_csv(out / "metrics.csv"))
    third = runner.invoke(app, args[:-1] + ["--tolerance", "2", "-q"])
    assert "reused" not in third.output


def test_parallel_jobs_give_the_same_table_as_serial(folders, tmp_path):
    pred_dir, gt_dir, _ = folders
    serial = _run("evaluate", str(pred_dir), str(gt_dir), "-o", str(tmp_path / "a"), "--metrics", "dice,hd95", "-q")
    parallel = _run("evaluate", str(pred_dir), str(gt_dir), "-o", str(tmp_path / "b"), "--metrics", "dice,hd95", "-q",
                    "--jobs", "2")
    assert serial.exit_code == parallel.exit_code == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "metrics.csv"),
                                  pd.read_csv(tmp_path / "b" / "metrics.csv"))


def test_dask_scheduler_gives_the_same_table_as_serial(folders, tmp_path):
    import distributed

    from segqc.evaluation.evaluate import evaluate_folder

    pred_dir, gt_dir, _ = folders
    serial = evaluate_folder(pred_dir, gt_dir, metrics=("dice", "hd95"))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        result = _run("evaluate", str(pred_dir), str(gt_dir), "-o", str(tmp_path / "d"), "--metrics", "dice,hd95", "-q",
                      "--scheduler", cluster.scheduler_address)
    assert result.exit_code == 0, result.output
    on_cluster = pd.read_csv(tmp_path / "d" / "metrics.csv", dtype={"label": str}, keep_default_na=False)
    assert np.allclose(on_cluster.value.astype(float), serial.value.astype(float))
    assert list(on_cluster.case) == list(serial.case)


def test_demo_runs_and_reports_lesion_detection(tmp_path):
    result = _run("demo", "-o", str(tmp_path), "--no-qc")  # the QC part: tests/qc/test_shipped_nnqc_model.py
    assert result.exit_code == 0, result.output
    assert "lesions:" in result.output and "missed" in result.output
    table = pd.read_csv(tmp_path / "evaluation" / "lesions" / "metrics.csv")
    assert {"cc_dice", "pq", "lesion_dice", "hd95"} <= set(table.metric)


def test_spacing_for_files_that_store_their_own_is_refused_before_any_case(folders, tmp_path):
    """Once: every NIfTI case failed on its own with exit code 1, as if the data were bad."""
    pred_dir, gt_dir, _ = folders
    result = runner.invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "-o", str(tmp_path / "out"),
                                 "--spacing", "0.5,0.5,0.5", "-q"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: {gt_dir}: --spacing applies only to PNG/TIFF files, which carry no spacing; the "
                     "ground truths and predictions here store their own"], result.output


@pytest.mark.parametrize("png_side", ["gt", "pred"])
def test_a_png_beside_a_nifti_with_another_spacing_asks_for_spacing(tmp_path, png_side):
    """Once: a PNG ground truth beside a 0.5 mm NIfTI prediction failed as "spacing (1.0, 1.0) mm
    differs", quoting a spacing PNG does not store, and suggested --resample; --spacing was refused
    when the PNG was the prediction. With --spacing the distances are in mm of that spacing."""
    import SimpleITK as sitk

    gt = np.zeros((20, 30), np.uint8)
    gt[5:10, 5:15] = 1
    pred = np.roll(gt, 2, axis=1)  # shifted by 2 pixels = 1 mm at 0.5 mm
    for side, array in (("gt", gt), ("pred", pred)):
        (tmp_path / side).mkdir()
        image = sitk.GetImageFromArray(array)
        if side == png_side:
            sitk.WriteImage(image, str(tmp_path / side / "c1.png"))
        else:
            image.SetSpacing((0.5, 0.5))
            sitk.WriteImage(image, str(tmp_path / side / "c1.nii.gz"))
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--metrics", "dice,hd95", "-q"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "a")])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(tmp_path / png_side / "c1.png") in errors[0], result.output
    assert "--spacing 0.5,0.5" in errors[0] and "1.0" not in errors[0] and "--resample" not in result.output
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "b"), "--spacing", "0.5,0.5"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "b" / "metrics.csv")
    assert table.set_index("metric").loc["hd95", "value"] == pytest.approx(1.0)


@pytest.mark.parametrize(("option", "words"), [(["--class-tolerance", "lvier=3"], "class tolerance lvier"),
                                               (["--region", "X=1,7"], "region X names label(s) 7")])
def test_a_name_or_label_that_dataset_json_lacks_is_refused(folders, tmp_path, option, words):
    """Once: a typo in --class-tolerance changed nothing and was recorded as applied; a region with
    a label no map can hold was computed without it."""
    pred_dir, gt_dir, _ = folders
    result = runner.invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "-o", str(tmp_path / "out"), "-q",
                                 "--metrics", "dice,nsd", *option])
    assert result.exit_code == 2 and words in result.output, result.output
    assert result.output.count("error:") == 1 and not (tmp_path / "out" / "metrics.csv").exists()


def test_a_class_tolerance_that_matches_nothing_evaluated_is_named_without_dataset_json(folders, tmp_path):
    pred_dir, gt_dir, _ = folders
    (gt_dir / "dataset.json").unlink()
    result = runner.invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "-o", str(tmp_path / "out"), "-q",
                                 "--metrics", "dice,nsd", "--class-tolerance", "9=2", "--class-tolerance", "1=2"])
    assert result.exit_code == 0, result.output
    assert "class tolerance 9: no evaluated class" in result.output
    assert "class tolerance 1:" not in result.output


def test_the_lesion_settings_recorded_are_those_used_and_an_undefined_detection_rate_is_tagged(folders, tmp_path):
    """Once: summary.json said the lesion NSD used 1 mm after `--tolerance 3`; and with every
    ground-truth lesion below the minimum volume, lesion_tpr was NaN with no rule named."""
    pred_dir, gt_dir, _ = folders
    out = tmp_path / "out"
    result = runner.invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "-q", "--metrics",
                                 "lesionwise_nsd,lesion_tpr", "--tolerance", "3", "--lesion-min-volume", "1e9"])
    assert result.exit_code == 0, result.output
    lesion = json.loads((out / "summary.json").read_text())["settings"]["lesion"]
    assert lesion["tolerance_mm"] == 3.0
    table = pd.read_csv(out / "metrics.csv")
    tpr = table[table.metric == "lesion_tpr"]
    assert len(tpr) and tpr.value.isna().all()
    assert (tpr["empty"].fillna("") == "no_gt_lesion:undefined").all(), tpr


def test_folders_where_every_map_is_empty_and_no_class_is_known_say_nothing_was_evaluated(tmp_path):
    """Without dataset.json, all-background maps gave an empty metrics.csv, exit 0, and no word."""
    for folder in ("gt", "pred"):
        write_image(tmp_path / folder / "a.nii.gz", np.zeros((8, 8, 4), np.uint8), Geometry.from_shape((8, 8, 4)))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(tmp_path / "o"),
                                 "-q"])
    assert result.exit_code == 0, result.output
    assert "warning: no class is present in any prediction or ground truth of the 1 case(s)" in " ".join(
        result.output.split())
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert any("nothing was evaluated" in w for w in summary["cases"]["warnings"])


def test_the_volumes_of_2d_images_are_areas_in_square_millimetres(tmp_path):
    """Once: a 2D mask of 100 px at 0.5 mm was written as volume 0.025 "ml" (25 mm² / 1000); it is
    the area, 25 mm², and 100 "pixels" for a PNG that stores no spacing."""
    import SimpleITK as sitk

    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 10:20] = 1  # 100 pixels
    for ending, spacing in ((".nii.gz", (0.5, 0.5)), (".png", None)):
        folder = tmp_path / ending.strip(".")
        image = sitk.GetImageFromArray(mask)
        if spacing:
            image.SetSpacing(spacing)
        for side in ("gt", "pred"):
            (folder / side).mkdir(parents=True)
            sitk.WriteImage(image, str(folder / side / f"c1{ending}"))
        result = runner.invoke(app, ["evaluate", str(folder / "pred"), str(folder / "gt"), "-o", str(folder / "out"),
                                     "--metrics", "dice,volume_gt", "-q"])
        assert result.exit_code == 0, result.output
        row = pd.read_csv(folder / "out" / "metrics.csv").set_index("metric").loc["volume_gt"]
        assert (row["value"], row["unit"]) == ((25.0, "mm²") if spacing else (100.0, "pixels"))


def test_a_case_without_any_class_is_named_when_no_class_list_says_what_to_expect(tmp_path):
    """Once: a case whose maps were both empty was counted as evaluated but had no row, silently
    (without dataset.json the classes of a case are those present in it)."""
    geometry = Geometry(shape=(8, 8, 4), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                        direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    full = np.zeros((8, 8, 4), np.uint8)
    full[2:5, 2:5, 1:3] = 1
    for side in ("pred", "gt"):
        write_image(tmp_path / side / "blank.nii.gz", np.zeros_like(full), geometry)
        write_image(tmp_path / side / "full.nii.gz", full, geometry)
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--metrics", "dice", "-q"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "warning: 1 case(s) have no class in either map" in result.output and "(blank)" in result.output
    assert set(pd.read_csv(tmp_path / "a" / "metrics.csv")["case"]) == {"full"}
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "b"), "--labels", "1"])
    assert result.exit_code == 0 and "no class in either map" not in result.output
    blank = pd.read_csv(tmp_path / "b" / "metrics.csv").set_index("case").loc["blank"]
    assert blank["empty"] == "both_empty:nan" and np.isnan(blank["value"])
