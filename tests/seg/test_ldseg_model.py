"""LDSeg's networks and pure functions: shapes of the tiny config, the standardised label
embedding, the paper's DDIM timesteps, the loss terms, slicing and resampling, and deterministic
sampling. Expected values are worked out by hand, not taken from the code under test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segqc.errors import InputError
from segqc.nn.diffusion import ddim_timesteps
from segqc.nn.losses import mean_dice_loss as dice_loss
from segqc.seg.ldseg.config import LdsegConfig
from segqc.seg.ldseg.model import Ldseg
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


def test_the_label_embedding_is_standardised_per_channel_on_a_batch():
    config = LdsegConfig.preset("tiny", size=64, latent_channels=3)
    torch.manual_seed(1)
    model = Ldseg(config, image_channels=1, classes=2)
    gt = torch.zeros(5, 64, 64, dtype=torch.long)
    for i in range(5):  # different shapes, so the raw features differ between samples and channels
        gt[i, 4 + 3 * i:40 + 2 * i, 5:30 + 4 * i] = 1
    z = model.label_encoder(torch.nn.functional.one_hot(gt, 2).permute(0, 3, 1, 2).float())
    assert z.shape == (5, 3, 4, 4)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-2)
    raw = model.label_encoder.body(torch.nn.functional.one_hot(gt, 2).permute(0, 3, 1, 2).float())
    assert not torch.allclose(raw.std(dim=(0, 2, 3)), torch.ones(3), atol=0.1)  # the norm does the work


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


def test_training_timesteps_are_uniform_unless_a_share_goes_to_the_sampling_timesteps():
    paper = _model()  # sampling_t_share 0: the paper's uniform draw, exactly torch.randint's
    drawn = paper.training_timesteps(500, generator=torch.Generator().manual_seed(3))
    assert torch.equal(drawn, torch.randint(0, 1000, (500,), generator=torch.Generator().manual_seed(3)))
    assert drawn.float().mean().item() == pytest.approx(499.5, abs=40)  # uniform over 0..999
    torch.manual_seed(0)
    every = Ldseg(LdsegConfig.preset("tiny", sampling_t_share=1.0, steps=2), image_channels=1, classes=2)
    t = every.training_timesteps(4000, generator=torch.Generator().manual_seed(0))
    assert set(t.tolist()) == {999, 0}  # the two DDIM timesteps of K = 2, both drawn
    assert (t == 999).float().mean().item() == pytest.approx(0.5, abs=0.03)
    half = Ldseg(LdsegConfig.preset("tiny", sampling_t_share=0.5, steps=5), image_channels=1, classes=2)
    t = half.training_timesteps(20000, generator=torch.Generator().manual_seed(1))
    on_grid = torch.isin(t, torch.tensor([999, 749, 499, 250, 0])).float().mean().item()
    assert on_grid == pytest.approx(0.5 + 0.5 * 5 / 1000, abs=0.015)  # the share plus uniform hits
    with pytest.raises(ValueError, match="sampling_t_share"):
        LdsegConfig.preset("tiny", sampling_t_share=1.5)


def test_config_checks_the_latent_and_the_paper_settings():
    paper = LdsegConfig.preset("paper")
    assert (paper.gamma, paper.lam, paper.timesteps, paper.steps) == (2.0, 1.0, 1000, 2)
    assert paper.latent_channels == 1 and paper.latent_size == 16  # 256 px, four down-samplings
    with pytest.raises(ValueError, match="multiple of 16"):
        LdsegConfig.preset("tiny", size=40)
    with pytest.raises(ValueError, match="train_decode"):
        LdsegConfig.preset("tiny", train_decode="other")
    three = LdsegConfig.preset("tiny", size=32, widths=(8, 16, 16))  # three down-samplings: 4 x 4 latent
    assert three.latent_size == 4
    z = Ldseg(three, image_channels=1, classes=2).image_encoder(torch.zeros(1, 1, 32, 32))
    assert z.shape == (1, three.latent_channels, 4, 4)
    with pytest.raises(ValueError, match="multiple of 8"):
        LdsegConfig.preset("tiny", size=36, widths=(8, 16, 16))


def test_the_image_encoder_may_be_wider_deeper_and_embed_more_channels_at_the_latents_size():
    base = LdsegConfig.preset("tiny")  # widths (8, 8, 16, 16), one block, 2 latent channels
    assert base.image_encoder_shape == ((8, 8, 16, 16), 1, 2)  # unset: the label side's
    config = LdsegConfig.preset("tiny", image_widths=(8, 16, 16, 24), image_blocks=2, image_embedding_channels=5)
    model = Ldseg(config, image_channels=1, classes=2)
    stages = [m for m in model.image_encoder.body if type(m).__name__ == "ResBlock"]
    assert [b.conv1.out_channels for b in stages] == [8, 8, 16, 16, 16, 16, 24, 24]  # two blocks a stage
    assert model.image_encoder(torch.zeros(3, 1, 32, 32)).shape == (3, 5, 2, 2)  # the latent's 2 x 2
    assert model.label_encoder(torch.zeros(3, 2, 32, 32)).shape == (3, 2, 2, 2)  # label side unchanged
    assert model.denoiser.conv_in.conv.in_channels == 2 + 5  # noisy latent + image embedding
    loss, _ = model.training_loss(torch.randn(2, 1, 32, 32), torch.randint(0, 2, (2, 32, 32)))
    assert torch.isfinite(loss)
    probs = model.sample(torch.randn(2, 1, 32, 32), samples=2, steps=2, generator=torch.Generator().manual_seed(0))
    assert probs.shape == (2, 2, 2, 32, 32)
    with pytest.raises(ValueError, match="one entry per stage"):
        LdsegConfig.preset("tiny", image_widths=(8, 16))  # the embedding would not have the latent's size


def test_decoder_skips_feed_the_image_feature_map_of_each_size_to_the_label_decoder():
    config = LdsegConfig.preset("tiny", image_widths=(8, 16, 16, 24), decoder_skips=True)
    torch.manual_seed(0)
    model = Ldseg(config, image_channels=1, classes=2).eval()
    image = torch.randn(2, 1, 32, 32)
    z, maps = model.image_encoder.features(image)
    assert torch.equal(z, model.image_encoder(image))  # the same embedding as without skips
    # the stem at 32 px and the first three stages at 16, 8, 4 px; the last stage is the 2 px embedding
    assert [tuple(m.shape[1:]) for m in maps] == [(8, 32, 32), (8, 16, 16), (16, 8, 8), (16, 4, 4)]
    blocks = [m for m in model.label_decoder.body if type(m).__name__ == "ResBlock"]
    # decoder widths (16, 16, 8, 8) plus the image map of the size each up-sampling reaches
    assert [b.conv1.in_channels for b in blocks] == [16 + 16, 16 + 16, 16 + 8, 8 + 8]
    latent = torch.randn(2, config.latent_channels, 2, 2)
    other = torch.randn(2, 1, 32, 32)
    assert not torch.allclose(model.decode(latent, image), model.decode(latent, other))  # the image counts
    with pytest.raises(ValueError, match="needs the image"):
        model.decode(latent)
    plain = Ldseg(LdsegConfig.preset("tiny"), image_channels=1, classes=2).eval()
    assert torch.equal(plain.decode(latent), plain.label_decoder(latent))  # the paper's decoder: no image
    model.decode(latent, image).square().mean().backward()  # the decoder alone trains the image encoder's stem
    assert model.image_encoder.body[0].weight.grad.abs().sum() > 0
    loss, _ = model.training_loss(image, torch.randint(0, 2, (2, 32, 32)))
    assert torch.isfinite(loss)
    probs = model.sample(image, samples=3, steps=2, generator=torch.Generator().manual_seed(0))
    assert probs.shape == (3, 2, 2, 32, 32)


def test_decoder_skip_from_leaves_the_fine_levels_without_image_maps():
    config = LdsegConfig.preset("tiny", image_widths=(8, 16, 16, 24), decoder_skips=True, decoder_skip_from=2)
    torch.manual_seed(0)
    model = Ldseg(config, image_channels=1, classes=2).eval()
    blocks = [m for m in model.label_decoder.body if type(m).__name__ == "ResBlock"]
    # up-samplings to 4 and 8 px take the image maps (16 channels each); those to 16 and 32 px none
    assert [b.conv1.in_channels for b in blocks] == [16 + 16, 16 + 16, 16, 8]
    image = torch.randn(2, 1, 32, 32)
    _, maps = model.encode_image(image)
    assert maps[0] is None and maps[1] is None and tuple(maps[2].shape[1:]) == (16, 8, 8)
    model.decode(torch.randn(2, config.latent_channels, 2, 2), image).square().mean().backward()
    stem = model.image_encoder.body[0].weight.grad  # still reached, through the coarse maps
    assert stem is not None and stem.abs().sum() > 0
    probs = model.sample(image, samples=2, steps=2, generator=torch.Generator().manual_seed(0))
    assert probs.shape == (2, 2, 2, 32, 32)
    with pytest.raises(ValueError, match="decoder_skip_from"):
        LdsegConfig.preset("tiny", decoder_skip_from=4)


def _attention_sizes(config: LdsegConfig) -> list[int]:
    """Pixel side of every feature map the image encoder attends over (hooks on a forward pass)."""
    from segqc.seg.ldseg.model import _SpatialAttention

    model, sizes = Ldseg(config, image_channels=1, classes=2), []
    for module in model.image_encoder.modules():
        if isinstance(module, _SpatialAttention):
            module.register_forward_hook(lambda _m, inputs, _o: sizes.append(inputs[0].shape[-1]))
    model.image_encoder(torch.zeros(1, 1, config.size, config.size))
    return sizes


def test_the_image_encoder_attends_over_its_last_two_stages_up_to_32_px_maps():
    # small preset, 128 px and four stages: maps of 64, 32, 16, 8 px -> the last two (16, 8)
    assert _attention_sizes(LdsegConfig.preset("small")) == [16, 8]
    # two stages on 128 px: 64 and 32 px maps; 64 x 64 = 4096 pixels is over the bound
    assert _attention_sizes(LdsegConfig.preset("small", widths=(16, 32))) == [32]
    # the paper's 256 px: 128, 64, 32, 16 -> 32 and 16
    assert _attention_sizes(LdsegConfig.preset("paper", norm_groups=8,
                                               widths=(8, 8, 8, 8))) == [32, 16]
    assert _attention_sizes(LdsegConfig.preset("small", image_attention=False)) == []


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("mode", ["paper", "x0"])
def test_the_decoder_sees_z_t_minus_eps_hat_as_in_eq_12_or_the_clipped_x0_estimate(mode, prediction):
    image, gt = torch.randn(2, 2, 32, 32), torch.randint(0, 3, (2, 32, 32))
    torch.manual_seed(0)
    model = Ldseg(LdsegConfig.preset("tiny", train_decode=mode, prediction=prediction), image_channels=2, classes=3)
    with torch.no_grad():
        for parameter in model.denoiser.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    seen: dict[str, torch.Tensor] = {}
    model.label_decoder.register_forward_hook(lambda _m, args, _o: seen.update(decoded=args[0].detach()))
    model.denoiser.register_forward_hook(lambda _m, args, out: seen.update(x=args[0].detach(), out=out.detach()))
    model.label_encoder.register_forward_hook(lambda _m, _args, out: seen.update(z0=out.detach()))
    loss, parts = model.training_loss(image, gt, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(loss)
    z_t, out = seen["x"][:, :model.config.latent_channels], seen["out"]
    t = torch.randint(0, 1000, (2,), generator=torch.Generator().manual_seed(1))  # the draw training_loss made
    a = model.abar[t].view(-1, 1, 1, 1)
    # by hand: z_t = sqrt(a) z0 + sqrt(1 - a) eps; epsilon: out = eps_hat; v: out = v_hat with
    # v = sqrt(a) eps - sqrt(1 - a) z0, so eps_hat = sqrt(1 - a) z_t + sqrt(a) v_hat and
    # z0_hat = sqrt(a) z_t - sqrt(1 - a) v_hat
    if prediction == "epsilon":
        eps_hat, z0_hat = out, (z_t - (1 - a).sqrt() * out) / a.sqrt()
    else:
        eps_hat, z0_hat = (1 - a).sqrt() * z_t + a.sqrt() * out, a.sqrt() * z_t - (1 - a).sqrt() * out
    expected = z_t - eps_hat if mode == "paper" else z0_hat.clamp(-5.0, 5.0)
    torch.testing.assert_close(seen["decoded"], expected, atol=1e-5, rtol=1e-5)
    # sampling uses the same estimates (Ldseg.denoise)
    with torch.no_grad():
        sampled_eps, sampled_z0 = model.denoise(z_t, seen["x"][:, model.config.latent_channels:], t)
    torch.testing.assert_close(sampled_eps, eps_hat, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sampled_z0, z0_hat, atol=1e-4, rtol=1e-4)
    # the denoiser loss compares its output with eps (epsilon) or v (v); eps from z_t and z0
    eps = (z_t - a.sqrt() * seen["z0"]) / (1 - a).sqrt()
    target = eps if prediction == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * seen["z0"]
    assert parts["mse"] == pytest.approx(float(((out - target) ** 2).mean()), rel=1e-3, abs=1e-6)


def _gaussian_clean_predictor(abar: torch.Tensor, mu: float, s: float):
    """The exact clean estimate E[z0 | z_t] when the clean latent is N(mu, s^2) per element:
    z_t = sqrt(a) z0 + sqrt(1 - a) eps is jointly Gaussian with z0, so E[z0 | z_t] = mu + sqrt(a)
    s^2 (z_t - sqrt(a) mu) / (a s^2 + 1 - a)."""
    def predict(z: torch.Tensor, t: int) -> torch.Tensor:
        a = abar[t]
        return mu + a.sqrt() * s**2 * (z - a.sqrt() * mu) / (a * s**2 + 1 - a)
    return predict


def test_ddim_with_all_T_steps_and_ancestral_sampling_both_reach_the_known_latent_distribution():
    from monai.networks.schedulers import DDPMScheduler

    from segqc.nn.diffusion import ancestral_loop, ddim_loop

    abar = DDPMScheduler(num_train_timesteps=1000, schedule="cosine").alphas_cumprod.double()
    mu, s = 0.7, 0.5
    predict = _gaussian_clean_predictor(abar, mu, s)
    start = torch.randn(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ddim = ddim_loop(predict, start, abar, ddim_timesteps(1000, 1000))
    ancestral = ancestral_loop(predict, start, abar, generator=torch.Generator().manual_seed(1))
    for z in (ddim, ancestral):  # N(mu, s^2): 20 000 samples give the mean to about +-0.01
        assert abs(float(z.mean()) - mu) < 0.02
        assert abs(float(z.std()) - s) < 0.02
    assert abs(float(ddim.mean()) - float(ancestral.mean())) < 0.02
    # two DDIM steps reach the mean too but not the spread: the first step from pure noise lands on
    # the posterior mean of z0 given z_T, which is mu (the prior) for every start
    two = ddim_loop(predict, start, abar, ddim_timesteps(2, 1000))
    assert abs(float(two.mean()) - mu) < 0.02


def test_the_sampler_option_picks_ddim_or_ancestral_sampling():
    model = _model()
    image = torch.randn(2, 2, 32, 32)
    ddim = model.sample(image, samples=2, steps=1000, generator=torch.Generator().manual_seed(0))
    ddpm = model.sample(image, samples=2, steps=2, generator=torch.Generator().manual_seed(0), sampler="ddpm")
    assert ddim.shape == ddpm.shape == (2, 2, 3, 32, 32)
    assert not torch.allclose(ddim, ddpm)  # ancestral sampling adds fresh noise at every step
    with pytest.raises(ValueError, match="sampler"):
        model.sample(image, samples=1, steps=2, sampler="euler")
