"""A toy nnU-Net dataset whose image encodes its ground truth, for QC tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segqc.io.images import Geometry, write_image
from segqc.synthetic import paint_ellipsoid

SPACING = (1.0, 1.0, 3.0)
INTENSITY_PER_LABEL = 60.0


def make_qc_dataset(root: Path, *, n_cases: int = 4, shape=(40, 40, 6), seed: int = 0) -> Path:
    """imagesTr/CASE_0000 (image = 60 x label + 10, so the label can be read off the image) and
    labelsTr/CASE with two classes (an ellipse of class 1 holding a smaller one of class 2)."""
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        label = np.zeros(shape, dtype=np.uint8)
        centre = [shape[0] / 2 + rng.uniform(-4, 4), shape[1] / 2 + rng.uniform(-4, 4), shape[2] / 2]
        outer = [rng.uniform(9, 13), rng.uniform(9, 13), shape[2] / 2 - 0.6]
        paint_ellipsoid(label, centre, outer, 1)
        paint_ellipsoid(label, centre, [r * 0.5 for r in outer[:2]] + [outer[2]], 2)
        image = label.astype(np.float32) * INTENSITY_PER_LABEL + 10.0
        geometry = Geometry.from_shape(shape, SPACING)
        write_image(root / "imagesTr" / f"case{i}_0000.nii.gz", image, geometry)
        write_image(root / "labelsTr" / f"case{i}.nii.gz", label, geometry)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MR"}, "labels": {"background": 0, "outer": 1, "inner": 2},
        "numTraining": n_cases, "file_ending": ".nii.gz"}))
    return root


