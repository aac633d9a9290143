"""Synthetic segmentation data for the LDSeg tests: bright disks on noise (label 1 = disk)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dataset_folders import write_dataset

from segqc.io.geometry import Geometry


def disk_image(rng: np.random.Generator, shape: tuple[int, int] = (40, 48)) -> tuple[np.ndarray, np.ndarray]:
    """One image (float32, noise of sd 0.3 plus 1.0 inside a disk) and its label map (uint8)."""
    height, width = shape
    radius = rng.uniform(0.18, 0.3) * min(shape)
    cy = rng.uniform(radius + 1, height - radius - 1)
    cx = rng.uniform(radius + 1, width - radius - 1)
    yy, xx = np.mgrid[:height, :width]
    label = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2).astype(np.uint8)
    image = (label.astype(np.float32) + rng.normal(0.0, 0.3, shape)).astype(np.float32)
    return image, label


def foreground_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of the foreground (label > 0) of two maps; 1.0 when both are empty."""
    pred, gt = np.asarray(pred) > 0, np.asarray(gt) > 0
    total = int(pred.sum() + gt.sum())
    return float(2 * (pred & gt).sum() / total) if total else 1.0


def _write_dataset(root: Path, name: str, label_name: str, geometry: Geometry,
                   cases: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    """An nnU-Net folder ``root`` of one-channel ``cases`` (image, label map) named ``name_NNN``."""
    return write_dataset(root, {f"{name}_{k:03d}": (image, label, geometry) for k, (image, label) in enumerate(cases)},
                         labels={"background": 0, label_name: 1}, name=f"{name}s")


def make_disk_dataset(root: Path, *, cases: int = 24, seed: int = 0, shape: tuple[int, int] = (40, 48)) -> Path:
    """An nnU-Net folder of 2D disk images (spacing 0.5 x 0.7 mm)."""
    rng = np.random.default_rng(seed)
    geometry = Geometry(shape=shape, spacing=(0.7, 0.5), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0))
    return _write_dataset(root, "disk", "disk", geometry, [disk_image(rng, shape) for _ in range(cases)])


def ball_volume(rng: np.random.Generator, shape: tuple[int, int, int] = (32, 32, 6)) -> tuple[np.ndarray, np.ndarray]:
    """One volume (float32, noise of sd 0.3 plus 1.0 inside a ball squashed along the last, slice,
    axis) and its label map (uint8), ITK index order ``(i, j, k)``."""
    height, width, depth = shape
    radius = rng.uniform(0.2, 0.3) * min(height, width)
    cy = rng.uniform(radius + 1, height - radius - 1)
    cx = rng.uniform(radius + 1, width - radius - 1)
    cz = rng.uniform(0.35, 0.65) * (depth - 1)
    yy, xx, zz = np.mgrid[:height, :width, :depth]
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 + (radius * (zz - cz) / (0.45 * depth)) ** 2 <= radius**2
    label = inside.astype(np.uint8)
    image = (label.astype(np.float32) + rng.normal(0.0, 0.3, shape)).astype(np.float32)
    return image, label


def make_ball_dataset(root: Path, *, cases: int = 16, seed: int = 0,
                      shape: tuple[int, int, int] = (32, 32, 6)) -> Path:
    """An nnU-Net folder of 3D ball volumes (spacing 1 x 1 x 4 mm: thick slices)."""
    rng = np.random.default_rng(seed)
    geometry = Geometry(shape=shape, spacing=(1.0, 1.0, 4.0), origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return _write_dataset(root, "ball", "ball", geometry, [ball_volume(rng, shape) for _ in range(cases)])
