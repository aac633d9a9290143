"""What an evaluation computes: :class:`EvaluationConfig` (metrics, their settings, classes and
regions, per-component and lesion-wise options), saved with every result and part of the digest a
rerun keys its reused cases on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from segqc.config import ConfigBase, register_presets
from segqc.errors import InputError
from segqc.io.labels import LabelSet
from segqc.metrics.binary import MetricSettings
from segqc.metrics.lesion import LesionSettings
from segqc.metrics.registry import COMPONENT_METRICS, DEFAULT_METRICS, metric_info

__all__ = ["EvaluationConfig"]


@dataclass(frozen=True)
class EvaluationConfig(ConfigBase):
    """What to compute. ``label_set``: the classes, regions and ignore label
    (:class:`~segqc.io.labels.LabelSet`; default: every non-zero value present in the case);
    ``per_component``: add CC-metrics (``cc_<metric>``) and detection counts for the metrics of
    :data:`COMPONENT_METRICS` that are requested (``cc_<metric>`` names in ``metrics`` imply
    it); ``voronoi_units``: ``"mm"`` or ``"voxel"`` distances for the Voronoi partition;
    ``resample``: map a prediction whose grid differs onto the ground-truth grid (nearest
    neighbour, in physical space) instead of failing; ``multiclass_all``: add the subject-level
    multi-class Dice (QCResUNet appendix A) as label ``all`` and, when ``nsd`` is computed, the
    subject-level NSD: the mean over the classes present in either map (what QCResUNet predicts;
    regions are not counted); ``spacing``: pixel spacing (mm) of
    files that carry none (PNG/TIFF); ``soft``: prediction and ground truth are maps in [0, 1]
    (probabilities, fractions of raters), not label maps — only ``soft_dice`` is defined then,
    one row per case with label ``soft``; ``class_tolerances``: NSD tolerance (mm) per class value or
    name (MONAI's ``class_thresholds``); ``class_mean``: add label ``mean``, the per-case mean over
    the classes of every metric (NaN left out); ``lesion``: the lesion-wise metrics' parameters
    (BraTS 2023 GLI by default); ``instances``: the maps are instance maps (every non-zero value one
    object, touching objects stay apart), evaluated as one label ``instances`` (PQ/SQ/RQ on the
    instances, the other metrics on the foreground). On the config base (``to_dict``/``from_dict``, JSON,
    digest; the one preset is ``default``)."""

    KIND: ClassVar[str] = "evaluation"

    metrics: tuple[str, ...] = DEFAULT_METRICS
    settings: MetricSettings = field(default_factory=MetricSettings)
    per_component: bool = False
    connectivity: int = 26
    voronoi_units: str = "mm"
    label_set: LabelSet = field(default_factory=LabelSet)
    resample: bool = False
    multiclass_all: bool = False
    spacing: tuple[float, ...] | None = None
    soft: bool = False
    class_tolerances: tuple[tuple[str, float], ...] = ()
    class_mean: bool = False
    lesion: LesionSettings = field(default_factory=LesionSettings)
    instances: bool = False
    froc_thresholds: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        # the lesion metrics use the NSD tolerance and percentile of the metric settings; keep the
        # recorded settings true to that
        object.__setattr__(self, "lesion", replace(self.lesion, tolerance_mm=self.settings.tolerance_mm,
                                                   percentile=self.settings.percentile))
        tolerances = self.class_tolerances
        items = tolerances.items() if isinstance(tolerances, Mapping) else tolerances
        checked = []
        for key, mm in items:
            mm = float(mm)
            if not (mm >= 0 and np.isfinite(mm)):
                raise ValueError(f"the NSD tolerance of class {key} must be >= 0 mm, got {mm}")
            checked.append((str(key), mm))
        object.__setattr__(self, "class_tolerances", tuple(checked))
        metrics = (self.metrics,) if isinstance(self.metrics, str) else tuple(self.metrics)  # one name, not letters
        wanted_cc = tuple(m[3:] for m in metrics if m.startswith("cc_"))
        for name in metrics:
            metric_info(name)
        for name in wanted_cc:
            if name not in COMPONENT_METRICS:
                raise ValueError(f"cc_{name} is not defined; per-component metrics: "
                                 + ", ".join(f"cc_{m}" for m in COMPONENT_METRICS))
        if wanted_cc:  # cc_dice asks for the per-component evaluation of dice
            metrics = tuple(dict.fromkeys([m for m in metrics if not m.startswith("cc_")] + list(wanted_cc)))
            object.__setattr__(self, "per_component", True)
        object.__setattr__(self, "metrics", metrics)
        if self.soft and set(metrics) != {"soft_dice"}:
            raise ValueError("soft maps (--soft) have one metric, soft_dice; other metrics need label maps")
        thresholds = tuple(float(t) for t in self.froc_thresholds)
        if thresholds and not self.soft:
            raise ValueError("FROC points need probability maps: use them with --soft")
        if any(not 0 < t <= 1 for t in thresholds):
            raise ValueError(f"FROC thresholds must be in (0, 1], got {thresholds}")
        object.__setattr__(self, "froc_thresholds", tuple(sorted(set(thresholds))))
        if self.connectivity not in (4, 6, 8, 18, 26):
            raise ValueError(f"connectivity must be 6, 18 or 26 (3D) / 4 or 8 (2D), got {self.connectivity}")
        if self.voronoi_units not in ("mm", "voxel"):
            raise ValueError(f"voronoi_units must be 'mm' or 'voxel', got {self.voronoi_units!r}")
        if self.spacing is not None:
            spacing = tuple(float(v) for v in self.spacing)
            if not spacing or not all(np.isfinite(spacing)) or min(spacing) <= 0:
                raise ValueError(f"spacing must be positive numbers (mm), got {self.spacing}")
            object.__setattr__(self, "spacing", spacing)

    @property
    def component_metrics(self) -> tuple[str, ...]:
        return tuple(m for m in self.metrics if m in COMPONENT_METRICS)

    def settings_for(self, label: int | str, name: str) -> MetricSettings:
        """The metric settings of one class or region: its own NSD tolerance when
        ``class_tolerances`` names its value or its name (as MONAI's ``class_thresholds``)."""
        for key, mm in self.class_tolerances:
            if key in (str(label), name):
                return replace(self.settings, tolerance_mm=mm)
        return self.settings

    def to_dict(self) -> dict:
        return {
            "metrics": list(self.metrics),
            **self.settings.to_dict(),
            "per_component": self.per_component,
            "connectivity": self.connectivity,
            "voronoi_units": self.voronoi_units,
            "labels": self.label_set.to_dict(),
            "resample": self.resample,
            "multiclass_all": self.multiclass_all,
            "spacing": None if self.spacing is None else list(self.spacing),
            "soft": self.soft,
            "class_tolerances": dict(self.class_tolerances),
            "class_mean": self.class_mean,
            "lesion": asdict(self.lesion),
            "instances": self.instances,
            "froc_thresholds": list(self.froc_thresholds),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationConfig:
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys or bad values
        are an :class:`InputError`."""
        values = {k: v for k, v in data.items() if k != "format"}
        try:
            settings = MetricSettings.pop_from(values)
            label_set = LabelSet.from_dict(values.pop("labels", {}))
            if "lesion" in values:
                values["lesion"] = LesionSettings(**values["lesion"])
            unknown = sorted(set(values) - cls.field_names())
            if unknown:
                raise InputError(f"unknown evaluation config field(s): {', '.join(unknown)}")
            return cls(settings=settings, label_set=label_set, **values)
        except (TypeError, ValueError, AttributeError) as error:
            raise InputError(f"invalid evaluation config: {error}") from None


register_presets(EvaluationConfig, {"default": EvaluationConfig()})
