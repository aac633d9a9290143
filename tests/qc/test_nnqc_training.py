"""nnQC training on a generated toy dataset (tiny config): data, losses, checkpoints, resume.

The toy volumes hold an ellipse (label 1) with a smaller one inside (label 2) whose size grows
from the first slice to the last, so the slice ratio carries information, and an image that shows
the labels through noise.
"""

from __future__ import annotations

import importlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import einops  # noqa: F401  (MONAI's DiffusionModelUNet attention blocks need it)
import monai  # noqa: F401
import numpy as np
import pytest
import torch
from dataset_folders import write_dataset

from segqc.degrade.targeting import NNQC_BINS
from segqc.errors import InputError
from segqc.io.geometry import Geometry
from segqc.io.images import read_label_map, write_image
from segqc.qc.inference import QcSettings, qc_folder
from segqc.qc.nnqc import NnqcConfig, NnqcModel, build_training_data, load, load_qc_model, predict_slices, train
from segqc.qc.nnqc.train import extra_segmentation_slices
from segqc.synthetic import paint_ellipsoid
from segqc.training import CheckpointError, load_state, save_checkpoint

TINY = NnqcConfig.preset("tiny")
# the module (the package exports its function ``train`` under the same name)
nnqc_training = importlib.import_module("segqc.qc.nnqc.train")


