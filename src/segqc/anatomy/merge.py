"""Merging several partial label maps of one image into one map of one scheme (DAP Atlas §3.1.3).

Every source is a label map already in the TARGET scheme's values (map it first,
:mod:`segqc.anatomy.mapping`) on one grid. In a source, 0 means "this source says nothing here"
(partial maps label only their own classes). Where sources name the same class the result is
their union; where they name different classes at one voxel (a conflict) the ``strategy``
decides:

* ``hierarchy`` (DAP: coarse -> fine) — the class deepest in the scheme's hierarchy wins (a
  fine structure drawn on top of the coarse tissue it lies in), ties by source priority;
* ``priority`` — the first source in ``priority`` order that labels the voxel wins;
* ``vote`` — the class named by most sources wins (0 is no vote), ties by source priority.

``priority``: the source indices, most trusted first (default: the order given). The result
(:class:`MergeResult`) holds the merged map, the provenance map (1-based index of the source
whose class won each voxel, 0 = nobody labelled it), and two tables: per class the voxels each
source claimed and won, per source pair the voxels where both labelled and where they disagreed,
by class pair. All of it is array arithmetic over the stacked sources (no per-voxel loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from segqc.anatomy.scheme import LabelScheme, label_dtype, lookup
from segqc.metrics.counts import value_counts

__all__ = ["STRATEGIES", "MergeResult", "merge_label_maps"]

STRATEGIES = ("hierarchy", "priority", "vote")


@dataclass
class MergeResult:
    """``merged`` (target values), ``provenance`` (uint8, 1-based source index, 0 none),
    ``classes`` (class, source, claimed, won voxels; one row per class and source that claimed
    it), ``conflicts`` (source_a, source_b, class_a, class_b, voxels: both sources labelled the
    voxel with these different classes)."""

    merged: np.ndarray
    provenance: np.ndarray
    classes: pd.DataFrame
    conflicts: pd.DataFrame


def merge_label_maps(sources: Sequence[np.ndarray], scheme: LabelScheme, *, strategy: str = "hierarchy",
                     priority: Sequence[int] | None = None, names: Sequence[str] | None = None) -> MergeResult:
    """Merge ``sources`` (same shape, target-scheme values) as the module docstring says.

    ``names``: a name per source for the tables (default ``source1``, ...). Raises ``ValueError``
    for shapes that differ, an unknown strategy, a priority that is not a permutation of the
    source indices, or values the scheme does not have. Empty sources (all 0) are allowed; the
    merged map of all-empty sources is all background.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if not sources:
        raise ValueError("merging needs at least one source")
    n = len(sources)
    shape = sources[0].shape
    if any(s.shape != shape for s in sources):
        raise ValueError(f"sources have different shapes: {sorted({s.shape for s in sources})}")
    order = list(range(n)) if priority is None else [int(i) for i in priority]
    if sorted(order) != list(range(n)):
        raise ValueError(f"priority must list each of the {n} source indices once, got {list(priority or [])}")
    names = list(names) if names is not None else [f"source{i + 1}" for i in range(n)]
    # classes as dense codes 0 (background), 1 .. K (the scheme's values, ascending): the tables
    # grow with the number of classes, not with the largest value
    table = np.array([0, *scheme.values], dtype=np.int64)
    for i, source in enumerate(sources):
        present, _ = value_counts(source)
        unknown = sorted(int(v) for v in present[~np.isin(present, table)])
        if unknown:
            raise ValueError(f"{names[i]}: values {unknown[:8]} are not classes of the scheme {scheme.name!r}")
    rank = np.empty(n, dtype=np.int64)  # 0 = most trusted
    rank[order] = np.arange(n)
    size = len(table)
    depth = np.zeros(size, dtype=np.int32)
    for code, value in enumerate(table[1:].tolist(), 1):
        depth[code] = scheme.depth(scheme.name_of(value))
    merged = np.zeros(shape, dtype=label_dtype(scheme.max_value))
    provenance = np.zeros(shape, dtype=np.uint8 if n < 255 else np.uint16)
    claimed = np.zeros((n, size), dtype=np.int64)
    won = np.zeros((n, size), dtype=np.int64)
    conflicts: dict[tuple[int, int, int], int] = {}
    flat_merged, flat_provenance = merged.reshape(-1), provenance.reshape(-1)
    flat_sources = [np.asarray(s).reshape(-1) for s in sources]
    total = flat_merged.size
    for begin in range(0, total, _BLOCK):  # blocks bound the memory of whole-body maps
        stop = min(begin + _BLOCK, total)
        stack = np.stack([_codes(s[begin:stop], table) for s in flat_sources])
        winner, any_label = _winners(stack, strategy, n - rank, depth)
        block = np.take_along_axis(stack, winner[None], axis=0)[0]
        flat_merged[begin:stop] = table[np.where(any_label, block, 0)]
        flat_provenance[begin:stop] = np.where(any_label, winner + 1, 0)
        for i in range(n):
            claimed[i] += np.bincount(stack[i], minlength=size)
            won[i] += np.bincount(stack[i][(winner == i) & any_label], minlength=size)
            for j in range(i + 1, n):
                both = (stack[i] > 0) & (stack[j] > 0) & (stack[i] != stack[j])
                if both.any():
                    pairs = stack[i][both].astype(np.int64) * size + stack[j][both]
                    codes, counts = np.unique(pairs, return_counts=True)
                    for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
                        key = (i, j, int(code))
                        conflicts[key] = conflicts.get(key, 0) + int(count)
    return MergeResult(merged=merged, provenance=provenance, classes=_class_table(claimed, won, table, scheme, names),
                       conflicts=_conflict_table(conflicts, table, scheme, names))


