"""Synthetic segmentation errors with a requested quality (nnQC degradations, QCResUNet SegGen).

* :mod:`.operations`: one pure function per error type (holes, erosion, dilation, false-positive
  blobs near/far, class collapse, class swap, boundary perturbation, split, shift), 2D and 3D.
* :mod:`.seggen`: QCResUNet's SegGen transforms (rotation, scaling, translation, elastic).
* :mod:`.targeting`: compose operations and search their strength until the multi-class Dice
  falls into a requested bin; balanced sampling over Dice bins.
"""

from __future__ import annotations

from segqc.degrade.operations import NNQC_OPERATIONS, Operation
from segqc.degrade.seggen import SEGGEN_OPERATIONS

#: Every operation by name: the nnQC set and the strength-scaled SegGen transforms.
OPERATIONS: dict[str, Operation] = {**NNQC_OPERATIONS, **SEGGEN_OPERATIONS}

__all__ = ["NNQC_OPERATIONS", "OPERATIONS", "SEGGEN_OPERATIONS"]
