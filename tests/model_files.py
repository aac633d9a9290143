"""Test helper shared by the training tests: two model folders hold the same weights, bit for bit."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def assert_same_weights(a: Path, b: Path) -> None:
    """``a`` and ``b`` hold the same ``*.safetensors`` files with equal tensors under equal keys."""
    files = sorted(p.name for p in a.glob("*.safetensors"))
    assert files and files == sorted(p.name for p in b.glob("*.safetensors")), (a, b)
    for file in files:
        left, right = load_file(a / file), load_file(b / file)
        assert left.keys() == right.keys(), file
        for key in left:
            assert torch.equal(left[key], right[key]), (file, key)
