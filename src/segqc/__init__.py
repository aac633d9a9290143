"""segqc: evaluation and ground-truth-free quality control of medical image segmentations.

The metric engine (:mod:`segqc.metrics`) is pure numpy/scipy and does not import torch.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "evaluate_folder"]


def __getattr__(name: str):  # lazy: keep ``import segqc`` cheap
    if name == "evaluate_folder":
        from segqc.evaluation.evaluate import evaluate_folder

        return evaluate_folder
    raise AttributeError(name)
