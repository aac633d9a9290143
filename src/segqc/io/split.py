"""Patient-level train / hold-out split: no patient is ever on both sides.

Several cases of one patient (ACDC's end-diastolic and end-systolic frames, follow-up time points)
look alike; a model that saw one of them is not tested honestly on the other. Cases are therefore
grouped by patient before splitting.

**Patient of a case** (:func:`patient_id`): the case id with one trailing time-point suffix
removed, the suffix being ``_`` or ``-`` followed by ``frame``, ``tp``, ``timepoint``, ``time``,
``visit``, ``ses`` or ``session`` (any case), an optional ``_``/``-``, and digits:
``ACDC_patient001_frame01`` -> ``ACDC_patient001``, ``sub-03_ses-2`` -> ``sub-03``,
``BraTS_0001_tp2`` -> ``BraTS_0001``. A case id without such a suffix is its own patient.
Callers with another convention pass their own ``patient`` function, e.g.
:func:`pattern_patient` for a regular expression (HC18: ``HC18_012`` and ``HC18_012_2`` are images
of one subject, ``--group-by '^(HC18_[0-9]+)'``).

**Split** (:func:`make_split`): the distinct patients, sorted, are permuted by
``numpy.random.default_rng(seed)``; the first ``round(holdout_fraction * n_patients)`` (at least
one, and at least one patient left for training) are held out. The result is written as
``split.json`` (:meth:`Split.save`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segqc.errors import InputError
from segqc.io.atomic import write_text_atomic

__all__ = ["PATIENT_RULE", "Split", "make_split", "patient_id", "pattern_patient"]

_TIMEPOINT = re.compile(r"^(?P<patient>.+?)[_-](?:frame|tp|timepoint|time|visit|ses|session)[_-]?\d+$", re.IGNORECASE)

#: The grouping rule in words (stored in ``split.json``).
PATIENT_RULE = ("case id without a trailing _frameNN / _tpNN / _timepointNN / _timeNN / _visitNN / _sesNN / "
                "_sessionNN suffix ('_' or '-' separators); otherwise the case id")


def patient_id(case: str) -> str:
    """Patient of a case id (module docstring): ``ACDC_patient001_frame12`` -> ``ACDC_patient001``."""
    match = _TIMEPOINT.match(case)
    return match["patient"] if match else case


def pattern_patient(pattern: str) -> Callable[[str], str]:
    """The patient function of a regular expression: the first group of its first match in a
    case id (the named group ``patient`` when there is one), or the case id when it does not
    match. ``ValueError`` for an invalid pattern or one without a group."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid --group-by pattern {pattern!r}: {exc}") from None
    if compiled.groups < 1:
        raise ValueError(f"the --group-by pattern {pattern!r} needs a group, e.g. '^(HC18_[0-9]+)'")
    group: int | str = "patient" if "patient" in compiled.groupindex else 1

    def patient(case: str) -> str:
        match = compiled.search(case)
        return str(match[group]) if match and match[group] else case

    return patient


@dataclass(frozen=True)
class Split:
    """Case ids for training and hold-out (sorted), with how they were made."""

    train: tuple[str, ...]
    holdout: tuple[str, ...]
    seed: int
    holdout_fraction: float
    patients: dict[str, str]  # case -> patient
    rule: str = PATIENT_RULE  # how cases were grouped into patients, in words

    def __post_init__(self) -> None:
        overlap = {self.patients[c] for c in self.train} & {self.patients[c] for c in self.holdout}
        if overlap:  # guards hand-edited split.json files too
            raise InputError(f"patient(s) on both sides of the split: {', '.join(sorted(overlap)[:5])}")

    @property
    def train_patients(self) -> tuple[str, ...]:
        return tuple(sorted({self.patients[c] for c in self.train}))

    @property
    def holdout_patients(self) -> tuple[str, ...]:
        return tuple(sorted({self.patients[c] for c in self.holdout}))

    def to_dict(self) -> dict:
        return {
            "format": "segqc-split",
            "seed": self.seed,
            "holdout_fraction": self.holdout_fraction,
            "rule": self.rule,
            "n_patients": {"train": len(self.train_patients), "holdout": len(self.holdout_patients)},
            "train": list(self.train),
            "holdout": list(self.holdout),
            "patients": dict(sorted(self.patients.items())),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Split:
        """The split of a ``split.json``: one that segqc wrote, or one written by hand with only
        ``train`` (and ``holdout``) lists of case ids — its patients are then those of
        :func:`patient_id`. :class:`InputError` naming the file for anything else."""
        path = Path(path)
        if not path.is_file():
            raise InputError("split file not found", path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
            raise InputError(f"not a JSON file{where}", path) from None
        if not isinstance(data, dict):
            raise InputError('a split is a JSON object with a "train" list of case ids (and a "holdout" list)', path)
        lists = {}
        for side in ("train", "holdout"):
            value = data.get(side, [] if side == "holdout" else None)
            if not isinstance(value, list) or not all(isinstance(case, str) for case in value):
                raise InputError(f'"{side}" must be a list of case ids (strings)', path)
            lists[side] = tuple(value)
        cases = lists["train"] + lists["holdout"]
        if data.get("format") != "segqc-split":  # written by hand
            fields: dict[str, Any] = {"seed": 0, "holdout_fraction": len(lists["holdout"]) / max(1, len(cases)),
                                      "patients": {case: patient_id(case) for case in cases}, "rule": PATIENT_RULE}
        else:
            missing = [key for key in ("seed", "holdout_fraction", "patients") if key not in data]
            if missing:
                raise InputError(f"the field {missing[0]!r} of a split segqc wrote is missing", path)
            try:
                fields = {"seed": int(data["seed"]), "holdout_fraction": float(data["holdout_fraction"]),
                          "patients": {str(k): str(v) for k, v in dict(data["patients"]).items()},
                          "rule": str(data.get("rule", PATIENT_RULE))}
            except (TypeError, ValueError):
                raise InputError("seed and holdout_fraction must be numbers and patients an object (case -> "
                                 "patient)", path) from None
            unknown = [case for case in cases if case not in fields["patients"]]
            if unknown:
                raise InputError(f"case {unknown[0]!r} has no patient in \"patients\"", path)
        try:
            return cls(train=lists["train"], holdout=lists["holdout"], **fields)
        except InputError as exc:
            raise InputError(exc.problem, path) from None


def make_split(
    cases: Iterable[str],
    *,
    holdout_fraction: float,
    seed: int,
    patient: Callable[[str], str] = patient_id,
    rule: str = PATIENT_RULE,
) -> Split:
    """Split case ids by patient (module docstring; ``rule`` describes ``patient`` in words for
    ``split.json``). Needs at least two patients."""
    cases = sorted(set(cases))
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must lie in (0, 1), got {holdout_fraction}")
    patients = {c: patient(c) for c in cases}
    distinct = sorted(set(patients.values()))
    if len(distinct) < 2:
        raise InputError(f"a train / hold-out split needs at least two patients; found {len(distinct)} "
                         f"({len(cases)} case(s))")
    order = np.random.default_rng(seed).permutation(len(distinct))
    n_holdout = min(max(1, int(round(holdout_fraction * len(distinct)))), len(distinct) - 1)
    held = {distinct[i] for i in order[:n_holdout]}
    return Split(
        train=tuple(c for c in cases if patients[c] not in held),
        holdout=tuple(c for c in cases if patients[c] in held),
        seed=int(seed),
        holdout_fraction=float(holdout_fraction),
        patients=patients,
        rule=rule,
    )
