"""LDSeg end to end on synthetic disks: training through ``segqc seg train`` lowers the loss and
beats an all-background map on held-out images, the checkpoint reproduces the in-memory model,
``segqc seg predict`` writes the label maps, entropy maps and cases.csv on each input's grid, and
more samples show where they disagree. Bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from ldseg_toy_data import disk_image, foreground_dice
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.io.geometry import Geometry
from segqc.io.images import read_image, read_label_map, write_image
from segqc.seg.inference import segment_case
from segqc.seg.ldseg.config import LdsegConfig
from segqc.seg.ldseg.model import Ldseg
from segqc.seg.ldseg.predict import LoadedLdseg, load, predict_slices
from segqc.seg.ldseg.train import save_model
from segqc.seg.slices import SliceData

runner = CliRunner()


def _held_out(n: int = 6, seed: int = 99) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [disk_image(rng) for _ in range(n)]


def test_training_lowers_the_loss(trained_ldseg):
    metrics = json.loads((trained_ldseg / "model" / "metrics.json").read_text())
    losses = metrics["train"]["losses"]
    assert len(losses["loss"]) == LdsegConfig.preset("tiny").steps_train
    first, last = np.mean(losses["loss"][:30]), np.mean(losses["loss"][-30:])
    assert last < 0.6 * first, (first, last)
    assert np.mean(losses["dice"][-30:]) < np.mean(losses["dice"][:30])
    assert np.mean(losses["mse"][-30:]) < np.mean(losses["mse"][:30])


def test_trained_model_beats_an_all_background_map_on_held_out_disks(trained_ldseg):
    model = load(trained_ldseg)  # the run folder resolves to its model
    scores = []
    for image, gt in _held_out():
        pred = segment_case(model, predict_slices, [image], samples=2, seed=0)["label"]
        assert pred.shape == gt.shape
        scores.append(foreground_dice(pred, gt))
    background = [foreground_dice(np.zeros_like(gt), gt) for _, gt in _held_out()]
    assert max(background) == 0.0
    assert np.mean(scores) > 0.5, scores


@pytest.mark.parametrize("image_side", [{}, {"image_widths": (8, 16, 16, 24), "image_blocks": 2,
                                               "image_embedding_channels": 3},
                                        {"image_widths": (8, 16, 16, 24), "decoder_skips": True},
                                        {"spatial_dims": 3, "depth": 2, "thin_levels": 1, "decoder_skips": True}])
def test_checkpoint_round_trip_equals_the_in_memory_model(tmp_path, image_side):
    config = LdsegConfig.preset("tiny", **image_side)
    torch.manual_seed(5)
    model = Ldseg(config, image_channels=1, classes=2)
    with torch.no_grad():  # weights no fresh initialisation would give (the zero output layer too)
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.eval()
    data = SliceData(np.zeros((1, 1, 32, 32), np.float16), np.zeros((1, 32, 32), np.uint8), ["c"], (0, 1))
    directory = save_model(model, data, tmp_path / "model")
    loaded = load(directory)
    images = np.random.default_rng(0).normal(size=(3, 1, 32, 32)).astype(np.float32)
    expected = predict_slices(LoadedLdseg(model, config, (0, 1), {}, 1), images, samples=2, seed=1)
    got = predict_slices(loaded, images, samples=2, seed=1)
    np.testing.assert_allclose(got["mean"], expected["mean"], atol=1e-6)
    assert loaded.labels == (0, 1) and loaded.config == config


def _write_inputs(folder):
    """A 2D case (40 x 48, spacing 0.7 x 0.5 mm, shifted origin) and a 3D case of 3 such slices
    along its last (ITK k) axis with a rotated direction; returns their ground truths."""
    folder.mkdir(parents=True)
    (image, gt), (_, _) = _held_out(2, seed=3)
    flat = Geometry(shape=(40, 48), spacing=(0.7, 0.5), origin=(3.0, -2.0), direction=(1.0, 0.0, 0.0, 1.0))
    write_image(folder / "flat_0000.nii.gz", image, flat)
    slices = _held_out(3, seed=4)
    volume = np.stack([s[0] for s in slices], axis=-1)
    direction = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    deep = Geometry(shape=volume.shape, spacing=(0.7, 0.5, 2.5), origin=(1.0, 2.0, 3.0), direction=direction)
    write_image(folder / "deep_0000.nii.gz", volume, deep)
    return {"flat": (gt, flat), "deep": (np.stack([s[1] for s in slices], axis=-1), deep)}


def test_cli_predict_writes_label_maps_entropy_and_cases_csv_on_the_input_grid(trained_ldseg, tmp_path):
    truths = _write_inputs(tmp_path / "images")
    out = tmp_path / "out"
    result = runner.invoke(app, ["seg", "predict", str(trained_ldseg / "model"), str(tmp_path / "images"),
                                 "-o", str(out), "--samples", "3", "-q"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "cases.csv", dtype={"case": str})
    assert sorted(table["case"]) == ["deep", "flat"]
    worst = table.sort_values("uncertainty", ascending=False)["case"].iloc[0]  # named first in the footer
    assert f"most uncertain (look at these first): {worst} " in result.output, result.output
    for case, (gt, geometry) in truths.items():
        label = read_label_map(out / f"{case}.nii.gz")
        entropy = read_image(out / "uncertainty" / f"{case}.nii.gz", dtype=None)
        for written in (label, entropy):
            assert written.geometry.shape == geometry.shape
            np.testing.assert_allclose(written.geometry.spacing, geometry.spacing, rtol=1e-5)
            np.testing.assert_allclose(written.geometry.origin, geometry.origin, atol=1e-4)
            np.testing.assert_allclose(written.geometry.direction, geometry.direction, atol=1e-6)
        assert set(np.unique(label.array)) <= {0, 1}
        assert entropy.array.dtype == np.float32 and entropy.array.min() >= 0
        assert foreground_dice(label.array, gt) > 0.5, case  # put back where the disk is, slice by slice
        row = table.set_index("case").loc[case]
        assert row["samples"] == 3 and row["steps"] == 2
        assert row["region"] == "foreground" and row["foreground_voxels"] == int((label.array > 0).sum())
        assert abs(row["uncertainty"] - float(entropy.array[label.array > 0].mean())) < 1e-4
    again = runner.invoke(app, ["seg", "predict", str(trained_ldseg), str(tmp_path / "images"), "-o",
                                str(tmp_path / "again"), "--samples", "3", "-q", "--jobs", "2"])
    assert again.exit_code == 0, again.output
    for case in truths:  # same seed, same files, serial or in worker processes
        np.testing.assert_array_equal(read_label_map(tmp_path / "again" / f"{case}.nii.gz").array,
                                      read_label_map(out / f"{case}.nii.gz").array)


def test_cli_predict_saves_class_probabilities_std_and_every_sample_on_request(trained_ldseg, tmp_path):
    truths = _write_inputs(tmp_path / "images")
    out = tmp_path / "out"
    result = runner.invoke(app, ["seg", "predict", str(trained_ldseg), str(tmp_path / "images"), "-o", str(out),
                                 "--samples", "4", "--save", "probabilities,std", "--save", "samples", "-q"])
    assert result.exit_code == 0, result.output
    for case, (_gt, geometry) in truths.items():
        label = read_label_map(out / f"{case}.nii.gz").array
        probs = np.stack([read_image(out / "probabilities" / f"{case}_{v}.nii.gz", dtype=None).array for v in (0, 1)])
        std = np.stack([read_image(out / "std" / f"{case}_{v}.nii.gz", dtype=None).array for v in (0, 1)])
        samples = np.stack([read_label_map(out / "samples" / f"{case}_{k:02d}.nii.gz").array for k in range(4)])
        assert probs.shape[1:] == std.shape[1:] == samples.shape[1:] == geometry.shape
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)  # a distribution per voxel
        assert np.array_equal(probs.argmax(axis=0), label)  # the label map is the argmax of the mean
        assert std.min() >= 0 and set(np.unique(samples)) <= {0, 1}
        disagree = (samples != samples[0]).any(axis=0)  # samples that differ had different probabilities
        assert disagree.any() and (std.max(axis=0)[disagree] > 0).all()
    bad = runner.invoke(app, ["seg", "predict", str(trained_ldseg), str(tmp_path / "images"), "-o",
                              str(tmp_path / "bad"), "--save", "logits"])
    assert bad.exit_code == 2 and bad.output.strip().count("\n") == 0 and "logits" in bad.output


def test_more_samples_show_uncertainty_where_the_samples_disagree(trained_ldseg):
    model = load(trained_ldseg)
    rng = np.random.default_rng(11)
    images = []
    for _ in range(6):  # noisier than the training images: the samples have something to disagree on
        image, _ = disk_image(rng, (32, 32))
        images.append(image + rng.normal(0.0, 0.6, image.shape).astype(np.float32))
    slices = np.stack([(i - i.mean()) / i.std() for i in images])[:, None].astype(np.float32)
    one = predict_slices(model, slices, samples=1, seed=0)
    many = predict_slices(model, slices, samples=8, seed=0)
    assert float(np.abs(one["std"]).max()) == 0.0  # one sample: no spread
    disagree = many["std"][:, 1] > 0.2  # some samples call the pixel disk, others background
    assert disagree.any()
    agree = many["std"][:, 1] < 0.01
    assert many["entropy"][disagree].min() > 0.0
    assert many["entropy"][disagree].mean() > many["entropy"][agree].mean()


def test_cli_refuses_missing_folders_with_one_line(trained_ldseg, tmp_path):
    missing = runner.invoke(app, ["seg", "predict", str(trained_ldseg), str(tmp_path / "nope"), "-o",
                                  str(tmp_path / "o")])
    assert missing.exit_code == 2
    assert missing.output.strip().count("\n") == 0 and "nope" in missing.output and "not found" in missing.output
    no_data = runner.invoke(app, ["seg", "train", "ldseg", str(tmp_path / "nodata"), "-o", str(tmp_path / "m"),
                                  "--config", "tiny"])
    assert no_data.exit_code == 2 and no_data.output.strip().count("\n") == 0 and "nodata" in no_data.output
    assert not (tmp_path / "m").exists()
    no_model = runner.invoke(app, ["seg", "predict", str(tmp_path / "nomodel"), str(tmp_path), "-o",
                                   str(tmp_path / "o2")])
    assert no_model.exit_code == 2 and "model directory not found" in no_model.output
    unknown = runner.invoke(app, ["seg", "train", "qcresunet", str(tmp_path), "-o", str(tmp_path / "m")])
    assert unknown.exit_code == 2 and "unknown SEG method" in unknown.output
    _write_inputs(tmp_path / "images")
    into_images = runner.invoke(app, ["seg", "predict", str(trained_ldseg), str(tmp_path / "images"), "-o",
                                      str(tmp_path / "images")])
    assert into_images.exit_code == 2 and "is the image folder" in into_images.output
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["deep_0000.nii.gz", "flat_0000.nii.gz"]


@pytest.mark.parametrize(("option", "words"), [(["--samples", "0"], "--samples must be at least 1"),
                                               (["--steps", "0"], "--steps must be at least 1"),
                                               (["--steps", "1001"], "at most the model's 1000 diffusion steps")])
def test_cli_refuses_samples_or_steps_out_of_range_before_any_case(trained_ldseg, tmp_path, option, words):
    """Once: 0 meant the model's default, and steps beyond T failed every case one by one."""
    _write_inputs(tmp_path / "images")
    result = runner.invoke(app, ["seg", "predict", str(trained_ldseg), str(tmp_path / "images"), "-o",
                                 str(tmp_path / "out"), *option])
    assert result.exit_code == 2 and words in result.output and result.output.strip().count("\n") == 0, result.output
    assert not list((tmp_path / "out").glob("*.nii.gz"))


