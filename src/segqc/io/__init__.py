"""Image and dataset I/O: read/write with geometry (ITK index order, mm, LPS), nnU-Net folders.

See :mod:`segqc.io.images` and :mod:`segqc.io.datasets`.
"""

from __future__ import annotations

from segqc.io.datasets import (
    LABEL_EXTENSIONS,
    CasePairing,
    DatasetInfo,
    case_id,
    find_dataset_json,
    list_image_files,
    list_label_files,
    pair_cases,
    read_dataset_json,
)
from segqc.io.images import (
    IMAGE_EXTENSIONS,
    Geometry,
    Image,
    check_same_geometry,
    read_image,
    read_label_map,
    resample_nearest,
    write_image,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "LABEL_EXTENSIONS",
    "CasePairing",
    "DatasetInfo",
    "Geometry",
    "Image",
    "case_id",
    "check_same_geometry",
    "find_dataset_json",
    "list_image_files",
    "list_label_files",
    "pair_cases",
    "read_dataset_json",
    "read_image",
    "read_label_map",
    "resample_nearest",
    "write_image",
]
