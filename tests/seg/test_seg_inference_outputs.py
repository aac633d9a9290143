"""The folder inference and the training slices: a rerun into one output folder
recomputes when the seed or the weights changed; entropy in nats; label values above 255; the
per-case scores; padding, flips and antialiased resizing of slices. The models are untrained tiny
U-Nets with dropout written by ``save_checkpoint`` (no training); expected values come from hand
computation, scipy, PIL and files read back with nibabel."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import nibabel
import numpy as np
import pandas as pd
import pytest
import torch
from ldseg_toy_data import disk_image
from PIL import Image
from safetensors.torch import load_file
from scipy.stats import entropy as scipy_entropy

import segqc.seg.inference as inference
from segqc.io.geometry import Geometry
from segqc.io.images import write_image
from segqc.seg.inference import class_entropy, predict_folder, restore_case
from segqc.seg.slices import flip_rows, image_slices, pad_stack
from segqc.seg.unet.config import UnetConfig
from segqc.seg.unet.model import build_unet
from segqc.seg.unet.predict import load
from segqc.training import save_checkpoint

SIZE = 32  # the tiny preset's slice side


def _save_unet(directory: Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """An untrained tiny U-Net with dropout 0.3 (MC dropout: the seed matters) as a checkpoint;
    ``state``: other weights for the same network."""
    config = dataclasses.replace(UnetConfig.preset("tiny"), dropout=0.3, samples=4)
    if state is None:
        torch.manual_seed(0)
        state = build_unet(config, image_channels=1, classes=2).state_dict()
    save_checkpoint(directory, method="unet", config={"unet": config.to_dict(), "labels": [0, 1], "names": {},
                                                      "image_channels": 1}, weights={"unet": state})
    return directory


def _images(root: Path) -> Path:
    """One 2D case ``a_0000.nii.gz`` of a synthetic disk (40 x 48 px)."""
    image, _ = disk_image(np.random.default_rng(7))
    geometry = Geometry(shape=image.shape, spacing=(0.7, 0.5), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0))
    write_image(root / "a_0000.nii.gz", image, geometry)
    return root


def _probability(out: Path) -> np.ndarray:
    """The saved mean probability of label 1, read with nibabel."""
    return np.asarray(nibabel.load(out / "probabilities" / "a_1.nii.gz").get_fdata())


def test_a_rerun_with_another_seed_into_one_folder_computes_the_case_again(tmp_path):
    """Reference: files read back with nibabel. MC dropout with seed 0 and seed 1 (separate folders)
    gives different probabilities; seed 1 into seed 0's folder is computed again (not reused) and
    matches the separate seed-1 run; the same seed once more is reused."""
    model, images = _save_unet(tmp_path / "model"), _images(tmp_path / "images")
    out, separate = tmp_path / "out", tmp_path / "separate"
    first = predict_folder(model, images, out, samples=4, seed=0, save=["probabilities"])
    assert first.done == ["a"] and first.reused == []
    seed0 = _probability(out)
    predict_folder(model, images, separate, samples=4, seed=1, save=["probabilities"])
    seed1 = _probability(separate)
    assert np.abs(seed0 - seed1).max() > 1e-4  # the user's seed changes the dropout masks
    rerun = predict_folder(model, images, out, samples=4, seed=1, save=["probabilities"])
    assert rerun.reused == [] and rerun.done == ["a"]
    np.testing.assert_array_equal(_probability(out), seed1)
    assert predict_folder(model, images, out, samples=4, seed=1, save=["probabilities"]).reused == ["a"]


def test_a_rerun_after_the_weights_were_rewritten_computes_the_case_again(tmp_path):
    """Reference: the weights read with safetensors, one tensor changed by hand and the checkpoint
    written again into the same folder; the rerun into the first output folder is not reused and
    gives the probabilities of a fresh run (another folder) with the new weights."""
    model, images = _save_unet(tmp_path / "model"), _images(tmp_path / "images")
    out = tmp_path / "out"
    predict_folder(model, images, out, samples=4, seed=0, save=["probabilities"])
    before = _probability(out)
    state = load_file(model / "unet.safetensors")
    name = sorted(k for k in state if k.endswith("bias"))[-1]
    state[name] = state[name] + torch.linspace(-1.0, 1.0, state[name].numel()).reshape(state[name].shape)
    _save_unet(model, state)
    rerun = predict_folder(model, images, out, samples=4, seed=0, save=["probabilities"])
    assert rerun.reused == [] and rerun.done == ["a"]
    after = _probability(out)
    assert np.abs(after - before).max() > 1e-3
    predict_folder(model, images, tmp_path / "fresh", samples=4, seed=0, save=["probabilities"])
    np.testing.assert_allclose(after, _probability(tmp_path / "fresh"), atol=1e-6)


def test_class_entropy_is_in_nats():
    """Reference: ln 2 = 0.693147 for (0.5, 0.5); scipy's entropy (natural log) of other rows."""
    rows = np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5], [0.1, 0.2, 0.7], [1.0, 0.0, 0.0]])
    got = class_entropy(torch.tensor(rows)[..., None]).numpy()[:, 0]
    assert got[0] == pytest.approx(math.log(2)) and got[0] == pytest.approx(0.693147, abs=1e-6)
    np.testing.assert_allclose(got, [scipy_entropy(row) for row in rows], atol=1e-9)
    assert got[3] == 0.0


