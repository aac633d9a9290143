"""Label schemes (validation, files, the shipped TotalSegmentator schemes, version diffs) and mapping
label maps between schemes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from segqc.anatomy.mapping import load_mapping, mapping_by_name, mapping_into
from segqc.anatomy.scheme import (
    SHIPPED_SCHEMES,
    LabelClass,
    LabelScheme,
    load_scheme,
    scheme_diff,
    shipped_scheme,
)
from segqc.errors import InputError


def _scheme(name: str, items: list[tuple[str, int | None, str | None]]) -> LabelScheme:
    return LabelScheme(name=name, classes=tuple(LabelClass(name=n, value=v, parent=p) for n, v, p in items))


ORGANS = _scheme("organs", [("kidney", None, None), ("kidney_left", 1, "kidney"), ("kidney_right", 2, "kidney"),
                            ("liver", 3, None), ("tumour", 4, "liver")])


@pytest.mark.parametrize("items, problem", [
    ([("a", 1, None), ("b", 1, None)], "value 1 is both"),
    ([("a", 1, None), ("a", 2, None)], "appears twice"),
    ([("a", 0, None)], "values are positive"),
    ([("a", 1, "nowhere")], "unknown parent"),
    ([("a", 1, "b"), ("b", 2, "a")], "cycle"),
])
def test_scheme_refuses_ambiguous_definitions(items, problem):
    with pytest.raises(ValueError, match=problem):
        _scheme("bad", items)


def test_scheme_hierarchy_depths_and_group_values():
    assert ORGANS.depth("kidney") == 0 and ORGANS.depth("kidney_right") == 1
    assert ORGANS.values_under("kidney") == (1, 2)
    assert ORGANS.ancestors("tumour") == ["liver"]
    with pytest.raises(KeyError, match="group"):
        ORGANS.value_of("kidney")


@pytest.mark.parametrize("ending", [".yaml", ".json"])
def test_scheme_file_round_trip_keeps_everything(tmp_path, ending):
    scheme = LabelScheme(name="x", description="d", classes=(
        LabelClass("group"), LabelClass("a", 3, (1, 2, 3), "group", {"SNOMED": "123"}), LabelClass("b", 7)))
    assert load_scheme(scheme.save(tmp_path / f"x{ending}")) == scheme


def test_scheme_file_problems_name_the_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("classes:\n- {name: a, value: 1}\n- {name: b, value: 1}\n")
    with pytest.raises(InputError, match=r"s\.yaml: .*value 1 is both"):
        load_scheme(path)
    path.write_text("classes:\n- {name: a, value: 1.5}\n")
    with pytest.raises(InputError, match=r"s\.yaml: class 'a'.*not an integer"):
        load_scheme(path)
    with pytest.raises(InputError, match="no such label scheme"):
        load_scheme(tmp_path / "missing.yaml")


def test_scheme_from_dataset_json(shared_data):
    scheme = load_scheme(shared_data("kits19") / "dataset.json")
    assert {c.name: c.value for c in scheme.classes} == {"kidney": 1, "tumour": 2}


def test_shipped_schemes_hold_exactly_the_totalsegmentator_class_maps(shared_data):
    class_map = json.loads((shared_data("totalseg") / "class_maps.json").read_text())["class_map"]
    for name in SHIPPED_SCHEMES:
        scheme = shipped_scheme(name)
        assert {str(v): c.name for v, c in scheme.by_value.items()} == class_map[name]
    total = shipped_scheme("total")
    assert total.by_name["vertebrae_L1"].parent == "vertebrae" and total.by_name["rib_left_3"].parent == "ribs"
    assert total.by_name["heart"].parent is None  # "heart" is a class of total, not a group


def test_scheme_diff_of_totalsegmentator_v1_and_v2(shared_data):
    class_map = json.loads((shared_data("totalseg") / "class_maps.json").read_text())["class_map"]
    v1 = {n: int(v) for v, n in class_map["total_v1"].items()}
    v2 = {n: int(v) for v, n in class_map["total"].items()}
    diff = scheme_diff(shipped_scheme("total_v1"), shipped_scheme("total")).set_index("name")
    assert set(diff.index[diff["status"] == "vanished"]) == set(v1) - set(v2)
    assert set(diff.index[diff["status"] == "new"]) == set(v2) - set(v1)
    moved = {n for n in set(v1) & set(v2) if v1[n] != v2[n]}
    assert set(diff.index[diff["status"] == "moved"]) == moved
    assert "heart_myocardium" in set(diff.index[diff["status"] == "vanished"])
    # v1's aorta value (7) is the pancreas in v2: a map read with the wrong scheme changes meaning
    assert diff.loc["aorta", "old_value"] == 7 and diff.loc["aorta", "new_name_at_old_value"] == "pancreas"


def test_scheme_values_above_32_bits_are_refused_when_the_scheme_is_loaded(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("name: huge\nclasses:\n- {name: spleen, value: 99999999999}\n")
    with pytest.raises(InputError, match=r"huge\.yaml: scheme 'huge': class 'spleen' has value 99999999999; values "
                                         r"are at most 4294967295"):
        load_scheme(path)
    path.write_text("name: top\nclasses:\n- {name: spleen, value: 4294967295}\n")
    assert load_scheme(path).max_value == 2**32 - 1


@pytest.mark.parametrize("largest, dtype", [(255, np.uint8), (70_000, np.uint32), (3_000_000, np.uint32),
                                            (2**32 - 1, np.uint32), (65_535, np.uint16)])
def test_mapped_maps_keep_target_values_above_16_bits(largest, dtype):
    target = _scheme("wide", [("kidney", 5, None), ("liver", largest, None)])
    mapping = mapping_by_name(ORGANS, target, explicit={"kidney_left": "kidney", "kidney_right": "kidney",
                                                        "liver": "liver", "tumour": "liver"})
    mapped = mapping.apply(np.array([[0, 1, 2], [3, 4, 0]], dtype=np.uint8))
    assert mapped.dtype == dtype
    np.testing.assert_array_equal(mapped, np.array([[0, 5, 5], [largest, largest, 0]], dtype=np.int64))
    back = mapping_by_name(target, ORGANS, explicit={"kidney": "kidney_left", "liver": "liver"})
    np.testing.assert_array_equal(back.apply(mapped), [[0, 1, 1], [3, 3, 0]])  # large SOURCE values too


@pytest.mark.parametrize("regions, shown", [("{x: 5}", "5"), ("{x: spleen}", "'spleen'"),
                                            ("{x: [spleen, 3]}", "['spleen', 3]")])
def test_mapping_regions_that_are_not_lists_of_names_are_one_error_naming_the_file(tmp_path, regions, shown):
    path = tmp_path / "map.yaml"
    path.write_text(f"source: total\ntarget: total_mr\nregions: {regions}\n")
    with pytest.raises(InputError) as info:
        load_mapping(path)
    assert str(info.value) == f"{path}: region 'x': regions must be lists of class names, not {shown}"
    with pytest.raises(InputError, match="regions must be lists of class names"):
        mapping_into(path, shipped_scheme("total_mr"))  # labels merge SOURCE=map.yaml


def test_mapping_by_name_uses_same_names_then_parent_groups():
    v1, v2 = shipped_scheme("total_v1"), shipped_scheme("total")
    mapping = mapping_by_name(v1, v2)
    for name in ("aorta", "vertebrae_L1", "rib_left_3", "spleen"):
        assert mapping.values[v1.value_of(name)] == v2.value_of(name)
    heart = v2.value_of("heart")
    for chamber in ("heart_myocardium", "heart_atrium_left", "heart_ventricle_right"):
        assert mapping.values[v1.value_of(chamber)] == heart
        assert mapping.how[v1.value_of(chamber)] == "ancestor heart"
    assert mapping.values[v1.value_of("face")] == 0 and mapping.how[v1.value_of("face")] == "no match"
    assert not mapping.invertible


def test_mapping_applies_the_lookup_table_and_refuses_unknown_values(tmp_path):
    target = _scheme("coarse", [("kidney", 1, None), ("liver", 2, None)])
    mapping = mapping_by_name(ORGANS, target, explicit={"kidney_left": "kidney", "kidney_right": "kidney",
                                                        "tumour": None})
    labels = np.array([[0, 1, 2], [3, 4, 4]], dtype=np.uint8)
    np.testing.assert_array_equal(mapping.apply(labels), [[0, 1, 1], [2, 0, 0]])
    assert mapping.merged == {1: (1, 2)} and mapping.dropped == (4,)
    with pytest.raises(InputError, match=r"m\.nii\.gz: label values 9 are not classes"):
        mapping.apply(np.array([0, 9, 1]), tmp_path / "m.nii.gz")
    with pytest.raises(ValueError, match="cannot be inverted.*kidney <- kidney_left, kidney_right"):
        mapping.inverse()


def test_a_one_to_one_mapping_inverts_exactly():
    renumbered = _scheme("renumbered", [("kidney_left", 10, None), ("kidney_right", 20, None), ("liver", 30, None),
                                         ("tumour", 40, None)])
    mapping = mapping_by_name(ORGANS, renumbered)
    labels = np.random.default_rng(0).integers(0, 5, size=(6, 7))
    forward = mapping.apply(labels)
    assert set(np.unique(forward)) <= {0, 10, 20, 30, 40}
    np.testing.assert_array_equal(mapping.inverse().apply(forward), labels)


def test_mapping_file_with_regions_and_errors_naming_the_file(tmp_path):
    target = _scheme("coarse", [("kidney", 1, None), ("liver", 2, None), ("lesion", 3, None)])
    target.save(tmp_path / "coarse.yaml")
    ORGANS.save(tmp_path / "organs.yaml")
    path = tmp_path / "map.yaml"
    path.write_text("source: organs.yaml\ntarget: coarse.yaml\nmap: {kidney_left: kidney, kidney_right: kidney, "
                    "tumour: lesion}\nregions: {abdomen: [kidney, liver, lesion], liver_all: [liver, lesion]}\n")
    mapping = load_mapping(path)
    mapped = mapping.apply(np.array([0, 1, 2, 3, 4]))
    np.testing.assert_array_equal(mapped, [0, 1, 1, 2, 3])
    masks = mapping.region_masks(mapped)
    np.testing.assert_array_equal(masks["liver_all"], [False, False, False, True, True])
    np.testing.assert_array_equal(masks["abdomen"], [False, True, True, True, True])
    assert mapping_into(path, target).values == mapping.values
    path.write_text("source: organs.yaml\ntarget: coarse.yaml\nmap: {kidney_left: spleen}\n")
    with pytest.raises(InputError, match=r"map\.yaml: map: 'kidney_left' -> 'spleen'"):
        load_mapping(path)
    path.write_text("source: organs.yaml\ntarget: coarse.yaml\nunmapped: error\nmap: {liver: liver}\n")
    with pytest.raises(InputError, match=r"map\.yaml: .*kidney_left.* not mapped"):
        load_mapping(path)


def test_map_command_moves_a_folder_to_another_scheme_with_regions(tmp_path):
    from typer.testing import CliRunner

    from segqc.cli.main import app
    from segqc.io.geometry import Geometry
    from segqc.io.images import read_label_map, write_image

    v1, v2 = shipped_scheme("total_v1"), shipped_scheme("total")
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[0] = v1.value_of("heart_myocardium")
    labels[1] = v1.value_of("heart_atrium_left")
    labels[2] = v1.value_of("aorta")
    labels[3] = v1.value_of("face")
    geometry = Geometry.from_shape(labels.shape, spacing=(2.0, 2.0, 2.0))
    write_image(tmp_path / "in" / "c1.nii.gz", labels, geometry)
    mapping = tmp_path / "v1_to_v2.yaml"
    mapping.write_text("source: total_v1\ntarget: total\nregions: {heart_and_aorta: [heart, aorta]}\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["labels", "map", str(tmp_path / "in"), "--mapping", str(mapping),
                                      "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    mapped = read_label_map(out / "c1.nii.gz").array
    assert (mapped[:2] == v2.value_of("heart")).all() and (mapped[2] == v2.value_of("aorta")).all()
    assert (mapped[3:] == 0).all()  # face: no class in v2
    region = read_label_map(out / "regions" / "heart_and_aorta" / "c1.nii.gz").array
    np.testing.assert_array_equal(region, (np.arange(6) < 3)[:, None, None] * np.ones((1, 5, 4), np.uint8))
    assert "face (no match)" in result.output
    mapping_table = pd.read_csv(out / "mapping.csv").set_index("source")
    assert mapping_table.loc["heart_myocardium", "how"] == "ancestor heart"


def test_scheme_commands_show_and_compare(tmp_path):
    from typer.testing import CliRunner

    from segqc.cli.main import app

    runner = CliRunner()
    shown = runner.invoke(app, ["labels", "scheme", "show", "total_mr", "-o", str(tmp_path / "mr.csv")])
    assert shown.exit_code == 0, shown.output
    table = pd.read_csv(tmp_path / "mr.csv")
    assert table.loc[table["name"] == "vertebrae", "value"].item() == 19  # a class of total_mr, not a group
    diff = runner.invoke(app, ["labels", "scheme", "diff", "total_v1", "total", "-o", str(tmp_path / "d.csv")])
    assert diff.exit_code == 0, diff.output
    assert "total_v1 -> total" in diff.output
    assert len(pd.read_csv(tmp_path / "d.csv")) == 104 + 20  # every v1 name and the 20 new in v2
    bad = runner.invoke(app, ["labels", "scheme", "show", str(tmp_path / "nope.yaml")])
    assert bad.exit_code == 2 and "nope.yaml: no such label scheme" in bad.output


def test_the_inverse_keeps_the_classes_whose_value_did_not_change():
    partly = _scheme("partly", [("kidney_left", 1, None), ("kidney_right", 20, None), ("liver", 3, None),
                                ("tumour", 40, None)])
    mapping = mapping_by_name(ORGANS, partly)
    labels = np.random.default_rng(1).integers(0, 5, size=(6, 7))
    np.testing.assert_array_equal(mapping.inverse().apply(mapping.apply(labels)), labels)
