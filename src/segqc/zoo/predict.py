"""Predictions of every zoo model on (degraded) inputs, with their true quality in a manifest.

:func:`predict_zoo` runs every snapshot model of a zoo (``models/unet_eNNN/``, written by
:func:`segqc.zoo.train.train_zoo`) on every selected case (by default the patients held out in
``split.json``) and on every input variant, and measures each prediction against its ground truth.
A *source* is one (model, variant) pair, named ``unet_e008`` (clean input) or ``unet_e008_noise``,
``unet_e008_lowres`` (a non-default strength is appended: ``unet_e008_noise0.2``).

Per case: the image is preprocessed with the zoo's plan, the window centred on the image (the
ground truth is not used; a deployed model would not have it), the variant is applied to the
normalised slices, the slices are predicted in batches, and the label map goes back onto the
original grid exactly (:func:`segqc.fingerprint.restore_label`).

Input variants (:class:`InputVariant`), on the normalised preprocessed image:

* ``clean``: unchanged.
* ``noise(sigma=S)``: additive Gaussian noise of standard deviation ``S`` in normalised units
  (MR/other images are scaled to [0, 1] per image, CT images are z-scored), from a generator
  seeded by ``(seed, case, variant)``: every model of the zoo sees the same noisy image.
* ``lowres(factor=F)``: every slice is downsampled in-plane by ``F`` (area averaging, as a
  coarser acquisition) and upsampled back (bilinear).

Outputs under ``out_dir``:

* ``<source>/CASE.nii.gz``: the prediction, on the ground truth's grid (written atomically).
* ``manifest.csv``: one row per (source, case), in the format of ``segqc degrade``'s manifest
  (:data:`segqc.degrade.folder.BASE_COLUMNS` and per label ``dice_L``, ``hd95_L``, ``nsd_L``, all
  from :func:`segqc.degrade.folder.mask_quality` on the written file), followed by ``model``,
  ``epoch`` and ``variant``. For zoo rows: ``source`` is the source name; ``bin`` is the nnQC bin
  (:data:`segqc.degrade.targeting.NNQC_BINS`) the multi-class Dice falls into (``bin_index`` its
  index), empty when the Dice lies outside all bins (below 0.05, above 0.95, or NaN when ground
  truth and prediction are both empty; ``note`` says which); ``in_bin`` is whether a bin was
  found; ``binned_on`` is ``dice``; ``k`` counts the rows of a case in one bin in manifest
  order; ``operations`` describes the input variant (``clean``, ``noise(sigma=0.1)``,
  ``lowres(factor=2)``) and ``strength`` its parameter (0 for clean); ``seed`` is the noise seed
  (empty otherwise); ``gt_file`` the ground truth's path; ``slice``, ``attempts``,
  ``evaluations`` and ``gt_slice_file`` are empty.
* ``summary.json``: per source n, mean/median/min/max Dice and counts per bin; the settings;
  failed cases.
* ``cases/<source>/CASE.parquet``: the finished row of one (source, case), stored by the shared
  case engine (:mod:`segqc.execution`) under a key of the image and label files' content and the
  source (model weights, variant, seed, tolerance). A rerun reuses every (source, case) whose key
  matches and whose file exists, so an interrupted run continues, and adding a variant or a newly
  trained snapshot only computes what is new.

Bad input raises :class:`~segqc.errors.InputError` (one line): a folder that is not a zoo, a
model folder that is not a zoo model (:class:`~segqc.training.CheckpointError`), missing image or
label folders, held-out cases absent from them, images with another channel count than the
model's, an unknown variant. Per case (reported in ``failed``; the other cases go on): an image
whose grid differs from its label map, label values the zoo does not know, unreadable files.
"""

from __future__ import annotations

