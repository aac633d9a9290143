"""Deterministic and MC-dropout U-Net baseline for ``segqc seg`` (MONAI ``UNet``, 2D slices)."""
