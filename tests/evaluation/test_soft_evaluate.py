"""``segqc evaluate --soft``: probability / rater-fraction maps against a soft reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.io.geometry import Geometry
from segqc.io.images import write_image

runner = CliRunner()
GEOMETRY = Geometry(shape=(1, 4), spacing=(1.0, 1.0), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0))


def _folders(tmp_path, pred_values, gt_values=(1.0, 0.5, 0.0, 0.0)):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write_image(gt / "c1.nii.gz", np.array([gt_values], dtype=np.float32), GEOMETRY)
    write_image(pred / "c1.nii.gz", np.array([pred_values], dtype=np.float32), GEOMETRY)
    return pred, gt


def test_soft_dice_of_soft_maps_by_hand(tmp_path):
    # thresholds 0.1-0.4: both {0, 1} -> 1; 0.5-0.9: reference {0}, prediction {0, 1} -> 2/3
    pred, gt = _folders(tmp_path, (1.0, 1.0, 0.0, 0.0))
    result = runner.invoke(app, ["evaluate", str(pred), str(gt), "-o", str(tmp_path / "out"), "--soft", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["labels"]["soft"]["soft_dice"]["mean"] == pytest.approx((4 + 5 * 2 / 3) / 9)


@pytest.mark.parametrize(("bad", "words"), [(2.0, "[0, 1]"), (float("nan"), "NaN")])
def test_values_outside_the_unit_interval_name_the_file(tmp_path, bad, words):
    """A NaN voxel of a NIfTI map reads as 0 through ITK; it must be refused, not scored as 0."""
    pred, gt = _folders(tmp_path, (1.0, bad, 0.0, 0.0))
    result = runner.invoke(app, ["evaluate", str(pred), str(gt), "-o", str(tmp_path / "out"), "--soft", "-q"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "c1.nii.gz" in result.output and words in result.output, result.output


def test_other_metrics_on_soft_maps_are_refused(tmp_path):
    pred, gt = _folders(tmp_path, (1.0, 1.0, 0.0, 0.0))
    result = runner.invoke(app, ["evaluate", str(pred), str(gt), "-o", str(tmp_path / "out"), "--soft",
                                 "--metrics", "dice,soft_dice", "-q"])
    assert result.exit_code != 0 and "soft_dice" in result.output and "Traceback" not in result.output
