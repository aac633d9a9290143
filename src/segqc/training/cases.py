"""Which cases of a dataset a training run uses: a split file's train side, a fresh
patient-level split, or every case (shared by ``segqc qc train`` and ``segqc seg train``); the
extra segmentation folders of a QC training, and the one line for training data without
foreground."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from segqc.errors import InputError
from segqc.io.datasets import Dataset, segmentation_files
from segqc.io.split import Split, make_split, patient_id, pattern_patient
from segqc.training.stages import check_training_folder

__all__ = ["NO_FOREGROUND", "choose_training_cases", "dataset_cases", "extra_segmentation_files", "save_split",
           "training_cases"]


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


def choose_training_cases(dataset_dir: str | Path, *, split: Path | None = None, holdout_fraction: float = 0.0,
                          seed: int = 0, group_by: str | None = None,
                          log: Callable[[str], None] | None = None) -> tuple[list[str], Split | None]:
    """The cases :func:`training_cases` trains on, and the fresh split to save (None when none
    was made); nothing is written."""
    if not (0 <= holdout_fraction < 1):  # also NaN
        raise InputError(f"--holdout-fraction must lie in [0, 1), got {holdout_fraction}")
    if group_by is not None and not holdout_fraction > 0:
        raise InputError("--group-by groups the cases of a new split: give --holdout-fraction too")
    if split is not None and holdout_fraction > 0:
        raise InputError("give either --split or --holdout-fraction, not both")
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
        return chosen, None
    if holdout_fraction > 0:
        try:
            patient = pattern_patient(group_by) if group_by else patient_id
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if group_by and not any(re.search(group_by, case) for case in cases):
            raise InputError(f"--group-by {group_by!r} matches no case id (e.g. {cases[0]!r}); each case would be a "
                             "patient of its own", dataset_dir)
        rule = f"first group of the regular expression {group_by!r} (else the case id)" if group_by else None
        fresh = make_split(cases, holdout_fraction=holdout_fraction, seed=seed, patient=patient,
                           **({"rule": rule} if rule else {}))
        return list(fresh.train), fresh
    return cases, None


def save_split(split: Split, out_dir: str | Path) -> None:
    """Write ``out_dir/split.json``; refuse (one line, nothing written) a folder holding a
    training run (``run.json``) without this split — its ``split.json`` splits the cases
    otherwise, or it has none (it trained on all cases or a given split): that run is on other
    training data, or of another kind."""
    path = Path(out_dir) / "split.json"
    if (Path(out_dir) / "run.json").is_file():
        try:
            saved = Split.load(path) if path.is_file() else None
        except InputError:
            saved = None
        if saved is None or (saved.train, saved.holdout) != (split.train, split.holdout):
            raise InputError("holds a training run on another split of the cases (split.json); use another folder",
                             out_dir)
    split.save(path)


def training_cases(dataset_dir: str | Path, out_dir: str | Path, *, split: Path | None = None,
                   holdout_fraction: float = 0.0, seed: int = 0, group_by: str | None = None,
                   method: str | None = None, settings: Mapping[str, Any] | None = None, may_change: str = "",
                   log: Callable[[str], None] | None = None) -> list[str]:
    """Cases to train on (nnU-Net dataset or multi-rater folder): the ``train`` side of ``split``
    (a ``split.json``; its cases missing from the dataset are left out, said in one ``log`` line:
    a split made on a fuller copy of the dataset), else with
    ``holdout_fraction`` > 0 a fresh patient-level split saved as ``out_dir/split.json`` (patients
    by :func:`~segqc.io.split.patient_id`, or by the regular expression ``group_by``:
    :func:`~segqc.io.split.pattern_patient`; :func:`save_split`), else every case.
    :class:`InputError` for a split that leaves no training case or a bad ``group_by``, and, before
    anything is written, for an output folder that is not a training run's own
    (:func:`~segqc.training.stages.check_training_folder`: e.g. a model folder, or with ``method``
    the training run of another method, and with ``settings`` one of other settings)."""
    check_training_folder(out_dir, method=method, settings=settings, may_change=may_change)
    root = Path(dataset_dir).resolve()
    target = Path(out_dir).resolve()
    if target == root or any(target.is_relative_to(root / part) for part in ("imagesTr", "labelsTr")):
        raise InputError("is the dataset folder (or one of its image or label folders); train into another "
                         "folder", out_dir)
    cases, fresh = choose_training_cases(dataset_dir, split=split, holdout_fraction=holdout_fraction, seed=seed,
                                         group_by=group_by, log=log)
    if fresh is not None:
        save_split(fresh, out_dir)
    return cases


def extra_segmentation_files(folder: str | Path, cases: Sequence[str], *,
                             file_ending: str | None = None) -> list[tuple[str, Path]]:
    """``(case, file)`` of every segmentation in ``folder`` of one of the training ``cases``, in
    the order of ``cases`` (a ``segqc degrade`` folder may hold several per case, by file name;
    files of other cases, e.g. held-out patients, are left out).
    The one reading of a QC training's ``--extra-segs`` folders (nnQC, QCResUNet):
    :func:`segqc.io.datasets.segmentation_files` — a ``manifest.csv`` maps files to cases, else
    any ending, and of two files of one case the one with the dataset's ``file_ending``.
    :class:`InputError` naming the folder when it is missing or holds no segmentation of
    ``cases``: an extra folder that adds nothing is a mistake, not a no-op."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError("segmentation folder not found" if not root.exists() else "not a folder", root)
    order = {case: k for k, case in enumerate(cases)}
    found = [(case, path) for case, path in segmentation_files(root, file_ending=file_ending).files.values()
             if case in order]
    if not found:
        raise InputError(f"holds no segmentation of the {len(order)} training case(s)", root)
    return sorted(found, key=lambda item: order[item[0]])  # stable: a case's files stay by file name


NO_FOREGROUND = "no ground-truth slice with foreground in the training cases"
"""The one line of every trainer whose training label maps are all background (it names the dataset)."""
