"""LDSeg's networks and pure functions: shapes of the tiny config, the standardised label
embedding, the paper's DDIM timesteps, the loss terms, slicing and resampling, and deterministic
sampling. Expected values are worked out by hand, not taken from the code under test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segqc.errors import InputError
from segqc.nn.losses import mean_dice_loss as dice_loss
from segqc.seg.ldseg.config import LdsegConfig
from segqc.seg.ldseg.model import Ldseg, ddim_timesteps
from segqc.seg.ldseg.predict import LoadedLdseg, predict_slices
from segqc.seg.slices import image_slices, label_slices


def _model(seed: int = 0, classes: int = 3) -> Ldseg:
    torch.manual_seed(seed)
    return Ldseg(LdsegConfig.preset("tiny"), image_channels=2, classes=classes).eval()


def test_tiny_config_gives_sixteen_fold_latents_and_class_probabilities():
    config = LdsegConfig.preset("tiny")
    model = _model()
    image = torch.randn(4, 2, config.size, config.size)
    gt = torch.randint(0, 3, (4, config.size, config.size))
    onehot = torch.nn.functional.one_hot(gt, 3).permute(0, 3, 1, 2).float()
    latent = (4, config.latent_channels, config.size // 16, config.size // 16)
    assert model.image_encoder(image).shape == latent
    assert model.label_encoder(onehot).shape == latent
    assert model.label_decoder(torch.randn(latent)).shape == (4, 3, config.size, config.size)
    probs = model.sample(image, samples=3, steps=2, generator=torch.Generator().manual_seed(0))
    assert probs.shape == (3, 4, 3, config.size, config.size)
    assert torch.allclose(probs.sum(dim=2), torch.ones(3, 4, config.size, config.size), atol=1e-5)


def test_the_label_embedding_is_standardised_per_sample():
    config = LdsegConfig.preset("tiny", size=64)
    torch.manual_seed(1)
    model = Ldseg(config, image_channels=1, classes=2)
    gt = torch.zeros(3, 64, 64, dtype=torch.long)
    gt[:, 10:40, 5:30] = 1
    z = model.label_encoder(torch.nn.functional.one_hot(gt, 2).permute(0, 3, 1, 2).float())
    flat = z.flatten(1)
    assert torch.allclose(flat.mean(dim=1), torch.zeros(3), atol=1e-4)
    assert torch.allclose(flat.std(dim=1, unbiased=False), torch.ones(3), atol=1e-2)


def test_ddim_uses_evenly_spaced_steps_between_T_and_1():
    assert ddim_timesteps(2, 1000) == [999, 0]  # t = 1000 and t = 1 in the paper's 1-based count
    assert ddim_timesteps(5, 1000) == [999, 749, 499, 250, 0]  # 1, 250.75, 500.5, 750.25, 1000 rounded
    assert ddim_timesteps(1, 1000) == [999]


def test_dice_loss_is_zero_for_a_perfect_and_one_for_a_disjoint_prediction():
    gt = torch.zeros(1, 2, 4, 4)
    gt[0, 1, :2] = 1
    gt[0, 0, 2:] = 1
    assert float(dice_loss(gt, gt)) == pytest.approx(0.0, abs=1e-5)
    assert float(dice_loss(1 - gt, gt)) == pytest.approx(1.0, abs=1e-5)


def test_training_loss_is_ce_plus_two_dice_plus_the_noise_mse():
    model = _model()
    image = torch.randn(2, 2, 32, 32)
    gt = torch.randint(0, 3, (2, 32, 32))
    loss, parts = model.training_loss(image, gt, generator=torch.Generator().manual_seed(3))
    assert loss.item() == pytest.approx(parts["ce"] + 2.0 * parts["dice"] + 1.0 * parts["mse"], rel=1e-5)
    # MONAI's denoiser starts with a zero output layer, so the image encoder gets its first
    # gradient only after one step; afterwards every network learns from the one loss
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    loss, _ = model.training_loss(image, gt, generator=torch.Generator().manual_seed(4))
    loss.backward()
    for name in ("label_encoder", "image_encoder", "denoiser", "label_decoder"):  # end to end
        grads = [p.grad for p in model.component(name).parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), name


def test_slices_are_z_scored_resampled_and_labels_mapped_to_class_indices():
    volume = np.arange(8 * 12 * 3, dtype=np.float32).reshape(8, 12, 3) * 10 + 5
    slices = image_slices([volume], 16)
    assert slices.shape == (3, 1, 16, 16)
    assert abs(float(slices.mean())) < 0.05 and abs(float(slices.std()) - 1) < 0.05
    assert slices[2].mean() > slices[1].mean() > slices[0].mean()  # slices along the last (ITK k) axis
    step = 10 / np.std(volume)  # neighbouring slices differ by 10 before z-scoring
    np.testing.assert_allclose(slices[:, 0].mean(axis=(1, 2)), [-step, 0, step],
                               atol=1e-3)
    assert image_slices([np.ones((8, 12), np.float32)], 16).shape == (1, 1, 16, 16)  # a 2D image: one slice
    label = np.zeros((8, 8, 2), np.uint8)
    label[:4, :, 0] = 4
    label[4:, :, 1] = 2
    index = label_slices(label, (0, 2, 4), 16)
    assert index.shape == (2, 16, 16) and index.dtype == np.uint8
    assert set(np.unique(index[0])) == {0, 2} and (index[0, :8] == 2).all()  # value 4 -> class 2
    assert (index[1, 8:] == 1).all()  # value 2 -> class 1
    with pytest.raises(ValueError, match=r"\[7\]"):
        label_slices(np.full((4, 4), 7, np.uint8), (0, 1), 16)


def _loaded(model: Ldseg) -> LoadedLdseg:
    return LoadedLdseg(model, model.config, (0, 1, 2), {}, 2)


def test_sampling_is_deterministic_for_a_seed_and_batch_independent():
    loaded = _loaded(_model(2))
    images = np.random.default_rng(0).normal(size=(5, 2, 32, 32)).astype(np.float32)
    first = predict_slices(loaded, images, samples=3, steps=2, seed=7)
    again = predict_slices(loaded, images, samples=3, steps=2, seed=7, batch_size=2)
    other = predict_slices(loaded, images, samples=3, steps=2, seed=8)
    for key in ("mean", "std", "entropy", "label"):
        np.testing.assert_allclose(first[key], again[key], atol=1e-5)
    assert not np.allclose(first["mean"], other["mean"])
    assert first["mean"].shape == (5, 3, 32, 32) and first["entropy"].shape == (5, 32, 32)
    np.testing.assert_array_equal(first["label"], first["mean"].argmax(axis=1))
    expected_entropy = -(first["mean"] * np.log(np.clip(first["mean"], 1e-12, None))).sum(axis=1)
    np.testing.assert_allclose(first["entropy"], expected_entropy, atol=1e-5)
    with pytest.raises(InputError, match="need slices"):
        predict_slices(loaded, images[:, :1], samples=1)


def test_config_checks_the_latent_and_the_paper_settings():
    paper = LdsegConfig.preset("paper")
    assert (paper.gamma, paper.lam, paper.timesteps, paper.steps) == (2.0, 1.0, 1000, 2)
    assert paper.latent_channels == 1 and paper.latent_size == 16  # 256 px, four down-samplings
    with pytest.raises(ValueError, match="multiple of 16"):
        LdsegConfig.preset("tiny", size=40)
    with pytest.raises(ValueError, match="train_decode"):
        LdsegConfig.preset("tiny", train_decode="other")


def test_the_decoder_sees_z_t_minus_eps_hat_as_in_eq_12_or_the_clipped_x0_estimate():
    seen: dict[str, torch.Tensor] = {}
    image, gt = torch.randn(2, 2, 32, 32), torch.randint(0, 3, (2, 32, 32))
    for mode in ("paper", "x0"):
        torch.manual_seed(0)
        model = Ldseg(LdsegConfig.preset("tiny", train_decode=mode), image_channels=2, classes=3)
        with torch.no_grad():
            for parameter in model.denoiser.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        inputs: dict[str, torch.Tensor] = {}
        model.label_decoder.register_forward_hook(
            lambda _m, args, _o, mode=mode: seen.__setitem__(mode, args[0].detach()))
        model.denoiser.register_forward_hook(
            lambda _m, args, out, inputs=inputs: inputs.update(x=args[0].detach(), eps=out.detach()))
        loss, _ = model.training_loss(image, gt, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(loss)
        z_t = inputs["x"][:, :model.config.latent_channels]
        t = torch.randint(0, 1000, (2,), generator=torch.Generator().manual_seed(1))  # the draw training_loss made
        abar = model.abar[t].view(-1, 1, 1, 1)
        expected = z_t - inputs["eps"] if mode == "paper" else \
            ((z_t - (1 - abar).sqrt() * inputs["eps"]) / abar.sqrt()).clamp(-5.0, 5.0)
        torch.testing.assert_close(seen[mode], expected, atol=1e-5, rtol=1e-5)
