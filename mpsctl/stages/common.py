"""Small helpers every post-search stage shares: picking a checkpoint, reading val data."""

from __future__ import annotations

from pathlib import Path

import torch

from mpsctl.checkpoint.format import find_latest_checkpoint
from mpsctl.console import Reporter
from mpsctl.recipe import Recipe, build
from mpsctl.training.epoch import evaluate


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


def split_loader(recipe: Recipe, split: str):
    """An unshuffled loader over the recipe's ``train``, ``val`` or ``test`` split."""
    return build.eval_loader(recipe, build.datasets(recipe).split(split))


def test_metrics(model, loader, device: torch.device) -> dict[str, float]:
    """``test_accuracy`` and ``test_loss`` on the held-out split (empty without one).

    Reported beside the validation metrics, never used to choose anything.
    """
    if loader is None:
        return {}
    found = evaluate(model, loader, device)
    return {"test_accuracy": found["accuracy"], "test_loss": found["loss"]}


def first_batch(loader) -> torch.Tensor:
    x, _ = next(iter(loader))
    return x