import json
import math
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segqc.degrade.folder import BASE_COLUMNS, mask_quality
from segqc.degrade.targeting import NNQC_BINS
from segqc.errors import InputError
from segqc.execution import CaseResult, CaseTask, RunReport, run_cases
from segqc.execution.cache import directory_digest, settings_digest
from segqc.fingerprint import PreprocessingPlan, preprocess_files, restore_label
from segqc.fingerprint.fingerprint import check_image_label_grid
from segqc.io.atomic import write_csv_atomic, write_json_atomic
from segqc.io.datasets import find_dataset_json, list_image_files, list_label_files
from segqc.io.images import read_label_map, write_image
from segqc.io.split import Split
from segqc.metrics.binary import MetricSettings
from segqc.training import CheckpointError, checkpoint_fits, load_checkpoint, select_device
from segqc.zoo.config import ZooConfig
from segqc.zoo.model import build_unet, predict_slices
from segqc.zoo.train import METHOD, read_zoo

__all__ = [
    "DEFAULT_VARIANTS",
    "EXTRA_COLUMNS",
    "InputVariant",
    "ZooModel",
    "ZooPrediction",
    "list_models",
    "load_model",
    "parse_variants",
    "predict_zoo",
    "source_summary",
]

#: Columns after the ``segqc degrade`` ones.
EXTRA_COLUMNS = ["model", "epoch", "variant"]
_VERSION = 1  # bump when a source's files would change for the same digest inputs


# --------------------------------------------------------------------------------------------
# Input variants
# --------------------------------------------------------------------------------------------


_KINDS = {"clean": None, "noise": ("sigma", 0.1), "lowres": ("factor", 2.0)}


