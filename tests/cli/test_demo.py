"""The whole ``segqc demo`` on real data: the README's first command. References: the true Dice
of the QC part's segmentations (the ground truth, an eroded and a shifted copy) and the HC18
ground-truth masks of the segmentation part."""

from __future__ import annotations

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.io.images import read_label_map


def test_the_demo_evaluates_qcs_and_segments_with_the_shipped_models(shared_data, tmp_path):
    acdc, hc18 = shared_data("acdc"), shared_data("hc18")
    result = CliRunner().invoke(app, ["demo", "-o", str(tmp_path), "--acdc", str(acdc), "--hc18", str(hc18)])
    assert result.exit_code == 0, result.output
    assert "skipped" not in result.output and "error:" not in result.output, result.output
    # QC: each model ranks the ground truth above its eroded and its shifted copy
    for model in ("acdc-nnqc-small", "acdc-qcresunet-small"):
        pairs = pd.read_csv(tmp_path / "qc" / model / "pairs.csv", dtype={"case": str, "label": str})
        overall = pairs[(pairs.label == "all") & (pairs.metric == "dice")].set_index("case")["estimate"]
        for case in ("ACDC_patient002_frame01", "ACDC_patient002_frame02"):
            assert overall[f"{case}__gt"] > overall[f"{case}__eroded"] > overall[f"{case}__shifted"], (model, overall)
    # segmentation: every shipped HC18 model segments all six images (three clean, three noisy) far above
    # chance (an empty mask: 0), with an entropy map and a case score
    for model in ("hc18-ldseg-small", "hc18-ldseg-paper-decoder-small", "hc18-unet-small"):
        table = pd.read_csv(tmp_path / "seg" / model / "cases.csv", dtype={"case": str})
        assert len(table) == 6 and table["uncertainty"].notna().all(), table
        for case in table["case"]:
            assert (tmp_path / "seg" / model / "uncertainty" / f"{case}.nii.gz").is_file()
            predicted = read_label_map(tmp_path / "seg" / model / f"{case}.nii.gz").array > 0
            truth = read_label_map(hc18 / "labelsTr" / f"{case.removesuffix('_noisy')}.nii.gz").array > 0
            dice = 2 * np.count_nonzero(predicted & truth) / (np.count_nonzero(predicted) + np.count_nonzero(truth))
            assert dice > 0.8, (model, case, dice)
    assert "Dice against the ground truth" in result.output
