"""Rules of combining QC runs: row order, duplicate refusal, warning counts, the flag threshold,
and which run's maps and input files the combined folder takes (hand-made folders)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from segqc.errors import InputError
from segqc.qc.combine import combine_estimates, combine_qc_folders

HEADER = "case,label,label_name,metric,estimate\n"


def _run(folder: Path, rows: str, *, tag: str, inputs: dict[str, object] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "qc.csv").write_text(HEADER + rows)
    (folder / "report.json").write_text(json.dumps({"method": tag, "inputs": inputs or {}}))
    (folder / "pgt").mkdir()
    for case in ("a", "b"):
        (folder / "pgt" / f"{case}.nii.gz").write_text(f"{tag}-{case}")
    return folder


def test_rows_keep_the_order_of_the_first_table():
    """Docstring: rows in the order of the first table (b before a here), mean of 0.6 and 0.8."""
    first = pd.DataFrame({"case": ["b", "a"], "label": ["all", "all"], "label_name": ["all", "all"],
                          "metric": ["dice", "dice"], "estimate": [0.6, 0.9]})
    second = first.assign(estimate=[0.8, 0.7])
    out = combine_estimates([first, second])
    assert out["case"].tolist() == ["b", "a"]
    assert out["estimate"].tolist() == pytest.approx([0.7, 0.8])


def test_a_run_listing_a_case_label_and_metric_twice_is_refused(tmp_path):
    """Duplicated (case, label, metric) in one qc.csv: InputError naming that file."""
    one = _run(tmp_path / "one", "a,all,all,dice,0.8\na,all,all,dice,0.7\n", tag="one")
    two = _run(tmp_path / "two", "a,all,all,dice,0.8\n", tag="two")
    with pytest.raises(InputError, match="more than once"):
        combine_qc_folders([one, two], tmp_path / "out")


def test_combined_folder_rules(tmp_path):
    """Run one: cases a, b (dice + hd95); run two: case a only. Hand expectations: dice of a =
    (0.8 + 0.8)/2 = 0.8 < flag_dice 0.9 -> flagged; the warning counts 2 estimates of 1 case; maps and
    input files come from the first run that has them."""
    rows_one = "a,all,all,dice,0.8\na,all,all,hd95,3.0\nb,all,all,dice,0.9\nb,all,all,hd95,2.0\n"
    one = _run(tmp_path / "one", rows_one, tag="one", inputs={"a": {"seg": ["/one/a.nii.gz"]}})
    two = _run(tmp_path / "two", "a,all,all,dice,0.8\na,all,all,hd95,5.0\n", tag="two",
               inputs={"a": {"seg": ["/two/a.nii.gz"]}})
    out = tmp_path / "out"
    combined, work, report = combine_qc_folders([one, two], out, flag_dice=0.9)
    assert combined["case"].tolist() == ["a", "a"]
    assert work["flag"].tolist() == [True]
    assert any("2 estimates" in w and "1 case(s)" in w for w in report["warnings"]), report["warnings"]
    assert (out / "pgt" / "a.nii.gz").read_text() == "one-a"
    assert report["inputs"] == {"a": {"seg": ["/one/a.nii.gz"]}}
