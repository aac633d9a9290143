"""Segmentation inference options and training slices: the sample count a user asks for, the
saved outputs of a rerun into one folder, z-scored slices, 3D stacks at a case's end and
multi-rater folders of several channels or without foreground. The model is an untrained tiny
U-Net with dropout written by ``save_checkpoint``; expected values come from hand computation,
numpy and files read back with nibabel and pandas."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel
import numpy as np
import pandas as pd
import pytest
import torch
from dataset_folders import write_dataset

import segqc.seg.inference as inference
from segqc.errors import InputError
from segqc.io.geometry import Geometry
from segqc.io.images import write_image
from segqc.seg.inference import predict_folder
from segqc.seg.rater_slices import build_rater_data
from segqc.seg.slices import SliceData, build_training_data, image_slices, make_stack_batch
from segqc.seg.unet.config import UnetConfig
from segqc.seg.unet.model import build_unet
from segqc.training import save_checkpoint

GEOMETRY = Geometry(shape=(32, 32), spacing=(0.5, 0.5), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0))


def _save_unet(directory: Path, seed: int = 0) -> Path:
    """An untrained tiny U-Net (dropout 0.3, 4 samples by default; weights drawn with ``seed``) as a
    checkpoint."""
    config = dataclasses.replace(UnetConfig.preset("tiny"), dropout=0.3, samples=4)
    torch.manual_seed(seed)
    state = build_unet(config, image_channels=1, classes=2).state_dict()
    save_checkpoint(directory, method="unet", config={"unet": config.to_dict(), "labels": [0, 1], "names": {},
                                                      "image_channels": 1}, weights={"unet": state})
    return directory


def _images(root: Path) -> Path:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:32, :32]
    image = 100.0 * (np.hypot(yy - 16, xx - 14) < 9) + rng.normal(0, 10, (32, 32))
    write_image(root / "a_0000.nii.gz", image.astype(np.float32), GEOMETRY)
    return root


def test_the_requested_sample_count_is_used_and_recorded(tmp_path):
    """Reference, by hand: samples=2 on a model whose default is 4 writes two sample maps
    (samples/a_00, samples/a_01) and 2 in cases.csv (read with pandas); the default gives 4."""
    model, images = _save_unet(tmp_path / "model"), _images(tmp_path / "images")
    predict_folder(model, images, tmp_path / "two", samples=2, save=["samples"])
    assert sorted(p.name for p in (tmp_path / "two" / "samples").iterdir()) == ["a_00.nii.gz", "a_01.nii.gz"]
    assert pd.read_csv(tmp_path / "two" / "cases.csv")["samples"].tolist() == [2]
    predict_folder(model, images, tmp_path / "default")
    assert pd.read_csv(tmp_path / "default" / "cases.csv")["samples"].tolist() == [4]


class _Config:
    """A model config that adds ``timesteps`` = 3 to the wrapped one."""

    timesteps = 3

    def __init__(self, config) -> None:
        self._config = config

    def __getattr__(self, name: str):
        return getattr(self._config, name)


class _ThreeTimesteps:
    """The U-Net seen by the folder inference as a diffusion model of 3 timesteps."""

    def __init__(self, model) -> None:
        self._model = model
        self.config = _Config(model.config)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def test_steps_may_equal_the_number_of_diffusion_timesteps(tmp_path, monkeypatch):
    """Reference, by hand: with 3 diffusion timesteps, 3 DDIM steps are the most there can be
    (allowed, 3 in cases.csv read with pandas) and 4 are too many (InputError)."""
    real = inference.load_seg_model

    def load(model_dir, *, device="cpu"):
        model, predict = real(model_dir, device=device)
        return _ThreeTimesteps(model), predict

    monkeypatch.setattr(inference, "load_seg_model", load)
    model, images = _save_unet(tmp_path / "model"), _images(tmp_path / "images")
    with pytest.raises(InputError, match="at most the model's 3 diffusion steps"):
        predict_folder(model, images, tmp_path / "four", samples=1, steps=4)
    assert predict_folder(model, images, tmp_path / "three", samples=1, steps=3).done == ["a"]
    assert pd.read_csv(tmp_path / "three" / "cases.csv")["steps"].tolist() == [3]


def test_a_rerun_asking_for_more_outputs_computes_the_case_again(tmp_path):
    """Reference: the folder listing and nibabel. A first run saves no probabilities; a rerun into
    the same folder that asks for them must compute the case again and write
    probabilities/a_0 and a_1 (summing to 1 per voxel)."""
    model, images = _save_unet(tmp_path / "model"), _images(tmp_path / "images")
    out = tmp_path / "out"
    assert predict_folder(model, images, out, samples=2).done == ["a"]
    assert not (out / "probabilities").exists()
    rerun = predict_folder(model, images, out, samples=2, save=["probabilities"])
    assert rerun.reused == [] and rerun.done == ["a"]
    p0, p1 = (np.asarray(nibabel.load(out / "probabilities" / f"a_{v}.nii.gz").get_fdata()) for v in (0, 1))
    np.testing.assert_allclose(p0 + p1, 1.0, atol=1e-5)


def _probability(out: Path) -> np.ndarray:
    return np.asarray(nibabel.load(out / "probabilities" / "a_1.nii.gz").get_fdata())


def test_weights_rewritten_in_place_are_used_by_the_next_run(tmp_path):
    """Reference: the same new weights saved into a folder of their own and run there (files read
    with nibabel). After the first run, other weights are saved into the model folder; a run into a
    new output folder must use them, not the weights of the first run."""
    model, images = _save_unet(tmp_path / "model"), _images(tmp_path / "images")
    predict_folder(model, images, tmp_path / "old", samples=2, save=["probabilities"])
    _save_unet(model, seed=1)
    predict_folder(model, images, tmp_path / "new", samples=2, save=["probabilities"])
    predict_folder(_save_unet(tmp_path / "reference", seed=1), images, tmp_path / "reference_out", samples=2,
                   save=["probabilities"])
    assert np.abs(_probability(tmp_path / "old") - _probability(tmp_path / "reference_out")).max() > 1e-4
    np.testing.assert_array_equal(_probability(tmp_path / "new"), _probability(tmp_path / "reference_out"))


def test_a_dataset_without_foreground_is_refused(tmp_path):
    """Reference, by hand: both label maps of this nnU-Net folder are background only: InputError."""
    rng = np.random.default_rng(3)
    write_dataset(tmp_path, {f"c_{k:03d}": (rng.normal(0, 1, (32, 32)).astype(np.float32), np.zeros((32, 32), np.uint8),
                                            GEOMETRY) for k in range(2)},
                  labels={"background": 0, "thing": 1}, name="empty")
    with pytest.raises(InputError, match="no ground-truth slice with foreground"):
        build_training_data(tmp_path, None, 32)


def test_slices_are_z_scored_over_the_case():
    """Reference: numpy's (x - mean) / std of the channel (already at the slice size, so the
    resampling leaves it as it is)."""
    rng = np.random.default_rng(0)
    channel = (rng.normal(0, 40.0, (32, 32)) + 300.0).astype(np.float32)
    expected = (channel.astype(np.float64) - channel.mean(dtype=np.float64)) / channel.std(dtype=np.float64)
    got = image_slices([channel], 32)
    assert got.shape == (1, 1, 32, 32)
    np.testing.assert_allclose(got[0, 0], expected, atol=1e-4)


def test_a_stack_at_the_end_of_a_case_holds_its_last_slices():
    """Reference, by hand: one case of 5 slices (slice i filled with i), depth 3: the stack of
    slice 4 is slices 2, 3, 4 (no padding), of slice 0 slices 0, 1, 2."""
    images = np.broadcast_to(np.arange(5, dtype=np.float16).reshape(5, 1, 1, 1), (5, 1, 4, 4)).copy()
    gts = np.broadcast_to((np.arange(5) % 2).astype(np.uint8).reshape(5, 1, 1), (5, 4, 4)).copy()
    data = SliceData(images, gts, ["a"] * 5, (0, 1))
    image, gt = make_stack_batch(data, [4, 0], 3)
    assert image.shape == (2, 1, 3, 4, 4) and gt.shape == (2, 3, 4, 4)
    assert image[0, 0, :, 0, 0].tolist() == [2.0, 3.0, 4.0]
    assert gt[0, :, 0, 0].tolist() == [0, 1, 0]
    assert image[1, 0, :, 0, 0].tolist() == [0.0, 1.0, 2.0]


def _rater_case(folder: Path, channels: list[np.ndarray], masks: list[np.ndarray]) -> None:
    names = ["image.nii.gz"] if len(channels) == 1 else [f"image_{c:04d}.nii.gz" for c in range(len(channels))]
    for name, channel in zip(names, channels):
        write_image(folder / name, channel.astype(np.float32), GEOMETRY)
    for r, mask in enumerate(masks, start=1):
        write_image(folder / f"rater_{r}.nii.gz", mask.astype(np.uint8), GEOMETRY)


def test_rater_slices_keep_every_image_channel(tmp_path):
    """Reference: numpy's z-score of each of the two channels written here (the images are stored
    as float16)."""
    rng = np.random.default_rng(1)
    first = rng.normal(10.0, 3.0, (32, 32))
    second = rng.normal(-50.0, 20.0, (32, 32))
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 10:22] = 1
    _rater_case(tmp_path / "case000", [first, second], [mask, mask])
    data = build_rater_data(tmp_path, None, 32)
    assert data.images.shape == (1, 2, 32, 32)
    for c, channel in enumerate((first.astype(np.float32), second.astype(np.float32))):
        expected = (channel - channel.mean(dtype=np.float64)) / channel.std(dtype=np.float64)
        np.testing.assert_allclose(data.images[0, c].astype(np.float64), expected, atol=5e-3)


def test_a_rater_folder_without_any_foreground_is_refused(tmp_path):
    """Reference, by hand: every rater's mask is empty, so nothing can be learnt: InputError."""
    rng = np.random.default_rng(2)
    empty = np.zeros((32, 32), np.uint8)
    for k in range(2):
        _rater_case(tmp_path / f"case{k:03d}", [rng.normal(0, 1, (32, 32))], [empty, empty])
    with pytest.raises(InputError, match="no rater's mask has foreground"):
        build_rater_data(tmp_path, None, 32)


