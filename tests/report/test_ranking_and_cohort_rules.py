"""Ranking of models (ranks, ties, Kendall's tau) and the cohort rules of the report: flags,
worklists, folder kinds, label and case order, scores and file look-ups — hand-made folders and
hand-computed expectations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segqc.errors import InputError
from segqc.report.cohort import (
    CaseInputs,
    Cohort,
    case_order,
    detect,
    label_names,
    label_order,
    load_cohort,
    primary_scores,
    read_worklist,
    uncertainty_file,
    use_files,
    worse_is_lower,
)
from segqc.report.ranking import rank_by_estimate


def _touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# ranking


def test_ranks_start_at_one_ties_share_the_lowest_rank_and_tau_is_kendall_b():
    """True Dice 0.9, 0.8, 0.8, 0.7: "min" ranks 1, 2, 2, 4. Estimates all in the same order:
    5 concordant pairs, 0 discordant, one tie in the truth -> tau-b = 5 / sqrt(6 * 5) (hand)."""
    table = pd.DataFrame({"model": list("abcd"), "estimated_dice": [0.65, 0.95, 0.75, 0.85],
                          "true_dice": [0.7, 0.9, 0.8, 0.8]})
    ranking, tau = rank_by_estimate(table)
    assert ranking["model"].tolist() == ["b", "d", "c", "a"]
    assert ranking["rank"].tolist() == [1, 2, 3, 4]
    assert ranking["true_rank"].tolist() == [1, 2, 2, 4]
    assert tau.statistic == pytest.approx(5 / math.sqrt(30))


# ---------------------------------------------------------------------------------------------
# worklists, folder kinds


def test_worklist_flag_yes_is_true(tmp_path):
    """Docstring: flags True/False/1/0/yes/no/empty; "yes" -> True, "no" -> False."""
    path = _touch(tmp_path / "worklist.csv", "case,flag,reason\na,yes,x\nb,no,y\n")
    assert read_worklist(path)["flag"].tolist() == [True, False]


def test_worklist_listing_a_case_twice_is_refused(tmp_path):
    """Docstring: InputError for a case listed twice."""
    path = _touch(tmp_path / "worklist.csv", "case,flag,reason\na,True,x\na,False,y\n")
    with pytest.raises(InputError, match="lists case a more than once"):
        read_worklist(path)


def test_worklist_spread_that_is_no_number_is_refused(tmp_path):
    """Docstring: the *_spread columns are numbers; 'high' is not."""
    path = _touch(tmp_path / "worklist.csv", "case,flag,reason,dice_spread\na,True,x,0.1\nb,False,y,high\n")
    with pytest.raises(InputError, match="dice_spread"):
        read_worklist(path)


def test_pairs_csv_without_a_qc_subfolder_is_not_a_benchmark(tmp_path):
    """A benchmark folder has pairs.csv *and* qc/qc.csv; pairs.csv beside qc.csv is a QC folder."""
    _touch(tmp_path / "pairs.csv")
    _touch(tmp_path / "qc.csv")
    assert detect(tmp_path) == "qc"


def _qc_folder(root: Path, qc_csv: str) -> Path:
    seg = _touch(root / "segs" / "a.nii.gz")
    folder = root / "out"
    _touch(folder / "qc.csv", qc_csv)
    _touch(folder / "report.json", json.dumps({"inputs": {"a": {"seg": [str(seg)]}}}))
    _touch(folder / "errors" / "a.nii.gz")  # an error map only, no pgt/
    return folder


def test_qc_folder_with_an_error_map_and_no_pgt_loads_with_spread_nan(tmp_path):
    """Docstring: reference None for a QC model without pGT, the error map named; no spread column
    -> spread NaN (not 0)."""
    folder = _qc_folder(tmp_path, "case,label,label_name,metric,estimate\na,all,all,dice,0.8\n")
    cohort = load_cohort(folder)
    assert cohort.inputs["a"].ref is None and cohort.inputs["a"].errors == folder / "errors" / "a.nii.gz"
    assert cohort.long["spread"].isna().all()


def test_evaluate_folder_keeps_only_whole_label_rows(tmp_path):
    """metrics.csv rows of single components (component set) are not the case's values."""
    gt = _touch(tmp_path / "gt" / "a.nii.gz")
    folder = tmp_path / "eval"
    _touch(folder / "metrics.csv", "case,label,label_name,component,metric,value\n"
                                   "a,1,liver,,dice,0.9\na,1,liver,1,dice,0.2\n")
    _touch(folder / "summary.json", json.dumps({"cases": {"inputs": {"a": {"gt": [str(gt)]}}}}))
    cohort = load_cohort(folder)
    assert cohort.long["value"].tolist() == [0.9]


