"""Zoo predictions: on the original grid, manifest equals the truth, later snapshots better, resume."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import monai  # noqa: F401
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch  # noqa: F401

from segqc.degrade.folder import BASE_COLUMNS
from segqc.errors import InputError
from segqc.io.geometry import Geometry
from segqc.io.images import write_image
from segqc.io.split import Split
from segqc.training import CheckpointError
from segqc.zoo import InputVariant, parse_variants, predict_zoo


def _read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    """Independent reader: SimpleITK directly, back to (x, y, z) order."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image).T, image


def _multiclass_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    tp = np.sum((pred == gt) & (gt > 0))
    fp = np.sum((pred > 0) & (pred != gt))
    fn = np.sum((gt > 0) & (pred != gt))
    return 2 * tp / (2 * tp + fp + fn)


@pytest.fixture(scope="module")
def predicted(trained_zoo, toy_dataset, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("pred") / "out"
    return out, predict_zoo(trained_zoo, toy_dataset, out)


def test_every_snapshot_and_variant_predicts_every_held_out_case(predicted, trained_zoo):
    out, result = predicted
    holdout = Split.load(trained_zoo / "split.json").holdout
    expected = ["unet_e001", "unet_e001_noise", "unet_e001_lowres", "unet_e004", "unet_e004_noise", "unet_e004_lowres"]
    assert result.sources == expected and not result.failed
    table = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert list(table["source"].unique()) == expected
    assert sorted(table["case"].unique()) == sorted(holdout) and len(table) == 6 * len(holdout)
    required_columns = set(BASE_COLUMNS) | {"dice_1", "dice_2", "hd95_1", "nsd_2", "model", "epoch", "variant"}
    assert required_columns <= set(table.columns)
    assert set(table["operations"]) == {"clean", "noise(sigma=0.1)", "lowres(factor=2)"}
    assert set(table["epoch"]) == {1, 4} and set(table["binned_on"]) == {"dice"}
    for row in table.itertuples():
        assert (out / row.file).is_file() and row.file == f"{row.source}/{row.case}.nii.gz"


def test_training_cases_can_be_predicted_for_qc_training(trained_zoo, toy_dataset, tmp_path):
    split = Split.load(trained_zoo / "split.json")
    result = predict_zoo(trained_zoo, toy_dataset, tmp_path / "out", cases="train", variants="clean",
                         models=["unet_e001"])
    assert sorted(result.manifest["case"]) == sorted(split.train) and not set(split.train) & set(split.holdout)
    assert {p.name for p in (tmp_path / "out" / "unet_e001").glob("*.nii.gz")} == {f"{c}.nii.gz" for c in split.train}


def test_predictions_land_on_the_ground_truth_grid(predicted, toy_dataset):
    out, result = predicted
    for row in result.manifest.itertuples():
        pred, image = _read(out / row.file)
        gt, gt_image = _read(toy_dataset / "labelsTr" / f"{row.case}.nii.gz")
        assert pred.shape == gt.shape and pred.dtype == np.uint8
        assert image.GetSpacing() == gt_image.GetSpacing() and image.GetOrigin() == gt_image.GetOrigin()
        assert image.GetDirection() == gt_image.GetDirection()
        assert set(np.unique(pred)) <= {0, 1, 2}


def test_manifest_values_equal_an_independent_recomputation(predicted, toy_dataset):
    out, _ = predicted
    table = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    for row in table.itertuples():
        pred, _ = _read(out / row.file)
        gt, _ = _read(toy_dataset / "labelsTr" / f"{row.case}.nii.gz")
        assert row.dice == pytest.approx(_multiclass_dice(pred, gt), abs=1e-12)
        for c in (1, 2):
            p, g = pred == c, gt == c
            value = float(getattr(row, f"dice_{c}"))
            assert value == pytest.approx(2 * np.sum(p & g) / (p.sum() + g.sum()), abs=1e-12)
        if row.bin:
            lo, hi = (float(v) for v in row.bin.strip("[]()").split(","))
            assert lo <= row.dice <= hi and row.in_bin
        else:
            assert not row.in_bin and row.note


def test_later_snapshots_segment_better_than_the_first(predicted):
    _, result = predicted
    clean = result.manifest[result.manifest["variant"] == "clean"].groupby("epoch")["dice"].mean()
    assert clean[4] > clean[1] + 0.1
    assert clean[4] > 0.6


def test_a_rerun_reuses_everything_and_keeps_only_what_its_manifest_lists(predicted, trained_zoo, toy_dataset,
                                                                           tmp_path):
    out, result = predicted
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    stamps = {p: p.stat().st_mtime_ns for p in copy.rglob("*.nii.gz")}
    again = predict_zoo(trained_zoo, toy_dataset, copy)
    assert again.reused == len(result.manifest) and all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    pd.testing.assert_frame_equal(again.manifest, result.manifest)
    more = predict_zoo(trained_zoo, toy_dataset, copy, variants="clean,noise(sigma=0.3)", models=["unet_e004"])
    assert more.sources == ["unet_e004", "unet_e004_noise0.3"]
    assert more.reused == len(more.manifest) // 2
    kept = {p for p in stamps if p.parent.name == "unet_e004"}
    assert kept and all(p.stat().st_mtime_ns == stamps[p] for p in kept)  # reused, not written again
    assert set(more.manifest["operations"]) == {"clean", "noise(sigma=0.3)"}
    # the other sources' maps are not in this run's manifest: removed, so no folder mixes two runs
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*.nii.gz")) == sorted(more.manifest["file"])


def test_noise_is_seeded_and_shared_by_all_models(predicted, trained_zoo, toy_dataset, tmp_path):
    out, result = predicted
    again = predict_zoo(trained_zoo, toy_dataset, tmp_path / "again", variants="noise", models=["unet_e001"])
    for row in again.manifest.itertuples():
        a, _ = _read(tmp_path / "again" / row.file)
        b, _ = _read(out / row.file)
        assert np.array_equal(a, b)
    seeds = result.manifest[result.manifest["variant"] == "noise"].groupby("case")["seed"].nunique()
    assert (seeds == 1).all()


def test_input_variants():
    rng = np.random.default_rng(0)
    image = np.zeros((1, 32, 32, 3), np.float32)
    noisy = InputVariant("noise", 0.2).apply(image, rng)
    assert noisy.dtype == np.float32 and abs(noisy.std() - 0.2) < 0.01 and not image.any()
    assert np.allclose(InputVariant("lowres", 2).apply(image + 0.5, rng), 0.5)
    checker = (np.indices((32, 32)).sum(axis=0) % 2).astype(np.float32)[None, :, :, None]
    assert np.allclose(InputVariant("lowres", 2).apply(checker, rng), 0.5)  # the finest detail is gone
    assert np.array_equal(InputVariant("clean").apply(checker, rng), checker)
    assert [v.describe() for v in parse_variants("clean, noise(sigma=0.2),lowres")] == [
        "clean", "noise(sigma=0.2)", "lowres(factor=2)"]
    assert [v.tag for v in parse_variants("noise,lowres(factor=3)", noise_sigma=0.1)] == ["noise", "lowres3"]
    for bad in ("blur", "noise(sigma=-1)", "lowres(factor=1)", "clean(3)", "noise(factor=2)", ""):
        with pytest.raises(ValueError):
            parse_variants(bad)


def test_images_and_labels_folders_on_an_oblique_flipped_grid(trained_zoo, toy_dataset, tmp_path):
    """Any grid goes back exactly: a held-out case rewritten with flipped, permuted axes."""
    case = Split.load(trained_zoo / "split.json").holdout[0]
    image, _ = _read(toy_dataset / "imagesTr" / f"{case}_0000.nii.gz")
    gt, _ = _read(toy_dataset / "labelsTr" / f"{case}.nii.gz")
    geometry = Geometry(shape=(gt.shape[1], gt.shape[0], gt.shape[2]), spacing=(1.5, 1.5, 5.0), origin=(3.0, 2.0, 1.0),
                        direction=(0.0, -1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    write_image(tmp_path / "img" / "other_0000.nii.gz", np.transpose(image, (1, 0, 2)).copy(), geometry)
    write_image(tmp_path / "lab" / "other.nii.gz", np.transpose(gt, (1, 0, 2)).copy(), geometry)
    result = predict_zoo(trained_zoo, None, tmp_path / "out", images_dir=tmp_path / "img", labels_dir=tmp_path / "lab",
                         cases="all", variants="clean", models=["unet_e004"])
    pred, written = _read(tmp_path / "out" / "unet_e004" / "other.nii.gz")
    assert pred.shape == geometry.shape
    assert np.allclose(written.GetDirection(), geometry.direction) and np.allclose(written.GetOrigin(), geometry.origin)
    assert result.manifest["dice"].iloc[0] == pytest.approx(_multiclass_dice(pred, np.transpose(gt, (1, 0, 2))))


def test_bad_prediction_input(trained_zoo, toy_dataset, tmp_path):
    with pytest.raises(InputError, match="not a segqc zoo folder"):
        predict_zoo(toy_dataset, toy_dataset, tmp_path / "o")
    with pytest.raises(InputError, match="zoo folder not found"):
        predict_zoo(tmp_path / "nothing", toy_dataset, tmp_path / "o")
    with pytest.raises(InputError, match="labels folder not found"):
        predict_zoo(trained_zoo, None, tmp_path / "o", images_dir=toy_dataset / "imagesTr", labels_dir=tmp_path / "x")
    with pytest.raises(InputError, match="no model 'unet_e002'"):
        predict_zoo(trained_zoo, toy_dataset, tmp_path / "o", models=["unet_e002"])
    with pytest.raises(ValueError, match="unknown input variant"):
        predict_zoo(trained_zoo, toy_dataset, tmp_path / "o", variants="clean,blur")
    # held-out cases absent from another folder
    (tmp_path / "lab").mkdir()
    shutil.copy(toy_dataset / "labelsTr" / "TOY_patient000_frame01.nii.gz", tmp_path / "lab")
    with pytest.raises(InputError, match="held-out case"):
        predict_zoo(trained_zoo, None, tmp_path / "o", images_dir=toy_dataset / "imagesTr", labels_dir=tmp_path / "lab")
    # a model folder that is not a zoo model
    zoo = tmp_path / "zoo"
    shutil.copytree(trained_zoo, zoo)
    meta = json.loads((zoo / "models" / "unet_e001" / "config.json").read_text())
    meta["method"] = "nnqc"
    (zoo / "models" / "unet_e001" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="method 'nnqc', expected 'zoo_unet'"):
        predict_zoo(zoo, toy_dataset, tmp_path / "o")


def test_a_case_whose_image_and_label_grids_differ_fails_alone(trained_zoo, toy_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(toy_dataset, data)
    holdout = Split.load(trained_zoo / "split.json").holdout
    bad = data / "labelsTr" / f"{holdout[0]}.nii.gz"
    label = sitk.ReadImage(str(bad))
    label.SetSpacing((2.0, 1.5, 5.0))
    sitk.WriteImage(label, str(bad))
    result = predict_zoo(trained_zoo, data, tmp_path / "o", variants="clean")
    assert list(result.failed) == [holdout[0]]
    assert "spacing" in result.failed[holdout[0]] and str(data / "imagesTr") in result.failed[holdout[0]]
    assert set(result.manifest["case"]) == set(holdout[1:])
    assert os.path.isfile(tmp_path / "o" / "manifest.csv")


def test_a_rerun_from_a_copy_of_the_data_records_the_copys_label_paths(predicted, trained_zoo, toy_dataset,
                                                                        tmp_path):
    """Rows are reused on content; they kept gt_file of the data the first run read."""
    out, result = predicted
    copy_out, data = tmp_path / "out", tmp_path / "data"
    shutil.copytree(out, copy_out)
    shutil.copytree(toy_dataset, data)
    again = predict_zoo(trained_zoo, data, copy_out)
    assert again.reused == len(result.manifest)
    assert all(path.startswith(str(data)) and Path(path).is_file() for path in again.manifest["gt_file"])
    assert list(again.manifest["gt_file"].str.replace(str(data), str(toy_dataset))) == list(result.manifest["gt_file"])