def _toy_dataset(root: Path, *, n_cases: int = 3, shape=(40, 40, 8), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    cases = {}
    for i in range(n_cases):
        label = np.zeros(shape, dtype=np.uint8)
        cy, cx = shape[0] / 2 + rng.uniform(-3, 3), shape[1] / 2 + rng.uniform(-3, 3)
        for k in range(shape[2]):
            r = 4 + 8 * k / (shape[2] - 1) + rng.uniform(-1, 1)
            paint_ellipsoid(label[..., k], (cy, cx), (r, 0.8 * r), 1)
            paint_ellipsoid(label[..., k], (cy, cx), (0.5 * r, 0.4 * r), 2)
        image = label.astype(np.float32) * 50 + 20 + rng.normal(0, 5, shape).astype(np.float32)
        geometry = Geometry.from_shape(shape, (1.5, 1.5, 5.0))
        cases[f"toy{i}"] = (image, label, geometry)
    return write_dataset(root, cases, labels={"background": 0, "outer": 1, "inner": 2}, channel="MR")


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    return _toy_dataset(tmp_path_factory.mktemp("nnqc_toy"))


@pytest.fixture(scope="module")
def toy_data(toy_root):
    return build_training_data(toy_root, None, TINY, seed=0)


@pytest.fixture(scope="module")
def trained_run(toy_data, tmp_path_factory) -> tuple[Path, NnqcModel]:
    """The model directory of one tiny training run and the model as training left it in memory
    (the training module's NnqcModel is wrapped so that the instance it builds is kept)."""
    built: list[NnqcModel] = []

    class Kept(NnqcModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nnqc_training, "NnqcModel", Kept)
        model_dir = train(TINY, toy_data, tmp_path_factory.mktemp("nnqc_run"), threads=1, device="cpu")
    assert len(built) == 1
    return model_dir, built[0]


@pytest.fixture(scope="module")
def trained(trained_run) -> Path:
    return trained_run[0]


def test_training_data_has_every_foreground_slice_degraded_evenly_over_the_nnqc_bins(toy_data):
    data = toy_data
    assert data.labels == (0, 1, 2)
    assert data.plan is not None and data.plan.size == TINY.size
    assert data.images.shape == (data.n_slices, 1, 32, 32) and data.n_slices == 3 * 8
    assert np.all((data.ratios >= 0) & (data.ratios <= 1)) and data.ratios.min() == 0 and data.ratios.max() == 1
    assert all(data.gt[i].any() for i in range(data.n_slices))
    assert data.n_segs == TINY.degraded_per_slice * data.n_slices
    assert np.array_equal(np.bincount(data.seg_source), np.full(data.n_slices, TINY.degraded_per_slice))
    hits = np.array([[b.contains(d) for b in NNQC_BINS] for d in data.seg_dice])
    assert hits.any(axis=1).mean() >= 0.9  # the search reaches its bin almost always
    assert np.all(hits.sum(axis=0) >= 0.8 * data.n_slices)  # and every bin is filled evenly


def test_extra_triples_join_the_training_data(toy_data):
    more = toy_data.with_extra(toy_data.images[:2], toy_data.gt[:2] * 0, toy_data.gt[:2], toy_data.ratios[:2])
    assert more.n_slices == toy_data.n_slices + 2 and more.n_segs == toy_data.n_segs + 2
    assert list(more.seg_source[-2:]) == [toy_data.n_slices, toy_data.n_slices + 1]
    assert np.all(more.seg_dice[-2:] == 0)


def test_real_imperfect_segmentations_join_with_their_ground_truth_in_their_own_window(toy_root, toy_data, tmp_path):
    """``extra_seg_dirs`` (e.g. zoo predictions): one case shifted by 3 voxels, one with class 2
    merged into 1, a held-out case's file that must be ignored; the triples pair each
    segmentation slice with its ground truth cut from the same window."""
    labels = {c: read_label_map(toy_root / "labelsTr" / f"{c}.nii.gz") for c in ("toy0", "toy1")}
    shifted = np.roll(labels["toy0"].array, 3, axis=0)
    merged = np.where(labels["toy1"].array == 2, 1, labels["toy1"].array).astype(np.uint8)
    extra = tmp_path / "zoo"
    write_image(extra / "toy0.nii.gz", shifted, labels["toy0"].geometry)
    write_image(extra / "toy1.nii.gz", merged, labels["toy1"].geometry)
    write_image(extra / "heldout9.nii.gz", merged, labels["toy1"].geometry)
    data = build_training_data(toy_root, None, TINY, seed=0, extra_seg_dirs=[extra])
    n = toy_data.n_slices
    assert data.n_slices == n + 16 and data.n_segs == toy_data.n_segs + 16  # 8 slices per case
    assert list(data.seg_source[-16:]) == list(range(n, n + 16))
    segs, gts = data.segs[-16:], data.gt[n:]
    # toy0: same shapes, moved by 3 voxels along the first in-plane axis (flipped to RAS)
    for seg, gt in zip(segs[:8], gts[:8]):
        assert seg.sum() > 0 and np.array_equal(seg, np.roll(gt, -3, axis=0))
    # toy1: the ground truth keeps class 2 where the segmentation says 1
    assert np.array_equal(segs[8:] > 0, gts[8:] > 0) and not (segs[8:] == 2).any() and (gts[8:] == 2).any()
    assert np.all(data.seg_dice[-16:] < 1) and np.all(data.seg_dice[-16:] > 0)
    # the original data is unchanged in front
    assert np.array_equal(data.segs[:toy_data.n_segs], toy_data.segs)


def test_bad_extra_segmentations_name_the_folder_or_file(toy_root, toy_data, tmp_path):
    """Once through build_training_data (which makes the degraded data first), then straight through
    the function that reads the extra segmentations (the same checks, without rebuilding)."""
    geometry = read_label_map(toy_root / "labelsTr" / "toy0.nii.gz").geometry
    with pytest.raises(InputError, match="not found"):
        build_training_data(toy_root, None, TINY, extra_seg_dirs=[tmp_path / "missing"])
    cases = ["toy0", "toy1", "toy2"]

    def read(folder: Path):
        return extra_segmentation_slices(toy_root, cases, folder, toy_data.plan, labels=toy_data.labels)

    other = tmp_path / "other"
    write_image(other / "someone_else.nii.gz", np.zeros(geometry.shape, np.uint8), geometry)
    with pytest.raises(InputError, match="holds no segmentation of the 3 training case"):
        read(other)
    odd = tmp_path / "odd"
    write_image(odd / "toy0.nii.gz", np.full(geometry.shape, 7, np.uint8), geometry)
    with pytest.raises(InputError, match=r"toy0.nii.gz.*label value\(s\) \[7\]"):
        read(odd)
    small = tmp_path / "small"
    write_image(small / "toy0.nii.gz", np.zeros((20, 40, 8), np.uint8),
                Geometry.from_shape((20, 40, 8), (1.5, 1.5, 5.0)))
    with pytest.raises(InputError, match="toy0"):
        read(small)


def test_training_loss_decreases_in_every_stage(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    for stage, key in (("ssl", "mse"), ("vae", "dice"), ("ldm", "mse")):
        curve = metrics[stage]["losses"][key]
        assert len(curve) == metrics[stage]["steps"] >= 30
        assert np.mean(curve[-8:]) < 0.8 * np.mean(curve[:8]), (stage, curve)
        assert metrics[stage]["median_step_seconds"] > 0
    assert metrics["vae"]["losses"]["adv"]  # the patch-GAN terms ran after adv_start
    assert metrics["latent_scale"] > 0


def _forward(model: NnqcModel, images: np.ndarray, segs: np.ndarray, ratios: np.ndarray) -> list[torch.Tensor]:
    """Posterior means, a noise prediction of the scaled latents at t = 500 and the decoded logits."""
    model.eval()
    with torch.no_grad():
        idx, x = model.class_indices(segs), torch.from_numpy(images)
        mu, _ = model.autoencoder.encode(model.one_hot(idx))
        t = torch.full((len(images),), 500, dtype=torch.long)
        c = model.condition(x, torch.from_numpy(ratios).float())
        eps = model.denoiser(mu * model.latent_scale, model.spatial_condition(idx, x), t, c)
        return [mu, eps, model.autoencoder.decode(mu)]


def test_loaded_model_is_the_in_memory_trained_model(trained_run, toy_data):
    """Every parameter and buffer (latent scale included) of the loaded model equals the model that
    training left in memory, and both give the same latents, noise predictions and pGTs."""
    model_dir, memory = trained_run
    loaded = load(model_dir)
    expected, got = memory.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys() and "latent_scale" in expected
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    assert float(loaded.latent_scale) != 1.0  # training set it (1 / std of the latents)
    images, segs, ratios = toy_data.images[:4], toy_data.segs[:4], toy_data.ratios[:4]
    for a, b in zip(_forward(memory, images, segs, ratios), _forward(loaded, images, segs, ratios)):
        assert torch.equal(a, b)
    assert torch.equal(memory.generate_pgt(images, segs, ratios, steps=3, samples=2, generator=11),
                       loaded.generate_pgt(images, segs, ratios, steps=3, samples=2, generator=11))


def test_checkpoint_round_trips_to_the_same_pgt(trained, toy_data):
    images, segs, ratios = toy_data.images[:6], toy_data.segs[:6], toy_data.ratios[:6]
    first = predict_slices(load(trained), images, segs, ratios, steps=4, samples=2, seed=3)
    second = predict_slices(load(trained), images, segs, ratios, steps=4, samples=2, seed=3)
    assert first.shape == (2, 6, 32, 32)
    assert np.array_equal(first, second)
    assert set(np.unique(first)) <= {0, 1, 2}
    state = load_state(trained.parent / "stages" / "ldm")
    model = load(trained)
    assert state["done"]
    for name, tensor in model.denoiser.state_dict().items():
        assert torch.equal(tensor, state["weights"]["denoiser"][name])


def _dice(a: np.ndarray, b: np.ndarray, labels=(1, 2)) -> float:
    return float(np.mean([2.0 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k)) for k in labels]))


