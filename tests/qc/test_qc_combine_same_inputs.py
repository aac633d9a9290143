"""`segqc qc combine` averages estimates of one segmentation only: runs that checked different
segmentation files under one case id, and a folder given twice, are refused with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from report_folders import one_error_line
from typer.testing import CliRunner

from segqc.cli.main import app

runner = CliRunner()
HEADER = "case,label,label_name,metric,estimate\n"


def _run(folder: Path, estimate: float, seg: Path) -> Path:
    """A hand-made QC folder of case ``a`` whose report records ``seg`` as its segmentation."""
    folder.mkdir(parents=True)
    (folder / "qc.csv").write_text(HEADER + f"a,all,all,dice,{estimate}\n")
    report = {"method": folder.name, "inputs": {"a": {"image": ["/img/a_0000.nii.gz"], "seg": [str(seg)]}}}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_runs_of_different_segmentations_of_one_case_are_refused(tmp_path):
    """Once: a perfect and an empty segmentation of one case, QC'd by two models, were averaged to
    0.5 with spread 0.5 and no word."""
    good, blank = tmp_path / "segA" / "a.nii.gz", tmp_path / "segB" / "a.nii.gz"
    for path, content in ((good, b"good"), (blank, b"blank")):
        path.parent.mkdir()
        path.write_bytes(content)
    one, two = _run(tmp_path / "qcA", 1.0, good), _run(tmp_path / "qcB", 0.0, blank)
    result = runner.invoke(app, ["qc", "combine", str(one), str(two), "-o", str(tmp_path / "out")])
    assert one_error_line(result) == (f"error: {two}: checked another segmentation of case a ({blank}) than {one} "
                                      f"did ({good}); combine runs of the same segmentations")
    assert not (tmp_path / "out" / "qc.csv").exists()


def test_a_copy_of_the_same_segmentation_is_the_same_segmentation(tmp_path):
    """Runs made on two copies of one file (e.g. on two machines) are combined: same content."""
    first, copy = tmp_path / "segA" / "a.nii.gz", tmp_path / "segB" / "a.nii.gz"
    first.parent.mkdir()
    first.write_bytes(b"same")
    copy.parent.mkdir()
    shutil.copyfile(first, copy)
    one, two = _run(tmp_path / "qcA", 0.8, first), _run(tmp_path / "qcB", 0.6, copy)
    result = runner.invoke(app, ["qc", "combine", str(one), str(two), "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output


def test_files_that_are_gone_are_named_in_a_warning(tmp_path):
    """Different recorded paths that no longer exist cannot be compared: combined, with a warning."""
    one = _run(tmp_path / "qcA", 0.8, tmp_path / "gone1" / "a.nii.gz")
    two = _run(tmp_path / "qcB", 0.6, tmp_path / "gone2" / "a.nii.gz")
    result = runner.invoke(app, ["qc", "combine", str(one), str(two), "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    assert ("warning: 1 case(s) (a): the segmentation files the runs recorded differ and are no longer all "
            "readable, so whether the runs checked the same segmentations was not verified") in result.output


def test_the_same_folder_twice_is_refused(tmp_path):
    """Once: accepted, with spread 0 everywhere, as if two methods agreed perfectly."""
    seg = tmp_path / "seg" / "a.nii.gz"
    seg.parent.mkdir()
    seg.write_bytes(b"seg")
    one = _run(tmp_path / "qcA", 0.8, seg)
    link = tmp_path / "link"
    link.symlink_to(one)
    result = runner.invoke(app, ["qc", "combine", str(one), str(link), "-o", str(tmp_path / "out")])
    assert one_error_line(result) == (f"error: {link}: is given twice; combine the runs of different QC models, "
                                      "each once")
