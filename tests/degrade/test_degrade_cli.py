"""The `segqc degrade` contract: files, manifest truth, determinism, resume, 2D slices, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.evaluation.evaluate import EvaluationConfig, evaluate_label_maps
from segqc.io.geometry import Geometry
from segqc.io.images import write_image
from segqc.io.labels import LabelSet
from segqc.synthetic import multiclass_phantom

runner = CliRunner()
SPACING = (1.2, 1.2, 4.0)
DATASET = {"labels": {"background": 0, "a": 1, "wall": 2, "b": 3}, "file_ending": ".nii.gz"}


def _run(*args: str):
    return runner.invoke(app, ["degrade", *args], catch_exceptions=False)


def _read(path: Path) -> np.ndarray:
    """Independent reader: SimpleITK directly, back to (x, y, z) order."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).T


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    tp = np.sum((pred == gt) & (gt > 0))
    fp = np.sum((pred > 0) & (pred != gt))
    fn = np.sum((gt > 0) & (pred != gt))
    return 2 * tp / (2 * tp + fp + fn)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """nnU-Net-style: labelsTr with three phantoms, imagesTr with matching images, dataset.json."""
    labels, images = tmp_path / "data" / "labelsTr", tmp_path / "data" / "imagesTr"
    for i in range(3):
        gt = multiclass_phantom((56, 56, 12), SPACING, seed=i)
        geometry = Geometry.from_shape(gt.shape, SPACING)
        write_image(labels / f"case{i}.nii.gz", gt, geometry)
        write_image(images / f"case{i}_0000.nii.gz", gt.astype(np.float32), geometry)
    (tmp_path / "data" / "dataset.json").write_text(json.dumps(DATASET))
    return labels


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", keep_default_na=False, dtype={"slice": str, "note": str})


def test_degrade_writes_maps_and_a_manifest_of_their_true_quality(dataset, tmp_path):
    out = tmp_path / "out"
    result = _run(str(dataset), "-o", str(out), "--per-case", "5", "--seed", "1", "--quiet")
    assert result.exit_code == 0, result.output
    table = _manifest(out)
    required = {"case", "file", "source", "bin", "operations", "dice", "dice_1", "dice_2", "dice_3", "hd95", "nsd",
                "in_bin", "seed", "attempts", "note"}
    assert required <= set(table.columns)
    assert len(table) == 15 and set(table["source"]) == {"synthetic"}
    assert sorted(table.groupby("case")["bin"].apply(sorted).iloc[0]) == sorted(
        ["[0.05,0.10)", "[0.10,0.25)", "[0.25,0.50)", "[0.50,0.75)", "[0.75,0.95]"])
    assert table["in_bin"].astype(str).eq("True").all()
    config = EvaluationConfig(metrics=("hd95", "nsd"), label_set=LabelSet(names={1: "1", 2: "2", 3: "3"}, known=True))
    for row in table.itertuples():
        pred, gt = _read(out / row.file), _read(dataset / f"{row.case}.nii.gz")
        assert row.dice == pytest.approx(_dice(pred, gt), abs=1e-12)
        lo, hi = (float(v) for v in row.bin.strip("[]()").split(","))
        assert lo <= row.dice <= hi
        for c in (1, 2, 3):
            p, g = pred == c, gt == c
            assert getattr(row, f"dice_{c}") == pytest.approx(2 * np.sum(p & g) / (p.sum() + g.sum()), abs=1e-12)
        spacing = sitk.ReadImage(str(dataset / f"{row.case}.nii.gz")).GetSpacing()  # as stored (float32)
        evaluated = evaluate_label_maps(pred, gt, spacing, config)
        present = set(np.unique(pred)) | set(np.unique(gt))
        for metric in ("hd95", "nsd"):
            chosen = (evaluated["metric"] == metric) & evaluated["label"].isin({str(v) for v in present - {0}})
            values = evaluated[chosen]["value"]
            assert getattr(row, metric) == pytest.approx(values.mean(), rel=1e-9)
        assert row.operations and "@" in row.operations
    summary = json.loads((out / "summary.json").read_text())
    assert [b["fraction_in_bin"] for b in summary["bins"]] == [1.0] * 5


