"""QCResUNet network and loss: shapes, where the decoder starts, the ECA aggregation, ablations,
dropout, the ResNet-34 layout (checked against a parameter count worked out by hand) and the loss
against hand-computed values; a tiny overfit run checks that everything trains together."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from segqc.qc.qcresunet.model import (
    ACDC_STRIDES,
    BRAIN_STRIDES,
    EfficientChannelAttention,
    QcResUNet,
    QcResUNetOutput,
    ResidualBlock,
    boundary_error_numbers,
    eca_kernel_size,
    one_hot_query,
    qcresunet_loss,
    query_head_features,
    query_pooled_features,
    size_multiple,
)

TINY = (4, 8, 16, 32)  # distinct widths, so a wrongly wired level shows up as a wrong channel count
C = 3  # foreground classes


def _model(dims: int = 3, seed: int = 0, **kwargs) -> QcResUNet:
    torch.manual_seed(seed)
    kwargs.setdefault("widths", TINY)
    kwargs.setdefault("strides", ACDC_STRIDES if dims == 3 else (2, 2, 2, 2))
    return QcResUNet(dims, 1, C, **kwargs)


def _inputs(shape=(16, 64, 64), b: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn((b, 1, *shape), generator=g)
    query = one_hot_query(torch.randint(0, C + 1, (b, *shape), generator=g), C)
    return image, query


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def test_one_hot_query_and_size_multiple():
    seg = torch.tensor([[[0, 2], [3, 1]]])
    q = one_hot_query(seg, 3)
    assert q.shape == (1, 4, 2, 2) and q.dtype == torch.float32
    assert q[0, :, 0, 0].tolist() == [1, 0, 0, 0]
    assert q[0, :, 0, 1].tolist() == [0, 0, 1, 0]
    assert q[0, :, 1, 0].tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="0..3"):
        one_hot_query(torch.tensor([[4]]), 3)
    assert size_multiple(ACDC_STRIDES) == (1 * 1 * 1 * 2, 2 * 2 * 2 * 2, 16)
    assert size_multiple(BRAIN_STRIDES) == (16, 16, 16)
    assert size_multiple((2, (1, 2), 2, 3), spatial_dims=2) == (12, 24)


@pytest.mark.parametrize("channels, k", [
    (1, 1),  # (0 + 1) / 2 = 0.5 -> 1
    (4, 1),  # 1.5 -> 1
    (16, 3),  # 2.5 -> 3 (nearest odd; 1 and 3 are not equally near: 1.5 vs 0.5)
    (36, 3),  # log2(36) = 5.17 -> 3.08 -> 3
    (64, 3),  # 3.5 -> 3
    (128, 5),  # 4.0: 3 and 5 equally near, ties go up (ECA-Net reference)
    (256, 5),  # 4.5 -> 5
    (1000, 5),  # log2(1000) = 9.97 -> 5.48 -> 5
    (4096, 7),  # 6.5 -> 7
])
def test_eca_kernel_size_by_hand(channels, k):
    assert eca_kernel_size(channels) == k


def test_eca_scales_each_channel_by_a_1d_conv_over_the_pooled_channels():
    eca = EfficientChannelAttention(16)  # k = 3
    assert eca.conv.kernel_size == (3,)
    with torch.no_grad():
        eca.conv.weight.copy_(torch.tensor([[[0.0, 0.0, 1.0]]]))  # channel i looks at channel i + 1
    x = torch.randn(2, 16, 3, 4, 5)
    means = x.mean(dim=(2, 3, 4))
    shifted = torch.cat([means[:, 1:], torch.zeros(2, 1)], dim=1)  # zero padding past the last channel
    expected = x * torch.sigmoid(shifted)[:, :, None, None, None]
    torch.testing.assert_close(eca(x), expected)


# --------------------------------------------------------------------------------------------
# Shapes and wiring
# --------------------------------------------------------------------------------------------


def test_shapes_3d_acdc_strides():
    model = _model().eval()
    image, query = _inputs((16, 64, 64))
    with torch.no_grad():
        out = model(image, query)
    assert isinstance(out, QcResUNetOutput)
    assert out.dice is not None and out.nsd is not None and out.sem_logits is not None
    assert out.dice.shape == out.nsd.shape == (2, C + 1)
    assert out.sem_logits.shape == (2, C, 16, 64, 64)
    for t in (out.dice, out.nsd):
        assert bool(((t >= 0) & (t <= 1)).all())
    assert model.stem[0].kernel_size == (3, 7, 7)  # no 7-slice kernel along the thick-slice axis


def test_shapes_2d():
    model = _model(dims=2).eval()
    image, query = _inputs((32, 48))
    with torch.no_grad():
        out = model(image, query)
    assert out.dice is not None and out.dice.shape == (2, C + 1)
    assert out.sem_logits is not None and out.sem_logits.shape == (2, C, 32, 48)
    assert any(isinstance(m, nn.Dropout2d) for m in model.modules())
    assert not any(isinstance(m, (nn.Conv3d, nn.Dropout3d)) for m in model.modules())


def test_inputs_that_do_not_fit_raise_value_error():
    model = _model().eval()
    with pytest.raises(ValueError, match=r"multiple of \(2, 16, 16\)"):
        model(*_inputs((15, 64, 64)))
    with pytest.raises(ValueError, match=r"multiple"):
        model(*_inputs((16, 64, 56)))
    image, query = _inputs((16, 64, 64))
    with pytest.raises(ValueError, match="query channels"):
        model(image, query[:, :C])
    with pytest.raises(ValueError, match="dimensions"):
        model(image[:, :, 0], query[:, :, 0])
    with pytest.raises(ValueError, match="without outputs"):
        _model(decoder=False, regression=False)


def test_decoder_starts_from_stage_3_not_stage_4():
    model = _model().eval()
    seen: dict[str, torch.Tensor] = {}
    model.stages[2].register_forward_hook(lambda m, i, o: seen.__setitem__("stage3", o))
    model.stages[3].register_forward_hook(lambda m, i, o: seen.__setitem__("stage4", o))
    model.decoder_levels[0].register_forward_hook(lambda m, i, o: seen.__setitem__("decoder_in", i[0]))
    with torch.no_grad():
        model(*_inputs((16, 64, 64)))
    assert seen["decoder_in"] is seen["stage3"]
    assert seen["decoder_in"].shape[1] == TINY[2] and seen["stage4"].shape[1] == TINY[3]
    assert model.decoder_levels[0].project.in_channels == TINY[2]
    # three levels undo stage 3, stage 2 and the stem
    assert len(model.decoder_levels) == 3


def test_sem_aggregation_sees_the_query_directly_and_the_sem_depends_on_it():
    model = _model().eval()
    image, query = _inputs((16, 64, 64))
    seen: dict[str, torch.Tensor] = {}
    model.eca.register_forward_hook(lambda m, i, o: seen.__setitem__("eca_in", i[0]))
    with torch.no_grad():
        out = model(image, query)
    full = TINY[0] // 2
    assert seen["eca_in"].shape == (2, full + C + 1, 16, 64, 64)
    torch.testing.assert_close(seen["eca_in"][:, full:], query)
    assert isinstance(model.eca, EfficientChannelAttention)
    assert model.eca.conv.kernel_size == (eca_kernel_size(full + C + 1),)
    assert model.sem_head.in_channels == full + C + 1 and model.sem_head.out_channels == C

    other = one_hot_query(torch.zeros(2, 16, 64, 64, dtype=torch.long), C)  # empty query
    with torch.no_grad():
        out_other = model(image, other)
    assert out.sem_logits is not None and out_other.sem_logits is not None
    assert (out.sem_logits - out_other.sem_logits).abs().max() > 1e-3


# --------------------------------------------------------------------------------------------
# Ablations and the ResNet-34 layout
# --------------------------------------------------------------------------------------------


def _resnet34_regressor_parameters(widths, blocks, c_in, stem_kernel, n_out, k=27):
    """Parameters of the regression-only network, counted by hand: bias-free convolutions, affine
    InstanceNorm (2 per channel), 1x1 shortcuts where width or stride change, two linear heads."""
    n = c_in * widths[0] * math.prod(stem_kernel) + 2 * widths[0]
    previous = widths[0]
    for stage, (w, b) in enumerate(zip(widths, blocks)):
        for j in range(b):
            cin = previous if j == 0 else w
            n += cin * w * k + 2 * w + w * w * k + 2 * w
            if j == 0 and (cin != w or stage > 0):
                n += cin * w + 2 * w
        previous = w
    return n + 2 * (widths[3] * n_out + n_out)


def test_ablations():
    image, query = _inputs((16, 64, 64))
    with torch.no_grad():
        plain = _model(attention=False).eval()
        out = plain(image, query)
        assert out.sem_logits is not None and out.sem_logits.shape == (2, C, 16, 64, 64) and out.dice is not None
        assert not any(isinstance(m, EfficientChannelAttention) for m in plain.modules())
        assert plain.sem_head.in_channels == TINY[0] // 2 + C + 1  # still concatenates the query

        regressor = _model(decoder=False).eval()
        out = regressor(image, query)
        assert out.sem_logits is None and out.dice is not None and out.nsd is not None
        names = [name for name, _ in regressor.named_parameters()]
        assert not [n for n in names if n.split(".")[0] in ("decoder_levels", "full_res_skip", "eca", "sem_head")]
        expected = _resnet34_regressor_parameters(TINY, (3, 4, 6, 3), 1 + C + 1, (3, 7, 7), C + 1)
        assert sum(p.numel() for p in regressor.parameters()) == expected

        maps_only = _model(regression=False).eval()
        out = maps_only(image, query)
        assert out.dice is None and out.nsd is None and out.sem_logits is not None
        assert len(maps_only.stages) == 3 and not hasattr(maps_only, "dice_head")


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_query_head_features_by_hand():
    """With error maps that are exactly right (logits of +-40), the implied Dice of every class is
    its true Dice, and FP / FN are counted as fractions of the query mask by hand."""
    g = torch.Generator().manual_seed(3)
    seg = torch.randint(0, C + 1, (1, 4, 16, 16), generator=g)
    truth = seg.clone()
    truth[0, 1:3, 4:12, 4:12] = 2  # a block of class 2: false negatives of 2, false positives of 1 and 3
    truth[0, 0] = 0  # slice 0 all background: false positives of every class
    query = one_hot_query(seg, C)
    wrong = torch.stack([(seg == c) ^ (truth == c) for c in range(1, C + 1)], dim=1)  # (1, C, ...)
    logits = torch.where(wrong, 40.0, -40.0)
    decoder = torch.stack([torch.ones(seg.shape[1:]), seg[0].float()])[None]  # F = 2: constant 1, the label
    features = query_pooled_features(decoder, query, logits).reshape(1, C, query_head_features(2))
    for c in range(1, C + 1):
        q, e, t = seg == c, wrong[:, c - 1], truth == c
        mask_mean, error_mean, numbers = features[0, c - 1, :2], features[0, c - 1, 2:4], features[0, c - 1, 4:]
        assert mask_mean.tolist() == pytest.approx([1.0, float(c)])  # the label inside the class mask is c
        assert error_mean[0] == pytest.approx(1.0, abs=1e-4)
        assert error_mean[1] == pytest.approx(float(seg[0][e[0]].float().mean()), abs=1e-3)
        fp, fn = float((e & q).sum()), float((e & ~q).sum())
        assert numbers[0] == pytest.approx(fp / float(q.sum()), abs=1e-5)
        assert numbers[1] == pytest.approx(fn / (float(q.sum()) + fn), abs=1e-5)
        assert numbers[2] == pytest.approx(_dice(q, t), abs=1e-5)
        assert numbers[3] == pytest.approx(float(q.float().mean()), abs=1e-6)


def test_query_head_features_of_an_empty_class_are_zero_not_nan():
    seg = torch.zeros((1, 2, 16, 16), dtype=torch.long)
    seg[0, 0, :4, :4] = 1  # classes 2 and 3 absent
    features = query_pooled_features(torch.randn(1, 2, 2, 16, 16), one_hot_query(seg, C), torch.zeros(1, C, 2, 16, 16))
    per_class = features.reshape(C, -1)
    assert torch.isfinite(features).all()
    assert per_class[1, :2].tolist() == [0.0, 0.0] and per_class[1, -1] == 0.0 and per_class[1, -2] == 0.0


def test_boundary_error_numbers_by_hand():
    """A 4 x 4 square in an 8 x 8 slice: its inner shell is the 12 voxels around the 2 x 2 core,
    its outer shell the 20 voxels of the surrounding 6 x 6 ring (corner neighbours count)."""
    q = torch.zeros(1, 2, 8, 8)
    q[0, 0, 2:6, 2:6] = 1  # class 1: the square; class 2: empty
    p = torch.zeros(1, 2, 8, 8)
    p[0, 0, 2:6, 2] = 1.0  # the square's left column: 4 inner-shell voxels certainly wrong
    p[0, 0, 1, 1:7] = 0.25  # the ring's top row: 6 outer-shell voxels, each a quarter wrong
    p[0, 0, 3:5, 3:5] = 1.0  # the core is not on the boundary: not counted
    p[0, 1] = 0.9  # an empty class has no boundary
    numbers = boundary_error_numbers(q, p)[0]
    assert numbers[0].tolist() == pytest.approx([4 / 12, 6 * 0.25 / 20, 4 / 12, 0.0, 12 / 16])
    assert numbers[1].tolist() == [0.0] * 5

    # 3D: a 3 x 3 x 3 cube in a 5 x 5 x 5 volume; the volume's edge counts as inside
    q3 = torch.zeros(1, 1, 5, 5, 5)
    q3[0, 0, 1:4, 1:4, 1:4] = 1
    assert boundary_error_numbers(q3, torch.zeros_like(q3))[0, 0, 4] == pytest.approx(26 / 27)
    p3 = torch.ones_like(q3)
    assert boundary_error_numbers(q3, p3)[0, 0, :4].tolist() == pytest.approx([1.0] * 4)
    half = torch.zeros(1, 1, 4, 4)
    half[0, 0, :, :2] = 1  # touches the volume's edge on three sides: only the column next to the rest is shell
    assert boundary_error_numbers(half, torch.zeros_like(half))[0, 0, 4] == pytest.approx(4 / 8)
    with pytest.raises(ValueError, match="masks"):
        boundary_error_numbers(torch.zeros(2, 8), torch.zeros(2, 8))


def test_the_readout_reads_the_boundary_numbers_only_when_asked():
    image, query = _inputs((16, 32, 32))
    plain = _model(readout=True).eval()
    surface = _model(readout=True, readout_surface=True).eval()
    assert plain.readout is not None and surface.readout is not None
    assert surface.readout.mean.numel() - plain.readout.mean.numel() == C * 5
    with torch.no_grad():
        x_plain, x_surface = plain.readout_features(image, query), surface.readout_features(image, query)
        _, probs = surface.readout_inputs(image, query)
    per_class = query_head_features(TINY[0] // 2)
    wide = x_surface[:, : C * (per_class + 5)].reshape(2, C, per_class + 5)
    assert torch.equal(wide[..., :per_class].flatten(1), x_plain[:, : C * per_class])  # the same weights: same start
    assert torch.allclose(wide[..., per_class:], boundary_error_numbers(query[:, 1:], probs))
    assert torch.equal(x_surface[:, -2 * (C + 1):], x_plain[:, -2 * (C + 1):])  # then the heads' estimates
    assert surface.sem_threshold.tolist() == [0.5] * C and "sem_threshold" in surface.state_dict()


def test_readout_replaces_the_heads_only_once_fitted_and_is_saved_with_the_weights():
    image, query = _inputs((16, 32, 32))
    plain, model = _model().eval(), _model(readout=True).eval()
    assert model.readout is not None and not model.readout.is_fitted
    with torch.no_grad():
        assert torch.equal(model(image, query).dice, plain(image, query).dice)  # unfitted: the heads
        features = model.readout_features(image, query)
        width = query_head_features(TINY[0] // 2)
        heads = plain(image, query)
        assert features.shape == (2, C * width + 2 * (C + 1))  # the pooled branch, then the heads' estimates
        assert torch.equal(features[:, C * width:], torch.cat([heads.dice, heads.nsd], dim=1))
        # a fit that reads class 1's implied Dice (feature 2F + 2) for every Dice output and 0.25 + 0.5 x (its
        # false-positive fraction) for every NSD output
        n_features = C * width + 2 * (C + 1)
        weight = torch.zeros(2 * (C + 1), n_features)
        weight[: C + 1, TINY[0] + 2] = 1.0
        weight[C + 1:, TINY[0]] = 0.5
        bias = torch.tensor([0.0] * (C + 1) + [0.25] * (C + 1))
        model.readout.set(torch.zeros(n_features), torch.ones(n_features), weight, bias)
        out = model(image, query)
        assert torch.allclose(out.dice, features[:, TINY[0] + 2, None].expand(2, C + 1), atol=1e-6)
        assert torch.allclose(out.nsd, (0.25 + 0.5 * features[:, TINY[0], None]).expand(2, C + 1), atol=1e-6)
        assert out.sem_logits is not None and torch.equal(out.sem_logits, plain(image, query).sem_logits)
        reloaded = _model(seed=1, readout=True).eval()
        reloaded.load_state_dict(model.state_dict())
        assert reloaded.readout is not None and reloaded.readout.is_fitted
        assert torch.equal(reloaded(image, query).dice, out.dice)
    with pytest.raises(ValueError, match="shape"):
        model.readout.set(torch.zeros(3), torch.ones(3), weight, bias)
    with pytest.raises(ValueError, match="decoder"):
        _model(readout=True, decoder=False)


def test_the_fourier_correction_adds_its_features_linear_map_and_is_saved_with_the_weights():
    import numpy as np

    from segqc.training.fourier import fourier_features

    image, query = _inputs((16, 32, 32))
    model = _model(readout=True, readout_fourier=16).eval()
    assert model.readout is not None and model.readout.fourier == 16
    with torch.no_grad():
        x = model.readout_features(image, query)
        p = x.shape[1]
        gen = torch.Generator().manual_seed(0)
        mean, scale = torch.randn(p, generator=gen), torch.rand(p, generator=gen) + 0.5
        weight, bias = 0.01 * torch.randn(2 * (C + 1), p, generator=gen), torch.full((2 * (C + 1),), 0.5)
        model.readout.set(mean, scale, weight, bias)
        linear = model(image, query).dice
        freq, phases = 0.2 * torch.randn(16, p, generator=gen), 6.0 * torch.rand(16, generator=gen)
        f_mean, f_scale = 0.1 * torch.randn(16, generator=gen), torch.rand(16, generator=gen) + 0.5
        f_weight, f_bias = 0.05 * torch.randn(2 * (C + 1), 16, generator=gen), torch.full((2 * (C + 1),), -0.1)
        model.readout.set_correction(freq, phases, f_mean, f_scale, f_weight, f_bias)
        out = model(image, query)
        # the same sum in float64 numpy
        z = ((x - mean) / scale).double().numpy()
        phi = fourier_features(z, freq.double().numpy(), phases.double().numpy())
        expected = z @ weight.double().numpy().T + bias.double().numpy()
        expected += (phi - f_mean.double().numpy()) / f_scale.double().numpy() @ f_weight.double().numpy().T
        expected = np.clip(expected + f_bias.double().numpy(), 0, 1)
        assert out.dice is not None and out.nsd is not None
        assert np.allclose(torch.cat([out.dice, out.nsd], 1).numpy(), expected, atol=1e-5)
        assert not torch.allclose(out.dice, linear)
        reloaded = _model(seed=1, readout=True, readout_fourier=16).eval()
        reloaded.load_state_dict(model.state_dict())
        assert torch.equal(reloaded(image, query).dice, out.dice)
        model.readout.set(mean, scale, weight, bias)  # a new linear fit drops the old correction
        assert torch.equal(model(image, query).dice, linear)
    with pytest.raises(ValueError, match="fourier=0"):
        _model(readout=True).readout.set_correction(freq, phases, f_mean, f_scale, f_weight, f_bias)


def test_default_is_resnet34():
    with torch.device("meta"):
        model = QcResUNet(3, 1, C, decoder=False)
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 16
    # 34 weighted layers: the stem, two 3x3x3 convolutions per block, one fully connected layer
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d) and m.kernel_size != (1, 1, 1)]
    assert len(convs) == 1 + 2 * 16
    assert [s[-1].conv2.out_channels for s in model.stages] == [64, 128, 256, 512]
    assert all(isinstance(b.norm1, nn.InstanceNorm3d) and b.norm1.affine for b in blocks)
    assert all(isinstance(b.dropout, nn.Dropout3d) and b.dropout.p == 0.3 for b in blocks)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_eval_is_deterministic_and_train_mode_drops_channels():
    model = _model().eval()
    image, query = _inputs((16, 32, 32))
    with torch.no_grad():
        a, b = model(image, query), model(image, query)
        assert a.dice is not None and b.dice is not None and a.sem_logits is not None and b.sem_logits is not None
        assert torch.equal(a.dice, b.dice) and torch.equal(a.sem_logits, b.sem_logits)
        model.train()
        c, d = model(image, query), model(image, query)
        assert c.sem_logits is not None and d.sem_logits is not None and c.dice is not None and d.dice is not None
        assert not torch.equal(c.sem_logits, d.sem_logits) and not torch.equal(c.dice, d.dice)
        no_dropout = _model(dropout=0.0).train()  # same weights: the randomness came from dropout
        e, f = no_dropout(image, query), no_dropout(image, query)
        assert e.sem_logits is not None and f.sem_logits is not None
        assert torch.equal(e.sem_logits, f.sem_logits)
        torch.testing.assert_close(e.sem_logits, a.sem_logits)


# --------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------


def _hand_output() -> QcResUNetOutput:
    return QcResUNetOutput(
        dice=torch.tensor([[0.5, 0.8]]), nsd=torch.tensor([[0.2, 0.4]]),
        sem_logits=torch.tensor([[[[0.0, 0.0], [math.log(3.0), -math.log(3.0)]]]]),  # p = .5 .5 / .75 .25
    )


def test_loss_matches_hand_computation():
    dice_true, nsd_true = torch.tensor([[0.7, 0.8]]), torch.tensor([[0.1, 0.1]])
    sem_true = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    mae = (0.2 + 0.0) / 2 + (0.1 + 0.3) / 2  # 0.1 + 0.2
    dice = 1 - 2 * (0.5 + 0.75) / (2.0 + 2.0)  # intersection 1.25, |p| = 2, |g| = 2
    bce = -(math.log(0.5) + math.log(0.5) + math.log(0.75) + math.log(0.75)) / 4
    total, parts = qcresunet_loss(_hand_output(), dice_true, nsd_true, sem_true, lam=2.0)
    assert parts["mae"].item() == pytest.approx(mae, abs=1e-5)
    assert parts["sem_dice"].item() == pytest.approx(dice, abs=1e-5)
    assert parts["sem_bce"].item() == pytest.approx(bce, abs=1e-5)
    assert total.item() == pytest.approx(mae + 2.0 * (dice + bce), abs=1e-5)


def _two_sample_error_maps() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and error maps of 2 samples x 2 classes x 3 voxels: class 1 of sample 0 has 2 error
    voxels, both predicted (logit 30); sample 1 has 1, not predicted (logit -30); class 2 none."""
    logits = torch.full((2, 2, 1, 3), -30.0)
    target = torch.zeros(2, 2, 1, 3)
    target[0, 0, 0, :2] = 1
    logits[0, 0, 0, :2] = 30.0
    target[1, 0, 0, 0] = 1
    return logits, target


