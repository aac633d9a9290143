"""Real data: the BraTS 2023 glioma case of ``../shared/data/brats`` with one algorithm's
segmentation, evaluated by ``segqc evaluate`` over the three BraTS regions (dataset.json), against
MIST's lesion-wise metrics and medpy's distances computed on the same region masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.io.images import read_label_map

CASE = "BraTS-GLI-00001-000"


def test_evaluate_brats_regions_matches_mist_and_medpy(shared_data, tmp_path):
    mist_lesion = pytest.importorskip("mist.metrics.lesion_wise_metrics")
    medpy_binary = pytest.importorskip("medpy.metric.binary")
    root = shared_data("brats")
    seg_dir = root / "segmentations" / "isen"
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    (pred_dir / f"{CASE}.nii.gz").symlink_to((seg_dir / f"{CASE}.nii.gz").resolve())
    metrics = "lesionwise_dice,lesionwise_hd95,lesionwise_nsd,lesion_f1,hd95_pooled,assd"
    result = CliRunner().invoke(app, ["evaluate", str(pred_dir), str(root / "labelsTr"), "-o", str(tmp_path / "out"),
                                      "--metrics", metrics, "--surface", "voxel", "--lesion-preset", "mist", "-q"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "metrics.csv")
    table = table[table["case"] == CASE]  # the other GT cases have no prediction (evaluated as empty)
    gt_image = read_label_map(root / "labelsTr" / f"{CASE}.nii.gz")
    pred = read_label_map(seg_dir / f"{CASE}.nii.gz").array
    gt, spacing = gt_image.array, gt_image.geometry.spacing
    for region, members in {"whole tumour": [1, 2, 3], "tumour core": [1, 3], "enhancing tumour": [3]}.items():
        p, g = np.isin(pred, members), np.isin(gt, members)
        theirs = mist_lesion.compute_lesion_wise_metrics(p, g, spacing, ["dice", "haus95", "surface_dice", "f1"])
        rows = table[table["label"] == region]
        ours = dict(zip(rows["metric"], rows["value"]))
        assert ours["lesionwise_dice"] == pytest.approx(theirs["lesion_wise_dice"], rel=1e-9)
        assert ours["lesionwise_hd95"] == pytest.approx(theirs["lesion_wise_haus95"], rel=1e-9)
        assert ours["lesionwise_nsd"] == pytest.approx(theirs["lesion_wise_surf_dice"], rel=1e-9)
        assert ours["lesion_f1"] == pytest.approx(theirs["lesion_wise_f1"], rel=1e-9)
        assert ours["hd95_pooled"] == pytest.approx(medpy_binary.hd95(p, g, voxelspacing=spacing), rel=1e-9)
        assert ours["assd"] == pytest.approx(medpy_binary.assd(p, g, voxelspacing=spacing), rel=1e-9)
        assert 0.5 < ours["lesionwise_dice"] < 1.0  # a real, imperfect segmentation
