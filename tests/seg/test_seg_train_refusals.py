"""`segqc seg train` refuses, in one line and before it writes anything, what would train a
useless model or mix two models in one folder: label maps or raters without foreground, a
multi-rater folder without a second rater for the methods that learn from the raters'
disagreement, and an output folder that holds a model but not this training run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from consensus_toy_data import make_rater_folder
from dataset_folders import write_dataset
from ldseg_toy_data import make_disk_dataset
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.errors import InputError
from segqc.io.images import read_label_map, write_image
from segqc.seg.rater_slices import build_rater_data, check_raters_per_case
from segqc.seg.slices import build_training_data
from segqc.training import save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _seg_train(*args: str):
    return CliRunner().invoke(app, ["seg", "train", *args, "--config", "tiny", "--device", "cpu", "-q",
                                    "--set", "steps_train=2"])


def _blank(paths) -> None:
    """Overwrite the label maps ``paths`` with background only, on their own grids."""
    for path in paths:
        image = read_label_map(path)
        write_image(path, np.zeros_like(image.array), image.geometry)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _single_rater(folder: Path, cases: list[str]) -> None:
    for case in cases:
        for extra in (folder / case).glob("rater_*"):
            if extra.name != "rater_1.nii.gz":
                extra.unlink()


@pytest.fixture()
def disk_dataset_small(tmp_path) -> Path:
    return make_disk_dataset(tmp_path / "disks", cases=4)


@pytest.fixture()
def rater_folder_small(tmp_path) -> Path:
    return make_rater_folder(tmp_path / "raters", cases=4)


def test_label_maps_without_foreground_are_refused_naming_the_dataset(disk_dataset_small):
    _blank(sorted((disk_dataset_small / "labelsTr").iterdir()))
    with pytest.raises(InputError, match="no ground-truth slice with foreground in the training cases") as error:
        build_training_data(disk_dataset_small, None, 32)
    assert error.value.path == disk_dataset_small


@pytest.mark.parametrize("method", ["unet", "ldseg"])
def test_seg_train_on_background_only_is_one_line_and_exit_2(method, disk_dataset_small, tmp_path):
    _blank(sorted((disk_dataset_small / "labelsTr").iterdir()))
    result = _seg_train(method, str(disk_dataset_small), "-o", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert "no ground-truth slice with foreground" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "model").exists()


def test_raters_without_foreground_are_refused_naming_the_folder(rater_folder_small):
    _blank(sorted(rater_folder_small.glob("*/rater_*")))
    with pytest.raises(InputError, match="no rater's mask has foreground") as error:
        build_rater_data(rater_folder_small, None, 32)
    assert error.value.path == rater_folder_small


@pytest.mark.parametrize("method", ["probunet", "consensus", "unet"])
def test_seg_train_on_blank_raters_is_one_line_and_exit_2(method, rater_folder_small, tmp_path):
    _blank(sorted(rater_folder_small.glob("*/rater_*")))
    result = _seg_train(method, str(rater_folder_small), "-o", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert "no rater's mask has foreground" in result.output and "Traceback" not in result.output


def test_the_raters_per_case_by_hand(rater_folder_small):
    cases = sorted(p.name for p in rater_folder_small.iterdir())
    assert check_raters_per_case(rater_folder_small, None, several="the Probabilistic U-Net") is None
    assert check_raters_per_case(rater_folder_small, None, several=None) is None
    _single_rater(rater_folder_small, cases[:1])
    note = check_raters_per_case(rater_folder_small, None, several="the Probabilistic U-Net")
    assert note is not None and note.startswith(f"1 of 4 training case(s) have a single rater (e.g. {cases[0]})")
    assert check_raters_per_case(rater_folder_small, None, several=None) is None  # a rule over raters: fine
    _single_rater(rater_folder_small, cases)
    with pytest.raises(InputError, match="no training case has more than one") as error:
        check_raters_per_case(rater_folder_small, None, several="the Probabilistic U-Net")
    assert error.value.path == rater_folder_small
    assert "every training case has a single rater" in check_raters_per_case(rater_folder_small, None, several=None)


@pytest.mark.parametrize("method", ["probunet", "consensus"])
def test_methods_that_learn_the_raters_disagreement_refuse_single_rater_folders(method, rater_folder_small,
                                                                                 tmp_path):
    _single_rater(rater_folder_small, [p.name for p in rater_folder_small.iterdir()])
    result = _seg_train(method, str(rater_folder_small), "-o", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert "no training case has more than one (rater_1 only)" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_a_unet_on_single_rater_cases_trains_with_a_warning(rater_folder_small, tmp_path):
    _single_rater(rater_folder_small, [p.name for p in rater_folder_small.iterdir()])
    result = _seg_train("unet", str(rater_folder_small), "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "warning: every training case has a single rater" in " ".join(result.output.split())


def test_python_callers_get_the_same_checks_and_warning_as_the_cli(rater_folder_small, tmp_path):
    """The U-Net's single-rater warning was printed by the CLI alone: a Python caller of the
    registry's training entry point or of seg.training_api.train_method trained without it."""
    from segqc.methods import method as method_entry
    from segqc.seg.training_api import train_method

    _single_rater(rater_folder_small, [p.name for p in rater_folder_small.iterdir()])
    logged: list[str] = []
    entry = method_entry("unet", kind="seg")
    entry.train(rater_folder_small, tmp_path / "direct", config=entry.config("tiny", steps_train=2), cases=None,
                log=logged.append,
                progress=False, device="cpu")
    assert [line for line in logged if "every training case has a single rater" in line], logged
    warned: list[str] = []
    with pytest.raises(InputError, match="no training case has more than one"):
        train_method("probunet", rater_folder_small, tmp_path / "refused", config="tiny", log=print, warn=warned.append)
    assert not (tmp_path / "refused").exists()
    directory = train_method("unet", rater_folder_small, tmp_path / "api", config="tiny",
                             overrides={"steps_train": 2}, log=lambda line: None, warn=warned.append, device="cpu")
    assert (directory / "config.json").is_file()
    assert len(warned) == 1 and "every training case has a single rater" in warned[0]


