"""Gaussian noise augmentation of the segmentation methods' training slices (``noise_aug``):
the noise follows its definition (half of the slices, a standard deviation of up to
``max_sigma`` times each channel's range), the step's generator decides it (both methods call it alike), the
setting is validated, and a U-Net trained with it segments noisy images better than one trained
without."""

from __future__ import annotations

import numpy as np
import pytest
from ldseg_toy_data import disk_image, foreground_dice
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.seg.inference import segment_case
from segqc.seg.ldseg.config import LdsegConfig
from segqc.seg.slices import SliceData, add_noise_rows, make_batch
from segqc.seg.unet.config import UnetConfig
from segqc.seg.unet.predict import load, predict_slices

runner = CliRunner()


def _ramp_rows(rows: int) -> np.ndarray:
    """(rows, 2, 16, 16): channel 0 a ramp over [0, 1], channel 1 the same ramp times 10."""
    ramp = np.linspace(0.0, 1.0, 16 * 16, dtype=np.float32).reshape(16, 16)
    return np.stack([np.stack([ramp, 10.0 * ramp])] * rows)


def test_half_of_the_rows_get_noise_scaled_by_each_channels_range():
    clean = _ramp_rows(4000)
    noisy = clean.copy()
    add_noise_rows(noisy, np.random.default_rng(0), 0.2)
    residual = noisy - clean
    changed = np.abs(residual).reshape(len(residual), -1).max(axis=1) > 0
    assert abs(changed.mean() - 0.5) < 0.03  # binomial(4000, 1/2): sd 0.008
    sd = residual[changed].std(axis=(-2, -1))  # (n, 2) per channel
    # per row sd = u * range with u ~ U(0, 0.2): mean 0.1, never above 0.2 (256 pixels: small sampling error)
    assert abs(float(sd[:, 0].mean()) - 0.1) < 0.005
    assert float(sd[:, 0].max()) < 0.2 * 1.2
    np.testing.assert_allclose(sd[:, 1] / sd[:, 0], 10.0, rtol=0.25)  # one level per row, scaled per channel
    assert abs(float(np.median(sd[:, 1] / sd[:, 0])) - 10.0) < 0.2


def test_zero_leaves_the_rows_as_they_are_and_a_constant_channel_gets_none():
    images = _ramp_rows(8)
    before = images.copy()
    add_noise_rows(images, np.random.default_rng(1), 0.0)
    np.testing.assert_array_equal(images, before)
    flat = np.zeros((200, 1, 8, 8), np.float32)
    add_noise_rows(flat, np.random.default_rng(1), 0.5)
    assert float(np.abs(flat).max()) == 0.0


def test_the_generator_decides_the_noise_and_the_labels_stay():
    rng = np.random.default_rng(3)
    pairs = [disk_image(rng, (16, 16)) for _ in range(12)]
    data = SliceData(np.stack([[image] for image, _ in pairs]).astype(np.float32),
                     np.stack([gt for _, gt in pairs]), [f"c{k}" for k in range(12)], [0, 1], {})
    indices = list(range(12))
    plain, gt = make_batch(data, indices, rng=np.random.default_rng(7))
    noisy, gt_noisy = make_batch(data, indices, rng=np.random.default_rng(7), noise=0.3)
    again, _ = make_batch(data, indices, rng=np.random.default_rng(7), noise=0.3)
    np.testing.assert_array_equal(plain.numpy(), data.images)
    np.testing.assert_array_equal(noisy.numpy(), again.numpy())  # (seed, step) decides the noise
    np.testing.assert_array_equal(gt.numpy(), gt_noisy.numpy())  # labels untouched
    assert 0 < int((noisy - plain).abs().flatten(1).amax(dim=1).gt(0).sum()) < 12


@pytest.mark.parametrize("config", [UnetConfig, LdsegConfig])
def test_the_setting_is_a_fraction_of_the_range(config):
    assert config.preset("small").noise_aug == 0.0  # off unless asked for
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="noise_aug"):
            config.preset("tiny", noise_aug=bad)


def _noisy_held_out(sigma: float, n: int = 8):
    rng = np.random.default_rng(321)
    out = []
    for _ in range(n):
        image, gt = disk_image(rng)
        out.append((image + rng.normal(0.0, sigma * float(image.max() - image.min()), image.shape), gt))
    return out


def test_a_unet_trained_with_noise_segments_noisy_images_better(disk_dataset, tmp_path):
    scores = {}
    for name, extra in (("plain", []), ("noise", ["--set", "noise_aug=0.5"])):
        result = runner.invoke(app, ["seg", "train", "unet", str(disk_dataset), "-o", str(tmp_path / name), "--config",
                                     "tiny", "--device", "cpu", "-q", *extra])
        assert result.exit_code == 0, result.output
        model = load(tmp_path / name)
        labels = [(segment_case(model, predict_slices, [image.astype(np.float32)])["label"], gt)
                  for image, gt in _noisy_held_out(0.4)]
        scores[name] = float(np.mean([foreground_dice(label, gt) for label, gt in labels]))
    assert scores["noise"] > scores["plain"] + 0.05, scores
