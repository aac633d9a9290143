"""nnQC networks without training: shapes, the config, determinism, and the Team of Experts.

The ToE tests check the claim that matters most: the cross-attention between the slice-ratio
query and the image tokens is a real choice (several keys, weights that move with the ratio), so
the ratio changes the condition c; the ablation switches decide which input can influence c.
"""

from __future__ import annotations

import json
from dataclasses import replace

import einops  # noqa: F401  (MONAI's DiffusionModelUNet attention blocks need it)
import monai  # noqa: F401
import numpy as np
import pytest
import torch

from segqc.errors import InputError
from segqc.qc.nnqc.config import PRESETS, NnqcConfig
from segqc.qc.nnqc.model import (
    MaskAutoencoder,
    NnqcModel,
    build_discriminator,
)

LABELS = (0, 1, 2)
TINY = NnqcConfig.preset("tiny")


def _model(config: NnqcConfig = TINY, seed: int = 0) -> NnqcModel:
    torch.manual_seed(seed)
    return NnqcModel(config, LABELS, 1).eval()


def _inputs(b: int = 3, size: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((b, 1, size, size)).astype(np.float32)
    segs = rng.integers(0, 3, size=(b, size, size)).astype(np.uint8)
    ratios = np.linspace(0.0, 1.0, b)
    return images, segs, ratios


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def test_presets_are_valid_and_round_trip_through_json(tmp_path):
    for name, config in PRESETS.items():
        again = NnqcConfig.from_dict(json.loads(json.dumps(config.to_dict())))
        assert again == config, name
        path = config.save(tmp_path / f"{name}.json")
        assert NnqcConfig.load(path) == config
    assert NnqcConfig.preset("paper").latent_factor == 3
    assert NnqcConfig.preset("paper").latent_size * 3 == NnqcConfig.preset("paper").size
    assert NnqcConfig.preset("small").latent_size == NnqcConfig.preset("small").size // 4


def test_config_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match="divisible by latent_factor"):
        replace(TINY, size=32, latent_factor=3)
    with pytest.raises(ValueError, match="autoencoder levels"):
        replace(TINY, latent_factor=8)
    with pytest.raises(ValueError, match="conditioning"):
        replace(TINY, conditioning="both")
    with pytest.raises(ValueError, match="image_encoder_path"):
        replace(TINY, image_encoder="file")
    with pytest.raises(InputError, match="unknown nnQC config field"):
        NnqcConfig.from_dict({"size": 32, "nonsense": 1})
    with pytest.raises(ValueError, match="unknown nnQC config"):
        NnqcConfig.preset("huge")


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def test_every_module_has_the_documented_shapes():
    model = _model()
    images, segs, ratios = _inputs()
    idx = model.class_indices(segs)
    one_hot = model.one_hot(idx)
    assert one_hot.shape == (3, 3, 32, 32)
    logits, mu, log_var = model.autoencoder(one_hot)
    assert logits.shape == (3, 3, 32, 32)
    assert mu.shape == log_var.shape == (3, 2, 8, 8)  # C = 2 at 1/4
    assert build_discriminator(TINY, 3)(one_hot)[-1].shape[:2] == (3, 1)
    tokens = model.image_tokens(torch.from_numpy(images))
    assert tokens.shape == (3, TINY.token_grid ** 2, TINY.encoder_channels[-1])
    c = model.condition(torch.from_numpy(images), torch.from_numpy(ratios).float())
    assert c.shape == (3, TINY.query_tokens, TINY.context_dim)
    s_d = model.seg_condition(idx)
    assert s_d.shape == (3, 3, 8, 8) and float(s_d.min()) >= 0 and float(s_d.max()) <= 1  # K class shares
    spatial = model.spatial_condition(idx, torch.from_numpy(images))
    assert spatial.shape == (3, 3 + 16, 8, 8)  # S_d, then the 32 px slice space-to-depth (16 x 8 x 8)
    eps = model.denoiser(mu, spatial, torch.zeros(3, dtype=torch.long), c)
    assert eps.shape == mu.shape
    pgt = model.generate_pgt(images, segs, ratios, steps=3, samples=2, generator=0)
    assert pgt.shape == (2, 3, 32, 32) and pgt.dtype == torch.int64
    assert set(torch.unique(pgt).tolist()) <= set(LABELS)


