"""nnQC draws its pseudo ground truths a few samples per network pass and gets what drawing them
all at once gave: the reference below is the sampler as it was before chunking (every sample of
the batch through the denoiser and the decoder in one pass), the noise drawn the same way. A
counting hook shows the largest pass stays the same when the samples grow."""

from __future__ import annotations

import einops  # noqa: F401  (MONAI's DiffusionModelUNet attention blocks need it)
import numpy as np
import pytest
import torch

from segqc.nn.diffusion import trailing_timesteps
from segqc.qc.nnqc.config import NnqcConfig
from segqc.qc.nnqc.model import NnqcModel, make_scheduler
from segqc.qc.nnqc.predict import predict_slices


def _model(seed: int = 0) -> NnqcModel:
    torch.manual_seed(seed)
    model = NnqcModel(NnqcConfig.preset("tiny"), (0, 1, 2), 1)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # away from MONAI's zero-initialised output layers, so the noise matters
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def _inputs(b: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.random((b, 1, 32, 32)).astype(np.float32), rng.integers(0, 3, size=(b, 32, 32)).astype(np.uint8),
            np.linspace(0.0, 1.0, b))


@torch.no_grad()
def _all_at_once(model: NnqcModel, images, segs, ratios, *, steps: int, samples: int, seed: int) -> torch.Tensor:
    """The pGTs ``(samples, B, H, W)`` with every sample in one pass, the noise drawn slice by slice."""
    images_t, indices, ratios_t = model._check_inputs(images, segs, ratios)
    b, h, lc = images_t.shape[0], model.config.latent_size, model.config.latent_channels
    c = model.condition(images_t, ratios_t).repeat(samples, 1, 1)
    s_d = model.spatial_condition(indices, images_t).repeat(samples, 1, 1, 1)
    noise = torch.randn((b, samples, lc, h, h), generator=torch.Generator().manual_seed(seed))
    z = noise.transpose(0, 1).reshape(samples * b, lc, h, h)
    alphas = make_scheduler(model.config).alphas_cumprod
    timesteps = trailing_timesteps(steps, model.config.train_timesteps)
    for i, t in enumerate(timesteps):
        eps = model.denoiser(z, s_d, torch.full((samples * b,), t, dtype=torch.long), c)
        a_prev = alphas[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.ones(())
        x0 = (z - (1 - alphas[t]).sqrt() * eps) / alphas[t].sqrt()
        z = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    pgt = model.label_values[model.autoencoder.decode(z / model.latent_scale).argmax(dim=1)]
    return pgt.reshape(samples, b, *pgt.shape[1:])


class _Rows:
    """Records the batch size of every call of a module's forward."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.sizes: list[int] = []
        module.register_forward_pre_hook(lambda _, args: self.sizes.append(int(args[0].shape[0])))


@pytest.mark.parametrize(("samples", "per_pass"), [(7, 6), (5, 1), (4, 64)])
def test_pgts_in_chunks_equal_every_sample_at_once(samples, per_pass):
    """3 slices: 2 samples per pass of 6 (chunks 2, 2, 2, 1), 1 per pass of 1, all 4 in one pass."""
    model = _model(1)
    images, segs, ratios = _inputs(3)
    want = _all_at_once(model, images, segs, ratios, steps=3, samples=samples, seed=11)
    rows = _Rows(model.denoiser)
    got = model.generate_pgt(images, segs, ratios, steps=3, samples=samples, generator=11, per_pass=per_pass)
    assert got.dtype == torch.int64 and got.shape == (samples, 3, 32, 32)
    assert torch.equal(got, want)
    assert max(rows.sizes) == 3 * min(samples, max(1, per_pass // 3))
    assert len(torch.unique(want)) > 1  # the test would not notice swapped samples of a constant map


def test_predict_slices_keeps_its_labels_in_one_byte_and_equals_every_sample_at_once():
    """One generator for all batches draws the noise slice by slice: batches of 2, 2 and 1 slices
    get the noise of one batch of 5."""
    model = _model(2)
    images, segs, ratios = _inputs(5, seed=1)
    got = predict_slices(model, images, segs, ratios, steps=2, samples=9, seed=4, batch_size=2)
    assert got.dtype == np.uint8 and got.shape == (9, 5, 32, 32)
    reference = _all_at_once(model, images, segs, ratios, steps=2, samples=9, seed=4).numpy()
    np.testing.assert_array_equal(got, reference)


def test_the_largest_pass_does_not_grow_with_the_samples():
    model = _model(3)
    images, segs, ratios = _inputs(2, seed=2)
    largest = {}
    for samples in (4, 40):
        denoised, decoded = _Rows(model.denoiser), _Rows(model.autoencoder.net.decoder)
        model.generate_pgt(images, segs, ratios, steps=2, samples=samples, generator=0)
        largest[samples] = (max(denoised.sizes), max(decoded.sizes))
    assert largest == {4: (8, 8), 40: (8, 8)}  # SLICES_PER_PASS: 4 samples of 2 slices
