"""Shared training utilities: seeding, device selection, checkpoints (safetensors + JSON)."""

from segqc.training.checkpoints import (
    CheckpointError,
    checkpoint_fits,
    load_checkpoint,
    load_state,
    save_checkpoint,
    save_state,
)
from segqc.training.seeding import seed_everything, select_device

__all__ = [
    "CheckpointError",
    "checkpoint_fits",
    "load_checkpoint",
    "load_state",
    "save_checkpoint",
    "save_state",
    "seed_everything",
    "select_device",
]
