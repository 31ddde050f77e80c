"""Small helpers every post-search stage shares: picking a checkpoint, reading val data."""

from __future__ import annotations

from pathlib import Path

import torch

from mpsctl.checkpoint.format import find_latest_checkpoint
from mpsctl.console import Reporter
from mpsctl.recipe import Recipe, build


def pick_checkpoint(path: str | None, reporter: Reporter) -> Path:
    """``path``, or the newest stage checkpoint under ``runs/`` (and say which)."""
    if path:
        return Path(path)
    found = find_latest_checkpoint(Path.cwd())
    reporter.log(f"using the newest checkpoint: {found}")
    return found


def val_loader(recipe: Recipe):
    bundle = build.datasets(recipe)
    return bundle, build.loaders(recipe, bundle).val


def first_batch(loader) -> torch.Tensor:
    x, _ = next(iter(loader))
    return x
