"""The folder commands of ``segqc labels`` (map, merge, rules) as a user meets them: folders without
label maps, a case the rules cannot handle among cases they can, class values above 16 bits, and
reruns into the same output folder after an input was removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from segqc.anatomy.phantom import make_phantom
from segqc.anatomy.scheme import shipped_scheme
from segqc.cli.main import app
from segqc.io.geometry import Geometry
from segqc.io.images import read_label_map, write_image

runner = CliRunner()
TOTAL = shipped_scheme("total")
GEOMETRY = Geometry.from_shape((6, 5, 4), spacing=(2.0, 2.0, 2.0))


def _labels(*names: str) -> np.ndarray:
    """A small 3D map in the ``total`` scheme: one slab of each class along axis 0."""
    labels = np.zeros(GEOMETRY.shape, np.uint8)
    for i, name in enumerate(names):
        labels[i] = TOTAL.value_of(name)
    return labels


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def _commands(folder: Path, out: Path) -> dict[str, list[str]]:
    return {"map": ["labels", "map", str(folder), "--source", "total", "--to", "total_mr", "-o", str(out), "-q"],
            "rules": ["labels", "rules", str(folder), "-o", str(out), "-q"],
            "merge": ["labels", "merge", str(folder), str(folder), "--names", "a,b", "--scheme", "total",
                      "-o", str(out), "-q"]}


@pytest.mark.parametrize("command", ["map", "rules", "merge"])
@pytest.mark.parametrize("content", ["empty", "notes-only"])
def test_a_folder_without_label_maps_stops_the_run_with_exit_code_2(tmp_path, command, content):
    folder = tmp_path / "in"
    folder.mkdir()
    if content == "notes-only":
        (folder / "notes.txt").write_text("x\n")
    result = runner.invoke(app, _commands(folder, tmp_path / "out")[command])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {folder}: holds no label maps (CASE.nii.gz)"


def test_merge_names_the_one_source_folder_without_label_maps(tmp_path):
    write_image(tmp_path / "a" / "c1.nii.gz", _labels("liver"), GEOMETRY)
    (tmp_path / "b").mkdir()
    result = runner.invoke(app, ["labels", "merge", str(tmp_path / "a"), str(tmp_path / "b"), "--scheme", "total",
                                 "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2, result.output
    assert _errors(result.output) == [f"error: {tmp_path / 'b'}: holds no label maps (CASE.nii.gz)"]


def test_rules_fail_a_2d_map_in_one_line_and_finish_the_3d_ones(tmp_path):
    phantom = make_phantom(sex="M")
    folder = tmp_path / "in"
    write_image(folder / "a3d.nii.gz", phantom.labels, phantom.geometry)
    flat = phantom.labels[:, :, phantom.labels.shape[2] // 2]
    write_image(folder / "b2d.nii.gz", flat, Geometry.from_shape(flat.shape, phantom.geometry.spacing[:2]))
    out = tmp_path / "out"
    result = runner.invoke(app, ["labels", "rules", str(folder), "-o", str(out), "-q"])
    assert result.exit_code == 1, result.output
    assert _errors(result.output) == [f"error: {folder / 'b2d.nii.gz'}: is 2D; rules need 3D label maps"]
    assert "1 of 2 case(s) done, 1 failed" in result.output
    np.testing.assert_array_equal(read_label_map(out / "a3d.nii.gz").array, phantom.labels)
    assert not (out / "b2d.nii.gz").exists()


def test_map_and_merge_keep_target_values_above_16_bits(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("name: big\nclasses:\n  - {name: spleen, value: 70000}\n  - {name: liver, value: 5}\n")
    write_image(tmp_path / "in" / "c1.nii.gz", _labels("spleen", "liver", "spleen"), GEOMETRY)
    out = tmp_path / "mapped"
    result = runner.invoke(app, ["labels", "map", str(tmp_path / "in"), "--source", "total", "--to", str(big),
                                 "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    mapped = read_label_map(out / "c1.nii.gz").array
    assert mapped.dtype == np.uint32
    expected = np.zeros(GEOMETRY.shape, np.uint32)
    expected[[0, 2]], expected[1] = 70_000, 5
    np.testing.assert_array_equal(mapped, expected)
    classes = pd.read_csv(out / "classes.csv").set_index("class")
    assert classes.loc["spleen", "voxels"] == 2 * 5 * 4 and classes.loc["spleen", "value"] == 70_000
    merged = runner.invoke(app, ["labels", "merge", str(out / "c1.nii.gz"), "--scheme", str(big), "--case", "c1",
                                 "-o", str(tmp_path / "merged"), "-q"])
    assert merged.exit_code == 0, merged.output
    np.testing.assert_array_equal(read_label_map(tmp_path / "merged" / "merged" / "c1.nii.gz").array, expected)


_LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # 3 GiB: tables by the largest value would need 32
from segqc.cli.main import app
sys.argv = ["segqc", *sys.argv[1:]]
app()
"""


