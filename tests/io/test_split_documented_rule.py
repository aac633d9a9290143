"""The hold-out patients are exactly those the documented rule picks (module docstring of
:mod:`segqc.io.split`), recomputed here with numpy alone."""

from __future__ import annotations

import numpy as np
import pytest

from segqc.io.split import make_split, pattern_patient


def _by_the_rule(patients: list[str], fraction: float, seed: int) -> set[str]:
    """Sorted distinct patients, permuted by ``default_rng(seed)``; the first
    ``round(fraction * n)`` (at least 1, at most n - 1) are held out."""
    distinct = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(distinct))
    n_holdout = min(max(1, round(fraction * len(distinct))), len(distinct) - 1)
    return {distinct[i] for i in order[:n_holdout]}


@pytest.mark.parametrize(("fraction", "seed"), [(0.2, 0), (0.3, 5), (0.5, 11)])
def test_the_held_out_patients_are_the_first_of_the_seeded_permutation(fraction: float, seed: int) -> None:
    """Another selection from the same permutation (e.g. its last patients) is also a valid,
    deterministic, patient-disjoint split, but not the documented one: a split.json made by
    another segqc version, or by hand following the docs, would then differ."""
    patients = [f"P{p:02d}" for p in range(17)]
    cases = [f"{p}_frame{f:02d}" for p in patients for f in (1, 9)]
    split = make_split(cases, holdout_fraction=fraction, seed=seed)
    assert set(split.holdout_patients) == _by_the_rule(patients, fraction, seed)
    assert set(split.holdout) == {c for c in cases if c.split("_")[0] in _by_the_rule(patients, fraction, seed)}


def test_a_group_by_pattern_is_searched_anywhere_in_the_case_id() -> None:
    """The patient is the group of the pattern's first match anywhere in the id (``re.search``):
    a pattern without ``^`` also finds the subject in a prefixed id."""
    patient = pattern_patient(r"(HC18_\d+)")
    assert patient("scan_HC18_012_2") == "HC18_012"
    assert patient("HC18_012") == "HC18_012"
    assert patient("unrelated") == "unrelated"