def test_label_values_above_255_are_written_as_uint16():
    """Reference: hand-built probabilities; class index 1 is label value 256, which uint8 cannot
    hold (it would wrap to 0), so the map is uint16 and keeps 256."""
    mean = np.zeros((1, 2, 4, 4), np.float32)
    mean[0, 0] = 1.0
    mean[0, :, 1:3, 1:3] = [[[0.2]], [[0.8]]]
    out = restore_case(SimpleNamespace(labels=(0, 256)), {"mean": mean}, (4, 4))
    expected = np.zeros((4, 4), np.uint16)
    expected[1:3, 1:3] = 256
    assert out["label"].dtype == np.uint16
    np.testing.assert_array_equal(out["label"], expected)
    assert restore_case(SimpleNamespace(labels=(0, 255)), {"mean": mean}, (4, 4))["label"].dtype == np.uint8


def test_the_case_table_has_the_foreground_uncertainty_and_the_whole_image_mean_entropy(tmp_path, monkeypatch):
    """Reference: hand computation. The method's probabilities are set by hand on a 32 x 32 image
    (the model's own slice size, so resampling keeps them): (0.3, 0.7) on 32 pixels, certain
    background elsewhere. Entropy there is H = -(0.3 ln 0.3 + 0.7 ln 0.7) = 0.610864, 0 elsewhere:
    uncertainty (foreground mean) H, mean_entropy (whole image) H * 32 / 1024."""
    model = _save_unet(tmp_path / "model")

    def hand_made(loaded, slices, *, samples, steps, seed, keep_samples=True):
        mean = np.zeros((slices.shape[0], 2, SIZE, SIZE), np.float32)
        mean[:, 0] = 1.0
        mean[:, :, 4:8, 8:16] = np.array([0.3, 0.7], np.float32)[None, :, None, None]
        return {"mean": mean, "std": np.zeros_like(mean), "samples": mean[None]}

    monkeypatch.setattr(inference, "load_seg_model", lambda directory, device="cpu": (load(directory), hand_made))
    geometry = Geometry(shape=(SIZE, SIZE), spacing=(1.0, 1.0), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0))
    image = np.random.default_rng(0).normal(size=(SIZE, SIZE)).astype(np.float32)
    write_image(tmp_path / "images" / "a_0000.nii.gz", image, geometry)
    predict_folder(model, tmp_path / "images", tmp_path / "out", samples=1)
    row = pd.read_csv(tmp_path / "out" / "cases.csv").iloc[0]
    h = -(0.3 * math.log(0.3) + 0.7 * math.log(0.7))
    assert h == pytest.approx(0.610864, abs=1e-6)
    assert row["region"] == "foreground" and row["foreground_voxels"] == 32
    assert row["uncertainty"] == pytest.approx(h, rel=1e-5)
    assert row["mean_entropy"] == pytest.approx(h * 32 / 1024, rel=1e-5)
    entropy = np.asarray(nibabel.load(tmp_path / "out" / "uncertainty" / "a.nii.gz").get_fdata())
    assert float(entropy.mean()) == pytest.approx(row["mean_entropy"], rel=1e-5)


