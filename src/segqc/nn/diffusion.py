"""Sampling loops shared by the diffusion models of ``segqc.seg`` (LDSeg, consensus diffusion).

Both loops work on a *clean-estimate function* ``(x_t, t) -> x0_hat`` (whatever the network
predicts — noise, v or x0 — the model turns it into the clean estimate), so one implementation
serves every parameterisation. ``abar`` is the cumulative product of ``1 - beta_t`` for the
0-based timesteps ``0 .. T-1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["CleanFunction", "ancestral_loop", "ddim_loop", "ddim_timesteps", "trailing_timesteps"]


def ddim_timesteps(steps: int, timesteps: int) -> list[int]:
    """The ``steps`` sampling timesteps (0-based, descending): ``steps`` evenly spaced reals
    between 1 and T inclusive, rounded (Nichol & Dhariwal; paper §V-B), minus 1 for MONAI's 0-based
    indexing. ``steps=2``, T=1000 -> [999, 0]."""
    if steps == 1:
        return [timesteps - 1]
    values = torch.linspace(1, timesteps, steps).round().long() - 1
    return sorted({int(v) for v in values}, reverse=True)


def trailing_timesteps(steps: int, timesteps: int) -> list[int]:
    """The ``steps`` sampling timesteps (0-based, descending) with "trailing" spacing: ``T-1,
    T-1-T/s, ..., T/s-1`` (rounded), so the first step starts from the noisiest level the model was
    trained on and the last lands on ``T/s - 1`` (nnQC's sampler). ``steps=2``, T=1000 ->
    [999, 499]."""
    ratio = timesteps / steps
    return [int(round(timesteps - i * ratio)) - 1 for i in range(steps)]


CleanFunction = Callable[[torch.Tensor, int], torch.Tensor]
"""``(z_t, t) -> z0_hat``: the clean-latent estimate at the 0-based timestep ``t``."""


def ddim_loop(predict_clean: CleanFunction, z: torch.Tensor, abar: torch.Tensor, times: Sequence[int], *,
              clip: float = math.inf) -> torch.Tensor:
    """Deterministic DDIM (eta = 0; Song et al. 2021, Eq. 12) from ``z`` at ``times[0]`` through
    ``times`` (0-based, descending) to the clean latent: at each step the clean estimate ``z0``
    (clipped to ``+-clip``) and the noise consistent with it, ``(z - sqrt(abar_t) z0) /
    sqrt(1 - abar_t)``, move ``z`` to the next timestep; after the last one ``z`` is ``z0``."""
    for k, t in enumerate(times):
        abar_t = abar[t]
        z0 = predict_clean(z, t).clamp(-clip, clip)
        if k + 1 == len(times):
            return z0
        abar_prev = abar[times[k + 1]]
        eps_hat = (z - abar_t.sqrt() * z0) / (1 - abar_t).sqrt()
        z = abar_prev.sqrt() * z0 + (1 - abar_prev).sqrt() * eps_hat
    return z


def ancestral_loop(predict_clean: CleanFunction, z: torch.Tensor, abar: torch.Tensor, *,
                   generator: torch.Generator, clip: float = math.inf,
                   rows: tuple[int, slice] | None = None) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020) from ``z`` at t = T-1 down to 0: each step draws
    ``z_{t-1}`` from the Gaussian posterior ``q(z_{t-1} | z_t, z0)`` around the clipped clean
    estimate (variance ``beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t``); the last step returns
    the clean estimate. Fresh noise comes from ``generator`` (CPU). ``rows`` ``(total, part)``:
    ``z`` is the rows ``part`` of a batch of ``total`` rows, and every step draws the whole
    batch's noise and keeps these rows, so a part gets the numbers the whole batch's run would
    give it (from a generator in the state the whole run would start from)."""
    steps = abar.shape[0]
    for t in range(steps - 1, -1, -1):
        abar_t = abar[t]
        z0 = predict_clean(z, t).clamp(-clip, clip)
        if t == 0:
            return z0
        abar_prev = abar[t - 1]
        beta = 1 - abar_t / abar_prev
        mean = (abar_prev.sqrt() * beta * z0 + (1 - beta).sqrt() * (1 - abar_prev) * z) / (1 - abar_t)
        variance = beta * (1 - abar_prev) / (1 - abar_t)
        z = mean + variance.sqrt() * _step_noise(z.shape, generator, rows).to(z.device)
    return z


def _step_noise(shape: torch.Size, generator: torch.Generator, rows: tuple[int, slice] | None) -> torch.Tensor:
    """Standard normal noise of ``shape``, or rows ``rows[1]`` of noise drawn for ``rows[0]`` rows."""
    if rows is None:
        return torch.randn(shape, generator=generator)
    total, part = rows
    return torch.randn((total, *shape[1:]), generator=generator)[part]
