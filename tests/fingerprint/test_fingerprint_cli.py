"""The `segqc fingerprint` command: JSON output, summary, and one error line on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_folders import write_dataset
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.fingerprint import DatasetFingerprint
from segqc.io.geometry import Geometry

runner = CliRunner()


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "Dataset002_Cli"
    geometry = Geometry.from_shape((16, 12, 4), spacing=(1.5, 1.5, 5.0))
    label = np.zeros(geometry.shape, np.uint8)
    label[4:10, 3:8, 1:3] = 1
    cases = {f"c{i}": (np.random.default_rng(i).uniform(0, 100, geometry.shape).astype(np.float32), label, geometry)
             for i in range(2)}
    return write_dataset(root, cases, labels={"background": 0, "organ": 1}, channel="MRI", name="Cli")


def test_fingerprint_command_writes_json_and_prints_summary(dataset, tmp_path):
    out = tmp_path / "fp" / "fingerprint.json"
    result = runner.invoke(app, ["fingerprint", str(dataset), "-o", str(out), "--jobs", "1"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    fp = DatasetFingerprint.load(out)
    assert fp.n_cases == 2 and fp.median_spacing == pytest.approx((1.5, 1.5, 5.0))
    for text in ("median spacing", "(1.5, 1.5, 5)", "orientation", "LPS", "organ", "MR",
                 "percentile", "wrote"):
        assert text in result.output


def test_fingerprint_command_reports_bad_input_in_one_line(dataset, tmp_path):
    for item in (dataset / "labelsTr").iterdir():
        item.unlink()
    (dataset / "labelsTr").rmdir()
    out = tmp_path / "fingerprint.json"
    result = runner.invoke(app, ["fingerprint", str(dataset), "-o", str(out)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "labelsTr" in lines[0]
    assert str(dataset) in lines[0].replace("\n", "")
    assert not out.exists()
