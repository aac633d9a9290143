"""QCResUNet around the network: training targets, balanced epochs, training, checkpoints and the
QC driver's outputs (the network itself: test_qcresunet_model.py). Expected values are worked
out by hand or come from segqc's metric engine on the original grid, never from the code under
test."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from model_files import copy_with_config
from qc_toy_data import make_qc_dataset

from segqc.errors import InputError
from segqc.io.images import read_label_map, write_image
from segqc.metrics.multiclass import multiclass_dice
from segqc.qc.inference import error_bitmask, implied_slice_dice
from segqc.qc.qcresunet.config import QcResUNetConfig, resolve_kernels, resolve_strides
from segqc.qc.qcresunet.train import QcResUNetData, epoch_order, make_batch, true_quality


def _data(segs, gts, targets=None, labels=(0, 1, 2)) -> QcResUNetData:
    from types import SimpleNamespace

    n = len(segs)
    images = [np.zeros((1, *s.shape), dtype=np.float16) for s in segs]
    classes = tuple((str(v), str(v), (v,)) for v in labels if v)
    return QcResUNetData(images, list(segs), list(gts),
                         np.zeros((n, 2, len(labels))) if targets is None else np.asarray(targets),
                         ["c"] * n, ["degraded"] * n, tuple(labels), classes, SimpleNamespace(size=segs[0].shape[-1]),
                         {}, 5.0, 3)


def test_the_error_map_target_is_pred_xor_gt_per_class():
    seg = np.zeros((2, 4, 4), dtype=np.int16)
    gt = np.zeros_like(seg)
    seg[0, 0, :2] = 1     # two voxels of class 1 the truth does not have
    gt[0, 1, 0] = 1       # one voxel of class 1 the segmentation misses
    seg[1, 2, 2], gt[1, 2, 2] = 2, 1   # class swapped: wrong for class 1 AND class 2
    seg[1, 3, 3], gt[1, 3, 3] = 2, 2   # right
    batch = make_batch(_data([seg], [gt]), [0], multiple=2, max_depth=8)
    sem = batch["sem"][0].numpy()  # (K=2, D, H, W)
    expected_1 = np.zeros((2, 4, 4), bool)
    expected_1[0, 0, :2] = expected_1[0, 1, 0] = expected_1[1, 2, 2] = True
    expected_2 = np.zeros((2, 4, 4), bool)
    expected_2[1, 2, 2] = True
    assert np.array_equal(sem[0].astype(bool), expected_1)
    assert np.array_equal(sem[1].astype(bool), expected_2)
    assert batch["query"].shape == (1, 3, 2, 4, 4)
    assert torch.equal(batch["query"][0].argmax(0), torch.from_numpy(seg.astype(np.int64)))


def test_batches_pad_the_slice_axis_to_the_network_multiple_with_background():
    shallow, deep = np.ones((3, 4, 4), np.int16), np.ones((5, 4, 4), np.int16)
    batch = make_batch(_data([shallow, deep], [shallow, deep]), [0, 1], multiple=4, max_depth=16)
    assert batch["image"].shape == (2, 1, 8, 4, 4)
    assert batch["query"][0, 0, 3:].all() and not batch["query"][0, 1, 3:].any()  # padding = background
    assert batch["query"][1, 1, :5].all()


def test_true_quality_by_hand():
    gt = np.zeros((10, 10, 1), dtype=np.uint8)
    seg = np.zeros_like(gt)
    gt[2:6, 2:6] = 1          # 16 voxels of class 1
    seg[2:6, 2:4] = 1         # 8 of them
    gt[7:9, 7:9] = 2          # class 2 only in the truth
    out = true_quality(seg, gt, (1.0, 1.0, 1.0), [(1,), (2,), (3,)], tolerance_mm=0.5)
    assert out[0, 1] == pytest.approx(2 * 8 / (8 + 16))      # Dice class 1
    assert out[0, 2] == 0.0                                  # class 2 missed entirely
    assert out[0, 3] == 1.0 and out[1, 3] == 1.0             # class 3 in neither map
    # multi-class Dice (appendix A): TP 8, FP 0, FN 8 + 4
    assert out[0, 0] == pytest.approx(2 * 8 / (2 * 8 + 0 + 12))
    assert out[1, 2] == 0.0
    assert out[1, 0] == pytest.approx((out[1, 1] + out[1, 2]) / 2)   # NSD all: mean of present classes
    perfect = true_quality(gt, gt, (1.0, 1.0, 1.0), [(1,), (2,)], tolerance_mm=1.0)
    assert np.array_equal(perfect, np.ones((2, 3)))


def test_a_manifest_row_with_an_undefined_nsd_scores_that_class_0_and_a_bad_dice_falls_back():
    """A present class whose NSD the manifest could not give (NaN) is a failure, 0, not a
    perfect 1 or a NaN target; a NaN Dice sends the sample back to the metrics (None)."""
    from segqc.qc.qcresunet.train import quality_from_degrade_row

    gt = np.zeros((6, 6, 2), dtype=np.uint8)
    gt[1:4, 1:4] = 1
    seg = gt.copy()
    seg[4:6, 4:6] = 2  # class 2 only in the segmentation; class 3 in neither map
    row = {"dice": 0.8, "dice_1": 1.0, "nsd_1": 1.0, "dice_2": 0.0, "nsd_2": float("nan"),
           "dice_3": float("nan"), "nsd_3": float("nan")}
    out = quality_from_degrade_row(row, seg, gt, [(1,), (2,), (3,)])
    assert out is not None
    assert out[1, 2] == 0.0 and out[0, 2] == 0.0       # the NaN NSD of a present class: 0
    assert out[0, 3] == 1.0 and out[1, 3] == 1.0       # absent from both maps: 1, whatever the row says
    assert out[1, 0] == pytest.approx((1.0 + 0.0) / 2)  # NSD all: mean over the two present classes
    assert out[0, 0] == 0.8
    assert quality_from_degrade_row({**row, "dice_1": float("nan")}, seg, gt, [(1,), (2,), (3,)]) is None


def test_epochs_are_drawn_evenly_over_the_dice_bins():
    dice = np.concatenate([np.full(90, 0.95), np.full(8, 0.15), np.full(2, 0.55)])  # skewed, 3 bins used
    order = epoch_order(dice, 60, 10, np.random.default_rng(0))
    counts = np.bincount(np.floor(dice[order] * 10).astype(int), minlength=10)
    assert counts[9] == counts[1] == counts[5] == 20
    again = epoch_order(dice, 60, 10, np.random.default_rng(0))
    assert np.array_equal(order, again)


def test_error_bitmask_and_the_per_slice_dice_it_implies():
    rng = np.random.default_rng(3)
    seg = rng.integers(0, 3, size=(4, 8, 8))
    gt = rng.integers(0, 3, size=(4, 8, 8))
    errors = np.stack([(seg == c) ^ (gt == c) for c in (1, 2)])
    mask = error_bitmask(errors)
    assert set(np.unique(mask)) <= {0, 1, 2, 3}
    assert np.array_equal(mask & 1, errors[0].astype(np.uint8))
    assert np.array_equal(mask >> 1, errors[1].astype(np.uint8))
    # exact error maps imply the truth: per-slice Dice = the true multi-class Dice of each slice
    implied = implied_slice_dice(seg, errors, [(1,), (2,)])
    assert implied == pytest.approx([multiclass_dice(seg[z], gt[z]).value for z in range(4)])


def test_strides_follow_the_slice_thickness():
    config = QcResUNetConfig.preset("small")
    assert resolve_strides(config, ndim=3, slice_spacing=10.0, inplane_spacing=1.56) == (
        (1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2))
    assert resolve_strides(config, ndim=3, slice_spacing=1.0, inplane_spacing=1.0) == ((2, 2, 2),) * 4
    assert resolve_strides(config, ndim=2, slice_spacing=0.0, inplane_spacing=0.2) == ((2, 2),) * 4
    fixed = config.with_overrides(strides=[[1, 2, 2]] * 4)
    assert resolve_strides(fixed, ndim=3, slice_spacing=1.0, inplane_spacing=1.0) == ((1, 2, 2),) * 4


def test_kernels_follow_the_slice_thickness_level_by_level():
    config = QcResUNetConfig()  # a config saved before kernels existed reads as the paper's cube
    acdc_strides = ((1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2))
    thin, cube = (1, 3, 3), (3, 3, 3)
    auto = QcResUNetConfig.preset("small")
    assert auto.kernels == "auto" and QcResUNetConfig.preset("paper").kernels == "cube"
    # 10 mm slices, 1.5625 mm pixels: pixels of 1.56, 3.1, 6.25, 12.5, 25 mm at the five levels,
    # slices 10 mm apart until the last down-sampling halves them (20 mm); a slice-axis kernel of 1
    # while the slices are at least twice as far apart as the pixels
    assert resolve_kernels(auto, ndim=3, slice_spacing=10.0, inplane_spacing=1.5625, strides=acdc_strides) == (
        thin, thin, cube, cube, cube)
    # 5 mm slices: only the input's level (5 >= 2 x 1.56; 5 < 2 x 3.1)
    assert resolve_kernels(auto, ndim=3, slice_spacing=5.0, inplane_spacing=1.5625, strides=acdc_strides) == (
        thin, cube, cube, cube, cube)
    assert resolve_kernels(auto, ndim=3, slice_spacing=1.0, inplane_spacing=1.0, strides=((2, 2, 2),) * 4) == (
        (cube,) * 5)
    assert resolve_kernels(auto, ndim=2, slice_spacing=0.0, inplane_spacing=0.2, strides=((2, 2),) * 4) == (
        ((3, 3),) * 5)
    # the paper's cube; an explicit list is taken as it is
    assert resolve_kernels(config, ndim=3, slice_spacing=10.0, inplane_spacing=1.5625, strides=acdc_strides) == (
        (cube,) * 5)
    fixed = config.with_overrides(kernels=[[1, 3, 3]] * 2 + [3] * 3)  # one size: along every axis
    assert resolve_kernels(fixed, ndim=3, slice_spacing=1.0, inplane_spacing=1.0, strides=((2, 2, 2),) * 4) == (
        thin, thin, cube, cube, cube)
    assert QcResUNetConfig.from_dict(fixed.to_dict()) == fixed  # saved and read back as JSON
    with pytest.raises(ValueError, match="axes"):
        resolve_kernels(fixed, ndim=2, slice_spacing=0.0, inplane_spacing=1.0, strides=((2, 2),) * 4)
    for bad in ([[1, 3, 3]] * 4, [[2, 3, 3]] * 5, [[1, 3, 3], [1, 3]] + [3] * 3, "thin"):
        with pytest.raises(ValueError, match="kernels"):
            config.with_overrides(kernels=bad)


def test_a_network_built_for_bfloat16_runs_two_slice_deep_convolutions_in_float32():
    # PyTorch's CPU bfloat16 kernel returns garbage weight gradients for 3D convolutions on inputs
    # two slices deep (training/precision.py, tests/training/test_precision.py): a network built
    # for bf16 training must compute exactly those in float32, and only those
    from segqc.qc.qcresunet.train import build_network
    from segqc.training.precision import autocast

    config = QcResUNetConfig.preset("tiny")
    for precision, deep_two in (("bf16", torch.float32), ("fp32", torch.bfloat16)):
        net = build_network(config, spatial_dims=3, image_channels=1, n_classes=2, strides=[(2, 2, 2)] * 4,
                            precision=precision)
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
        assert len(convs) > 10
        with autocast(torch.device("cpu"), "bf16"):
            for conv in convs:
                assert conv(torch.randn(2, conv.in_channels, 2, 4, 4)).dtype == deep_two
                assert conv(torch.randn(2, conv.in_channels, 3, 4, 4)).dtype == torch.bfloat16


def test_the_precision_is_one_of_auto_bf16_fp32():
    assert QcResUNetConfig.preset("small").precision == "auto"  # bfloat16 where the CPU has it
    assert QcResUNetConfig.preset("tiny").precision == QcResUNetConfig.preset("paper").precision == "fp32"
    assert QcResUNetConfig.preset("tiny").with_overrides(precision="fp32").precision == "fp32"
    with pytest.raises(ValueError, match="precision"):
        QcResUNetConfig.preset("tiny").with_overrides(precision="half")


# ---------------------------------------------------------------------------------------------
# trained on the toy dataset (image = 60 x label + 10: the truth can be read off the image)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from segqc.qc.training_api import train_method

    root = tmp_path_factory.mktemp("qcresunet")
    dataset = make_qc_dataset(root / "data", n_cases=6, shape=(48, 48, 8))
    model_dir = train_method("qcresunet", dataset, root / "run", config="tiny", log=lambda _: None,
                             overrides={"epochs": 25, "samples_per_epoch": 16, "lr": 3e-3, "dropout": 0.0,
                                        "readout_per_case": 6})
    return {"root": root, "dataset": dataset, "model_dir": model_dir}


def test_continuing_a_training_folder_on_other_cases_is_refused_and_leaves_it_as_it_was(trained, tmp_path):
    """Continuing on a subset of the cases (another dataset, or another split) ended in a KeyError
    traceback from the degraded maps of the earlier run's cases."""
    import shutil

    from segqc.errors import InputError
    from segqc.io.split import make_split
    from segqc.qc.training_api import train_method

    subset = tmp_path / "subset"
    for folder in ("imagesTr", "labelsTr"):
        (subset / folder).mkdir(parents=True)
    shutil.copy(trained["dataset"] / "dataset.json", subset)
    for case in ("case0", "case1"):
        shutil.copy(trained["dataset"] / "imagesTr" / f"{case}_0000.nii.gz", subset / "imagesTr")
        shutil.copy(trained["dataset"] / "labelsTr" / f"{case}.nii.gz", subset / "labelsTr")
    run = trained["root"] / "run"

    def snapshot():
        return sorted((str(p.relative_to(run)), p.lstat().st_mtime_ns) for p in run.rglob("*"))

    before = snapshot()
    overrides = {"epochs": 25, "samples_per_epoch": 16, "lr": 3e-3, "dropout": 0.0, "readout_per_case": 6}
    split = make_split([f"case{i}" for i in range(6)], holdout_fraction=0.5, seed=0).save(tmp_path / "split.json")
    for dataset, chosen in ((subset, None), (trained["dataset"], split)):
        with pytest.raises(InputError, match="holds a qcresunet run on other training data") as info:
            train_method("qcresunet", dataset, run, config="tiny", log=lambda _: None, overrides=overrides,
                         split=chosen)
        assert info.value.path == run
    assert snapshot() == before


