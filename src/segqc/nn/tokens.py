"""Images to a spatial grid of tokens, and back (for self-supervised pre-training).

:class:`ConvTokenEncoder` is a plain strided CNN (3x3 convolutions, GroupNorm, SiLU; every stage
halves the resolution) whose last feature map is average-pooled to a fixed ``grid`` x ``grid``
and read as ``grid**2`` tokens of dimension ``channels[-1]``, in row-major order (token ``i * grid
+ j`` covers row block ``i``, column block ``j``). The adaptive pooling makes the token grid
independent of the input size, so the same encoder works on 32 px test slices and 264 px slices.

:class:`TokenGridDecoder` maps the token grid back to an image (nearest-neighbour upsampling and
convolutions); it exists only to pre-train the encoder (masked/denoising autoencoding), so that
everything the decoder needs must pass through the tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvTokenEncoder", "TokenGridDecoder", "sincos_2d"]


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(int(groups), int(channels)), channels)


def _block(cin: int, cout: int, groups: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1), _norm(cout, groups), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), _norm(cout, groups), nn.SiLU(),
    )


class ConvTokenEncoder(nn.Module):
    """Image ``(B, C, H, W)`` -> tokens ``(B, grid**2, channels[-1])`` (module docstring)."""

    def __init__(self, in_channels: int, channels: Sequence[int] = (16, 32, 64, 64), *, grid: int = 8,
                 norm_groups: int = 8) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1 or grid < 1:
            raise ValueError(f"need positive channels and grid, got {channels}, {grid}")
        self.in_channels = int(in_channels)
        self.grid = int(grid)
        self._token_dim = channels[-1]  # the out_channels of the last stage's last convolution
        self.stages = nn.ModuleList()
        previous = self.in_channels
        for c in channels:
            self.stages.append(_block(previous, c, norm_groups, stride=2))
            previous = c
        self.pool = nn.AdaptiveAvgPool2d(self.grid)

    @property
    def token_dim(self) -> int:
        return self._token_dim

    @property
    def n_tokens(self) -> int:
        return self.grid * self.grid

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage (finest first)."""
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def grid_features(self, x: torch.Tensor) -> torch.Tensor:
        """The token grid as a feature map ``(B, token_dim, grid, grid)``."""
        return self.pool(self.feature_maps(x)[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grid_features(x).flatten(2).transpose(1, 2)


class TokenGridDecoder(nn.Module):
    """Token grid ``(B, token_dim, grid, grid)`` -> image ``(B, out_channels, size, size)``."""

    def __init__(self, token_dim: int, out_channels: int, *, grid: int, size: int, width: int = 32,
                 norm_groups: int = 8) -> None:
        super().__init__()
        self.size = int(size)
        n_up = max(0, math.ceil(math.log2(max(1.0, size / grid))))
        layers: list[nn.Module] = [nn.Conv2d(token_dim, width, 1)]
        for _ in range(n_up):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, padding=1),
                       _norm(width, norm_groups), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        x = self.body(grid)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.head(x)


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position codes ``(grid**2, dim)`` for a row-major token grid.

    A quarter of the dimensions encodes the row with sines, a quarter with cosines, and the same
    for the column (frequencies ``1 / 10000**(k / (dim/4))``); dimensions left over when ``dim``
    is not a multiple of 4 are zero.
    """
    quarter = dim // 4
    out = torch.zeros(grid * grid, dim)
    if quarter == 0:
        return out
    pos = torch.arange(grid, dtype=torch.float32)
    freq = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")
    r = rows.reshape(-1, 1) * freq
    c = cols.reshape(-1, 1) * freq
    out[:, : 4 * quarter] = torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=1)
    return out
