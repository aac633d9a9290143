"""Shared test configuration."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _torch_grad_mode_restored():
    """The `ccmetrics` reference disables torch autograd globally when imported; give every test
    the default grad mode back so that test order cannot change results."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_grad_enabled(True)
    yield