def test_a_checkpoint_round_trip_equals_the_trained_weights(trained):
    from segqc.qc.qcresunet.predict import load
    from segqc.training import load_state

    state = load_state(trained["root"] / "run" / "stages" / "member0")
    model = load(trained["model_dir"])
    loaded = model.members[0].state_dict()
    assert state is not None and set(loaded) == set(state["weights"]["model"])
    network = [k for k in loaded if not k.startswith("readout.") and k not in ("sem_threshold", "outside_errors")]
    assert all(torch.equal(loaded[k], state["weights"]["model"][k]) for k in network)
    # the read-out is fitted after the training stage and saved with the weights (installed only if it
    # beats the heads; on this toy it need not)
    metrics = json.loads((trained["model_dir"] / "metrics.json").read_text())
    readout = model.members[0].readout
    assert readout is not None and readout.is_fitted == metrics["member0_readout"]["used"]
    assert not state["weights"]["model"]["readout.fitted"]
    config = json.loads((trained["model_dir"] / "config.json").read_text())
    assert config["method"] == "qcresunet"
    # the precision the steps ran at is recorded (float32 unless asked)
    metrics = json.loads((trained["model_dir"] / "metrics.json").read_text())
    assert metrics["precision"] == "fp32"
    assert metrics["member0_readout"]["samples"] == 6 * (6 + 1)  # 6 fresh degraded maps and the truth per case
    # the error-map thresholds are calibrated with the read-out and saved with the weights
    assert loaded["sem_threshold"].tolist() == pytest.approx(metrics["member0_readout"]["sem_threshold"])


