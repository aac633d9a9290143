"""Multi-rater datasets: one folder per case holding the image and every rater's mask.

Layout (LIDC, BU-BIL converted, QUBIQ-like)::

    ROOT/CASE/image.nii.gz            (or image_0000.nii.gz, image_0001.nii.gz, ... for channels)
    ROOT/CASE/rater_1.nii.gz ... rater_R.nii.gz

Any image format segqc reads is accepted. Raters are ``rater_<k>`` numbered from 1 without gaps,
or ``rater_<name>`` (e.g. BU-BIL's ``rater_Person1_Amira.png``), ordered by name — then a name
stands for the same rater in every case; the number of raters may differ between cases (levels
and rater means are then per case). Other files in a case folder (e.g. ``consensus.nii.gz``,
``gold.png``) are ignored. A case folder without rater files, a gap in the numbering, a rater file
in two formats, or masks of different shapes or spacings are :class:`~segqc.errors.InputError`
naming the file or folder.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segqc.errors import InputError
from segqc.io.geometry import Geometry
from segqc.io.images import IMAGE_EXTENSIONS, read_label_map

__all__ = ["RaterCase", "case_folder_images", "find_rater_cases", "foreground_mask", "is_rater_folder",
           "read_rater_grid", "read_rater_masks", "scan_rater_cases"]

_RATER = re.compile(r"^rater_(.+)$")
_IMAGE = re.compile(r"^image(_\d{4})?$")


@dataclass(frozen=True)
class RaterCase:
    """One case: its id (the folder name), image channel files (may be empty), rater masks (rater 1
    first) and the raters' names (``"1"``, ``"2"``, ... or ``"Person1_Amira"``, ...: the same name
    is the same rater in every case)."""

    case: str
    folder: Path
    images: tuple[Path, ...]
    raters: tuple[Path, ...]
    names: tuple[str, ...] = ()


def _stem(path: Path) -> str | None:
    name = path.name
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return None


def _case_folders(root: Path) -> list[Path]:
    """The case folders of ``root``, sorted by name (hidden and ``_``-prefixed ones skipped)."""
    return [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith((".", "_"))]


def _scan(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``(raters, images)`` of a case folder: rater name -> file, image stem -> file; a name
    stored twice (two formats) is an :class:`InputError`."""
    raters: dict[str, Path] = {}
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = _stem(path) if path.is_file() else None
        if stem is None:
            continue
        match = _RATER.match(stem)
        kind, key, found = (("rater", match.group(1), raters) if match else
                            ("image", stem, images) if _IMAGE.match(stem) else (None, "", None))
        if found is None:
            continue
        if key in found:
            raise InputError(f"{kind} {key} is stored twice ({found[key].name} and {path.name})", folder)
        found[key] = path
    return raters, images


def _case(folder: Path) -> RaterCase:
    raters, images = _scan(folder)
    if not raters:
        raise InputError("no rater_1, rater_2, ... mask in this case folder", folder)
    if all(k.isdigit() for k in raters):
        numbers = {int(k): path for k, path in raters.items()}
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
        if missing:
            found = ", ".join(f"rater_{k}" for k in sorted(numbers))
            raise InputError(f"rater_{missing[0]} is missing (found {found})", folder)
        names = [str(k) for k in sorted(numbers)]
        paths = [numbers[k] for k in sorted(numbers)]
    else:
        names = sorted(raters)
        paths = [raters[k] for k in names]
    return RaterCase(folder.name, folder, tuple(images[k] for k in sorted(images)), tuple(paths), tuple(names))


