"""Shared test configuration."""

from __future__ import annotations

import os
import sys

import pytest

# pytest-xdist runs one worker per core; torch's second intra-op thread per worker would only
# oversubscribe the cores (measured 30x slower steps for the small test networks). Set before
# torch is first imported by any test module.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _torch_defaults():
    """The `ccmetrics` reference disables torch autograd globally when imported; give every test
    the default grad mode back so that test order cannot change results."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_grad_enabled(True)
    yield