def test_a_model_with_thin_kernels_is_saved_loaded_and_refitted_with_them(tmp_path):
    # toy volumes of 3 mm slices and 1 mm pixels: kernels "auto" gives the slice axis a kernel of 1
    # at the input's level only (3 >= 2 x 1; after the stem the pixels are 2 mm); the checkpoint
    # must rebuild exactly those convolutions, for prediction and for a new read-out
    from segqc.qc.qcresunet.predict import load
    from segqc.qc.qcresunet.train import add_readout
    from segqc.qc.training_api import train_method
    from segqc.training import load_state

    dataset = make_qc_dataset(tmp_path / "data", n_cases=3, shape=(48, 48, 8))
    model_dir = train_method("qcresunet", dataset, tmp_path / "run", config="tiny", log=lambda _: None,
                             overrides={"epochs": 1, "samples_per_epoch": 4, "readout_per_case": 2,
                                        "kernels": "auto"})
    expected = [[1, 3, 3]] + [[3, 3, 3]] * 4
    assert json.loads((model_dir / "metrics.json").read_text())["kernels"] == expected
    assert json.loads((model_dir / "config.json").read_text())["config"]["kernels"] == expected
    network = load(model_dir).members[0]
    assert network.full_res_skip[0].weight.shape[2:] == (1, 3, 3)
    assert network.decoder_levels[2].blocks[1][0].weight.shape[2:] == (1, 3, 3)  # back at the input's level
    assert network.decoder_levels[1].blocks[0][0].weight.shape[2:] == (3, 3, 3)
    assert network.stem[0].weight.shape[2:] == (3, 7, 7)  # the stem outputs level 1
    state = load_state(tmp_path / "run" / "stages" / "member0")
    assert state is not None
    trained = state["weights"]["model"]
    loaded = network.state_dict()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained if not k.startswith("readout.")
               and k not in ("sem_threshold", "outside_errors"))
    refitted = load(add_readout(model_dir, dataset, tmp_path / "refit", readout_per_case=1, log=lambda _: None))
    assert refitted.members[0].full_res_skip[0].weight.shape[2:] == (1, 3, 3)


def test_a_rerun_with_the_same_seed_gives_the_same_model(trained, tmp_path):
    from segqc.qc.qcresunet.predict import load
    from segqc.qc.training_api import train_method

    again = train_method("qcresunet", trained["dataset"], tmp_path / "run", config="tiny", log=lambda _: None,
                         overrides={"epochs": 25, "samples_per_epoch": 16, "lr": 3e-3, "dropout": 0.0,
                                        "readout_per_case": 6})
    a, b = load(trained["model_dir"]).members[0].state_dict(), load(again).members[0].state_dict()
    assert all(torch.allclose(a[k], b[k]) for k in a)


def test_add_readout_refits_the_readout_of_a_trained_model_and_keeps_its_network(trained, tmp_path):
    from segqc.qc.qcresunet.predict import load
    from segqc.qc.qcresunet.train import add_readout

    before = load(trained["model_dir"])
    out = add_readout(trained["model_dir"], trained["dataset"], tmp_path / "refit", readout_per_case=3,
                      readout_fourier=32, log=lambda _: None)
    after = load(out)
    a, b = before.members[0].state_dict(), after.members[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("readout."))  # the network is unchanged
    assert after.config.readout_per_case == 3 and after.config.readout_fourier == 32
    assert after.members[0].readout is not None and after.members[0].readout.fourier == 32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["member0_readout"]["samples"] == 6 * (3 + 1)  # 3 fresh maps and the truth per case
    assert after.members[0].readout.is_fitted == metrics["member0_readout"]["used"]
    assert "member0" in metrics  # the training's record is kept
    with pytest.raises(InputError, match="readout_per_case"):
        add_readout(trained["model_dir"], trained["dataset"], tmp_path / "none", readout_per_case=0)


def test_prediction_runs_at_the_configs_precision(trained, tmp_path):
    """A model whose config asks for ``bf16`` predicts in bfloat16 (``auto`` does so where the CPU
    has it natively; its read-out is fitted the same way); the estimates stay within a few
    hundredths of float32."""
    from segqc.qc.qcresunet.predict import assess_volume, load
    from segqc.training.precision import resolve_precision

    fp32 = load(trained["model_dir"])
    assert fp32.precision == "fp32"  # the tiny preset pins float32
    auto = load(_with_config(trained["model_dir"], tmp_path / "auto", precision="auto"))
    assert auto.precision == resolve_precision("auto", torch.device("cpu"))
    bf16 = load(_with_config(trained["model_dir"], tmp_path / "bf16", precision="bf16"))
    assert bf16.precision == "bf16"
    rng = np.random.default_rng(0)
    segs = rng.integers(0, 3, (8, 32, 32))
    images = (60.0 * segs + 10.0 + rng.normal(0, 5, segs.shape)).astype(np.float32)[:, None]
    a, b = assess_volume(fp32, images, segs), assess_volume(bf16, images, segs)
    assert np.abs(a["dice"] - b["dice"]).max() < 0.05 and np.abs(a["nsd"] - b["nsd"]).max() < 0.05
    assert a["errors"] is not None and b["errors"] is not None
    assert np.abs(a["errors"] - b["errors"]).mean() < 0.02
    assert not np.array_equal(a["errors"], b["errors"])  # it did run at the lower precision


def _with_config(model_dir, folder, **fields):
    return copy_with_config(model_dir, folder, lambda config: config.update(fields))


def test_test_time_flips_make_the_estimates_mirror_equivariant(trained, tmp_path):
    """With 4 passes every in-plane mirror is covered, so a mirrored volume gets the same mean
    Dice / NSD estimates and the mirrored error maps (maps not mirrored back, or other axes
    mirrored, break this); one pass does not have that symmetry. The config's ``test_flips`` is
    the default number of passes."""
    from segqc.qc.qcresunet.predict import assess_volume, load

    rng = np.random.default_rng(1)
    segs = np.zeros((8, 32, 32), dtype=np.int64)
    segs[:, 4:20, 6:14] = 1  # off-centre and lopsided: no mirror symmetry
    segs[:, 10:14, 14:28] = 2
    images = (60.0 * segs + 10.0 + rng.normal(0, 5, segs.shape)).astype(np.float32)[:, None]
    one = load(trained["model_dir"])
    four = load(_with_config(trained["model_dir"], tmp_path / "four", test_flips=4))
    assert one.config.test_flips == 1 and four.config.test_flips == 4
    for axes in ((-1,), (-2,), (-1, -2)):
        mirrored_images, mirrored_segs = np.flip(images, axes).copy(), np.flip(segs, axes).copy()
        a, b = assess_volume(four, images, segs), assess_volume(four, mirrored_images, mirrored_segs)
        assert a["dice"].shape == (4, 3)  # one row per pass
        for metric in ("dice", "nsd"):
            assert b[metric].mean(axis=0) == pytest.approx(a[metric].mean(axis=0), abs=1e-5)
        assert np.abs(b["errors"] - np.flip(a["errors"], axes)).max() < 1e-5
    single = assess_volume(one, images, segs)
    single_mirrored = assess_volume(one, np.flip(images, -1).copy(), np.flip(segs, -1).copy())
    assert single["dice"].shape == (1, 3)
    assert np.abs(single_mirrored["errors"] - np.flip(single["errors"], -1)).max() > 1e-3
    # each pass is the single-pass estimate of one mirrored volume; passes=4 overrides the config
    singles = [assess_volume(one, np.flip(images, axes).copy(), np.flip(segs, axes).copy())["dice"][0]
               for axes in ((), (-1,), (-2,), (-1, -2))]
    assert assess_volume(one, images, segs, passes=4)["dice"] == pytest.approx(np.stack(singles), abs=1e-5)
    assert assess_volume(four, images, segs, passes=1)["dice"] == pytest.approx(single["dice"], abs=1e-6)
    with pytest.raises(ValueError, match="test_flips"):
        QcResUNetConfig(test_flips=3)