@pytest.mark.parametrize("encoding", ["onehot", "unshuffle", "index"])
def test_segmentation_condition_encodings_against_numpy_block_averages(encoding):
    config = replace(TINY, seg_encoding=encoding)
    model = NnqcModel(config, LABELS, 1)
    _, segs, _ = _inputs()
    idx = model.class_indices(segs)
    s_d = model.seg_condition(idx).numpy()
    assert s_d.shape == (3, config.seg_channels(3), 8, 8)
    classes = idx.numpy()
    blocks = classes.reshape(3, 8, 4, 8, 4)  # 4 x 4 voxel cells of the 32 px slice
    if encoding == "onehot":
        shares = np.stack([(blocks == k).mean(axis=(2, 4)) for k in range(3)], axis=1)
        np.testing.assert_allclose(s_d, shares, atol=1e-6)
        np.testing.assert_allclose(s_d.sum(axis=1), 1.0, atol=1e-6)
    elif encoding == "index":
        np.testing.assert_allclose(s_d[:, 0], (blocks / 2.0).mean(axis=(2, 4)), atol=1e-6)
    else:  # lossless: every voxel's class is recoverable
        restored = torch.nn.functional.pixel_shuffle(torch.from_numpy(s_d), 4).argmax(1).numpy()
        np.testing.assert_array_equal(restored, classes)


def test_image_input_adds_the_slice_rearranged_space_to_depth_after_s_d():
    config = replace(TINY, image_input="unshuffle")
    model = NnqcModel(config, LABELS, 1)
    images, segs, _ = _inputs()
    spatial = model.spatial_condition(model.class_indices(segs), torch.from_numpy(images)).numpy()
    n_seg = config.seg_channels(3)
    assert spatial.shape == (3, n_seg + 16, 8, 8)
    assert config.image_input_channels(1) == 16 and replace(TINY, image_input="none").image_input_channels(1) == 0
    # channel (i * 4 + j) of cell (y, x) is voxel (4y + i, 4x + j): numpy reshape reference
    reference = images[:, 0].reshape(3, 8, 4, 8, 4).transpose(0, 2, 4, 1, 3).reshape(3, 16, 8, 8)
    np.testing.assert_array_equal(spatial[:, n_seg:], reference)
    np.testing.assert_array_equal(spatial[:, :n_seg], model.seg_condition(model.class_indices(segs)).numpy())


@pytest.mark.parametrize("image_input", ["none", "unshuffle"])
def test_with_image_input_the_image_reaches_the_pgt_even_without_the_image_expert(image_input):
    # position-only ToE: the image can only act through the denoiser's direct image input
    model = _model(replace(TINY, conditioning="position", image_input=image_input))
    with torch.no_grad():  # make the image channels matter (a fresh UNet's output is near zero)
        for p in model.denoiser.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.2)
    images, segs, ratios = _inputs()
    a = model.generate_pgt(images, segs, ratios, generator=0)
    b = model.generate_pgt(images[::-1, :, ::-1].copy(), segs, ratios, generator=0)
    assert torch.equal(a, b) == (image_input == "none")


def test_latent_factor_three_resizes_inside_the_bottleneck():
    config = replace(TINY, size=48, latent_factor=3, vae_channels=(8, 16))  # 48 / 3 = 16 latent, 2 levels
    autoencoder = MaskAutoencoder(config, 3)
    x = torch.zeros(2, 3, 48, 48)
    x[:, 0] = 1
    mu, log_var = autoencoder.encode(x)
    assert mu.shape == (2, 2, 16, 16)
    assert autoencoder.decode(mu).shape == (2, 3, 48, 48)


def test_trailing_timesteps_span_the_schedule_evenly():
    from segqc.nn.diffusion import trailing_timesteps

    assert trailing_timesteps(20, 1000)[:3] == [999, 949, 899]
    assert trailing_timesteps(20, 1000)[-1] == 49
    assert trailing_timesteps(1, 1000) == [999]
    assert trailing_timesteps(2, 1000) == [999, 499]
    assert len(trailing_timesteps(7, 1000)) == 7


# --------------------------------------------------------------------------------------------
# Determinism and input checks
# --------------------------------------------------------------------------------------------


def test_same_weights_and_seed_give_the_same_pgt():
    images, segs, ratios = _inputs(4)
    a = _model(seed=1).generate_pgt(images, segs, ratios, steps=4, samples=2, generator=123)
    b = _model(seed=1).generate_pgt(images, segs, ratios, steps=4, samples=2, generator=123)
    assert torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    model = _model(seed=1)
    assert torch.equal(model.generate_pgt(images, segs, ratios, steps=4, generator=g1),
                       model.generate_pgt(images, segs, ratios, steps=4, generator=g2))


def test_noise_is_drawn_slice_by_slice_so_chunking_does_not_matter():
    from segqc.qc.nnqc.predict import predict_slices

    model = _model(seed=2)
    images, segs, ratios = _inputs(5)
    whole = predict_slices(model, images, segs, ratios, steps=3, samples=2, seed=9, batch_size=5)
    chunked = predict_slices(model, images, segs, ratios, steps=3, samples=2, seed=9, batch_size=2)
    assert whole.shape == (2, 5, 32, 32) and whole.dtype == np.uint8
    assert np.array_equal(whole, chunked)


