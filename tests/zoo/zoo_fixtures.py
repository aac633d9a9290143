"""The tiny generated dataset and config of the zoo tests (imported by conftest and tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dataset_folders import write_dataset

from segqc.io.geometry import Geometry
from segqc.zoo import ZooConfig

SPACING = (1.5, 1.5, 5.0)
SHAPE = (32, 30, 4)


def make_dataset(root: Path, *, patients: int = 4, frames: int = 2, seed: int = 0) -> Path:
    """Images correlated with their labels: a bright square (label 1) holding a brighter core
    (label 2) on a dark noisy background, position and size varying per case and slice."""
    rng = np.random.default_rng(seed)
    cases = {}
    for p in range(patients):
        for f in range(1, frames + 1):
            case = f"TOY_patient{p:03d}_frame{f:02d}"
            label = np.zeros(SHAPE, np.uint8)
            for z in range(1, SHAPE[2]):  # slice 0 stays empty
                size = int(rng.integers(9, 15))
                x0, y0 = (int(v) for v in rng.integers(2, min(SHAPE[:2]) - size - 2, size=2))
                label[x0:x0 + size, y0:y0 + size, z] = 1
                label[x0 + 3:x0 + size - 3, y0 + 3:y0 + size - 3, z] = 2
            image = (0.2 + 0.05 * rng.standard_normal(SHAPE) + 0.4 * (label == 1) + 0.7 * (label == 2)) * 500
            geometry = Geometry.from_shape(SHAPE, SPACING, origin=(10.0, -4.0, 2.0))
            cases[case] = (image.astype(np.float32), label, geometry)
    return write_dataset(root, cases, labels={"background": 0, "outer": 1, "core": 2}, channel="MRI", name="Toy")


TINY = ZooConfig(size=32, channels=(4, 8), batch_size=8, lr=1e-2, epochs=4, steps_per_epoch=8,
                 snapshot_epochs=(1, 4), holdout_fraction=0.25, empty_slice_fraction=0.5, flips=True,
                 max_shift_fraction=0.1)
