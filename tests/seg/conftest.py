"""Fixtures of the segmentation tests: a synthetic disk dataset and a tiny LDSeg trained on it
once per session through ``segqc seg train``."""

from __future__ import annotations

import sys
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
def _one_thread():
    """One torch thread per test: the tiny networks gain nothing from more on a shared machine."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
