"""The Probabilistic U-Net on tiny untrained networks: latent draws use the standard deviation
exp(log_var / 2) for the posterior (training) and the prior (sampling), the training loss carries
KL(posterior ‖ prior) (not the reverse), and ``predict_slices`` honours ``samples`` and seeds each
slice on its own. The prior and posterior nets are replaced by fixed Gaussians where a test needs a
known latent distribution, and the combining layers by a recorder of z."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segqc.seg.probunet.config import ProbUnetConfig
from segqc.seg.probunet.model import ProbUnet
from segqc.seg.probunet.predict import LoadedProbUnet, predict_slices

CLASSES = 2
WIDE = 4000  # latent dimensions of the fixed Gaussians: one call draws this many numbers


def _model(seed: int = 0) -> ProbUnet:
    torch.manual_seed(seed)
    return ProbUnet(ProbUnetConfig.preset("tiny"), image_channels=1, classes=CLASSES).eval()


def _fixed(mean: torch.Tensor, log_var: torch.Tensor):
    """A stand-in for the prior or posterior net's forward: the given (mean, log_var) whatever the
    input."""
    return lambda x: (mean.expand(x.shape[0], -1), log_var.expand(x.shape[0], -1))


def _record_z(model: ProbUnet, monkeypatch) -> list[torch.Tensor]:
    """Replace the combining layers by zero logits that record every z they are given."""
    seen: list[torch.Tensor] = []

    def logits(features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        seen.append(z.detach().clone())
        return torch.zeros(features.shape[0], CLASSES, *features.shape[2:], requires_grad=True)

    monkeypatch.setattr(model, "logits", logits)
    return seen


def _image(size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn((1, 1, size, size), generator=torch.Generator().manual_seed(seed))


def test_training_draws_z_from_the_posterior_with_std_exp_half_log_var(monkeypatch):
    """Reference: a Gaussian of variance 4 (log_var = log 4) has standard deviation 2 (exp of
    half the log-variance); 4000 draws estimate it to about 2 / sqrt(8000) = 0.02."""
    model = _model()
    zero, log4 = torch.zeros(1, WIDE), torch.full((1, WIDE), math.log(4.0))
    monkeypatch.setattr(model.posterior, "forward", _fixed(zero, log4))
    monkeypatch.setattr(model.prior, "forward", _fixed(zero, log4))
    seen = _record_z(model, monkeypatch)
    model.training_loss(_image(), torch.zeros((1, 32, 32), dtype=torch.long),
                        generator=torch.Generator().manual_seed(1))
    z = seen[0].numpy().ravel()
    assert z.size == WIDE
    assert abs(z.mean()) < 0.15
    assert abs(z.std() - 2.0) < 0.15, z.std()


def test_sampling_draws_z_from_the_prior_with_std_exp_half_log_var(monkeypatch):
    """Reference: as above, the prior N(0, 4) has standard deviation 2 (not 4)."""
    model = _model()
    zero, log4 = torch.zeros(1, WIDE), torch.full((1, WIDE), math.log(4.0))
    monkeypatch.setattr(model.prior, "forward", _fixed(zero, log4))
    seen = _record_z(model, monkeypatch)
    model.sample(_image(), 2, generator=torch.Generator().manual_seed(3))
    z = torch.cat(seen).numpy().ravel()
    assert z.size == 2 * WIDE
    assert abs(z.mean()) < 0.15
    assert abs(z.std() - 2.0) < 0.15, z.std()


def test_the_training_loss_carries_kl_of_the_posterior_from_the_prior(monkeypatch):
    """Reference: torch.distributions.kl_divergence(Normal(mq, exp(lq / 2)), Normal(mp, exp(lp /
    2))) summed over the latent dimensions and averaged over the batch (the config's docstring:
    beta KL(posterior ‖ prior)); the two directions differ by far more than the tolerance here."""
    model = _model()
    latent = model.config.latent
    g = torch.Generator().manual_seed(5)
    mq, mp = torch.randn((2, latent), generator=g), torch.randn((2, latent), generator=g)
    lq, lp = torch.randn((2, latent), generator=g) - 1.0, torch.randn((2, latent), generator=g) + 1.0
    monkeypatch.setattr(model.posterior, "forward", lambda x: (mq, lq))
    monkeypatch.setattr(model.prior, "forward", lambda x: (mp, lp))
    image = torch.randn((2, 1, 32, 32), generator=g)
    target = torch.randint(0, CLASSES, (2, 32, 32), generator=g)
    loss, parts = model.training_loss(image, target, generator=torch.Generator().manual_seed(0))
    q = torch.distributions.Normal(mq, (0.5 * lq).exp())
    p = torch.distributions.Normal(mp, (0.5 * lp).exp())
    forward = float(torch.distributions.kl_divergence(q, p).sum(dim=1).mean())
    reverse = float(torch.distributions.kl_divergence(p, q).sum(dim=1).mean())
    assert abs(forward - reverse) > 0.5
    assert parts["kl"] == pytest.approx(forward, rel=1e-5)
    assert parts["loss"] == pytest.approx(parts["ce"] + model.config.beta * forward / (32 * 32), rel=1e-5)


def _loaded(seed: int = 0) -> LoadedProbUnet:
    model = _model(seed)
    return LoadedProbUnet(model, model.config, (0, 1), {"0": "background", "1": "foreground"}, 1)


def test_predict_slices_returns_the_samples_asked_for():
    """Reference: the call's own arguments — 3 samples of 2 slices (the tiny config's default is
    4), 2 classes of 32 x 32 px."""
    loaded = _loaded()
    assert loaded.config.samples == 4
    images = np.random.default_rng(0).normal(size=(2, 1, 32, 32)).astype(np.float32)
    out = predict_slices(loaded, images, samples=3, seed=0)
    assert out["samples"].shape == (3, 2, CLASSES, 32, 32)
    assert predict_slices(loaded, images, seed=0)["samples"].shape == (4, 2, CLASSES, 32, 32)


def test_identical_slices_of_one_call_get_their_own_draws():
    """Reference: two copies of one slice in one call; with one seed per call (not per slice) the
    networks would see the same z and return identical samples, so any difference shows the seed
    includes the slice index. A second call repeats the first exactly (same seeds)."""
    loaded = _loaded()
    image = np.random.default_rng(1).normal(size=(1, 1, 32, 32)).astype(np.float32)
    images = np.concatenate([image, image])
    out = predict_slices(loaded, images, samples=4, seed=7)["samples"]
    assert np.abs(out[:, 0] - out[:, 1]).max() > 1e-4
    np.testing.assert_array_equal(predict_slices(loaded, images, samples=4, seed=7)["samples"], out)


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
