"""``noise_consistency`` of LDSeg and the U-Net baseline: a loss that pulls the image features of
noise-augmented slices towards those of the same slices without noise. The measure is scale-free
and zero only for equal features, the loss adds exactly its weight times that measure on the
encoder's own maps, the training step sees the same noisy slices as plain noise augmentation, the
setting is validated, and training with it makes the features less sensitive to noise than
training without."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ldseg_toy_data import disk_image

from segqc.nn.losses import feature_consistency
from segqc.seg.ldseg.config import LdsegConfig
from segqc.seg.ldseg.model import Ldseg
from segqc.seg.ldseg.train import _stage
from segqc.seg.slices import SliceData, add_noise_rows, make_batch
from segqc.seg.unet import train as unet_train
from segqc.seg.unet.config import UnetConfig
from segqc.seg.unet.model import build_unet, encoder_features, encoder_outputs, segmentation_loss
from segqc.training.stages import step_generators


def _config(**changes) -> LdsegConfig:
    base = {"decoder_skips": True, "noise_aug": 0.3, "noise_consistency": 1.0, "size": 32, "widths": (8, 8, 16, 16)}
    return LdsegConfig.preset("tiny", **{**base, **changes})


def _disks(n: int, seed: int = 0) -> SliceData:
    rng = np.random.default_rng(seed)
    pairs = [disk_image(rng, (32, 32)) for _ in range(n)]
    return SliceData(np.stack([[image] for image, _ in pairs]).astype(np.float32),
                     np.stack([gt for _, gt in pairs]).astype(np.uint8), [f"c{k}" for k in range(n)], [0, 1], {})


def test_the_measure_is_zero_for_equal_maps_free_of_scale_and_about_two_for_unrelated_ones():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(4, 8, 16, 16, generator=gen)
    assert float(feature_consistency([target], [target])) == 0.0
    moved = target + 0.3 * torch.randn(target.shape, generator=gen)
    value = float(feature_consistency([moved], [target]))
    assert value == pytest.approx(0.09, rel=0.05)  # E (0.3 z)^2 / var(target) = 0.09
    # shrinking features and target together cannot lower it
    assert float(feature_consistency([0.01 * moved], [0.01 * target])) == pytest.approx(value, rel=1e-3)
    unrelated = torch.randn(target.shape, generator=gen)
    assert float(feature_consistency([unrelated], [target])) == pytest.approx(2.0, rel=0.05)
    # the mean over maps; pairs with None are skipped
    both = float(feature_consistency([moved, None, unrelated], [target, None, target]))
    assert both == pytest.approx((value + float(feature_consistency([unrelated], [target]))) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        feature_consistency([None], [None])


def test_the_loss_adds_its_weight_times_the_distance_of_the_noisy_slices_encoder_maps_to_the_clean_ones():
    torch.manual_seed(0)
    model = Ldseg(_config(noise_consistency=0.5), image_channels=1, classes=2)
    data = _disks(6)
    clean, gt = make_batch(data, range(6))
    noisy = clean.clone()
    add_noise_rows(noisy.numpy(), np.random.default_rng(1), 0.3)
    with_term, parts = model.training_loss(noisy, gt, generator=torch.Generator().manual_seed(2), clean=clean)
    without, _ = model.training_loss(noisy, gt, generator=torch.Generator().manual_seed(2))
    # the reference: every map the decoder reads plus the embedding, straight from the encoder
    with torch.no_grad():
        embedding_n, maps_n = model.image_encoder.features(noisy)
        embedding_c, maps_c = model.image_encoder.features(clean)
    terms = [float(((a - b) ** 2).mean() / b.var()) for a, b in zip([embedding_n, *maps_n], [embedding_c, *maps_c])]
    assert len(terms) == 5  # the embedding, the stem's map and those of the three stages above the latent
    assert float((with_term - without).detach()) == pytest.approx(0.5 * np.mean(terms), rel=1e-4)
    assert parts["consistency"] == pytest.approx(np.mean(terms), rel=1e-4)
    # the clean features are a fixed target: the term's gradient reaches the encoder only via the noisy slices
    clean.requires_grad_(True)
    loss, _ = model.training_loss(noisy, gt, generator=torch.Generator().manual_seed(2), clean=clean)
    loss.backward()
    assert clean.grad is None


def test_a_training_step_sees_the_noisy_slices_plain_augmentation_would_and_their_clean_originals():
    data = _disks(12)
    seen: dict[str, dict[str, torch.Tensor | None]] = {}
    for name, weight in (("plain", 0.0), ("consistent", 1.0)):
        config = _config(noise_consistency=weight)
        model = Ldseg(config, image_channels=1, classes=2)

        def record(image, gt, *, generator=None, clean=None, _name=name):
            seen[_name] = {"image": image.clone(), "clean": None if clean is None else clean.clone()}
            return (image.sum() * 0).requires_grad_(True), {}

        model.training_loss = record  # type: ignore[method-assign]
        _stage(config, data, model, torch.device("cpu")).step(5)
    assert seen["plain"]["clean"] is None
    torch.testing.assert_close(seen["consistent"]["image"], seen["plain"]["image"], rtol=0, atol=0)
    rng, _ = step_generators(0, 0, 5)
    indices = rng.integers(0, data.n_slices, size=_config().batch_size).tolist()
    original, _ = make_batch(data, indices)
    torch.testing.assert_close(seen["consistent"]["clean"], original, rtol=0, atol=0)
    assert not torch.equal(seen["consistent"]["image"], original)  # some rows got noise


@pytest.mark.parametrize("config", [LdsegConfig, UnetConfig])
def test_the_setting_needs_noise_augmentation_and_a_weight_of_at_least_zero(config):
    assert config.preset("small").noise_consistency == 0.0
    with pytest.raises(ValueError, match="needs noise_aug"):
        config.preset("tiny", noise_consistency=1.0)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="noise_consistency"):
            config.preset("tiny", noise_aug=0.1, noise_consistency=bad)


def _noise_sensitivity(model: Ldseg, data: SliceData) -> float:
    """The measure between the encoder's maps of noisy (sd 0.2 of the range) and clean slices."""
    clean, _ = make_batch(data, range(data.n_slices))
    noisy = clean.clone()
    rng = np.random.default_rng(11)
    span = clean.amax(dim=(1, 2, 3), keepdim=True) - clean.amin(dim=(1, 2, 3), keepdim=True)
    noisy += 0.2 * span * torch.from_numpy(rng.standard_normal(clean.shape).astype(np.float32))
    with torch.no_grad():
        embedding_n, maps_n = model.image_encoder.features(noisy)
        embedding_c, maps_c = model.image_encoder.features(clean)
    return float(feature_consistency([embedding_n, *maps_n], [embedding_c, *maps_c]))


