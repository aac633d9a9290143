"""Which cases of a dataset a training run uses: a split file's train side, a fresh
patient-level split, or every case (shared by ``segqc qc train`` and ``segqc seg train``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from segqc.errors import InputError
from segqc.io.datasets import Dataset
from segqc.io.split import Split, make_split, patient_id, pattern_patient

__all__ = ["dataset_cases", "training_cases"]


def dataset_cases(dataset_dir: str | Path) -> list[str]:
    """The case ids of a training folder: an nnU-Net-style dataset (``imagesTr``/``labelsTr``), or
    a multi-rater folder (``CASE/image.*`` + ``CASE/rater_k.*``, :mod:`segqc.io.raters`).
    :class:`InputError` when it is neither."""
    root = Path(dataset_dir)
    if root.is_dir() and not (root / "labelsTr").is_dir() and not (root / "imagesTr").is_dir():
        from segqc.io.raters import find_rater_cases

        try:
            return [case.case for case in find_rater_cases(root)]
        except InputError as error:
            raise InputError(f"neither an nnU-Net dataset (imagesTr, labelsTr) nor a multi-rater folder "
                             f"(CASE/rater_1.nii.gz, ...): {error}") from None
    return Dataset.open(root).cases


def training_cases(dataset_dir: str | Path, out_dir: str | Path, *, split: Path | None = None,
                   holdout_fraction: float = 0.0, seed: int = 0, group_by: str | None = None,
                   log: Callable[[str], None] | None = None) -> list[str]:
    """Cases to train on (nnU-Net dataset or multi-rater folder): the ``train`` side of ``split``
    (a ``split.json``; its cases missing from the dataset are left out, said in one ``log`` line:
    a split made on a fuller copy of the dataset), else with
    ``holdout_fraction`` > 0 a fresh patient-level split saved as ``out_dir/split.json`` (patients
    by :func:`~segqc.io.split.patient_id`, or by the regular expression ``group_by``:
    :func:`~segqc.io.split.pattern_patient`), else every case. :class:`InputError` for a split
    that leaves no training case or a bad ``group_by``."""
    cases = dataset_cases(dataset_dir)
    if split is not None:
        train, present = Split.load(split).train, set(cases)
        chosen = [c for c in train if c in present]
        if not chosen:
            raise InputError("none of its training cases is in the dataset", split)
        missing = [c for c in train if c not in present]
        if missing and log is not None:
            log(f"{split}: {len(missing)} of its {len(train)} training case(s) are not in the dataset and are left "
                f"out (e.g. {missing[0]})")
        return chosen
    if holdout_fraction > 0:
        try:
            patient = pattern_patient(group_by) if group_by else patient_id
        except ValueError as exc:
            raise InputError(str(exc)) from None
        rule = f"first group of the regular expression {group_by!r} (else the case id)" if group_by else None
        fresh = make_split(cases, holdout_fraction=holdout_fraction, seed=seed, patient=patient,
                           **({"rule": rule} if rule else {}))
        fresh.save(Path(out_dir) / "split.json")
        return list(fresh.train)
    return cases