def test_the_pgt_is_generated_not_copied_and_a_shifted_segmentation_is_estimated_worse(trained, toy_root, tmp_path):
    """With the trained (tiny) model through the QC driver: the pGT of a segmentation shifted 10
    voxels (15 mm) off the structures is not that segmentation but overlaps the ground truth clearly
    more than it does, and the ground truth itself gets a clearly higher estimated Dice than the
    shifted copy. Dice values against the ground truth are computed here with numpy."""
    images, segs = tmp_path / "images", tmp_path / "segs"
    images.mkdir()
    gts, shifted = {}, {}
    for case in ("toy0", "toy1", "toy2"):
        gt = read_label_map(toy_root / "labelsTr" / f"{case}.nii.gz")
        gts[case], shifted[case] = gt.array, np.roll(gt.array, 10, axis=0)
        for name, array in ((f"{case}good", gt.array), (f"{case}shifted", shifted[case])):
            shutil.copy(toy_root / "imagesTr" / f"{case}_0000.nii.gz", images / f"{name}_0000.nii.gz")
            write_image(segs / f"{name}.nii.gz", array, gt.geometry)
    table, _, _ = qc_folder(trained, images, segs, tmp_path / "qc", settings=QcSettings(metrics=("dice",)))
    overall = table[(table.label == "all") & (table.metric == "dice")].set_index("case")["estimate"]
    for case, gt in gts.items():
        pgt = read_label_map(tmp_path / "qc" / "pgt" / f"{case}shifted.nii.gz").array
        assert _dice(pgt, shifted[case]) < 0.6, case  # (a copy of the input would give 1)
        assert _dice(pgt, gt) > _dice(shifted[case], gt) + 0.1, case
        assert overall[f"{case}good"] > overall[f"{case}shifted"] + 0.1, case


