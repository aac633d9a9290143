"""`segqc qc train` refuses, in one line and before it writes anything, what would train a useless
QC model or mix two models in one folder: ground truths without foreground, an extra segmentation
folder that adds nothing, and an output folder holding a model that is not this training run's."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.errors import InputError
from segqc.io.images import read_label_map, write_image
from segqc.qc.qcresunet.config import QcResUNetConfig
from segqc.qc.qcresunet.train import build_training_data
from segqc.training.cases import NO_FOREGROUND

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def blank_dataset(qc_dataset, tmp_path) -> Path:
    dataset = tmp_path / "blank"
    shutil.copytree(qc_dataset, dataset)
    for path in sorted((dataset / "labelsTr").iterdir()):
        label = read_label_map(path)
        write_image(path, np.zeros_like(label.array), label.geometry)
    return dataset


def test_qcresunet_refuses_ground_truths_without_foreground_before_degrading_them(blank_dataset, tmp_path):
    with pytest.raises(InputError, match="no ground-truth slice with foreground in the training cases") as error:
        build_training_data(blank_dataset, None, QcResUNetConfig.preset("tiny"), tmp_path / "work")
    assert error.value.path == blank_dataset.resolve()
    assert not (tmp_path / "work").exists()


def test_qc_train_qcresunet_on_background_only_is_one_line_and_exit_2(blank_dataset, tmp_path):
    result = CliRunner().invoke(app, ["qc", "train", "qcresunet", str(blank_dataset), "-o", str(tmp_path / "run"),
                                      "--config", "tiny", "-q"])
    assert result.exit_code == 2, result.output
    assert "no ground-truth slice with foreground" in result.output and "Traceback" not in result.output
    assert not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize("kind", ["empty", "unrelated"])
def test_qcresunet_refuses_an_extra_folder_without_a_segmentation_of_the_training_cases(kind, qc_dataset, tmp_path):
    extra = tmp_path / kind
    extra.mkdir()
    if kind == "unrelated":
        source = qc_dataset / "labelsTr" / "case0.nii.gz"
        shutil.copyfile(source, extra / "other_case.nii.gz")
    with pytest.raises(InputError, match=r"holds no segmentation of the 4 training case\(s\)") as error:
        build_training_data(qc_dataset, None, QcResUNetConfig.preset("tiny"), tmp_path / "work", extra_seg_dirs=[extra])
    assert error.value.path == extra
    assert not (tmp_path / "work").exists()  # refused before anything is degraded
    result = CliRunner().invoke(app, ["qc", "train", "qcresunet", str(qc_dataset), "-o", str(tmp_path / "run"),
                                      "--config", "tiny", "--extra-segs", str(extra), "-q"])
    assert result.exit_code == 2 and "holds no segmentation of the 4 training case(s)" in result.output, result.output


def test_qc_train_into_a_model_folder_of_another_method_is_refused_and_leaves_it_untouched(qc_dataset, tmp_path):
    import torch

    from segqc.training import save_checkpoint

    model = tmp_path / "ldseg_copy"
    save_checkpoint(model, method="ldseg", config={"size": 32}, weights={"denoiser": {"w": torch.zeros(2)}}, seed=0)
    before = _files(model)
    for method in ("cae", "qcresunet"):
        result = CliRunner().invoke(app, ["qc", "train", method, str(qc_dataset), "-o", str(model), "--config", "tiny",
                                          "--holdout-fraction", "0.25", "-q"])
        assert result.exit_code == 2, result.output
        assert "holds a model (config.json, method ldseg) but no training run" in " ".join(result.output.split())
        assert _files(model) == before  # no config.json of the CAE beside the LDSeg weights, no split.json


def test_qcresunet_reads_an_extra_folder_as_nnqc_does_the_dataset_ending_first(tmp_path):
    """Of two files of one case in an extra folder, QCResUNet (like nnQC) uses the one with the
    dataset's file ending; the other is not a second segmentation of the case, nor a refusal."""
    from qc_toy_data import make_qc_dataset

    dataset = make_qc_dataset(tmp_path / "data", n_cases=2, shape=(32, 32, 4))
    truth = read_label_map(dataset / "labelsTr" / "case0.nii.gz")
    extra = tmp_path / "zoo"
    merged = np.where(truth.array == 2, 1, truth.array).astype(np.uint8)
    write_image(extra / "case0.nii.gz", merged, truth.geometry)
    write_image(extra / "case0.nii", np.zeros_like(truth.array), truth.geometry)
    data = build_training_data(dataset, None, QcResUNetConfig.preset("tiny", degraded_per_case=1), tmp_path / "work",
                               extra_seg_dirs=[extra])
    real = [i for i, source in enumerate(data.sources) if source == str(extra)]
    assert len(real) == 1 and data.cases[real[0]] == "case0"
    assert data.segs[real[0]].any() and not (data.segs[real[0]] == 2).any()  # the .nii.gz file, not the blank one


def test_the_cae_refuses_ground_truths_without_foreground_naming_the_dataset(blank_dataset, tmp_path):
    from segqc.qc.baselines.cae.config import CaeConfig
    from segqc.qc.baselines.cae.train import train_from_dataset

    with pytest.raises(InputError) as error:
        train_from_dataset(blank_dataset, tmp_path / "run", config=CaeConfig.preset("tiny"), log=lambda _: None)
    assert error.value.problem == NO_FOREGROUND and error.value.path == blank_dataset
    assert not (tmp_path / "run").exists()


def test_nnqc_refuses_ground_truths_without_foreground_with_the_same_line(blank_dataset):
    from segqc.qc.nnqc import NnqcConfig
    from segqc.qc.nnqc import build_training_data as nnqc_training_data

    with pytest.raises(InputError) as error:
        nnqc_training_data(blank_dataset, None, NnqcConfig.preset("tiny"))
    assert error.value.problem == NO_FOREGROUND and error.value.path == blank_dataset


@pytest.mark.parametrize("method", ["cae", "nnqc"])
def test_qc_train_on_background_only_names_the_dataset_in_one_line(method, blank_dataset, tmp_path):
    result = CliRunner().invoke(app, ["qc", "train", method, str(blank_dataset), "-o", str(tmp_path / "run"),
                                      "--config", "tiny", "-q"])
    assert result.exit_code == 2, result.output
    assert f"{blank_dataset}: {NO_FOREGROUND}" in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_qc_train_into_another_methods_run_folder_names_that_run(qc_dataset, tmp_path):
    """A CAE training run, then nnQC into its folder with a fresh split: refused as a run of another
    kind (not as a run on another split of the cases), before a split.json is written."""
    from segqc.qc.training_api import train_method

    out = tmp_path / "run"
    first = CliRunner().invoke(app, ["qc", "train", "cae", str(qc_dataset), "-o", str(out), "--config", "tiny", "-q"])
    assert first.exit_code == 0, first.output
    before = _files(out)
    with pytest.raises(InputError, match=r"holds a training run of another kind \(not nnqc\)") as error:
        train_method("nnqc", qc_dataset, out, config="tiny", holdout_fraction=0.25, log=lambda _: None)
    assert error.value.path == out
    result = CliRunner().invoke(app, ["qc", "train", "nnqc", str(qc_dataset), "-o", str(out), "--config", "tiny",
                                      "--holdout-fraction", "0.25", "-q"])
    assert result.exit_code == 2 and "another kind (not nnqc)" in " ".join(result.output.split()), result.output
    assert _files(out) == before  # no split.json beside the CAE's run
