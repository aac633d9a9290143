"""The one config base: every settings object round-trips through dict and JSON, presets are found
case-insensitively or in a file, overrides are checked, digests follow the settings."""

from __future__ import annotations

import json

import pytest

from segqc.degrade.folder import DegradeConfig
from segqc.degrade.targeting import BALANCED_BINS, DiceBin
from segqc.errors import InputError
from segqc.evaluation.evaluate import EvaluationConfig
from segqc.io.labels import LabelSet
from segqc.metrics import EmptyPolicy, MetricSettings
from segqc.qc.baselines.cae.config import CaeConfig
from segqc.qc.inference import QcSettings
from segqc.qc.nnqc.config import NnqcConfig
from segqc.zoo.config import ZooConfig

CONFIGS = [
    NnqcConfig.preset("tiny", ldm_steps=7),
    ZooConfig.preset("small", epochs=3),
    CaeConfig.preset("tiny"),
    QcSettings(metrics=("dice", "cc_dice"), samples=2),
    EvaluationConfig(metrics=("dice", "hd95"), per_component=True, spacing=(0.5, 0.5),
                     settings=MetricSettings(tolerance_mm=2.0, empty=EmptyPolicy(both_empty="best")),
                     label_set=LabelSet(names={1: "a", 3: "c"}, regions={"ac": (1, 3)}, ignore=9, known=True)),
    DegradeConfig(bins=(DiceBin(0.125, 0.375), DiceBin(0.375, 0.875, closed=True)), per_case=3,
                  label_set=LabelSet(names={1: "x"}, known=True)),
    DegradeConfig(bins=BALANCED_BINS),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_every_settings_object_round_trips_through_dict_and_json(config, tmp_path):
    assert type(config).from_dict(config.to_dict()) == config
    path = config.save(tmp_path / "config.json")
    assert json.loads(path.read_text())["format"] == f"segqc-{config.KIND}-config"
    assert type(config).load(path) == config
    assert type(config).preset(str(path)) == config  # a JSON file where a preset name goes


def test_presets_are_case_insensitive_and_overrides_are_checked():
    assert NnqcConfig.preset("SMALL") == NnqcConfig.preset("small")
    assert ZooConfig.preset("Paper", seed=None).seed == ZooConfig.preset("paper").seed  # None: not overridden
    with pytest.raises(ValueError, match="unknown zoo config field"):
        ZooConfig.preset("small", nonsense=1)
    with pytest.raises(ValueError, match="unknown nnQC config preset 'huge'"):
        NnqcConfig.preset("huge")
    with pytest.raises(InputError, match="unknown CAE config field"):
        CaeConfig.from_dict({"size": 32, "colour": "red"})


def test_the_digest_changes_with_any_setting_and_the_resume_key_ignores_the_resumable_ones():
    small = ZooConfig.preset("small")
    assert small.digest() == ZooConfig.preset("small").digest()
    assert small.digest() != small.with_overrides(lr=0.01).digest()
    assert small.digest() != small.with_overrides(epochs=30).digest()
    assert small.resume_key() == small.with_overrides(epochs=30).resume_key()  # more epochs may continue
    assert small.resume_key() != small.with_overrides(lr=0.01).resume_key()


def test_degrade_folder_takes_a_config_object_like_its_keywords(tmp_path):
    import numpy as np
    import pandas as pd

    from segqc.degrade.folder import degrade_folder
    from segqc.io.geometry import Geometry
    from segqc.io.images import write_image
    from segqc.synthetic import multiclass_phantom

    gt = multiclass_phantom((32, 32, 8), (1.0, 1.0, 2.0), seed=0)
    write_image(tmp_path / "gt" / "c0.nii.gz", gt, Geometry.from_shape(gt.shape, (1.0, 1.0, 2.0)))
    by_config = degrade_folder(tmp_path / "gt", tmp_path / "a", DegradeConfig(per_case=2, seed=3))
    by_keywords = degrade_folder(tmp_path / "gt", tmp_path / "b", per_case=2, seed=3)
    columns = [c for c in by_config.manifest.columns if c != "gt_file"]
    pd.testing.assert_frame_equal(by_config.manifest[columns], by_keywords.manifest[columns])
    assert len(by_config.manifest) == 2 and np.isfinite(by_config.manifest["dice"]).all()


def test_overrides_are_typed_by_the_field():
    """``--set decoder=false`` must switch a yes/no field off (the text "false" is truthy), and text
    in a number field is refused instead of reaching the model."""
    from segqc.config import parse_overrides
    from segqc.qc.qcresunet.config import QcResUNetConfig

    assert QcResUNetConfig.preset("small", **parse_overrides(["decoder=false"])).decoder is False
    assert QcResUNetConfig.preset("small", **parse_overrides(["attention=No", "regression=TRUE"])).attention is False
    assert QcResUNetConfig.preset("small", **parse_overrides(["epochs=3.0"])).epochs == 3
    # list fields: the text of a list, entries typed like the field's (yes/no words are not literals)
    from segqc.seg.ldseg.config import LdsegConfig

    ldseg = LdsegConfig.preset("small", **parse_overrides(["denoiser_channels=(32,64,64,64)",
                                                           "denoiser_attention=(false, no, True, on)"]))
    assert ldseg.denoiser_attention == (False, False, True, True)
    assert LdsegConfig.preset("small", widths="[16, 32]").widths == (16, 32)
    with pytest.raises(ValueError, match=r"denoiser_attention\[1\] takes true or false"):
        LdsegConfig.preset("small", denoiser_attention="(false, maybe, true)")
    assert LdsegConfig.preset("small", widths="16, 32, 64").widths == (16, 32, 64)
    with pytest.raises(ValueError, match="widths needs one entry per down-sampling stage"):
        LdsegConfig.preset("small", widths="16")   # one stage: (16,), not the digits (1, 6)
    with pytest.raises(ValueError, match=r"widths\[0\] takes a number"):
        LdsegConfig.preset("small", widths="(a, b)")
    for bad in (["decoder=maybe"], ["epochs=abc"], ["lr=fast"], ["epochs=2.5"], ["lr=True"]):
        with pytest.raises(ValueError, match="config field"):
            QcResUNetConfig.preset("small", **parse_overrides(bad))


@pytest.mark.parametrize("field, bad", [("size", "x"), ("size", True), ("epochs", 2.5), ("decoder", "maybe")])
def test_a_saved_config_with_a_value_of_the_wrong_type_is_refused_naming_the_field(tmp_path, field, bad):
    """A hand-edited config.json (``"size": "x"``) must give one line naming the field, not a
    formatting error from deep inside the model or a silently different network."""
    from segqc.qc.qcresunet.config import QcResUNetConfig

    data = QcResUNetConfig.preset("tiny").to_dict()
    data[field] = bad
    with pytest.raises(InputError, match=f"field {field} takes"):
        QcResUNetConfig.from_dict(data)
    data[field] = QcResUNetConfig.preset("tiny").to_dict()[field]
    assert QcResUNetConfig.from_dict(data) == QcResUNetConfig.preset("tiny")


def test_a_config_file_that_is_not_utf8_text_is_one_line_naming_it(tmp_path):
    """A binary file given as a config (e.g. a .safetensors by mistake) raised UnicodeDecodeError."""
    path = tmp_path / "config.json"
    path.write_bytes(b"\x89\xff\x00 binary")
    with pytest.raises(InputError) as exc:
        QcSettings.load(path)
    assert str(exc.value) == f"{path}: corrupt QC config: not UTF-8 text"


def test_a_setting_given_twice_is_refused_not_the_last_one_taken():
    import pytest

    from segqc.config import parse_overrides

    assert parse_overrides(["lr=0.1", "epochs=3"]) == {"lr": 0.1, "epochs": 3}
    with pytest.raises(ValueError, match="--set lr is given twice"):
        parse_overrides(["lr=0.1", " lr =0.2"])


def test_a_checkpoint_that_does_not_fit_its_model_is_named_without_exception_names():
    """Once: `checkpoint does not match the nnQC model (KeyError: 'nnqc')`."""
    import pytest

    from segqc.training.checkpoints import CheckpointError, checkpoint_fits

    for raised, words in ((KeyError("nnqc"), "its config or weights lack the entry 'nnqc'"),
                          (TypeError("unsupported operand"), "a value of its config has the wrong kind"),
                          (RuntimeError("size mismatch for conv.weight\nmore"), "size mismatch for conv.weight")):
        with pytest.raises(CheckpointError) as info, checkpoint_fits("MODEL", "nnQC model"):
            raise raised
        assert str(info.value) == f"MODEL: checkpoint does not match the nnQC model ({words})"
