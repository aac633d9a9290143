"""Image and dataset I/O: read/write with geometry (ITK index order, mm, LPS), nnU-Net folders.

See :mod:`segqc.io.images`, :mod:`segqc.io.geometry`, :mod:`segqc.io.datasets` and
:mod:`segqc.io.labels` (what "labels" means).
"""

from __future__ import annotations

from segqc.io.datasets import (
    LABEL_EXTENSIONS,
    DatasetInfo,
    Pairing,
    case_id,
    find_dataset_json,
    list_image_files,
    list_label_files,
    pair_cases,
    read_dataset_json,
)
from segqc.io.geometry import Geometry, check_same_geometry, geometry_differences
from segqc.io.images import IMAGE_EXTENSIONS, Image, read_image, read_label_map, resample_nearest, write_image
from segqc.io.labels import LabelSet

__all__ = [
    "IMAGE_EXTENSIONS",
    "LABEL_EXTENSIONS",
    "DatasetInfo",
    "Geometry",
    "Image",
    "LabelSet",
    "Pairing",
    "case_id",
    "check_same_geometry",
    "geometry_differences",
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