def test_qc_predict_samples_are_qcresunets_mirrored_passes(trained, tmp_path):
    """``--samples 4``: the estimate is the mean of the four passes and the spread their standard
    deviation; a count the model cannot run is refused before any case runs."""
    from segqc.fingerprint.preprocessing import preprocess_files
    from segqc.qc.inference import QcSettings, qc_folder
    from segqc.qc.qcresunet.predict import assess_volume, load

    dataset = trained["dataset"]
    images = dataset / "imagesTr"
    table, _, _ = qc_folder(trained["model_dir"], images, dataset / "labelsTr", tmp_path / "qc",
                            settings=QcSettings(metrics=("dice",), samples=4))
    row = table[(table["case"] == "case0") & (table["label"] == "all")].iloc[0]
    model = load(trained["model_dir"])
    prepared = preprocess_files([images / "case0_0000.nii.gz"], model.plan,
                                label_path=dataset / "labelsTr" / "case0.nii.gz")
    passes = assess_volume(model, np.moveaxis(prepared.image, -1, 0),
                           np.moveaxis(prepared.required_label(), -1, 0).astype(np.int64), passes=4)["dice"][:, 0]
    assert row["estimate"] == pytest.approx(passes.mean(), abs=1e-6)
    assert row["spread"] == pytest.approx(passes.std(ddof=1), abs=1e-6) and row["spread"] > 0
    with pytest.raises(InputError, match="--samples 1, 2 or 4"):
        qc_folder(trained["model_dir"], images, dataset / "labelsTr", tmp_path / "bad",
                  settings=QcSettings(metrics=("dice",), samples=3))


def _shifted(label, shift):
    return np.roll(label, shift, axis=0)


def test_qc_predict_writes_dice_nsd_and_error_maps_on_the_input_grid(trained, tmp_path):
    from segqc.qc.inference import QcSettings, qc_folder

    dataset = trained["dataset"]
    segs = tmp_path / "segs"
    for path in sorted((dataset / "labelsTr").glob("case[0-1].nii.gz")):
        label = read_label_map(path)
        write_image(segs / path.name, label.array, label.geometry)                       # perfect
        write_image(segs / path.name.replace(".nii", "_bad.nii"), _shifted(label.array, 14), label.geometry)
    images = tmp_path / "images"
    images.mkdir()
    for path in (dataset / "imagesTr").glob("case[0-1]_0000.nii.gz"):
        shutil.copy(path, images / path.name)
        shutil.copy(path, images / path.name.replace("_0000", "_bad_0000"))
    table, work, report = qc_folder(trained["model_dir"], images, segs, tmp_path / "qc",
                                    settings=QcSettings(metrics=("dice", "nsd")))
    assert set(table["metric"]) == {"dice", "nsd"}
    assert set(table["label"]) == {"all", "1", "2"}
    assert set(table[table["label"] == "1"]["label_name"]) == {"outer"}
    dice = table[(table["metric"] == "dice") & (table["label"] == "all")].set_index("case")["estimate"]
    for case in ("case0", "case1"):
        assert dice[case] > dice[f"{case}_bad"] + 0.1   # the perfect segmentation is estimated better
    errors = read_label_map(tmp_path / "qc" / "errors" / "case0_bad.nii.gz")
    seg = read_label_map(segs / "case0_bad.nii.gz")
    assert errors.geometry == seg.geometry and errors.array.max() <= 3
    slices = pd.read_csv(tmp_path / "qc" / "qc_slices.csv")
    assert set(slices["case"]) == set(table["case"]) and slices["estimate"].between(0, 1).all()
    assert not (tmp_path / "qc" / "pgt").exists()


def test_the_report_and_review_read_a_qcresunet_output(trained, tmp_path):
    from segqc.qc.inference import QcSettings, qc_folder
    from segqc.report.html import build_report
    from segqc.review.worklist import load_worklist

    dataset = trained["dataset"]
    qc_folder(trained["model_dir"], dataset / "imagesTr", dataset / "labelsTr", tmp_path / "qc",
              settings=QcSettings(metrics=("dice", "nsd")))
    page = build_report(tmp_path / "qc", tmp_path / "r.html").read_text()
    assert page.count('class="thumb') >= 6 and "estimated wrong" in page
    worklist = load_worklist(tmp_path / "qc")
    assert worklist.layers(worklist.cases[0]) == ["image", "segmentation", "error"]


def test_a_model_dir_of_another_method_is_refused(trained, tmp_path):
    from segqc.qc.qcresunet.predict import load
    from segqc.training import CheckpointError

    other = tmp_path / "other"
    shutil.copytree(trained["model_dir"], other)
    meta = json.loads((other / "config.json").read_text())
    meta["method"] = "nnqc"
    (other / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="qcresunet"):
        load(other)



# ---------------------------------------------------------------------------------------------
# benchmark additions: failure AUROC, MAE per bin, DSC_SEM
# ---------------------------------------------------------------------------------------------

def test_failure_auroc_by_hand():
    from segqc.report.agreement import failure_auroc

    true = np.array([0.2, 0.5, 0.9, 0.95, 0.8])          # failures: the first two (< 0.7)
    perfect = np.array([0.1, 0.3, 0.9, 0.95, 0.85])       # every failure estimated below every good case
    assert failure_auroc(perfect, true) == 1.0
    assert failure_auroc(-perfect, true) == 0.0
    # failed {0.5, 0.8} vs good {0.6, 0.8, 0.9}: pairs good > failed: (0.6>0.5, 0.8>0.5, 0.9>0.5, 0.9>0.8)
    # = 4, one tie (0.8, 0.8) = 0.5 -> 4.5 / 6
    assert failure_auroc(np.array([0.5, 0.8, 0.6, 0.8, 0.9]), true) == pytest.approx(4.5 / 6)
    assert np.isnan(failure_auroc(np.array([0.9, 0.9]), np.array([0.95, 0.99])))


def test_mae_by_bin_by_hand():
    from segqc.report.agreement import mae_by_bin

    pairs = pd.DataFrame({"label": "all", "metric": "dice", "estimate": [0.1, 0.3, 0.95, 0.5],
                          "true": [0.05, 0.05, 1.0, 7.0]})   # 7.0 is outside [0, 1]: left out
    table = mae_by_bin(pairs).set_index("bin_low")
    assert table.loc[0.0, "n"] == 2 and table.loc[0.0, "mae"] == pytest.approx((0.05 + 0.25) / 2)
    assert table.loc[0.9, "n"] == 1 and table.loc[0.9, "mae"] == pytest.approx(0.05)
    assert table["n"].sum() == 3