def test_the_largest_class_value_does_not_size_any_array(tmp_path):
    top = tmp_path / "top.yaml"
    top.write_text(f"name: top\nclasses:\n  - {{name: spleen, value: {2**32 - 1}}}\n  - {{name: liver, value: 5}}\n")
    write_image(tmp_path / "in" / "c1.nii.gz", _labels("spleen", "liver"), GEOMETRY)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

    def segqc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _LIMITED, *args], capture_output=True, text=True, env=env,
                              timeout=300)

    mapped = segqc("labels", "map", str(tmp_path / "in"), "--source", "total", "--to", str(top),
                   "-o", str(tmp_path / "mapped"), "-q")
    assert mapped.returncode == 0, mapped.stderr[-2000:]
    labels = read_label_map(tmp_path / "mapped" / "c1.nii.gz").array
    assert labels.dtype == np.uint32 and labels.max() == 2**32 - 1
    merged = segqc("labels", "merge", str(tmp_path / "mapped"), f"{tmp_path / 'in'}=total", "--scheme", str(top),
                   "-o", str(tmp_path / "merged"), "-q")
    assert merged.returncode == 0, merged.stderr[-2000:]
    np.testing.assert_array_equal(read_label_map(tmp_path / "merged" / "merged" / "c1.nii.gz").array, labels)


def test_the_same_warning_of_many_cases_is_one_line(tmp_path):
    """`labels map` printed one "dropped" warning per case: 200 lines for 200 cases."""
    folder, out = tmp_path / "in", tmp_path / "out"
    for k in range(5):
        write_image(folder / f"c{k}.nii.gz", _labels("liver", "trachea"), GEOMETRY)
    write_image(folder / "other.nii.gz", _labels("liver", "thyroid_gland"), GEOMETRY)
    result = runner.invoke(app, _commands(folder, out)["map"])
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.output.split("warning:")[1:]]
    dropped = [line for line in lines if "dropped" in line]
    assert len(dropped) == 2, result.output
    assert dropped[0].startswith("dropped trachea (5 cases: c0, c1, c2, ...)"), dropped
    assert dropped[1].startswith("other: dropped thyroid_gland"), dropped


