"""Synthetic multi-rater data for the consensus tests: a bright core fading out over a ring;
rater k of C outlines a disk whose radius grows with k across the ring, so the fraction of raters
marking a pixel falls with its distance from the centre as the image does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segqc.io.geometry import Geometry
from segqc.io.images import write_image


def rater_disks(rng: np.random.Generator, raters: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(image (size, size) float32, masks (raters, size, size) uint8)``."""
    inner = rng.uniform(0.12, 0.18) * size
    outer = inner + rng.uniform(0.12, 0.18) * size
    cy, cx = rng.uniform(outer + 1, size - outer - 1, size=2)
    yy, xx = np.mgrid[:size, :size]
    distance = np.hypot(yy - cy, xx - cx)
    image = np.clip((outer - distance) / (outer - inner), 0.0, 1.0).astype(np.float32)
    image += rng.normal(0.0, 0.05, image.shape).astype(np.float32)
    radii = inner + (outer - inner) * (np.arange(1, raters + 1) - 0.5) / raters
    masks = np.stack([(distance <= r).astype(np.uint8) for r in radii])
    return image, masks


def make_rater_folder(root: Path, *, cases: int = 24, seed: int = 0, size: int = 32) -> Path:
    """``root/CASE/image.nii.gz`` + ``rater_k.nii.gz``: even cases 4 raters, odd cases 2."""
    rng = np.random.default_rng(seed)
    geometry = Geometry(shape=(size, size), spacing=(0.5, 0.5), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0))
    for k in range(cases):
        image, masks = rater_disks(rng, 4 if k % 2 == 0 else 2, size)
        folder = root / f"case{k:03d}"
        write_image(folder / "image.nii.gz", image, geometry)
        for r, mask in enumerate(masks, start=1):
            write_image(folder / f"rater_{r}.nii.gz", mask, geometry)
    return root
