"""A pGT model's window that cuts the segmentation is said so; an ensemble's error maps are fused by
the paper's majority vote; QCResUNet's loss weighs the estimates as configured."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from qc_toy_data import oracle_model

from segqc.fingerprint.preprocessing import outside_window_share
from segqc.qc.inference import QcSettings, outside_window_warning, qc_folder
from segqc.qc.model_api import fuse_error_maps
from segqc.qc.qcresunet.config import QcResUNetConfig
from segqc.qc.qcresunet.model import QcResUNetOutput, qcresunet_loss

# --------------------------------------------------------------------------------------------
# The window a pGT model sees
# --------------------------------------------------------------------------------------------


def test_the_share_beyond_the_window_and_the_warning_that_names_it():
    """100 foreground voxels, 10 of them outside the window: 10 %, and a warning; 1 of them (1 %):
    no warning; an empty segmentation: share 0."""
    seg = np.zeros((20, 20), np.uint8)
    seg[:10, :10] = 2
    window = np.ones_like(seg, dtype=bool)
    window[:10, 0] = False  # 10 of the 100 voxels
    assert outside_window_share(seg, window) == pytest.approx(0.1)
    plan = SimpleNamespace(size=16, target_spacing=(1.5, 2.0))
    text = outside_window_warning(0.1, plan, Path("segs/a.nii.gz"))
    assert text == ("segs/a.nii.gz: 10 % of the segmentation's foreground lies outside the 24 x 32 mm window the "
                    "model sees; its pseudo ground truth is background there, so the estimates count those voxels "
                    "as wrong (a model trained with a wider --set field_of_view sees more)")
    window[:] = True
    window[0, 0] = False
    assert outside_window_share(seg, window) == pytest.approx(0.01)
    assert outside_window_warning(0.01, plan, Path("a")) is None
    assert outside_window_share(np.zeros_like(seg), window) == 0.0


def test_training_on_ground_truths_the_window_cuts_says_how_many_and_how_much(qc_dataset):
    """The toy ellipses are up to 26 px across: a 16 px window of the data's 1 mm pixels cuts every
    training ground truth (the log names the count and the worst case), a 32 px window none (no
    line)."""
    import dataclasses

    from segqc.qc.nnqc.config import NnqcConfig
    from segqc.qc.nnqc.train import build_training_data, window_cut_note

    for size, expected in ((16, 1), (32, 0)):
        lines: list[str] = []
        build_training_data(qc_dataset, None, dataclasses.replace(NnqcConfig.preset("tiny"), size=size,
                                                                  field_of_view="spacing"), 0, log=lines.append)
        assert len(lines) == expected
    assert lines == []
    # the same 16 px slices over a field of view sized by the foreground (the default): every ground truth fits
    data = build_training_data(qc_dataset, None, NnqcConfig.preset("tiny").with_overrides(size=16), 0,
                               log=lines.append)
    assert lines == [] and data.plan is not None and data.plan.target_spacing[0] > 1.5
    plan = SimpleNamespace(size=96, target_spacing=(1.5625, 1.5625))
    assert window_cut_note({"a": 0.0, "b": 0.2, "c": 0.05, "d": 0.01}, plan) == (
        "warning: 2 of 4 training ground truths have more than 1 % of their foreground outside the 150 x 150 mm "
        "window the model sees (most: 20 % of b); their pGTs will be cut there: --set field_of_view=foreground (or a "
        "width in mm) sees the whole structure")
    assert window_cut_note({"a": 0.01}, plan) is None
    assert window_cut_note({"b": 0.2}, plan, "foreground").endswith(
        "their pGTs will be cut there: a wider --set field_of_view (a width in mm) sees the whole structure")


def test_qcresunet_and_the_autoencoder_train_on_the_field_of_view_of_their_config(qc_dataset, tmp_path):
    """A 40 mm field of view at 32 px: 1.25 mm pixels in the plan each training builds (the toy
    data's own spacing is 1 mm)."""
    from segqc.qc.baselines.cae.config import CaeConfig
    from segqc.qc.baselines.cae.train import train_from_dataset
    from segqc.qc.qcresunet.train import build_training_data
    from segqc.training.checkpoints import read_checkpoint_meta

    data = build_training_data(qc_dataset, None, QcResUNetConfig.preset("tiny").with_overrides(field_of_view=40),
                               tmp_path / "work")
    assert data.plan.target_spacing == (1.25, 1.25)
    model_dir = train_from_dataset(qc_dataset, tmp_path / "cae", config=CaeConfig.preset("tiny").with_overrides(
        field_of_view=40, epochs=1), log=lambda _: None)
    assert read_checkpoint_meta(model_dir)["config"]["plan"]["target_spacing"] == [1.25, 1.25]


def _perfect_case(qc_dataset: Path, root: Path) -> tuple[Path, Path]:
    images, segs = root / "images", root / "segs"
    images.mkdir(parents=True)
    segs.mkdir(parents=True)
    shutil.copy(qc_dataset / "imagesTr" / "case0_0000.nii.gz", images)
    shutil.copy(qc_dataset / "labelsTr" / "case0.nii.gz", segs)
    return images, segs


def test_a_window_that_cuts_a_perfect_segmentation_lowers_its_estimate_and_says_so(qc_dataset, tmp_path):
    """The oracle's pGT is the ground truth inside its window: with a 48 px window the ellipses
    (up to 26 px across) fit and the perfect segmentation scores Dice 1 without a warning; with a
    12 px window the pGT is cut, the estimate falls below 1 and the case's warning names the file."""
    images, segs = _perfect_case(qc_dataset, tmp_path)
    settings = QcSettings(metrics=("dice",), samples=1)
    table, _, report = qc_folder(tmp_path, images, segs, tmp_path / "wide", model=oracle_model(qc_dataset),
                                 settings=settings)
    assert table.loc[table["label"].astype(str) == "all", "estimate"].item() == pytest.approx(1.0)
    assert not [w for w in report["warnings"] if "window" in w]
    table, _, report = qc_folder(tmp_path, images, segs, tmp_path / "narrow",
                                 model=oracle_model(qc_dataset, size=12), settings=settings)
    assert table.loc[table["label"].astype(str) == "all", "estimate"].item() < 0.9
    (warning,) = [w for w in report["warnings"] if "window" in w]
    assert warning.startswith(f"{segs / 'case0.nii.gz'}: ")
    assert "of the segmentation's foreground lies outside the" in warning


# --------------------------------------------------------------------------------------------
# An ensemble's error maps
# --------------------------------------------------------------------------------------------


def test_three_members_vote_where_their_mean_probability_says_otherwise():
    """Member probabilities (0.9, 0.3, 0.3): one vote of three, not wrong, though their mean (0.5)
    reaches the threshold; (0.55, 0.55, 0): two votes, wrong, though the mean is 0.37."""
    errors = np.array([[[0.9, 0.55]], [[0.3, 0.55]], [[0.3, 0.0]]])  # (M=3, C=1, 2 voxels)
    assert fuse_error_maps(errors, np.full((3, 1), 0.5)).tolist() == [[False, True]]
    assert fuse_error_maps(errors, np.full((3, 1), 0.5), "mean").tolist() == [[True, False]]


def test_each_member_votes_with_its_own_threshold_and_an_even_split_falls_to_the_mean():
    """Two members, thresholds 0.2 and 0.8: probabilities (0.3, 0.3) give one vote each way, and
    the mean 0.3 against the mean threshold 0.5 decides (not wrong); (0.3, 0.9): both vote wrong;
    (0.1, 0.95): split again, mean 0.525 >= 0.5, wrong. One member is its own map."""
    errors = np.array([[[0.3, 0.3, 0.1]], [[0.3, 0.9, 0.95]]])
    thresholds = np.array([[0.2], [0.8]])
    assert fuse_error_maps(errors, thresholds).tolist() == [[False, True, True]]
    single = np.array([[[0.2, 0.6, 0.5]]])
    assert fuse_error_maps(single, np.array([[0.5]])).tolist() == [[False, True, True]]
    assert fuse_error_maps(single, None).tolist() == [[False, True, True]]


def test_ensembles_vote_by_default_and_the_setting_is_checked():
    assert QcResUNetConfig().ensemble_errors == "vote"
    assert QcResUNetConfig.preset("paper").ensemble_errors == "vote"
    with pytest.raises(ValueError, match="ensemble_errors must be one of vote, mean"):
        QcResUNetConfig(ensemble_errors="max")


# --------------------------------------------------------------------------------------------
# The loss's weighting
# --------------------------------------------------------------------------------------------


def _two_class_output() -> QcResUNetOutput:
    """One sample, two classes; error-map probabilities 0.5 / 0.75 (class 1) and 0.25 / 0.5 (class 2)."""
    third = math.log(3.0)
    return QcResUNetOutput(dice=torch.tensor([[0.5, 0.8, 0.4]]), nsd=torch.tensor([[0.2, 0.4, 0.6]]),
                           sem_logits=torch.tensor([[[[0.0, third]], [[-third, 0.0]]]]))


def test_the_paper_weighting_gives_the_whole_estimate_weight_one_and_sums_the_classes_dice():
    """Absolute errors, Dice (0.2 | 0.0, 0.2) and NSD (0.1 | 0.3, 0.1): ``mean`` averages the three
    entries, ``paper`` takes the first at weight 1 plus the mean of the classes'. The error-map
    Dice of class 1 (truth 1, 0) is 2 * 0.5 / (1.25 + 1) and of class 2 (truth 0, 1) 2 * 0.5 / (0.75 + 1):
    ``mean`` takes 1 - their mean, ``paper`` 2 - their sum (section 2.3.3)."""
    out = _two_class_output()
    dice_true, nsd_true = torch.tensor([[0.7, 0.8, 0.6]]), torch.tensor([[0.1, 0.1, 0.5]])
    sem_true = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    dice_1, dice_2 = 1.0 / 2.25, 1.0 / 1.75
    _, mean = qcresunet_loss(out, dice_true, nsd_true, sem_true)
    total, paper = qcresunet_loss(out, dice_true, nsd_true, sem_true, lam=1.0, weighting="paper")
    assert mean["mae_dice"].item() == pytest.approx((0.2 + 0.0 + 0.2) / 3, abs=1e-6)
    assert mean["mae_nsd"].item() == pytest.approx((0.1 + 0.3 + 0.1) / 3, abs=1e-6)
    assert paper["mae_dice"].item() == pytest.approx(0.2 + (0.0 + 0.2) / 2, abs=1e-6)
    assert paper["mae_nsd"].item() == pytest.approx(0.1 + (0.3 + 0.1) / 2, abs=1e-6)
    assert mean["sem_dice"].item() == pytest.approx(1 - (dice_1 + dice_2) / 2, abs=1e-5)
    assert paper["sem_dice"].item() == pytest.approx(2 - (dice_1 + dice_2), abs=1e-5)
    assert paper["sem_bce"].item() == pytest.approx(mean["sem_bce"].item())
    assert total.item() == pytest.approx(paper["mae"].item() + paper["sem_dice"].item() + paper["sem_bce"].item(),
                                         abs=1e-6)
    with pytest.raises(ValueError, match="weighting must be one of mean, paper"):
        qcresunet_loss(out, dice_true, nsd_true, sem_true, weighting="sum")


def test_the_paper_preset_trains_with_the_paper_weighting():
    assert QcResUNetConfig.preset("paper").loss_weighting == "paper"
    assert QcResUNetConfig.preset("small").loss_weighting == "mean"
    assert QcResUNetConfig().loss_weighting == "mean"  # models saved before the setting existed
