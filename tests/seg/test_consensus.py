"""Consensus diffusion: levels and targets by hand, the sampler against an exact noise oracle, a
tiny model trained through ``segqc seg train consensus`` on synthetic rater disks, the checkpoint
round trip, ``segqc seg predict --save`` outputs and ``segqc evaluate-raters`` on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from consensus_toy_data import make_rater_folder, rater_disks
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.io.images import read_image, read_label_map
from segqc.metrics.distribution import consensus_maps
from segqc.metrics.soft import soft_dice
from segqc.seg.consensus.config import ConsensusConfig
from segqc.seg.consensus.model import ConsensusDiffusion, level_index
from segqc.seg.consensus.predict import LoadedConsensus, load, predict_slices
from segqc.seg.consensus.train import training_targets

runner = CliRunner()


@pytest.fixture(scope="module")
def rater_folder(tmp_path_factory):
    return make_rater_folder(tmp_path_factory.mktemp("raters"))


@pytest.fixture(scope="module")
def trained(rater_folder, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("consensus_run")
    result = runner.invoke(app, ["seg", "train", "consensus", str(rater_folder), "-o", str(out), "--config", "tiny",
                                 "--device", "cpu", "-q", "--set", "steps_train=600"])
    assert result.exit_code == 0, result.output
    return out


def test_level_lookup_indices_by_hand():
    cfg = ConsensusConfig.preset("tiny")  # level_grid 12
    assert [level_index(cfg, c, 4) for c in (1, 2, 3, 4)] == [3, 6, 9, 12]
    assert [level_index(cfg, c, 3) for c in (1, 2, 3)] == [4, 8, 12]
    assert [level_index(cfg, c, 2) for c in (1, 2)] == [6, 12]
    assert level_index(ConsensusConfig.preset("tiny", mode="annotator"), 3, 4) == 3
    assert level_index(ConsensusConfig.preset("tiny", mode="soft"), 3, 4) == 0
    with pytest.raises(ValueError):
        level_index(cfg, 5, 4)


def test_training_targets_per_mode():
    raters = np.array([[[1, 1, 0, 0]], [[1, 0, 0, 0]], [[1, 1, 1, 0]], [[0, 0, 0, 0]]], dtype=np.uint8)  # (4, 1, 4)
    votes = raters[:3].sum(axis=0)  # the fourth row is padding: 3 real raters
    seen = set()
    for seed in range(30):
        target, index = training_targets(ConsensusConfig.preset("tiny"), raters, 3, np.random.default_rng(seed))
        level = {4: 1, 8: 2, 12: 3}[index]
        np.testing.assert_array_equal(target, (votes >= level).astype(np.float32))
        seen.add(level)
        target, index = training_targets(ConsensusConfig.preset("tiny", mode="annotator"), raters, 3,
                                         np.random.default_rng(seed))
        np.testing.assert_array_equal(target, raters[index - 1])
    assert seen == {1, 2, 3}
    # annotator numbers of the whole data set: a case without rater 2 keeps rater 3's number
    target, index = training_targets(ConsensusConfig.preset("tiny", mode="annotator"), raters, 2,
                                     np.random.default_rng(1), np.array([1, 3, 0, 0]))
    assert index in (1, 3) and np.array_equal(target, raters[0 if index == 1 else 1])
    soft, index = training_targets(ConsensusConfig.preset("tiny", mode="soft"), raters, 3, np.random.default_rng(0))
    np.testing.assert_allclose(soft, votes / 3.0)
    assert index == 0


def test_schedule_is_the_linear_beta_scaled_to_t_steps():
    cfg = ConsensusConfig.preset("small")
    model = ConsensusDiffusion(cfg, image_channels=1)
    betas = np.linspace(1e-3, 0.2, 100)  # 1e-4 and 2e-2 times 1000 / T
    np.testing.assert_allclose(model.abar.numpy(), np.cumprod(1 - betas), rtol=1e-5)
    assert model.abar[-1] < 1e-4


def _oracle(model: ConsensusDiffusion, maps_by_index: dict[int, torch.Tensor]) -> None:
    """Make the network output the exact noise (or v, or x0) of x_t for the known clean map of
    each index."""
    def output(x_t, features, t, index):
        x0 = torch.stack([2 * maps_by_index[int(i)] - 1 for i in index]).unsqueeze(1)
        abar = model.abar[t].view(-1, 1, 1, 1)
        eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
        return {"epsilon": eps, "v": abar.sqrt() * eps - (1 - abar).sqrt() * x0, "x0": x0}[model.config.prediction]
    model.output = output  # type: ignore[method-assign]


@pytest.mark.parametrize(("sampler", "prediction"), [("ddpm", "epsilon"), ("ddim", "epsilon"), ("ddpm", "v"),
                                                     ("ddim", "x0")])
def test_sampling_with_the_exact_noise_returns_every_level_and_their_mean(sampler, prediction):
    """An oracle denoiser that knows M^c for each level: every sample is M^c and the soft map is
    the rater mean — the level order, the batching, the parameterisations and the [-1, 1] <->
    [0, 1] mapping are right."""
    cfg = ConsensusConfig.preset("tiny", prediction=prediction)
    image, masks = rater_disks(np.random.default_rng(3), 4, cfg.size)
    levels, mean = consensus_maps(masks)
    network = ConsensusDiffusion(cfg, image_channels=1)
    _oracle(network, {level_index(cfg, c, 4): torch.from_numpy(levels[c - 1].astype(np.float32)) for c in (1, 2, 3, 4)})
    loaded = LoadedConsensus(network.eval(), cfg, (0, 1), {}, 1, 4)
    out = predict_slices(loaded, image[None, None], samples=2, steps=10, sampler=sampler)
    np.testing.assert_allclose(out["mean"][0, 1], mean, atol=1e-4)
    np.testing.assert_array_equal(out["levels"][:, 0], levels.astype(np.float32))
    assert out["samples"].shape == (8, 1, 2, cfg.size, cfg.size)
    np.testing.assert_array_equal(out["samples"][2, 0, 1], levels[1])  # level-major: sample 2 = level 2, generation 0
    np.testing.assert_allclose(out["std"], 0.0, atol=1e-5)
    np.testing.assert_array_equal(out["label"][0], mean >= 0.5)


def test_trained_tiny_model_predicts_the_rater_mean(trained):
    metrics = json.loads((trained / "model" / "metrics.json").read_text())
    losses = metrics["train"]["losses"]["loss"]
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:50])
    model = load(trained)
    assert model.raters == 4 and model.level_indices() == [3, 6, 9, 12]
    rng = np.random.default_rng(123)  # held-out images
    learned, majority, elsewhere = [], [], []
    previous = None
    for _ in range(4):
        image, masks = rater_disks(rng, 4, model.size)
        levels, mean = consensus_maps(masks)
        soft = predict_slices(model, image[None, None], samples=2, seed=1)["mean"][0, 1]
        learned.append(soft_dice(soft, mean).value)
        majority.append(soft_dice(levels[1].astype(float), mean).value)  # the perfect majority-vote map
        if previous is not None:
            elsewhere.append(soft_dice(previous, mean).value)  # another image's prediction
        previous = soft
    assert np.mean(learned) > 0.8, learned
    assert np.mean(learned) > np.mean(majority) + 0.05, (learned, majority)
    assert np.mean(learned) > np.mean(elsewhere) + 0.2, (learned, elsewhere)


def test_checkpoint_round_trip_and_seeded_predictions(trained, rater_folder):
    model = load(trained)
    again = load(trained / "model")
    image = read_image(rater_folder / "case000" / "image.nii.gz").array[None, None]
    first = predict_slices(model, image, samples=1, seed=5, sampler="ddim", steps=5)
    second = predict_slices(again, image, samples=1, seed=5, sampler="ddim", steps=5)
    np.testing.assert_array_equal(first["mean"], second["mean"])
    other = predict_slices(again, image, samples=1, seed=6)  # ancestral: another seed, other noise
    assert not np.array_equal(first["samples"], other["samples"])
    # steps alone on an ancestral model: DDIM with those steps (not silently all T ancestral steps)
    assert model.config.sampler == "ddpm"
    implied = predict_slices(again, image, samples=1, seed=5, steps=5)
    np.testing.assert_array_equal(implied["mean"], first["mean"])


def test_predict_writes_levels_and_evaluate_raters_reads_them(trained, rater_folder, tmp_path):
    out = tmp_path / "pred"
    result = runner.invoke(app, ["seg", "predict", str(trained), str(rater_folder), "-o", str(out), "-q",
                                 "--samples", "1", "--save", "probabilities,std,samples,levels"])
    assert result.exit_code == 0, result.output
    level_maps = [read_label_map(out / "levels" / f"case000_{c}.nii.gz").array for c in (1, 2, 3, 4)]
    for wider, narrower in zip(level_maps, level_maps[1:]):
        assert (narrower.astype(int) - wider.astype(int)).max() <= 1  # binary maps
    soft = read_image(out / "probabilities" / "case000_1.nii.gz").array
    assert soft.min() >= 0 and soft.max() <= 1
    assert len(list((out / "samples").glob("case000_*.nii.gz"))) == 4  # 4 levels x 1 generation
    evaluation = runner.invoke(app, ["evaluate-raters", str(out), str(rater_folder), "-o", str(tmp_path / "ev"),
                                     "-q"])
    assert evaluation.exit_code == 0, evaluation.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["n_cases"] == 24
    assert summary["metrics"]["soft_dice"]["mean"] > 0.6


def test_training_on_an_nnunet_folder_is_one_clear_line(tmp_path):
    (tmp_path / "data" / "labelsTr").mkdir(parents=True)
    (tmp_path / "data" / "imagesTr").mkdir()
    result = runner.invoke(app, ["seg", "train", "consensus", str(tmp_path / "data"), "-o", str(tmp_path / "o"),
                                 "--config", "tiny", "-q"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    empty = tmp_path / "empty_case"
    (empty / "c1").mkdir(parents=True)
    result = runner.invoke(app, ["seg", "train", "consensus", str(empty), "-o", str(tmp_path / "o2"),
                                 "--config", "tiny", "-q"])
    assert result.exit_code != 0 and "rater_1" in result.output and "Traceback" not in result.output
