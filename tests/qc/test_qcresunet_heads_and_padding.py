"""QCResUNet on tiny untrained networks and by hand: the DSC and NSD heads read the global
mean of the last encoder stage (each its own head), a fitted read-out is clipped to [0, 1], the
loss's MAE counts the "all classes" column, the decoder up-samples by nearest neighbour, and
``assess_volume`` pads 3D volumes only up to the next size multiple and averages a 2D model's
estimates over the slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segqc.qc.qcresunet.config import QcResUNetConfig
from segqc.qc.qcresunet.model import (
    ACDC_STRIDES,
    DecoderLevel,
    QcResUNet,
    QcResUNetOutput,
    Readout,
    qcresunet_loss,
)
from segqc.qc.qcresunet.predict import LoadedQcResUNet, assess_volume, network_inputs

TINY = (4, 8, 16, 32)
C = 3  # foreground classes


def _model(dims: int = 2, seed: int = 0, **kwargs) -> QcResUNet:
    torch.manual_seed(seed)
    kwargs.setdefault("strides", ACDC_STRIDES if dims == 3 else (2, 2, 2, 2))
    return QcResUNet(dims, 1, C, widths=TINY, blocks=(1, 1, 1, 1), dropout=0.0, **kwargs).eval()


def _onehot(seg: np.ndarray, classes: int = C) -> torch.Tensor:
    """(B, *s) label values 0..classes -> float32 (B, classes + 1, *s), built with numpy."""
    return torch.from_numpy((seg[:, None] == np.arange(classes + 1).reshape(1, -1, *([1] * (seg.ndim - 1))))
                            .astype(np.float32))


def _inputs(b: int = 2, shape=(32, 32), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.normal(size=(b, 1, *shape)).astype(np.float32))
    return image, _onehot(rng.integers(0, C + 1, size=(b, *shape)))


def test_heads_read_the_global_mean_of_the_last_stage():
    """Reference: the last encoder stage's output captured with a forward hook, averaged over its
    voxels with torch, then sigmoid(dice_head(mean)) and sigmoid(nsd_head(mean)) recomputed here."""
    model = _model()
    captured = []
    handle = model.stages[3].register_forward_hook(lambda module, args, out: captured.append(out.detach()))
    image, query = _inputs()
    with torch.no_grad():
        out = model(image, query)
        handle.remove()
        stage4 = captured[0]
        assert stage4.shape[:2] == (2, TINY[3])
        pooled = stage4.mean(dim=(2, 3))
        torch.testing.assert_close(out.dice, torch.sigmoid(model.dice_head(pooled)), rtol=0, atol=1e-6)
        torch.testing.assert_close(out.nsd, torch.sigmoid(model.nsd_head(pooled)), rtol=0, atol=1e-6)


def test_the_nsd_head_gives_nsd_and_only_nsd():
    """Reference: shifting the NSD head's bias by +1 must move every NSD logit (by exactly 1) and
    leave DSC as it was."""
    model = _model()
    image, query = _inputs()
    with torch.no_grad():
        before = model(image, query)
        model.nsd_head.bias += 1.0
        after = model(image, query)
    torch.testing.assert_close(after.dice, before.dice, rtol=0, atol=0)
    torch.testing.assert_close(torch.logit(after.nsd.double()), torch.logit(before.nsd.double()) + 1.0,
                               rtol=0, atol=1e-4)


def test_a_fitted_readout_is_clipped_to_0_1():
    """Reference, by hand: zero weights and biases 2, -1 and 0.25 give 2, -1, 0.25 before the
    documented clip to [0, 1], so 1, 0 and 0.25."""
    readout = Readout(2, 3)
    readout.set(torch.zeros(2), torch.ones(2), torch.zeros(3, 2), torch.tensor([2.0, -1.0, 0.25]))
    out = readout(torch.randn(4, 2))
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0, 0.25]] * 4))


def test_the_dice_mae_counts_the_all_classes_column():
    """Reference, by hand: predictions (2, 4) wrong by 0.3 in column 0 only ("all classes") give a
    mean absolute error of 0.3 · 2 / 8 = 0.075 over batch and the C + 1 entries."""
    pred = torch.tensor([[0.5, 0.6, 0.7, 0.8], [0.2, 0.3, 0.4, 0.9]])
    true = pred.clone()
    true[:, 0] += 0.3
    total, parts = qcresunet_loss(QcResUNetOutput(dice=pred, nsd=None, sem_logits=None), true, None, None)
    assert float(parts["mae_dice"]) == pytest.approx(0.075, abs=1e-6)
    assert float(total) == pytest.approx(0.075, abs=1e-6)


@pytest.mark.parametrize("dims, rate", [(2, (2, 2)), (3, (1, 2, 2))])
def test_decoder_upsampling_is_nearest_neighbour(dims, rate):
    """Reference: nearest up-sampling by integer rates is repeating every voxel rate times along
    each axis (torch.repeat_interleave), then the level's own 1x1 projection and conv blocks."""
    torch.manual_seed(0)
    level = DecoderLevel(dims, 6, 4, rate).eval()
    small = (2, 3, 3) if dims == 3 else (3, 3)
    x = torch.randn(1, 6, *small)
    skip = torch.randn(1, 4, *(s * r for s, r in zip(small, rate)))
    up = x
    for axis, r in enumerate(rate):
        up = up.repeat_interleave(r, dim=2 + axis)
    with torch.no_grad():
        expected = level.blocks(torch.cat([level.project(up), skip], dim=1))
        torch.testing.assert_close(level(x, skip), expected, rtol=1e-5, atol=1e-6)


