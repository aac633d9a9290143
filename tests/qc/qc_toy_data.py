"""A toy nnU-Net dataset whose image encodes its ground truth, for QC tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dataset_folders import write_dataset

from segqc.io.geometry import Geometry
from segqc.synthetic import paint_ellipsoid

SPACING = (1.0, 1.0, 3.0)
INTENSITY_PER_LABEL = 60.0


def make_qc_dataset(root: Path, *, n_cases: int = 4, shape=(40, 40, 6), seed: int = 0) -> Path:
    """imagesTr/CASE_0000 (image = 60 x label + 10, so the label can be read off the image) and
    labelsTr/CASE with two classes (an ellipse of class 1 holding a smaller one of class 2)."""
    rng = np.random.default_rng(seed)
    cases = {}
    for i in range(n_cases):
        label = np.zeros(shape, dtype=np.uint8)
        centre = [shape[0] / 2 + rng.uniform(-4, 4), shape[1] / 2 + rng.uniform(-4, 4), shape[2] / 2]
        outer = [rng.uniform(9, 13), rng.uniform(9, 13), shape[2] / 2 - 0.6]
        paint_ellipsoid(label, centre, outer, 1)
        paint_ellipsoid(label, centre, [r * 0.5 for r in outer[:2]] + [outer[2]], 2)
        image = label.astype(np.float32) * INTENSITY_PER_LABEL + 10.0
        geometry = Geometry.from_shape(shape, SPACING)
        cases[f"case{i}"] = (image, label, geometry)
    return write_dataset(root, cases, labels={"background": 0, "outer": 1, "inner": 2}, channel="MR")




def oracle_model(dataset: Path, *, size: int = 48):
    """A QC "model" that reads the ground truth off the toy image (image = 60 x label + 10), so its
    pseudo ground truth IS the ground truth and every estimate must equal the true metric."""
    from segqc.fingerprint import compute_fingerprint, plan_from_fingerprint
    from segqc.qc.model_api import QcModel

    fingerprint = compute_fingerprint(dataset)
    plan = plan_from_fingerprint(fingerprint, size=size)

    def generate(images, segs, ratios, samples, steps, seed):
        # MR plan: each image is scaled to [0, 1] between its own 0.5/99.5 percentiles, i.e.
        # 10 -> 0 and 10 + 2 x 60 -> 1 here; read the label off the scaled intensity
        labels = np.clip(np.rint(images[:, 0] * 2.0), 0, 2).astype(np.int64)
        return np.repeat(labels[None], samples, axis=0)

    return QcModel(method="oracle", plan=plan, labels=(0, 1, 2), fingerprint=fingerprint.to_dict(),
                   generate=generate)
