"""LDSeg on stacks of slices (config ``spatial_dims`` 3): the networks keep the slice axis and
halve only in-plane, a 3D model reads neighbouring slices where a 2D one does not, training
stacks are consecutive slices of one case, prediction covers every slice of a case of any length
with seeded noise, and a tiny 3D model trained through ``segqc seg train`` finds balls in held-out
volumes on their own grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ldseg_toy_data import ball_volume, foreground_dice, make_ball_dataset
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.seg.inference import segment_case
from segqc.seg.ldseg.config import LdsegConfig
from segqc.seg.ldseg.model import Ldseg
from segqc.seg.ldseg.predict import LoadedLdseg, load, predict_slices, stack_starts
from segqc.seg.slices import SliceData, make_stack_batch


def _loaded(config: LdsegConfig, *, channels: int = 1, classes: int = 2, seed: int = 0) -> LoadedLdseg:
    torch.manual_seed(seed)
    model = Ldseg(config, image_channels=channels, classes=classes)
    with torch.no_grad():  # away from the zero-initialised output layers, so every input matters
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return LoadedLdseg(model.eval(), config, tuple(range(classes)), {}, channels)


def test_a_3d_network_keeps_the_slices_and_halves_only_in_plane():
    config = LdsegConfig.preset("tiny", spatial_dims=3, depth=4, thin_levels=1)
    model = Ldseg(config, image_channels=2, classes=3).eval()
    image = torch.randn(2, 2, 4, 32, 32)
    gt = torch.randint(0, 3, (2, 4, 32, 32))
    onehot = torch.nn.functional.one_hot(gt, 3).movedim(-1, 1).float()
    latent = (2, config.latent_channels, 4, 2, 2)  # four stride-(1, 2, 2) stages: 32 px -> 2 px, 4 slices kept
    assert model.image_encoder(image).shape == latent
    assert model.label_encoder(onehot).shape == latent
    assert model.label_decoder(torch.randn(latent)).shape == (2, 3, 4, 32, 32)
    probs = model.sample(image, samples=3, steps=2, generator=torch.Generator().manual_seed(0))
    assert probs.shape == (3, 2, 3, 4, 32, 32)
    assert torch.allclose(probs.sum(dim=2), torch.ones(3, 2, 4, 32, 32), atol=1e-5)
    loss, parts = model.training_loss(image, gt, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and parts["loss"] == pytest.approx(parts["ce"] + 2 * parts["dice"] + parts["mse"],
                                                                   rel=1e-5)
    stem = model.image_encoder.body[0]
    assert isinstance(stem, torch.nn.Conv3d) and stem.kernel_size == (1, 3, 3)  # thin_levels=1: the stem is thin
    assert model.image_encoder.body[1].conv1.kernel_size == (3, 3, 3) and model.image_encoder.body[1].conv1.stride == (
        1, 2, 2)


@pytest.mark.parametrize("dims", [2, 3])
def test_a_3d_model_reads_the_neighbouring_slices_and_a_2d_model_does_not(dims):
    config = LdsegConfig.preset("tiny", spatial_dims=dims, depth=4, decoder_skips=True)
    loaded = _loaded(config)
    images = np.random.default_rng(0).normal(size=(4, 1, 32, 32)).astype(np.float32)
    changed = images.copy()
    changed[3] += 2.0 * np.random.default_rng(1).normal(size=(1, 32, 32)).astype(np.float32)  # only the last slice
    before = predict_slices(loaded, images, samples=1, seed=0)["mean"]
    after = predict_slices(loaded, changed, samples=1, seed=0)["mean"]
    assert not np.allclose(before[3], after[3], atol=1e-4)
    moved = float(np.abs(before[0] - after[0]).max())  # the first slice, three slices away
    assert (moved > 1e-4) if dims == 3 else (moved == 0.0), moved


def test_training_stacks_are_consecutive_slices_of_one_case_and_short_cases_are_padded():
    # case a: slices 0-2 (3 slices), case b: slices 3-12 (10); every pixel holds its slice's index + 1
    n = 13
    images = np.repeat(np.arange(1, n + 1, dtype=np.float16)[:, None, None, None], 8, axis=2).repeat(8, axis=3)
    gts = (np.arange(n)[:, None, None] % 3).astype(np.uint8).repeat(8, axis=1).repeat(8, axis=2) + 1
    data = SliceData(images, gts, ["a"] * 3 + ["b"] * 10, (0, 1, 2, 3))
    image, gt = make_stack_batch(data, [1, 5, 12], 4)
    assert image.shape == (3, 1, 4, 8, 8) and gt.shape == (3, 4, 8, 8)
    slice_ids = image[:, 0, :, 0, 0].numpy()
    assert slice_ids[0].tolist() == [1, 2, 3, 1]  # case a: all 3 slices, then padding with the stack's minimum
    assert gt[0, 3].max() == 0 and gt[0, :3].min() >= 1  # padded slice: background
    assert slice_ids[1].tolist() == [4, 5, 6, 7]  # slice 5 -> 3..6: centred as far as case b's start allows
    assert slice_ids[2].tolist() == [10, 11, 12, 13]  # slice 12 -> the case's last four
    assert gt[1, :, 0, 0].tolist() == [(k % 3) + 1 for k in range(3, 7)]


def test_3d_prediction_covers_every_slice_is_seeded_and_uses_half_overlapping_stacks_of_the_training_depth():
    config = LdsegConfig.preset("tiny", spatial_dims=3, depth=4)
    loaded = _loaded(config)
    rng = np.random.default_rng(2)
    short = rng.normal(size=(3, 1, 32, 32)).astype(np.float32)  # one stack, padded to 4 slices inside
    result = predict_slices(loaded, short, samples=2, seed=5)
    assert result["mean"].shape == (3, 2, 32, 32) and result["label"].shape == (3, 32, 32)
    assert result["entropy"].shape == (3, 32, 32) and result["std"].shape == (3, 2, 32, 32)
    again = predict_slices(loaded, short, samples=2, seed=5)
    np.testing.assert_array_equal(result["mean"], again["mean"])
    assert not np.allclose(predict_slices(loaded, short, samples=2, seed=6)["mean"], result["mean"])
    assert stack_starts(3, 4) == [0] and stack_starts(4, 4) == [0]
    assert stack_starts(9, 4) == [0, 2, 4, 5] and stack_starts(8, 4) == [0, 2, 4]
    long = rng.normal(size=(9, 1, 32, 32)).astype(np.float32)
    whole = predict_slices(loaded, long, samples=1, seed=0)["mean"]
    assert whole.shape[0] == 9
    first = predict_slices(loaded, long[:4], samples=1, seed=0)["mean"]
    np.testing.assert_allclose(whole[:2], first[:2], atol=1e-6)  # slices 0-1 lie in the first window only
    assert not np.allclose(whole[2:4], first[2:4], atol=1e-4)  # slices 2-3 also in the second: averaged


def test_the_3d_config_checks_the_stack_depth():
    with pytest.raises(ValueError, match="multiple of 2"):
        LdsegConfig.preset("tiny", spatial_dims=3, depth=3)  # the tiny denoiser halves the slices once
    with pytest.raises(ValueError, match="spatial_dims"):
        LdsegConfig.preset("tiny", spatial_dims=4)
    assert LdsegConfig.preset("small", spatial_dims=3, depth=8).depth_multiple == 4


@pytest.fixture(scope="module")
def trained_3d(tmp_path_factory):
    data = make_ball_dataset(tmp_path_factory.mktemp("balls"))
    out = tmp_path_factory.mktemp("ldseg3d_run")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    result = CliRunner().invoke(app, ["seg", "train", "ldseg", str(data), "-o", str(out), "--config", "tiny",
                                      "--set", "spatial_dims=3", "--set", "depth=4", "--set", "thin_levels=1",
                                      "--set", "steps_train=150", "--device", "cpu", "-q"])
    torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    return out


def test_a_tiny_3d_ldseg_trains_and_finds_balls_in_held_out_volumes_on_their_grid(trained_3d):
    losses = json.loads((trained_3d / "model" / "metrics.json").read_text())["train"]["losses"]["loss"]
    assert len(losses) == 150 and np.mean(losses[-20:]) < 0.6 * np.mean(losses[:20])
    model = load(trained_3d)
    assert model.config.spatial_dims == 3
    rng = np.random.default_rng(77)
    scores = []
    for shape in ((32, 32, 6), (40, 36, 9)):  # another grid and another number of slices than in training
        image, truth = ball_volume(rng, shape)
        label = segment_case(model, predict_slices, [image], samples=2, seed=0)["label"]
        assert label.shape == truth.shape
        scores.append(foreground_dice(label, truth))
    assert min(scores) > 0.5, scores