CLASSES = (("1", "one", (1,)), ("2", "two", (2,)), ("3", "three", (3,)))


def _loaded(dims: int) -> LoadedQcResUNet:
    return LoadedQcResUNet([_model(dims)], QcResUNetConfig(), (0, 1, 2, 3), CLASSES, None, None, dims, "fp32")


@pytest.mark.parametrize("n, depth", [(16, 16), (15, 16), (17, 18)])
def test_3d_inputs_are_padded_to_the_next_multiple_only(n, depth):
    """Reference, by hand: ACDC's rates need a slice-axis multiple of 1 · 1 · 1 · 2 = 2, so 16
    slices stay 16, 15 become 16 and 17 become 18 (padding slices are background)."""
    loaded = _loaded(3)
    assert loaded.members[0].size_multiple[0] == 2
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, 1, 16, 16)).astype(np.float32)
    segs = rng.integers(0, 4, size=(n, 16, 16))
    image, query = network_inputs(loaded, images, segs)
    assert image.shape == (1, 1, depth, 16, 16) and query.shape == (1, 4, depth, 16, 16)
    assert float(image[0, 0, n:].abs().sum()) == 0.0
    assert bool((query[0, 0, n:] == 1).all())


def test_a_2d_model_estimates_a_volume_by_the_mean_over_its_slices():
    """Reference: the member run here on each slice alone (one-hot query built with numpy), its
    DSC and NSD averaged over the three slices with numpy."""
    loaded = _loaded(2)
    rng = np.random.default_rng(3)
    images = rng.normal(size=(3, 1, 32, 32)).astype(np.float32)
    segs = rng.integers(0, 4, size=(3, 32, 32))
    segs[0] = 0  # slices that differ a lot
    segs[1, :16] = 2
    member = loaded.members[0]
    with torch.no_grad():
        per_slice = [member(torch.from_numpy(images[i:i + 1]), _onehot(segs[i:i + 1])) for i in range(3)]
    dice = np.mean([o.dice[0].numpy() for o in per_slice], axis=0)
    nsd = np.mean([o.nsd[0].numpy() for o in per_slice], axis=0)
    assert np.abs(per_slice[0].dice[0].numpy() - dice).max() > 1e-4  # the first slice alone differs
    result = assess_volume(loaded, images, segs, passes=1)
    np.testing.assert_allclose(result["dice"], dice[None], rtol=0, atol=1e-5)
    np.testing.assert_allclose(result["nsd"], nsd[None], rtol=0, atol=1e-5)
