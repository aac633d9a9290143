"""Reproducibility and device choice."""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def seed_everything(seed: int, *, deterministic: bool = True) -> np.random.Generator:
    """Seed Python, numpy and torch; return a numpy Generator for the caller's own draws.

    With ``deterministic``, torch uses deterministic algorithms where available (CPU results are
    then bit-identical across runs with the same seed and thread count).
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - deliberately seeds the global RandomState other code draws from
    try:
        import torch
    except ImportError:  # the metric engine does not need torch
        return np.random.default_rng(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return np.random.default_rng(seed)


def select_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; otherwise the named device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
