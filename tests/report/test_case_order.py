"""The worst-first order of a report's and the review's cases, from hand-made tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from segqc.errors import InputError
from segqc.report.cohort import CaseInputs, Cohort, case_order, primary_metric, primary_scores, read_worklist


def _long(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["case", "label", "metric", "value"]).assign(label_name=lambda t: t["label"])


def test_dice_is_the_primary_metric_wherever_it_stands_in_the_table():
    assert primary_metric(_long([("a", "1", "hd95", 3.0), ("a", "1", "dice", 0.9)])) == "dice"
    assert primary_metric(_long([("a", "1", "hd95", 3.0)])) == "hd95"


def test_a_case_without_label_all_scores_its_worst_label():
    """A case with one failed class (myocardium Dice 0.32, the others 0.9) came last of six by the
    mean of its classes; the worst class puts it first, as the README says."""
    long = _long([("a", "1", "dice", 0.2), ("a", "2", "dice", 0.8),
                  ("b", "all", "dice", 0.4), ("b", "1", "dice", 0.9),
                  ("c", "1", "hd95", 3.0), ("c", "2", "hd95", 40.0)])
    assert primary_scores(long, "dice") == {"a": 0.2, "b": 0.4}
    assert primary_scores(long, "hd95") == {"c": 40.0}
    one_failed = _long([("ok", "1", "dice", 0.6), ("ok", "2", "dice", 0.6),
                        ("myo", "1", "dice", 0.32), ("myo", "2", "dice", 0.95)])
    inputs = {case: CaseInputs(None, Path(f"{case}.nii.gz"), None) for case in ("ok", "myo")}
    assert case_order(Cohort("evaluate", one_failed, {"value": "value"}, inputs, "")) == ["myo", "ok"]


def test_cases_without_a_score_come_first_then_the_worst():
    long = _long([("good", "1", "dice", 0.9), ("bad", "1", "dice", 0.3), ("unscored", "1", "dice", float("nan"))])
    inputs = {case: CaseInputs(None, Path(f"{case}.nii.gz"), None) for case in ("good", "bad", "unscored")}
    cohort = Cohort("evaluate", long, {"value": "value"}, inputs, "")
    assert case_order(cohort) == ["unscored", "bad", "good"]


def test_a_worklist_flag_of_two_is_refused_naming_the_line(tmp_path):
    """Flags are True/False/1/0/yes/no or empty: a 2 (or 0.5) is a hand edit gone wrong."""
    for bad in ("2", "0.5"):
        path = tmp_path / f"worklist_{bad}.csv"
        path.write_text(f"case,flag,reason\na,1,low\nb,{bad},x\n")
        with pytest.raises(InputError, match="line 3"):
            read_worklist(path)
    path = tmp_path / "worklist.csv"
    path.write_text("case,flag,reason\na,1,low\nb,0,\n")
    assert read_worklist(path)["flag"].tolist() == [True, False]
