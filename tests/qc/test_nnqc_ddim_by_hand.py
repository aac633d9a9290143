"""nnQC's pGT sampler against the DDIM update written out by hand for a toy noise predictor, with
the noise schedule from MONAI's ``DDPMScheduler`` and the trailing timesteps listed by hand."""

from __future__ import annotations

import math

import einops  # noqa: F401  (MONAI's DiffusionModelUNet attention blocks need it)
import numpy as np
import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from segqc.qc.nnqc.config import NnqcConfig
from segqc.qc.nnqc.model import MaskAutoencoder, NnqcModel

LABELS = (0, 1, 2)
TINY = NnqcConfig.preset("tiny")


class _ToyNoise(torch.nn.Module):
    """eps_hat = 0.3 z_t + 0.0004 t: a smooth function of the latent and the timestep."""

    def forward(self, z_t: torch.Tensor, s_d: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return 0.3 * z_t + 0.0004 * t.float().view(-1, 1, 1, 1)


def _inputs(b: int):
    rng = np.random.default_rng(0)
    images = rng.random((b, 1, TINY.size, TINY.size)).astype(np.float32)
    segs = rng.integers(0, 3, size=(b, TINY.size, TINY.size)).astype(np.uint8)
    return images, segs, np.linspace(0.1, 0.9, b)


@pytest.mark.parametrize("per_pass", [8, 1])
def test_generate_pgt_runs_the_ddim_update_on_slice_by_slice_noise(per_pass: int) -> None:
    """b = 2 slices, 3 samples, 4 steps of T = 1000: timesteps 999, 749, 499, 249. Per step
    ``x0 = (z - sqrt(1 - a_t) eps) / sqrt(a_t)``, ``z = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps``
    with ``a_prev`` the next timestep's alpha_bar and 1 after the last; the noise is drawn for
    all samples of slice 0, then slice 1 (rows sample-major); the decoder gets ``z / scale``."""
    torch.manual_seed(0)
    model = NnqcModel(TINY, LABELS, 1).eval()
    model.denoiser = _ToyNoise()
    model.latent_scale.fill_(2.0)
    decoded: list[torch.Tensor] = []

    def decode(z: torch.Tensor) -> torch.Tensor:
        decoded.append(z.clone())
        logits = torch.zeros(z.shape[0], len(LABELS), TINY.size, TINY.size)
        logits[:, 2] = 1.0  # every pixel class 2: label value 2
        return logits

    model.autoencoder.decode = decode  # type: ignore[method-assign]
    b, samples, h, channels = 2, 3, TINY.latent_size, TINY.latent_channels
    images, segs, ratios = _inputs(b)
    pgt = model.generate_pgt(images, segs, ratios, steps=4, samples=samples, generator=7, per_pass=per_pass)
    assert pgt.shape == (samples, b, TINY.size, TINY.size) and bool((pgt == 2).all())

    abar = DDPMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.00085,
                         beta_end=0.012).alphas_cumprod.double()
    noise = torch.randn((b, samples, channels, h, h), generator=torch.Generator().manual_seed(7)).double()
    z = torch.stack([noise[slice_, sample] for sample in range(samples) for slice_ in range(b)])
    times = [999, 749, 499, 249]
    for i, t in enumerate(times):
        eps = 0.3 * z + 0.0004 * t
        a_t = float(abar[t])
        a_prev = float(abar[times[i + 1]]) if i + 1 < len(times) else 1.0
        x0 = (z - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        z = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    got = torch.cat(decoded).double()
    assert torch.allclose(got, z / 2.0, rtol=1e-4, atol=1e-5)


def test_latents_for_diffusion_are_the_posterior_means_times_the_scale() -> None:
    torch.manual_seed(0)
    model = NnqcModel(TINY, LABELS, 1).eval()
    model.latent_scale.fill_(0.5)
    indices = torch.from_numpy(_inputs(2)[1].astype(np.int64))
    mu, _ = model.autoencoder.encode(torch.nn.functional.one_hot(indices, 3).permute(0, 3, 1, 2).float())
    assert torch.allclose(model.encode_latents(indices), 0.5 * mu)


def test_the_posterior_sample_uses_the_standard_deviation_exp_half_log_var() -> None:
    mu = torch.tensor([[0.5, -1.0]])
    log_var = torch.tensor([[math.log(4.0), math.log(0.25)]])  # standard deviations 2 and 0.5
    draw = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
    got = MaskAutoencoder.sample(mu, log_var, torch.Generator().manual_seed(3))
    assert torch.allclose(got, mu + draw * torch.tensor([[2.0, 0.5]]))


def test_the_slice_ratio_is_centred_to_minus_one_one_before_the_position_expert() -> None:
    torch.manual_seed(0)
    model = NnqcModel(TINY, LABELS, 1).eval()
    ratios = torch.tensor([0.0, 0.25, 1.0])
    with torch.no_grad():
        want = model.toe.position_expert(torch.tensor([[-1.0], [-0.5], [1.0]]))
        got = model.toe.position_opinion(ratios)
    assert torch.allclose(got.reshape(3, -1), want)


@pytest.mark.parametrize("option", ["steps", "samples"])
def test_zero_steps_or_samples_are_refused_not_replaced_by_the_default(option: str) -> None:
    """Once: 0 read as "not given" and ran the config's default, while -1 was refused."""
    model = NnqcModel(TINY, LABELS, 1)
    images, segs, ratios = _inputs(1)
    with pytest.raises(ValueError, match="need 1 <= steps"):
        model.generate_pgt(images, segs, ratios, **{option: 0})
