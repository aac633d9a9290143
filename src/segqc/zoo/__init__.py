"""A zoo of real, imperfect segmentation models (``segqc zoo``).

One small MONAI 2D UNet is trained on a dataset's training patients and saved at several epochs
(:mod:`.train`); every snapshot predicts the held-out patients from clean and degraded inputs
(:mod:`.predict`), giving segmentations of genuinely varied quality with their true metrics in a
manifest of the ``segqc degrade`` format, and several "models" of different quality for
model-ranking experiments.

* :mod:`.config`: :class:`ZooConfig` (``small`` for 2 CPU cores, ``paper`` for a GPU).
* :mod:`segqc.io.split`: the patient-level train / hold-out split (shared with every trainer).
* :mod:`.model`: the UNet and slice-batched inference.
* :mod:`.train`: :func:`train_zoo` (resumable).
* :mod:`.predict`: :func:`predict_zoo`, input variants, :func:`load_model`.

torch and MONAI are imported when a function needs them, not on ``import segqc.zoo``.
"""

from __future__ import annotations

from segqc.io.split import Split, make_split, patient_id
from segqc.zoo.config import PRESETS, ZooConfig

__all__ = [
    "PRESETS",
    "InputVariant",
    "Split",
    "ZooConfig",
    "ZooInfo",
    "ZooModel",
    "ZooPrediction",
    "load_model",
    "make_split",
    "parse_variants",
    "patient_id",
    "predict_zoo",
    "read_zoo",
    "train_zoo",
]

_LAZY = {
    "train_zoo": "segqc.zoo.train", "read_zoo": "segqc.zoo.train", "ZooInfo": "segqc.zoo.train",
    "predict_zoo": "segqc.zoo.predict", "load_model": "segqc.zoo.predict", "parse_variants": "segqc.zoo.predict",
    "InputVariant": "segqc.zoo.predict", "ZooModel": "segqc.zoo.predict", "ZooPrediction": "segqc.zoo.predict",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
