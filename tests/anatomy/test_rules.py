"""Anatomical rules on whole-body phantoms with known answers: every injected error is undone exactly,
on grids of other spacings and orientations, and the clean phantom is left alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from segqc.anatomy.phantom import make_phantom
from segqc.anatomy.rules import apply_rules, load_rules, side_pairs
from segqc.anatomy.scheme import shipped_scheme
from segqc.anatomy.space import axis_coordinate
from segqc.cli.main import app
from segqc.errors import InputError
from segqc.io.images import read_label_map, write_image

RULES = load_rules("dap_total")
FLIPPED = (-1.0, 0, 0, 0, 0, 1.0, 0, -1.0, 0)  # x reversed, y and z swapped (and one reversed)
GRIDS = [pytest.param(6.0, None, id="6mm"), pytest.param(8.0, FLIPPED, id="8mm-flipped")]


def _swap(labels: np.ndarray, phantom, a: str, b: str) -> None:
    va, vb = phantom.value(a), phantom.value(b)
    ma, mb = phantom.labels == va, phantom.labels == vb
    labels[ma], labels[mb] = vb, va


def _changed_voxels(log: pd.DataFrame) -> int:
    return int(log["voxels"].sum())


@pytest.mark.parametrize("spacing, direction", GRIDS)
@pytest.mark.parametrize("sex", ["M", "F"])
def test_the_clean_phantom_is_left_alone(spacing, direction, sex):
    phantom = make_phantom(spacing=spacing, sex=sex, direction=direction)
    fixed, log = apply_rules(phantom.labels, phantom.geometry, RULES, metadata={"sex": sex})
    np.testing.assert_array_equal(fixed, phantom.labels)
    assert (log["voxels"] == 0).all()


@pytest.mark.parametrize("spacing, direction", GRIDS)
def test_left_right_swaps_are_undone_by_the_midsagittal_plane(spacing, direction):
    phantom = make_phantom(spacing=spacing, direction=direction)
    labels = phantom.labels.copy()
    for left, right in [("kidney_left", "kidney_right"), ("lung_upper_lobe_left", "lung_upper_lobe_right"),
                        ("femur_left", "femur_right"), ("rib_left_7", "rib_right_7")]:
        _swap(labels, phantom, left, right)
    fixed, log = apply_rules(labels, phantom.geometry, RULES, metadata={"sex": "M"})
    np.testing.assert_array_equal(fixed, phantom.labels)
    assert set(log.loc[log["voxels"] > 0, "rule"]) == {"left_right"}
    assert _changed_voxels(log) == int((labels != phantom.labels).sum())
    assert "plane from 26 midline centroids" in log["detail"].iloc[0]  # 25 vertebrae + sternum


def test_left_right_falls_back_to_the_body_centre_without_midline_landmarks():
    phantom = make_phantom()
    clean = phantom.labels.copy()
    midline = np.isin(clean, shipped_scheme("total").values_under("vertebrae") + (phantom.value("sternum"),))
    clean[midline] = 0
    labels = clean.copy()
    labels[phantom.labels == phantom.value("kidney_left")] = phantom.value("kidney_right")
    fixed, log = apply_rules(labels, phantom.geometry, load_rules("dap_total"), metadata={"sex": "M"})
    np.testing.assert_array_equal(fixed, clean)
    assert "body-centre fallback" in log.loc[log["rule"] == "left_right", "detail"].iloc[0]


@pytest.mark.parametrize("spacing, direction", GRIDS)
def test_ribs_and_vertebrae_are_renumbered_top_down(spacing, direction):
    phantom = make_phantom(spacing=spacing, direction=direction)
    labels = phantom.labels.copy()
    for i in range(1, 13):  # left ribs numbered bottom-up, right ribs shifted by two
        labels[phantom.labels == phantom.value(f"rib_left_{i}")] = phantom.value(f"rib_left_{13 - i}")
        labels[phantom.labels == phantom.value(f"rib_right_{i}")] = phantom.value(f"rib_right_{(i + 1) % 12 + 1}")
    _swap(labels, phantom, "vertebrae_T5", "vertebrae_T6")
    _swap(labels, phantom, "vertebrae_L1", "vertebrae_L3")
    fixed, log = apply_rules(labels, phantom.geometry, RULES, metadata={"sex": "M"})
    np.testing.assert_array_equal(fixed, phantom.labels)
    assert set(log.loc[log["voxels"] > 0, "rule"]) == {"order_series"}
    assert _changed_voxels(log) == int((labels != phantom.labels).sum())


def test_a_series_cut_by_the_field_of_view_keeps_its_numbers():
    phantom = make_phantom()
    clean = phantom.labels.copy()
    for i in (1, 2, 3):  # the top three ribs of each side are outside the field of view
        clean[np.isin(clean, [phantom.value(f"rib_left_{i}"), phantom.value(f"rib_right_{i}")])] = 0
    labels = clean.copy()
    _swap(labels, phantom, "rib_left_8", "rib_left_9")
    fixed, _ = apply_rules(labels, phantom.geometry, RULES, metadata={"sex": "M"})
    np.testing.assert_array_equal(fixed, clean)


def test_stray_components_and_structures_outside_their_region_are_removed():
    phantom = make_phantom()
    labels = phantom.labels.copy()
    brain = np.argwhere(phantom.labels == phantom.value("brain")).mean(axis=0).astype(int)
    blob = tuple(slice(c - 1, c + 2) for c in brain)
    labels[blob] = phantom.value("liver")  # a second liver component inside the head
    pelvis = np.argwhere(phantom.labels == phantom.value("urinary_bladder")).mean(axis=0).astype(int)
    labels[tuple(slice(c - 1, c + 1) for c in pelvis)] = phantom.value("small_bowel")  # fine: pelvis is abdomen-ish
    head_bowel = tuple(slice(c + 3, c + 5) for c in brain)
    labels[head_bowel] = phantom.value("colon")  # colon in the head: outside the abdomen
    expected = phantom.labels.copy()
    expected[tuple(slice(c - 1, c + 1) for c in pelvis)] = phantom.value("small_bowel")
    fixed, log = apply_rules(labels, phantom.geometry, RULES, metadata={"sex": "M"})
    np.testing.assert_array_equal(fixed, np.where(expected == phantom.value("brain"), fixed, expected))
    removed = log[log["class_to"] == ""].set_index("class_from")
    assert removed.loc["liver", "rule"] == "largest_component" and removed.loc["liver", "voxels"] == 27
    assert removed.loc["colon", "rule"] == "restrict_to_region" and removed.loc["colon", "voxels"] == 8
    assert "small_bowel" not in removed.index


def test_sex_rule_removes_the_other_sexes_structures_and_logs_unknown_sex():
    phantom = make_phantom(sex="M")
    prostate = phantom.labels == phantom.value("prostate")
    fixed, log = apply_rules(phantom.labels, phantom.geometry, RULES, metadata={"sex": "F"})
    assert not (fixed == phantom.value("prostate")).any()
    np.testing.assert_array_equal(fixed[~prostate], phantom.labels[~prostate])
    assert log.loc[log["voxels"] > 0, "voxels"].sum() == prostate.sum()
    unchanged, log = apply_rules(phantom.labels, phantom.geometry, RULES, metadata={})
    np.testing.assert_array_equal(unchanged, phantom.labels)
    assert "sex unknown" in " ".join(log["detail"])


def test_side_pairs_cover_the_paired_structures_of_total():
    scheme = shipped_scheme("total")
    names = {(scheme.name_of(a), scheme.name_of(b)) for a, b in side_pairs(scheme)}
    assert ("kidney_left", "kidney_right") in names and ("rib_left_12", "rib_right_12") in names
    assert ("subclavian_artery_left", "subclavian_artery_right") in names
    assert sum(a.startswith("rib_left_") for a, _ in names) == 12
    assert all(a.replace("left", "right") == b for a, b in names)
    assert not any(a.startswith("lung") and "middle" in a for a, _ in names)  # no left middle lobe


def test_rules_files_are_validated_naming_the_file(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("scheme: total\nsteps:\n- {rule: largest_component, classes: [livr]}\n")
    with pytest.raises(InputError, match=r"rules\.yaml: step 1 \(largest_component\): livr not in the scheme"):
        load_rules(path)
    path.write_text("scheme: total\nsteps:\n- {rule: tidy_up}\n")
    with pytest.raises(InputError, match="unknown rule 'tidy_up'"):
        load_rules(path)


@pytest.mark.parametrize("step, problem", [
    ("{rule: largest_component, classes: 5}", "step 1 (largest_component): classes must be a list of class names, "
                                              "got 5"),
    ("{rule: largest_component, classes: spleen}", "step 1 (largest_component): classes must be a list of class "
                                                   "names, got 'spleen'"),
    ("{rule: largest_component, classes: [spleen], keep_fraction: abc}",
     "step 1 (largest_component): keep_fraction must be a number from 0 to 1, got 'abc'"),
    ("{rule: largest_component, classes: [spleen], min_voxels: many}",
     "step 1 (largest_component): min_voxels must be a whole number >= 0, got 'many'"),
    ("{rule: largest_component, classes: [vertebrae]}", "step 1 (largest_component): vertebrae: a group of the "
                                                        "scheme 'total', not a class with a label value"),
    ("{rule: left_right, max_tilt_degrees: steep}",
     "step 1 (left_right): max_tilt_degrees must be a number from 0 to 90, got 'steep'"),
    ("{rule: restrict_to_region, regions: {head: {inferior: {landmark: vertebrae_C3}}}, classes: [brain]}",
     "step 1 (restrict_to_region): classes must map each region to a list of class names"),
    ("{rule: restrict_to_region, regions: {head: {inferior: {landmark: vertebrae_C3, margin_mm: wide}}}, "
     "classes: {head: [brain]}}", "step 1 (restrict_to_region): region 'head': inferior margin_mm must be a number"),
    ("{rule: order_series, series: ribs, left: 'rib_left_{x}'}",
     "step 1 (order_series): left must be a class name template with {n} for the number"),
    ("{rule: order_series, series: ribs, left: 'rib_left_{n}', count: 2.5}",
     "step 1 (order_series): count must be a whole number >= 1, got 2.5"),
], ids=["classes-int", "classes-string", "keep-fraction", "min-voxels", "group", "tilt", "region-classes-list",
        "margin", "template", "count"])
def test_malformed_rules_are_one_error_naming_the_file_the_step_and_the_option(tmp_path, step, problem):
    path = tmp_path / "rules.yaml"
    path.write_text(f"scheme: total\nsteps:\n- {step}\n")
    with pytest.raises(InputError) as info:
        load_rules(path)
    assert str(info.value).startswith(f"{path}: {problem}"), str(info.value)


def test_rules_command_fixes_a_folder_and_logs_every_change(tmp_path):
    clean = make_phantom(sex="M")
    broken = clean.labels.copy()
    _swap(broken, clean, "kidney_left", "kidney_right")
    folder = tmp_path / "labels"
    write_image(folder / "ok.nii.gz", clean.labels, clean.geometry)
    write_image(folder / "swapped.nii.gz", broken, clean.geometry)
    (tmp_path / "meta.csv").write_text("case,sex\nok,M\nswapped,F\n")
    out = tmp_path / "out"
    args = ["labels", "rules", str(folder), "--metadata", str(tmp_path / "meta.csv"), "-o", str(out), "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(read_label_map(out / "ok.nii.gz").array, clean.labels)
    fixed = read_label_map(out / "swapped.nii.gz").array
    expected = np.where(clean.labels == clean.value("prostate"), 0, clean.labels)  # F: prostate removed
    np.testing.assert_array_equal(fixed, expected)
    changes = pd.read_csv(out / "changes.csv")
    assert set(changes.loc[changes["voxels"] > 0, "case"]) == {"swapped"}
    assert set(changes.loc[changes["voxels"] > 0, "rule"]) == {"left_right", "sex"}
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "reused" in again.output


def test_touching_vertebrae_are_numbered_label_by_label():
    phantom = make_phantom()
    clean = phantom.labels.copy()
    # close the gaps: every vertebra grows down to the one below, so neighbours touch
    names = list(phantom.vertebra_z)
    z = np.broadcast_to(axis_coordinate(phantom.geometry, 2), clean.shape)
    column = np.isin(clean, [phantom.value(n) for n in names])
    column = np.any(column, axis=2, keepdims=True) & (z >= phantom.vertebra_z[names[0]][0]) & (
        z <= phantom.vertebra_z[names[-1]][1])
    for lower, upper in zip(names, names[1:], strict=False):
        gap = column & (z > phantom.vertebra_z[lower][1]) & (z < phantom.vertebra_z[upper][0]) & (clean == 0)
        clean[gap] = phantom.value(lower)
    labels = clean.copy()
    t8, t9 = phantom.value("vertebrae_T8"), phantom.value("vertebrae_T9")
    labels[clean == t8], labels[clean == t9] = t9, t8
    fixed, log = apply_rules(labels, phantom.geometry, RULES, metadata={"sex": "M"})
    np.testing.assert_array_equal(fixed, clean)
    assert _changed_voxels(log) == int((labels != clean).sum())


def test_real_totalsegmentator_labels_keep_their_vertebrae(shared_data):
    image = read_label_map(shared_data("totalseg") / "example_seg.nii.gz")
    fixed, log = apply_rules(image.array, image.geometry, RULES, metadata={})
    # touching vertebrae of a real 3 mm CT stay as labelled; the ribs' two orders disagree: untouched
    assert not ((log["rule"] == "order_series") & (log["voxels"] > 0)).any()
    vertebrae = np.isin(image.array, shipped_scheme("total").values_under("vertebrae"))
    np.testing.assert_array_equal(fixed[vertebrae], image.array[vertebrae])
    # the pancreas comes in two similar pieces: both kept (logged), only specks removed
    assert (log["detail"].str.contains("2 components of at least 0.5")).any()
    assert int((fixed != image.array).sum()) == int(log["voxels"].sum()) < 10


def test_the_midsagittal_plane_recovers_its_tilt_from_landmarks_spread_in_y_and_z():
    """Landmarks on x = 5 + 0.2 y + 0.1 z (mm), 40 mm apart in y and z: a least-squares plane
    through them is that plane (tilt atan(|(0.2, 0.1)|) = 12.6 degrees)."""
    from segqc.anatomy.space import fit_midsagittal_plane

    rng = np.random.default_rng(0)
    yz = rng.uniform(0, 40, size=(12, 2))
    points = [np.array([5 + 0.2 * y + 0.1 * z, y, z]) for y, z in yz]
    plane = fit_midsagittal_plane(points, fallback_x=0.0)
    assert (plane.a, plane.b, plane.c) == (pytest.approx(5.0), pytest.approx(0.2), pytest.approx(0.1))
    assert plane.tilt_degrees == pytest.approx(np.degrees(np.arctan(np.hypot(0.2, 0.1))))


def test_largest_component_keeps_a_class_whose_largest_part_has_exactly_the_minimum_size():
    """min_voxels is a minimum: a largest component of exactly 27 voxels stays, its 1-voxel stray
    goes; with min_voxels 28 the whole class goes."""
    from segqc.anatomy.rules import RuleSet
    from segqc.anatomy.scheme import LabelClass, LabelScheme
    from segqc.io.geometry import Geometry

    scheme = LabelScheme(name="toy", classes=(LabelClass("liver", 1),))
    geometry = Geometry(shape=(10, 10, 10), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    labels = np.zeros(geometry.shape, np.uint8)
    labels[1:4, 1:4, 1:4] = 1
    labels[8, 8, 8] = 1
    for minimum, kept in ((27, 27), (28, 0)):
        rules = RuleSet("toy", scheme, ({"rule": "largest_component", "classes": ["liver"], "min_voxels": minimum},))
        fixed, _ = apply_rules(labels, geometry, rules)
        assert int((fixed == 1).sum()) == kept


def _sided_case():
    from segqc.anatomy.rules import RuleSet
    from segqc.anatomy.scheme import LabelClass, LabelScheme
    from segqc.io.geometry import Geometry

    scheme = LabelScheme(name="toy", classes=(
        LabelClass("kidney_left", 1), LabelClass("kidney_right", 2), LabelClass("vertebrae", None),
        LabelClass("vertebra_a", 3, parent="vertebrae"), LabelClass("vertebra_b", 4, parent="vertebrae")))
    geometry = Geometry(shape=(60, 20, 40), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return scheme, geometry, RuleSet("toy", scheme, ({"rule": "left_right"},))


def test_left_right_leaves_components_near_the_midline_alone():
    """Vertebrae at x = 20 mm (LPS: +x is the patient's left). A "right kidney" 12 mm left of the
    plane is relabelled left; one 2 mm left of it, within min_distance_mm 5, is left alone."""
    scheme, geometry, rules = _sided_case()
    labels = np.zeros(geometry.shape, np.uint8)
    labels[19:22, 9:12, 3:6] = 3
    labels[19:22, 9:12, 30:33] = 4
    labels[21:24, 2:5, 15:18] = 2  # centroid x = 22: 2 mm left of the plane
    labels[31:34, 14:17, 15:18] = 2  # centroid x = 32: 12 mm left
    fixed, log = apply_rules(labels, geometry, rules)
    assert (fixed[21:24, 2:5, 15:18] == 2).all() and (fixed[31:34, 14:17, 15:18] == 1).all()
    assert log["class_to"].tolist() == ["kidney_left"] and "from 2 midline" in log["detail"].iloc[0]


def test_a_midline_tilted_beyond_the_limit_falls_back_to_the_body_centre():
    """Vertebrae on a 45-degree line in x-z (tilt above 30): the plane is the body's centre x
    instead, and the log says why."""
    scheme, geometry, rules = _sided_case()
    labels = np.zeros(geometry.shape, np.uint8)
    labels[9:12, 9:12, 3:6] = 3  # x 10 at z 4
    labels[39:42, 9:12, 33:36] = 4  # x 40 at z 34
    labels[52:55, 2:5, 15:18] = 2  # far to the left of any plane through the body
    fixed, log = apply_rules(labels, geometry, rules)
    assert (fixed[52:55, 2:5, 15:18] == 1).all()
    assert "tilted 45 deg > 30: body-centre fallback" in log["detail"].iloc[0]


def test_a_component_relabelled_by_one_rule_is_seen_by_the_next():
    """A "right kidney" blob far left of the plane and far from the left kidney becomes left
    kidney; the next step (largest component of the left kidney) must find it there and remove
    it. Both kidneys and the blob are cubes: 27 + 27 voxels of kidney_left after the first step,
    the stray one (8 voxels) removed by the second."""
    from segqc.anatomy.rules import RuleSet

    scheme, geometry, _ = _sided_case()
    rules = RuleSet("toy", scheme, ({"rule": "left_right"},
                                    {"rule": "largest_component", "classes": ["kidney_left"]}))
    labels = np.zeros(geometry.shape, np.uint8)
    labels[19:22, 9:12, 3:6] = 3  # vertebrae at x = 20
    labels[19:22, 9:12, 30:33] = 4
    labels[30:33, 9:12, 15:18] = 1  # left kidney, x = 31
    labels[5:8, 9:12, 15:18] = 2  # right kidney, x = 6
    labels[50:52, 2:4, 35:37] = 2  # a stray "right kidney" at x = 50.5, z = 35.5, outside both boxes
    fixed, log = apply_rules(labels, geometry, rules)
    assert (fixed[50:52, 2:4, 35:37] == 0).all()
    assert int((fixed == 1).sum()) == 27 and int((fixed == 2).sum()) == 27
    assert log[["rule", "class_from", "class_to", "voxels"]].values.tolist() == [
        ["left_right", "kidney_right", "kidney_left", 8], ["largest_component", "kidney_left", "", 8]]


def test_a_series_renumbered_by_one_rule_is_seen_by_the_next():
    """Two cubes numbered bottom-up (a below b, z up the third axis) are renumbered top-down; the
    sex rule after it must then remove the "a" at the top, where a never was before."""
    from segqc.anatomy.rules import RuleSet
    from segqc.anatomy.scheme import LabelClass, LabelScheme
    from segqc.io.geometry import Geometry

    scheme = LabelScheme(name="toy", classes=(LabelClass("a", 1), LabelClass("b", 2)))
    geometry = Geometry(shape=(12, 12, 40), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    rules = RuleSet("toy", scheme, ({"rule": "order_series", "series": "ab", "names": ["a", "b"]},
                                    {"rule": "sex", "male_only": ["a"]}))
    labels = np.zeros(geometry.shape, np.uint8)
    labels[4:7, 4:7, 30:33] = 2  # top, numbered b
    labels[4:7, 4:7, 5:8] = 1  # bottom, numbered a
    fixed, log = apply_rules(labels, geometry, rules, metadata={"sex": "F"})
    assert (fixed[4:7, 4:7, 30:33] == 0).all() and (fixed[4:7, 4:7, 5:8] == 2).all()
    assert int(np.count_nonzero(fixed)) == 27
    assert log["rule"].tolist() == ["order_series", "order_series", "sex"]


@pytest.mark.parametrize("at, margin, expected",
                         [("min", 2.0, 3.0 - 2.0), ("max", 0.0, 32.0), ("centre", 1.0, 17.5 + 1.0)])
def test_region_limits_from_a_landmark_group_with_and_without_boxes(at, margin, expected):
    """Vertebrae a (z 3..5) and b (z 30..32), 27 voxels each, z = the third index on this grid: the
    group's lowest point 3, highest 32, centre (4 + 31) / 2; margins widen the slab. Tight boxes,
    boxes larger than needed and no boxes give the same limits; without a box the group is absent."""
    from segqc.anatomy.regions import parse_regions, region_limits
    from segqc.metrics.masks import label_boxes

    scheme, geometry, _ = _sided_case()
    labels = np.zeros(geometry.shape, np.uint8)
    labels[19:22, 9:12, 3:6] = 3
    labels[19:22, 9:12, 30:33] = 4
    labels[40:43, 9:12, 10:13] = 1  # a kidney: not a landmark
    end = "inferior" if at == "min" else "superior"
    region = parse_regions({"r": {end: {"landmark": "vertebrae", "at": at, "margin_mm": margin}}}, scheme)["r"]
    want = (expected, np.inf) if end == "inferior" else (-np.inf, expected)
    tight = label_boxes(labels)
    larger = {value: tuple(slice(0, n) for n in labels.shape) for value in tight}
    for boxes in (None, tight, larger):
        assert region_limits(region, labels, geometry, scheme, boxes=boxes) == pytest.approx(want)
    assert region_limits(region, labels, geometry, scheme, boxes={1: tight[1]}) is None