def _model_folder(path: Path, method: str) -> Path:
    """A model folder as `segqc seg train` or a shipped model leaves it: config.json and weights."""
    import torch

    save_checkpoint(path, method=method, config={"size": 32}, weights={"net": {"w": torch.zeros(2)}}, seed=0)
    (path / "MODEL_CARD.md").write_text("a model\n")
    return path


@pytest.mark.parametrize("owner", ["ldseg", "unet"])
def test_an_output_folder_holding_a_model_is_refused_and_left_untouched(owner, disk_dataset_small, tmp_path):
    model = _model_folder(tmp_path / "model_copy", owner)
    before = _files(model)
    result = _seg_train("unet", str(disk_dataset_small), "-o", str(model), "--holdout-fraction", "0.5")
    assert result.exit_code == 2, result.output
    assert f"holds a model (config.json, method {owner}) but no training run" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert _files(model) == before  # no run.json, stages/, model/ or split.json beside the weights


def test_a_finished_run_is_still_reused_and_a_users_config_file_in_the_folder_is_no_model(disk_dataset_small,
                                                                                         tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"steps_train": 2}))  # a JSON config kept with the run
    assert _seg_train("unet", str(disk_dataset_small), "-o", str(out)).exit_code == 0
    again = _seg_train("unet", str(disk_dataset_small), "-o", str(out))
    assert again.exit_code == 0 and "done before" in again.output, again.output
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    other = _seg_train("ldseg", str(disk_dataset_small), "-o", str(copy))  # another method into the run
    assert other.exit_code == 2 and "another kind" in other.output, other.output


def test_the_help_names_every_method_and_both_folder_layouts():
    result = CliRunner().invoke(app, ["seg", "train", "--help"], terminal_width=200)
    text = " ".join(result.output.split())
    for method in ("ldseg", "unet", "consensus", "probunet"):
        assert method in text
    assert "multi-rater folder" in text and "nnU-Net-style dataset" in text


