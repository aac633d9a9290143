"""``segqc evaluate-raters`` and the multi-rater folder layout: hand-made cases, bad input, real LIDC."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.errors import InputError
from segqc.evaluation.raters import evaluate_raters
from segqc.io.geometry import Geometry
from segqc.io.images import write_image
from segqc.io.raters import find_rater_cases

A = np.array([[1, 1, 0, 0]] * 2, dtype=np.uint8)  # IoU(A, B) = 1/3 (per row, so also on the 2 x 4 map)
B = np.array([[0, 1, 1, 0]] * 2, dtype=np.uint8)


def _write(path: Path, array: np.ndarray, spacing=(1.0, 1.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, array, Geometry(shape=array.shape, spacing=spacing, origin=(0.0, 0.0),
                                      direction=(1.0, 0.0, 0.0, 1.0)))


def _value(table, case: str, metric: str) -> float:
    row = table[(table["case"] == case) & (table["metric"] == metric)]
    return float(row["value"].iloc[0])


def _toy(tmp_path: Path) -> tuple[Path, Path]:
    raters, pred = tmp_path / "raters", tmp_path / "pred"
    for k, mask in enumerate([A, B], start=1):  # case one: raters A and B
        _write(raters / "one" / f"rater_{k}.nii.gz", mask)
        _write(pred / "samples" / f"one_{k - 1:02d}.nii.gz", mask)  # samples = the raters
    for k, mask in enumerate([A, B], start=1):  # case two: same raters, one label map A
        _write(raters / "two" / f"rater_{k}.nii.gz", mask)
    _write(raters / "two" / "image.nii.gz", A.astype(np.float32))
    _write(pred / "two.nii.gz", A)
    return pred, raters


def test_samples_equal_to_the_raters_and_a_single_label_map_by_hand(tmp_path):
    pred, raters = _toy(tmp_path)
    table, summary, report = evaluate_raters(pred, raters, tmp_path / "out")
    assert report.done == ["one", "two"] and not report.failed
    assert _value(table, "one", "ged2") == pytest.approx(0.0)
    assert _value(table, "one", "hm_iou") == pytest.approx(1.0)
    assert _value(table, "one", "soft_dice") == pytest.approx(1.0)
    assert _value(table, "one", "diversity") == pytest.approx(2 / 3)
    # case two: one sample A vs raters {A, B}: 2 * (0 + 2/3)/2 - 0 - (2/3 + 2/3)/4
    assert _value(table, "two", "ged2") == pytest.approx(1 / 3)
    assert _value(table, "two", "hm_iou") == pytest.approx((1 + 1 / 3) / 2)
    assert np.isnan(_value(table, "two", "diversity"))
    # volumes: sample 4 px; raters 4 and 4 px -> CRPS 0; majority (>= 1 of 2) = A ∪ B (6 px) vs A (4 px)
    assert _value(table, "two", "volume_crps") == pytest.approx(0.0)
    assert _value(table, "two", "dice_majority") == pytest.approx(2 * 4 / (6 + 4))
    assert set(table["n_raters"]) == {2}
    assert summary["metrics"]["ged2"]["mean"] == pytest.approx(1 / 6)
    with open(tmp_path / "out" / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == len(table)


def test_a_soft_map_replaces_the_mean_of_the_samples(tmp_path):
    pred, raters = _toy(tmp_path)
    _write(pred / "probabilities" / "two_1.nii.gz", (A + B).astype(np.float32) / 2)  # the rater mean itself
    table, _, _ = evaluate_raters(pred, raters, None)
    assert _value(table, "two", "soft_dice") == pytest.approx(1.0)
    assert _value(table, "two", "ece") == pytest.approx(0.0)


def test_a_changed_prediction_is_recomputed_on_rerun(tmp_path):
    pred, raters = _toy(tmp_path)
    first, _, _ = evaluate_raters(pred, raters, tmp_path / "out")
    _write(pred / "two.nii.gz", np.zeros_like(A))  # regenerated in place: Dice with the majority 0.8 -> 0
    second, _, report = evaluate_raters(pred, raters, tmp_path / "out")
    assert report.reused == ["one"]
    assert _value(first, "two", "dice_majority") != _value(second, "two", "dice_majority")


def test_bad_rater_folders_are_one_clear_error(tmp_path):
    _write(tmp_path / "gap" / "c" / "rater_1.nii.gz", A)
    _write(tmp_path / "gap" / "c" / "rater_3.nii.gz", A)
    with pytest.raises(InputError, match="rater_2 is missing"):
        find_rater_cases(tmp_path / "gap")
    (tmp_path / "none" / "c").mkdir(parents=True)
    with pytest.raises(InputError, match="no rater_1"):
        find_rater_cases(tmp_path / "none")
    _write(tmp_path / "twice" / "c" / "rater_1.nii.gz", A)
    _write(tmp_path / "twice" / "c" / "rater_1.nrrd", A)
    with pytest.raises(InputError, match="stored twice"):
        find_rater_cases(tmp_path / "twice")


def test_cli_names_the_file_of_a_bad_case_and_evaluates_the_rest(tmp_path):
    pred, raters = _toy(tmp_path)
    _write(raters / "two" / "rater_2.nii.gz", np.zeros((3, 4), dtype=np.uint8))  # another shape
    _write(raters / "three" / "rater_1.nii.gz", A)  # no prediction
    result = CliRunner().invoke(app, ["evaluate-raters", str(pred), str(raters), "-o", str(tmp_path / "o"), "-q"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "rater_2.nii.gz" in result.output and "shape" in result.output
    assert "no prediction of case three" in result.output
    assert "1 of 3 case(s) done" in result.output


@pytest.mark.parametrize(("role", "geometry", "words"), [
    ("label", {"spacing": (0.5, 1.0)}, ["spacing (0.5, 1.0) mm", "(1.0, 1.0) mm"]),
    ("label", {"direction": (-1.0, 0.0, 0.0, 1.0)}, ["orientation"]),
    ("label", {"origin": (0.0, 40.0)}, ["origin (0.0, 40.0) mm", "(0.0, 0.0) mm"]),
    ("samples", {"spacing": (2.0, 2.0)}, ["spacing (2.0, 2.0) mm"]),
    ("soft", {"spacing": (1.0, 3.0)}, ["soft map", "spacing (1.0, 3.0) mm"]),
])
def test_a_prediction_off_the_raters_grid_fails_naming_the_file_and_what_differs(tmp_path, role, geometry, words):
    """Once: predictions and soft maps of another spacing, orientation or origin than the raters'
    masks were scored voxel by voxel (only the shape was compared)."""
    pred, raters = _toy(tmp_path)
    grid = {"shape": A.shape, "spacing": (1.0, 1.0), "origin": (0.0, 0.0), "direction": (1.0, 0.0, 0.0, 1.0),
            **geometry}
    if role == "label":
        path, array = pred / "two.nii.gz", A
    elif role == "samples":
        path, array = pred / "samples" / "one_01.nii.gz", B
    else:
        path, array = pred / "soft" / "two.nii.gz", (A + B).astype(np.float32) / 2
    write_image(path, array, Geometry(**grid))
    result = CliRunner().invoke(app, ["evaluate-raters", str(pred), str(raters), "-o", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {path}: "), result.output
    assert "rater_1.nii.gz" in errors[0] and all(word in errors[0] for word in words), errors[0]
    assert "1 of 2 case(s) done" in result.output and "Traceback" not in result.output


def test_no_prediction_for_any_case_is_one_line_and_exit_2(tmp_path):
    """Once: a prediction folder matching no case gave one error line per case and exit 1 (672
    lines on LIDC), where `segqc evaluate` says it in one line."""
    _, raters = _toy(tmp_path)
    _write(raters / "three" / "rater_1.nii.gz", A)
    other = tmp_path / "other"
    _write(other / "unrelated.nii.gz", A)
    result = CliRunner().invoke(app, ["evaluate-raters", str(other), str(raters), "-o", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {other}: no prediction matches any of the 3 case(s) of {raters} (e.g. case one: "
                      f"no one.* and no samples/one_00.*)"], result.output
    with pytest.raises(InputError, match="no prediction matches any"):
        evaluate_raters(other, raters, None)


@pytest.mark.parametrize(("bad", "words"), [(2.0, "[0, 1]"), (np.nan, "NaN")])
def test_soft_map_outside_the_unit_interval_is_refused(tmp_path, bad, words):
    pred, raters = _toy(tmp_path)
    soft = A.astype(np.float32)
    soft.flat[0] = bad
    _write(pred / "soft" / "two.nii.gz", soft)
    _, _, report = evaluate_raters(pred, raters, None)
    assert "two" in report.failed and words in report.failed["two"], report.failed


def test_real_lidc_raters_as_samples_score_perfectly_and_the_consensus_does_not(tmp_path, shared_data):
    """Real LIDC slices with 2, 3 and 4 readers (one with an empty reader mask): the readers'
    own masks as samples give GED 0 and HM-IoU 1; the single consensus mask does not."""
    root = shared_data("lidc/cases")
    rows = list(csv.DictReader(open(root.parent / "cases.csv")))
    chosen = []
    for n in ("2", "3", "4"):
        chosen.append(next(r for r in rows if r["n_raters"] == n and r["n_raters_nonempty"] == n))
    chosen.append(next(r for r in rows if int(r["n_raters_nonempty"]) < int(r["n_raters"])))
    perfect, single = tmp_path / "perfect", tmp_path / "single"
    for row in chosen:
        case = row["case"]
        for k, rater in enumerate(sorted((root / case).glob("rater_*.nii.gz"))):
            (perfect / "samples").mkdir(parents=True, exist_ok=True)
            shutil.copy(rater, perfect / "samples" / f"{case}_{k:02d}.nii.gz")
        single.mkdir(exist_ok=True)
        shutil.copy(root / case / "consensus.nii.gz", single / f"{case}.nii.gz")
    cases = [r["case"] for r in chosen]
    good, _, _ = evaluate_raters(perfect, root, None, cases=cases)
    bad, _, _ = evaluate_raters(single, root, None, cases=cases)
    for row in chosen:
        case = row["case"]
        assert int(good[good["case"] == case]["n_raters"].iloc[0]) == int(row["n_raters"])
        assert _value(good, case, "ged2") == pytest.approx(0.0, abs=1e-12)
        assert _value(good, case, "hm_iou") == pytest.approx(1.0)
        assert _value(good, case, "dice_majority") == pytest.approx(1.0)
        assert _value(bad, case, "hm_iou") <= 1.0
    disagree = [r["case"] for r in chosen if _value(good, r["case"], "rater_diversity") > 0]
    assert disagree and all(_value(bad, c, "ged2") > 0.0 for c in disagree)


def test_named_raters_are_ordered_by_name_and_numbered_ones_by_number(tmp_path):
    for name in ("rater_Person2_ImageJ.nii.gz", "rater_Person1_Amira.nii.gz", "rater_Person1_ImageJ.nii.gz"):
        _write(tmp_path / "named" / "c" / name, A)
    case = find_rater_cases(tmp_path / "named")[0]
    assert [p.name for p in case.raters] == ["rater_Person1_Amira.nii.gz", "rater_Person1_ImageJ.nii.gz",
                                             "rater_Person2_ImageJ.nii.gz"]
    for k in (1, 2, 10):
        _write(tmp_path / "numbered" / "c" / f"rater_{k}.nii.gz", A)
    with pytest.raises(InputError, match="rater_3 is missing"):
        find_rater_cases(tmp_path / "numbered")


def test_real_bubil_experts_agree_as_the_dataset_documents(shared_data):
    """BU-BIL: 10 masks per image (5 experts x 2 tools), documented mean pairwise Dice about 0.86."""
    from segqc.io.raters import read_rater_masks
    from segqc.metrics.distribution import pairwise_iou

    cases = find_rater_cases(shared_data("bubil/BU-BIL_Dataset1"))
    assert len(cases) >= 20 and all(len(c.raters) in (9, 10) for c in cases)  # some images lack one mask
    dice = []
    for case in cases[:4]:
        masks, _ = read_rater_masks(case)
        iou = pairwise_iou(masks, masks)[np.triu_indices(len(masks), 1)]
        dice += list(2 * iou / (1 + iou))
        assert 0.002 < masks.mean() < 0.06  # one cell: a few per cent of the pixels
    assert 0.75 < np.mean(dice) < 0.95, np.mean(dice)


def test_the_odd_rater_mask_out_is_the_one_named(tmp_path):
    """With rater_1 on another shape than rater_2 and rater_3, the error named rater_2 (which
    agreed with the majority) as the file at fault. With two raters no file can be blamed: the
    case folder is named with both shapes."""
    from segqc.io.raters import find_rater_cases, read_rater_grid

    _write(tmp_path / "three" / "c" / "rater_1.nii.gz", np.zeros((3, 4), dtype=np.uint8))
    for k in (2, 3):
        _write(tmp_path / "three" / "c" / f"rater_{k}.nii.gz", A)
    [case] = find_rater_cases(tmp_path / "three")
    with pytest.raises(InputError) as error:
        read_rater_grid(case)
    assert str(error.value) == (f"{case.raters[0]}: mask of shape (3, 4), but 2 of the 3 rater masks have (2, 4)")
    _write(tmp_path / "two" / "c" / "rater_1.nii.gz", A)
    _write(tmp_path / "two" / "c" / "rater_2.nii.gz", A, spacing=(2.0, 1.0))
    [case] = find_rater_cases(tmp_path / "two")
    with pytest.raises(InputError) as error:
        read_rater_grid(case)
    assert str(error.value) == (f"{tmp_path / 'two' / 'c'}: rater masks of different spacings: "
                                "rater_1.nii.gz (1.0, 1.0), rater_2.nii.gz (2.0, 1.0)")


def test_soft_dice_of_empty_raters_and_prediction_is_nan_tagged_with_the_rule(tmp_path):
    """Once: the README said such a soft Dice is tagged `both_empty`, but metrics.csv had no tag
    column; the prediction empty against marking raters is the worst value, tagged too."""
    raters, pred = tmp_path / "raters", tmp_path / "pred"
    empty = np.zeros_like(A)
    for k in (1, 2):
        _write(raters / "blank" / f"rater_{k}.nii.gz", empty)
        _write(raters / "missed" / f"rater_{k}.nii.gz", A)
    _write(pred / "blank.nii.gz", empty)
    _write(pred / "missed.nii.gz", empty)
    evaluate_raters(pred, raters, tmp_path / "out")
    with open(tmp_path / "out" / "metrics.csv") as f:
        rows = {(r["case"], r["metric"]): r for r in csv.DictReader(f)}
    for metric in ("soft_dice", "soft_dice_5"):
        assert rows[("blank", metric)]["value"] == "" and rows[("blank", metric)]["empty"] == "both_empty:nan"
        assert float(rows[("missed", metric)]["value"]) == 0.0
        assert rows[("missed", metric)]["empty"] == "pred_empty:worst"
    assert rows[("missed", "ged2")]["empty"] == ""
