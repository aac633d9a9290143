"""`segqc qc combine`: the mean of several QC runs' estimates, their disagreement as spread.

Expected values are worked out by hand from the hand-made tables; the real-data test combines the
two shipped ACDC models' runs on a real volume and its shifted segmentation."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.qc.combine import combine_estimates

runner = CliRunner()
COLUMNS = ["case", "label", "label_name", "metric", "estimate", "spread", "empty"]


def _table(rows):
    return pd.DataFrame(rows, columns=COLUMNS).astype({"label": str})


def _run_a():
    return _table([("a", "all", "all", "dice", 0.9, 0.0, False), ("a", "1", "RV", "dice", 0.8, 0.0, False),
                   ("a", "1", "RV", "hd95", 4.0, 0.0, False), ("b", "all", "all", "dice", 0.3, 0.0, False),
                   ("b", "1", "RV", "dice", math.nan, 0.0, True), ("c", "all", "all", "dice", 0.5, 0.0, False)])


def _run_b():  # no hd95, no case c; case b's RV not empty in this run
    return _table([("b", "all", "all", "dice", 0.5, 0.1, False), ("b", "1", "RV", "dice", 0.2, 0.0, False),
                   ("a", "1", "RV", "dice", 0.6, 0.0, False), ("a", "all", "all", "dice", 0.7, 0.0, False)])


def test_mean_and_spread_of_the_estimates_every_run_has():
    out = combine_estimates([_run_a(), _run_b()]).set_index(["case", "label", "metric"])
    assert len(out) == 4  # hd95 and case c are not in both runs
    assert out.loc[("a", "all", "dice"), "estimate"] == pytest.approx(0.8)
    assert out.loc[("a", "all", "dice"), "spread"] == pytest.approx(0.1)  # |0.9 - 0.7| / 2
    assert out.loc[("a", "1", "dice"), "estimate"] == pytest.approx(0.7)
    assert out.loc[("b", "all", "dice"), "estimate"] == pytest.approx(0.4)
    assert out.loc[("b", "all", "dice"), "spread"] == pytest.approx(0.1)
    assert math.isnan(out.loc[("b", "1", "dice"), "estimate"])  # one run cannot say: neither can the mean
    assert out.loc[("a", "1", "dice"), "empty"] == False  # noqa: E712 (both runs agree)
    assert out.loc[("b", "1", "dice"), "empty"] is None  # the runs disagree
    assert out.loc[("a", "1", "dice"), "label_name"] == "RV"
    three = combine_estimates([_run_a(), _run_b(), _run_b().assign(estimate=0.0)]).set_index(
        ["case", "label", "metric"])
    assert three.loc[("a", "all", "dice"), "estimate"] == pytest.approx((0.9 + 0.7 + 0.0) / 3)
    assert three.loc[("a", "all", "dice"), "spread"] == pytest.approx(np.std([0.9, 0.7, 0.0]))
    with pytest.raises(ValueError):
        combine_estimates([_run_a()])


def _qc_folder(path, table, method):
    path.mkdir(parents=True)
    table.to_csv(path / "qc.csv", index=False)
    inputs = {case: {"seg": [f"/data/{case}.nii.gz"]} for case in table["case"].unique()}
    (path / "report.json").write_text(json.dumps({"method": method, "model": f"models/{method}", "inputs": inputs}))
    (path / ("pgt" if method == "nnqc" else "errors")).mkdir()
    for case in table["case"].unique():
        (path / ("pgt" if method == "nnqc" else "errors") / f"{case}.nii.gz").write_bytes(method.encode())
    return path


def test_cli_writes_a_qc_folder_worst_first_and_names_what_it_left_out(tmp_path):
    one = _qc_folder(tmp_path / "nnqc", _run_a(), "nnqc")
    two = _qc_folder(tmp_path / "qcr", _run_b(), "qcresunet")
    out = tmp_path / "both"
    result = runner.invoke(app, ["qc", "combine", str(one), str(two), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "not in every run left out" in result.output and "hd95" in result.output
    work = pd.read_csv(out / "worklist.csv")
    assert list(work["case"]) == ["b", "a"]  # worst first: 0.4, 0.8
    assert list(work["flag"]) == [True, False]
    report = json.loads((out / "report.json").read_text())
    assert [r["method"] for r in report["combined"]] == ["nnqc", "qcresunet"]
    assert set(report["inputs"]) == {"a", "b"}  # case c was not in both runs
    assert (out / "pgt" / "a.nii.gz").read_bytes() == b"nnqc"
    assert (out / "errors" / "b.nii.gz").read_bytes() == b"qcresunet"
    assert not (out / "pgt" / "c.nii.gz").exists()


def test_bad_inputs_get_one_line(tmp_path):
    one = _qc_folder(tmp_path / "nnqc", _run_a(), "nnqc")
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["qc", "combine", str(one), str(tmp_path / "empty"), "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "no qc.csv" in result.output and "Traceback" not in result.output
    other = _qc_folder(tmp_path / "other", _run_a().assign(case=lambda t: "z" + t["case"]), "qcresunet")
    result = runner.invoke(app, ["qc", "combine", str(one), str(other), "-o", str(tmp_path / "y")])
    assert result.exit_code == 2 and "share no case" in result.output
    result = runner.invoke(app, ["qc", "combine", str(one), "-o", str(tmp_path / "z")])
    assert result.exit_code == 2 and "at least two" in result.output
    result = runner.invoke(app, ["qc", "combine", str(one), str(one), "-o", str(one)])
    assert result.exit_code == 2 and "one of the QC folders" in result.output


def test_a_rerun_into_the_same_output_keeps_no_maps_of_the_earlier_inputs(tmp_path):
    """Once: combining runs without maps into the folder of an earlier combination left its pgt/
    and errors/ maps there while report.json said "maps": [] (a report or review showed them)."""
    out = tmp_path / "both"
    first = [_qc_folder(tmp_path / "nnqc", _run_a(), "nnqc"), _qc_folder(tmp_path / "qcr", _run_b(), "qcresunet")]
    assert runner.invoke(app, ["qc", "combine", *map(str, first), "-o", str(out), "-q"]).exit_code == 0
    assert (out / "pgt" / "a.nii.gz").is_file() and (out / "errors" / "b.nii.gz").is_file()

    plain = [_qc_folder(tmp_path / "p1", _run_a(), "nnqc"), _qc_folder(tmp_path / "p2", _run_b(), "qcresunet")]
    for folder in plain:
        for kind in ("pgt", "errors"):
            shutil.rmtree(folder / kind, ignore_errors=True)
    result = runner.invoke(app, ["qc", "combine", *map(str, plain), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["maps"] == []
    assert not (out / "pgt").exists() and not (out / "errors").exists()

    other = [_qc_folder(tmp_path / name, _run_a().assign(case=lambda t: "z" + t["case"]), "nnqc")
             for name in ("o1", "o2")]
    assert runner.invoke(app, ["qc", "combine", *map(str, first), "-o", str(out), "-q"]).exit_code == 0
    assert runner.invoke(app, ["qc", "combine", *map(str, other), "-o", str(out), "-q"]).exit_code == 0
    # the cases of these inputs only, not a or b of the first ones
    assert sorted(p.name for p in (out / "pgt").iterdir()) == ["za.nii.gz", "zb.nii.gz", "zc.nii.gz"]
    assert not (out / "errors").exists()
    assert json.loads((out / "report.json").read_text())["maps"] == ["pgt"]


def test_an_estimate_that_is_not_a_number_names_the_file_and_the_column(tmp_path):
    """Once: `error: could not convert string to float: 'abc'`, naming neither file nor column."""
    one = _qc_folder(tmp_path / "nnqc", _run_a(), "nnqc")
    table = _run_b().astype({"estimate": object})
    table.loc[1, "estimate"] = "abc"
    two = _qc_folder(tmp_path / "qcr", table, "qcresunet")
    result = runner.invoke(app, ["qc", "combine", str(one), str(two), "-o", str(tmp_path / "both")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {two / 'qc.csv'}: column 'estimate' holds 'abc' on line 3 (case "
                      f"{table.loc[1, 'case']}), not a number"], result.output


def test_the_shipped_models_combined_on_a_real_volume(shared_data, tmp_path):
    """nnQC and QCResUNet (both shipped) on a real ACDC volume: the combined estimate of each
    case is the mean of the two runs' (read back from their own files), the perfect segmentation
    stays ahead of the shifted one, and the combined folder is a QC folder `segqc report` reads."""
    from pathlib import Path

    from segqc.io.images import read_label_map, write_image
    from segqc.qc.inference import QcSettings, qc_folder
    from segqc.report.cohort import load_cohort

    acdc = shared_data("acdc")
    models = Path(__file__).resolve().parents[2] / "models"
    case = "ACDC_patient002_frame01"
    gt = read_label_map(acdc / "labelsTr" / f"{case}.nii.gz")
    (tmp_path / "images").mkdir()
    for name, array in {"perfect": gt.array, "shifted": np.roll(gt.array, 20, axis=0)}.items():
        shutil.copy(acdc / "imagesTr" / f"{case}_0000.nii.gz", tmp_path / "images" / f"{name}_0000.nii.gz")
        write_image(tmp_path / "segs" / f"{name}.nii.gz", array, gt.geometry)
    settings = QcSettings(metrics=("dice", "nsd"))
    runs = [qc_folder(models / m, tmp_path / "images", tmp_path / "segs", tmp_path / m, settings=settings)[0]
            for m in ("acdc-nnqc-small", "acdc-qcresunet-small")]
    result = runner.invoke(app, ["qc", "combine", str(tmp_path / "acdc-nnqc-small"),
                                 str(tmp_path / "acdc-qcresunet-small"), "-o", str(tmp_path / "both"), "-q"])
    assert result.exit_code == 0, result.output
    both = pd.read_csv(tmp_path / "both" / "qc.csv", dtype={"label": str}).set_index(["case", "label", "metric"])
    first, second = (r.set_index(["case", "label", "metric"])["estimate"] for r in runs)
    assert len(both) == 16  # 2 cases x (all + 3 classes) x (dice, nsd)
    for key, row in both.iterrows():
        assert row["estimate"] == pytest.approx((first[key] + second[key]) / 2)
        assert row["spread"] == pytest.approx(abs(first[key] - second[key]) / 2)
    assert both.loc[("perfect", "all", "dice"), "estimate"] > both.loc[("shifted", "all", "dice"), "estimate"] + 0.3
    cohort = load_cohort(tmp_path / "both")
    assert set(cohort.inputs) == {"perfect", "shifted"}
    assert all(files.ref is not None for files in cohort.inputs.values())  # nnQC's pseudo ground truths


def test_an_empty_tag_missing_in_one_run_is_not_agreement():
    """A tag read back as NaN (no rule applied) in one run and "gt_empty:worst" in the other:
    the runs disagree, so the combined tag is None, not the one run's tag."""
    first = _table([("a", "1", "RV", "dice", 0.0, 0.0, "gt_empty:worst")])
    second = _table([("a", "1", "RV", "dice", 0.1, 0.0, math.nan)])
    out = combine_estimates([first, second])
    assert out["empty"].tolist() == [None]
    same = combine_estimates([first, first])
    assert same["empty"].tolist() == ["gt_empty:worst"]
