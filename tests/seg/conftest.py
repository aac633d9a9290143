"""Fixtures of the segmentation tests: a synthetic disk dataset and a tiny LDSeg trained on it
once per session through ``segqc seg train``."""

from __future__ import annotations

from pathlib import Path

import pytest
from ldseg_toy_data import make_disk_dataset


@pytest.fixture(scope="session")
def disk_dataset(tmp_path_factory) -> Path:
    return make_disk_dataset(tmp_path_factory.mktemp("disks"))


@pytest.fixture(scope="session")
def trained_ldseg(disk_dataset, tmp_path_factory) -> Path:
    """The training folder of a tiny LDSeg (300 steps, about 15 s on one core)."""
    import torch
    from typer.testing import CliRunner

    from segqc.cli.main import app

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ldseg_run")
    result = CliRunner().invoke(app, ["seg", "train", "ldseg", str(disk_dataset), "-o", str(out), "--config", "tiny",
                                      "--device", "cpu", "-q"])
    torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every segmentation test runs with one torch thread (tests/conftest.py)."""
    yield
