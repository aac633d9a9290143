"""One entry point to train any QC method on an nnU-Net-style dataset (used by ``segqc qc train``)."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from segqc.io.datasets import list_label_files
from segqc.zoo.split import Split, make_split


def training_cases(dataset_dir: Path, out_dir: Path, *, split: Path | None, holdout_fraction: float,
                   seed: int) -> list[str]:
    """Cases to train on: a split file's ``train`` side, a fresh patient-level split (saved as
    ``out_dir/split.json``), or every case."""
    cases = sorted(list_label_files(Path(dataset_dir) / "labelsTr"))
    if split is not None:
        chosen = Split.load(split)
        return [c for c in chosen.train if c in set(cases)]
    if holdout_fraction > 0:
        chosen = make_split(cases, holdout_fraction=holdout_fraction, seed=seed)
        chosen.save(Path(out_dir) / "split.json")
        return list(chosen.train)
    return cases


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> dict; values are Python literals where they parse (``3``,
    ``0.5``, ``(16, 32)``, ``True``), else strings. A missing ``=`` raises ``ValueError``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def train_method(method: str, dataset_dir: str | Path, out_dir: str | Path, *, config: str = "small",
                 seed: int = 0, split: Path | None = None, holdout_fraction: float = 0.0,
                 overrides: Mapping[str, Any] | None = None, extra_seg_dirs: Sequence[str | Path] = (),
                 jobs: int = 1, log: Callable[[str], None] = print) -> Path:
    """Train ``method`` (``nnqc`` or ``cae``) with the named config preset, fields replaced by
    ``overrides``; resumable for nnQC. ``extra_seg_dirs`` (nnQC only): folders of real imperfect
    segmentations of the training cases (e.g. ``segqc zoo predict`` outputs) to learn from
    besides the degraded ones. ``jobs``: processes for nnQC's data preparation."""
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    overrides = dict(overrides or {})
    cases = training_cases(dataset_dir, out_dir, split=split, holdout_fraction=holdout_fraction, seed=seed)
    if method == "cae":
        if extra_seg_dirs:
            raise ValueError("the CAE baseline learns from ground truths only; --extra-segs is for nnqc")
        from segqc.qc.baselines.cae import CaeConfig
        from segqc.qc.baselines.cae.train import train_from_dataset

        try:
            cae_config = replace(CaeConfig.preset(config), seed=seed, **overrides)
        except TypeError as error:
            raise ValueError(f"invalid CAE config override: {error}") from None
        return train_from_dataset(dataset_dir, out_dir, config=cae_config, cases=cases, log=log)
    if method == "nnqc":
        from segqc.qc.nnqc.config import NnqcConfig
        from segqc.qc.nnqc.train import build_training_data, train

        nnqc_config = NnqcConfig.preset(config, seed=seed, **overrides)
        data = build_training_data(dataset_dir, cases, nnqc_config, seed, extra_seg_dirs=extra_seg_dirs, jobs=jobs)
        log(f"training data: {data.n_slices} slices, {data.n_segs} imperfect segmentations")
        return train(nnqc_config, data, out_dir, threads=None, log=log)
    raise ValueError(f"unknown QC method {method!r}; expected nnqc or cae")
