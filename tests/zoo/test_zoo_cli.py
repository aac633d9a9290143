"""`segqc zoo train` / `segqc zoo predict`: files, the per-source table, one error line on bad input."""

from __future__ import annotations

import json
import shutil

import monai  # noqa: F401
import pandas as pd
import pytest
import torch  # noqa: F401
from typer.testing import CliRunner
from zoo_fixtures import TINY

from segqc.cli.main import app

runner = CliRunner()


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_zoo_train_then_predict_from_the_command_line(toy_dataset, tmp_path):
    config = tmp_path / "tiny.json"
    TINY.save(config)
    zoo = tmp_path / "zoo"
    result = runner.invoke(app, ["zoo", "train", str(toy_dataset), "-o", str(zoo), "--config", str(config),
                                 "--epochs", "2", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "trained on 3 patient(s) (6 cases), held out 1 (2 cases)" in result.output
    assert "unet_e001, unet_e002" in result.output
    out = tmp_path / "pred"
    result = runner.invoke(app, ["zoo", "predict", str(zoo), str(toy_dataset), "-o", str(out), "--variants",
                                 "clean,lowres", "--lowres-factor", "4", "--jobs", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for text in ("multi-class Dice per source", "unet_e002_lowres4", "lowres(factor=4)", "wrote 8 predictions"):
        assert text in result.output
    table = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(table) == 8 and set(table["source"]) == {"unet_e001", "unet_e001_lowres4", "unet_e002",
                                                          "unet_e002_lowres4"}
    summary = json.loads((out / "summary.json").read_text())
    assert [s["source"] for s in summary["sources"]] == ["unet_e001", "unet_e001_lowres4", "unet_e002",
                                                          "unet_e002_lowres4"]


@pytest.mark.parametrize("problem", ["missing dataset", "no dataset.json", "unknown preset"])
def test_zoo_train_reports_bad_input_in_one_line(problem, toy_dataset, tmp_path):
    dataset = {"missing dataset": tmp_path / "nope", "no dataset.json": tmp_path}.get(problem, toy_dataset)
    config = "huge" if problem == "unknown preset" else "small"
    result = runner.invoke(app, ["zoo", "train", str(dataset), "-o", str(tmp_path / "zoo"), "--config", config])
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert {"missing dataset": "dataset folder not found", "no dataset.json": "no dataset.json",
            "unknown preset": "config preset 'huge'"}[problem] in line


@pytest.mark.parametrize("problem", ["not a zoo", "not a zoo model", "bad variant", "missing labels", "channels"])
def test_zoo_predict_reports_bad_input_in_one_line(problem, trained_zoo, toy_dataset, tmp_path):
    zoo, args = trained_zoo, []
    if problem == "not a zoo":
        zoo = toy_dataset
    elif problem == "not a zoo model":
        zoo = tmp_path / "zoo"
        shutil.copytree(trained_zoo, zoo)
        (zoo / "models" / "unet_e004" / "unet.safetensors").write_bytes(b"\x00" * 64)
    elif problem == "bad variant":
        args = ["--variants", "clean,blur"]
    elif problem == "missing labels":
        args = ["--labels", str(tmp_path / "labels")]
    else:
        images = tmp_path / "images"
        images.mkdir()
        for item in (toy_dataset / "imagesTr").iterdir():
            shutil.copy(item, images / item.name)
            shutil.copy(item, images / item.name.replace("_0000", "_0001"))
        args = ["--images", str(images)]
    result = runner.invoke(app, ["zoo", "predict", str(zoo), str(toy_dataset), "-o", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result)
    assert {"not a zoo": "not a segqc zoo folder", "not a zoo model": "corrupt weights file",
            "bad variant": "unknown input variant 'blur'", "missing labels": "labels folder not found",
            "channels": "2 channel(s) but the zoo's models take 1"}[problem] in line


def test_zoo_predict_exits_1_when_a_case_fails(trained_zoo, toy_dataset, tmp_path):
    import SimpleITK as sitk

    from segqc.io.split import Split

    data = tmp_path / "data"
    shutil.copytree(toy_dataset, data)
    case = Split.load(trained_zoo / "split.json").holdout[0]
    path = data / "labelsTr" / f"{case}.nii.gz"
    label = sitk.ReadImage(str(path))
    label.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(label, str(path))
    result = runner.invoke(app, ["zoo", "predict", str(trained_zoo), str(data), "-o", str(tmp_path / "out"),
                                 "--variants", "clean", "--quiet"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "origin" in errors[0] and case in errors[0]
