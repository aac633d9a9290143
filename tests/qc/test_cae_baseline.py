"""The convolutional-autoencoder QC baseline: trains, round-trips, and ranks segmentations."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch

from segqc.io.images import read_label_map, write_image
from segqc.qc.baselines.cae import CaeConfig, load, train
from segqc.qc.baselines.cae.model import ConvAutoencoder
from segqc.qc.baselines.cae.predict import reconstruct
from segqc.qc.baselines.cae.train import train_from_dataset
from segqc.qc.inference import QcSettings, qc_folder
from segqc.qc.model_api import load_qc_model
from segqc.training import CheckpointError

# the module (the package exports its function ``train`` under the same name)
cae_training = importlib.import_module("segqc.qc.baselines.cae.train")


@pytest.fixture(scope="module")
def cae_run(qc_dataset, tmp_path_factory):
    """The trained model directory and the trained network as training left it in memory (the
    training module's ConvAutoencoder is wrapped so that the instance it builds is kept)."""
    built: list[ConvAutoencoder] = []

    class Kept(ConvAutoencoder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    config = CaeConfig(size=32, channels=(8, 16), latent_channels=4, epochs=25, batch_size=8, lr=3e-3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cae_training, "ConvAutoencoder", Kept)
        directory = train_from_dataset(qc_dataset, tmp_path_factory.mktemp("cae") / "model", config=config,
                                       log=lambda m: None)
    assert len(built) == 1
    return directory, built[0]


@pytest.fixture(scope="module")
def cae_dir(cae_run):
    return cae_run[0]


def test_training_loss_decreases(cae_dir):
    losses = json.loads((cae_dir / "metrics.json").read_text())["loss"]
    assert losses[-1] < 0.75 * losses[0] and losses[-1] < min(losses[:3])


def test_checkpoint_round_trip_gives_the_in_memory_trained_network(cae_run):
    """The loaded network is the trained one: every parameter and buffer (BatchNorm statistics
    included) equal to the network training left in memory, and the same logits for the same masks."""
    directory, trained = cae_run
    model, config = load(directory)
    assert config["labels"] == [0, 1, 2]
    expected, got = trained.state_dict(), model.state_dict()
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    segs = np.zeros((2, 32, 32), dtype=np.int64)
    segs[:, 8:24, 8:24] = 1
    segs[:, 12:20, 12:20] = 2
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(segs), 3).permute(0, 3, 1, 2).float()
    trained.eval()
    with torch.no_grad():
        assert torch.equal(model(one_hot), trained(one_hot))
    assert np.array_equal(reconstruct(model, segs), reconstruct(trained, segs))


def test_qc_estimates_rank_a_perfect_above_a_broken_segmentation(cae_dir, qc_dataset, tmp_path):
    segs = tmp_path / "segs"
    for i, path in enumerate(sorted((qc_dataset / "labelsTr").glob("*.nii.gz"))[:2]):
        label = read_label_map(path)
        seg = label.array.copy()
        if i == 1:  # broken: swap the classes and punch a hole
            seg = np.where(seg == 1, 2, np.where(seg == 2, 1, 0)).astype(seg.dtype)
        write_image(segs / path.name, seg, label.geometry)
    table, work, _ = qc_folder(cae_dir, qc_dataset / "imagesTr", segs, tmp_path / "qc",
                               settings=QcSettings(metrics=("dice",)))
    overall = table[(table.label == "all") & (table.metric == "dice")].set_index("case")["estimate"]
    assert overall["case0"] > overall["case1"] + 0.1
    assert work.case.iloc[0] == "case1"


def test_model_directory_of_another_method_is_refused(cae_dir, tmp_path):
    meta = json.loads((cae_dir / "config.json").read_text())
    meta["method"] = "something_else"
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a QC model"):
        load_qc_model(other)
    with pytest.raises(CheckpointError, match="expected 'cae'"):
        load(other)


def test_train_rejects_sizes_the_network_cannot_halve():
    with pytest.raises(ValueError, match="divisible"):
        CaeConfig(size=30, channels=(8, 16))


def test_train_function_accepts_in_memory_slices(tmp_path, qc_dataset):
    from segqc.fingerprint import compute_fingerprint, plan_from_fingerprint

    plan = plan_from_fingerprint(compute_fingerprint(qc_dataset), size=32)
    slices = np.zeros((4, 32, 32), dtype=np.int64)
    slices[:, 10:20, 10:20] = 1
    directory = train(CaeConfig.preset("tiny"), slices, (0, 1, 2), plan, tmp_path / "m", log=lambda m: None)
    assert load_qc_model(directory).labels == (0, 1, 2)
