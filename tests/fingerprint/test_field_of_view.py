"""The in-plane window a QC model sees: the median spacing, the training foreground's extent, or
a width in mm."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_folders import write_dataset

from segqc.fingerprint import compute_fingerprint
from segqc.fingerprint.preprocessing import check_field_of_view, foreground_field_of_view, plan_from_fingerprint
from segqc.io.geometry import Geometry

# array axis 0 runs anterior-posterior and axis 1 right-left (their RAS order is swapped); axis 2
# is the slice axis (superior)
_SWAPPED = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def _boxes_dataset(root):
    """Five cases on a 0.5 mm x 2 mm x 4 mm grid: a box of 8 + 8k voxels along array axis 0 (4, 8,
    12, 16, 20 mm), 2 voxels along axis 1 (4 mm) and 20 slices (80 mm, along the slice axis)."""
    cases = {}
    for k in range(5):
        label = np.zeros((60, 8, 24), np.uint8)
        label[2:2 + 8 + 8 * k, 3:5, 2:22] = 1
        geometry = Geometry(shape=label.shape, spacing=(0.5, 2.0, 4.0), origin=(0.0, 0.0, 0.0), direction=_SWAPPED)
        cases[f"case{k}"] = (label.astype(np.float32) * 100 + 5, label, geometry)
    return write_dataset(root, cases, channel="MR")


def test_the_foreground_field_of_view_is_the_95th_percentile_in_plane_extent_plus_a_tenth(tmp_path):
    """In-plane extents 4, 8, 12, 16, 20 mm (the 80 mm along the slices do not count): the 95th
    percentile is 16 + 0.8 x 4 = 19.2 mm, the window 1.1 x that = 21.12 mm. With the median spacing
    the pixels are the data's own (2 and 0.5 mm in RAS order: R-L first), a window of 32 x 8 mm at
    16 px; sized by the foreground, the 0.5 mm axis coarsens to 21.12 / 16 = 1.32 mm and the 2 mm
    axis, already wide enough, keeps its pixels. A width in mm is divided by the size."""
    fingerprint = compute_fingerprint(_boxes_dataset(tmp_path))
    assert foreground_field_of_view(fingerprint) == pytest.approx(21.12)
    assert plan_from_fingerprint(fingerprint, size=16).target_spacing == (2.0, 0.5)
    assert plan_from_fingerprint(fingerprint, size=16, field_of_view="foreground").target_spacing == (
        2.0, pytest.approx(1.32))
    assert plan_from_fingerprint(fingerprint, size=64, field_of_view="foreground").target_spacing == (2.0, 0.5)
    assert plan_from_fingerprint(fingerprint, size=16, field_of_view="40").target_spacing == (2.5, 2.5)
    assert plan_from_fingerprint(fingerprint, size=16, field_of_view=40,
                                 target_spacing=(1.0, 1.0)).target_spacing == (1.0, 1.0)


@pytest.mark.parametrize(("given", "stored"), [("spacing", "spacing"), ("Foreground", "foreground"), (150, "150"),
                                                ("96.5mm", "96.5"), (" 80 ", "80")])
def test_a_field_of_view_is_stored_as_its_name_or_its_width(given, stored):
    assert check_field_of_view(given) == stored


@pytest.mark.parametrize("given", ["wide", 0, -5, "nan", "inf", True, ""])
def test_a_field_of_view_that_is_neither_a_name_nor_a_width_is_refused(given):
    with pytest.raises(ValueError, match="field_of_view must be spacing, foreground or a width in mm > 0"):
        check_field_of_view(given)


def test_every_qc_method_takes_the_field_of_view_from_its_config():
    """The three windowed QC methods validate the setting where it is set; their presets size the
    window by the foreground, and a saved config without the setting (every model saved before
    it existed, the shipped ones too) reads back as the median-spacing window it was made with."""
    from segqc.qc.baselines.cae.config import CaeConfig
    from segqc.qc.nnqc.config import NnqcConfig
    from segqc.qc.qcresunet.config import QcResUNetConfig

    for kind in (NnqcConfig, QcResUNetConfig, CaeConfig):
        for name in ("tiny", "small", "paper"):
            assert kind.preset(name).field_of_view == "foreground"
        saved = {k: v for k, v in kind.preset("small").to_dict().items() if k != "field_of_view"}
        assert kind.from_dict(saved).field_of_view == "spacing"
        config = kind.preset("small")
        assert config.with_overrides(field_of_view=120).field_of_view == "120"
        with pytest.raises(ValueError, match="field_of_view"):
            config.with_overrides(field_of_view="everything")
