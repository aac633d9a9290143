"""QC helpers at their boundary values, by hand and against scikit-learn / scipy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from segqc.io.geometry import Geometry
from segqc.io.images import write_image


def test_failure_auroc_counts_a_true_dice_of_exactly_the_threshold_as_good():
    """QCResUNet: a failure is a true Dice *below* 0.7; scikit-learn on (true < 0.7, -estimate)."""
    from sklearn.metrics import roc_auc_score

    from segqc.report.agreement import failure_auroc

    true = np.array([0.7, 0.5, 0.9, 0.3])
    estimate = np.array([0.6, 0.65, 0.95, 0.7])
    assert failure_auroc(estimate, true) == pytest.approx(roc_auc_score(true < 0.7, -estimate))
    assert failure_auroc(estimate, true) != pytest.approx(roc_auc_score(true <= 0.7, -estimate))


def test_mae_by_bin_puts_each_true_value_in_the_bin_it_lies_in():
    """0.15 lies in [0.1, 0.2) and 0.36 in [0.3, 0.4), as numpy's digitize says (rounding would
    move them up a bin)."""
    from segqc.report.agreement import mae_by_bin

    true = np.array([0.15, 0.36, 0.25])
    pairs = pd.DataFrame({"label": "all", "metric": "dice", "estimate": true + 0.1, "true": true})
    table = mae_by_bin(pairs)
    expected = np.digitize(true, np.linspace(0, 1, 11)) - 1
    got = table.loc[table["n"] > 0, "bin_low"].to_numpy()
    assert sorted(np.round(got * 10).astype(int).tolist()) == sorted(expected.tolist()) == [1, 2, 3]


def test_dsc_sem_of_a_class_without_any_error_in_either_map_is_one(tmp_path):
    """QCResUNet §3.4: no true error and none predicted agree perfectly (1, not 0)."""
    from segqc.qc.assessment import error_map_agreement

    geometry = Geometry.from_shape((4, 4, 1))
    seg = np.zeros((4, 4, 1), np.uint8)
    seg[1:3, 1:3] = 1
    errors = np.zeros_like(seg)
    for folder, array in (("segs", seg), ("gt", seg), ("qc/errors", errors)):
        write_image(tmp_path / folder / "case0.nii.gz", array, geometry)
    (tmp_path / "qc" / "report.json").write_text(json.dumps({"cases": ["case0"]}))
    pd.DataFrame({"case": "case0", "label": ["all", "1"], "label_name": ["all", "A"], "metric": "dice",
                  "estimate": 1.0}).to_csv(tmp_path / "qc" / "qc.csv", index=False)
    table = error_map_agreement(tmp_path / "qc", tmp_path / "segs", tmp_path / "gt")
    assert table["dsc_sem"].tolist() == [1.0]


def test_epoch_order_draws_a_large_bin_without_replacement():
    from segqc.qc.qcresunet.train import epoch_order

    dice = np.concatenate([np.full(20, 0.95), np.full(2, 0.15)])  # bin 9: 20 members, bin 1: two
    order = epoch_order(dice, 40, 10, np.random.default_rng(0))
    large = order[dice[order] > 0.9]
    assert sorted(large.tolist()) == list(range(20))  # its share is its size: each member once
    assert sorted(set(order[dice[order] < 0.2].tolist())) == [20, 21]  # the small bin repeated to its share


def test_threshold_counts_mark_probabilities_equal_to_the_threshold():
    """``probs >= t``: a probability of exactly 0.5 is marked at threshold 0.5."""
    from segqc.qc.qcresunet.train import THRESHOLD_GRID, threshold_counts

    probs = torch.tensor([[0.5, 0.3, 0.7, 0.1]], dtype=torch.float64)
    truth = torch.tensor([[True, False, True, True]])
    counts = threshold_counts(probs, truth)
    half = int(np.flatnonzero(np.isclose(THRESHOLD_GRID, 0.5))[0])
    assert counts[0, half].tolist() == [2, 2, 3]


def test_majority_vote_breaks_ties_towards_the_smaller_label_as_scipy_mode():
    from scipy import stats

    from segqc.qc.inference import majority_vote

    assert majority_vote(np.array([[1], [2]]), [0, 1, 2]).tolist() == [1]
    samples = np.random.default_rng(1).integers(0, 4, size=(4, 200))
    np.testing.assert_array_equal(majority_vote(samples, [0, 1, 2, 3]), stats.mode(samples, axis=0).mode)
