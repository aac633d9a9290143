"""Dataset folders with nnU-Net conventions: ``dataset.json``, case ids, channels, pairing.

* Label files are ``CASE<file_ending>`` (e.g. ``labelsTr/ACDC_patient002_frame01.nii.gz``);
  image files are ``CASE_XXXX<file_ending>`` with a four-digit channel index (``_0000``, ...).
* ``dataset.json`` labels may be nnU-Net v2 style (``{"background": 0, "RV": 1}``, regions as
  lists: ``{"whole tumor": [1, 2, 3]}``) or v1 style (``{"0": "background", "1": "RV"}``);
  regions may also be given as a top-level ``"regions"`` object; a label named ``"ignore"`` is
  nnU-Net's ignore label.
* Folder listings ignore hidden and temporary files (names starting with ``.``), ``dataset.json``,
  and everything that is not an image (nnU-Net's ``plans.json``, ``.npz``, ``.pkl``, ...).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segqc.errors import InputError
from segqc.io.images import IMAGE_EXTENSIONS

__all__ = [
    "LABEL_EXTENSIONS",
    "MANIFEST_NAME",
    "Pairing",
    "SegmentationFiles",
    "Dataset",
    "DatasetInfo",
    "case_id",
    "find_dataset_json",
    "ground_truth_files",
    "list_image_files",
    "list_label_files",
    "pair_cases",
    "pair_segmentations",
    "read_dataset_json",
    "segmentation_files",
]

#: File endings recognised as images / label maps (matched case-insensitively, longest first).
LABEL_EXTENSIONS: tuple[str, ...] = IMAGE_EXTENSIONS

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class DatasetInfo:
    """What segqc uses from a ``dataset.json``.

    ``labels`` maps label value -> name (background 0 included when the file names it),
    ``regions`` maps region name -> label values (nnU-Net v2 region syntax), ``channel_names``
    maps channel index -> name, ``file_ending`` is e.g. ``".nii.gz"`` or None, ``ignore`` the
    value of nnU-Net's ``"ignore"`` label (excluded from every class), if any.
    """

    labels: dict[int, str] = field(default_factory=dict)
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    channel_names: dict[int, str] = field(default_factory=dict)
    file_ending: str | None = None
    path: Path | None = None
    ignore: int | None = None

    def label_name(self, label: int | str) -> str:
        """Name of a label value (or of a region, given its name); ``str(label)`` if unnamed."""
        if isinstance(label, str):
            return label
        value = int(label)
        return self.labels.get(value, str(value))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def read_dataset_json(path: PathLike) -> DatasetInfo:
    """Parse an nnU-Net ``dataset.json`` (v1 or v2 label syntax).

    A label whose value is a list is a region (nnU-Net v2); a one-element region whose value has
    no name of its own also names that label. Raises :class:`InputError` naming the file for
    missing files, malformed JSON or wrongly typed fields.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", path
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read dataset.json: {exc}", path) from None
    if not isinstance(data, dict):
        raise InputError("expected a JSON object at the top level", path)

    labels, regions = _parse_labels(data.get("labels", {}), path)
    regions.update(_parse_regions(data.get("regions", {}), path))
    ignore = None
    for value, name in list(labels.items()):
        if name == "ignore":  # nnU-Net: excluded from every class, never a class itself
            del labels[value]
            ignore = value
    channel_names = _parse_channels(
        data.get("channel_names", data.get("modality", {})), path
    )
    file_ending = data.get("file_ending")
    if file_ending is not None:
        if not isinstance(file_ending, str) or not file_ending:
            raise InputError(f"'file_ending' must be a string such as \".nii.gz\", got "
                             f"{file_ending!r}", path)
        file_ending = _normalise_ending(file_ending)
    return DatasetInfo(labels=labels, regions=regions, channel_names=channel_names,
                       file_ending=file_ending, path=path, ignore=ignore)


