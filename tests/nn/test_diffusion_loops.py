"""The shared sampling loops against MONAI's DDPM scheduler (a peer) and exact timestep lists."""

from __future__ import annotations

import pytest
import torch

from segqc.nn.diffusion import ancestral_loop, ddim_loop, trailing_timesteps


def _clean(z: torch.Tensor, t: int) -> torch.Tensor:
    """A clean-estimate function that depends on its input and on t (so a skipped or shifted step,
    or another variance, changes what comes out)."""
    return torch.tanh(0.7 * z + 0.05 * t)


def test_ancestral_sampling_equals_monai_ddpm_steps_with_the_same_noise():
    """MONAI's DDPMScheduler with x0 prediction and the posterior variance (``fixed_small``), fed
    the same generator, walks t = T-1 .. 1; the last clean estimate is taken at t = 0."""
    from monai.networks.schedulers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=20, schedule="linear_beta", variance_type="fixed_small",
                              clip_sample=False, prediction_type="sample")
    start = torch.randn((2, 3, 4, 4), generator=torch.Generator().manual_seed(7))
    ours = ancestral_loop(_clean, start.clone(), scheduler.alphas_cumprod,
                          generator=torch.Generator().manual_seed(11))
    z, generator = start.clone(), torch.Generator().manual_seed(11)
    for t in range(19, 0, -1):
        z = scheduler.step(_clean(z, t), t, z, generator=generator)[0]
    torch.testing.assert_close(ours, _clean(z, 0), rtol=1e-5, atol=1e-5)


def test_trailing_timesteps_round_as_the_trailing_spacing_of_diffusers():
    """diffusers' "trailing" spacing: round(arange(T, 0, -T/s)) - 1; for s = 7, T = 1000 the
    values 428.57, 285.71 and 142.86 round up."""
    assert trailing_timesteps(7, 1000) == [999, 856, 713, 570, 428, 285, 142]
    assert trailing_timesteps(2, 1000) == [999, 499]


def test_ddim_clips_every_clean_estimate():
    abar = torch.linspace(0.99, 0.01, 10)
    seen = []

    def wild(z: torch.Tensor, t: int) -> torch.Tensor:
        seen.append(float(z.abs().max()))
        return torch.full_like(z, 5.0 if t > 3 else -5.0)

    out = ddim_loop(wild, torch.zeros(1, 2, 3, 3), abar, [9, 6, 2], clip=1.0)
    assert torch.equal(out, torch.full_like(out, -1.0))
    # the second input is built from the clipped estimate: sqrt(abar_6) * 1 + sqrt(1 - abar_6) * eps
    eps = (0.0 - abar[9].sqrt() * 1.0) / (1 - abar[9]).sqrt()
    assert seen[1] == pytest.approx(float((abar[6].sqrt() + (1 - abar[6]).sqrt() * eps).abs()), rel=1e-6)