def test_dsc_sem_by_hand(tmp_path):
    from segqc.io.geometry import Geometry
    from segqc.qc.assessment import error_map_agreement

    geometry = Geometry.from_shape((6, 6, 1))
    seg = np.zeros((6, 6, 1), np.uint8)
    gt = np.zeros_like(seg)
    seg[0:2, 0:2] = 1          # class 1: 4 voxels wrong (not in gt)
    gt[4:6, 4:6] = 2           # class 2: 4 voxels wrong (missed)
    errors = np.zeros_like(seg)
    errors[0:2, 0:1] = 1       # 2 of the 4 class-1 errors (bit 0)
    errors[4:6, 4:6] |= 2      # all 4 class-2 errors (bit 1) ...
    errors[3, 3] |= 2          # ... and one false alarm
    for folder, array in (("segs", seg), ("gt", gt), ("qc/errors", errors)):
        write_image(tmp_path / folder / "case0.nii.gz", array, geometry)
    (tmp_path / "qc" / "report.json").write_text(json.dumps({"cases": ["case0"]}))
    pd.DataFrame({"case": "case0", "label": ["all", "1", "2"], "label_name": ["all", "A", "B"], "metric": "dice",
                  "estimate": 0.5}).to_csv(tmp_path / "qc" / "qc.csv", index=False)
    table = error_map_agreement(tmp_path / "qc", tmp_path / "segs", tmp_path / "gt").set_index("label")
    assert table.loc["1", "dsc_sem"] == pytest.approx(2 * 2 / (2 + 4))
    assert table.loc["2", "dsc_sem"] == pytest.approx(2 * 4 / (5 + 4))
    assert table.loc["2", "label_name"] == "B"


def test_benchmark_reports_auroc_bins_and_error_maps(trained, tmp_path):
    from segqc.qc.assessment import benchmark_qc
    from segqc.qc.inference import QcSettings

    dataset = trained["dataset"]
    segs = tmp_path / "segs"
    for i, path in enumerate(sorted((dataset / "labelsTr").glob("*.nii.gz"))):
        label = read_label_map(path)
        write_image(segs / path.name, _shifted(label.array, 0 if i % 2 else 14), label.geometry)
    benchmark_qc(trained["model_dir"], dataset / "imagesTr", segs, dataset / "labelsTr", tmp_path / "bench",
                 settings=QcSettings(metrics=("dice", "nsd")))
    report = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    assert report["failure_detection"]["failed"] == 3 and report["failure_detection"]["n"] == 6
    assert 0.0 <= report["failure_detection"]["auroc"] <= 1.0
    assert {row["label"] for row in report["error_maps"]} == {"1", "2"}
    sem = pd.read_csv(tmp_path / "bench" / "error_maps.csv", dtype={"label": str})
    assert len(sem) == 12 and sem["dsc_sem"].between(0, 1).all()
    assert (tmp_path / "bench" / "benchmark_bins.csv").is_file()
    # every estimate the model writes is scored, the subject-level NSD (label all) included
    pairs = pd.read_csv(tmp_path / "bench" / "pairs.csv", dtype={"label": str})
    assert set(zip(pairs["label"], pairs["metric"])) == {(label, metric) for label in ("all", "1", "2")
                                                         for metric in ("dice", "nsd")}
    summary = pd.read_csv(tmp_path / "bench" / "benchmark.csv", dtype={"label": str})
    assert ((summary["label"] == "all") & (summary["metric"] == "nsd")).sum() == 1


def test_the_training_data_hold_every_ground_truth_as_a_perfect_sample(tmp_path):
    from segqc.qc.qcresunet.train import build_training_data

    dataset = make_qc_dataset(tmp_path / "data", n_cases=3, shape=(32, 32, 4))
    config = QcResUNetConfig.preset("tiny", degraded_per_case=2)
    data = build_training_data(dataset, None, config, tmp_path / "work")
    perfect = [i for i, source in enumerate(data.sources) if source == "ground truth"]
    assert sorted(data.cases[i] for i in perfect) == ["case0", "case1", "case2"]
    assert np.array_equal(data.targets[perfect], np.ones((3, 2, 3)))
    assert all(np.array_equal(data.segs[i], data.gts[i]) for i in perfect)
    assert data.sources.count("degraded") == 6
    without = build_training_data(dataset, None, config.with_overrides(ground_truth_samples=False), tmp_path / "work")
    assert "ground truth" not in without.sources


def test_the_targets_of_degraded_maps_equal_the_metrics_computed_from_their_files(tmp_path):
    """The degraded samples' targets come from the degrade manifest (not recomputed); each must
    equal segqc's metrics of that very file against its ground truth, in the samples' order."""
    from segqc.qc.qcresunet.train import build_training_data, quality_from_degrade_row

    dataset = make_qc_dataset(tmp_path / "data", n_cases=3, shape=(32, 32, 4))
    config = QcResUNetConfig.preset("tiny", degraded_per_case=3)
    data = build_training_data(dataset, None, config, tmp_path / "work")
    manifest = pd.read_csv(tmp_path / "work" / "degraded" / "manifest.csv")
    degraded = [i for i, source in enumerate(data.sources) if source == "degraded"]
    assert len(degraded) == len(manifest) == 9
    for i, row in zip(degraded, manifest.itertuples()):
        assert data.cases[i] == row.case
        seg = read_label_map(tmp_path / "work" / "degraded" / row.file)
        gt = read_label_map(dataset / "labelsTr" / f"{row.case}.nii.gz")
        expected = true_quality(seg.array, gt.array, gt.geometry.spacing, [(1,), (2,)],
                                tolerance_mm=config.tolerance_mm)
        np.testing.assert_allclose(data.targets[i], expected, rtol=0, atol=1e-12)
    assert len({float(data.targets[i][0, 0]) for i in degraded}) > 3  # distinct maps, not one repeated
    # a class made of two label values has no manifest column: the caller computes it
    assert quality_from_degrade_row(manifest.iloc[0].to_dict(), seg.array, gt.array, [(1, 2)]) is None


def test_the_training_data_count_a_stray_blob_outside_the_window(tmp_path):
    from segqc.qc.qcresunet.train import build_training_data

    dataset = make_qc_dataset(tmp_path / "data", n_cases=2, shape=(64, 64, 4))
    truth = read_label_map(dataset / "labelsTr" / "case0.nii.gz")
    stray = truth.array.copy()
    stray[0:3, 0:3, :] = 1  # 36 class-1 voxels in a corner, > 16 px from the ellipse's 32-px window
    write_image(tmp_path / "segs" / "case0.nii.gz", stray, truth.geometry)
    config = QcResUNetConfig.preset("tiny", degraded_per_case=1)  # 32-px window
    data = build_training_data(dataset, None, config, tmp_path / "work", extra_seg_dirs=[tmp_path / "segs"])
    real = data.sources.index(str(tmp_path / "segs"))
    assert data.outside[real].tolist() == [[36, 36], [0, 0]]  # all wrong; class 2 has nothing outside
    perfect = [i for i, source in enumerate(data.sources) if source == "ground truth"]
    assert len(data.outside) == data.n_samples and all(data.outside[i][:, 1].sum() == 0 for i in perfect)


