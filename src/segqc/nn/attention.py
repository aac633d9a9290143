"""Single-head cross-attention with explicit query/key/value projections."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["CrossAttention"]


class CrossAttention(nn.Module):
    """``softmax(Q K^T / sqrt(d)) V`` with ``Q = F_Q(query)``, ``K = F_K(keys)``, ``V = F_V(keys)``.

    ``query``: ``(B, n_q, query_dim)``; ``keys``: ``(B, n_k, key_dim)``. Returns the attended
    values ``(B, n_q, dim)`` and the attention weights ``(B, n_q, n_k)`` (each row sums to 1).
    With ``n_k == 1`` the softmax has nothing to choose from (every weight is 1), so the output does
    not depend on the query at all: give it several key tokens.
    """

    def __init__(self, query_dim: int, key_dim: int, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)
        self.to_q = nn.Linear(query_dim, dim)
        self.to_k = nn.Linear(key_dim, dim)
        self.to_v = nn.Linear(key_dim, dim)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.to_q(query)
        k = self.to_k(keys)
        v = self.to_v(keys)
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(self.dim), dim=-1)
        return weights @ v, weights
