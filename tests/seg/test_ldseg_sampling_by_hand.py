"""LDSeg sampling against references computed in the test: the DDIM update written out by hand for
a toy denoiser (schedule from MONAI's ``DDPMScheduler``), a part of an ancestral draw against the
whole draw, the largest step count, and weights reloaded from a saved model against the model in
memory."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import einops  # noqa: F401  (MONAI's DiffusionModelUNet attention blocks need it)
import numpy as np
import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from segqc.seg.ldseg.config import LdsegConfig
from segqc.seg.ldseg.model import COMPONENTS, Ldseg
from segqc.seg.ldseg.predict import LoadedLdseg, load, predict_slices
from segqc.seg.ldseg.train import save_model


class _ToyDenoiser(torch.nn.Module):
    """Output = 0.3 z_t + 0.0004 t (the noise or the velocity, as the config predicts)."""

    def __init__(self, latent: int) -> None:
        super().__init__()
        self.latent = latent

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return 0.3 * x[:, :self.latent] + 0.0004 * timesteps.float().view(-1, *[1] * (x.ndim - 1))


class _RecordingDecoder(torch.nn.Module):
    """Keeps the latents it decodes and returns fixed random logits for them."""

    def __init__(self, classes: int, size: int) -> None:
        super().__init__()
        self.classes, self.size = classes, size
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor, skips=()) -> torch.Tensor:
        self.inputs.append(z.clone())
        generator = torch.Generator().manual_seed(len(self.inputs))
        self.outputs.append(torch.randn((z.shape[0], self.classes, self.size, self.size), generator=generator))
        return self.outputs[-1]


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_ddim_sampling_follows_the_update_written_out_by_hand(prediction: str) -> None:
    """3 steps of T = 1000: timesteps 999, 499, 0 (evenly spaced between 1 and T, minus 1).
    Clean estimate: ``(z - sqrt(1 - a) eps) / sqrt(a)`` (epsilon) or ``sqrt(a) z - sqrt(1 - a) v``
    (v), clipped to +-0.8; then ``eps' = (z - sqrt(a) z0) / sqrt(1 - a)`` and ``z = sqrt(a_next) z0
    + sqrt(1 - a_next) eps'``; the last step's clean estimate is decoded, and the class
    probabilities are the softmax over the classes of the decoder's logits."""
    config = LdsegConfig.preset("tiny", prediction=prediction, clip_latent=0.8)
    torch.manual_seed(0)
    model = Ldseg(config, image_channels=1, classes=3).eval()
    model.denoiser = _ToyDenoiser(config.latent_channels)
    decoder = _RecordingDecoder(3, config.size)
    model.label_decoder = decoder  # type: ignore[assignment]
    b, samples, latent, side = 2, 3, config.latent_channels, config.latent_size
    noise = torch.randn((samples * b, latent, side, side), generator=torch.Generator().manual_seed(4))
    image = torch.randn((b, 1, config.size, config.size), generator=torch.Generator().manual_seed(5))
    probs = model.sample(image, samples=samples, steps=3, noise=noise)

    abar = DDPMScheduler(num_train_timesteps=1000, schedule="cosine").alphas_cumprod.double()
    z = noise.double()
    times = [999, 499, 0]
    for k, t in enumerate(times):
        a = float(abar[t])
        out = 0.3 * z + 0.0004 * t
        if prediction == "epsilon":
            z0 = (z - math.sqrt(1 - a) * out) / math.sqrt(a)
        else:
            z0 = math.sqrt(a) * z - math.sqrt(1 - a) * out
        z0 = z0.clamp(-0.8, 0.8)
        if k + 1 == len(times):
            z = z0
            break
        a_next = float(abar[times[k + 1]])
        eps = (z - math.sqrt(a) * z0) / math.sqrt(1 - a)
        z = math.sqrt(a_next) * z0 + math.sqrt(1 - a_next) * eps
    assert torch.allclose(torch.cat(decoder.inputs).double(), z, rtol=1e-4, atol=1e-5)
    want = torch.softmax(torch.cat(decoder.outputs), dim=1).view(samples, b, 3, config.size, config.size)
    assert probs.shape == (samples, b, 3, config.size, config.size)
    assert torch.allclose(probs, want, atol=1e-6)


def _loaded(config: LdsegConfig, seed: int = 0) -> LoadedLdseg:
    torch.manual_seed(seed)
    return LoadedLdseg(Ldseg(config, image_channels=1, classes=2).eval(), config, (0, 1), {}, 1)


def test_a_part_of_an_ancestral_draw_gets_the_rows_the_whole_draw_gives_it() -> None:
    """Two slices, samples 1..2 of a draw of 3 (``part`` (1, 3)): with the same generator seed
    they equal samples 1..2 of sampling all three at once (rows ``s * B + b``)."""
    config = LdsegConfig.preset("tiny", timesteps=10)
    torch.manual_seed(0)
    model = Ldseg(config, image_channels=1, classes=2).eval()
    model.denoiser = _ToyDenoiser(config.latent_channels)
    b, side = 2, config.latent_size
    image = torch.randn((b, 1, config.size, config.size), generator=torch.Generator().manual_seed(1))
    noise = torch.randn((3 * b, config.latent_channels, side, side), generator=torch.Generator().manual_seed(2))
    whole = model.sample(image, samples=3, steps=1, noise=noise, sampler="ddpm",
                         generator=torch.Generator().manual_seed(3))
    part = torch.cat(list(model.sample_chunks(image, samples=2, steps=1, noise=noise[b:], sampler="ddpm",
                                              part=(1, 3), generator=torch.Generator().manual_seed(3))))
    torch.testing.assert_close(part, whole[1:], atol=1e-6, rtol=1e-5)


def test_as_many_steps_as_the_schedule_has_are_accepted() -> None:
    config = LdsegConfig.preset("tiny", timesteps=10)
    loaded = _loaded(config)
    loaded.model.denoiser = _ToyDenoiser(config.latent_channels)
    result = predict_slices(loaded, np.zeros((1, 1, 32, 32), np.float32), samples=1, steps=10)
    assert result["mean"].shape == (1, 2, 32, 32)


def test_a_saved_model_loads_back_every_networks_weights(tmp_path: Path) -> None:
    """Reloaded, each of the four networks holds the saved weights (compared with the model in
    memory, which is not the fresh initialisation a load starts from)."""
    config = LdsegConfig.preset("tiny")
    model = _loaded(config, seed=3).model
    data = SimpleNamespace(labels=(0, 1), names={"0": "background", "1": "x"}, image_channels=1)
    save_model(model, data, tmp_path / "model")  # type: ignore[arg-type]
    torch.manual_seed(99)
    loaded = load(tmp_path / "model")
    for name in COMPONENTS:
        saved = model.component(name).state_dict()
        back = loaded.model.component(name).state_dict()
        assert saved.keys() == back.keys()
        for key in saved:
            assert torch.equal(saved[key], back[key]), (name, key)