def test_a_rerun_after_an_input_was_removed_leaves_no_output_map_of_it(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    for case in ("c1", "c2"):
        write_image(folder / f"{case}.nii.gz", _labels("liver", "spleen"), GEOMETRY)
    mapping = tmp_path / "m.yaml"
    mapping.write_text("source: total\ntarget: total_mr\nregions: {abdomen: [liver, spleen]}\n")
    args = ["labels", "map", str(folder), "--mapping", str(mapping), "-o", str(out), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    assert (out / "c2.nii.gz").is_file() and (out / "regions" / "abdomen" / "c2.nii.gz").is_file()
    write_image(out / "mine.nii.gz", _labels("liver"), GEOMETRY)  # a file of the user's: never touched
    (folder / "c2.nii.gz").unlink()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "removed 2 output file(s) of an earlier run into this folder" in result.output
    assert not (out / "c2.nii.gz").exists() and not (out / "regions" / "abdomen" / "c2.nii.gz").exists()
    assert (out / "c1.nii.gz").is_file() and (out / "regions" / "abdomen" / "c1.nii.gz").is_file()
    assert (out / "mine.nii.gz").is_file()
    assert set(pd.read_csv(out / "classes.csv")["case"]) == {"c1"}
    assert json.loads((out / "summary.json").read_text())["cases"]["done"] == ["c1"]
    mapping.write_text("source: total\ntarget: total_mr\n")  # no regions any more: no region masks either
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "c1.nii.gz").is_file() and not (out / "regions" / "abdomen").exists()
    assert (out / "mine.nii.gz").is_file()


@pytest.mark.parametrize("command", ["rules", "merge"])
def test_rules_and_merge_reruns_leave_no_output_map_of_a_removed_input(tmp_path, command):
    phantom = make_phantom(sex="M")
    folder, out = tmp_path / "in", tmp_path / "out"
    for case in ("c1", "c2"):
        write_image(folder / f"{case}.nii.gz", phantom.labels, phantom.geometry)
    args = _commands(folder, out)[command]
    written = {"rules": ["{case}.nii.gz"], "merge": ["merged/{case}.nii.gz", "provenance/{case}.nii.gz"]}[command]
    assert runner.invoke(app, args).exit_code == 0
    assert all((out / name.format(case="c2")).is_file() for name in written)
    (folder / "c2.nii.gz").unlink()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not any((out / name.format(case="c2")).exists() for name in written)
    assert all((out / name.format(case="c1")).is_file() for name in written)


@pytest.mark.parametrize("command", ["map", "rules", "merge"])
def test_writing_into_the_input_folder_is_refused_and_leaves_the_inputs_as_they_were(tmp_path, command):
    """`labels map IN -o IN` and `labels rules IN -o IN` rewrote the input maps in place, exit 0."""
    folder = tmp_path / "in"
    write_image(folder / "c1.nii.gz", _labels("liver", "kidney_left"), GEOMETRY)
    before = (folder / "c1.nii.gz").read_bytes()
    result = runner.invoke(app, _commands(folder, folder)[command])
    assert result.exit_code == 2, result.output
    assert _errors(result.output) == [f"error: {folder}: is the folder of this run's input files (e.g. c1.nii.gz); "
                                      "write the output into another folder"]
    assert sorted(p.name for p in folder.iterdir()) == ["c1.nii.gz"] and (folder / "c1.nii.gz").read_bytes() == before


def test_two_sources_of_one_name_are_named_in_the_refusal(tmp_path):
    """`labels merge a/pred b/pred` said "two sources have the same name" without saying which."""
    for where in ("a", "b"):
        write_image(tmp_path / where / "pred" / "c1.nii.gz", _labels("liver"), GEOMETRY)
    result = runner.invoke(app, ["labels", "merge", str(tmp_path / "a" / "pred"), str(tmp_path / "b" / "pred"),
                                 "--scheme", "total", "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2, result.output
    assert _errors(result.output) == [f"error: two sources have the same name 'pred' ({tmp_path / 'a' / 'pred'} and "
                                      f"{tmp_path / 'b' / 'pred'}); name them with --names"]


@pytest.mark.parametrize("command", ["map", "rules", "merge"])
def test_an_output_folder_with_the_users_own_map_of_a_case_keeps_it(tmp_path, command):
    """`-o` naming a folder that already held the user's own CASE.nii.gz (say, maps edited by hand)
    replaced it with the command's output."""
    folder, out = tmp_path / "in", tmp_path / "out"
    for case in ("c1", "c2"):
        write_image(folder / f"{case}.nii.gz", _labels("liver", "spleen"), GEOMETRY)
    own = np.full(GEOMETRY.shape, 7, np.uint8)
    written = out / "merged" / "c1.nii.gz" if command == "merge" else out / "c1.nii.gz"
    write_image(written, own, GEOMETRY)
    result = runner.invoke(app, _commands(folder, out)[command])
    assert result.exit_code == 1, result.output
    assert _errors(result.output) == [f"error: {written}: exists and no segqc run into this folder wrote it; "
                                      "this run would overwrite it: write into another folder, or move the file"]
    np.testing.assert_array_equal(read_label_map(written).array, own)
    assert written.with_name("c2.nii.gz").is_file()