def test_interrupted_training_resumes_to_the_same_weights(trained, toy_data, tmp_path):
    """The ssl and vae stages of the fixture's run are reused (not trained again); the ldm stage is
    interrupted after its step-20 checkpoint, resumed, and must end at the fixture's weights."""
    run = trained.parent
    shutil.copy(run / "run.json", tmp_path / "run.json")
    for stage in ("ssl", "vae"):
        shutil.copytree(run / "stages" / stage, tmp_path / "stages" / stage)

    class Stop(Exception):
        pass

    first: list[str] = []

    def interrupt(line: str) -> None:
        first.append(line)
        if line.startswith("ldm step 28/"):  # after the step-20 checkpoint
            raise Stop

    with pytest.raises(Stop):
        train(TINY, toy_data, tmp_path, threads=1, device="cpu", log=interrupt)
    assert any(line.startswith("ssl: done before") for line in first)
    assert any(line.startswith("vae: done before") for line in first)
    assert load_state(tmp_path / "stages" / "ldm")["step"] == TINY.checkpoint_every
    lines: list[str] = []
    resumed = train(TINY, toy_data, tmp_path, threads=1, device="cpu", log=lines.append)
    assert any("resuming at step 20" in line for line in lines)
    a, b = load(trained), load(resumed)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_a_run_folder_with_other_settings_is_refused(trained, toy_data):
    with pytest.raises(InputError, match="other settings"):
        train(replace(TINY, ldm_lr=1e-3), toy_data, trained.parent)


