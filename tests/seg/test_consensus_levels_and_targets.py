"""Consensus diffusion and multi-rater slices on tiny untrained networks and by hand: level
lookup indices (rounded, from ``inference_raters``), the dense block's residual scaling, the
training targets against an exact noise oracle built on an independent numpy schedule, per-slice
seeds, the annotator table size check, and rater numbers taken from rater names (BU-BIL's case
B18, which lacks one of the ten expert masks, and numbered raters rater_1 .. rater_11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import segqc.seg.consensus.train as consensus_train
from segqc.errors import InputError
from segqc.io.geometry import Geometry
from segqc.io.images import write_image
from segqc.seg.consensus.config import ConsensusConfig
from segqc.seg.consensus.model import ConsensusDiffusion, ResidualDenseBlock, level_index
from segqc.seg.consensus.predict import LoadedConsensus, predict_slices
from segqc.seg.consensus.train import make_batch
from segqc.seg.rater_slices import RaterSliceData, build_rater_data


def _loaded(max_raters: int, seed: int = 0, **overrides) -> LoadedConsensus:
    torch.manual_seed(seed)
    config = ConsensusConfig.preset("tiny", **overrides)
    model = ConsensusDiffusion(config, image_channels=1).eval()
    return LoadedConsensus(model, config, (0, 1), {"0": "background", "1": "foreground"}, 1, max_raters)


# --------------------------------------------------------------------------------------------
# Level lookup
# --------------------------------------------------------------------------------------------


def test_level_indices_of_five_raters_are_rounded_not_floored():
    """Reference, by hand: round(12 c / 5) for c = 1..5 is round(2.4, 4.8, 7.2, 9.6, 12) = 2, 5,
    7, 10, 12 (flooring would give 2, 4, 7, 9, 12)."""
    cfg = ConsensusConfig.preset("tiny")
    assert cfg.level_grid == 12
    assert [level_index(cfg, c, 5) for c in range(1, 6)] == [2, 5, 7, 10, 12]


def test_inference_samples_the_levels_of_inference_raters_not_of_the_most_raters():
    """Reference, by hand from the documented lookup round(level_grid c / C) with C =
    inference_raters = 3 (not the 4 raters of the training data) on a grid of 12: 4, 8, 12; so
    three level maps per slice."""
    loaded = _loaded(max_raters=4, inference_raters=3)
    assert loaded.raters == 3
    assert loaded.level_indices() == [4, 8, 12]
    images = np.random.default_rng(0).normal(size=(1, 1, 32, 32)).astype(np.float32)
    out = predict_slices(loaded, images, samples=1, steps=1, seed=0)
    assert out["levels"].shape == (3, 1, 32, 32)
    assert out["samples"].shape == (3, 1, 2, 32, 32)


def test_identical_slices_of_one_call_get_their_own_noise(monkeypatch):
    """Reference: two copies of one slice in one call; with one seed per call (not per slice) the
    chains would start from the same noise and give identical maps. A repeated call is identical.
    (An untrained U-Net's output convolution is zero, which would erase the noise: the network
    returns its noisy input as the clean estimate here.)"""
    loaded = _loaded(max_raters=2)
    monkeypatch.setattr(loaded.model, "output", lambda x_t, features, t, index: x_t)
    image = np.random.default_rng(1).normal(size=(1, 1, 32, 32)).astype(np.float32)
    images = np.concatenate([image, image])
    out = predict_slices(loaded, images, samples=1, steps=2, seed=3)["mean"]
    assert np.abs(out[0] - out[1]).max() > 1e-4
    np.testing.assert_array_equal(predict_slices(loaded, images, samples=1, steps=2, seed=3)["mean"], out)


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------


def test_dense_block_output_is_its_input_plus_a_fifth_of_the_last_convolution():
    """Reference: the ESRGAN dense block written out by hand with F.conv2d on the module's own
    weights: five convolutions each reading the input and every earlier output (LeakyReLU 0.2
    after the first four), output x + 0.2 * (fifth convolution)."""
    torch.manual_seed(0)
    block = ResidualDenseBlock(4, 3)
    x = torch.randn(2, 4, 6, 6)
    features = [x]
    for k, conv in enumerate(block.convs):
        out = F.conv2d(torch.cat(features, dim=1), conv.weight, conv.bias, padding=1)
        if k < 4:
            features.append(torch.where(out >= 0, out, 0.2 * out))
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + 0.2 * out, rtol=1e-5, atol=1e-6)


def _numpy_abar(config: ConsensusConfig) -> np.ndarray:
    """ᾱ_t = prod_{s <= t} (1 - β_s), β linear from beta_start · 1000 / T to beta_end · 1000 / T
    over the T steps (the config's docstring), in float64."""
    t = config.timesteps
    betas = np.linspace(config.beta_start * 1000 / t, config.beta_end * 1000 / t, t)
    return np.cumprod(1.0 - betas)


def _oracle_loss(prediction: str, monkeypatch, batch: int = 2000) -> tuple[float, set[int]]:
    """The training loss when the network's output is the exact target recovered from (x0, t, x_t)
    with the numpy schedule, and the timesteps it was asked for."""
    config = ConsensusConfig.preset("tiny", prediction=prediction)
    torch.manual_seed(0)
    model = ConsensusDiffusion(config, image_channels=1)
    abar = torch.from_numpy(_numpy_abar(config))
    g = torch.Generator().manual_seed(11)
    target = torch.rand((batch, 4, 4), generator=g)
    x0 = (2.0 * target.double() - 1.0).unsqueeze(1)
    seen: set[int] = set()

    def oracle(x_t, features, t, index):
        seen.update(int(v) for v in t)
        a = abar[t].view(-1, 1, 1, 1)
        eps = (x_t.double() - a.sqrt() * x0) / (1 - a).sqrt()
        out = eps if prediction == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
        return out.float()

    monkeypatch.setattr(model.image_encoder, "forward", lambda image: image)  # the oracle ignores G(I)
    monkeypatch.setattr(model, "output", oracle)
    loss, _ = model.training_loss(torch.zeros((batch, 1, 4, 4)), target, torch.zeros(batch, dtype=torch.long),
                                  generator=torch.Generator().manual_seed(2))
    return float(loss), seen


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_an_exact_oracle_has_zero_training_loss(prediction, monkeypatch):
    """Reference: x_t = sqrt(ā) x0 + sqrt(1 - ā) eps with ā = cumprod(1 - β) computed with numpy
    from the documented linear schedule; an oracle that inverts it for eps (and forms v = sqrt(ā)
    eps - sqrt(1 - ā) x0) must give loss 0 up to float32 rounding."""
    loss, _ = _oracle_loss(prediction, monkeypatch)
    assert loss < 1e-8, loss


def test_training_timesteps_cover_0_to_t_minus_1(monkeypatch):
    """Reference: t uniform over the T = 50 steps 0..49 (0-based, the abar buffer's indices);
    2000 draws miss one with probability about 50 (49/50)^2000 < 1e-15."""
    _, seen = _oracle_loss("epsilon", monkeypatch)
    assert seen == set(range(50))


# --------------------------------------------------------------------------------------------
# Training data and checks
# --------------------------------------------------------------------------------------------


def _two_rater_data(size: int = 32) -> RaterSliceData:
    rng = np.random.default_rng(0)
    raters = (rng.random((3, 2, size, size)) > 0.5).astype(np.uint8)
    return RaterSliceData(rng.normal(size=(3, 1, size, size)).astype(np.float16), raters,
                          np.array([2, 2, 2]), ["a", "b", "c"], np.array([[1, 2]] * 3), ("1", "2"))


def test_annotator_mode_accepts_as_many_raters_as_annotator_entries(monkeypatch, tmp_path):
    """Reference: annotator numbers 1..level_grid each have an entry; 2 raters fit a table of
    level_grid = 2 (only more raters than entries are refused), and not one of 1."""
    calls = []
    monkeypatch.setattr(consensus_train, "train_single_stage", lambda out_dir, **kwargs: calls.append(out_dir))
    data = _two_rater_data()
    consensus_train.train(ConsensusConfig.preset("tiny", mode="annotator", level_grid=2), data, tmp_path / "run")
    assert calls == [tmp_path / "run"]
    with pytest.raises(InputError, match="annotator entries"):
        consensus_train.train(ConsensusConfig.preset("tiny", mode="annotator", level_grid=1), data, tmp_path / "x")


@pytest.fixture(scope="module")
def bubil_b01_b18(shared_data) -> tuple[Path, RaterSliceData]:
    root = shared_data("bubil/BU-BIL_Dataset1")
    return root, build_rater_data(root, ["B01", "B18"], 32)


def _listed_raters(folder: Path) -> list[str]:
    """The rater names of a case folder from its file listing (``rater_<name>.png``), sorted."""
    return sorted(p.name[len("rater_"):-len(".png")] for p in folder.glob("rater_*.png"))


def test_bubil_rater_numbers_come_from_the_names_not_the_positions(bubil_b01_b18):
    """Reference: the file listings of BU-BIL cases B01 and B18. The raters of the data are the
    sorted names of both (B01 has all ten: Person1..5 x Amira/ImageJ); B18 lacks Person3_Amira, so
    its nine masks are raters 1-4 and 6-10 of those names, padded with 0, and its slice has 9 raters."""
    root, data = bubil_b01_b18
    names = sorted(set(_listed_raters(root / "B01")) | set(_listed_raters(root / "B18")))
    b18 = _listed_raters(root / "B18")
    assert len(names) == 10 and len(b18) == 9 and "Person3_Amira" not in b18
    expected = [names.index(n) + 1 for n in b18]
    assert expected == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert data.cases == ["B01", "B18"]
    assert data.rater_names == tuple(names)
    assert data.rater_ids.tolist() == [list(range(1, 11)), [*expected, 0]]
    assert data.n_raters.tolist() == [10, 9]
    assert not data.raters[1, 9].any()  # the padding mask


def test_annotator_batches_condition_on_the_rater_number_of_the_drawn_mask(bubil_b01_b18):
    """Reference: as above, B18's masks in listing order are raters 1-4 and 6-10; in annotator mode
    every batch item of B18 is one of its masks with that mask's rater number as the index (never
    5, the missing Person3_Amira), over many draws every one of the nine appears."""
    root, data = bubil_b01_b18
    names = sorted(set(_listed_raters(root / "B01")) | set(_listed_raters(root / "B18")))
    number_of_position = [names.index(n) + 1 for n in _listed_raters(root / "B18")]
    config = ConsensusConfig.preset("tiny", mode="annotator", level_grid=10, flip=False, rotate=False)
    _, targets, index = make_batch(config, data, [1] * 200, np.random.default_rng(0))
    assert set(index.tolist()) == set(number_of_position)
    for target, k in zip(targets.numpy(), index.tolist()):
        np.testing.assert_array_equal(target, data.raters[1, number_of_position.index(k)])


def test_numbered_raters_1_to_11_are_numbered_in_numeric_order(tmp_path):
    """Reference: the file names rater_1 .. rater_11 (rater k marks pixel k of row 0 only, so its
    mask is known); numeric order puts 10 and 11 last, so the ids are 1..11 in order and mask
    position k - 1 holds rater k."""
    geometry = Geometry(shape=(8, 8), spacing=(1.0, 1.0), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0))
    case = tmp_path / "raters" / "case0"
    write_image(case / "image.nii.gz", np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32), geometry)
    masks = {}
    for k in range(1, 12):
        mask = np.zeros((8, 8), dtype=np.uint8)
        mask[k // 8, k % 8] = 1
        masks[k] = mask
        write_image(case / f"rater_{k}.nii.gz", mask, geometry)
    data = build_rater_data(tmp_path / "raters", None, 8)
    assert data.rater_names == tuple(str(k) for k in range(1, 12))
    assert data.rater_ids.tolist() == [list(range(1, 12))]
    assert data.n_raters.tolist() == [11]
    for k in range(1, 12):
        assert data.raters[0, k - 1].sum() == 1
