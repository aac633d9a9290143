"""Label quality of pseudo-label datasets (anatomy thesis §3.2.2.2, eq. 2-4, Table 5) and the
Jensen–Shannon divergence of organ-volume distributions (DAP Atlas, Fig. 10).

Every expected number below is computed by hand (in the comments) or by plain numpy counting on the
arrays, never by the code under test.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from scipy import ndimage
from typer.testing import CliRunner

from segqc.anatomy.quality import (
    case_label_scores,
    common_labels,
    dataset_scores,
    jensen_shannon_divergence,
    label_quality_folder,
    mean_jsd_to_others,
    organ_scores,
    volume_histograms,
)
from segqc.cli.labels_quality import quality_command
from segqc.io.geometry import Geometry
from segqc.io.images import read_label_map, write_image

runner = CliRunner()
_app = typer.Typer()
_app.command()(quality_command)

# ------------------------------------------------------------------------------------------------
# (a) A hand-computed Table-5 example: 3 tiny cases (1 x 10 label maps), labels 1 and 2.
#
# case c1  base   1 1 1 1 0 2 2 2 0 0
#          pseudo 1 1 1 0 1 2 2 0 0 0
#     label 1: |G| = 4 (0-3), |P| = 4 (0,1,2,4), TP = 3 -> Dice = 2*3/(4+4) = 0.75
#     label 2: |G| = 3 (5-7), |P| = 2 (5,6),     TP = 2 -> Dice = 2*2/(3+2) = 0.8
# case c2  base   1 1 0 0 2 2 0 0 0 0
#          pseudo 0 1 1 0 2 2 0 0 0 0
#     label 1: |G| = 2 (0,1), |P| = 2 (1,2), TP = 1 -> Dice = 2/4 = 0.5
#     label 2: |G| = 2 (4,5), |P| = 2 (4,5), TP = 2 -> Dice = 1.0
# case c3  base   1 1 0 0 0 0 0 0 0 0
#          pseudo 1 1 0 0 0 0 0 0 0 0
#     label 1: identical -> Dice = 1.0
#     label 2: absent from both maps -> no value (left out of label 2's mean and SD)
#
# eq. 2, label 1: mean = (0.75 + 0.5 + 1.0)/3 = 0.75
#                 population SD = sqrt((0^2 + 0.25^2 + 0.25^2)/3) = sqrt(0.125/3) = 0.2041241...
#                 (the sample SD, sqrt(0.125/2) = 0.25, is NOT the thesis's)
#        label 2: n = 2, mean = (0.8 + 1.0)/2 = 0.9, population SD = sqrt((0.1^2 + 0.1^2)/2) = 0.1
# eq. 4: d = (0.75 + 0.9)/2 = 0.825
#        SD = sqrt((0.125/3 + 0.01)/2) = sqrt(0.0258333...) = 0.1607275...  (RMS of the organ SDs; the
#        plain mean of the SDs would be 0.1520621)
# ------------------------------------------------------------------------------------------------

HAND_CASES = {
    "c1": ([1, 1, 1, 1, 0, 2, 2, 2, 0, 0], [1, 1, 1, 0, 1, 2, 2, 0, 0, 0]),
    "c2": ([1, 1, 0, 0, 2, 2, 0, 0, 0, 0], [0, 1, 1, 0, 2, 2, 0, 0, 0, 0]),
    "c3": ([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
}
HAND_DICE = {("c1", 1): 0.75, ("c1", 2): 0.8, ("c2", 1): 0.5, ("c2", 2): 1.0, ("c3", 1): 1.0, ("c3", 2): math.nan}
D1, SD1 = 0.75, math.sqrt(0.125 / 3)
D2, SD2 = 0.9, 0.1
D_DATASET, SD_DATASET = 0.825, math.sqrt((0.125 / 3 + 0.01) / 2)


def _map(values) -> np.ndarray:
    return np.asarray(values, dtype=np.uint8)[None, :]


def _hand_scores(dataset: str = "g") -> pd.DataFrame:
    frames = []
    for case, (base, pseudo) in HAND_CASES.items():
        table = case_label_scores(_map(pseudo), _map(base), (1.0, 1.0), labels={1: "one", 2: "two"})
        frames.append(table.assign(dataset=dataset, case=case))
    scores = pd.concat(frames, ignore_index=True)
    return scores[scores["metric"] == "dice"]


def test_case_dice_matches_the_hand_counts_and_both_empty_is_no_value():
    scores = _hand_scores()
    for row in scores.itertuples(index=False):
        expected = HAND_DICE[(row.case, row.label)]
        if math.isnan(expected):
            assert math.isnan(row.value) and row.empty == "both_empty:nan"
        else:
            assert row.value == pytest.approx(expected, abs=1e-12)


def test_table5_organ_mean_population_sd_and_rms_of_sds_match_the_hand_computation():
    organs = organ_scores(_hand_scores())
    one = organs[organs["label"] == 1].iloc[0]
    two = organs[organs["label"] == 2].iloc[0]
    assert one["mean"] == pytest.approx(D1, abs=1e-12)
    assert one["sd"] == pytest.approx(SD1, abs=1e-12)  # population SD, not sqrt(0.125/2)
    assert (one["n"], one["n_both_empty"]) == (3, 0)
    assert two["mean"] == pytest.approx(D2, abs=1e-12)
    assert two["sd"] == pytest.approx(SD2, abs=1e-12)
    assert (two["n"], two["n_both_empty"]) == (2, 1)  # c3 has no label 2 in base nor pseudo
    quality = dataset_scores(organs, [1, 2])
    assert len(quality) == 1
    assert quality["mean"].iloc[0] == pytest.approx(D_DATASET, abs=1e-12)
    assert quality["sd"].iloc[0] == pytest.approx(SD_DATASET, abs=1e-12)
    assert quality["n_labels"].iloc[0] == 2


def test_organ_absent_from_the_pseudo_map_only_scores_dice_and_nsd_zero():
    base = _map([1, 1, 0, 0, 2, 2, 0, 0])
    pseudo = _map([1, 1, 0, 0, 0, 0, 0, 0])  # label 2 erased
    table = case_label_scores(pseudo, base, (1.0, 1.0), labels=[1, 2]).set_index(["label", "metric"])
    assert table.loc[(2, "dice"), "value"] == 0.0
    assert table.loc[(2, "nsd"), "value"] == 0.0
    assert table.loc[(2, "dice"), "empty"] == "pred_empty:worst"
    assert table.loc[(1, "dice"), "value"] == 1.0
    assert table.loc[(2, "volume_gt"), "value"] == pytest.approx(2 / 1000)  # 2 voxels of 1 mm^2 (x 1 mm) in ml
    assert table.loc[(2, "volume_pred"), "value"] == 0.0


def _write_hand_folders(root: Path) -> tuple[Path, Path]:
    base_dir, pseudo_dir = root / "base", root / "g"
    geometry = Geometry.from_shape((1, 10), (1.0, 1.0))
    for case, (base, pseudo) in HAND_CASES.items():
        write_image(base_dir / f"{case}.nii.gz", _map(base), geometry)
        write_image(pseudo_dir / f"{case}.nii.gz", _map(pseudo), geometry)
    (base_dir / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "one": 1, "two": 2},
                                                       "file_ending": ".nii.gz"}))
    return base_dir, pseudo_dir


def test_folder_quality_csv_is_the_hand_computed_table5_row(tmp_path):
    base_dir, pseudo_dir = _write_hand_folders(tmp_path)
    out = tmp_path / "out"
    result = label_quality_folder(base_dir, [pseudo_dir], out, plots=False)
    assert result.report.exit_code == 0
    quality = pd.read_csv(out / "quality.csv").set_index("metric")
    assert quality.loc["dice", "mean"] == pytest.approx(D_DATASET, abs=1e-12)
    assert quality.loc["dice", "sd"] == pytest.approx(SD_DATASET, abs=1e-12)
    assert quality.loc["dice", "table5"] == "82.5 ± 16.1"
    assert quality.loc["dice", "n_cases"] == 3
    organs = pd.read_csv(out / "organs.csv")
    two = organs[(organs["label"] == 2) & (organs["metric"] == "dice")].iloc[0]
    assert (two["n"], two["n_both_empty"]) == (2, 1)
    assert "| g | Dice | 82.5 ± 16.1 | 2 | 3 |" in (out / "quality.md").read_text()


# ------------------------------------------------------------------------------------------------
# (b) NSD against analytic cases.
# ------------------------------------------------------------------------------------------------


def _two_cubes(shape=(40, 16, 16), side=6, gap=20) -> tuple[np.ndarray, np.ndarray]:
    """Cube A and a congruent cube B (a translate of A), ``gap`` voxels apart along axis 0."""
    a = np.zeros(shape, dtype=np.uint8)
    b = np.zeros(shape, dtype=np.uint8)
    a[2:2 + side, 5:5 + side, 5:5 + side] = 1
    b[2 + gap:2 + gap + side, 5:5 + side, 5:5 + side] = 1
    return a, b


def test_nsd_of_a_missed_congruent_cube_is_two_thirds():
    # base = A u B, pseudo = A, with B a translate of A: both surfaces of A coincide (distance 0) and every
    # surface element of B is >= (gap - side) * 0.8 mm = 11.2 mm from A, beyond the 1 mm tolerance.
    # NSD = (|dA| + |dA|) / (|dA| + |dB| + |dA|) and |dB| = |dA| (congruent) -> 2/3 whatever the surface-element
    # areas are. Anisotropic spacing on purpose.
    a, b = _two_cubes()
    spacing = (0.8, 1.0, 2.5)
    table = case_label_scores(a, a | b, spacing, labels=[1], tolerance_mm=1.0).set_index("metric")
    assert table.loc["nsd", "value"] == pytest.approx(2 / 3, abs=1e-12)
    # and the same with the roles swapped (a false-positive cube instead of a missed one)
    table = case_label_scores(a | b, a, spacing, labels=[1], tolerance_mm=1.0).set_index("metric")
    assert table.loc["nsd", "value"] == pytest.approx(2 / 3, abs=1e-12)


def test_nsd_of_a_translated_mask_is_one_at_a_tolerance_of_the_shift():
    # Pseudo = base translated by t (2 voxels of 2.5 mm along the last axis = 5 mm): for every surface point p
    # of one mask, p + t (or p - t) lies on the other surface, so every distance is <= 5 mm -> NSD(5 mm) = 1;
    # the faces perpendicular to t are 5 mm apart, so at 4.9 mm the NSD is below 1.
    a, _ = _two_cubes()
    shifted = np.roll(a, 2, axis=2)
    spacing = (0.8, 1.0, 2.5)
    at_shift = case_label_scores(shifted, a, spacing, labels=[1], tolerance_mm=5.0).set_index("metric")
    below = case_label_scores(shifted, a, spacing, labels=[1], tolerance_mm=4.9).set_index("metric")
    assert at_shift.loc["nsd", "value"] == pytest.approx(1.0, abs=1e-12)
    assert below.loc["nsd", "value"] < 0.99


# ------------------------------------------------------------------------------------------------
# (c) Jensen–Shannon divergence against hand-computed histograms.
# ------------------------------------------------------------------------------------------------


def test_jsd_of_a_hand_computed_pair_is_the_divergence_not_its_square_root():
    # p = (1, 1) -> (1/2, 1/2); q = (2, 0) -> (1, 0); m = (3/4, 1/4)
    # KL(p||m) = 1/2 log2(2/3) + 1/2 log2(2) = 1/2 (1 - log2 3) + 1/2 = 1 - 1/2 log2 3
    # KL(q||m) = log2(4/3) = 2 - log2 3
    # JSD = 1/2 (KL(p||m) + KL(q||m)) = 3/2 - 3/4 log2 3 = 0.3112781...  (its square root would be 0.5579)
    expected = 1.5 - 0.75 * math.log2(3)
    assert jensen_shannon_divergence([1, 1], [2, 0]) == pytest.approx(expected, abs=1e-12)
    assert jensen_shannon_divergence([2, 0], [1, 1]) == pytest.approx(expected, abs=1e-12)  # symmetric


def test_jsd_is_zero_for_identical_and_one_for_disjoint_distributions():
    assert jensen_shannon_divergence([3, 1, 0, 2], [6, 2, 0, 4]) == pytest.approx(0.0, abs=1e-12)  # same shape
    assert jensen_shannon_divergence([1, 0, 0], [0, 0, 5]) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(jensen_shannon_divergence([0, 0], [1, 1]))  # an empty distribution has no divergence


def test_mean_jsd_to_the_others_and_common_bins():
    # a = (1, 0), b = (0, 1): disjoint -> 1; a or b against c = (1, 1): J = 3/2 - 3/4 log2 3 (as above)
    j = 1.5 - 0.75 * math.log2(3)
    means = mean_jsd_to_others({"a": [1, 0], "b": [0, 1], "c": [1, 1]})
    assert means["a"] == pytest.approx((1 + j) / 2, abs=1e-12)
    assert means["b"] == pytest.approx((1 + j) / 2, abs=1e-12)
    assert means["c"] == pytest.approx(j, abs=1e-12)
    # pooled values 1..4 on 2 equal bins: edges 1, 2.5, 4
    edges, counts = volume_histograms({"x": [1.0, 2.0], "y": [3.0, 4.0]}, bins=2)
    assert edges.tolist() == [1.0, 2.5, 4.0]
    assert counts["x"].tolist() == [2, 0] and counts["y"].tolist() == [0, 2]


# ------------------------------------------------------------------------------------------------
# (d) The common-label rule (eq. 3).
# ------------------------------------------------------------------------------------------------


def test_common_labels_are_the_base_labels_every_dataset_can_predict():
    assert common_labels([0, 1, 2, 3], {"g1": [1, 2, 3], "g2": [1, 2, 7]}) == [1, 2]
    assert common_labels([0, 1, 2], {"g1": [0, 1, 2]}) == [1, 2]  # never the background


def _write_common_folders(root: Path, *, g2_dataset_json: bool) -> tuple[Path, Path, Path]:
    # base: labels 1, 2, 3 in one 1 x 9 case; g1 reproduces it; g2 predicts 1 and 2 only (label 3 -> background)
    geometry = Geometry.from_shape((1, 9), (1.0, 1.0))
    base = _map([1, 1, 1, 2, 2, 2, 3, 3, 3])
    g1 = _map([1, 1, 1, 2, 2, 2, 3, 3, 3])
    g2 = _map([1, 1, 1, 2, 2, 2, 0, 0, 0])
    dirs = root / "base", root / "g1", root / "g2"
    for folder, array in zip(dirs, (base, g1, g2)):
        write_image(folder / "c1.nii.gz", array, geometry)
    (dirs[0] / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1, "b": 2, "c": 3},
                                                      "file_ending": ".nii.gz"}))
    if g2_dataset_json:  # the generator declares label 3, it just never predicts it
        (dirs[2] / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1, "b": 2, "c": 3}}))
    return dirs


def test_a_label_one_dataset_cannot_predict_is_left_out_of_every_dataset_score(tmp_path):
    base_dir, g1, g2 = _write_common_folders(tmp_path, g2_dataset_json=False)
    result = label_quality_folder(base_dir, [g1, g2], tmp_path / "out", plots=False)
    assert result.common == [1, 2]
    assert result.predictable["g2"][0] == [1, 2]
    quality = result.quality.set_index(["dataset", "metric"])
    # g1 is perfect on every label; g2 on labels 1 and 2 (Dice 0 on label 3, which is not common)
    assert quality.loc[("g1", "dice"), "mean"] == 1.0
    assert quality.loc[("g2", "dice"), "mean"] == 1.0  # with label 3 it would be (1 + 1 + 0)/3
    assert quality.loc[("g2", "dice"), "n_labels"] == 2
    organs = pd.read_csv(tmp_path / "out" / "organs.csv")
    assert set(organs.loc[~organs["common"], "label"]) == {3}
    assert organs.loc[(organs["dataset"] == "g2") & (organs["label"] == 3) & (organs["metric"] == "dice"),
                      "mean"].item() == 0.0  # still scored per organ
    assert any(w.startswith("label 3 (c) is left out") and "g2" in w and "g1" not in w for w in result.warnings)


def test_a_pseudo_dataset_json_declares_what_the_generator_can_predict(tmp_path):
    base_dir, g1, g2 = _write_common_folders(tmp_path, g2_dataset_json=True)
    result = label_quality_folder(base_dir, [g1, g2], tmp_path / "out", plots=False)
    assert result.common == [1, 2, 3]
    quality = result.quality.set_index(["dataset", "metric"])
    assert quality.loc[("g2", "dice"), "mean"] == pytest.approx(2 / 3, abs=1e-12)  # (1 + 1 + 0) / 3


# ------------------------------------------------------------------------------------------------
# (e) The folder driver end to end on real data: ACDC ground truths as base, pseudo datasets with known
#     changes (a copy, LV erased, MYO eroded by one voxel).
# ------------------------------------------------------------------------------------------------

ACDC_CASES = ("ACDC_patient002_frame01", "ACDC_patient003_frame01", "ACDC_patient004_frame01")


@pytest.fixture()
def acdc_study(tmp_path, shared_data):
    acdc = shared_data("acdc")
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    shutil.copy(acdc / "dataset.json", base_dir / "dataset.json")
    arrays, spacing = {}, None
    for case in ACDC_CASES:
        shutil.copy(acdc / "labelsTr" / f"{case}.nii.gz", base_dir / f"{case}.nii.gz")
        image = read_label_map(base_dir / f"{case}.nii.gz")
        arrays[case], spacing = image.array, image.geometry
        copy, erased, eroded = image.array.copy(), image.array.copy(), image.array.copy()
        erased[erased == 3] = 0  # LV erased
        myo = eroded == 2
        eroded[myo & ~ndimage.binary_erosion(myo)] = 0  # MYO: one voxel eroded, the rim becomes background
        for name, array in (("copy", copy), ("erased", erased), ("eroded", eroded)):
            write_image(tmp_path / name / f"{case}.nii.gz", array, image.geometry)
    # the generator of "erased" can predict LV (it just never does here): it says so in its dataset.json
    shutil.copy(acdc / "dataset.json", tmp_path / "erased" / "dataset.json")
    return tmp_path, base_dir, arrays, spacing


def test_acdc_pseudo_datasets_with_known_changes(acdc_study):
    root, base_dir, arrays, geometry = acdc_study
    out = root / "out"
    args = [str(base_dir), str(root / "copy"), str(root / "erased"), str(root / "eroded"), "-o", str(out), "-q"]
    result = runner.invoke(_app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "9 of 9 case(s) done" in result.output

    scores = pd.read_csv(out / "scores.csv")
    assert list(scores.columns) == ["dataset", "case", "label", "name", "metric", "value", "empty"]
    by = scores.set_index(["dataset", "case", "label", "metric"])["value"]
    myo_dice = {}
    for case in ACDC_CASES:
        gt = arrays[case]
        for label in (1, 2, 3):
            for metric in ("dice", "nsd"):
                assert by[("copy", case, label, metric)] == 1.0
        for label in (1, 2):
            for metric in ("dice", "nsd"):
                assert by[("erased", case, label, metric)] == 1.0
        assert by[("erased", case, 3, "dice")] == 0.0
        assert by[("erased", case, 3, "nsd")] == 0.0
        for label in (1, 3):
            assert by[("eroded", case, label, "dice")] == 1.0
        myo = gt == 2
        kept = int((myo & ndimage.binary_erosion(myo)).sum())  # TP = |E|, |P| = |E|, |G| = |M|
        myo_dice[case] = 2 * kept / (kept + int(myo.sum()))
        assert by[("eroded", case, 2, "dice")] == pytest.approx(myo_dice[case], abs=1e-12)
        assert 0 < by[("eroded", case, 2, "nsd")] < 1

    quality = pd.read_csv(out / "quality.csv").set_index(["dataset", "metric"])
    assert quality.loc[("copy", "dice"), "mean"] == 1.0 and quality.loc[("copy", "dice"), "sd"] == 0.0
    assert quality.loc[("erased", "dice"), "mean"] == pytest.approx(2 / 3, abs=1e-12)  # (1 + 1 + 0)/3
    assert quality.loc[("erased", "dice"), "sd"] == 0.0  # every organ scores the same in every case
    values = np.array(list(myo_dice.values()))
    sd_myo = math.sqrt(((values - values.mean()) ** 2).mean())
    assert quality.loc[("eroded", "dice"), "mean"] == pytest.approx((1 + values.mean() + 1) / 3, abs=1e-12)
    assert quality.loc[("eroded", "dice"), "sd"] == pytest.approx(math.sqrt((0 + sd_myo**2 + 0) / 3), abs=1e-12)
    assert (quality["n_cases"] == 3).all() and (quality["n_labels"] == 3).all()

    volumes = pd.read_csv(out / "volumes.csv").set_index(["dataset", "case", "label"])["volume_ml"]
    voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
    for case in ACDC_CASES:
        assert volumes[("base", case, 3)] == pytest.approx(int((arrays[case] == 3).sum()) * voxel_ml, rel=1e-12)
        assert volumes[("erased", case, 3)] == 0.0
    pairs = pd.read_csv(out / "jsd_pairs.csv")
    copy_vs_base = pairs[(pairs["dataset"] == "copy") & (pairs["other"] == "base")]
    assert len(copy_vs_base) == 3 and (copy_vs_base["jsd"].abs() < 1e-12).all()  # identical volume distributions
    jsd = pd.read_csv(out / "jsd.csv").set_index(["label", "dataset"])
    assert math.isnan(jsd.loc[(3, "erased"), "mean_jsd"]) and jsd.loc[(3, "erased"), "n_volumes"] == 0
    assert {p.name for p in (out / "plots").iterdir()} == {"volumes_1_RV.png", "volumes_2_MYO.png",
                                                         "volumes_3_LV.png", "jsd_box.png"}

    rerun = runner.invoke(_app, args, catch_exceptions=False)
    assert rerun.exit_code == 0, rerun.output
    assert "reused 9 finished case(s)" in rerun.output
    pd.testing.assert_frame_equal(pd.read_csv(out / "quality.csv").set_index(["dataset", "metric"]), quality)


# ------------------------------------------------------------------------------------------------
# (f) Bad input: one error line naming the file; a missing case is reported, not dropped silently.
# ------------------------------------------------------------------------------------------------


def test_a_pseudo_map_on_another_grid_is_one_error_line_naming_the_file(tmp_path):
    geometry = Geometry.from_shape((1, 10), (1.0, 1.0))
    base_dir, pseudo_dir = tmp_path / "base", tmp_path / "bad"
    for case in ("c1", "c2", "c3"):
        write_image(base_dir / f"{case}.nii.gz", _map([1, 1, 0, 0, 2, 2, 0, 0, 0, 0]), geometry)
    write_image(pseudo_dir / "c1.nii.gz", _map([1, 1, 0, 0, 2, 2, 0, 0, 0, 0]), geometry)
    wrong = pseudo_dir / "c2.nii.gz"
    write_image(wrong, np.zeros((1, 12), dtype=np.uint8), Geometry.from_shape((1, 12), (1.0, 1.0)))
    # no pseudo label of c3 at all (but another dataset has one, so c3 is a scored case)
    other = tmp_path / "other"
    for case in ("c1", "c2", "c3"):
        write_image(other / f"{case}.nii.gz", _map([1, 1, 0, 0, 2, 2, 0, 0, 0, 0]), geometry)
    result = runner.invoke(_app, [str(base_dir), str(pseudo_dir), str(other), "-o", str(tmp_path / "out"), "-q"],
                           catch_exceptions=False)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert str(wrong) in errors[0] and "shape (1, 12)" in errors[0] and "(base (1, 10))" in errors[0]
    assert "hint: --resample" not in result.output  # this command has no such option
    assert f"warning: {pseudo_dir}: no pseudo label of case c3; left out of bad's scores" in result.output
    quality = pd.read_csv(tmp_path / "out" / "quality.csv").set_index(["dataset", "metric"])
    assert quality.loc[("bad", "dice"), "n_cases"] == 1 and quality.loc[("other", "dice"), "n_cases"] == 3


def test_bad_names_and_missing_folders_stop_the_run_with_exit_code_2(tmp_path):
    base_dir, pseudo_dir = _write_hand_folders(tmp_path)
    result = runner.invoke(_app, [str(base_dir), str(pseudo_dir), "-o", str(tmp_path / "out"), "--names", "base"],
                           catch_exceptions=False)
    assert result.exit_code == 2 and "reserved for the base labels" in result.output
    result = runner.invoke(_app, [str(base_dir), str(tmp_path / "nope"), "-o", str(tmp_path / "out")],
                           catch_exceptions=False)
    assert result.exit_code == 2 and f"error: {tmp_path / 'nope'}: folder not found" in result.output


def test_segqc_report_renders_a_quality_folder(tmp_path):
    from segqc.report.html import build_report

    base_dir, pseudo_dir = _write_hand_folders(tmp_path)
    out = tmp_path / "out"
    label_quality_folder(base_dir, [pseudo_dir], out, plots=True)
    html = build_report(out).read_text()
    assert "Label quality of the pseudo-label datasets" in html
    assert "82.5 ± 16.1" in html  # the hand-computed Table-5 cell
    assert html.count('src="data:image/png;base64,') == len(list((out / "plots").glob("*.png"))) > 0
    assert "http://" not in html and "https://" not in html


def test_a_chosen_label_that_no_base_map_holds_stops_the_run_without_a_dataset_json(tmp_path):
    base_dir, pseudo_dir = _write_hand_folders(tmp_path)
    (base_dir / "dataset.json").unlink()  # the labels are known only from the maps: 1 and 2
    result = runner.invoke(_app, [str(base_dir), str(pseudo_dir), "-o", str(tmp_path / "out"), "--labels", "999",
                                  "-q"], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert f"error: {base_dir}: label 999 is in no base label map; the base maps hold 1, 2" in result.output
    assert not (tmp_path / "out" / "quality.csv").exists()
    held = runner.invoke(_app, [str(base_dir), str(pseudo_dir), "-o", str(tmp_path / "ok"), "--labels", "2", "-q"],
                         catch_exceptions=False)
    assert held.exit_code == 0, held.output
    assert pd.read_csv(tmp_path / "ok" / "organs.csv")["label"].unique().tolist() == [2]


@pytest.mark.parametrize(("labels", "match"), [((0, 1), "label 0 is the background"),
                                               ((-2, 1), "label -2 is negative")])
def test_labels_quality_refuses_the_background_or_a_negative_value_as_a_label(tmp_path, labels, match):
    """Without a dataset.json, `--labels 0,1` scored the background as an organ (its Dice entered
    every mean); `evaluate` refused it, `labels quality` did not."""
    base_dir, pseudo_dir = _write_hand_folders(tmp_path)
    (base_dir / "dataset.json").unlink()
    with pytest.raises(ValueError, match=match):
        label_quality_folder(base_dir, [pseudo_dir], tmp_path / "out", labels=labels, plots=False)


def test_an_organ_absent_from_every_case_is_left_out_of_the_dataset_mean():
    """Eq. 4 averages the organs that have a value: organ 2 (absent everywhere: NaN mean) must
    neither make the dataset mean NaN nor count in n_labels."""
    organs = pd.DataFrame({"dataset": ["g", "g"], "label": [1, 2], "name": ["a", "b"], "metric": ["dice", "dice"],
                           "mean": [0.8, np.nan], "sd": [0.1, np.nan], "n": [3, 0], "n_both_empty": [0, 3]})
    quality = dataset_scores(organs, [1, 2])
    assert quality["mean"].iloc[0] == pytest.approx(0.8) and quality["sd"].iloc[0] == pytest.approx(0.1)
    assert quality["n_labels"].iloc[0] == 1