def _readout_case(targets_from):
    """An untrained tiny network with a read-out and 24 toy samples of 6 volumes whose targets are
    ``targets_from(features)`` (features: what the read-out reads)."""
    from segqc.qc.qcresunet.train import build_network

    config = QcResUNetConfig.preset("tiny", dropout=0.0)
    torch.manual_seed(0)
    network = build_network(config, spatial_dims=3, image_channels=1, n_classes=2,
                            strides=((1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)))
    rng = np.random.default_rng(0)
    segs = [rng.integers(0, 3, (2, 32, 32)).astype(np.int16) for _ in range(24)]
    data = _data(segs, segs)
    data.images = [rng.normal(size=(1, 2, 32, 32)).astype(np.float16) for _ in segs]
    data.cases = [f"v{i // 4}" for i in range(24)]
    network.eval()
    features = []
    for i in range(24):
        batch = make_batch(data, [i], multiple=2, max_depth=8)
        features.append(network.readout_features(batch["image"], batch["query"]).numpy()[0])
    data.targets = np.asarray(targets_from(np.stack(features)), dtype=float).reshape(24, 2, 3)
    return config, network, data


def test_the_readout_is_installed_only_where_it_beats_the_heads():
    from segqc.qc.qcresunet.train import fit_readout

    # targets that are a linear function of the pooled error-branch features: the read-out learns them
    def linear(x):
        return np.clip(0.5 + 0.2 * (x[:, :6] - x[:, :6].mean(0)) / (x[:, :6].std(0) + 1e-6), 0, 1)

    config, network, data = _readout_case(linear)
    record = fit_readout(network, data, config, torch.device("cpu"))
    assert record["used"] and record["readout_cv_mse"] < record["heads_mse"]
    assert network.readout is not None and network.readout.is_fitted
    batch = make_batch(data, [3], multiple=2, max_depth=8)
    with torch.no_grad():
        out = network(batch["image"], batch["query"])
    assert out.dice is not None and np.allclose(out.dice.numpy()[0], data.targets[3, 0], atol=0.05)

    # targets that are the heads' own estimates: the heads are exact, the read-out is left out
    config, network, data = _readout_case(lambda x: x[:, -6:])
    record = fit_readout(network, data, config, torch.device("cpu"))
    assert not record["used"] and record["heads_mse"] < 1e-12
    assert network.readout is not None and not network.readout.is_fitted


def test_the_members_kept_are_those_whose_estimates_of_the_readout_samples_are_best():
    from segqc.qc.qcresunet.train import best_members

    records = [{"used": True, "readout_cv_mse": 0.0159, "heads_mse": 0.03},   # a weak seed
               {"used": True, "readout_cv_mse": 0.0112, "heads_mse": 0.03},
               {"used": False, "readout_cv_mse": 0.02, "heads_mse": 0.0113},  # its heads stayed in charge
               {"used": True, "readout_cv_mse": 0.0120, "heads_mse": 0.0100}]  # the read-out is what it uses
    assert best_members(records, 1) == [1]
    assert best_members(records, 2) == [1, 2]
    assert best_members(records, 3) == [1, 2, 3]
    assert best_members(records, 0) == [0, 1, 2, 3] and best_members(records, 4) == [0, 1, 2, 3]
    tied = [{"used": True, "readout_cv_mse": 0.01}] * 3
    assert best_members(tied, 2) == [0, 1]
    with pytest.raises(ValueError, match="keep_members"):
        QcResUNetConfig(members=2, keep_members=3)
    with pytest.raises(ValueError, match="read-out"):
        QcResUNetConfig(members=2, keep_members=1, readout_per_case=0)


def test_a_training_with_keep_members_saves_the_members_with_the_best_readout(tmp_path):
    from segqc.qc.qcresunet.predict import load
    from segqc.qc.training_api import train_method
    from segqc.training import load_state

    dataset = make_qc_dataset(tmp_path / "data", n_cases=3, shape=(48, 48, 8))
    model_dir = train_method("qcresunet", dataset, tmp_path / "run", config="tiny", log=lambda _: None,
                             overrides={"epochs": 1, "samples_per_epoch": 4, "readout_per_case": 2,
                                        "members": 3, "keep_members": 2})
    metrics = json.loads((model_dir / "metrics.json").read_text())
    errors = []
    for m in range(3):
        record = metrics[f"member{m}_readout"]
        errors.append(record["readout_cv_mse"] if record["used"] else record["heads_mse"])
    worst = int(np.argmax(errors))
    expected = [m for m in range(3) if m != worst]
    assert metrics["kept_members"] == expected
    model = load(model_dir)
    assert len(model.members) == 2
    for saved, m in zip(model.members, expected):
        state = load_state(tmp_path / "run" / "stages" / f"member{m}")
        assert state is not None
        trained = state["weights"]["model"]
        weights = saved.state_dict()
        assert all(torch.equal(weights[k], trained[k]) for k in trained if not k.startswith("readout.")
                   and k not in ("sem_threshold", "outside_errors"))
        # each kept member carries its own calibrated thresholds
        assert weights["sem_threshold"].tolist() == pytest.approx(metrics[f"member{m}_readout"]["sem_threshold"])
    # ... and votes with them: the QC driver gets every member's thresholds and the paper's vote
    from segqc.qc.qcresunet.predict import load_qc_model

    size = model.config.size
    assessment = load_qc_model(model_dir).assess(np.zeros((4, 1, size, size), np.float32),
                                                 np.zeros((4, size, size), np.int64), np.ones(4), 1)
    assert assessment.error_fusion == "vote"
    assert np.shape(assessment.error_threshold) == (2, len(model.classes))
    np.testing.assert_allclose(assessment.error_threshold,
                               [metrics[f"member{m}_readout"]["sem_threshold"] for m in expected], rtol=1e-6)


def test_the_fourier_correction_is_installed_only_where_it_lowers_the_cross_validated_error():
    from segqc.qc.qcresunet.train import fit_readout

    def bump(x):  # a non-linear function of the pooled features
        z = (x[:, :6] - x[:, :6].mean(0)) / (x[:, :6].std(0) + 1e-6)
        return np.clip(0.5 + 0.4 * np.exp(-z ** 2), 0, 1)

    config, network, data = _readout_case(bump)
    assert config.readout_corrections == 2 and config.readout_fourier > 0
    assert network.readout is not None and network.readout.fourier == 2 * config.readout_fourier
    record = fit_readout(network, data, config, torch.device("cpu"))
    assert len(record["corrections"]) == 2
    errors = []
    for part in record["corrections"]:
        best_corrected = min(part["cv_mse"].values())
        assert part["cv_mse"][str(part["gamma"])] == best_corrected
        assert part["used"] == (best_corrected < record["linear_cv_mse"])
        errors.append(min(best_corrected, record["linear_cv_mse"]))
    assert record["correction"] == any(part["used"] for part in record["corrections"])
    assert record["readout_cv_mse"] == pytest.approx(np.mean(errors))
    assert record["used"] and record["correction"]
    batch = make_batch(data, [5], multiple=2, max_depth=8)
    with torch.no_grad():
        corrected = network(batch["image"], batch["query"]).dice
        network.readout.fourier_weight.zero_()
        network.readout.fourier_bias.zero_()
        assert not torch.equal(network(batch["image"], batch["query"]).dice, corrected)  # the correction is in use


