"""Bad input that used to pass without a word: output files that overwrite an input, option
values that mean nothing, label values that match nothing, folders that are one another. Each
must end in one clear line (an error, or a warning beside the numbers), never a silent result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from dataset_folders import write_dataset
from report_folders import one_error_line
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.io.geometry import Geometry
from segqc.io.images import write_image

runner = CliRunner()
SHAPE, SPACING = (20, 20, 10), (1.0, 1.0, 2.0)


def _block(value: int = 1, shift: int = 0, shape=SHAPE) -> np.ndarray:
    array = np.zeros(shape, np.uint8)
    array[4 + shift:12 + shift, 4 + shift:12 + shift, 2:7] = value
    return array


def _write(path: Path, array: np.ndarray, origin=(0.0, 0.0, 0.0)) -> Path:
    write_image(path, array, Geometry.from_shape(array.shape, SPACING, origin=origin))
    return path


def _dataset(root: Path, *, foreground: bool = True) -> Path:
    geometry = Geometry.from_shape(SHAPE, SPACING)
    label = _block() if foreground else np.zeros(SHAPE, np.uint8)
    cases = {f"c{i}": ((label * 50 + 10).astype(np.float32), label, geometry) for i in range(2)}
    return write_dataset(root, cases, channel="MR")


# ---- output files that are inputs --------------------------------------------------------------

def test_fingerprint_refuses_to_overwrite_its_own_inputs_and_writes_beside_them(tmp_path):
    dataset = _dataset(tmp_path / "ds")
    before = (dataset / "dataset.json").read_bytes()
    line = one_error_line(runner.invoke(app, ["fingerprint", str(dataset), "-o", str(dataset / "dataset.json")]))
    assert line == f"error: {dataset / 'dataset.json'}: is an input of this command; write the output elsewhere"
    assert (dataset / "dataset.json").read_bytes() == before
    inside = dataset / "labelsTr" / "fp.json"
    line = one_error_line(runner.invoke(app, ["fingerprint", str(dataset), "-o", str(inside)]))
    assert f"lies in the input folder {dataset / 'labelsTr'}" in line and not inside.exists()
    label = dataset / "labelsTr" / "c0.nii.gz"
    line = one_error_line(runner.invoke(app, ["fingerprint", str(dataset), "-o", str(label)]))
    assert line == f"error: {label}: expected a file name ending in .json"
    beside = dataset / "fingerprint.json"  # next to the inputs, not one of them: fine
    result = runner.invoke(app, ["fingerprint", str(dataset), "-o", str(beside), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(beside.read_text())["n_cases"] == 2


def test_a_scheme_export_onto_its_source_or_with_an_unknown_ending_is_refused(tmp_path):
    source = tmp_path / "dataset.json"
    source.write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}}))
    before = source.read_bytes()
    line = one_error_line(runner.invoke(app, ["labels", "scheme", "export", str(source), "-o", str(source)]))
    assert line == f"error: {source}: is an input of this command; write the output elsewhere"
    assert source.read_bytes() == before
    line = one_error_line(runner.invoke(app, ["labels", "scheme", "export", "total", "-o", str(tmp_path / "x.txt")]))
    assert "expected a file name ending in .yaml or .yml or .json" in line and not (tmp_path / "x.txt").exists()
    line = one_error_line(runner.invoke(app, ["labels", "scheme", "show", "total", "-o", str(tmp_path / "t.json")]))
    assert "expected a file name ending in .csv" in line
    nested = tmp_path / "new" / "folder" / "scheme.yaml"  # missing parents are created
    result = runner.invoke(app, ["labels", "scheme", "export", str(source), "-o", str(nested)])
    assert result.exit_code == 0, result.output
    assert "liver" in nested.read_text()


def test_report_and_review_export_write_only_their_own_kind_of_file(tmp_path):
    from segqc.review.store import DecisionStore

    gt = _write(tmp_path / "gt" / "case0.nii.gz", _block())
    before = gt.read_bytes()
    line = one_error_line(runner.invoke(app, ["report", str(tmp_path), "-o", str(gt), "-q"]))
    assert line == f"error: {gt}: expected a file name ending in .html or .htm"
    assert gt.read_bytes() == before
    db = tmp_path / "review.sqlite"
    DecisionStore(db).record("case0", "accept", rater="anna")
    line = one_error_line(runner.invoke(app, ["review", "export", str(db), "-o", str(db)]))
    assert "expected a file name ending in .csv or .json" in line
    assert len(DecisionStore(db, readonly=True).current()) == 1


# ---- evaluate-raters ---------------------------------------------------------------------------

def _raters(root: Path, cases: dict[str, int]) -> Path:
    """CASE/rater_1..rater_N: blocks of value 1 shifted by 0..N-1 voxels."""
    for case, n in cases.items():
        for k in range(n):
            _write(root / case / f"rater_{k + 1}.nii.gz", _block(shift=k))
    return root


def _samples(root: Path, cases: list[str], value: int = 1) -> Path:
    for case in cases:
        for k in range(2):
            _write(root / "samples" / f"{case}_{k:02d}.nii.gz", _block(value, shift=k))
    return root


def test_evaluate_raters_refuses_foreground_labels_that_no_mask_holds(tmp_path):
    raters, pred = _raters(tmp_path / "raters", {"a": 3, "b": 3}), _samples(tmp_path / "pred", ["a", "b"])
    result = runner.invoke(app, ["evaluate-raters", str(pred), str(raters), "-o", str(tmp_path / "ok"), "-q"])
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    ok = pd.read_csv(tmp_path / "ok" / "metrics.csv")
    assert (ok.loc[ok["metric"] == "ged2", "value"] > 0).all()  # shifted raters: not a perfect agreement
    result = runner.invoke(app, ["evaluate-raters", str(pred), str(raters), "-o", str(tmp_path / "l5"),
                                 "--labels", "5", "-q"])
    assert result.exit_code == 2, result.output
    assert "error: --labels 5: no rater mask and no prediction of any case holds these values" in result.output
    assert "no rater mask and no prediction marks a voxel (label(s) 5)" in result.output
    line = one_error_line(runner.invoke(app, ["evaluate-raters", str(pred), str(raters), "-o", str(tmp_path / "l0"),
                                              "--labels", "0", "-q"]))
    assert "0 is the background" in line
    line = one_error_line(runner.invoke(app, ["evaluate-raters", str(pred), str(raters), "-o", str(tmp_path / "le"),
                                              "--labels", "", "-q"]))
    assert "--labels is empty" in line


def test_one_bad_rater_case_fails_alone_and_the_output_may_not_go_into_the_raters_folder(tmp_path):
    raters, pred = _raters(tmp_path / "raters", {"a": 3, "b": 3}), _samples(tmp_path / "pred", ["a", "b"])
    (raters / "a" / "rater_2.nii.gz").unlink()
    result = runner.invoke(app, ["evaluate-raters", str(pred), str(raters), "-o", str(tmp_path / "ev"), "-q"])
    assert result.exit_code == 1, result.output
    assert f"error: {raters / 'a'}: rater_2 is missing (found rater_1, rater_3)" in result.output
    table = pd.read_csv(tmp_path / "ev" / "metrics.csv")
    assert set(table["case"]) == {"b"}
    _write(raters / "a" / "rater_2.nii.gz", _block(shift=1))
    for out in (raters, raters / "out", pred):
        line = one_error_line(runner.invoke(app, ["evaluate-raters", str(pred), str(raters), "-o", str(out), "-q"]))
        assert f"lies in the input folder {raters if out != pred else pred}" in line
    assert sorted(p.name for p in raters.iterdir()) == ["a", "b"]


# ---- evaluate -----------------------------------------------------------------------------------

def test_a_resampled_prediction_that_misses_the_ground_truth_grid_is_named(tmp_path):
    _write(tmp_path / "gt" / "case0.nii.gz", _block())
    _write(tmp_path / "pred" / "case0.nii.gz", _block(), origin=(500.0, 0.0, 0.0))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(tmp_path / "ev"),
                                 "--resample", "-q"])
    assert result.exit_code == 0, result.output
    assert "case0: none of the prediction's foreground lies on the ground-truth grid after resampling" in result.output
    _write(tmp_path / "pred" / "case0.nii.gz", _block(), origin=(1.0, 0.0, 0.0))  # overlapping: no warning
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(tmp_path / "e2"),
                                 "--resample", "-q"])
    assert result.exit_code == 0 and "warning" not in result.output, result.output


def test_classes_stored_under_different_values_in_the_two_folders_are_named(tmp_path):
    _write(tmp_path / "gt" / "case0.nii.gz", _block(1))
    _write(tmp_path / "pred" / "case0.nii.gz", _block(255))
    _write(tmp_path / "gt" / "case1.nii.gz", np.zeros(SHAPE, np.uint8))  # both empty: no evidence either way
    _write(tmp_path / "pred" / "case1.nii.gz", np.zeros(SHAPE, np.uint8))
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-q"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert "label value(s) 255 occur only in the predictions and 1 only in the ground truths" in result.output
    _write(tmp_path / "pred" / "case0.nii.gz", _block(1) + (_block(3, shift=6) * (_block(1) == 0)))
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "e2")])  # an extra class alone is no mismatch
    assert result.exit_code == 0 and "only in the" not in result.output, result.output
    _write(tmp_path / "pred" / "case0.nii.gz", _block(255))
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "e3"), "--labels", "1"])  # the classes are given
    assert result.exit_code == 0 and "only in the" not in result.output, result.output


def test_empty_or_negative_option_values_are_refused(tmp_path):
    _write(tmp_path / "gt" / "case0.nii.gz", _block())
    _write(tmp_path / "pred" / "case0.nii.gz", _block(shift=1))
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(tmp_path / "ev"), "-q"]
    for bad in (",,", " ", ""):
        line = one_error_line(runner.invoke(app, [*args, "--metrics", bad]))
        assert "names no metric" in line, bad
    assert "--labels is empty" in one_error_line(runner.invoke(app, [*args, "--labels", ""]))
    for option in (["--jobs", "-3"], ["--empty-both", "foo"]):
        result = runner.invoke(app, [*args, *option])
        assert result.exit_code == 2 and option[0] in result.output and "Traceback" not in result.output
    choices = runner.invoke(app, [*args, "--empty-both", "foo"]).output
    assert all(f"'{rule}'" in choices for rule in ("nan", "best", "worst", "inf"))
    assert not (tmp_path / "ev" / "metrics.csv").exists()


def test_a_prediction_in_a_format_segqc_does_not_read_is_named(tmp_path):
    _write(tmp_path / "gt" / "case0.nii.gz", _block())
    _write(tmp_path / "gt" / "case1.nii.gz", _block())
    _write(tmp_path / "pred" / "case1.nii.gz", _block())
    np.save(tmp_path / "pred" / "case0.npy", _block())
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(tmp_path / "ev"),
                                 "-q"])
    assert result.exit_code == 0, result.output
    assert "case0: no prediction in" in result.output and "case0.npy: not an image format segqc reads" in result.output


# ---- labels and fingerprint -------------------------------------------------------------------

def _scheme(tmp_path: Path) -> Path:
    scheme = tmp_path / "scheme.json"
    scheme.write_text(json.dumps({"labels": {"background": 0, "a": 1, "b": 2}}))
    return scheme


def test_merge_with_a_reference_folder_that_lacks_a_case_fails_that_case(tmp_path):
    for source in ("s1", "s2"):
        for case in ("x", "y"):
            _write(tmp_path / source / f"{case}.nii.gz", _block(1 if source == "s1" else 2, shift=2 * (source == "s2")))
    _write(tmp_path / "refs" / "x.nii.gz", np.zeros(SHAPE, np.uint8))
    args = ["labels", "merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--scheme", str(_scheme(tmp_path)), "-q"]
    result = runner.invoke(app, [*args, "--reference", str(tmp_path / "refs"), "-o", str(tmp_path / "m")])
    assert result.exit_code == 1, result.output
    assert f"error: {tmp_path / 'refs'}: no reference file of case y" in result.output
    assert sorted(p.name for p in (tmp_path / "m" / "merged").iterdir()) == ["x.nii.gz"]
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, [*args, "--reference", str(tmp_path / "empty"), "-o", str(tmp_path / "e")])
    line = one_error_line(empty)
    assert line.startswith(f"error: {tmp_path / 'empty'}: no reference file")


def test_a_volume_reference_with_a_negative_sd_is_refused(tmp_path):
    from segqc.anatomy.check import load_reference
    from segqc.anatomy.scheme import load_scheme

    scheme = load_scheme(str(_scheme(tmp_path)))
    reference = tmp_path / "ref.csv"
    reference.write_text("class,mean_ml,sd_ml\na,10,2\nb,5,-1\n")
    try:
        load_reference(reference, scheme=scheme)
    except Exception as error:  # noqa: BLE001 - the type and the words are what is checked
        assert type(error).__name__ == "InputError"
        assert str(error) == (f"{reference}: sd_ml of 'b' (row 3) is negative: -1; a standard deviation is at "
                              "least 0 (0 or empty: the class is not scored)")
    else:
        raise AssertionError("a negative sd_ml was accepted")
    reference.write_text("class,mean_ml,sd_ml\na,10,2\nb,5,0\n")  # 0: documented as not scored
    assert load_reference(reference, scheme=scheme)["sd_ml"].tolist() == [2.0, 0.0]


def test_labels_quality_refuses_a_pseudo_folder_that_is_the_base_folder(tmp_path):
    _write(tmp_path / "base" / "case0.nii.gz", _block())
    line = one_error_line(runner.invoke(app, ["labels", "quality", str(tmp_path / "base"), str(tmp_path / "base"),
                                              "-o", str(tmp_path / "q"), "-q"]))
    assert line == (f"error: {tmp_path / 'base'}: is the base folder too; give the base labels and the pseudo labels "
                    "in different folders")


def test_fingerprint_warns_when_no_label_map_holds_foreground(tmp_path):
    dataset = _dataset(tmp_path / "ds", foreground=False)
    result = runner.invoke(app, ["fingerprint", str(dataset), "-o", str(tmp_path / "fp.json"), "-q"])
    assert result.exit_code == 0, result.output
    assert "no label map of the dataset holds a foreground voxel" in " ".join(result.output.split())
    result = runner.invoke(app, ["fingerprint", str(_dataset(tmp_path / "ok")), "-o", str(tmp_path / "ok.json"), "-q"])
    assert result.exit_code == 0 and "warning" not in result.output, result.output


def test_a_case_with_an_extra_channel_is_the_one_named(tmp_path):
    dataset = _dataset(tmp_path / "ds")
    _write(dataset / "imagesTr" / "c0_0001.nii.gz", _block().astype(np.float32))
    _write(dataset / "imagesTr" / "c2_0000.nii.gz", _block().astype(np.float32))
    _write(dataset / "labelsTr" / "c2.nii.gz", _block())
    line = one_error_line(runner.invoke(app, ["fingerprint", str(dataset), "-o", str(tmp_path / "fp.json")]))
    assert "case 'c0' has 2 channel(s) but 2 other case(s) have 1" in line


def test_a_broken_yaml_file_is_named_with_the_line_and_column_of_the_problem(tmp_path):
    bad = tmp_path / "scheme.yaml"
    bad.write_text("name: x\nclasses:\n  - {name: a, value: 1\n")
    line = one_error_line(runner.invoke(app, ["labels", "scheme", "show", str(bad)]))
    assert line.startswith(f"error: {bad}: cannot read the label scheme: expected ',' or '}}'")
    assert line.endswith("(line 4, column 1)")


def test_the_demo_refuses_a_named_data_folder_that_is_not_the_dataset_before_it_runs(tmp_path):
    out = tmp_path / "demo"
    line = one_error_line(runner.invoke(app, ["demo", "-o", str(out), "--acdc", str(tmp_path / "typo")]))
    assert line == f"error: {tmp_path / 'typo'}: --acdc: no imagesTr/ folder here; give the dataset's folder"
    other = _dataset(tmp_path / "other")  # a dataset, but not one with the demo's cases
    line = one_error_line(runner.invoke(app, ["demo", "-o", str(out), "--no-qc", "--hc18", str(other)]))
    assert line.startswith(f"error: {other}: --hc18: imagesTr/") and "is missing; the demo uses the cases" in line
    assert not out.exists()