@dataclass(frozen=True)
class InputVariant:
    """A change to the normalised input before inference (module docstring)."""

    kind: str
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown input variant {self.kind!r}; use {', '.join(_KINDS)}")
        value = float(self.value)
        if self.kind == "clean":
            value = 0.0
        elif self.kind == "noise" and not (value > 0 and math.isfinite(value)):
            raise ValueError(f"noise sigma must be positive, got {self.value}")
        elif self.kind == "lowres" and not (value > 1 and math.isfinite(value)):
            raise ValueError(f"lowres factor must be > 1, got {self.value}")
        object.__setattr__(self, "value", value)

    @classmethod
    def default(cls, kind: str) -> InputVariant:
        spec = _KINDS.get(kind)
        return cls(kind, 0.0 if spec is None else spec[1])

    def describe(self) -> str:
        """``clean``, ``noise(sigma=0.1)``, ``lowres(factor=2)`` (the manifest's ``operations``)."""
        spec = _KINDS[self.kind]
        return self.kind if spec is None else f"{self.kind}({spec[0]}={self.value:g})"

    @property
    def tag(self) -> str:
        """Suffix of the source name: ``""``, ``noise``, ``lowres``, ``noise0.2`` (non-default)."""
        spec = _KINDS[self.kind]
        if spec is None:
            return ""
        return self.kind if self.value == spec[1] else f"{self.kind}{self.value:g}"

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The variant of a preprocessed image ``(C, H, W, n_slices)`` float32 (a new array)."""
        if self.kind == "clean":
            return image.copy()
        if self.kind == "noise":
            return (image + rng.normal(0.0, self.value, size=image.shape)).astype(np.float32)
        import torch
        import torch.nn.functional as F

        c, h, w, n = image.shape
        small = (max(1, int(round(h / self.value))), max(1, int(round(w / self.value))))
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32))
        with torch.inference_mode():
            x = F.interpolate(F.interpolate(x, size=small, mode="area"), size=(h, w), mode="bilinear",
                              align_corners=False)
        return np.ascontiguousarray(np.moveaxis(x.numpy(), 0, -1))


DEFAULT_VARIANTS: tuple[InputVariant, ...] = tuple(InputVariant.default(k) for k in ("clean", "noise", "lowres"))

_VARIANT_TEXT = re.compile(r"^\s*(?P<kind>[a-z]+)\s*(?:\(\s*(?:(?P<key>[a-z]+)\s*=\s*)?(?P<value>[^)]*)\))?\s*$", re.I)


def parse_variants(spec: str | Sequence[str | InputVariant], *, noise_sigma: float | None = None,
                   lowres_factor: float | None = None) -> tuple[InputVariant, ...]:
    """``"clean,noise,lowres"`` or ``["noise(sigma=0.2)", "lowres(factor=3)"]`` -> variants.

    A bare ``noise`` / ``lowres`` takes ``noise_sigma`` / ``lowres_factor`` (default 0.1 and 2).
    Duplicates are dropped; order is kept. Raises ValueError on unknown names or bad values.
    """
    items: list[str | InputVariant] = ([s for s in _split_top_level(spec)] if isinstance(spec, str) else list(spec))
    out: list[InputVariant] = []
    for item in items:
        if isinstance(item, InputVariant):
            variant = item
        else:
            match = _VARIANT_TEXT.match(item)
            if not match or match["kind"].lower() not in _KINDS:
                raise ValueError(f"unknown input variant {item.strip()!r}; use clean, noise, lowres, "
                                 "noise(sigma=0.2), lowres(factor=3)")
            kind = match["kind"].lower()
            spec_kind = _KINDS[kind]
            if match["value"] is not None and match["value"].strip():
                if spec_kind is None or (match["key"] and match["key"].lower() != spec_kind[0]):
                    raise ValueError(f"input variant {item.strip()!r}: "
                                     + ("clean takes no parameter" if spec_kind is None
                                        else f"{kind} takes {spec_kind[0]}=VALUE"))
                try:
                    value = float(match["value"])
                except ValueError:
                    raise ValueError(f"input variant {item.strip()!r}: {match['value']!r} is not a number") from None
            elif kind == "noise" and noise_sigma is not None:
                value = noise_sigma
            elif kind == "lowres" and lowres_factor is not None:
                value = lowres_factor
            else:
                value = InputVariant.default(kind).value
            variant = InputVariant(kind, value)
        if variant not in out:
            out.append(variant)
    if not out:
        raise ValueError("no input variant given; use e.g. clean,noise,lowres")
    return tuple(out)


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


@dataclass
class ZooModel:
    """A loaded snapshot: its network (eval mode, CPU), plan and class table."""

    name: str
    epoch: int
    path: Path
    config: ZooConfig
    plan: PreprocessingPlan
    classes: tuple[int, ...]
    in_channels: int
    network: Any = field(repr=False)
    digest: str = ""

    @property
    def labels(self) -> tuple[int, ...]:
        return self.classes[1:]


def list_models(zoo_dir: str | os.PathLike[str]) -> list[str]:
    """Names of the finished snapshots of a zoo (``models/*/config.json``), by epoch."""
    read_zoo(zoo_dir)
    models = Path(zoo_dir) / "models"
    names = [p.name for p in models.iterdir() if (p / "config.json").is_file()] if models.is_dir() else []
    return sorted(names, key=lambda n: (_epoch_of(n), n))


def _epoch_of(name: str) -> int:
    match = re.search(r"_e(\d+)$", name)
    return int(match.group(1)) if match else 0


def load_model(path: str | os.PathLike[str], *, device: str = "cpu") -> ZooModel:
    """Load a snapshot directory (``models/unet_eNNN``). :class:`CheckpointError` if it is not a
    zoo model (another method, corrupt or incomplete files, weights that do not fit)."""
    path = Path(path)
    config_dict, weights, _ = load_checkpoint(path, method=METHOD)
    with checkpoint_fits(path, "zoo U-Net"):
        config = ZooConfig.from_dict(config_dict["zoo"])
        plan = PreprocessingPlan.from_dict(config_dict["plan"])
        classes = tuple(int(v) for v in config_dict["classes"])
        in_channels = int(config_dict["in_channels"])
        epoch = int(config_dict["epoch"])
        network = build_unet(config, in_channels, len(classes))
        network.load_state_dict(weights["unet"])
    network.to(select_device(device)).eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return ZooModel(name=path.name, epoch=epoch, path=path, config=config, plan=plan, classes=classes,
                    in_channels=in_channels, network=network, digest=directory_digest(path))


_MODEL_CACHE: dict[tuple[str, str, str], ZooModel] = {}


def _cached_model(path: Path, digest: str, device: str) -> ZooModel:
    key = (str(path), digest, device)
    if key not in _MODEL_CACHE:
        model = load_model(path, device=device)
        if model.digest != digest:
            raise CheckpointError(f"{path}: weights changed while predicting")
        if len(_MODEL_CACHE) >= 64:
            _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = model
    return _MODEL_CACHE[key]


# --------------------------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    name: str
    model: str
    model_path: Path
    model_digest: str
    epoch: int
    variant: InputVariant
    digest: str


@dataclass(frozen=True)
class _Setup:
    out_dir: Path
    plan: PreprocessingPlan
    classes: tuple[int, ...]
    seed: int
    tolerance_mm: float
    batch_size: int
    device: str
    threads: int


def _noise_seed(seed: int, case: str, variant: InputVariant) -> int:
    words = [seed, zlib.crc32(case.encode("utf-8")), zlib.crc32(variant.describe().encode("utf-8"))]
    return int(np.random.SeedSequence([int(w) & 0xFFFFFFFF for w in words]).generate_state(1, np.uint32)[0])


def _nnqc_bin(dice: float) -> tuple[str, int | str, str]:
    """(bin text, bin index, note) of a multi-class Dice."""
    for index, b in enumerate(NNQC_BINS):
        if b.contains(dice):
            return str(b), index, ""
    if not math.isfinite(dice):
        return "", "", "Dice undefined (ground truth and prediction both empty)"
    if dice < NNQC_BINS[0].lo:
        return "", "", f"Dice below the lowest nnQC bin ({NNQC_BINS[0].lo:g})"
    return "", "", f"Dice above the highest nnQC bin ({NNQC_BINS[-1].hi:g})"


_PREPARED: dict[tuple, Any] = {}


def _prepared_case(image_paths: tuple[Path, ...], plan: PreprocessingPlan) -> Any:
    """The preprocessed image of a case, kept for the next task of the same case (the tasks of one
    case, one per source, come one after the other)."""
    key = (image_paths, json.dumps(plan.to_dict(), sort_keys=True))
    if key not in _PREPARED:
        _PREPARED.clear()
        _PREPARED[key] = preprocess_files(list(image_paths), plan)
    return _PREPARED[key]


def _predict_case(task: CaseTask, setup: _Setup) -> CaseResult:
    """One source's prediction of one case (task id ``<source>/<case>``), written and measured."""
    import torch

    torch.set_num_threads(setup.threads)
    source, case_name = task.payload
    image_paths, label_path = task.inputs["image"], task.inputs["label"][0]
    gt_image = read_label_map(label_path)
    case = _prepared_case(image_paths, setup.plan)
    geometry = case.transform.original_geometry
    check_image_label_grid(geometry, gt_image.geometry, image_paths[0], label_path)
    gt = gt_image.array
    unknown = sorted(set(np.unique(gt).tolist()) - set(setup.classes))
    if unknown:
        raise InputError(f"label value(s) {unknown} are not classes of the zoo {list(setup.classes)}", label_path)
    classes = np.asarray(setup.classes)
    dtype = np.uint8 if max(setup.classes) <= 255 else np.uint16
    labels = list(setup.classes[1:])
    settings = MetricSettings(tolerance_mm=setup.tolerance_mm)
    noise_seed = _noise_seed(setup.seed, case_name, source.variant) if source.variant.kind == "noise" else None
    seed: int | str = noise_seed if noise_seed is not None else ""
    image = source.variant.apply(case.image, np.random.default_rng(noise_seed if noise_seed is not None else 0))
    model = _cached_model(source.model_path, source.model_digest, setup.device)
    index = predict_slices(model.network, image, batch_size=setup.batch_size)
    pred = restore_label(classes[index].astype(dtype), case.transform)
    rel = f"{source.name}/{case_name}.nii.gz"
    write_image(setup.out_dir / rel, pred, gt_image.geometry)
    quality = mask_quality(pred, gt, gt_image.geometry.spacing, labels, settings=settings)
    bin_text, bin_index, note = _nnqc_bin(quality["dice"])
    row = {
        "case": case_name, "file": rel, "source": source.name, "bin": bin_text, "bin_index": bin_index, "k": "",
        "slice": "", "binned_on": "dice", "in_bin": bin_text != "", **quality,
        "operations": source.variant.describe(), "strength": source.variant.value, "attempts": "",
        "evaluations": "", "seed": seed, "gt_file": str(label_path), "gt_slice_file": "", "note": note,
        "model": source.model, "epoch": source.epoch, "variant": source.variant.kind,
    }
    table = pd.DataFrame([row], columns=_columns(labels)).astype(str)
    return CaseResult(table=table, files=[rel])


# --------------------------------------------------------------------------------------------
# A folder
# --------------------------------------------------------------------------------------------


@dataclass
class ZooPrediction:
    """What :func:`predict_zoo` did: the manifest and what happened to every case."""

    manifest: pd.DataFrame
    sources: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    reused: int = 0  # (case, source) predictions taken from a previous run
    summary: dict = field(default_factory=dict)
    report: RunReport | None = None  # the case engine's report (task ids "<source>/<case>")


def _columns(labels: Sequence[int]) -> list[str]:
    per_class = [f"{m}_{c}" for m in ("dice", "hd95", "nsd") for c in labels]
    return BASE_COLUMNS[:12] + per_class + BASE_COLUMNS[12:] + EXTRA_COLUMNS


def _resolve_folders(dataset_dir, images_dir, labels_dir) -> tuple[Path, Path, str | None]:
    if dataset_dir is None and (images_dir is None or labels_dir is None):
        raise InputError("give a dataset folder, or both an images and a labels folder")
    if dataset_dir is not None:
        root = Path(dataset_dir)
        if not root.is_dir():
            raise InputError("dataset folder not found" if not root.exists() else "not a folder", root)
    images = Path(images_dir) if images_dir is not None else Path(dataset_dir) / "imagesTr"
    labels = Path(labels_dir) if labels_dir is not None else Path(dataset_dir) / "labelsTr"
    for folder, what in ((images, "images"), (labels, "labels")):
        if not folder.is_dir():
            raise InputError(f"{what} folder not found" if not folder.exists() else "not a folder", folder)
    info = find_dataset_json(labels, labels.parent)
    return images, labels, info.file_ending if info else None


def _select_cases(cases, split: Split | None, available: Sequence[str], labels_dir: Path) -> list[str]:
    if cases is None or (isinstance(cases, str) and cases.lower() in ("holdout", "heldout", "held-out")):
        if split is None:
            raise InputError("the zoo has no split.json; pass cases='all' or case ids")
        wanted = list(split.holdout)
        missing = [c for c in wanted if c not in available]
        if missing:
            raise InputError(f"{len(missing)} held-out case(s) of the zoo are not here (e.g. {missing[0]}); "
                             "predict another dataset with cases='all'", labels_dir)
        return wanted
    if isinstance(cases, str) and cases.lower() == "train":
        if split is None:
            raise InputError("the zoo has no split.json; pass cases='all' or case ids")
        wanted = [c for c in split.train if c in set(available)]
        if not wanted:
            raise InputError("none of the zoo's training cases is here", labels_dir)
        return wanted
    if isinstance(cases, str) and cases.lower() == "all":
        return list(available)
    wanted = [c.strip() for c in (cases.split(",") if isinstance(cases, str) else cases) if c.strip()]
    missing = [c for c in wanted if c not in available]
    if missing:
        raise InputError(f"unknown case(s): {', '.join(missing[:5])}", labels_dir)
    return list(dict.fromkeys(wanted))


def predict_zoo(
    zoo_dir: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None = None,
    labels_dir: str | os.PathLike[str] | None = None,
    cases: str | Sequence[str] | None = "holdout",
    models: Sequence[str] | None = None,
    variants: str | Sequence[str | InputVariant] = ("clean", "noise", "lowres"),
    noise_sigma: float | None = None,
    lowres_factor: float | None = None,
    seed: int = 0,
    tolerance_mm: float = 1.0,
    batch_size: int = 32,
    device: str = "cpu",
    jobs: int = 1,
    scheduler: str | None = None,
    progress: bool = False,
) -> ZooPrediction:
    """Predict and measure (module docstring); return the manifest and what happened.

    ``dataset_dir``: nnU-Net folder (``imagesTr``/``labelsTr``); ``images_dir``/``labels_dir``
    override its parts (or replace it: pass ``None``). ``cases``: ``"holdout"`` (the zoo's
    held-out patients; default), ``"train"`` (its training patients: imperfect segmentations to
    train a QC model on, ``segqc qc train nnqc --extra-segs``), ``"all"`` (every labelled case in
    the folders) or case ids.
    ``models``: snapshot names (default: all). ``variants``: see :func:`parse_variants`.
    ``seed`` seeds the noise; ``tolerance_mm`` is the NSD tolerance. ``jobs``/``scheduler`` as
    :func:`segqc.execution.map_cases`; the result does not depend on them.
    """
    zoo_dir, out = Path(zoo_dir), Path(out_dir)
    read_zoo(zoo_dir)  # InputError if the folder is not a zoo
    chosen_variants = parse_variants(variants, noise_sigma=noise_sigma, lowres_factor=lowres_factor)
    names = list_models(zoo_dir)
    if not names:
        raise InputError("the zoo has no finished model yet (models/ is empty); run `segqc zoo train` first", zoo_dir)
    if models is not None:
        unknown = [m for m in models if m not in names]
        if unknown:
            raise InputError(f"no model {unknown[0]!r} in the zoo (models: {', '.join(names)})", zoo_dir / "models")
        names = [n for n in names if n in set(models)]
    loaded = [load_model(zoo_dir / "models" / n) for n in names]
    first = loaded[0]
    for model in loaded[1:]:
        if model.plan != first.plan or model.classes != first.classes or model.in_channels != first.in_channels:
            raise InputError(f"model {model.name} has another plan or class table than {first.name}", model.path)

    images_path, labels_path, file_ending = _resolve_folders(dataset_dir, images_dir, labels_dir)
    label_files = list_label_files(labels_path, file_ending=file_ending)
    image_files = list_image_files(images_path, file_ending=file_ending)
    available = [c for c in label_files if c in image_files]
    split = Split.load(zoo_dir / "split.json") if (zoo_dir / "split.json").is_file() else None
    selected = _select_cases(cases, split, available, labels_path)
    if not selected:
        raise InputError("no case with both an image and a label map", labels_path)
    n_channels = len(image_files[selected[0]])
    if n_channels != first.in_channels:
        raise InputError(f"images have {n_channels} channel(s) but the zoo's models take {first.in_channels}",
                         images_path)

    sources = []
    for model in loaded:
        for variant in chosen_variants:
            name = model.name if not variant.tag else f"{model.name}_{variant.tag}"
            key = {"model": model.digest, "variant": variant.describe(),
                   "seed": seed if variant.kind == "noise" else None, "tolerance_mm": tolerance_mm,
                   "classes": list(first.classes), "version": _VERSION}
            digest = settings_digest(key)[:16]
            sources.append(_Source(name, model.name, model.path, model.digest, model.epoch, variant, digest))
    tasks = [CaseTask(f"{source.name}/{case}", {"image": tuple(image_files[case]), "label": (label_files[case],)},
                      payload=(source, case), settings=source.digest)
             for case in selected for source in sources]
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    setup = _Setup(out_dir=out, plan=first.plan, classes=first.classes, seed=seed, tolerance_mm=tolerance_mm,
                   batch_size=batch_size, device=device, threads=threads)
    report = run_cases(partial(_predict_case, setup=setup), tasks, out, settings={"version": _VERSION}, jobs=jobs,
                       scheduler=scheduler, progress=progress, description="predict")
    failed = {task.payload[1]: report.failed[task.case] for task in tasks if task.case in report.failed}
    manifest = _assemble(report.table, selected, sources, failed, _columns(first.labels))
    if len(manifest):  # a reused row holds the path of the run that made it: this run's instead
        manifest["gt_file"] = manifest["case"].map({case: str(label_files[case]) for case in selected})
    write_csv_atomic(out / "manifest.csv", manifest)
    summary = {
        "zoo": str(zoo_dir),
        "settings": {"variants": [v.describe() for v in chosen_variants], "models": names, "seed": seed,
                     "tolerance_mm": tolerance_mm, "cases": len(selected)},
        "sources": source_summary(manifest),
        "cases": {"predicted": sorted(set(selected) - set(failed)), "failed": failed},
    }
    write_json_atomic(out / "summary.json", summary)
    return ZooPrediction(manifest=manifest, sources=[s.name for s in sources], failed=failed,
                         reused=len(report.reused), summary=summary, report=report)


def _assemble(table: pd.DataFrame, selected: Sequence[str], sources: Sequence[_Source],
              failed: dict[str, str], columns: Sequence[str]) -> pd.DataFrame:
    """The manifest: rows of cases without a failure, by source then case, ``k`` counted per
    (case, bin) in that order."""
    order = {s.name: i for i, s in enumerate(sources)}
    manifest = table.reindex(columns=columns, fill_value="") if len(table) else pd.DataFrame(columns=columns)
    manifest = manifest[~manifest["case"].isin(set(failed))]
    if len(manifest):
        case_rank = {c: i for i, c in enumerate(selected)}
        manifest = manifest.assign(_s=manifest["source"].map(order), _c=manifest["case"].map(case_rank))
        manifest = manifest.sort_values(["_s", "_c"], kind="stable").drop(columns=["_s", "_c"]).reset_index(drop=True)
        binned = manifest["bin"] != ""
        k = manifest[binned].groupby(["case", "bin"]).cumcount()
        manifest["k"] = ""
        manifest.loc[binned, "k"] = k.astype(str)
    return _typed(manifest)


def _typed(manifest: pd.DataFrame) -> pd.DataFrame:
    """Numbers as numbers (NaN where empty), flags as bools, the rest as text."""
    out = manifest.copy()
    for column in out.columns:
        if column in ("dice", "hd95", "nsd", "strength") or column.startswith(("dice_", "hd95_", "nsd_")):
            out[column] = pd.to_numeric(out[column].replace("", np.nan), errors="coerce")
        elif column in ("bin_index", "k", "epoch", "seed"):
            out[column] = pd.to_numeric(out[column].replace("", np.nan), errors="coerce").astype("Int64")
        elif column == "in_bin":
            out[column] = out[column].astype(str).str.lower().eq("true")
    return out


def source_summary(manifest: pd.DataFrame) -> list[dict]:
    """Per source (manifest order): n, mean/median/min/max multi-class Dice, rows per nnQC bin."""
    out = []
    for source, rows in manifest.groupby("source", sort=False):
        dice = rows["dice"].astype(float)
        out.append({
            "source": source, "model": rows["model"].iloc[0], "epoch": int(rows["epoch"].iloc[0]),
            "variant": rows["operations"].iloc[0], "n": int(len(rows)), "mean": float(dice.mean()),
            "median": float(dice.median()), "min": float(dice.min()), "max": float(dice.max()),
            "bins": {str(b): int((rows["bin"] == str(b)).sum()) for b in NNQC_BINS},
            "outside_bins": int((rows["bin"] == "").sum()),
        })
    return out
