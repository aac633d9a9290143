"""`segqc qc train/predict/benchmark/rank` end to end with the (fast) CAE baseline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch  # noqa: F401
from typer.testing import CliRunner

from segqc.cli.main import app
from segqc.io.images import read_label_map, write_image

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(qc_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "cae"
    result = runner.invoke(app, ["qc", "train", "cae", str(qc_dataset), "-o", str(out), "--config", "tiny",
                                 "--holdout-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_a_patient_level_split_and_a_cae_model(trained):
    split = json.loads((trained / "split.json").read_text())
    assert set(split["train"]).isdisjoint(split["holdout"]) and len(split["holdout"]) == 1
    assert json.loads((trained / "config.json").read_text())["method"] == "cae"


def test_predict_writes_the_contracted_files(trained, qc_dataset, tmp_path):
    out = tmp_path / "qc"
    result = runner.invoke(app, ["qc", "predict", str(trained), str(qc_dataset / "imagesTr"),
                                 str(qc_dataset / "labelsTr"), "-o", str(out), "--samples", "2", "-q"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "qc.csv", dtype={"label": str})
    assert {"case", "label", "metric", "estimate", "spread"} <= set(table.columns)
    assert {"all", "1", "2"} <= set(table.label) and {"dice", "hd95", "nsd"} <= set(table.metric)
    work = pd.read_csv(out / "worklist.csv")
    assert {"case", "flag"} <= set(work.columns) and work.dice_estimate.is_monotonic_increasing
    for case in table.case.unique():
        pgt = read_label_map(out / "pgt" / f"{case}.nii.gz")
        gt = read_label_map(qc_dataset / "labelsTr" / f"{case}.nii.gz")
        assert pgt.array.shape == gt.array.shape and pgt.geometry == gt.geometry


def test_predict_in_worker_processes_gives_the_serial_result(trained, qc_dataset, tmp_path):
    tables = {}
    for jobs in ("1", "2"):
        result = runner.invoke(app, ["qc", "predict", str(trained), str(qc_dataset / "imagesTr"),
                                     str(qc_dataset / "labelsTr"), "-o", str(tmp_path / jobs), "--metrics", "dice",
                                     "--jobs", jobs, "-q"])
        assert result.exit_code == 0, result.output
        tables[jobs] = pd.read_csv(tmp_path / jobs / "qc.csv", dtype={"label": str}).sort_values(["case", "label"])
    assert len(tables["1"]) == 4 * 3  # 4 cases x (all, 1, 2)
    pd.testing.assert_frame_equal(tables["1"].reset_index(drop=True), tables["2"].reset_index(drop=True))


def test_benchmark_and_rank_commands(trained, qc_dataset, tmp_path):
    bench = runner.invoke(app, ["qc", "benchmark", str(trained), str(qc_dataset / "imagesTr"),
                                str(qc_dataset / "labelsTr"), str(qc_dataset / "labelsTr"), "-o", str(tmp_path / "b"),
                                "--metrics", "dice"])
    assert bench.exit_code == 0, bench.output
    assert (tmp_path / "b" / "benchmark.csv").exists() and (tmp_path / "b" / "plots").is_dir()
    good = tmp_path / "good"
    shutil.copytree(qc_dataset / "labelsTr", good, ignore=shutil.ignore_patterns("*.json"))
    bad = tmp_path / "bad"
    for path in sorted(good.glob("*.nii.gz")):
        label = read_label_map(path)
        write_image(bad / path.name, np.zeros_like(label.array), label.geometry)
    rank = runner.invoke(app, ["qc", "rank", str(trained), str(qc_dataset / "imagesTr"), str(bad), str(good),
                               "--gt", str(qc_dataset / "labelsTr"), "-o", str(tmp_path / "r")])
    assert rank.exit_code == 0, rank.output
    ranking = pd.read_csv(tmp_path / "r" / "ranking.csv")
    assert list(ranking.model) == ["good", "bad"]


def test_bad_inputs_give_one_line_errors(trained, qc_dataset, tmp_path):
    missing = runner.invoke(app, ["qc", "predict", str(tmp_path / "nope"), str(qc_dataset / "imagesTr"),
                                  str(qc_dataset / "labelsTr"), "-o", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "model directory not found" in missing.output
    corrupt = tmp_path / "corrupt"
    shutil.copytree(trained, corrupt)
    (corrupt / "autoencoder.safetensors").write_bytes(b"\x00" * 64)
    result = runner.invoke(app, ["qc", "predict", str(corrupt), str(qc_dataset / "imagesTr"),
                                 str(qc_dataset / "labelsTr"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "corrupt weights file" in result.output and "Traceback" not in result.output
    unknown = runner.invoke(app, ["qc", "train", "magic", str(qc_dataset), "-o", str(tmp_path / "m")])
    assert unknown.exit_code == 2 and "unknown QC method" in unknown.output


def test_nnqc_ablation_switch_and_config_overrides_reach_the_saved_model(qc_dataset, tmp_path):
    import monai  # noqa: F401
    out = tmp_path / "nnqc"
    result = runner.invoke(app, ["qc", "train", "nnqc", str(qc_dataset), "-o", str(out), "--config", "tiny",
                                 "--conditioning", "position", "--set", "ssl_steps=2", "--set", "vae_steps=2",
                                 "--set", "ldm_steps=2", "--set", "adv_start=1", "--set", "seg_encoding=index"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "model" / "config.json").read_text())["config"]["nnqc"]
    assert (saved["conditioning"], saved["ldm_steps"], saved["seg_encoding"]) == ("position", 2, "index")


def test_config_overrides_are_checked(qc_dataset, tmp_path):
    for bad in (["--set", "ldm_steps"], ["--set", "no_such_field=1"], ["--conditioning", "both"]):
        result = runner.invoke(app, ["qc", "train", "nnqc", str(qc_dataset), "-o", str(tmp_path / "x"),
                                     "--config", "tiny", *bad])
        assert result.exit_code != 0
        assert "Traceback" not in result.output and "error" in result.output.lower(), result.output


def test_benchmark_and_predict_estimate_the_settings_default_metrics():
    """`qc benchmark` once defaulted to dice,hd95 while `qc predict` and QcSettings default to
    dice,hd95,nsd: every default benchmark of a regressor (which estimates dice and nsd) warned
    "not hd95" as if the user had asked for it, and the benchmark left NSD out."""
    import inspect

    from segqc.cli.qc import benchmark_command, predict_command
    from segqc.qc.inference import QcSettings

    expected = ",".join(QcSettings().metrics)
    for command in (predict_command, benchmark_command):
        assert inspect.signature(command).parameters["metrics"].default.default == expected


def test_an_empty_segmentation_folder_is_named_as_empty(trained, qc_dataset, tmp_path):
    """It was told "no segmentation has an image", as if the images were missing."""
    (tmp_path / "segs").mkdir()
    result = runner.invoke(app, ["qc", "predict", str(trained), str(qc_dataset / "imagesTr"), str(tmp_path / "segs"),
                                 "-o", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'segs'}: holds no segmentations (CASE.nii.gz)"


def test_qc_settings_take_one_metric_name_as_a_string_and_refuse_unknown_names():
    """Once: QcSettings(metrics="dice") became the metrics d, i, c, e (an empty QCResUNet table, or
    an nnQC error after the run had started), and unknown names were accepted."""
    from segqc.qc.inference import QcSettings

    assert QcSettings(metrics="dice").metrics == ("dice",)
    assert QcSettings(metrics=["dice", "nsd"]).metrics == ("dice", "nsd")
    for bad, words in ((("foo",), "unknown metric"), ((), "at least one")):
        with pytest.raises(ValueError, match=words):
            QcSettings(metrics=bad)
