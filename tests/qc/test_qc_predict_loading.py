"""Loading and running nnQC and QCResUNet models through their ``predict`` modules.

nnQC: the shipped ``models/acdc-nnqc-small`` is loaded and compared with its own files (the
safetensors weights read with ``safetensors`` and ``config.json`` read with ``json``), and
``predict_slices`` / ``load_qc_model`` are checked against the network's own
``generate_pgt`` driven by a ``torch.Generator`` seeded here. QCResUNet: the shipped
``models/acdc-qcresunet-small`` buffers against its safetensors file, and ``assess_volume`` on
tiny untrained members against the members run here with torch (flips, sigmoid, means).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from segqc.errors import InputError
from segqc.qc.nnqc.config import NnqcConfig
from segqc.qc.nnqc.model import NnqcModel
from segqc.qc.nnqc.predict import load, load_qc_model, predict_slices
from segqc.qc.qcresunet.config import QcResUNetConfig
from segqc.qc.qcresunet.model import QcResUNet
from segqc.qc.qcresunet.predict import LoadedQcResUNet, assess_volume
from segqc.qc.qcresunet.predict import load as load_qcresunet

ROOT = Path(__file__).resolve().parents[2]
NNQC = ROOT / "models" / "acdc-nnqc-small"
QCRESUNET = ROOT / "models" / "acdc-qcresunet-small"


@pytest.fixture(scope="module")
def nnqc_config() -> dict:
    return json.loads((NNQC / "config.json").read_text())["config"]


@pytest.fixture(scope="module")
def nnqc_model():
    return load(NNQC)


@pytest.fixture(scope="module")
def heart_slices(nnqc_model):
    """Two synthetic short-axis-like slices at the model's size: LV (3) inside myocardium (2)
    with RV (1) beside it, the image a noisy function of the labels."""
    size = nnqc_model.config.size
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    seg = np.zeros((size, size), np.uint8)
    seg[r < 22] = 2
    seg[r < 15] = 3
    seg[(r < 28) & (xx < size / 2 - 15)] = 1
    segs = np.stack([seg, np.roll(seg, 5, axis=0)])
    rng = np.random.default_rng(0)
    images = (segs - 1.5 + rng.normal(0, 0.3, segs.shape)).astype(np.float32)[:, None]
    return images, segs, np.array([0.3, 0.6])


def _reference_pgt(model, images, segs, ratios, *, steps, samples, seed) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return model.generate_pgt(images, segs, ratios, steps=steps, samples=samples, generator=generator).numpy()


def test_loaded_nnqc_holds_every_saved_component_and_the_saved_latent_scale(nnqc_model, nnqc_config):
    """Reference: each ``<component>.safetensors`` of the model folder read with safetensors, and
    ``latent_scale`` / ``image_input`` read from config.json with json."""
    for name in ("autoencoder", "image_encoder", "toe", "denoiser"):
        saved = load_file(NNQC / f"{name}.safetensors")
        state = getattr(nnqc_model, name).state_dict()
        assert saved.keys() == state.keys(), name
        for key, tensor in saved.items():
            assert torch.equal(state[key], tensor), f"{name}.{key}"
    assert float(nnqc_model.latent_scale) == pytest.approx(float(nnqc_config["latent_scale"]), rel=1e-6)
    assert float(nnqc_config["latent_scale"]) != 1.0
    assert nnqc_config["nnqc"]["image_input"] == "unshuffle"
    assert nnqc_model.config.image_input == "unshuffle"


def test_predict_slices_uses_the_given_seed_steps_and_samples(nnqc_model, heart_slices):
    """Reference: ``generate_pgt`` with a ``torch.Generator`` seeded here, at the same steps and
    samples; another seed and another step count give other pGTs on these slices."""
    images, segs, ratios = heart_slices
    got = predict_slices(nnqc_model, images, segs, ratios, steps=2, samples=2, seed=7)
    expected = _reference_pgt(nnqc_model, images, segs, ratios, steps=2, samples=2, seed=7)
    assert got.shape == (2, 2, *segs.shape[1:]) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(expected, _reference_pgt(nnqc_model, images, segs, ratios, steps=2, samples=2, seed=0))
    other_steps = _reference_pgt(nnqc_model, images, segs, ratios, steps=nnqc_model.config.inference_steps,
                                 samples=2, seed=7)
    assert not np.array_equal(expected, other_steps)


def test_predict_slices_defaults_to_the_saved_number_of_samples(nnqc_model, nnqc_config, heart_slices):
    """Reference: ``samples`` from config.json (4 for the shipped model) when none is given; an
    explicit count wins."""
    images, segs, ratios = heart_slices
    default = int(nnqc_config["nnqc"]["samples"])
    assert default != 3
    assert predict_slices(nnqc_model, images, segs, ratios, steps=1, seed=1).shape[0] == default
    assert predict_slices(nnqc_model, images, segs, ratios, steps=1, samples=3, seed=1).shape[0] == 3


def test_predict_slices_restores_the_torch_thread_count(nnqc_model, heart_slices):
    """Reference: ``torch.get_num_threads()`` before the call (set to 2 here)."""
    images, segs, ratios = heart_slices
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        predict_slices(nnqc_model, images[:1], segs[:1], ratios[:1], steps=1, samples=1, threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_label_value_256_needs_a_16_bit_result():
    """Reference, by hand: 256 exceeds ``np.iinfo(np.uint8).max`` (255), so a model whose labels
    include 256 returns uint16 pGTs holding only its label values."""
    assert np.iinfo(np.uint8).max < 256
    torch.manual_seed(0)
    model = NnqcModel(NnqcConfig.preset("tiny"), (0, 256), 1).eval()
    size = model.config.size
    segs = np.zeros((1, size, size), np.int64)
    segs[0, 8:20, 8:20] = 256
    images = np.random.default_rng(0).random((1, 1, size, size)).astype(np.float32)
    out = predict_slices(model, images, segs, np.array([0.5]), steps=1, samples=1, seed=0)
    assert out.dtype == np.uint16
    assert set(np.unique(out).tolist()) <= {0, 256}


def test_qc_model_wrapper_keeps_the_saved_defaults_and_the_driver_seed(nnqc_config, heart_slices):
    """Reference: ``samples`` and ``inference_steps`` from config.json; the wrapper's ``generate``
    equals ``generate_pgt`` with a generator seeded here with the seed it was given."""
    qc = load_qc_model(NNQC)
    assert qc.default_samples == int(nnqc_config["nnqc"]["samples"]) == 4
    assert qc.default_steps == int(nnqc_config["nnqc"]["inference_steps"])
    images, segs, ratios = heart_slices
    got = qc.generate(images, segs, ratios, 2, 2, 5)
    np.testing.assert_array_equal(got, _reference_pgt(load(NNQC), images, segs, ratios, steps=2, samples=2, seed=5))


# --------------------------------------------------------------------------------------------
# QCResUNet
# --------------------------------------------------------------------------------------------

CLASSES = (("1", "one", (1,)), ("2", "two", (2,)), ("3", "three", (3,)))


def _member(seed: int) -> QcResUNet:
    torch.manual_seed(seed)
    return QcResUNet(2, 1, 3, widths=(4, 8, 16, 32), blocks=(1, 1, 1, 1), strides=(2, 2, 2, 2),
                     dropout=0.0).eval()


def _loaded(members, **config) -> LoadedQcResUNet:
    return LoadedQcResUNet(list(members), QcResUNetConfig(**config), (0, 1, 2, 3), CLASSES, None, None, 2, "fp32")


def _volume(seed: int = 0, n: int = 3):
    rng = np.random.default_rng(seed)
    segs = rng.integers(0, 4, size=(n, 32, 32))
    segs[0, :16] = 0
    images = (segs + rng.normal(0, 0.5, segs.shape)).astype(np.float32)[:, None]
    return images, segs


def _onehot(segs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((segs[:, None] == np.arange(4).reshape(1, 4, 1, 1)).astype(np.float32))


def test_loaded_qcresunet_keeps_its_calibrated_thresholds():
    """Reference: the ``sem_threshold`` and ``outside_errors`` buffers in member0.safetensors
    read with safetensors (calibrated: not the untrained 0.5)."""
    saved = load_file(QCRESUNET / "member0.safetensors")
    assert not torch.allclose(saved["sem_threshold"], torch.full_like(saved["sem_threshold"], 0.5))
    member = load_qcresunet(QCRESUNET).members[0]
    torch.testing.assert_close(member.sem_threshold, saved["sem_threshold"], rtol=0, atol=0)
    torch.testing.assert_close(member.outside_errors, saved["outside_errors"], rtol=0, atol=0)


def test_outside_errors_need_more_than_half_of_the_members():
    """Reference, by hand: per class, members saying (1, 1), (0, 1), (1, 0) -> means 1, 0.5, 0.5;
    only a strict majority (mean > 0.5) marks the class. Each member's thresholds come through as
    they are (each member votes at its own)."""
    first, second = _member(0), _member(1)
    first.outside_errors.copy_(torch.tensor([1.0, 0.0, 1.0]))
    second.outside_errors.copy_(torch.tensor([1.0, 1.0, 0.0]))
    first.sem_threshold.copy_(torch.tensor([0.2, 0.4, 0.6]))
    second.sem_threshold.copy_(torch.tensor([0.4, 0.4, 0.2]))
    images, segs = _volume()
    result = assess_volume(_loaded([first, second]), images, segs, passes=1)
    assert result["outside_errors"].tolist() == [True, False, False]
    np.testing.assert_allclose(result["error_threshold"], [[0.2, 0.4, 0.6], [0.4, 0.4, 0.2]], rtol=0, atol=1e-6)


def test_passes_default_to_the_configured_test_flips():
    """Reference: the member run here with torch on the volume mirrored along each of
    TEST_FLIPS[4]'s axes ((), (-1,), (-2,), (-1, -2)), DSC averaged over the slices: one row per pass."""
    member = _member(2)
    images, segs = _volume(1)
    image, query = torch.from_numpy(images), _onehot(segs)
    with torch.no_grad():
        rows = [member(torch.flip(image, axes) if axes else image, torch.flip(query, axes) if axes else query)
                .dice.mean(dim=0).numpy() for axes in ((), (-1,), (-2,), (-1, -2))]
    result = assess_volume(_loaded([member], test_flips=4), images, segs)
    assert result["dice"].shape == (4, 4)
    np.testing.assert_allclose(result["dice"], np.stack(rows), rtol=0, atol=1e-5)