def test_same_seed_same_files_whatever_the_number_of_jobs(dataset, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert _run(str(dataset), "-o", str(one), "--per-case", "2", "--seed", "3", "--quiet").exit_code == 0
    assert _run(str(dataset), "-o", str(two), "--per-case", "2", "--seed", "3", "--quiet", "--jobs", "2").exit_code == 0
    a, b = _manifest(one), _manifest(two)
    pd.testing.assert_frame_equal(a, b)
    for f in a["file"]:
        assert np.array_equal(_read(one / f), _read(two / f))
    other = tmp_path / "other"
    assert _run(str(dataset), "-o", str(other), "--per-case", "2", "--seed", "4", "--quiet").exit_code == 0
    assert not _manifest(other)["seed"].equals(a["seed"])


def test_a_rerun_reuses_finished_cases(dataset, tmp_path):
    out = tmp_path / "out"
    assert _run(str(dataset), "-o", str(out), "--per-case", "2", "--quiet").exit_code == 0
    first = _manifest(out)
    # as if killed after case1's maps were written but before it was stored: its write journal
    # (segqc.execution.run._journal) still lists them
    (out / "cases" / "case1.parquet").unlink()
    journal = out / "cases" / ".writing" / "case1.txt"
    journal.parent.mkdir()
    journal.write_text("".join(f"{f}\n" for f in first["file"] if f.startswith("labels/case1")))
    stamps = {f: (out / f).stat().st_mtime_ns for f in first["file"] if not f.startswith("labels/case1")}
    result = _run(str(dataset), "-o", str(out), "--per-case", "2", "--quiet")
    assert result.exit_code == 0 and "reused 2 finished case(s)" in result.output.replace("\n", " ")
    pd.testing.assert_frame_equal(_manifest(out), first)
    assert stamps == {f: (out / f).stat().st_mtime_ns for f in stamps}
    changed = _run(str(dataset), "-o", str(out), "--per-case", "2", "--seed", "9", "--quiet")
    assert "reused" not in changed.output


def test_slices_mode_writes_2d_maps_of_foreground_slices(dataset, tmp_path):
    out = tmp_path / "out"
    result = _run(str(dataset), "-o", str(out), "--per-case", "1", "--slices", "--balanced", "--quiet")
    assert result.exit_code == 0, result.output
    table = _manifest(out)
    gt = _read(dataset / "case0.nii.gz")
    occupied = [z for z in range(gt.shape[2]) if gt[:, :, z].any()]
    rows = table[table["case"] == "case0"]
    assert sorted(rows["slice"].astype(int)) == occupied
    assert set(table["bin"]) <= {f"[{i / 10:.2f},{(i + 1) / 10:.2f}{']' if i == 9 else ')'}" for i in range(10)}
    for row in rows.itertuples():
        pred = _read(out / row.file)
        assert pred.ndim == 2 and f"__z{int(row.slice):02d}__" in row.file
        gt_slice = _read(out / row.gt_slice_file)
        assert np.array_equal(gt_slice, gt[:, :, int(row.slice)])
        assert row.dice == pytest.approx(_dice(pred, gt_slice), abs=1e-12)
    assert table["in_bin"].astype(str).eq("True").mean() >= 0.9


def test_folder_without_label_files_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _run(str(tmp_path / "empty"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "no label files" in result.output


def test_labels_absent_from_dataset_json_fail_that_case_only(dataset, tmp_path):
    bad = multiclass_phantom((56, 56, 12), SPACING, seed=5)
    bad[bad == 3] = 7
    write_image(dataset / "case1.nii.gz", bad, Geometry.from_shape(bad.shape, SPACING))
    out = tmp_path / "out"
    result = _run(str(dataset), "-o", str(out), "--per-case", "1", "--quiet")
    assert result.exit_code == 1
    assert "case1.nii.gz" in result.output and "[7]" in result.output and "dataset.json" in result.output
    assert set(_manifest(out)["case"]) == {"case0", "case2"}
    assert "case1" in json.loads((out / "summary.json").read_text())["cases"]["failed"]


def test_image_with_other_geometry_fails_that_case(dataset, tmp_path):
    image = np.zeros((56, 56, 12), dtype=np.float32)
    write_image(dataset.parent / "imagesTr" / "case2_0000.nii.gz", image,
                Geometry.from_shape(image.shape, (1.0, 1.0, 4.0)))
    out = tmp_path / "out"
    result = _run(str(dataset), "-o", str(out), "--per-case", "1", "--quiet")
    assert result.exit_code == 1
    assert "case2.nii.gz" in result.output and "different geometry" in result.output and "spacing" in result.output
    assert set(_manifest(out)["case"]) == {"case0", "case1"}
    assert _run(str(dataset), "-o", str(tmp_path / "unchecked"), "--per-case", "1", "--quiet",
                "--no-image-check").exit_code == 0


def test_unreachable_bin_is_noted_in_the_manifest(tmp_path):
    labels = tmp_path / "labelsTr"
    gt = np.zeros((24, 24), dtype=np.uint8)
    gt[8:11, 8:11] = 1
    gt[11, 8] = 1
    write_image(labels / "tiny.nii.gz", gt, Geometry.from_shape(gt.shape, (1.0, 1.0)))
    write_image(labels / "blank.nii.gz", np.zeros_like(gt), Geometry.from_shape(gt.shape, (1.0, 1.0)))
    out = tmp_path / "out"
    result = _run(str(labels), "-o", str(out), "--per-case", "1", "--bins", "0.96,0.99", "--max-attempts", "2")
    assert result.exit_code == 0, result.output
    assert "blank: the ground truth has no foreground" in result.output
    assert "1 of 1 maps missed their bin" in result.output
    row = _manifest(out).iloc[0]
    assert str(row["in_bin"]) == "False" and "not reached" in row["note"]
    assert row["dice"] == pytest.approx(_dice(_read(out / row["file"]), gt))


def test_bad_options_are_one_line_errors(dataset, tmp_path):
    result = _run(str(dataset), "-o", str(tmp_path / "o"), "--bins", "0.5,0.2")
    assert result.exit_code == 2 and "increase" in result.output
    result = _run(str(dataset), "-o", str(tmp_path / "o"), "--per-case", "0")
    assert result.exit_code == 2 and "--per-case" in result.output
    result = _run(str(dataset), "-o", str(tmp_path / "o"), "--target-label", "9")
    assert result.exit_code == 2 and "target label 9" in result.output


def test_a_folder_where_every_ground_truth_is_blank_is_one_error_line_and_exit_2(tmp_path):
    labels = tmp_path / "labelsTr"
    for case in ("a", "b", "c"):
        write_image(labels / f"{case}.nii.gz", np.zeros((16, 16), np.uint8), Geometry.from_shape((16, 16), (1.0, 1.0)))
    result = _run(str(labels), "-o", str(tmp_path / "out"), "--per-case", "1", "--quiet")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {labels}: no case has foreground to degrade (3 case(s), all skipped)"], result.output
    assert "wrote 0 maps" not in result.output


def test_a_target_label_no_case_holds_is_one_error_line_and_exit_2(dataset, tmp_path):
    (dataset.parent / "dataset.json").write_text(json.dumps({**DATASET, "labels": {**DATASET["labels"], "d": 4}}))
    result = _run(str(dataset), "-o", str(tmp_path / "out"), "--per-case", "1", "--target-label", "4", "--quiet")
    assert result.exit_code == 2, result.output
    assert "no case has label 4 to degrade (3 case(s), all skipped)" in " ".join(result.output.split())


def test_a_rerun_from_a_copy_of_the_data_records_the_copys_paths(dataset, tmp_path):
    """Cases are keyed on content, so a copy of the data reuses them; their manifest rows kept the
    first run's gt_file, which broke once the first copy was deleted."""
    import shutil

    out = tmp_path / "out"
    assert _run(str(dataset), "-o", str(out), "--per-case", "1", "--quiet").exit_code == 0
    copy = tmp_path / "copy"
    shutil.copytree(dataset.parent, copy)
    result = _run(str(copy / "labelsTr"), "-o", str(out), "--per-case", "1", "--quiet")
    assert "reused 3 finished case(s)" in result.output.replace("\n", " ")
    assert sorted(set(_manifest(out)["gt_file"])) == [str(copy / "labelsTr" / f"case{i}.nii.gz") for i in range(3)]
