"""Session fixtures of the zoo tests: a tiny nnU-Net dataset (4 patients x 2 frames, 32 x 30 x 4)
and a zoo trained on it once (see zoo_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from zoo_fixtures import TINY, make_dataset


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("toy") / "Dataset001_Toy")


@pytest.fixture(scope="session")
def trained_zoo(toy_dataset, tmp_path_factory) -> Path:
    """A zoo trained once for the whole session (read-only for the tests that use it)."""
    from segqc.zoo import train_zoo

    out = tmp_path_factory.mktemp("zoo") / "zoo"
    train_zoo(toy_dataset, out, TINY)
    return out
