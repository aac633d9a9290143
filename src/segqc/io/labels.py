"""What "labels" means everywhere in segqc: one :class:`LabelSet`.

A label set names the foreground classes (label value -> name), the regions (name -> label
values whose union is evaluated as one mask, nnU-Net v2 / BraTS style), the background (0) and
an optional *ignore* label (nnU-Net: voxels of that value in the ground truth are excluded from
every class). ``known`` says whether the class list is authoritative (from ``dataset.json`` or
given by the user): then a label map holding another value is an error; otherwise the classes are
those present in the case.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from segqc.errors import InputError
from segqc.metrics.counts import value_counts

#: A label map without a class list whose values are more than this many is suspicious (an
#: intensity image passed as a label map?): segqc warns.
MANY_LABELS = 64


@dataclass(frozen=True)
class LabelSet:
    """Classes, regions and the ignore label (module docstring). ``names``: foreground label
    value -> name (background excluded); ``known``: whether ``names`` is the complete list;
    ``restricted``: the user chose these classes (other values in the maps are tolerated)."""

    names: Mapping[int, str] = field(default_factory=dict)
    regions: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    ignore: int | None = None
    known: bool = False
    restricted: bool = False
    background: int = 0

    def __post_init__(self) -> None:
        names = {int(k): str(v) for k, v in sorted(self.names.items()) if int(k) != self.background}
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "regions", {str(k): tuple(int(v) for v in members)
                                             for k, members in self.regions.items()})
        if self.ignore is not None and self.ignore in names:
            raise ValueError(f"label {self.ignore} cannot be a class and the ignore label")
        if any(v < 0 for v in names):
            raise ValueError("label values must be non-negative")

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_dataset_info(cls, info) -> LabelSet:  # info: segqc.io.datasets.DatasetInfo | None
        """The classes, regions and ignore label of a ``dataset.json`` (unknown when None or
        when it names no label)."""
        if info is None:
            return cls()
        names = {k: v for k, v in info.labels.items() if k != 0}
        return cls(names=names, regions=dict(info.regions), ignore=info.ignore, known=bool(names))

    def restricted_to(self, labels: Sequence[int]) -> LabelSet:
        """Only ``labels`` are evaluated (nnU-Net's ``-l``); other values in the maps are not an
        error and count as background for these classes. A ValueError for an empty list, label 0,
        a negative label, the ignore label, or (with a complete class list, ``known``) a label
        that is not one of its classes."""
        labels = [int(v) for v in labels]
        if not labels:
            raise ValueError("the list of labels to evaluate is empty")
        if 0 in labels:
            raise ValueError("label 0 is the background, not a class")
        if min(labels) < 0:
            raise ValueError(f"label {min(labels)} is negative; classes are positive label values")
        if self.ignore is not None and self.ignore in labels:
            raise ValueError(f"label {self.ignore} is the ignore label and cannot be evaluated")
        unknown = self.unlisted(labels)
        if unknown:  # a typo would score an absent class as both-empty, silently
            raise ValueError(f"label {unknown[0]} is not a class of the label list (dataset.json: "
                             f"{', '.join(str(v) for v in self.names)})")
        return replace(self, names={v: self.names.get(v, str(v)) for v in labels}, regions={}, known=True,
                       restricted=True)

    def unlisted(self, labels: Sequence[int]) -> list[int]:
        """The values of ``labels`` that a complete class list (``known``) lacks, ascending; none
        when the list is not complete."""
        return sorted({int(v) for v in labels} - set(self.names)) if self.known else []

    def with_regions(self, regions: Mapping[str, Sequence[int]]) -> LabelSet:
        return replace(self, regions={k: tuple(v) for k, v in regions.items()})

    # -- queries ---------------------------------------------------------------------------

    @property
    def foreground(self) -> tuple[int, ...]:
        return tuple(self.names)

    def name(self, label: int | str) -> str:
        if isinstance(label, str):
            return label
        return self.names.get(int(label), str(int(label)))

    def classes_of(self, *arrays: np.ndarray) -> list[int]:
        """The classes to evaluate in a case: the known ones, else the non-zero values present
        (the ignore label never)."""
        if self.known:
            return list(self.names)
        present: set[int] = set()
        for array in arrays:
            present |= set(int(v) for v in value_counts(array)[0])
        present.discard(self.background)
        if self.ignore is not None:
            present.discard(self.ignore)
        return sorted(present)

    def targets(self, classes: Iterable[int]) -> list[tuple[int | str, str, tuple[int, ...]]]:
        """(label, name, member values) of every class and region to evaluate."""
        out: list[tuple[int | str, str, tuple[int, ...]]] = [(c, self.name(c), (c,)) for c in classes]
        out += [(name, name, members) for name, members in self.regions.items()]
        return out

    def check(self, array: np.ndarray, path: str | Path | None) -> list[str]:
        """Raise :class:`InputError` naming ``path`` when the map holds a value that is not a
        known class, region member, background or ignore label; return warnings (one line each)
        for a map that looks like an intensity image (many values, no class list)."""
        values, _ = value_counts(array)
        if self.known and not self.restricted:
            allowed = {self.background, *self.names, *(m for ms in self.regions.values() for m in ms)}
            if self.ignore is not None:
                allowed.add(self.ignore)
            unexpected = sorted(set(int(v) for v in values) - allowed)
            if unexpected:
                shown = str(unexpected[:10])[:-1] + (", ...]" if len(unexpected) > 10 else "]")
                raise InputError(f"unexpected label value(s) {shown}; expected {sorted(allowed)} (from dataset.json "
                                 "or the labels given)", path)
            return []
        if not self.known and len(values) > MANY_LABELS:
            return [f"{path}: {len(values)} distinct label values — is this an intensity image rather than a "
                    "label map? Name the classes in dataset.json to silence this"]
        return []

    def apply_ignore(self, pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Remove the ignored voxels (ground truth == ignore label) from both maps (they become
        background in each; copies are made only when there is something to ignore)."""
        if self.ignore is None:
            return pred, gt
        mask = gt == self.ignore
        if not mask.any():
            return pred, gt
        pred, gt = pred.copy(), gt.copy()
        pred[mask] = self.background
        gt[mask] = self.background
        return pred, gt

    @classmethod
    def from_dict(cls, data: Mapping) -> LabelSet:
        """Inverse of :meth:`to_dict`."""
        return cls(names={int(k): str(v) for k, v in data.get("names", {}).items()},
                   regions={str(k): tuple(v) for k, v in data.get("regions", {}).items()},
                   ignore=data.get("ignore"), known=bool(data.get("known", False)),
                   restricted=bool(data.get("restricted", False)))

    def to_dict(self) -> dict:
        return {"names": {str(k): v for k, v in self.names.items()},
                "regions": {k: list(v) for k, v in self.regions.items()},
                "ignore": self.ignore, "known": self.known, "restricted": self.restricted}