def test_averaged_corrections_are_the_mean_of_corrections_fitted_on_their_own_feature_draws():
    """With three corrections the network's estimate is the linear read-out plus the mean of
    three corrections fitted independently here, each on the features of its own seed; the
    read-out holds their features stacked."""
    from segqc.qc.qcresunet.train import build_network, correction_seed, fit_readout
    from segqc.training.fourier import fit_fourier_correction
    from segqc.training.ridge import fit_ridge

    def bump(x):
        z = (x[:, :6] - x[:, :6].mean(0)) / (x[:, :6].std(0) + 1e-6)
        return np.clip(0.5 + 0.4 * np.exp(-z ** 2), 0, 1)

    config, network, data = _readout_case(bump)
    config = dataclasses.replace(config, readout_corrections=3)
    torch.manual_seed(0)
    network = build_network(config, spatial_dims=3, image_channels=1, n_classes=2,
                            strides=((1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)))
    assert network.readout is not None and network.readout.fourier == 3 * config.readout_fourier
    record = fit_readout(network, data, config, torch.device("cpu"))
    assert len(record["corrections"]) == 3 and all(c["used"] for c in record["corrections"])
    assert record["readout_cv_mse"] == pytest.approx(np.mean([c["cv_mse"][str(c["gamma"])]
                                                              for c in record["corrections"]]))
    network.eval()
    features = []
    for i in range(24):
        batch = make_batch(data, [i], multiple=2, max_depth=8)
        features.append(network.readout_features(batch["image"], batch["query"]).numpy()[0])
    x = np.stack(features).astype(np.float64)
    y = data.targets.reshape(24, -1)
    linear = fit_ridge(x, y, data.cases)
    parts = [fit_fourier_correction(linear.standardise(x), y - linear.predict(x), data.cases,
                                    n_features=config.readout_fourier, seed=correction_seed(config.seed, k))
             for k in range(3)]
    assert len({p.frequencies.tobytes() for p in parts}) == 3  # three draws of features
    expected = np.clip(linear.predict(x) + np.mean([p.predict(linear.standardise(x)) for p in parts], axis=0), 0, 1)
    with torch.no_grad():
        got = np.concatenate([network(make_batch(data, [i], multiple=2, max_depth=8)["image"],
                                      make_batch(data, [i], multiple=2, max_depth=8)["query"]).dice.numpy()
                              for i in range(24)])
    assert np.allclose(got, expected[:, :3], atol=1e-4)
    single = np.clip(linear.predict(x) + parts[0].predict(linear.standardise(x)), 0, 1)
    assert not np.allclose(got, single[:, :3], atol=1e-3)  # the other two parts are in use