def test_loss_dice_is_per_class_over_the_batch():
    # Class 1: sample 0 has 2 error voxels, both predicted; sample 1 has 1, not predicted.
    # Batch Dice 2*2 / (2 + 3) = 0.8 (a per-sample mean would give 0.5). Class 2: no error voxel
    # anywhere and none predicted: Dice 1. Loss = 1 - mean(0.8, 1) = 0.1 (pooling the classes
    # instead of averaging them would give 1 - 0.8 = 0.2).
    logits, target = _two_sample_error_maps()
    out = QcResUNetOutput(dice=None, nsd=None, sem_logits=logits)
    _, parts = qcresunet_loss(out, None, None, target)
    assert parts["sem_dice"].item() == pytest.approx(0.1, abs=1e-4)


def test_loss_dice_per_sample_weighs_each_segmentation_alike():
    # The batch of the test above, per sample (smooth 1): class 1 sample 0 (4 + 1) / (4 + 1) = 1,
    # sample 1 (0 + 1) / (1 + 1) = 0.5 (its one error voxel missed); class 2, nothing anywhere: 1
    # and 1. Loss = 1 - mean(1, 0.5, 1, 1) = 0.125 (the batch Dice gives 0.1).
    logits, target = _two_sample_error_maps()
    out = QcResUNetOutput(dice=None, nsd=None, sem_logits=logits)
    _, parts = qcresunet_loss(out, None, None, target, per_sample_dice=True)
    assert parts["sem_dice"].item() == pytest.approx(0.125, abs=1e-4)
    # Predicting the missed voxel lowers only the per-sample loss's second term: 1 - 1 = 0.
    logits[1, 0, 0, 0] = 30.0
    _, parts = qcresunet_loss(out, None, None, target, per_sample_dice=True)
    assert parts["sem_dice"].item() == pytest.approx(0.0, abs=1e-4)


