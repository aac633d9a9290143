"""One entry point to train any registered segmentation method (``segqc seg train``): the
same checks, split and order for every method and for Python callers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from segqc.methods import method as method_entry
from segqc.training.cases import choose_training_cases, dataset_cases, save_split
from segqc.training.stages import check_training_folder

__all__ = ["train_method"]


def train_method(method: str, dataset_dir: str | Path, out_dir: str | Path, *, config: str = "small",
                 seed: int = 0, split: Path | None = None, holdout_fraction: float = 0.0, group_by: str | None = None,
                 overrides: Mapping[str, Any] | None = None, jobs: int = 1, device: str = "auto",
                 log: Callable[[str], None] = print, warn: Callable[[str], None] | None = None,
                 prepare_output: Callable[[Path], Any] | None = None, progress: bool = False) -> Path:
    """Train the registered segmentation ``method`` (:mod:`segqc.methods`) on an nnU-Net-style
    dataset or a multi-rater folder, with the named config preset (or a JSON config file) and
    fields replaced by ``overrides``; resumable. Returns the model directory ``out_dir/model``.

    Everything that can refuse the run does so before the output folder is created: the dataset
    folder, an output folder that is not this run's own (a model, another method's or settings'
    run), the split, and the method's own check of its cases (its train module's
    ``check_training_cases``, from file names alone; its warning line goes to ``warn``, default
    ``log``). Then ``prepare_output(out_dir)`` (default: create it; the CLI also checks it is
    writable and claims it), a fresh split is saved as ``out_dir/split.json``, and the method
    trains. ``jobs``: processes for reading and slicing the data."""
    entry = method_entry(method, kind="seg")
    dataset_dir, out = Path(dataset_dir), Path(out_dir)
    chosen = entry.config(config, seed=seed, **dict(overrides or {}))
    dataset_cases(dataset_dir)
    check_training_folder(out, method=entry.name, settings=chosen.resume_key(),
                          may_change=", ".join(chosen.RESUMABLE_FIELDS))
    cases, fresh_split = choose_training_cases(dataset_dir, split=split, holdout_fraction=holdout_fraction,
                                               seed=seed, group_by=group_by, log=log)
    options: dict[str, Any] = {"device": device}
    check_cases = getattr(entry.module("train"), "check_training_cases", None)
    if check_cases is not None:
        note = check_cases(dataset_dir, cases)
        if note:
            (warn or log)(note)
        options["cases_checked"] = True
    if prepare_output is not None:
        prepare_output(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
    if fresh_split is not None:
        save_split(fresh_split, out)
    return entry.train(dataset_dir, out, config=chosen, cases=cases, jobs=jobs, log=log, progress=progress,
                       **options)
