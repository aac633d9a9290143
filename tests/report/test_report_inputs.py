"""What `segqc report` and the review worklist do with output folders that are not what a segqc run
left: relative paths, files on another grid, NaN images, malformed JSON and CSV, hand-edited flags,
and output paths that cannot be written. Every bad input is one `error:` line naming the file;
expected files and values come from the test's own files, read with nibabel / pandas / json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel
import numpy as np
import pandas as pd
import pytest
from report_folders import copy_evaluate, one_error_line
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.errors import InputError
from segqc.report.cohort import load_cohort
from segqc.report.html import build_report
from segqc.review.worklist import load_worklist

runner = CliRunner()


def _edit_summary(folder: Path, edit) -> Path:
    path = folder / "summary.json"
    summary = json.loads(path.read_text())
    edit(summary["cases"]["inputs"])
    path.write_text(json.dumps(summary))
    return path


def _copy_with_cell(source: Path, folder: Path, table_name: str, row, column: str, value: str) -> Path:
    """``source`` copied to ``folder`` with one cell of the CSV ``table_name`` replaced (``row``: a
    row label, or anything ``DataFrame.loc`` takes, e.g. a callable)."""
    shutil.copytree(source, folder)
    table = pd.read_csv(folder / table_name, dtype=str, keep_default_na=False)
    table.loc[row, column] = value
    table.to_csv(folder / table_name, index=False)
    return folder


def _images_like(toy: dict[str, Path], out_file: Path, *, origin=None, shape=None, nan_case: str | None = None) -> Path:
    """The toy images rewritten: moved to ``origin`` (mm), cropped to ``shape``, or with one NaN
    voxel in ``nan_case``."""
    out_file.mkdir()
    for path in sorted(toy["images"].glob("*.nii.gz")):
        image = nibabel.load(path)
        array = np.asarray(image.dataobj, dtype=np.float32)
        affine = image.affine.copy()
        if origin is not None:
            affine[:3, 3] = origin
        if shape is not None:
            array = array[tuple(slice(0, s) for s in shape)]
        if nan_case is not None and path.name.startswith(nan_case + "_"):
            array[3, 3, 1] = np.nan
        nibabel.save(nibabel.Nifti1Image(array, affine), out_file / path.name)
    return out_file


# ---- recorded input paths -----------------------------------------------------------------------


def test_outputs_name_absolute_files_so_report_and_review_find_them_from_anywhere(toy, tmp_path, monkeypatch):
    from segqc.evaluation.evaluate import evaluate_folder

    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    shutil.copytree(toy["segs"], run_dir / "pred")
    shutil.copytree(toy["gt"], run_dir / "gt")
    # another folder with files of the same relative names but other contents (empty masks)
    for name in ("pred", "gt"):
        (elsewhere / name).mkdir(parents=True)
        for path in (run_dir / name).glob("*.nii.gz"):
            image = nibabel.load(path)
            empty = nibabel.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine)
            nibabel.save(empty, elsewhere / name / path.name)
    monkeypatch.chdir(run_dir)
    evaluate_folder("pred", "gt", "out", metrics=("dice",))
    summary = json.loads((run_dir / "out" / "summary.json").read_text())
    assert summary["cases"]["inputs"]["case1"] == {"pred": [str(run_dir / "pred" / "case1.nii.gz")],
                                                   "gt": [str(run_dir / "gt" / "case1.nii.gz")]}
    monkeypatch.chdir(elsewhere)
    cohort = load_cohort(run_dir / "out")
    assert cohort.inputs["case1"].seg == run_dir / "pred" / "case1.nii.gz"
    assert cohort.inputs["case1"].ref == run_dir / "gt" / "case1.nii.gz"
    case = load_worklist(run_dir / "out").get("case1")
    assert case is not None and case.files["segmentation"] == run_dir / "pred" / "case1.nii.gz"


def test_a_relative_path_of_an_older_output_is_refused_not_resolved_from_here(evaluate_out, toy, tmp_path,
                                                                             monkeypatch):
    """Outputs of an older segqc recorded paths relative to the folder they ran from; resolved
    from wherever the report runs, they named other files (another run's, of the same names)."""
    folder = copy_evaluate(evaluate_out, toy, tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    summary["cases"]["inputs"]["case1"]["pred"] = ["pred/case1.nii.gz"]
    (folder / "summary.json").write_text(json.dumps(summary))
    monkeypatch.chdir(tmp_path)  # where pred/case1.nii.gz exists
    line = one_error_line(runner.invoke(app, ["report", str(folder), "-o", str(tmp_path / "r.html"), "-q"]))
    assert line.startswith(f"error: {folder / 'summary.json'}:") and "relative path (pred/case1.nii.gz)" in line
    with pytest.raises(InputError, match="relative path"):
        load_worklist(folder)


# ---- grids and NaN ------------------------------------------------------------------------------


def test_an_image_on_another_grid_of_the_same_shape_is_one_error_naming_the_image(evaluate_out, toy, tmp_path):
    moved = _images_like(toy, tmp_path / "moved", origin=(-40.0, 12.0, 7.5))
    with pytest.raises(InputError, match="grid") as caught:
        build_report(evaluate_out, tmp_path / "r.html", images=moved)
    assert str(moved) in str(caught.value) and "origin" in str(caught.value)
    assert not (tmp_path / "r.html").exists()


def test_an_image_of_another_shape_is_named_not_the_segmentation(evaluate_out, toy, tmp_path):
    cropped = _images_like(toy, tmp_path / "cropped", shape=(36, 40, 6))
    line = one_error_line(runner.invoke(app, ["report", str(evaluate_out), "--images", str(cropped),
                                               "-o", str(tmp_path / "r.html"), "-q"]))
    assert line.startswith(f"error: {cropped}/case") and "shape" in line and "(36, 40, 6)" in line


def test_a_reference_on_another_grid_is_one_error_in_the_report(evaluate_out, toy, tmp_path):
    folder = copy_evaluate(evaluate_out, toy, tmp_path)
    gt = tmp_path / "gt" / "case2.nii.gz"
    image = nibabel.load(gt)
    affine = image.affine.copy()
    affine[0, 0] *= 2.0  # same voxels, twice the spacing along the first axis
    nibabel.save(nibabel.Nifti1Image(np.asarray(image.dataobj), affine), gt)
    line = one_error_line(runner.invoke(app, ["report", str(folder), "-o", str(tmp_path / "r.html"), "-q"]))
    assert line.startswith(f"error: {gt}:") and "spacing" in line


def test_report_jobs_option_draws_the_same_pages(evaluate_out, tmp_path):
    """`--jobs` reaches the picture pool: one process and two give the same page."""
    pages = []
    for jobs in ("1", "2"):
        target = tmp_path / f"r{jobs}.html"
        result = runner.invoke(app, ["report", str(evaluate_out), "-o", str(target), "-q", "--jobs", jobs])
        assert result.exit_code == 0, result.output
        pages.append(target.read_text())
    assert pages[0] == pages[1]


def test_a_nan_image_is_refused_not_drawn_as_zero(evaluate_out, toy, tmp_path):
    with_nan = _images_like(toy, tmp_path / "nan", nan_case="case1")
    line = one_error_line(runner.invoke(app, ["report", str(evaluate_out), "--images", str(with_nan),
                                               "-o", str(tmp_path / "r.html"), "-q"]))
    assert line.startswith(f"error: {with_nan / 'case1_0000.nii.gz'}:") and "NaN" in line


def test_a_nan_uncertainty_map_is_refused_not_drawn(evaluate_out, toy, tmp_path):
    """An entropy map with a NaN voxel was drawn (NaN as the lowest colour) and its maximum
    taken over the other voxels: a broken file looked like a confident model."""
    folder = copy_evaluate(evaluate_out, toy, tmp_path)
    seg = nibabel.load(tmp_path / "pred" / "case1.nii.gz")
    entropy = np.full(seg.shape, 0.2, np.float32)
    entropy[3, 3, 1] = np.nan
    (tmp_path / "pred" / "uncertainty").mkdir()
    target = tmp_path / "pred" / "uncertainty" / "case1.nii.gz"
    nibabel.save(nibabel.Nifti1Image(entropy, seg.affine), target)
    line = one_error_line(runner.invoke(app, ["report", str(folder), "-o", str(tmp_path / "r.html"), "-q"]))
    assert line.startswith(f"error: {target}:") and "NaN" in line


# ---- malformed summary.json / report.json ---------------------------------------------------------


@pytest.mark.parametrize(("edit", "why"), [
    (lambda inputs: inputs.__setitem__("case1", ["pred.nii.gz", "gt.nii.gz"]), "as list"),
    (lambda inputs: inputs["case1"].__setitem__("gt", "/"), "gt file"),
    (lambda inputs: inputs["case1"].__setitem__("gt", [None]), "gt file"),
    (lambda inputs: inputs["case1"].__setitem__("pred", {"0": "x"}), "pred file"),
    (lambda inputs: inputs["case1"].pop("gt"), "names no gt file"),
], ids=["case-a-list", "gt-a-string", "gt-none", "pred-a-mapping", "gt-missing"])
def test_a_malformed_inputs_entry_is_one_error_naming_summary_json(evaluate_out, tmp_path, edit, why):
    folder = tmp_path / "ev"
    shutil.copytree(evaluate_out, folder)
    summary = _edit_summary(folder, edit)
    with pytest.raises(InputError, match=why) as caught:
        load_cohort(folder)
    assert caught.value.path == summary
    line = one_error_line(runner.invoke(app, ["report", str(folder), "-o", str(tmp_path / "r.html"), "-q"]))
    assert line.startswith(f"error: {summary}:") and "case1" in line


@pytest.mark.parametrize("cases", [["case1"], "case1", None])
def test_a_summary_whose_cases_are_no_mapping_is_one_error(evaluate_out, tmp_path, cases):
    folder = tmp_path / "ev"
    shutil.copytree(evaluate_out, folder)
    summary = json.loads((folder / "summary.json").read_text())
    summary["cases"] = cases
    (folder / "summary.json").write_text(json.dumps(summary))
    line = one_error_line(runner.invoke(app, ["report", str(folder), "-o", str(tmp_path / "r.html"), "-q"]))
    assert line.startswith(f"error: {folder / 'summary.json'}: names no input files")


@pytest.mark.parametrize("entry", ["seg.nii.gz", ["seg.nii.gz"], {"seg": "/"}, {"seg": [3]}])
def test_a_malformed_report_json_entry_is_one_error_naming_it(qc_out, tmp_path, entry):
    folder = tmp_path / "qc"
    shutil.copytree(qc_out, folder)
    report = json.loads((folder / "report.json").read_text())
    report["inputs"]["case2"] = entry
    (folder / "report.json").write_text(json.dumps(report))
    line = one_error_line(runner.invoke(app, ["report", str(folder), "-o", str(tmp_path / "r.html"), "-q"]))
    assert line.startswith(f"error: {folder / 'report.json'}:") and "case2" in line
    with pytest.raises(InputError, match="report.json"):
        load_worklist(folder)


# ---- malformed tables ---------------------------------------------------------------------------


def test_a_value_that_is_not_a_number_is_one_error_naming_metrics_csv_and_the_column(evaluate_out, tmp_path):
    folder = _copy_with_cell(evaluate_out, tmp_path / "ev", "metrics.csv", 3, "value", "abc")
    line = one_error_line(runner.invoke(app, ["report", str(folder), "-o", str(tmp_path / "r.html"), "-q"]))
    assert line.startswith(f"error: {folder / 'metrics.csv'}:") and "'value'" in line and "'abc'" in line
    assert "line 5" in line  # header is line 1, row 3 of the table is line 5
    with pytest.raises(InputError, match="metrics.csv"):
        load_worklist(folder)  # review refuses it too, instead of showing the case without a value


def test_an_estimate_that_is_not_a_number_is_one_error_naming_qc_csv(qc_out, tmp_path):
    folder = _copy_with_cell(qc_out, tmp_path / "qc", "qc.csv", 0, "estimate", "0.9x")
    with pytest.raises(InputError, match="'estimate'") as caught:
        load_worklist(folder)
    assert caught.value.path == folder / "qc.csv"


@pytest.mark.parametrize("kind", ["evaluate", "qc"])
def test_a_table_with_a_header_only_holds_no_cases(evaluate_out, qc_out, tmp_path, kind):
    source, table_name = (evaluate_out, "metrics.csv") if kind == "evaluate" else (qc_out, "qc.csv")
    folder = tmp_path / kind
    shutil.copytree(source, folder)
    header = (folder / table_name).read_text().splitlines()[0]
    (folder / table_name).write_text(header + "\n")
    line = one_error_line(runner.invoke(app, ["report", str(folder), "-o", str(tmp_path / "r.html"), "-q"]))
    assert line == f"error: {folder / table_name}: holds no cases"
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(InputError, match="holds no cases"):
        load_worklist(folder)


# ---- hand-edited worklist.csv -------------------------------------------------------------------


def test_an_empty_flag_cell_is_not_a_flag(qc_out, tmp_path):
    work = pd.read_csv(qc_out / "worklist.csv", dtype={"case": str})
    flagged = list(work.loc[work["flag"], "case"])
    assert flagged, "the fixture flags some case"
    emptied = flagged[0]
    folder = _copy_with_cell(qc_out, tmp_path / "qc", "worklist.csv", lambda cells: cells["case"] == emptied,
                             "flag", "")
    assert f"{emptied},".encode() in (folder / "worklist.csv").read_bytes()
    expected = {case: case in flagged and case != emptied for case in work["case"]}
    assert {case.id: case.flagged for case in load_worklist(folder).cases} == expected
    html = build_report(folder, tmp_path / "r.html").read_text()
    rows_flagged = {case: f'<tr data-case="{case}" class=flagged>' in html for case in work["case"]}
    assert rows_flagged == expected


def test_a_flag_that_is_neither_true_nor_false_is_one_error(qc_out, tmp_path):
    folder = _copy_with_cell(qc_out, tmp_path / "qc", "worklist.csv", 1, "flag", "maybe")
    with pytest.raises(InputError, match="'maybe' on line 3") as caught:
        load_worklist(folder)
    assert caught.value.path == folder / "worklist.csv"


# ---- output paths -------------------------------------------------------------------------------


def test_an_output_that_is_a_folder_is_named_not_a_temporary_file(qc_out, tmp_path):
    out_file = tmp_path / "existing_folder"
    out_file.mkdir()
    line = one_error_line(runner.invoke(app, ["report", str(qc_out), "-o", str(out_file), "-q"]))
    assert line == f"error: {out_file}: is a folder; give a file name"
    assert list(out_file.iterdir()) == [] and not list(tmp_path.glob(".tmp-*"))


def test_an_output_below_a_file_is_named_with_that_parent(qc_out, tmp_path):
    blocker = tmp_path / "some_file"
    blocker.write_text("keep me")
    out_file = blocker / "x.html"
    line = one_error_line(runner.invoke(app, ["report", str(qc_out), "-o", str(out_file), "-q"]))
    assert line.startswith(f"error: {out_file}:") and f"its parent {blocker} is a file" in line
    assert blocker.read_text() == "keep me"


def test_images_of_an_evaluation_of_degraded_segmentations_are_found_through_its_references(toy, tmp_path):
    """Once: `report --images` refused an evaluation of a `segqc degrade` folder ("holds no image of
    case 'case0__b1_k0'"): the image is that of the case whose ground truth the row was scored on."""
    degraded, evaluated = tmp_path / "degraded", tmp_path / "evaluated"
    assert runner.invoke(app, ["degrade", str(toy["gt"]), "-o", str(degraded), "-n", "1", "--bins", "0.3,0.9",
                               "--no-image-check", "-q"]).exit_code == 0
    assert runner.invoke(app, ["evaluate", str(degraded), str(toy["gt"]), "-o", str(evaluated), "--metrics",
                               "dice", "-q"]).exit_code == 0
    cohort = load_cohort(evaluated)
    assert cohort.inputs and all("__" in case for case in cohort.inputs)
    from segqc.report.cohort import use_files

    use_files(cohort, images=toy["images"])
    for case, inputs in cohort.inputs.items():
        assert inputs.image == toy["images"] / f"{case.split('__')[0]}_0000.nii.gz"
    result = runner.invoke(app, ["report", str(evaluated), "--images", str(toy["images"]), "-o",
                                 str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("where", ["gt", "segs", "images"])
def test_a_report_written_into_a_folder_it_reads_is_refused(evaluate_out, toy, tmp_path, where):
    """`report -o GT_DIR/r.html` (or into the segmentations or `--images` folder) wrote the page
    among the files a later run reads as cases."""
    output = toy[where] / "r.html"
    result = runner.invoke(app, ["report", str(evaluate_out), "--images", str(toy["images"]), "-o", str(output),
                                 "-q"])
    assert one_error_line(result) == (f"error: {output}: lies in the input folder {toy[where]}; write the output "
                                      "into another folder")
    assert not output.exists()
    fine = tmp_path / "r.html"
    assert runner.invoke(app, ["report", str(evaluate_out), "--images", str(toy["images"]), "-o", str(fine),
                               "-q"]).exit_code == 0 and fine.is_file()