def test_error_map_thresholds_by_hand():
    """Class 1's errors are exactly the voxels with probability >= 0.3: that threshold gives
    Dice 1 and wins; class 2 has no errors and every probability < 0.05: every threshold is
    perfect and the tie goes to 0.5; class 3's truth is the probability >= 0.7 voxels."""
    from segqc.qc.qcresunet.train import THRESHOLD_GRID, best_error_thresholds, threshold_counts

    rng = np.random.default_rng(0)
    counts = []
    for _ in range(4):
        probs = torch.from_numpy(rng.uniform(0, 1, (3, 2, 8, 8)).astype(np.float32))
        probs[1] *= 0.04
        truth = torch.stack([probs[0] >= 0.3, torch.zeros_like(probs[1], dtype=torch.bool), probs[2] >= 0.7])
        c = threshold_counts(probs, truth)
        k = int(np.flatnonzero(np.isclose(THRESHOLD_GRID, 0.5))[0])
        marked = probs[0] >= 0.5
        assert c[0, k].tolist() == [int((marked & truth[0]).sum()), int(marked.sum()), int(truth[0].sum())]
        counts.append(c)
    thresholds, dice = best_error_thresholds(np.stack(counts))
    assert thresholds.tolist() == pytest.approx([0.3, 0.5, 0.7])
    assert dice["best"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert dice["half"][0] < 1.0 and dice["half"][1] == 1.0 and dice["half"][2] < 1.0


def test_fit_readout_calibrates_the_thresholds_the_qc_driver_uses():
    from segqc.qc.inference import QcSettings, _assess_case
    from segqc.qc.model_api import Assessment, QcModel
    from segqc.qc.qcresunet.train import fit_readout

    config, network, data = _readout_case(lambda x: np.full((len(x), 6), 0.5))
    data.gts = [np.where(seg == 1, 0, seg) for seg in data.segs]  # class 1 entirely wrong, class 2 right
    record = fit_readout(network, data, config, torch.device("cpu"))
    assert network.sem_threshold.tolist() == pytest.approx(record["sem_threshold"])
    assert len(record["sem_dice"]) == 2 and all(b >= h for b, h in zip(record["sem_dice"], record["sem_dice_at_half"]))

    # the driver marks a voxel where the members' mean probability reaches the class's threshold
    probs = np.zeros((2, 2, 3, 4, 4))  # (members, classes, slices, H, W)
    probs[0, 0, 0, 0, :] = [0.1, 0.3, 0.5, 0.9]
    probs[1, 0, 0, 0, :] = [0.1, 0.3, 0.5, 0.9]
    probs[:, 1, 1, 1, :] = 0.45
    assessment = Assessment(dice=np.full((2, 3), 0.5), nsd=np.full((2, 3), 0.5), errors=probs,
                            error_threshold=np.array([0.3, 0.5]))
    model = QcModel(method="qcresunet", plan=None, labels=(0, 1, 2), fingerprint=None,  # type: ignore[arg-type]
                    assess=lambda *_: assessment, metrics=("dice",))
    segs = np.zeros((3, 4, 4), dtype=np.int64)
    _, _, maps = _assess_case(model, "c", np.zeros((3, 1, 4, 4)), segs, np.ones(3), QcSettings(metrics=("dice",)),
                              lambda a, dtype: a, original_seg=segs)
    errors = maps["errors"]
    assert (errors[0, 0] & 1).tolist() == [0, 1, 1, 1]  # class 1 at 0.3: 0.3, 0.5 and 0.9 are marked
    assert not (errors & 2).any()  # class 2's 0.45 stays below its 0.5


def test_the_readout_is_fitted_on_segmentations_the_network_was_not_trained_on(tmp_path):
    from segqc.qc.qcresunet.train import build_readout_data, build_training_data

    dataset = make_qc_dataset(tmp_path / "data", n_cases=3, shape=(32, 32, 4))
    config = QcResUNetConfig.preset("tiny", degraded_per_case=2, readout_per_case=2)
    training = build_training_data(dataset, None, config, tmp_path / "train")
    readout = build_readout_data(dataset, None, config, tmp_path / "readout")
    assert readout.sources.count("degraded") == 6 and readout.sources.count("ground truth") == 3
    seen = [s for s, source in zip(training.segs, training.sources) if source == "degraded"]
    fresh = [s for s, source in zip(readout.segs, readout.sources) if source == "degraded"]
    assert not any(np.array_equal(a, b) for a in fresh for b in seen)


def test_outside_window_counts_and_rates_by_hand():
    from segqc.qc.qcresunet.train import outside_error_rates, outside_window_counts

    seg = np.zeros((6, 6), dtype=np.int16)
    gt = np.zeros_like(seg)
    window = np.zeros((6, 6), dtype=bool)
    window[1:5, 1:5] = True
    seg[2:4, 2:4] = 1  # inside: never counted
    seg[0, 0:3] = 1  # 3 class-1 voxels outside, 1 of them right
    gt[0, 2] = 1
    seg[5, 5] = 2  # 1 class-2 voxel outside, right (the truth says 2 there)
    gt[5, 5] = 2
    counts = outside_window_counts(seg, gt, window, [(1,), (2,), (1, 2)])
    assert counts.tolist() == [[3, 2], [1, 0], [4, 2]]
    data = _data([seg[None]] * 2, [gt[None]] * 2)
    data.classes = (("1", "a", (1,)), ("2", "b", (2,)), ("3", "c", (3,)))
    data.outside = [np.array([[3, 2], [1, 0], [0, 0]]), np.array([[1, 1], [3, 1], [0, 0]])]
    rates = outside_error_rates(data)
    assert rates[:2].tolist() == pytest.approx([3 / 4, 1 / 4]) and np.isnan(rates[2])  # pooled; none outside: NaN


def test_fit_readout_marks_a_class_outside_the_window_only_where_most_such_voxels_are_wrong():
    from segqc.qc.inference import QcSettings, _assess_case
    from segqc.qc.model_api import Assessment, QcModel
    from segqc.qc.qcresunet.train import fit_readout

    config, network, data = _readout_case(lambda x: np.full((len(x), 6), 0.5))
    data.outside = [np.array([[10, 9], [10, 2]]) for _ in data.segs]  # class 1: 90 % wrong, class 2: 20 %
    record = fit_readout(network, data, config, torch.device("cpu"))
    assert network.outside_errors.tolist() == [1.0, 0.0]
    assert record["outside_error_rate"] == pytest.approx([0.9, 0.2])

    # the driver marks those voxels beyond the window on the input grid, and nothing else there
    segs = np.zeros((1, 4, 4), dtype=np.int64)
    original = np.zeros((8, 8, 1), dtype=np.int64)  # the input grid; the window is its [2:6, 2:6]
    original[0, 0], original[7, 7], original[3, 3] = 1, 2, 1

    def restore(a, dtype):
        out = np.zeros((8, 8, 1), dtype=dtype)
        out[2:6, 2:6] = np.moveaxis(a, 0, -1)
        return out

    assessment = Assessment(dice=np.full((1, 3), 0.5), nsd=np.full((1, 3), 0.5), errors=np.zeros((1, 2, 1, 4, 4)),
                            outside_errors=np.array([True, False]))
    model = QcModel(method="qcresunet", plan=None, labels=(0, 1, 2), fingerprint=None,  # type: ignore[arg-type]
                    assess=lambda *_: assessment, metrics=("dice",))
    _, _, maps = _assess_case(model, "c", np.zeros((1, 1, 4, 4)), segs, np.ones(1), QcSettings(metrics=("dice",)),
                              restore, original_seg=original)
    marked = np.argwhere(maps["errors"][..., 0] > 0).tolist()
    assert marked == [[0, 0]] and maps["errors"][0, 0, 0] == 1  # class 1 outside; not class 2, not inside


def test_a_real_segmentations_weight_equals_counting_it_that_many_times():
    """``readout_real_weight`` k must fit the read-out (ridge, Fourier correction), the error-map
    thresholds and the beyond-the-window marks exactly as if every real segmentation were in the
    samples k times — and differ from weight 1."""
    import copy

    from segqc.qc.qcresunet.train import fit_readout, readout_weights

    def bump(x):
        z = (x[:, :6] - x[:, :6].mean(0)) / (x[:, :6].std(0) + 1e-6)
        return np.clip(0.5 + 0.3 * np.exp(-z ** 2) + 0.1 * z, 0, 1)

    config, network, data = _readout_case(bump)
    rng = np.random.default_rng(1)
    data.gts = [np.where(rng.random(s.shape) < 0.2, 0, s).astype(np.int16) for s in data.segs]
    data.outside = [np.array([[10, int(k)], [10, int(j)]]) for k, j in rng.integers(0, 11, (24, 2))]
    real = [i for i in range(24) if i % 4 == 3]
    for i in real:  # the real ones: mostly wrong beyond the window, unlike the rest
        data.sources[i] = "zoo/unet_e001"
        data.outside[i] = np.array([[10, 10], [10, 10]])
    assert readout_weights(data, 3.0).tolist() == [3.0 if i in real else 1.0 for i in range(24)]

    def fitted(cfg, d):
        net = copy.deepcopy(network)
        return fit_readout(net, d, cfg, torch.device("cpu")), net

    weighted, net_w = fitted(dataclasses.replace(config, readout_real_weight=3.0), data)
    order = [i for i in range(24) for _ in range(3 if i in real else 1)]
    repeated = dataclasses.replace(
        data, images=[data.images[i] for i in order], segs=[data.segs[i] for i in order],
        gts=[data.gts[i] for i in order], targets=data.targets[order], cases=[data.cases[i] for i in order],
        sources=["degraded"] * len(order), outside=[data.outside[i] for i in order])
    copies, net_c = fitted(config, repeated)
    plain, net_p = fitted(config, data)
    assert weighted["correction"] and copies["correction"]
    json.dumps(weighted)  # the run record: plain Python values
    for key in ("alpha", "linear_cv_mse", "readout_cv_mse", "heads_mse"):
        assert weighted[key] == pytest.approx(copies[key], rel=1e-9)
    assert [c["gamma"] for c in weighted["corrections"]] == [c["gamma"] for c in copies["corrections"]]
    assert weighted["sem_threshold"] == copies["sem_threshold"]
    assert weighted["outside_error_rate"] == pytest.approx(copies["outside_error_rate"])
    state_w, state_c = net_w.state_dict(), net_c.state_dict()
    for name in state_w:
        assert torch.allclose(state_w[name], state_c[name], rtol=1e-5, atol=1e-6), name
    assert weighted["outside_error_rate"] != pytest.approx(plain["outside_error_rate"])
    assert not torch.allclose(net_w.readout.weight, net_p.readout.weight, atol=1e-6)


def test_weighted_error_map_thresholds_by_hand():
    """One sample's errors are its probability >= 0.3 voxels, another's its >= 0.7 voxels: with
    equal weights the tie goes to the threshold nearer 0.5 of the two; weighting the second
    three times picks 0.7, weighting the first picks 0.3."""
    from segqc.qc.qcresunet.train import best_error_thresholds, threshold_counts

    probs = torch.linspace(0.01, 0.99, 99).reshape(1, 1, 99)
    counts = np.stack([threshold_counts(probs, probs >= 0.3), threshold_counts(probs, probs >= 0.7)])
    assert best_error_thresholds(counts, np.array([1.0, 3.0]))[0].tolist() == pytest.approx([0.7])
    assert best_error_thresholds(counts, np.array([3.0, 1.0]))[0].tolist() == pytest.approx([0.3])
    equal = best_error_thresholds(counts)[1]["best"]
    assert equal == pytest.approx(best_error_thresholds(counts, np.array([2.0, 2.0]))[1]["best"])


def test_a_training_step_weighs_the_error_maps_by_the_configs_lambda(tmp_path):
    from segqc.qc.qcresunet.train import _member_stage, build_network, build_training_data

    dataset = make_qc_dataset(tmp_path / "data", n_cases=2, shape=(32, 32, 4))
    base = QcResUNetConfig.preset("tiny", degraded_per_case=2, readout_per_case=0)
    data = build_training_data(dataset, None, base, tmp_path / "train")
    for lam in (1.0, 3.0):
        config = base.with_overrides(loss_lambda=lam)
        torch.manual_seed(0)
        model = build_network(config, spatial_dims=3, image_channels=1, n_classes=len(data.classes),
                              strides=[(1, 2, 2)] * 4)
        parts = _member_stage(config, data, 0, model, torch.device("cpu"), "fp32").step(0)
        assert parts["sem_dice"] + parts["sem_bce"] > 0.1  # the maps' loss is not negligible here
        assert parts["total"] == pytest.approx(parts["mae"] + lam * (parts["sem_dice"] + parts["sem_bce"]), rel=1e-5)


def test_a_read_out_without_two_training_volumes_is_refused_before_the_network_trains(tmp_path):
    """The read-out's cross-validation over the volumes needs two; with one, the whole network
    trained first (about 50 minutes with the small preset) and then the run stopped with "needs at
    least two groups", naming nothing."""
    from segqc.errors import InputError
    from segqc.qc.training_api import train_method

    dataset = make_qc_dataset(tmp_path / "data", n_cases=1, shape=(48, 48, 8))
    with pytest.raises(InputError, match=r"needs at least two; found 1 .*--set readout_per_case=0"):
        train_method("qcresunet", dataset, tmp_path / "run", config="tiny", log=lambda _: None,
                     overrides={"epochs": 1, "samples_per_epoch": 2, "readout_per_case": 2})
    assert not (tmp_path / "run" / "stages").exists()
