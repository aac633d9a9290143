"""The ready-made QCResUNet for cardiac cine MRI (``models/acdc-qcresunet-small``) on a real ACDC
volume: a perfect segmentation (the ground truth) must get a clearly higher estimated Dice (by at
least 0.2) than broken ones (classes swapped, rim eroded, shifted 31 mm; true Dice 0, 0.565, 0.282)
and come last in the worklist, and the error map of the shifted one must mark the voxels that are
really wrong (true error maps computed here with numpy from the files). A model that ignored its
weights, its image or its query would give near-constant estimates and fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from segqc.io.images import read_label_map, write_image
from segqc.qc.inference import QcSettings, qc_folder
from segqc.qc.qcresunet.config import QcResUNetConfig
from segqc.training.checkpoints import read_checkpoint_meta

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "acdc-qcresunet-small"
CASE = "ACDC_patient002_frame01"


@pytest.fixture(scope="module")
def qc_run(shared_data, tmp_path_factory):
    acdc = shared_data("acdc")
    assert (MODEL / "config.json").is_file(), f"the shipped model is missing: {MODEL}"
    root = tmp_path_factory.mktemp("shipped_qcresunet")
    images, segs = root / "images", root / "segs"
    images.mkdir()
    gt = read_label_map(acdc / "labelsTr" / f"{CASE}.nii.gz")
    swapped = gt.array.copy()
    swapped[gt.array == 1], swapped[gt.array == 3] = 3, 1  # RV <-> LV
    swapped[gt.array == 2] = 0  # myocardium missing
    eroded = gt.array.copy()
    eroded[(eroded > 0) & ~ndimage.binary_erosion(eroded > 0, iterations=2)] = 0
    broken = {"perfect": gt.array, "swapped": swapped, "eroded": eroded, "shifted": np.roll(gt.array, 20, axis=0)}
    for name, array in broken.items():
        shutil.copy(acdc / "imagesTr" / f"{CASE}_0000.nii.gz", images / f"{name}_0000.nii.gz")
        write_image(segs / f"{name}.nii.gz", array, gt.geometry)
    table, work, _ = qc_folder(MODEL, images, segs, root / "qc", settings=QcSettings(metrics=("dice", "nsd")))
    return table, work, broken, gt, root


def test_perfect_segmentation_is_estimated_better_than_broken_ones(qc_run):
    table, work, _, _, _ = qc_run
    overall = table[(table.label == "all") & (table.metric == "dice")].set_index("case")["estimate"]
    assert overall["perfect"] > 0.75
    for broken in ("swapped", "shifted", "eroded"):
        assert overall["perfect"] > overall[broken] + 0.2, (broken, overall.to_dict())
    assert list(work["case"])[-1] == "perfect"
    nsd = table[(table.label == "all") & (table.metric == "nsd")].set_index("case")["estimate"]
    assert nsd["perfect"] > nsd["shifted"] + 0.2
    assert set(table[table.label != "all"]["label_name"]) == {"RV", "MYO", "LV"}


def test_the_error_map_of_a_shifted_segmentation_marks_its_errors(qc_run):
    _, _, broken, gt, root = qc_run
    errors = read_label_map(root / "qc" / "errors" / "shifted.nii.gz")
    assert errors.geometry == gt.geometry
    seg = broken["shifted"]
    scores = []
    for bit, value in enumerate((1, 2, 3)):
        predicted = ((errors.array >> bit) & 1) > 0
        true = (seg == value) ^ (gt.array == value)
        scores.append(2 * np.logical_and(predicted, true).sum() / (predicted.sum() + true.sum()))
    assert np.mean(scores) > 0.4, scores


def test_a_stray_blob_beyond_the_window_is_marked_wrong(shared_data, tmp_path):
    """The network sees a 96-px window around the segmentation's largest part; the shipped
    model's calibration says class voxels beyond it are nearly always wrong (92-98 % of its
    read-out samples), so a blob of LV label in the image's corner is marked as LV error, and
    nothing of the heart is marked there."""
    acdc = shared_data("acdc")
    gt = read_label_map(acdc / "labelsTr" / f"{CASE}.nii.gz")
    stray = gt.array.copy()
    stray[:6, :6, :] = 3  # the corner: far outside a 150 mm window centred on the heart
    assert not gt.array[:6, :6, :].any()
    (tmp_path / "images").mkdir()
    shutil.copy(acdc / "imagesTr" / f"{CASE}_0000.nii.gz", tmp_path / "images" / "stray_0000.nii.gz")
    write_image(tmp_path / "segs" / "stray.nii.gz", stray, gt.geometry)
    qc_folder(MODEL, tmp_path / "images", tmp_path / "segs", tmp_path / "qc", settings=QcSettings(metrics=("dice",)))
    errors = read_label_map(tmp_path / "qc" / "errors" / "stray.nii.gz").array
    assert (((errors[:6, :6, :] >> 2) & 1) == 1).all()  # LV bit on every blob voxel
    assert not (errors[:6, :6, :] & 0b011).any()  # RV and MYO bits untouched there


def test_the_shipped_model_is_the_small_preset_it_documents():
    """The model card and README say the shipped weights are the ``small`` preset trained with seed 0
    and the median-spacing window (``--set field_of_view=spacing``): every setting saved with the
    weights must equal that recipe's (a preset changed without refitting the model, or weights of
    another recipe, fail here), and its read-out must be fitted and in charge of the estimates."""
    saved = read_checkpoint_meta(MODEL)["config"]["qcresunet"]
    assert QcResUNetConfig.from_dict(saved) == QcResUNetConfig.preset("small", seed=0).with_overrides(
        field_of_view="spacing")
    plan = read_checkpoint_meta(MODEL)["config"]["plan"]
    assert plan["size"] == 96 and plan["target_spacing"] == [1.5625, 1.5625]  # ACDC's median spacing
    record = json.loads((MODEL / "metrics.json").read_text())["member0_readout"]
    assert record["used"] and record["samples"] == 180 * (saved["readout_per_case"] + 1) + 540
    assert record["real_weight"] == saved["readout_real_weight"]
