"""Random test masks shared by the peer modules: smooth blobs, and a prediction that is the ground
truth with smaller blobs flipped (false positives and negatives of all sizes)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def blob(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, level: float) -> np.ndarray:
    """Voxels where smoothed noise exceeds ``level`` standard deviations."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > level * field.std()


def flipped_pair(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, ground truth): the GT with small blobs flipped."""
    rng = np.random.default_rng(seed)
    gt = blob(rng, shape, 2.0, 0.4)
    pred = gt ^ blob(rng, shape, 1.0, 1.2)
    return pred, gt


def shifted_boxes_3d() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(prediction, GT, spacing): GT a 3x3x3 cube at z, y, x 1..3; prediction a 3x3x5 box at z 2..4,
    y 1..3, x 1..5 (one slice up, two voxels longer in x); spacing (2, 1, 0.5) mm."""
    gt = np.zeros((6, 5, 8), dtype=bool)
    gt[1:4, 1:4, 1:4] = True
    pred = np.zeros((6, 5, 8), dtype=bool)
    pred[2:5, 1:4, 1:6] = True
    return pred, gt, (2.0, 1.0, 0.5)


def square_in_square(spacing: tuple[float, float] = (2.0, 1.0)) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(prediction, GT, spacing) in a 9x9 image: GT the 3x3 square at rows/columns 3..5, prediction
    the 5x5 square at 2..6."""
    gt = np.zeros((9, 9), dtype=bool)
    gt[3:6, 3:6] = True
    pred = np.zeros((9, 9), dtype=bool)
    pred[2:7, 2:7] = True
    return pred, gt, spacing
