"""Probabilistic U-Net baseline: its KL term against torch's own, and trained on synthetic rater
disks its prior samples differ from each other and match the raters' distribution better than
copies of the perfect majority map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from consensus_toy_data import make_rater_folder, rater_disks
from ldseg_toy_data import make_disk_dataset
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.metrics.distribution import consensus_maps, generalized_energy_distance, sample_diversity
from segqc.seg.probunet.model import gaussian_kl_divergence
from segqc.seg.probunet.predict import load, predict_slices


def test_kl_divergence_matches_torch_distributions():
    torch.manual_seed(0)
    mq, lq, mp, lp = (torch.randn(5, 4) for _ in range(4))
    ours = gaussian_kl_divergence(mq, lq, mp, lp)
    q = torch.distributions.Normal(mq, (0.5 * lq).exp())
    p = torch.distributions.Normal(mp, (0.5 * lp).exp())
    torch.testing.assert_close(ours, torch.distributions.kl_divergence(q, p).sum(dim=1))
    assert float(gaussian_kl_divergence(mq, lq, mq, lq).abs().max()) < 1e-6


def test_trained_model_samples_the_raters_distribution(tmp_path):
    folder = make_rater_folder(tmp_path / "raters")
    result = CliRunner().invoke(app, ["seg", "train", "probunet", str(folder), "-o", str(tmp_path / "run"),
                                      "--config", "tiny", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    model = load(tmp_path / "run")
    rng = np.random.default_rng(123)
    ged, ged_majority, diversity = [], [], []
    for _ in range(4):
        image, masks = rater_disks(rng, 4, 32)
        levels, _ = consensus_maps(masks)
        samples = predict_slices(model, image[None, None], samples=8, seed=2)["samples"][:, 0].argmax(axis=1)
        ged.append(generalized_energy_distance(samples, masks)[0])
        ged_majority.append(generalized_energy_distance(np.repeat(levels[1:2], 8, axis=0), masks)[0])
        diversity.append(sample_diversity(samples))
    assert np.mean(diversity) > 0.05, diversity
    assert np.mean(ged) < np.mean(ged_majority), (ged, ged_majority)
    levels = CliRunner().invoke(app, ["seg", "predict", str(tmp_path / "run"), str(folder), "-o", str(tmp_path / "p"),
                                      "--save", "levels", "-q"])
    assert levels.exit_code != 0 and "no consensus levels" in levels.output and "Traceback" not in levels.output


def test_an_nnunet_folder_is_refused_in_one_line(tmp_path):
    dataset = make_disk_dataset(tmp_path / "d", cases=2)  # one label map per case: no raters
    result = CliRunner().invoke(app, ["seg", "train", "probunet", str(dataset), "-o", str(tmp_path / "o"),
                                      "--config", "tiny", "-q"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "multi-rater folder" in result.output


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
