"""Fixtures of the QC tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from qc_toy_data import make_qc_dataset


@pytest.fixture(scope="session")
def qc_dataset(tmp_path_factory) -> Path:
    return make_qc_dataset(tmp_path_factory.mktemp("qc_dataset"))


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread while a QC test runs (if torch is loaded): the test networks are too small
    to gain from more, and on a shared 2-core machine a second thread mostly waits."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
