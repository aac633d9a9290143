"""Reference voxel surfaces for the metric tests, computed with scipy only: the mask voxels with a
face neighbour outside the mask (the image border counts as outside), as MONAI draws them."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial.distance import cdist


def voxel_edges(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with a 6- (4- in 2D) neighbour outside the mask; the image border counts as outside."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def voxel_surface_points(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Centres (mm) of the :func:`voxel_edges` voxels."""
    return np.argwhere(voxel_edges(mask)) * np.asarray(spacing)


def voxel_hd95(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> float:
    """MONAI's HD95: the larger of the two directed 95th percentiles (linear interpolation) of the
    nearest distances between the voxel surfaces, by brute force."""
    d = cdist(voxel_surface_points(gt, spacing), voxel_surface_points(pred, spacing))
    return max(float(np.percentile(d.min(axis=1), 95)), float(np.percentile(d.min(axis=0), 95)))