def _wanted_folders(root: str | Path, cases: Sequence[str] | None) -> list[Path]:
    """The case folders of ``root`` (sorted by name; hidden folders skipped), or only ``cases``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("multi-rater folder not found", root)
    folders = _case_folders(root)
    if cases is not None:
        wanted = set(cases)
        unknown = sorted(wanted - {p.name for p in folders})
        if unknown:
            raise InputError(f"case folder(s) not found: {', '.join(unknown[:5])}", root)
        folders = [p for p in folders if p.name in wanted]
    if not folders:
        raise InputError("no case folders (CASE/rater_1.nii.gz, ...) in this folder", root)
    return folders


def find_rater_cases(root: str | Path, cases: Sequence[str] | None = None) -> list[RaterCase]:
    """Every case folder of ``root`` (sorted by name; hidden folders skipped), or only ``cases``;
    the first folder that is not a valid case (no raters, a rater number missing) is an
    :class:`InputError`."""
    return [_case(folder) for folder in _wanted_folders(root, cases)]


def scan_rater_cases(root: str | Path, cases: Sequence[str] | None = None) -> tuple[list[RaterCase], dict[str, str]]:
    """As :func:`find_rater_cases`, but a folder that is not a valid case does not stop the scan:
    returns (the valid cases, case folder name -> one line saying what is wrong with it)."""
    found, invalid = [], {}
    for folder in _wanted_folders(root, cases):
        try:
            found.append(_case(folder))
        except InputError as error:
            invalid[folder.name] = str(error)
    return found, invalid


def is_rater_folder(root: str | Path) -> bool:
    """True when ``root`` is a folder without ``imagesTr``/``labelsTr`` whose first case folder
    holds a ``rater_*`` file (the layout of this module, as opposed to an nnU-Net dataset)."""
    root = Path(root)
    if not root.is_dir() or (root / "imagesTr").is_dir() or (root / "labelsTr").is_dir():
        return False
    folders = _case_folders(root)
    return bool(folders) and bool(_scan(folders[0])[0])


def case_folder_images(root: str | Path) -> dict[str, list[Path]]:
    """Case id -> image channel files of every case folder of ``root`` that holds ``image.*`` (or
    ``image_0000.*``, ...): the images of a multi-rater folder, raters or not (for prediction).
    Empty when no sub-folder holds an image."""
    out: dict[str, list[Path]] = {}
    for folder in _case_folders(Path(root)):
        images = _scan(folder)[1]
        if images:
            out[folder.name] = [images[k] for k in sorted(images)]
    return out


def foreground_mask(labels: np.ndarray, foreground: Sequence[int] | None = None) -> np.ndarray:
    """Bool mask of a label map: the values in ``foreground``, or every non-zero value."""
    return labels > 0 if foreground is None else np.isin(labels, list(foreground))


def read_rater_masks(case: RaterCase, foreground: Sequence[int] | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """``(R, ...)`` bool masks of a case's raters (foreground: the label values in ``foreground``,
    default every non-zero value) and their spacing (mm, array axis order)."""
    masks, geometry = read_rater_grid(case, foreground)
    return masks, tuple(float(s) for s in geometry.spacing)


def read_rater_grid(case: RaterCase, foreground: Sequence[int] | None = None) -> tuple[np.ndarray, Geometry]:
    """As :func:`read_rater_masks`, with the whole grid of the first rater's mask (shape,
    spacing, direction, origin) that predictions must lie on. Masks of different shapes or
    spacings are an :class:`InputError` naming the odd one out (the mask that differs from the
    shape most masks share), or the case folder and every mask's shape when no shape has a
    majority (two raters)."""
    images = [read_label_map(path) for path in case.raters]
    _check_same(case, [image.array.shape for image in images], "shape")
    _check_same(case, [tuple(float(s) for s in image.geometry.spacing) for image in images], "spacing",
                same=lambda a, b: len(a) == len(b) and bool(np.allclose(a, b, rtol=1e-3)))
    masks = [foreground_mask(image.array, foreground) for image in images]
    return np.stack(masks), images[0].geometry  # a case has at least one rater (find_rater_cases)


def _check_same(case: RaterCase, values: list[tuple], what: str,
                same: Callable[[tuple, tuple], bool] = operator.eq) -> None:
    """:class:`InputError` unless every rater mask's ``what`` (shape, spacing) is ``same`` as the
    others', naming the odd mask out, or the case folder when no value has a majority."""
    groups: list[list[int]] = []  # indices of values that are the same, first value first
    for i, value in enumerate(values):
        group = next((g for g in groups if same(values[g[0]], value)), None)
        if group is None:
            groups.append([i])
        else:
            group.append(i)
    if len(groups) == 1:
        return
    largest = max(groups, key=len)
    common, n = values[largest[0]], len(largest)
    if n > len(values) / 2:
        odd = next(i for i in range(len(values)) if i not in largest)
        raise InputError(f"mask of {what} {values[odd]}, but {n} of the {len(values)} rater masks have {common}",
                         case.raters[odd])
    listed = ", ".join(f"{path.name} {value}" for path, value in zip(case.raters, values, strict=True))
    raise InputError(f"rater masks of different {what}s: {listed}", case.folder)