def test_training_with_it_makes_the_image_features_less_sensitive_to_noise():
    data, held_out = _disks(48), _disks(16, seed=9)
    sensitivity = {}
    for weight in (0.0, 3.0):
        config = _config(noise_consistency=weight, steps_train=150)
        torch.manual_seed(0)
        model = Ldseg(config, image_channels=1, classes=2)
        stage = _stage(config, data, model, torch.device("cpu"))
        for k in range(config.steps_train):
            stage.step(k)
        sensitivity[weight] = _noise_sensitivity(model.eval(), held_out)
    assert sensitivity[3.0] < 0.5 * sensitivity[0.0], sensitivity


def _unet_config(**changes) -> UnetConfig:
    return UnetConfig.preset("tiny", **{"noise_aug": 0.3, "noise_consistency": 1.0, **changes})


def test_the_unets_encoder_maps_are_each_levels_down_sampled_output_and_the_bottom():
    config = UnetConfig.preset("small")
    _, maps = encoder_features(build_unet(config, image_channels=1, classes=4), torch.zeros(2, 1, 128, 128))
    # levels 1..4 halve the slice (64 .. 8 px) with the config's channels; the bottom keeps 8 px
    assert [tuple(m.shape) for m in maps] == [(2, 16, 64, 64), (2, 32, 32, 32), (2, 64, 16, 16), (2, 128, 8, 8),
                                              (2, 256, 8, 8)]