ALLOCATOR_FAILURE = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                     "tried to allocate 104857600000 bytes. Error code 12 (Cannot allocate memory)")


def test_running_out_of_memory_fails_the_case_with_one_line_naming_the_option(tmp_path, monkeypatch):
    """Once: `--samples 100000` ended in a traceback of PyTorch's allocator. Now the case fails
    with one line naming its image and --samples; other errors are not touched."""
    def allocate(*args, **kwargs):
        raise RuntimeError(ALLOCATOR_FAILURE)

    monkeypatch.setattr(inference, "segment_case", allocate)
    model, images = _save_unet(tmp_path / "model"), _images(tmp_path / "images")
    report = predict_folder(model, images, tmp_path / "out", samples=100000)
    assert report.failed == {
        "a": f"{images / 'a_0000.nii.gz'}: ran out of memory drawing 100000 sample(s) per slice; lower --samples"}

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(inference, "segment_case", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        predict_folder(model, images, tmp_path / "bug", samples=2)


def test_a_gpu_out_of_memory_also_names_the_cpu_as_the_way_out(tmp_path, monkeypatch):
    """PyTorch's CUDA allocator failure (``torch.OutOfMemoryError``, a RuntimeError) gets the same
    line plus --device cpu; the CPU allocator's failure (above) does not."""
    def allocate(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.11 GiB total "
                                     "capacity; 78.50 GiB already allocated)")

    monkeypatch.setattr(inference, "segment_case", allocate)
    model, images = _save_unet(tmp_path / "model"), _images(tmp_path / "images")
    report = predict_folder(model, images, tmp_path / "out", samples=64)
    assert report.failed == {
        "a": f"{images / 'a_0000.nii.gz'}: ran out of memory drawing 64 sample(s) per slice; lower --samples; the "
             "GPU's memory ran out: --device cpu runs in the machine's memory"}


def test_a_model_path_that_is_a_file_or_names_no_method_is_named_in_plain_words(tmp_path):
    """Once: "model directory not found" for a file, "model of method 'None'" for a config.json
    without a method."""
    from segqc.training import CheckpointError

    model, images = _save_unet(tmp_path / "model"), _images(tmp_path / "images")
    with pytest.raises(CheckpointError) as file:
        predict_folder(model / "config.json", images, tmp_path / "file")
    assert str(file.value) == (f"{model / 'config.json'}: is a file; give the model's folder (the one holding "
                               "config.json)")
    (model / "config.json").write_text("{}")
    with pytest.raises(CheckpointError) as nameless:
        predict_folder(model, images, tmp_path / "nameless")
    assert str(nameless.value) == (f"{model / 'config.json'}: names no method; expected a segmentation model "
                                   "(ldseg, unet, consensus, probunet)")


def test_a_model_without_sampler_or_dropout_records_what_ran_and_says_what_it_ignored(tmp_path):
    """A deterministic U-Net given --samples 4 --steps 4 made one pass and wrote samples=4,
    steps=4 into cases.csv without a word."""
    config = dataclasses.replace(UnetConfig.preset("tiny"), dropout=0.0)
    state = build_unet(config, image_channels=1, classes=2).state_dict()
    model = tmp_path / "model"
    save_checkpoint(model, method="unet", config={"unet": config.to_dict(), "labels": [0, 1], "names": {},
                                                  "image_channels": 1}, weights={"unet": state})
    images = _images(tmp_path / "images")
    report = predict_folder(model, images, tmp_path / "out", samples=4, steps=4)
    row = pd.read_csv(tmp_path / "out" / "cases.csv").iloc[0]
    assert (row["samples"], row["steps"]) == (1, 0)
    assert report.warnings[:2] == ["the unet model takes no sampler steps; --steps 4 was ignored",
                                   "the model has no dropout, so every pass is the same: one pass instead of "
                                   "--samples 4"]
    report = predict_folder(_save_unet(tmp_path / "dropout"), images, tmp_path / "mc", samples=3)
    assert not report.warnings  # with dropout the passes differ: three of them
    assert pd.read_csv(tmp_path / "mc" / "cases.csv")["samples"].tolist() == [3]
