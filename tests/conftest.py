"""Shared test configuration, and the real data of ``../shared/data``.

Tests that need real data get it through the ``shared_data`` fixture (a function of the folder's
name, e.g. ``shared_data("acdc")``): where ``../shared/data/<name>`` is missing beside the
repository the test FAILS with a message saying so. A missing data folder is a broken checkout,
not a reason to report the real-data checks as passed or skipped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# pytest-xdist runs one worker per core; torch's second intra-op thread per worker would only
# oversubscribe the cores (measured 30x slower steps for the small test networks). Set before
# torch is first imported by any test module.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def require_shared_data(name: str, root: Path = SHARED_DATA) -> Path:
    """``../shared/data/<name>`` (a folder or file, ``/``-separated below the data root), or
    ``pytest.fail`` with the reason when it is missing."""
    path = root.joinpath(*name.split("/"))
    if not path.exists():
        pytest.fail(f"../shared/data/{name} is missing: the real-data tests need it "
                    f"(clone with ../shared beside the repo; looked for {path})", pytrace=False)
    return path


@pytest.fixture(scope="session")
def shared_data():
    """``shared_data(name)`` -> the path of ``../shared/data/<name>``; fails the test when it is missing."""
    return require_shared_data


@pytest.fixture(autouse=True)
def _torch_defaults():
    """The `ccmetrics` reference disables torch autograd globally when imported; give every test
    the default grad mode back so that test order cannot change results."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_grad_enabled(True)
    yield


@pytest.fixture
def one_torch_thread():
    """One torch thread while a test runs (if torch is loaded): test networks are too small to gain
    from more, and on a shared 2-core machine a second thread mostly waits. The qc and seg test
    folders use it for every test."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