# ---------------------------------------------------------------------------------------------
# label and case order, scores, names


def test_labels_sort_all_first_then_numerically_then_by_name():
    """"all", then 2 < 10 as numbers (not as text), then names."""
    assert label_order(["10", "x", "2", "all", "2"]) == ["all", "2", "10", "x"]


def test_an_unknown_metric_counts_low_values_as_bad():
    """Docstring: True for a name the registry does not know."""
    assert worse_is_lower("no_such_metric_xyz") is True


def test_primary_scores_ignore_infinite_label_values():
    """Per-label mean over the finite values only: labels 1 (inf) and 2 (0.4) -> 0.4."""
    long = pd.DataFrame({"case": ["c", "c"], "label": ["1", "2"], "metric": ["dice", "dice"],
                         "estimate": [np.inf, 0.4]})
    assert primary_scores(long, "dice") == {"c": 0.4}


def test_case_order_follows_the_output_then_the_rest_by_id(tmp_path):
    """Docstring: the output's own order (c, a), then the cases it lacks by id (b, d)."""
    inputs = {case: CaseInputs(None, tmp_path / f"{case}.nii.gz", None) for case in ("d", "b", "c", "a")}
    long = pd.DataFrame(columns=["case", "label", "label_name", "metric", "value"])
    cohort = Cohort("check", long, {"value": "value"}, inputs, "", order=["c", "a", "c"])
    assert case_order(cohort) == ["c", "a", "b", "d"]


def test_a_label_without_a_name_is_shown_by_its_label():
    """Docstring: the label itself where the name is missing."""
    long = pd.DataFrame({"label": ["1", "2", "all"], "label_name": ["liver", np.nan, "x"]})
    assert label_names(long) == {"1": "liver", "2": "2", "all": "all classes"}


# ---------------------------------------------------------------------------------------------
# files


def test_uncertainty_in_the_folder_wins_over_the_one_beside_the_segmentation(tmp_path):
    """Docstring: folder/uncertainty/CASE.nii.gz, *else* the one beside the segmentation."""
    seg = _touch(tmp_path / "segs" / "a_seg.nii.gz")
    beside = _touch(tmp_path / "segs" / "uncertainty" / "a_seg.nii.gz")
    mine = _touch(tmp_path / "out" / "uncertainty" / "a.nii.gz")
    assert uncertainty_file(tmp_path / "out", "a", seg) == mine
    mine.unlink()
    assert uncertainty_file(tmp_path / "out", "a", seg) == beside


def test_a_variant_suffix_is_dropped_only_at_the_end_of_the_case_id(tmp_path):
    """Docstring: a case found by its id without a trailing _NN suffix: a_b_01 -> image of a_b."""
    images = tmp_path / "images"
    image = _touch(images / "a_b_0000.nii.gz")
    inputs = {"a_b_01": CaseInputs(None, tmp_path / "seg.nii.gz", None)}
    cohort = Cohort("evaluate", pd.DataFrame(), {"value": "value"}, inputs, "GT")
    use_files(cohort, images=images)
    assert cohort.inputs["a_b_01"].image == image
