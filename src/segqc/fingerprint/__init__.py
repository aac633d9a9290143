"""Dataset fingerprints and the preprocessing they plan (reorient, resample, normalise, crop,
slice) with its exact inverse. See :mod:`segqc.fingerprint.fingerprint` and
:mod:`segqc.fingerprint.preprocessing`.
"""

from __future__ import annotations

from segqc.fingerprint.fingerprint import (
    CaseFingerprint,
    ChannelFingerprint,
    DatasetFingerprint,
    IntensityStats,
    channel_modality,
    compute_fingerprint,
    normalization_scheme,
)
from segqc.fingerprint.preprocessing import (
    ChannelNormalization,
    PreprocessedCase,
    PreprocessingPlan,
    Transform,
    plan_from_fingerprint,
    preprocess_case,
    preprocess_files,
    ras_reorientation,
    reorient_to_ras,
    restore_image,
    restore_label,
    transform_label,
)

__all__ = [
    "CaseFingerprint",
    "ChannelFingerprint",
    "ChannelNormalization",
    "DatasetFingerprint",
    "IntensityStats",
    "PreprocessedCase",
    "PreprocessingPlan",
    "Transform",
    "channel_modality",
    "compute_fingerprint",
    "normalization_scheme",
    "plan_from_fingerprint",
    "preprocess_case",
    "preprocess_files",
    "ras_reorientation",
    "reorient_to_ras",
    "restore_image",
    "restore_label",
    "transform_label",
]
