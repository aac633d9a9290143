"""The U-Net baseline of ``segqc seg`` (deterministic and MC dropout): it learns the synthetic
disks, one deterministic pass has no spread while MC dropout has one that depends on the seed, the
checkpoint reproduces the network, and ``segqc seg predict`` serves it through the same folder
inference as LDSeg (the method is read from the checkpoint)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ldseg_toy_data import disk_image, foreground_dice
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.io.geometry import Geometry
from segqc.io.images import read_image, read_label_map, write_image
from segqc.seg.inference import segment_case
from segqc.seg.slices import image_slices
from segqc.seg.unet.config import UnetConfig
from segqc.seg.unet.model import build_unet
from segqc.seg.unet.predict import LoadedUnet, load, predict_slices
from segqc.training import save_checkpoint

runner = CliRunner()


def _held_out(n: int = 6):
    rng = np.random.default_rng(123)
    return [disk_image(rng) for _ in range(n)]


@pytest.fixture(scope="module")
def trained_unet(disk_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("unet_run")
    result = runner.invoke(app, ["seg", "train", "unet", str(disk_dataset), "-o", str(out), "--config", "tiny",
                                 "--set", "dropout=0.2", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    return out


def test_the_trained_unet_beats_an_all_background_map(trained_unet):
    model = load(trained_unet)
    scores = [foreground_dice(segment_case(model, predict_slices, [image])["label"], gt) for image, gt in _held_out()]
    assert np.mean(scores) > 0.6, scores  # an all-background map scores 0
    losses = json.loads((trained_unet / "model" / "metrics.json").read_text())["train"]["losses"]["loss"]
    assert np.mean(losses[-30:]) < 0.6 * np.mean(losses[:30])


def test_one_pass_is_deterministic_and_mc_dropout_spreads_with_the_seed(trained_unet):
    model = load(trained_unet)
    slices = np.concatenate([image_slices([image], model.size) for image, _ in _held_out(3)])
    one = predict_slices(model, slices, samples=1)
    assert float(np.abs(one["std"]).max()) == 0.0
    again = predict_slices(model, slices, samples=1, seed=5)
    np.testing.assert_array_equal(one["mean"], again["mean"])  # no dropout at samples=1: seed-free
    mc = predict_slices(model, slices, samples=8, seed=1)
    assert float(mc["std"].max()) > 0.01 and float(mc["entropy"].mean()) > float(one["entropy"].mean())
    np.testing.assert_array_equal(mc["mean"], predict_slices(model, slices, samples=8, seed=1)["mean"])
    assert not np.array_equal(mc["mean"], predict_slices(model, slices, samples=8, seed=2)["mean"])
    assert not any(m.training for m in model.network.modules())  # dropout switched off again


def test_checkpoint_round_trip_and_dropout_free_model(tmp_path):
    config = UnetConfig.preset("tiny")
    torch.manual_seed(0)
    network = build_unet(config, image_channels=1, classes=2).eval()
    save_checkpoint(tmp_path / "m", method="unet", config={"unet": config.to_dict(), "labels": [0, 1], "names": {},
                                                           "image_channels": 1},
                    weights={"unet": network.state_dict()})
    model = load(tmp_path / "m")
    x = torch.randn(2, 1, config.size, config.size)
    with torch.no_grad():
        expected = torch.softmax(network(x), dim=1).numpy()
    result = predict_slices(model, x.numpy(), samples=4)  # no dropout: 4 samples are one pass
    np.testing.assert_allclose(result["mean"], expected, atol=1e-6)
    assert float(result["std"].max()) == 0.0
    assert isinstance(model, LoadedUnet) and model.steps == 1


def test_seg_predict_serves_the_unet_and_refuses_a_qc_model(trained_unet, tmp_path):
    image, gt = _held_out(1)[0]
    geometry = Geometry(shape=image.shape, spacing=(0.7, 0.5), origin=(3.0, -2.0), direction=(1.0, 0.0, 0.0, 1.0))
    write_image(tmp_path / "images" / "a_0000.nii.gz", image, geometry)
    result = runner.invoke(app, ["seg", "predict", str(trained_unet), str(tmp_path / "images"), "-o",
                                 str(tmp_path / "out"), "--samples", "4", "-q"])
    assert result.exit_code == 0, result.output
    label = read_label_map(tmp_path / "out" / "a.nii.gz")
    assert label.geometry == read_image(tmp_path / "images" / "a_0000.nii.gz").geometry
    assert foreground_dice(label.array, gt) > 0.6
    assert read_image(tmp_path / "out" / "uncertainty" / "a.nii.gz").array.max() > 0  # MC dropout: some spread
    save_checkpoint(tmp_path / "qc", method="qcresunet", config={}, weights={"net": {"w": torch.zeros(1)}})
    refused = runner.invoke(app, ["seg", "predict", str(tmp_path / "qc"), str(tmp_path / "images"), "-o",
                                  str(tmp_path / "out2")])
    assert refused.exit_code == 2 and refused.output.strip().count("\n") == 0
    assert "not a segmentation model" in refused.output