def test_an_image_with_nan_voxels_fails_alone_with_one_line_and_is_refused_for_training(trained_ldseg,
                                                                                         disk_dataset, tmp_path):
    """ITK reads NaN voxels as 0, so without the check the case was segmented as if they were 0."""
    import shutil

    import nibabel as nib

    _write_inputs(tmp_path / "images")
    image, _ = disk_image(np.random.default_rng(5))
    image[3, 4] = np.nan
    nib.save(nib.Nifti1Image(image.T.astype(np.float32)[..., None], np.eye(4)), tmp_path / "images" / "nan_0000.nii.gz")
    result = runner.invoke(app, ["seg", "predict", str(trained_ldseg), str(tmp_path / "images"), "-o",
                                 str(tmp_path / "out"), "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nan_0000.nii.gz" in errors[0] and "NaN" in errors[0], result.output
    assert not (tmp_path / "out" / "nan.nii.gz").exists() and (tmp_path / "out" / "flat.nii.gz").exists()
    dataset = tmp_path / "dataset"
    shutil.copytree(disk_dataset, dataset)
    first = sorted((dataset / "imagesTr").iterdir())[0]
    nib.save(nib.Nifti1Image(np.full((8, 8, 1), np.nan, np.float32), np.eye(4)), first)
    train = runner.invoke(app, ["seg", "train", "ldseg", str(dataset), "-o", str(tmp_path / "run"), "--config",
                                "tiny", "--set", "steps_train=2", "-q"])
    assert train.exit_code != 0 and "Traceback" not in train.output
    assert first.name in train.output and "NaN" in train.output, train.output


def test_a_case_that_fails_on_a_rerun_leaves_no_maps_of_the_earlier_run(trained_ldseg, tmp_path):
    """Once: the earlier label map and entropy map of a case whose image had since been damaged
    stayed in OUT, and `segqc evaluate OUT GT` scored them as this run's segmentation."""
    import nibabel as nib

    _write_inputs(tmp_path / "images")
    out = tmp_path / "out"
    first = runner.invoke(app, ["seg", "predict", str(trained_ldseg), str(tmp_path / "images"), "-o", str(out),
                                "-q", "--save", "probabilities"])
    assert first.exit_code == 0, first.output
    case = sorted(out.glob("*.nii.gz"))[0].name[:-len(".nii.gz")]
    damaged = tmp_path / "images" / f"{case}_0000.nii.gz"
    image = nib.load(damaged)
    array = np.asarray(image.dataobj, dtype=np.float32)
    array.flat[0] = np.nan
    nib.save(nib.Nifti1Image(array, image.affine), damaged)
    again = runner.invoke(app, ["seg", "predict", str(trained_ldseg), str(tmp_path / "images"), "-o", str(out),
                                "-q", "--save", "probabilities"])
    assert again.exit_code == 1 and case in again.output, again.output
    left = [p.relative_to(out).as_posix() for p in out.rglob(f"{case}*.nii.gz")]
    assert left == [], left
    others = sorted(p.name for p in out.glob("*.nii.gz"))
    assert others and all((out / "uncertainty" / name).is_file() for name in others)


def test_a_rerun_reuses_the_finished_training_and_refuses_other_settings(trained_ldseg, disk_dataset):
    weights = (trained_ldseg / "model" / "denoiser.safetensors").read_bytes()
    again = runner.invoke(app, ["seg", "train", "ldseg", str(disk_dataset), "-o", str(trained_ldseg), "--config",
                                "tiny", "--device", "cpu", "-q"])
    assert again.exit_code == 0 and "reusing" in again.output, again.output
    assert (trained_ldseg / "model" / "denoiser.safetensors").read_bytes() == weights
    other = runner.invoke(app, ["seg", "train", "ldseg", str(disk_dataset), "-o", str(trained_ldseg), "--config",
                                "tiny", "--set", "gamma=1", "-q"])
    assert other.exit_code == 2 and "other settings" in other.output and "gamma" in other.output


def test_a_rerun_on_changed_images_is_refused_even_with_the_same_case_and_label_counts(disk_dataset, tmp_path):
    """Once: the run record held counts only, so a finished training was reused for edited images."""
    import shutil

    dataset = tmp_path / "dataset"
    shutil.copytree(disk_dataset, dataset)
    command = ["seg", "train", "unet", str(dataset), "-o", str(tmp_path / "run"), "--config", "tiny", "--set",
               "steps_train=2", "--device", "cpu", "-q"]
    assert runner.invoke(app, command).exit_code == 0
    assert "reusing" in runner.invoke(app, command).output  # unchanged data: the finished run is reused
    first = sorted((dataset / "imagesTr").iterdir())[0]
    image = read_image(first)
    noisy = image.array + np.random.default_rng(0).normal(0, 1, image.array.shape).astype(np.float32)
    write_image(first, noisy, image.geometry)
    again = runner.invoke(app, command)
    assert again.exit_code == 2 and "other training data" in again.output, again.output


def test_train_holds_out_whole_patients_and_trains_on_the_rest(disk_dataset, tmp_path):
    out = tmp_path / "split_run"
    result = runner.invoke(app, ["seg", "train", "ldseg", str(disk_dataset), "-o", str(out), "--config", "tiny",
                                 "--set", "steps_train=2", "--holdout-fraction", "0.25", "--group-by",
                                 r"^(disk_\d\d)", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    split = json.loads((out / "split.json").read_text())
    groups = lambda cases: {c[:7] for c in cases}  # noqa: E731  disk_00, disk_01, disk_02: 10 cases each
    assert groups(split["train"]).isdisjoint(groups(split["holdout"])) and len(split["holdout"]) >= 4
    trained_on = json.loads((out / "model" / "metrics.json").read_text())["data"]["cases"]
    assert trained_on == len(split["train"]) < 24