def test_loading_another_method_or_a_corrupt_model_raises_checkpoint_error(trained, tmp_path):
    other = save_checkpoint(tmp_path / "cae", method="cae", config={}, weights={})
    with pytest.raises(CheckpointError, match="expected 'nnqc'"):
        load(other)
    with pytest.raises(CheckpointError, match="not found"):
        load(tmp_path / "missing")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(trained, corrupt)
    (corrupt / "denoiser.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load(corrupt)
    mismatched = tmp_path / "mismatched"
    shutil.copytree(trained, mismatched)
    meta = json.loads((mismatched / "config.json").read_text())
    meta["config"]["nnqc"]["context_dim"] = 24
    (mismatched / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match"):
        load(mismatched)


def test_the_qc_driver_gets_the_plan_labels_and_a_generator(trained, toy_data):
    qc = load_qc_model(trained)
    assert qc.method == "nnqc" and qc.labels == (0, 1, 2) and qc.plan == toy_data.plan
    assert qc.fingerprint is not None and qc.default_steps == TINY.inference_steps
    pgt = qc.generate(toy_data.images[:3], toy_data.segs[:3], toy_data.ratios[:3], 2, 3, 0)
    assert pgt.shape == (2, 3, 32, 32)


def test_extra_folders_are_read_as_every_qc_training_reads_them(toy_root, toy_data, tmp_path):
    """nnQC reads an extra folder as QCResUNet does (segqc.training.cases.extra_segmentation_files):
    a file of another ending than dataset.json's, every file a `segqc degrade` manifest lists for
    a case, and of two files of one case the one with the dataset's ending."""
    truth = read_label_map(toy_root / "labelsTr" / "toy0.nii.gz")
    shifted = np.roll(truth.array, 3, axis=0).astype(np.uint8)
    merged = np.where(truth.array == 2, 1, truth.array).astype(np.uint8)

    def read(folder: Path):
        return extra_segmentation_slices(toy_root, ["toy0", "toy1", "toy2"], folder, toy_data.plan,
                                         labels=toy_data.labels)

    other_ending = tmp_path / "other_ending"
    write_image(other_ending / "toy0.nii", shifted, truth.geometry)
    images, segs, gts, _ = read(other_ending)
    assert len(segs) == 8 and all(np.array_equal(s, np.roll(g, -3, axis=0)) for s, g in zip(segs, gts))
    degraded = tmp_path / "degraded"
    write_image(degraded / "toy0_shifted.nii.gz", shifted, truth.geometry)
    write_image(degraded / "toy0_merged.nii.gz", merged, truth.geometry)
    (degraded / "manifest.csv").write_text("case,file\ntoy0,toy0_shifted.nii.gz\ntoy0,toy0_merged.nii.gz\n")
    images, segs, gts, _ = read(degraded)
    assert len(segs) == 16  # both files of toy0, by file name: merged, then shifted
    # the case's images are read once for both files: each file's slices are those of its own preprocessing
    from segqc.fingerprint.preprocessing import preprocess_files

    image_files = sorted((toy_root / "imagesTr").glob("toy0_*"))
    for k, name in enumerate(("toy0_merged.nii.gz", "toy0_shifted.nii.gz")):
        alone = preprocess_files(image_files, toy_data.plan, label_path=degraded / name)
        kept = [i for i in range(alone.n_slices) if alone.required_label()[..., i].any()]
        assert np.array_equal(images[8 * k:8 * k + 8], np.stack([alone.image[..., i] for i in kept]))
    assert np.array_equal(segs[:8] > 0, gts[:8] > 0) and not (segs[:8] == 2).any()
    assert all(np.array_equal(s, np.roll(g, -3, axis=0)) for s, g in zip(segs[8:], gts[8:]))
    both = tmp_path / "both"
    write_image(both / "toy0.nii.gz", merged, truth.geometry)
    write_image(both / "toy0.nii", shifted, truth.geometry)
    _, segs, gts, _ = read(both)
    assert len(segs) == 8 and not (segs == 2).any()  # the dataset's ending (.nii.gz): the merged one


def test_an_extra_folder_without_a_training_case_is_refused_before_anything_is_degraded(toy_root, tmp_path,
                                                                                        monkeypatch):
    def degrade(*args, **kwargs):
        raise AssertionError("the ground truths were degraded before the extra folder was checked")

    monkeypatch.setattr(nnqc_training, "make_training_data", degrade)
    unrelated = tmp_path / "unrelated"
    geometry = read_label_map(toy_root / "labelsTr" / "toy0.nii.gz").geometry
    write_image(unrelated / "someone_else.nii.gz", np.zeros(geometry.shape, np.uint8), geometry)
    with pytest.raises(InputError, match=r"holds no segmentation of the 3 training case\(s\)") as error:
        build_training_data(toy_root, None, TINY, extra_seg_dirs=[unrelated])
    assert error.value.path == unrelated