def test_error_maps_are_the_mean_over_the_mirrored_passes():
    """Reference: sigmoid of the member's error logits computed here with torch on the volume and
    on its mirror (mirrored back), averaged with numpy and laid out (class, slice, H, W)."""
    member = _member(3)
    images, segs = _volume(2)
    image, query = torch.from_numpy(images), _onehot(segs)
    with torch.no_grad():
        plain = torch.sigmoid(member(image, query).sem_logits).numpy()
        mirrored = torch.flip(torch.sigmoid(member(torch.flip(image, (-1,)), torch.flip(query, (-1,))).sem_logits),
                              (-1,)).numpy()
    expected = np.moveaxis((plain + mirrored) / 2, 0, 1)
    assert np.abs(plain - mirrored).max() > 1e-4  # the two passes differ: the mean is not either one
    result = assess_volume(_loaded([member]), images, segs, passes=2)
    assert result["errors"].shape == (1, 3, 3, 32, 32)
    np.testing.assert_allclose(result["errors"][0], expected, rtol=0, atol=1e-5)


def test_label_values_the_model_does_not_know_are_refused():
    """Reference, by hand: the model knows 0..3; a slice holding 5 must be an InputError naming it."""
    images, segs = _volume(3)
    segs[1, 0, 0] = 5
    with pytest.raises(InputError, match=r"\[5\]"):
        assess_volume(_loaded([_member(4)]), images, segs, passes=1)