@pytest.mark.parametrize("res_units", [0, 2])
def test_the_unets_encoder_outputs_equal_the_maps_its_forward_pass_makes(res_units):
    # res_units 0: the bottom is a plain Convolution, itself a Sequential, which must not be taken for a level
    config = UnetConfig.preset("tiny", res_units=res_units)
    network = build_unet(config, image_channels=1, classes=3).eval()
    image = torch.randn(2, 1, config.size, config.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, maps = encoder_features(network, image)
        walked = encoder_outputs(network, image)
    assert len(maps) == len(walked) == len(config.channels)
    for a, b in zip(maps, walked):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_unet_step_adds_its_weight_times_the_measure_and_sees_the_noisy_slices_plain_augmentation_would():
    data = _disks(12)
    runs = {}
    for name, weight in (("plain", 0.0), ("consistent", 0.5)):
        config = _unet_config(noise_consistency=weight)
        torch.manual_seed(0)
        network = build_unet(config, image_channels=1, classes=2)
        reference = build_unet(config, image_channels=1, classes=2)
        reference.load_state_dict(network.state_dict())
        calls: list[torch.Tensor] = []  # the inputs of the first down-sampling unit
        network.model[0].register_forward_pre_hook(lambda _module, args, _calls=calls: _calls.append(args[0].clone()))
        decoded: list[int] = []  # calls of the last up-sampling unit
        network.model[2].register_forward_pre_hook(lambda _module, _args, _decoded=decoded: _decoded.append(1))
        parts = unet_train._stage(config, data, network, torch.device("cpu")).step(5)
        runs[name] = (calls, parts, reference, decoded)
    plain_calls, _, _, _ = runs["plain"]
    calls, parts, reference, decoded = runs["consistent"]
    assert len(plain_calls) == 1 and len(calls) == 2  # the noisy batch, then the clean one
    assert len(decoded) == 1  # the clean pass stops at the bottom: only the noisy batch is decoded
    torch.testing.assert_close(calls[0], plain_calls[0], rtol=0, atol=0)
    rng, _ = step_generators(0, 0, 5)
    indices = rng.integers(0, data.n_slices, size=_unet_config().batch_size).tolist()
    original, gt = make_batch(data, indices)
    torch.testing.assert_close(calls[1], original, rtol=0, atol=0)
    # the reference: the untrained copy's encoder maps, with MONAI's modules read here by hand
    net = reference
    with torch.no_grad():
        logits, _ = encoder_features(net, calls[0])
        seg, _ = segmentation_loss(logits, gt, _unet_config().gamma)
        first, second = net.model[0], net.model[1].submodule[0]
        bottom = net.model[1].submodule[1].submodule
        noisy_maps, clean_maps = [], []
        for image, out in ((calls[0], noisy_maps), (calls[1], clean_maps)):
            out.append(first(image))
            out.append(second(out[-1]))
            out.append(bottom(out[-1]))
    measure = np.mean([float(((a - b) ** 2).mean() / b.var()) for a, b in zip(noisy_maps, clean_maps)])
    assert parts["consistency"] == pytest.approx(measure, rel=1e-4)
    assert parts["loss"] == pytest.approx(float(seg) + 0.5 * measure, rel=1e-4)


def test_training_the_unet_with_it_makes_its_encoder_less_sensitive_to_noise():
    data, held_out = _disks(48), _disks(16, seed=9)
    clean, _ = make_batch(held_out, range(held_out.n_slices))
    noisy = clean + 0.2 * (clean.amax() - clean.amin()) * torch.from_numpy(
        np.random.default_rng(11).standard_normal(clean.shape).astype(np.float32))
    sensitivity = {}
    for weight in (0.0, 3.0):
        config = _unet_config(noise_consistency=weight, steps_train=150)
        torch.manual_seed(0)
        network = build_unet(config, image_channels=1, classes=2)
        stage = unet_train._stage(config, data, network, torch.device("cpu"))
        for k in range(config.steps_train):
            stage.step(k)
        network.eval()
        with torch.no_grad():
            sensitivity[weight] = float(feature_consistency(encoder_features(network, noisy)[1],
                                                            encoder_features(network, clean)[1]))
    assert sensitivity[3.0] < 0.5 * sensitivity[0.0], sensitivity
