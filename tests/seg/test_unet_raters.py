"""The U-Net baseline on multi-rater folders: the targets by hand, and trained on the rater mean
it predicts the graded agreement that the majority-vote U-Net cannot."""

from __future__ import annotations

import numpy as np
import pytest
from consensus_toy_data import make_rater_folder, rater_disks

from segqc.metrics.distribution import consensus_maps
from segqc.metrics.soft import soft_dice
from segqc.seg.rater_slices import build_rater_data
from segqc.seg.unet.config import UnetConfig
from segqc.seg.unet.predict import load, predict_slices
from segqc.seg.unet.train import rater_targets, train


def test_rater_targets_by_hand():
    raters = np.array([[[[1, 1, 0]], [[1, 0, 0]], [[0, 1, 1]], [[0, 0, 0]]]], dtype=np.uint8)  # (1, 4, 1, 3)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(rater_targets("majority", raters, np.array([3]), rng), [[[1, 1, 0]]])  # >= 1.5
    np.testing.assert_array_equal(rater_targets("majority", raters, np.array([2]), rng), [[[1, 1, 0]]])  # >= 1
    soft = rater_targets("soft", raters, np.array([3]), rng)
    np.testing.assert_allclose(soft[0, 1], [[2 / 3, 2 / 3, 1 / 3]])
    np.testing.assert_allclose(soft[0, 0] + soft[0, 1], 1.0)
    drawn = {tuple(rater_targets("random", raters, np.array([3]), np.random.default_rng(s))[0, 0]) for s in range(20)}
    assert drawn == {(1, 1, 0), (1, 0, 0), (0, 1, 1)}  # only the three real raters


@pytest.fixture(scope="module")
def rater_data(tmp_path_factory):
    return build_rater_data(make_rater_folder(tmp_path_factory.mktemp("raters")), None, 32)


def _soft_dice_on_held_out(model_dir) -> tuple[float, float]:
    model = load(model_dir)
    rng = np.random.default_rng(123)
    learned, majority = [], []
    for _ in range(4):
        image, masks = rater_disks(rng, 4, 32)
        levels, mean = consensus_maps(masks)
        learned.append(soft_dice(predict_slices(model, image[None, None])["mean"][0, 1], mean).value)
        majority.append(soft_dice(levels[1].astype(float), mean).value)
    return float(np.mean(learned)), float(np.mean(majority))


def test_soft_label_unet_beats_the_majority_vote_unet(rater_data, tmp_path):
    soft_model = train(UnetConfig.preset("tiny", raters="soft"), rater_data, tmp_path / "soft", device="cpu")
    mv_model = train(UnetConfig.preset("tiny", raters="majority"), rater_data, tmp_path / "mv", device="cpu")
    soft, perfect_majority = _soft_dice_on_held_out(soft_model)
    mv, _ = _soft_dice_on_held_out(mv_model)
    assert soft > 0.88, soft
    assert mv < perfect_majority + 0.02  # a binary map cannot beat the perfect majority map by much
    assert soft > mv + 0.05, (soft, mv)