def _parse_labels(raw: Any, path: Path) -> tuple[dict[int, str], dict[str, tuple[int, ...]]]:
    if not isinstance(raw, dict):
        raise InputError("'labels' must be an object mapping names to label values", path)
    labels: dict[int, str] = {}
    regions: dict[str, tuple[int, ...]] = {}
    v1 = bool(raw) and all(
        isinstance(v, str) and re.fullmatch(r"\d+", str(k)) for k, v in raw.items()
    )
    if v1:  # {"0": "background", "1": "RV"}
        for key, name in raw.items():
            labels[int(key)] = name
        return dict(sorted(labels.items())), regions
    single_regions: dict[int, str] = {}
    for name, value in raw.items():
        if _is_int(value) and value >= 0:
            if value in labels:
                raise InputError(
                    f"label value {value} is named twice ('{labels[value]}' and '{name}')", path
                )
            labels[int(value)] = name
        elif (
            isinstance(value, list)
            and value
            and all(_is_int(v) and v >= 0 for v in value)
        ):
            regions[name] = tuple(int(v) for v in value)
            if len(value) == 1:
                single_regions.setdefault(int(value[0]), name)
        else:
            raise InputError(
                f"label '{name}' has value {json.dumps(value)}; expected a non-negative integer "
                "or a non-empty list of them (a region)",
                path,
            )
    for value, name in single_regions.items():
        labels.setdefault(value, name)
    return dict(sorted(labels.items())), regions


def _parse_regions(raw: Any, path: Path) -> dict[str, tuple[int, ...]]:
    """A top-level ``"regions": {"whole tumour": [1, 2, 3], ...}`` (an alternative to nnU-Net v2's
    regions inside ``"labels"``)."""
    if not isinstance(raw, dict):
        raise InputError("'regions' must be an object mapping region names to lists of label values", path)
    regions: dict[str, tuple[int, ...]] = {}
    for name, value in raw.items():
        if not (isinstance(value, list) and value and all(_is_int(v) and v >= 0 for v in value)):
            raise InputError(f"region '{name}' has value {json.dumps(value)}; expected a non-empty list of label "
                             "values", path)
        regions[str(name)] = tuple(int(v) for v in value)
    return regions


def _parse_channels(raw: Any, path: Path) -> dict[int, str]:
    if not isinstance(raw, dict):
        raise InputError("'channel_names' must be an object mapping \"0\" to a name", path)
    channels: dict[int, str] = {}
    for key, name in raw.items():
        if not re.fullmatch(r"\d+", str(key)) or not isinstance(name, str):
            raise InputError(
                f"channel entry {json.dumps(key)}: {json.dumps(name)} must map a channel "
                "index to a name",
                path,
            )
        channels[int(key)] = name
    return dict(sorted(channels.items()))


def find_dataset_json(*folders: PathLike | None) -> DatasetInfo | None:
    """Read the first ``dataset.json`` found in each folder, then its parent, in order given.

    ``None`` entries are skipped. Returns None if there is none.
    """
    for folder in folders:
        if folder is None:
            continue
        folder = Path(folder)
        for candidate in (folder / "dataset.json", folder.parent / "dataset.json"):
            if candidate.is_file():
                return read_dataset_json(candidate)
    return None


def _normalise_ending(ending: str) -> str:
    return ending if ending.startswith(".") else "." + ending


def _split_extension(name: str, file_ending: str | None = None) -> tuple[str, str] | None:
    """(stem, ending) if ``name`` ends with ``file_ending`` (or any known image ending)."""
    lower = name.lower()
    endings = (_normalise_ending(file_ending),) if file_ending else LABEL_EXTENSIONS
    for ext in endings:
        if lower.endswith(ext.lower()) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext):]
    return None


def case_id(path: PathLike, *, channel: bool = False) -> str:
    """Case identifier of a file: its name without the (multi-part) ending.

    ``"BraTS_001_0000.nii.gz"`` -> ``"BraTS_001_0000"``, or ``"BraTS_001"`` with
    ``channel=True`` (strips a four-digit ``_XXXX`` channel suffix if present). Unknown endings:
    the last suffix is stripped (two for ``.gz``).
    """
    name = Path(path).name
    split = _split_extension(name)
    if split is not None:
        stem = split[0]
    else:
        p = Path(name)
        stem = Path(p.stem).stem if p.suffix.lower() == ".gz" else p.stem
    if channel:
        match = _CHANNEL_SUFFIX.match(stem)
        if match:
            stem = match["case"]
    return stem


