"""Test helpers shared by the training tests: two model folders hold the same weights, bit for bit;
a copy of a model folder with its method's config changed."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
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


def copy_with_config(source: Path, folder: Path, change: Callable[[dict], object], method: str = "qcresunet") -> Path:
    """A copy of the model folder ``source`` at ``folder`` whose ``config.json`` has the
    ``method`` part of its config passed through ``change`` (which edits the dict in place)."""
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    change(config["config"][method])
    (folder / "config.json").write_text(json.dumps(config))
    return folder