def test_generate_pgt_rejects_bad_inputs():
    model = _model()
    images, segs, ratios = _inputs()
    bad = segs.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(InputError, match="7"):
        model.generate_pgt(images, bad, ratios, steps=2)
    with pytest.raises(InputError, match="ratios"):
        model.generate_pgt(images, segs, ratios + 2, steps=2)
    with pytest.raises(InputError, match="images must have shape"):
        model.generate_pgt(images[:, :, :16, :16], segs, ratios, steps=2)


# --------------------------------------------------------------------------------------------
# Team of Experts
# --------------------------------------------------------------------------------------------


def _condition(model: NnqcModel, images: np.ndarray, ratio: float) -> torch.Tensor:
    with torch.no_grad():
        return model.condition(torch.from_numpy(images), torch.full((images.shape[0],), ratio))


def test_full_toe_attention_is_a_real_choice_so_the_slice_ratio_changes_c():
    model = _model()
    images, _, _ = _inputs(2)
    tokens = model.image_tokens(torch.from_numpy(images))
    with torch.no_grad():
        _, w0 = model.toe.attend(torch.zeros(2), tokens)
        _, w1 = model.toe.attend(torch.ones(2), tokens)
    assert w0.shape == (2, TINY.query_tokens, TINY.token_grid ** 2)  # several keys to choose from
    assert torch.allclose(w0.sum(-1), torch.ones(2, TINY.query_tokens))
    assert float(w0.max()) < 1.0
    assert float((w0 - w1).abs().max()) > 1e-4  # the weights move with the ratio
    c0, c1 = _condition(model, images, 0.0), _condition(model, images, 1.0)
    assert float((c0 - c1).abs().max()) > 1e-4
    other = images[::-1].copy() + 0.5
    assert float((_condition(model, other, 0.0) - c0).abs().max()) > 1e-4  # the image matters too


def test_image_only_toe_ignores_the_ratio():
    model = _model(replace(TINY, conditioning="image"))
    images, _, _ = _inputs(2)
    c0, c1 = _condition(model, images, 0.0), _condition(model, images, 1.0)
    assert c0.shape == (2, TINY.token_grid ** 2, TINY.context_dim)
    assert torch.equal(c0, c1)
    assert float((_condition(model, images + 0.5, 0.0) - c0).abs().max()) > 1e-4


def test_position_only_toe_ignores_the_image():
    model = _model(replace(TINY, conditioning="position"))
    images, _, _ = _inputs(2)
    c0 = _condition(model, images, 0.2)
    assert c0.shape == (2, TINY.query_tokens, TINY.context_dim)
    assert torch.equal(c0, _condition(model, images * 3 + 1, 0.2))
    assert float((_condition(model, images, 0.9) - c0).abs().max()) > 1e-4


def test_the_image_encoder_is_frozen_and_the_position_expert_is_trainable():
    model = _model()
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    assert all(p.requires_grad for p in model.toe.parameters())


# --------------------------------------------------------------------------------------------
# Pre-trained encoders (hooks)
# --------------------------------------------------------------------------------------------


def test_a_local_image_encoder_file_replaces_self_supervised_pretraining(tmp_path):
    from safetensors.torch import save_file

    source = _model(seed=4).image_encoder
    path = tmp_path / "image_encoder.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    config = replace(TINY, image_encoder="file", image_encoder_path=str(path))
    loaded = NnqcModel(config, LABELS, 1, pretrained=True).image_encoder
    for name, tensor in source.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])
    wrong = replace(config, encoder_channels=(8, 8))
    with pytest.raises(InputError, match="cannot load a segqc image encoder"):
        NnqcModel(wrong, LABELS, 1, pretrained=True)


def test_open_clip_encoder_without_the_package_fails_with_a_clear_message():
    try:
        import open_clip  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("open_clip is installed")
    config = replace(TINY, image_encoder="open_clip", image_encoder_path="ViT-B-16:/nowhere/weights.pt")
    with pytest.raises(InputError, match="needs the open_clip package"):
        NnqcModel(config, LABELS, 1, pretrained=True)


def test_perceptual_loss_from_a_local_encoder_is_zero_for_equal_masks_and_has_gradients(tmp_path):
    from safetensors.torch import save_file

    from segqc.qc.nnqc.train import _Perceptual

    path = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in _model(seed=5).image_encoder.state_dict().items()}, str(path))
    perceptual = _Perceptual(str(path), 3)
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(_inputs(2)[1]).long(), 3).permute(0, 3, 1, 2).float()
    assert float(perceptual(one_hot, one_hot)) == pytest.approx(0.0, abs=1e-6)
    logits = torch.zeros_like(one_hot, requires_grad=True)
    loss = perceptual(logits.softmax(1), one_hot)
    loss.backward()
    assert loss.item() > 0 and logits.grad.abs().sum().item() > 0