def _image_entries(folder: PathLike, file_ending: str | None) -> list[tuple[str, Path]]:
    """(stem, path) of every image file directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError("folder not found", folder)
    if not folder.is_dir():
        raise InputError("not a folder", folder)
    entries = []
    for item in sorted(folder.iterdir()):
        if item.name.startswith(".") or item.name == "dataset.json":
            continue
        split = _split_extension(item.name, file_ending)
        if split is None or item.is_dir():
            continue
        _check_listed_file(item, folder)
        entries.append((split[0], item))
    return entries


def _check_listed_file(item: Path, folder: Path) -> None:
    """:class:`InputError` for an image file of a listing that cannot be read as one: a broken
    link (else taken for a missing case: an empty prediction, a skipped case), a pipe or device
    (reading it would block), or a name that is not valid UTF-8 (ITK aborts the whole process on
    it; the name is shown with its undecodable bytes escaped)."""
    try:
        item.name.encode("utf-8")
    except UnicodeEncodeError:
        shown = item.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise InputError(f"holds a file whose name is not valid UTF-8 ({shown}); rename it", folder) from None
    if item.is_file():
        return
    if item.is_symlink() and not item.exists():
        raise InputError(f"is a broken link (to {os.readlink(item)})", item)
    raise InputError("is not a regular file (a pipe, socket or device)", item)


def list_label_files(folder: PathLike, *, file_ending: str | None = None) -> dict[str, Path]:
    """Map case id -> label file for every image file in ``folder`` (not recursive), sorted.

    With ``file_ending`` only files with that ending count. Raises :class:`InputError` if the
    folder is missing or two files share a case id (e.g. ``x.nii`` and ``x.nii.gz``).
    """
    files: dict[str, Path] = {}
    for case, item in _image_entries(folder, file_ending):
        if case in files:
            raise InputError(
                f"two files for case '{case}': {files[case].name} and {item.name}; "
                "keep one or pass the file ending to use",
                Path(folder),
            )
        files[case] = item
    return dict(sorted(files.items()))


def list_image_files(
    folder: PathLike, *, file_ending: str | None = None
) -> dict[str, list[Path]]:
    """Map case id -> channel files (``CASE_0000``, ``CASE_0001``, ...) sorted by channel.

    If no file carries a ``_XXXX`` channel suffix, every file is a one-channel case. Raises
    :class:`InputError` when only some files have a suffix, when a case's channels are not
    ``0 .. n-1``, when cases have different numbers of channels, or on a duplicate file.
    """
    folder = Path(folder)
    entries = _image_entries(folder, file_ending)
    matches = [(_CHANNEL_SUFFIX.match(stem), stem, item) for stem, item in entries]
    with_suffix = [m is not None for m, _, _ in matches]
    if entries and not any(with_suffix):
        return {case: [item] for case, item in list_label_files(folder, file_ending=file_ending)
                .items()}
    if not all(with_suffix):
        example = next(item for (m, _, item) in matches if m is None)
        raise InputError(
            f"image file {example.name} has no channel suffix (_0000, _0001, ...) while "
            "others do",
            folder,
        )
    cases: dict[str, dict[int, Path]] = {}
    for match, _, item in matches:
        assert match is not None
        case, idx = match["case"], int(match["channel"])
        channels = cases.setdefault(case, {})
        if idx in channels:
            raise InputError(
                f"two files for case '{case}' channel {idx:04d}: {channels[idx].name} and "
                f"{item.name}",
                folder,
            )
        channels[idx] = item
    result: dict[str, list[Path]] = {}
    for case in sorted(cases):
        indices = sorted(cases[case])
        if indices != list(range(len(indices))):
            raise InputError(
                f"case '{case}' has channels {[f'{i:04d}' for i in indices]}; expected "
                f"_0000 to _{len(indices) - 1:04d} without gaps",
                folder,
            )
        result[case] = [cases[case][i] for i in indices]
    counts = Counter(len(files) for files in result.values())
    if len(counts) > 1:  # name a case of a minority count (the majority is most likely right)
        usual, n_usual = counts.most_common(1)[0]
        odd = next(case for case, files in result.items() if len(files) != usual)
        raise InputError(f"case '{odd}' has {len(result[odd])} channel(s) but {n_usual} other case(s) have {usual}",
                         folder)
    return result


# --------------------------------------------------------------------------------------------
# Segmentation folders: file endings, manifests, pairing with ground truths or images
# --------------------------------------------------------------------------------------------

#: Name of the table that ``segqc degrade`` and ``segqc zoo predict`` write beside their outputs.
MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class SegmentationFiles:
    """The segmentations of a folder. ``files``: segmentation id -> (case it segments, path);
    without a manifest the id is the case id; with one (``segqc degrade`` output) the id is the
    file's stem and the case comes from the manifest's ``case`` column. ``ignored``: (path, why)
    for files that are not used."""

    files: dict[str, tuple[str, Path]]
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    manifest: Path | None = None


def _manifest_files(folder: Path) -> SegmentationFiles | None:
    """The files of ``folder`` listed in a ``manifest.csv`` of the folder or of its parent (None
    when there is none, or the parent's lists no file of this folder). A manifest in the folder
    itself must be readable and have ``case`` and ``file`` columns; a parent's that is not is
    ignored (it may be any other table)."""
    import pandas as pd

    for manifest in (folder / MANIFEST_NAME, folder.parent / MANIFEST_NAME):
        if not manifest.is_file():
            continue
        own = manifest.parent == folder
        try:
            table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as exc:
            if own:
                raise InputError(f"cannot read the manifest: {exc}", manifest) from None
            continue
        if not {"case", "file"} <= set(table.columns):
            if own:
                raise InputError("a segmentation manifest needs the columns 'case' and 'file'", manifest)
            continue
        listed = _listed_files(table, manifest, folder)
        if listed.files or own:
            return listed
    return None


def _listed_files(table, manifest: Path, folder: Path) -> SegmentationFiles:
    root = manifest.parent
    files: dict[str, tuple[str, Path]] = {}
    ignored: list[tuple[Path, str]] = []
    for case, name in zip(table["case"], table["file"]):
        path = root / name
        if folder.resolve() not in (path.parent.resolve(), *path.parent.resolve().parents):
            continue  # a manifest of the parent folder may list files of other sub-folders
        if not path.is_file():
            ignored.append((path, f"listed in {manifest} but missing"))
            continue
        files[case_id(path)] = (case, path)
    return SegmentationFiles(files=dict(sorted(files.items())), ignored=ignored, manifest=manifest)


def segmentation_files(folder: PathLike, *, file_ending: str | None = None) -> SegmentationFiles:
    """The segmentations of ``folder`` (:class:`SegmentationFiles`).

    A ``manifest.csv`` with ``case`` and ``file`` columns in the folder or its parent (what
    ``segqc degrade`` writes) maps each file to the case it segments. Otherwise every image file
    is one case, whatever its ending: a prediction ``CASE.nii`` pairs with a ground truth
    ``CASE.nii.gz``. When one case has files with several endings, the one with ``file_ending``
    (``dataset.json``) is used and the others are listed in ``ignored``; without a
    ``file_ending`` that is an :class:`InputError` (which one is meant?).
    """
    folder = Path(folder)
    listed = _manifest_files(folder)
    if listed is not None:
        return listed
    by_case: dict[str, list[Path]] = {}
    for stem, item in _image_entries(folder, None):
        by_case.setdefault(stem, []).append(item)
    files: dict[str, tuple[str, Path]] = {}
    ignored: list[tuple[Path, str]] = []
    wanted = _normalise_ending(file_ending).lower() if file_ending else None
    for case, paths in sorted(by_case.items()):
        if len(paths) == 1:
            files[case] = (case, paths[0])
            continue
        chosen = [p for p in paths if wanted and p.name.lower().endswith(wanted)]
        if len(chosen) != 1:
            raise InputError(f"two files for case '{case}': {', '.join(p.name for p in paths)}; keep one", folder)
        files[case] = (case, chosen[0])
        ignored += [(p, f"another file of case '{case}' ({chosen[0].name}, the dataset's "
                        f"file ending {file_ending}) is used") for p in paths if p != chosen[0]]
    return SegmentationFiles(files=files, ignored=ignored)


def ground_truth_files(folder: PathLike, *, file_ending: str | None = None) -> SegmentationFiles:
    """Ground-truth label maps of ``folder`` by case id. With ``file_ending`` (from
    ``dataset.json``) files with another ending are listed in ``ignored`` with the reason."""
    folder = Path(folder)
    files = list_label_files(folder, file_ending=file_ending)
    ignored: list[tuple[Path, str]] = []
    if file_ending:
        for _stem, item in _image_entries(folder, None):
            if item not in files.values():
                ignored.append((item, f"its ending differs from dataset.json's file_ending {file_ending}"))
    return SegmentationFiles(files={c: (c, p) for c, p in files.items()}, ignored=ignored)


@dataclass(frozen=True)
class Pairing:
    """Segmentations matched to reference files (ground truths or images) by case.
    ``matched``: (segmentation id, case, segmentation path, reference path(s));
    ``missing``: reference cases without a segmentation; ``extra``: segmentation ids whose case
    has no reference; ``ignored``: (path, why)."""

    matched: list[tuple[str, str, Path, Any]]
    missing: list[tuple[str, Any]]
    extra: list[tuple[str, Path]]
    ignored: list[tuple[Path, str]]


def pair_segmentations(segs: SegmentationFiles, references: Mapping[str, Any]) -> Pairing:
    """Match segmentations to ``references`` (case -> path or list of paths)."""
    matched = [(sid, case, path, references[case]) for sid, (case, path) in segs.files.items() if case in references]
    covered = {case for _, case, _, _ in matched}
    return Pairing(
        matched=matched,
        missing=[(case, ref) for case, ref in references.items() if case not in covered],
        extra=[(sid, path) for sid, (case, path) in segs.files.items() if case not in references],
        ignored=list(segs.ignored),
    )


def pair_cases(pred_dir: PathLike, gt_dir: PathLike, *, file_ending: str | None = None) -> Pairing:
    """Pair the segmentations of ``pred_dir`` (:func:`segmentation_files`: any ending, or a
    ``segqc degrade`` manifest) with the ground truths of ``gt_dir``
    (:func:`ground_truth_files`: ``file_ending`` from ``dataset.json``). Raises
    :class:`InputError` if either folder is missing or the ground-truth folder holds no label
    file; missing, extra and ignored files are reported in the :class:`Pairing`."""
    gts = ground_truth_files(gt_dir, file_ending=file_ending)
    if not gts.files:
        raise InputError(f"no label files ({file_ending or ', '.join(LABEL_EXTENSIONS)}) found", Path(gt_dir))
    preds = segmentation_files(pred_dir, file_ending=file_ending)
    pairing = pair_segmentations(preds, {case: path for case, (_, path) in gts.files.items()})
    return Pairing(matched=pairing.matched, missing=pairing.missing, extra=pairing.extra,
                   ignored=gts.ignored + pairing.ignored)


# --------------------------------------------------------------------------------------------
# A dataset folder
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """An nnU-Net-style dataset folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``), read once
    by every trainer and the fingerprint: the one place that checks the layout.

    ``label_files``: case -> label map (only files with ``dataset.json``'s ``file_ending``);
    ``image_files``: case -> channel files (``CASE_0000`` ...; empty when the folder has no
    ``imagesTr`` and images were not required)."""

    root: Path
    info: DatasetInfo
    label_files: dict[str, Path]
    image_files: dict[str, list[Path]]

    @classmethod
    def open(cls, root: PathLike, *, images: bool = True) -> Dataset:
        """Read and check the folder; one-line :class:`InputError` naming the file or folder for a
        missing folder or ``dataset.json``, no label files, a case with a label map but no image
        or the reverse, or a channel count that differs from ``dataset.json``."""
        root = Path(root)
        if not root.is_dir():
            raise InputError("dataset folder not found" if not root.exists() else "not a folder", root)
        if not (root / "dataset.json").is_file():
            raise InputError("no dataset.json (nnU-Net layout: imagesTr/, labelsTr/, dataset.json)", root)
        info = read_dataset_json(root / "dataset.json")
        labels_dir, images_dir = root / "labelsTr", root / "imagesTr"
        if not labels_dir.is_dir():
            raise InputError("no labelsTr folder; the dataset needs label maps", root)
        label_files = list_label_files(labels_dir, file_ending=info.file_ending)
        if not label_files:
            raise InputError("holds no label files" + (f" ending in {info.file_ending}" if info.file_ending else ""),
                             labels_dir)
        image_files: dict[str, list[Path]] = {}
        if images:
            if not images_dir.is_dir():
                raise InputError("no imagesTr folder", root)
            image_files = list_image_files(images_dir, file_ending=info.file_ending)
            for case, path in label_files.items():
                if case not in image_files:
                    raise InputError(f"no image for case '{case}' in {images_dir}", path)
            for case, paths in image_files.items():
                if case not in label_files:
                    raise InputError(f"no label map for case '{case}' in {labels_dir}", paths[0])
            n_channels = len(next(iter(image_files.values())))
            if info.channel_names and len(info.channel_names) != n_channels:
                raise InputError(f"names {len(info.channel_names)} channel(s) but the images have {n_channels}",
                                 info.path)
        return cls(root=root, info=info, label_files=label_files, image_files=image_files)

    @property
    def cases(self) -> list[str]:
        """Case ids, sorted."""
        return sorted(self.label_files)

    def select(self, cases: Iterable[str] | None) -> list[str]:
        """``cases`` checked against the dataset (all cases when None); unknown ids are one
        :class:`InputError` naming the first ones."""
        if cases is None:
            return self.cases
        wanted = list(dict.fromkeys(cases))
        unknown = [c for c in wanted if c not in self.label_files]
        if unknown:
            raise InputError(f"unknown case(s): {', '.join(unknown[:5])}", self.root / "labelsTr")
        return wanted
