"""nnU-Net-style dataset folders written by tests: ``imagesTr/CASE_0000.nii.gz``,
``labelsTr/CASE.nii.gz`` and a ``dataset.json`` with one image channel."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from segqc.io.images import Geometry, write_image


def write_dataset(root: Path, cases: Mapping[str, tuple[np.ndarray, np.ndarray, Geometry]], *,
                  labels: Mapping[str, int] | None = None, channel: str = "synthetic", name: str = "T") -> Path:
    """Write ``cases`` (case -> image, label map, their grid) under ``root`` with a ``dataset.json``
    naming ``labels`` (default background 0, foreground 1) and the image ``channel``."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    for case, (image, label, geometry) in cases.items():
        write_image(root / "imagesTr" / f"{case}_0000.nii.gz", image, geometry)
        write_image(root / "labelsTr" / f"{case}.nii.gz", label, geometry)
    (root / "dataset.json").write_text(json.dumps({
        "name": name, "channel_names": {"0": channel},
        "labels": dict(labels) if labels is not None else {"background": 0, "foreground": 1},
        "numTraining": len(cases), "file_ending": ".nii.gz"}))
    return root
