"""nnQC training on a generated toy dataset (tiny config): data, losses, checkpoints, resume.

The toy volumes hold an ellipse (label 1) with a smaller one inside (label 2) whose size grows
from the first slice to the last, so the slice ratio carries information, and an image that shows
the labels through noise.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("einops", reason="MONAI's DiffusionModelUNet attention blocks need einops")

from segqc.degrade.targeting import NNQC_BINS  # noqa: E402
from segqc.errors import InputError  # noqa: E402
from segqc.io.images import Geometry, read_label_map, write_image  # noqa: E402
from segqc.qc.nnqc import NnqcConfig, build_training_data, load, load_qc_model, predict_slices, train  # noqa: E402
from segqc.synthetic import paint_ellipsoid  # noqa: E402
from segqc.training import CheckpointError, load_state, save_checkpoint  # noqa: E402

TINY = NnqcConfig.preset("tiny")


def _toy_dataset(root: Path, *, n_cases: int = 3, shape=(40, 40, 8), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        label = np.zeros(shape, dtype=np.uint8)
        cy, cx = shape[0] / 2 + rng.uniform(-3, 3), shape[1] / 2 + rng.uniform(-3, 3)
        for k in range(shape[2]):
            r = 4 + 8 * k / (shape[2] - 1) + rng.uniform(-1, 1)
            paint_ellipsoid(label[..., k], (cy, cx), (r, 0.8 * r), 1)
            paint_ellipsoid(label[..., k], (cy, cx), (0.5 * r, 0.4 * r), 2)
        image = label.astype(np.float32) * 50 + 20 + rng.normal(0, 5, shape).astype(np.float32)
        geometry = Geometry.from_shape(shape, (1.5, 1.5, 5.0))
        write_image(root / "imagesTr" / f"toy{i}_0000.nii.gz", image, geometry)
        write_image(root / "labelsTr" / f"toy{i}.nii.gz", label, geometry)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MR"}, "labels": {"background": 0, "outer": 1, "inner": 2},
        "file_ending": ".nii.gz"}))
    return root


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    return _toy_dataset(tmp_path_factory.mktemp("nnqc_toy"))


@pytest.fixture(scope="module")
def toy_data(toy_root):
    return build_training_data(toy_root, None, TINY, seed=0)


@pytest.fixture(scope="module")
def trained(toy_data, tmp_path_factory) -> Path:
    return train(TINY, toy_data, tmp_path_factory.mktemp("nnqc_run"), threads=1, device="cpu")


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


def test_bad_extra_segmentations_name_the_folder_or_file(toy_root, tmp_path):
    geometry = read_label_map(toy_root / "labelsTr" / "toy0.nii.gz").geometry
    with pytest.raises(InputError, match="not found"):
        build_training_data(toy_root, None, TINY, extra_seg_dirs=[tmp_path / "missing"])
    other = tmp_path / "other"
    write_image(other / "someone_else.nii.gz", np.zeros(geometry.shape, np.uint8), geometry)
    with pytest.raises(InputError, match="holds no segmentation of the 3 training case"):
        build_training_data(toy_root, None, TINY, extra_seg_dirs=[other])
    odd = tmp_path / "odd"
    write_image(odd / "toy0.nii.gz", np.full(geometry.shape, 7, np.uint8), geometry)
    with pytest.raises(InputError, match=r"toy0.nii.gz.*label value\(s\) \[7\]"):
        build_training_data(toy_root, None, TINY, extra_seg_dirs=[odd])
    small = tmp_path / "small"
    write_image(small / "toy0.nii.gz", np.zeros((20, 40, 8), np.uint8),
                Geometry.from_shape((20, 40, 8), (1.5, 1.5, 5.0)))
    with pytest.raises(InputError, match="toy0"):
        build_training_data(toy_root, None, TINY, extra_seg_dirs=[small])


def test_training_loss_decreases_in_every_stage(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    for stage, key in (("ssl", "mse"), ("vae", "dice"), ("ldm", "mse")):
        curve = metrics[stage]["losses"][key]
        assert len(curve) == metrics[stage]["steps"] >= 30
        assert np.mean(curve[-8:]) < 0.8 * np.mean(curve[:8]), (stage, curve)
        assert metrics[stage]["median_step_seconds"] > 0
    assert metrics["vae"]["losses"]["adv"]  # the patch-GAN terms ran after adv_start
    assert metrics["latent_scale"] > 0


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


def test_interrupted_training_resumes_to_the_same_weights(trained, toy_data, tmp_path):
    class Stop(Exception):
        pass

    def interrupt(line: str) -> None:
        if line.startswith("ldm step 28/"):  # after the step-20 checkpoint
            raise Stop

    with pytest.raises(Stop):
        train(TINY, toy_data, tmp_path, threads=1, device="cpu", log=interrupt)
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
