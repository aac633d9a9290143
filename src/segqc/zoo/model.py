"""The zoo's network: a MONAI 2D UNet over preprocessed slices, and slice-batched inference."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from segqc.zoo.config import ZooConfig

if TYPE_CHECKING:
    import torch

__all__ = ["build_unet", "predict_slices"]


def build_unet(config: ZooConfig, in_channels: int, n_classes: int) -> torch.nn.Module:
    """``monai.networks.nets.UNet(spatial_dims=2)`` with the config's widths; ``n_classes``
    output logits (background included). Weights come from torch's current RNG state."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=in_channels, out_channels=n_classes, channels=config.channels,
                strides=config.strides, num_res_units=config.num_res_units)


def predict_slices(model: torch.nn.Module, image: np.ndarray, *, batch_size: int = 32,
                   device: torch.device | None = None) -> np.ndarray:
    """Class index per voxel of a preprocessed volume ``(C, size, size, n_slices)`` float32,
    slices in batches: ``(size, size, n_slices)`` int64. The model is put in eval mode; no
    gradients are recorded."""
    import torch

    device = device or next(model.parameters()).device
    model.eval()
    n = image.shape[-1]
    out = np.empty(image.shape[1:], dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            batch = np.moveaxis(image[..., start:start + batch_size], -1, 0)  # (B, C, H, W)
            logits = model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device))
            out[..., start:start + batch.shape[0]] = np.moveaxis(logits.argmax(dim=1).cpu().numpy(), 0, -1)
    return out
