"""One entry point to train any registered QC method on an nnU-Net-style dataset (``segqc qc train``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from segqc.config import parse_overrides
from segqc.methods import method as method_entry
from segqc.training.cases import training_cases

__all__ = ["parse_overrides", "train_method", "training_cases"]


def train_method(method: str, dataset_dir: str | Path, out_dir: str | Path, *, config: str = "small",
                 seed: int = 0, split: Path | None = None, holdout_fraction: float = 0.0, group_by: str | None = None,
                 overrides: Mapping[str, Any] | None = None, extra_seg_dirs: Sequence[str | Path] = (),
                 jobs: int = 1, log: Callable[[str], None] = print, progress: bool = False) -> Path:
    """Train the registered QC ``method`` (:mod:`segqc.methods`) with the named config preset (or
    a JSON config file), fields replaced by ``overrides``; resumable. ``extra_seg_dirs`` (nnQC,
    QCResUNet): folders of real imperfect segmentations of the training cases (e.g. ``segqc zoo
    predict`` outputs) to learn from besides the degraded ones. ``jobs``: processes for the data
    preparation; ``progress``: Rich progress bars of the stages."""
    entry = method_entry(method, kind="qc")
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    method_config = entry.config(config, seed=seed, **dict(overrides or {}))
    # the run folder of another method is refused as such, before a split.json is compared or written
    cases = training_cases(dataset_dir, out_dir, split=split, holdout_fraction=holdout_fraction, seed=seed,
                           group_by=group_by, method=entry.name, settings=method_config.resume_key(),
                           may_change=", ".join(method_config.RESUMABLE_FIELDS), log=log)
    options: dict[str, Any] = {"progress": progress}
    if extra_seg_dirs:
        options["extra_seg_dirs"] = list(extra_seg_dirs)
    return entry.train(dataset_dir, out_dir, config=method_config, cases=cases, jobs=jobs, log=log, **options)