def test_the_predict_help_names_every_output_save_can_write():
    from segqc.seg.inference import OUTPUTS

    result = CliRunner().invoke(app, ["seg", "predict", "--help"], terminal_width=200)
    text = " ".join(result.output.replace("│", " ").split())  # the help box wraps lines
    assert all(f"{output} (" in text for output in OUTPUTS), text


def _trainer(method: str):
    import importlib

    from segqc.methods import method as method_entry

    entry = method_entry(method, kind="seg")
    return importlib.import_module(f"{entry.package}.train"), entry.config("tiny")


@pytest.mark.parametrize("method", ["probunet", "consensus"])
def test_python_callers_get_the_refusal_of_single_rater_folders_before_any_image_is_read(method, rater_folder_small,
                                                                                         tmp_path, monkeypatch):
    trainer, config = _trainer(method)

    def read(*args, **kwargs):
        raise AssertionError("an image was read before the raters per case were checked")

    monkeypatch.setattr(trainer, "build_rater_data", read)
    _single_rater(rater_folder_small, [p.name for p in rater_folder_small.iterdir()])
    with pytest.raises(InputError, match=r"no training case has more than one \(rater_1 only\)") as error:
        trainer.train_from_dataset(rater_folder_small, tmp_path / "run", config=config, log=lambda _: None)
    assert error.value.path == rater_folder_small
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("method", ["probunet", "consensus"])
def test_python_callers_get_the_single_rater_warning_once_in_their_log(method, rater_folder_small, tmp_path,
                                                                       monkeypatch):
    trainer, config = _trainer(method)

    class Stop(Exception):
        pass

    def read(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(trainer, "build_rater_data", read)
    cases = sorted(p.name for p in rater_folder_small.iterdir())
    _single_rater(rater_folder_small, cases[:1])
    lines: list[str] = []
    with pytest.raises(Stop):
        trainer.train_from_dataset(rater_folder_small, tmp_path / "run", config=config, log=lines.append)
    assert [line for line in lines if "single rater" in line] == [
        f"warning: 1 of 4 training case(s) have a single rater (e.g. {cases[0]}); they show no disagreement between "
        "raters"]


def test_seg_train_prints_the_single_rater_warning_once(rater_folder_small, tmp_path):
    _single_rater(rater_folder_small, sorted(p.name for p in rater_folder_small.iterdir())[:1])
    result = _seg_train("probunet", str(rater_folder_small), "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert " ".join(result.output.split()).count("have a single rater") == 1, result.output


def test_seg_train_probunet_on_an_nnunet_dataset_is_refused_before_the_output_folder_is_made(disk_dataset_small,
                                                                                           tmp_path):
    result = _seg_train("probunet", str(disk_dataset_small), "-o", str(tmp_path / "run"), "--holdout-fraction", "0.5")
    assert result.exit_code == 2, result.output
    assert "learns from several raters: give a multi-rater folder" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


@pytest.mark.parametrize("labels", [{"ignore": 2}, {"background": 0, "disk": 1, "ignore": 2}])
def test_maps_holding_the_ignore_label_are_refused_and_it_is_never_a_class(tmp_path, labels):
    """nnU-Net's "ignore" label is never a class. Training needs every voxel labelled, so a map
    that holds the ignore value is refused naming the file, with or without named classes (without
    names the value used to become a third class); maps without it train on classes (0, 1)."""
    from segqc.io.geometry import Geometry

    geometry = Geometry(shape=(8, 8), spacing=(1.0, 1.0), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0))
    label = np.zeros((8, 8), np.uint8)
    label[2:5, 2:5] = 1
    image = np.random.default_rng(0).normal(size=(8, 8))
    write_dataset(tmp_path, {"c_000": (image, label, geometry)}, labels=labels)
    assert build_training_data(tmp_path, None, 8).labels == (0, 1)
    label[0, :] = 2
    write_dataset(tmp_path, {"c_000": (image, label, geometry)}, labels=labels)
    with pytest.raises(InputError, match="ignore") as refused:
        build_training_data(tmp_path, None, 8)
    assert "c_000.nii.gz" in str(refused.value)
