"""Validation of the slice options the segmentation configs share (no torch: configs stay light to import)."""

from __future__ import annotations

import math

__all__ = ["check_slice_options"]


def check_slice_options(spacing_mm: float, noise_aug: float, noise_consistency: float) -> None:
    """Raise ``ValueError`` (one line) unless the slice options a segmentation config shares are
    valid: ``spacing_mm`` 0 (whole slices) or a finite pixel size in mm, ``noise_aug`` a fraction of
    the intensity range in [0, 1), ``noise_consistency`` a finite weight >= 0 that needs
    ``noise_aug`` > 0 (it compares the features of noisy slices with those of the clean ones)."""
    if not (spacing_mm >= 0 and math.isfinite(spacing_mm)):
        raise ValueError(f"spacing_mm must be 0 (whole slices) or a pixel size in mm, got {spacing_mm}")
    if not 0.0 <= noise_aug < 1.0:
        raise ValueError(f"noise_aug must be in [0, 1) (a fraction of the intensity range), got {noise_aug}")
    if not (noise_consistency >= 0 and math.isfinite(noise_consistency)):
        raise ValueError(f"noise_consistency must be a weight >= 0, got {noise_consistency}")
    if noise_consistency > 0 and noise_aug == 0:
        raise ValueError("noise_consistency needs noise_aug > 0: it compares the features of noisy slices with "
                         "those of the clean ones")