def test_a_short_stack_is_padded_with_each_channels_own_minimum():
    """Reference: hand-built slices; channel 0 spans -1..3 and channel 1 spans 5..9, so the two
    padded slices are -1 in channel 0 and 5 in channel 1; labels are padded with class 0."""
    images = np.zeros((2, 2, 3, 3), np.float32)
    images[:, 0] = np.linspace(-1.0, 3.0, 18).reshape(2, 3, 3)
    images[:, 1] = np.linspace(5.0, 9.0, 18).reshape(2, 3, 3)
    labels = np.ones((2, 3, 3), np.int64)
    padded, padded_labels = pad_stack(images, 4, labels)
    assert padded.shape == (4, 2, 3, 3) and padded_labels is not None
    np.testing.assert_array_equal(padded[:2], images)
    assert (padded[2:, 0] == -1.0).all() and (padded[2:, 1] == 5.0).all()
    np.testing.assert_array_equal(padded_labels[2:], 0)
    np.testing.assert_array_equal(padded_labels[:2], 1)


def test_training_flips_use_both_in_plane_axes_about_equally_often():
    """Reference: the four flips of an asymmetric 3 x 4 pattern made with numpy; over 800 rows each
    occurs 200 +- 12 times by chance (binomial), so between 140 and 260 (5 sd); the targets get
    the same flip as their images."""
    pattern = np.arange(12, dtype=np.float32).reshape(3, 4)
    outcomes = {"none": pattern, "width": pattern[:, ::-1], "height": pattern[::-1, :],
                "both": pattern[::-1, ::-1]}
    rows = 800
    images = np.broadcast_to(pattern, (rows, 1, 3, 4)).copy()
    targets = np.broadcast_to(pattern.astype(np.int64), (rows, 3, 4)).copy()
    flip_rows(images, targets, np.random.default_rng(0))
    counts = dict.fromkeys(outcomes, 0)
    for row in range(rows):
        [name] = [name for name, flipped in outcomes.items() if np.array_equal(images[row, 0], flipped)]
        counts[name] += 1
        np.testing.assert_array_equal(targets[row], outcomes[name])
    assert all(140 <= n <= 260 for n in counts.values()), counts


def test_slices_are_resized_with_an_antialiased_bilinear_filter():
    """Reference: PIL's bilinear resize (which widens its filter when shrinking: antialiased) of the
    z-scored random 96 x 96 image to 32 x 32. A plain bilinear resize (no antialiasing) of white
    noise keeps far more variance, so it misses this reference by a lot."""
    image = np.random.default_rng(3).normal(2.0, 3.0, (96, 96)).astype(np.float32)
    z = ((image.astype(np.float64) - image.mean(dtype=np.float64)) / image.std(dtype=np.float64)).astype(np.float32)
    expected = np.asarray(Image.fromarray(z, mode="F").resize((32, 32), Image.Resampling.BILINEAR))
    got = image_slices([image], 32)
    assert got.shape == (1, 1, 32, 32)
    np.testing.assert_allclose(got[0, 0], expected, atol=1e-4)
    assert float(got.std()) < 0.5  # 3 x 3 averaging of unit-variance noise: about 1/3 of the spread left
