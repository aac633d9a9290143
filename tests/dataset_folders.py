"""nnU-Net-style dataset folders written by tests: ``imagesTr/CASE_0000.nii.gz`` (and
``CASE_0001.nii.gz``, ... for more channels), ``labelsTr/CASE.nii.gz`` and a ``dataset.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from segqc.io.geometry import Geometry
from segqc.io.images import write_image

Channels = np.ndarray | Sequence[np.ndarray]


def write_dataset(root: Path, cases: Mapping[str, tuple[Channels, np.ndarray, Geometry]], *,
                  labels: Mapping[str, int] | None = None, channel: str | Sequence[str] = "synthetic",
                  name: str = "T") -> Path:
    """Write ``cases`` (case -> image, label map, their grid) under ``root`` with a ``dataset.json``
    naming ``labels`` (default background 0, foreground 1) and the image ``channel``. For several
    channels give each case's images as a list and ``channel`` as their names, in file order."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    names = [channel] if isinstance(channel, str) else list(channel)
    for case, (image, label, geometry) in cases.items():
        images = [image] if isinstance(image, np.ndarray) else list(image)
        if len(images) != len(names):
            raise ValueError(f"{case}: {len(images)} image(s) for {len(names)} channel name(s)")
        for k, channel_image in enumerate(images):
            write_image(root / "imagesTr" / f"{case}_{k:04d}.nii.gz", channel_image, geometry)
        write_image(root / "labelsTr" / f"{case}.nii.gz", label, geometry)
    (root / "dataset.json").write_text(json.dumps({
        "name": name, "channel_names": {str(k): n for k, n in enumerate(names)},
        "labels": dict(labels) if labels is not None else {"background": 0, "foreground": 1},
        "numTraining": len(cases), "file_ending": ".nii.gz"}))
    return root
