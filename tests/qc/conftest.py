"""Fixtures of the QC tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from qc_toy_data import make_qc_dataset


@pytest.fixture(scope="session")
def qc_dataset(tmp_path_factory) -> Path:
    return make_qc_dataset(tmp_path_factory.mktemp("qc_dataset"))


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every QC test runs with one torch thread (tests/conftest.py)."""
    yield
