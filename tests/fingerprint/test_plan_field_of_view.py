"""The in-plane window a QC model sees: the median spacing, the training foreground's extent, or
a width in mm."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_folders import write_dataset

from segqc.fingerprint import compute_fingerprint
from segqc.fingerprint.preprocessing import check_field_of_view, foreground_field_of_view, plan_from_fingerprint
from segqc.io.geometry import Geometry

# array axis 0 is the slice axis (superior), axis 1 runs right-left and axis 2 anterior-posterior:
# the RAS order of the axes is 1, 2, 0
_SLICES_FIRST = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0)


def _boxes_dataset(root):
    """Five cases on a 4 mm x 2 mm x 0.5 mm grid (slices first): 20 slices (80 mm, along the slice
    axis), 2 voxels right-left (4 mm) and a box of 8 + 8k voxels anterior-posterior (4, 8, 12, 16,
    20 mm)."""
    cases = {}
    for k in range(5):
        label = np.zeros((24, 8, 60), np.uint8)
        label[2:22, 3:5, 2:2 + 8 + 8 * k] = 1
        geometry = Geometry(shape=label.shape, spacing=(4.0, 2.0, 0.5), origin=(0.0, 0.0, 0.0),
                            direction=_SLICES_FIRST)
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


def test_a_2d_dataset_takes_both_of_its_axes(tmp_path):
    """2D images of 0.5 x 2 mm pixels with boxes of 8 + 8k by 2 pixels: the same extents 4..20 mm
    and the same 21.12 mm window."""
    cases = {}
    for k in range(5):
        label = np.zeros((60, 8), np.uint8)
        label[2:2 + 8 + 8 * k, 3:5] = 1
        cases[f"case{k}"] = (label.astype(np.float32) * 100 + 5, label, Geometry.from_shape(label.shape, (0.5, 2.0)))
    fingerprint = compute_fingerprint(write_dataset(tmp_path, cases, channel="MR"))
    assert foreground_field_of_view(fingerprint) == pytest.approx(21.12)


def test_a_width_that_would_make_pixels_far_finer_than_the_data_is_refused(tmp_path):
    """The data's finest median spacing is 0.5 mm: at 16 px a 2 mm window (0.125 mm pixels, a
    quarter) is the finest taken, 1 mm is refused with one line naming the dataset and the width
    to give; no failure without foreground (the median spacing is kept)."""
    from segqc.errors import InputError

    fingerprint = compute_fingerprint(_boxes_dataset(tmp_path))
    assert plan_from_fingerprint(fingerprint, size=16, field_of_view=2).target_spacing == (0.125, 0.125)
    with pytest.raises(InputError, match=r"field_of_view 1 mm at 16 px makes 0.0625 mm pixels, finer than 0.25 of "
                                         r"the data's median spacing \(0.5 mm\); give at least 2 mm") as error:
        plan_from_fingerprint(fingerprint, size=16, field_of_view="1mm")
    assert error.value.path is not None and error.value.path.name == tmp_path.name


@pytest.mark.parametrize(("given", "stored"), [("spacing", "spacing"), ("Foreground", "foreground"), (150, "150"),
                                                ("96.5mm", "96.5"), (" 80 ", "80"), (150.00001, "150.00001")])
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
        for value in ("120", "foreground", "spacing"):  # saved with the weights and read back
            assert kind.from_dict(config.with_overrides(field_of_view=value).to_dict()).field_of_view == value
        with pytest.raises(ValueError, match="field_of_view"):
            config.with_overrides(field_of_view="everything")


def test_a_run_recorded_before_the_setting_existed_continues_with_the_window_it_had(tmp_path):
    """A run folder whose record lacks field_of_view (every run of an earlier segqc) was trained at
    the median spacing: continuing it with ``spacing`` passes, with ``foreground`` is refused naming
    the setting."""
    from segqc.errors import InputError
    from segqc.qc.nnqc.config import NnqcConfig
    from segqc.training.stages import check_run_record, check_training_folder

    old = {k: v for k, v in NnqcConfig.preset("tiny").with_overrides(field_of_view="spacing").resume_key().items()
           if k != "field_of_view"}
    check_run_record(tmp_path, method="nnqc", settings=old, data={"cases": 4})
    check_training_folder(tmp_path, method="nnqc",
                          settings=NnqcConfig.preset("tiny").with_overrides(field_of_view="spacing").resume_key())
    with pytest.raises(InputError, match=r"field_of_view 'spacing' -> 'foreground'"):
        check_training_folder(tmp_path, method="nnqc", settings=NnqcConfig.preset("tiny").resume_key())
