"""2D training slices of a multi-rater folder (:mod:`segqc.io.raters`: ``CASE/image*`` +
``CASE/rater_k*``), for the methods that learn from several raters (consensus diffusion).

Images are preprocessed as for every ``segqc seg`` method (:func:`segqc.seg.slices.image_slices`:
z-scored per case, slices along the last axis of a 3D array, resampled bilinearly to ``size`` x
``size``); every rater's mask (label > 0, or the values of ``foreground``) by nearest neighbour.
Cases may have different numbers of raters: the stack holds ``max_raters`` masks per slice and
``n_raters`` says how many are real (the rest are zero and never used). ``rater_ids`` gives each
mask its rater's number in ``rater_names`` (1-based; 0 for padding), the sorted names of all
raters of the data, so a rater missing from one case does not shift the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from segqc.errors import InputError
from segqc.io.raters import RaterCase, find_rater_cases, is_rater_folder, read_rater_masks
from segqc.seg.slices import image_slices, label_slices

__all__ = ["RaterSliceData", "build_rater_data", "check_raters_per_case", "rater_case_images"]


@dataclass
class RaterSliceData:
    """``images`` ``(N, C, S, S)`` float16, ``raters`` ``(N, R, S, S)`` uint8 {0, 1} (R = the
    most raters of a case), ``n_raters`` ``(N,)``, ``cases[i]`` the case of slice i,
    ``rater_ids`` ``(N, R)`` (module docstring) and ``rater_names``."""

    images: np.ndarray
    raters: np.ndarray
    n_raters: np.ndarray
    cases: list[str]
    rater_ids: np.ndarray | None = None
    rater_names: tuple[str, ...] = ()

    @property
    def n_slices(self) -> int:
        return int(self.raters.shape[0])

    @property
    def image_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def max_raters(self) -> int:
        return int(self.n_raters.max()) if self.n_raters.size else 0

    def raters_per_slice(self) -> dict[int, int]:
        """How many slices have each number of raters."""
        return {int(k): int(v) for k, v in zip(*np.unique(self.n_raters, return_counts=True))}

    def summary(self) -> dict[str, Any]:
        """What identifies the data in the run record (a rerun on other data is refused)."""
        from segqc.training.stages import arrays_crc32

        return {"slices": self.n_slices, "cases": len(set(self.cases)), "image_channels": self.image_channels,
                "size": int(self.raters.shape[-1]), "raters_per_slice": self.raters_per_slice(),
                "rater_pixels": int(self.raters.sum()),
                "crc32": arrays_crc32((self.images, self.raters, self.n_raters))}


def rater_case_images(case: RaterCase) -> list[np.ndarray]:
    """The image channel arrays of a case (``image.*`` or ``image_0000.*``, ...); InputError when
    it has none."""
    from segqc.io.images import read_image

    if not case.images:
        raise InputError("no image.* (or image_0000.*) file in this case folder", case.folder)
    return [read_image(path, finite=True).array for path in case.images]


def _prepare(case: RaterCase, *, size: int, foreground: tuple[int, ...] | None) -> dict[str, Any]:
    channels = rater_case_images(case)
    masks, _ = read_rater_masks(case, foreground)
    for array, path in zip(channels, case.images):
        if array.shape != masks.shape[1:]:
            raise InputError(f"image shape {array.shape} differs from the raters' masks {masks.shape[1:]}", path)
    images = image_slices(channels, size).astype(np.float16)
    raters = np.stack([label_slices(mask.astype(np.uint8), (0, 1), size) for mask in masks], axis=1)
    return {"images": images, "raters": raters}


def build_rater_data(root: str | Path, cases: Sequence[str] | None, size: int, *,
                     foreground: Sequence[int] | None = None, jobs: int = 1, progress: bool = False) -> RaterSliceData:
    """The training slices of ``cases`` (default: all) of a multi-rater folder (module docstring).
    :class:`InputError` naming the folder when no rater marks any foreground in them."""
    from segqc.execution import map_cases

    chosen = find_rater_cases(root, cases)
    function = partial(_prepare, size=size, foreground=None if foreground is None else tuple(foreground))
    results: dict[str, dict[str, Any]] = {}
    for case, result in map_cases(function, chosen, jobs=jobs, description="prepare", progress=progress):
        if isinstance(result, Exception):
            raise result
        results[case.case] = result
    ordered = [results[c.case] for c in chosen]
    if not any(r["raters"].any() for r in ordered):  # a model of background only is useless: say so
        raise InputError("no rater's mask has foreground in the training cases", root)
    most = max(r["raters"].shape[1] for r in ordered)
    n = sum(r["raters"].shape[0] for r in ordered)
    all_names = {name for case in chosen for name in case.names}
    names = tuple(sorted(all_names, key=lambda v: (0, int(v), v) if v.isdigit() else (1, 0, v)))
    number = {name: k for k, name in enumerate(names, start=1)}
    raters = np.zeros((n, most, size, size), dtype=np.uint8)
    counts = np.zeros(n, dtype=np.int64)
    ids = np.zeros((n, most), dtype=np.int64)
    row = 0
    for case, result in zip(chosen, ordered):
        k, r = result["raters"].shape[:2]
        raters[row:row + k, :r] = result["raters"]
        counts[row:row + k] = r
        ids[row:row + k, :r] = [number[name] for name in case.names]
        row += k
    return RaterSliceData(np.concatenate([r["images"] for r in ordered]), raters, counts,
                          [c.case for c, r in zip(chosen, ordered) for _ in range(r["raters"].shape[0])], ids, names)


def check_raters_per_case(root: str | Path, cases: Sequence[str] | None, *, several: str | None) -> str | None:
    """The raters per training case of a multi-rater folder, checked from the file names before
    any image is read. ``several``: the method that learns from the raters' disagreement and so
    needs two or more raters (e.g. ``"the Probabilistic U-Net"``): refused (:class:`InputError`
    naming the folder) when no case has two; a warning line naming how many have one when some
    do. Otherwise (a method with a rule over the raters, such as their majority) a warning line
    when every case has a single rater: its mask is then the target whatever the rule. None when
    there is nothing to say. With ``several``, a folder that is no multi-rater folder (e.g. an
    nnU-Net dataset) is refused with one line naming it."""
    if several is not None and not is_rater_folder(root):
        raise InputError(f"{several} learns from several raters: give a multi-rater folder (CASE/image.nii.gz, "
                         "CASE/rater_1.nii.gz, ...)", root)
    chosen = find_rater_cases(root, cases)
    single = [case.case for case in chosen if len(case.raters) < 2]
    if several is not None:
        if len(single) == len(chosen):
            raise InputError(f"{several} learns from the disagreement of several raters, but no training case has "
                             "more than one (rater_1 only)", root)
        if single:
            return (f"{len(single)} of {len(chosen)} training case(s) have a single rater (e.g. {single[0]}); they "
                    "show no disagreement between raters")
        return None
    if len(single) == len(chosen):
        return ("every training case has a single rater: the target is that rater's mask, whatever the rule over "
                "the raters")
    return None
