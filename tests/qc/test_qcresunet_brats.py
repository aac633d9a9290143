"""QCResUNet on real multi-channel data with region classes: the BraTS cases of ../shared/data
(4 MR sequences; whole tumour, tumour core and enhancing tumour from dataset.json). Three cases
say nothing about accuracy; this proves that 4-channel input and overlapping region classes go
through training, prediction and the benchmark."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from segqc.io.images import read_label_map

REGIONS = {"whole tumour", "tumour core", "enhancing tumour"}


@pytest.fixture(scope="module")
def brats_model(shared_data, tmp_path_factory):
    from segqc.qc.training_api import train_method

    root = tmp_path_factory.mktemp("qcresunet_brats")
    model_dir = train_method("qcresunet", shared_data("brats"), root / "run", config="tiny", log=lambda _: None,
                             overrides={"epochs": 2, "samples_per_epoch": 4})
    return model_dir


def test_a_tiny_model_trains_on_four_sequences_with_region_classes(brats_model):
    config = json.loads((brats_model / "config.json").read_text())["config"]
    assert config["image_channels"] == 4
    assert [c[0] for c in config["classes"]] == ["whole tumour", "tumour core", "enhancing tumour"]
    assert config["classes"][1][2] == [1, 3]
    assert config["strides"] == [[2, 2, 2]] * 4  # 1 mm isotropic: no thick-slice rule


def test_the_isen_segmentation_is_assessed_per_region_against_the_reference(brats_model, shared_data, tmp_path):
    from segqc.qc.assessment import benchmark_qc
    from segqc.qc.inference import QcSettings

    brats = shared_data("brats")
    benchmark_qc(brats_model, brats / "imagesTr", brats / "segmentations" / "isen", brats / "labelsTr",
                 tmp_path / "bench", settings=QcSettings(metrics=("dice", "nsd")))
    qc = pd.read_csv(tmp_path / "bench" / "qc" / "qc.csv", dtype={"label": str})
    assert set(qc["case"]) == {"BraTS-GLI-00001-000"}
    assert set(qc["label"]) == REGIONS | {"all"}
    assert qc["estimate"].between(0, 1).all()
    pairs = pd.read_csv(tmp_path / "bench" / "pairs.csv", dtype={"label": str}).set_index(["label", "metric"])
    # the reference values of this segmentation (../shared/data/README.md): WT 0.960, TC 0.982, ET 0.941
    assert pairs.loc[("whole tumour", "dice"), "true"] == pytest.approx(0.960, abs=0.0005)
    assert pairs.loc[("tumour core", "dice"), "true"] == pytest.approx(0.982, abs=0.0005)
    assert pairs.loc[("enhancing tumour", "dice"), "true"] == pytest.approx(0.941, abs=0.0005)
    errors = read_label_map(tmp_path / "bench" / "qc" / "errors" / "BraTS-GLI-00001-000.nii.gz")
    seg = read_label_map(brats / "segmentations" / "isen" / "BraTS-GLI-00001-000.nii.gz")
    assert errors.geometry == seg.geometry and int(errors.array.max()) < 8
    sem = pd.read_csv(tmp_path / "bench" / "error_maps.csv")
    assert set(sem["label"]) == REGIONS
