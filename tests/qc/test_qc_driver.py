"""The QC driver (preprocess -> pGT -> restore -> metrics -> worklist), checked with an oracle.

The oracle "model" reads the ground truth off the toy image (image = 60 x label + 10), so its
pseudo ground truth IS the ground truth: every estimate must then equal the true metric computed
independently by `segqc evaluate`, and the benchmark must report r = 1, MAE = 0.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from qc_toy_data import oracle_model
from scipy import ndimage, stats

from segqc.io.images import read_label_map, write_image
from segqc.qc.assessment import agreement, benchmark_qc, rank_models, true_metrics
from segqc.qc.inference import QcSettings, qc_folder, worklist
from segqc.qc.model_api import QcModel


@pytest.fixture()
def degraded_segs(qc_dataset, tmp_path):
    """Segmentations of varied quality: perfect, eroded, shifted, class-swapped."""
    out = tmp_path / "segs"
    for i, path in enumerate(sorted((qc_dataset / "labelsTr").glob("*.nii.gz"))):
        label = read_label_map(path)
        seg = label.array.copy()
        if i == 1:
            seg[(seg > 0) & ~ndimage.binary_erosion(seg > 0, iterations=2)] = 0
        elif i == 2:
            seg = np.roll(seg, 5, axis=0)
        elif i == 3:
            seg[seg == 2] = 1
        write_image(out / path.name, seg, label.geometry)
    return out


def test_oracle_estimates_equal_true_metrics(qc_dataset, degraded_segs, tmp_path):
    model = oracle_model(qc_dataset)
    table, work, report = qc_folder(None or tmp_path, qc_dataset / "imagesTr", degraded_segs, tmp_path / "qc",
                                    settings=QcSettings(metrics=("dice", "hd95")), model=model)
    truth = true_metrics(degraded_segs, qc_dataset / "labelsTr", ("dice", "hd95"), 1.0)
    merged = table.merge(truth, on=["case", "label", "metric"])
    assert len(merged) == len(table) == 4 * 5  # 4 cases x (labels 1, 2 x dice, hd95 + all dice)
    np.testing.assert_allclose(merged["estimate"], merged["value"], rtol=1e-9, atol=1e-9)
    # the pGT written on the input grid is the ground truth itself
    for case in report["cases"]:
        pgt = read_label_map(tmp_path / "qc" / "pgt" / f"{case}.nii.gz")
        gt = read_label_map(qc_dataset / "labelsTr" / f"{case}.nii.gz")
        assert np.array_equal(pgt.array, gt.array) and pgt.geometry == gt.geometry
    # the worklist starts with the worst case and flags it
    assert work.iloc[0]["dice_estimate"] == pytest.approx(table[(table.label == "all")]["estimate"].min())
    assert work["flag"].iloc[0] and not work["flag"].iloc[-1]
    slices = pd.read_csv(tmp_path / "qc" / "qc_slices.csv")
    assert set(slices.case) == set(report["cases"]) and slices.slice_ratio.between(0, 1).all()


def _dice_with_samples(exact: QcModel, generate, samples: int, qc_dataset, segs, tmp_path):
    """QC of ``segs`` by an oracle-based model whose pseudo ground truths ``generate`` draws
    (``samples`` by default): (the QC table, the table merged with the true Dice)."""
    model = QcModel(method="oracle", plan=exact.plan, labels=exact.labels, fingerprint=exact.fingerprint,
                    generate=generate, default_samples=samples)
    table, _, _ = qc_folder(tmp_path, qc_dataset / "imagesTr", segs, tmp_path / "qc",
                            settings=QcSettings(metrics=("dice",)), model=model)
    truth = true_metrics(segs, qc_dataset / "labelsTr", ("dice",), 1.0)
    return table, table.merge(truth, on=["case", "label", "metric"])


def test_several_samples_are_fused_by_majority_and_their_disagreement_is_the_spread(qc_dataset, degraded_segs,
                                                                                   tmp_path):
    """Sample k of a "noisy oracle" loses every third foreground voxel (offset k): each sample is
    wrong, their per-voxel majority is the ground truth again. The estimates must then be the true
    metrics (not the mean of the worse per-sample values) and the spread must be positive."""
    exact = oracle_model(qc_dataset)

    def generate(images, segs, ratios, samples, steps, seed):
        labels = exact.generate(images, segs, ratios, 1, steps, seed)[0]
        flat_index = np.arange(labels[0].size).reshape(labels.shape[1:])
        out = np.repeat(labels[None], samples, axis=0)
        for k in range(samples):
            out[k][:, flat_index % 3 == k] = 0
        return out

    table, merged = _dice_with_samples(exact, generate, 3, qc_dataset, degraded_segs, tmp_path)
    assert len(merged) == len(table) == 4 * 3
    np.testing.assert_allclose(merged["estimate"], merged["value"], rtol=1e-9, atol=1e-9)
    assert np.isfinite(merged["spread"]).all()
    assert (merged.loc[merged["value"] > 0, "spread"] > 0).all()  # a Dice of 0 stays 0 in every sample
    for case in merged["case"].unique():  # the consensus written to disk is the ground truth
        pgt = read_label_map(tmp_path / "qc" / "pgt" / f"{case}.nii.gz").array
        assert np.array_equal(pgt, read_label_map(qc_dataset / "labelsTr" / f"{case}.nii.gz").array)


def test_the_segmentation_is_evaluated_against_the_pgt_not_the_other_way_round(qc_dataset, degraded_segs, tmp_path):
    """Precision and recall are not symmetric: with the oracle's pGT (= the ground truth) the rim-eroded
    case1 lies inside the truth, so its precision is 1 and its recall below 1. Reference values from
    numpy on the files (segmentation = prediction, ground truth = reference)."""
    table, _, _ = qc_folder(tmp_path, qc_dataset / "imagesTr", degraded_segs, tmp_path / "qc",
                            settings=QcSettings(metrics=("precision", "recall")), model=oracle_model(qc_dataset))
    estimates = table.set_index(["case", "label", "metric"])["estimate"]
    for case in ("case1", "case2"):
        seg = read_label_map(degraded_segs / f"{case}.nii.gz").array
        gt = read_label_map(qc_dataset / "labelsTr" / f"{case}.nii.gz").array
        for label in (1, 2):
            s, g = seg == label, gt == label
            tp = np.sum(s & g)
            assert estimates[(case, str(label), "precision")] == pytest.approx(tp / s.sum(), rel=1e-12)
            assert estimates[(case, str(label), "recall")] == pytest.approx(tp / g.sum(), rel=1e-12)
    eroded = estimates.xs("case1", level="case")
    assert eroded[("1", "precision")] == 1.0 and eroded[("1", "recall")] < 0.9


def _pearson_reference(estimate: np.ndarray, true: np.ndarray) -> float:
    return float(np.corrcoef(estimate, true)[0, 1])


def test_agreement_matches_scipy_and_numpy_on_a_hand_made_table():
    """Pearson r, MAE and n per (label, metric), rows with a NaN or infinite value left out; r is
    undefined (NaN) with a constant column or fewer than three pairs."""
    rng = np.random.default_rng(0)
    true = rng.uniform(0.3, 0.95, 12)
    rising = true + rng.normal(0, 0.05, 12)  # follows the truth
    falling = 1.2 - true + rng.normal(0, 0.05, 12)  # anti-correlated: r must come out negative
    rows = [{"label": "1", "metric": "dice", "estimate": e, "true": t} for e, t in zip(rising, true)]
    rows += [{"label": "2", "metric": "dice", "estimate": e, "true": t} for e, t in zip(falling, true)]
    rows += [{"label": "1", "metric": "dice", "estimate": np.nan, "true": 0.5},
             {"label": "1", "metric": "dice", "estimate": 0.4, "true": np.inf}]
    rows += [{"label": "all", "metric": "dice", "estimate": 0.75, "true": t} for t in (0.5, 0.6, 0.7)]
    rows += [{"label": "all", "metric": "hd95", "estimate": e, "true": t} for e, t in ((1.0, 2.0), (3.0, 1.0))]
    summary = agreement(pd.DataFrame(rows)).set_index(["label", "metric"])
    for label, estimate in (("1", rising), ("2", falling)):
        row = summary.loc[(label, "dice")]
        r = stats.pearsonr(estimate, true).statistic
        assert row.pearson_r == pytest.approx(r, rel=1e-12)
        assert row.pearson_r == pytest.approx(_pearson_reference(estimate, true), rel=1e-9)
        assert row.mae == pytest.approx(np.mean(np.abs(estimate - true)), rel=1e-12)
        assert row.n == 12
    assert summary.loc[("1", "dice")].pearson_r > 0.9 and summary.loc[("2", "dice")].pearson_r < -0.9
    constant = summary.loc[("all", "dice")]
    assert np.isnan(constant.pearson_r) and constant.n == 3
    assert constant.mae == pytest.approx(np.mean([0.25, 0.15, 0.05]), rel=1e-12)
    two = summary.loc[("all", "hd95")]
    assert np.isnan(two.pearson_r) and two.n == 2 and two.mae == pytest.approx(1.5)


def test_benchmark_reports_perfect_agreement_for_the_oracle(qc_dataset, degraded_segs, tmp_path):
    summary = benchmark_qc(tmp_path, qc_dataset / "imagesTr", degraded_segs, qc_dataset / "labelsTr", tmp_path / "b",
                           settings=QcSettings(metrics=("dice",)), model=oracle_model(qc_dataset))
    row = summary[(summary.label == "all") & (summary.metric == "dice")].iloc[0]
    assert row.pearson_r == pytest.approx(1.0) and row.mae == pytest.approx(0.0, abs=1e-12)
    assert (tmp_path / "b" / "plots" / "scatter_all_dice.png").exists()
    assert json.loads((tmp_path / "b" / "benchmark.json").read_text())["agreement"]


def test_rank_orders_models_like_the_truth(qc_dataset, degraded_segs, tmp_path):
    good = tmp_path / "model_good"
    shutil.copytree(qc_dataset / "labelsTr", good, ignore=shutil.ignore_patterns("*.json"))
    bad = tmp_path / "model_bad"
    for path in sorted(good.glob("*.nii.gz")):
        label = read_label_map(path)
        write_image(bad / path.name, np.roll(label.array, 8, axis=1), label.geometry)
    ranking, report = rank_models(tmp_path, qc_dataset / "imagesTr", [bad, degraded_segs, good], tmp_path / "r",
                                  gt_dir=qc_dataset / "labelsTr", model=oracle_model(qc_dataset))
    assert list(ranking.model) == ["model_good", "segs", "model_bad"]
    assert report["kendall_tau"] == pytest.approx(1.0)


def test_unknown_label_in_a_segmentation_fails_that_case_only(qc_dataset, degraded_segs, tmp_path):
    path = degraded_segs / "case0.nii.gz"
    label = read_label_map(path)
    bad = label.array.copy()
    bad[0, 0, 0] = 5
    write_image(path, bad, label.geometry)
    table, _, report = qc_folder(tmp_path, qc_dataset / "imagesTr", degraded_segs, tmp_path / "qc",
                                 model=oracle_model(qc_dataset), settings=QcSettings(metrics=("dice",)))
    assert "case0" in report["failed"] and "label value(s) [5]" in report["failed"]["case0"]
    assert "case0.nii.gz" in report["failed"]["case0"]
    assert set(table.case) == {"case1", "case2", "case3"}


def test_worklist_flags_threshold_and_robust_outliers():
    table = pd.DataFrame({"case": list("abcdef"), "label": "all", "metric": "dice",
                          "estimate": [0.91, 0.90, 0.92, 0.89, 0.60, 0.93], "spread": np.nan})
    work = worklist(table, QcSettings(flag_dice=0.5, outlier_z=3.0))
    assert work.case.iloc[0] == "e" and work.flag.iloc[0] and "outlier" in work.reason.iloc[0]
    assert not work.flag.iloc[1:].any()


def test_worklist_puts_undefined_estimates_first_without_disturbing_the_outlier_scores(recwarn):
    table = pd.DataFrame({"case": list("abcdefg"), "label": "all", "metric": "dice",
                          "estimate": [0.91, 0.90, 0.92, 0.89, 0.60, 0.93, np.nan], "spread": np.nan})
    work = worklist(table, QcSettings(flag_dice=0.5, outlier_z=3.0))
    assert list(work.case[:2]) == ["g", "e"] and work.flag[:2].all() and not work.flag[2:].any()
    # the median (0.905) and MAD (0.015) of the finite estimates: z(e) = (0.60 - 0.905) / (1.4826 * 0.015)
    assert work.robust_z.iloc[1] == pytest.approx((0.60 - 0.905) / (1.4826 * 0.015))
    every = worklist(table.assign(estimate=np.nan), QcSettings())
    assert every.flag.all() and not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_the_spread_is_the_sample_standard_deviation_of_the_per_sample_estimates(qc_dataset, degraded_segs,
                                                                                 tmp_path):
    """Two samples: the exact pseudo ground truth (Dice d) and an empty one (Dice 0 by the
    empty-mask rule): their sample standard deviation (n - 1) is d / sqrt(2)."""
    exact = oracle_model(qc_dataset)

    def generate(images, segs, ratios, samples, steps, seed):
        labels = exact.generate(images, segs, ratios, 1, steps, seed)[0]
        return np.stack([labels, np.zeros_like(labels)])

    table, merged = _dice_with_samples(exact, generate, 2, qc_dataset, degraded_segs, tmp_path)
    assert len(merged) == len(table) > 0
    scored = merged[merged["value"] > 0]  # a class the segmentation lacks: the empty sample is both-empty, NaN
    assert len(scored) >= len(merged) - 2
    np.testing.assert_allclose(scored["spread"], scored["value"] / np.sqrt(2), rtol=1e-9, atol=1e-12)


def test_a_flag_threshold_outside_zero_to_one_is_refused():
    """`--flag-dice nan` was accepted and flagged nothing (every comparison with NaN is false)."""
    for bad in (float("nan"), -0.1, 1.5):
        with pytest.raises(ValueError, match=r"--flag-dice\) must lie in \[0, 1\]"):
            QcSettings(flag_dice=bad)
    assert QcSettings(flag_dice=0.0).flag_dice == 0.0 and QcSettings(flag_dice=1.0).flag_dice == 1.0