def test_loss_is_zero_for_perfect_regression_and_finite_for_empty_error_maps():
    out = _hand_output()
    assert out.dice is not None and out.nsd is not None and out.sem_logits is not None
    _, parts = qcresunet_loss(out, out.dice.clone(), out.nsd.clone(), torch.zeros_like(out.sem_logits))
    assert parts["mae"].item() == 0.0
    for value in parts.values():
        assert torch.isfinite(value)

    model = _model().train()
    image, query = _inputs((16, 32, 32))
    out = model(image, query)
    assert out.sem_logits is not None
    total, parts = qcresunet_loss(out, torch.ones(2, C + 1), torch.ones(2, C + 1), torch.zeros_like(out.sem_logits))
    total.backward()
    assert torch.isfinite(total) and 0.0 <= parts["sem_dice"].item() <= 1.0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_loss_with_ablated_parts():
    out = _hand_output()
    regression_only = QcResUNetOutput(dice=out.dice, nsd=out.nsd, sem_logits=None)
    total, parts = qcresunet_loss(regression_only, torch.tensor([[0.7, 0.8]]), torch.tensor([[0.1, 0.1]]), None)
    assert total.item() == pytest.approx(0.3, abs=1e-6)
    assert parts["sem_dice"].item() == 0.0 and parts["sem_bce"].item() == 0.0
    maps_only = QcResUNetOutput(dice=None, nsd=None, sem_logits=out.sem_logits)
    total, parts = qcresunet_loss(maps_only, None, None, torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]]))
    assert parts["mae"].item() == 0.0 and total.item() == pytest.approx(0.375 + math.log(8 / 3) / 2, abs=1e-5)
    with pytest.raises(ValueError, match="sem_true"):
        qcresunet_loss(out, torch.zeros(1, 2), torch.zeros(1, 2), None)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _overfit_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two ``2 x 32 x 32`` volumes: nested boxes as ground truth, image = truth + noise; query 0
    is the truth shifted, query 1 labels a class-3 box as class 2 and adds a class-1 box."""
    g = torch.Generator().manual_seed(1)
    truth = torch.zeros(2, 2, 32, 32, dtype=torch.long)
    truth[:, :, 4:28, 4:28] = 1
    truth[:, :, 8:24, 8:24] = 2
    truth[0, :, 12:20, 12:20] = 3
    truth[1, :, 2:12, 16:30] = 3
    query = torch.zeros_like(truth)
    query[0, :, 8:32, 0:24] = 1
    query[0, :, 12:28, 4:20] = 2
    query[0, :, 16:24, 8:16] = 3
    query[1] = truth[1]
    query[1, :, 2:12, 16:30] = 2
    query[1, :, 20:32, 0:16] = 1
    image = truth.float().unsqueeze(1) + 0.3 * torch.randn(2, 1, 2, 32, 32, generator=g)
    return image, truth, query


def test_tiny_model_overfits_two_samples():
    torch.manual_seed(0)
    model = QcResUNet(3, 1, C, widths=(8, 16, 32, 64), strides=ACDC_STRIDES, dropout=0.0)
    image, truth, query = _overfit_data()
    classes = torch.arange(1, C + 1).view(1, C, 1, 1, 1)
    sem = ((query.unsqueeze(1) == classes) != (truth.unsqueeze(1) == classes)).float()  # SEM_c = XOR
    dice_true = torch.tensor([[0.9, 0.8, 0.95, 0.7], [0.6, 0.5, 0.7, 0.4]])
    nsd_true = torch.tensor([[0.8, 0.9, 0.7, 0.6], [0.5, 0.6, 0.3, 0.2]])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    q = one_hot_query(query, C)
    history = []
    for _ in range(50):
        optimizer.zero_grad()
        total, parts = qcresunet_loss(model(image, q), dice_true, nsd_true, sem)
        total.backward()
        optimizer.step()
        history.append((total.item(), (parts["sem_dice"] + parts["sem_bce"]).item()))
    assert history[-1][0] < 0.5 * history[0][0], history
    assert history[-1][1] < 0.7 * history[0][1], history  # the error maps learn too, not only the MAE


def test_thin_slice_kernels_at_the_first_two_levels():
    # kernels (1, 3, 3) at the input's level and the stem's, 3 x 3 x 3 below: every convolution
    # that outputs level 0 or 1 loses two thirds of its weights. By hand for TINY widths, 1 image
    # channel and C = 3 (query 4 channels, input 5; full-resolution width 2): level 0 — the
    # full-resolution skip 5 -> 2, the last decoder level 4 -> 2 and 2 -> 2; level 1 — stage 1's
    # three blocks of two 4 -> 4 convolutions, the middle decoder level 8 -> 4 and 4 -> 4: a sum
    # of c_in * c_out of 10 + 8 + 4 + 6 * 16 + 32 + 16 = 166, so 166 * (27 - 9) weights fewer; the
    # stem's (3, 7, 7) becomes (1, 7, 7): 5 * 4 * 49 * 2 fewer.
    cube = _model()
    thin = _model(kernels=[(1, 3, 3), (1, 3, 3), 3, 3, 3])
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(cube) - count(thin) == 166 * 18 + 5 * 4 * 49 * 2
    assert thin.stem[0].weight.shape[2:] == (1, 7, 7) and cube.stem[0].weight.shape[2:] == (3, 7, 7)
    assert thin.stages[1][0].conv1.weight.shape[2:] == (3, 3, 3)
    image, query = _inputs()
    out = thin(image, query)
    assert out.sem_logits.shape == (2, C, 16, 64, 64) and out.dice.shape == (2, C + 1)
    for bad in ([3] * 4, [(2, 3, 3)] * 5, [(3, 3)] * 5):
        with pytest.raises(ValueError, match="kernel"):
            _model(kernels=bad)
