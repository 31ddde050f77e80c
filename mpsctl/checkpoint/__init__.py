"""Checkpoints: the file format (``format``: atomic saves, safe loads, which stage each
command accepts) and what a stage checkpoint holds and rebuilds into (``state``)."""

from mpsctl.checkpoint.format import (
    FORMAT_VERSION,
    STAGE_NEEDS,
    STAGES,
    find_latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "FORMAT_VERSION",
    "STAGES",
    "STAGE_NEEDS",
    "find_latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]
