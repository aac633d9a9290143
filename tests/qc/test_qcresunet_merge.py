"""benchmarks/qc_acdc/merge_members.py: separately trained QCResUNet runs put into one ensemble
model. The expected values are each run's own estimates, loaded and run on their own."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from model_files import copy_with_config
from qc_toy_data import make_qc_dataset

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "qc_acdc" / "merge_members.py"


def _script():
    spec = importlib.util.spec_from_file_location("merge_members", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from segqc.qc.training_api import train_method

    root = tmp_path_factory.mktemp("merge")
    dataset = make_qc_dataset(root / "data", n_cases=4, shape=(32, 32, 6))
    overrides = {"epochs": 3, "samples_per_epoch": 8, "readout_per_case": 2, "dropout": 0.0}
    models = [train_method("qcresunet", dataset, root / f"seed{seed}", config="tiny", seed=seed, log=lambda _: None,
                           overrides=overrides) for seed in (0, 1)]
    return root, models


def test_a_merged_model_estimates_the_mean_of_its_runs(runs, tmp_path):
    from segqc.qc.qcresunet.predict import assess_volume, load

    _, (first, second) = runs
    assert _script().merge([first, second], tmp_path / "ensemble") == 2
    merged = load(tmp_path / "ensemble")
    assert len(merged.members) == 2 and merged.config.members == 2
    rng = np.random.default_rng(3)
    segs = rng.integers(0, 3, (6, 32, 32))
    images = (60.0 * segs + 10.0 + rng.normal(0, 5, segs.shape)).astype(np.float32)[:, None]
    a, b = assess_volume(load(first), images, segs), assess_volume(load(second), images, segs)
    both = assess_volume(merged, images, segs)
    assert not np.allclose(a["dice"], b["dice"])  # two seeds, two networks: the mean says which one is where
    # member-major rows: the first run's network first, then the second's
    np.testing.assert_allclose(both["dice"], np.concatenate([a["dice"], b["dice"]]), atol=1e-6)
    np.testing.assert_allclose(both["nsd"], np.concatenate([a["nsd"], b["nsd"]]), atol=1e-6)
    np.testing.assert_allclose(both["errors"], np.concatenate([a["errors"], b["errors"]]), atol=1e-6)
    # each member keeps its own thresholds (the paper's vote takes each member's map at its own)
    np.testing.assert_allclose(both["error_threshold"], np.concatenate([a["error_threshold"], b["error_threshold"]]),
                               atol=1e-6)
    config = json.loads((tmp_path / "ensemble" / "config.json").read_text())
    assert config["components"] == ["member0", "member1"]
    assert [entry["seed"] for entry in config["merged_from"]] == [0, 1]


def test_runs_of_another_recipe_are_refused_naming_the_folder_and_field(runs, tmp_path):
    root, (first, second) = runs
    other = copy_with_config(second, tmp_path / "other", lambda c: c.update(widths=[8, 8, 8, 8]))
    with pytest.raises(SystemExit, match=r"other: its config differs .* in 'qcresunet.widths'"):
        _script().merge([first, other], tmp_path / "ensemble")
    assert not (tmp_path / "ensemble").exists()


def test_keep_merges_only_the_member_whose_readout_is_best(runs, tmp_path):
    from segqc.qc.qcresunet.predict import assess_volume, load

    _, (first, second) = runs
    errors = []
    for model in (first, second):
        record = json.loads((model / "metrics.json").read_text())["member0_readout"]
        errors.append(record["readout_cv_mse"] if record["used"] else record["heads_mse"])
    best = (first, second)[int(np.argmin(errors))]
    assert _script().merge([first, second], tmp_path / "best", keep=1) == 1
    merged = load(tmp_path / "best")
    rng = np.random.default_rng(4)
    segs = rng.integers(0, 3, (6, 32, 32))
    images = (60.0 * segs + 10.0 + rng.normal(0, 5, segs.shape)).astype(np.float32)[:, None]
    expected = assess_volume(load(best), images, segs)["dice"]
    np.testing.assert_allclose(assess_volume(merged, images, segs)["dice"], expected, atol=1e-6)
    config = json.loads((tmp_path / "best" / "config.json").read_text())
    assert config["merged_members"] == [{"folder": str(best), "member": "member0", "readout_error": min(errors)}]


def test_a_run_saved_before_a_setting_existed_merges_with_one_that_has_its_value(runs, tmp_path):
    """A run whose config lacks field_of_view (saved by an earlier segqc) had the median-spacing
    window: it merges with a run saved with ``spacing`` and is refused beside ``foreground``."""
    _, (first, second) = runs
    older = copy_with_config(second, tmp_path / "older", lambda c: c.pop("field_of_view"))
    same = copy_with_config(first, tmp_path / "same", lambda c: c.update(field_of_view="spacing"))
    assert _script().merge([same, older], tmp_path / "ensemble") == 2
    with pytest.raises(SystemExit, match=r"older: its config differs .* in 'qcresunet.field_of_view'"):
        _script().merge([first, older], tmp_path / "refused")
