"""The registry of learned methods: one line per method, used by the CLI and the loaders.

A method is a package with the same four modules (``config.py``, ``model.py``, ``train.py``,
``predict.py``; see ``docs/ARCHITECTURE.md``). Its ``config`` module defines a
:class:`~segqc.config.ConfigBase` subclass with presets; ``train.train_from_dataset(dataset_dir,
out_dir, *, config, cases, jobs, log, **options) -> Path`` trains it on an nnU-Net-style dataset;
``predict.load_qc_model(model_dir, *, device)`` (QC methods) loads a model directory for the QC
driver. Adding a method is its four files plus one line in :data:`METHODS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Method:
    """``kind``: "qc" (estimates quality without ground truth) or "seg" (produces
    segmentations); ``package``: where its four modules live; ``config_class``: the name of its
    config class in ``config.py``; ``summary``: one line for ``--help``."""

    name: str
    kind: str
    package: str
    config_class: str
    summary: str

    def module(self, part: str) -> Any:
        return importlib.import_module(f"{self.package}.{part}")

    def config(self, preset: str, **overrides: Any) -> Any:
        """The method's config: a preset name (or JSON file) with field overrides."""
        return getattr(self.module("config"), self.config_class).preset(preset, **overrides)

    def train(self, dataset_dir: Path, out_dir: Path, *, config: Any, cases: Sequence[str], jobs: int = 1,
              log: Callable[[str], None] = print, **options: Any) -> Path:
        return self.module("train").train_from_dataset(dataset_dir, out_dir, config=config, cases=cases, jobs=jobs,
                                                       log=log, **options)

    def load_qc_model(self, model_dir: Path, *, device: str = "cpu") -> Any:
        return self.module("predict").load_qc_model(model_dir, device=device)


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("nnqc", "qc", "segqc.qc.nnqc", "NnqcConfig", "diffusion pseudo ground truths (Marciandò et al.)"),
    Method("cae", "qc", "segqc.qc.baselines.cae", "CaeConfig", "autoencoder baseline (Galati & Zuluaga)"),
    Method("qcresunet", "qc", "segqc.qc.qcresunet", "QcResUNetConfig", "Dice/NSD regression, error maps (Qiu et al.)"),
    Method("ldseg", "seg", "segqc.seg.ldseg", "LdsegConfig", "latent diffusion segmentation (Zaman et al.)"),
    Method("unet", "seg", "segqc.seg.unet", "UnetConfig", "U-Net baseline, deterministic or MC dropout (MONAI)"),
    Method("consensus", "seg", "segqc.seg.consensus", "ConsensusConfig", "rater-consensus diffusion (Amit et al.)"),
    Method("probunet", "seg", "segqc.seg.probunet", "ProbUnetConfig", "Probabilistic U-Net baseline (Kohl et al.)"),
]}


def method(name: str, kind: str | None = None) -> Method:
    """The registered method ``name`` (of ``kind``, if given); ``ValueError`` naming the known ones."""
    entry = METHODS.get(str(name).lower())
    if entry is None or (kind is not None and entry.kind != kind):
        known = [m for m in METHODS.values() if kind is None or m.kind == kind]
        what = f"{kind.upper()} method" if kind else "method"
        raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(m.name for m in known)}")
    return entry


_KIND_NAMES = {"qc": "QC", "seg": "segmentation"}


def method_of_checkpoint(meta: dict, model_dir: Path, kind: str) -> Method:
    """The method of ``kind`` ("qc" or "seg") that wrote a checkpoint (its ``config.json``
    metadata ``meta``); a :class:`~segqc.training.CheckpointError` naming the folder for a
    checkpoint that names no method, or one of another kind."""
    from segqc.training.checkpoints import CheckpointError

    found = meta.get("method")
    known = ", ".join(m.name for m in METHODS.values() if m.kind == kind)
    what = f"a {_KIND_NAMES[kind]} model"
    if found is None:
        raise CheckpointError(f"{model_dir / 'config.json'}: names no method; expected {what} ({known})")
    name = str(found)
    if name not in METHODS or METHODS[name].kind != kind:
        raise CheckpointError(f"{model_dir}: model of method {name!r} is not {what} (expected {known})")
    return METHODS[name]


def qc_method_of(meta: dict, model_dir: Path) -> Method:
    """The QC method that wrote a checkpoint (its ``config.json`` metadata)."""
    return method_of_checkpoint(meta, model_dir, "qc")


def check_model_folder(model_dir: Path) -> None:
    """A model path that is a file, not a folder, is a :class:`CheckpointError` saying so."""
    from segqc.training.checkpoints import CheckpointError

    if model_dir.is_file():
        raise CheckpointError(f"{model_dir}: is a file; give the model's folder (the one holding config.json)")


__all__ = ["METHODS", "Method", "check_model_folder", "method", "method_of_checkpoint", "qc_method_of"]