def _codes(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The dense code (index into ``table``, the ascending class values with 0 first) of every value;
    every value must be in ``table``."""
    return lookup(values, table, np.arange(len(table), dtype=np.int32), np.int32)

#: Voxels merged at a time (about 100 MB of working arrays for a few sources).
_BLOCK = 1 << 22


def _winners(stack: np.ndarray, strategy: str, trust: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the winning source per voxel and whether any source labelled it."""
    n = len(stack)
    labelled = stack > 0
    trust_column = trust.astype(np.int32)[:, None]  # n .. 1, larger = more trusted
    if strategy == "priority":
        score = np.broadcast_to(trust_column, stack.shape)
    elif strategy == "hierarchy":
        score = depth[stack] * (n + 1) + trust_column
    else:  # vote: how many sources name this source's class at the voxel
        votes = np.zeros(stack.shape, dtype=np.int32)
        for j in range(n):
            votes += (stack == stack[j]) & labelled[j]
        score = votes * (n + 1) + trust_column
    score = np.where(labelled, score, -1)
    return np.argmax(score, axis=0), np.asarray(labelled.any(axis=0))


def _class_table(claimed: np.ndarray, won: np.ndarray, table: np.ndarray, scheme: LabelScheme,
                 names: Sequence[str]) -> pd.DataFrame:
    rows = []
    for i, name in enumerate(names):
        for code in np.flatnonzero(claimed[i, 1:]) + 1:
            value = int(table[code])
            rows.append({"class": scheme.name_of(value), "value": value, "source": name,
                         "claimed": int(claimed[i, code]), "won": int(won[i, code])})
    return pd.DataFrame(rows, columns=["class", "value", "source", "claimed", "won"])


def _conflict_table(conflicts: dict[tuple[int, int, int], int], table: np.ndarray, scheme: LabelScheme,
                    names: Sequence[str]) -> pd.DataFrame:
    size = len(table)
    rows = [{"source_a": names[i], "source_b": names[j], "class_a": scheme.name_of(int(table[code // size])),
             "class_b": scheme.name_of(int(table[code % size])), "voxels": count}
            for (i, j, code), count in conflicts.items()]
    frame = pd.DataFrame(rows, columns=["source_a", "source_b", "class_a", "class_b", "voxels"])
    frame = frame.sort_values(["source_a", "source_b", "class_a", "class_b"], kind="stable")
    return frame.sort_values("voxels", ascending=False, kind="stable").reset_index(drop=True)
