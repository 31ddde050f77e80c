"""Data loaders whose order depends only on the seed (and the epoch, under DDP)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mpsctl.data.registry import DataBundle
from mpsctl.errors import DataError


def make_loaders(
    bundle: DataBundle,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    distributed: bool = False,
) -> tuple[DataLoader, DataLoader]:
    """Return ``(train_loader, val_loader)``; only the train loader shuffles.

    With ``distributed`` each rank reads its own shard through a ``DistributedSampler``
    (needs an initialised process group); the caller must call ``set_epoch`` on the train
    sampler every epoch. The val sampler pads the last shard with repeated samples, as
    ``DistributedSampler`` does, so metrics reduced across ranks can count a few twice.
    """
    common = _common(batch_size, num_workers)
    if distributed:
        train_sampler = DistributedSampler(bundle.train, shuffle=True, seed=seed)
        train = DataLoader(bundle.train, sampler=train_sampler, **common)
    else:
        generator = torch.Generator().manual_seed(seed)
        train = DataLoader(bundle.train, shuffle=True, generator=generator, **common)
    return train, make_eval_loader(bundle.val, batch_size, num_workers, distributed)


def make_eval_loader(
    dataset: Dataset, batch_size: int, num_workers: int = 0, distributed: bool = False
) -> DataLoader:
    """An unshuffled loader for measuring a model on ``dataset`` (validation or test)."""
    common = _common(batch_size, num_workers)
    if distributed:
        return DataLoader(dataset, sampler=DistributedSampler(dataset, shuffle=False), **common)
    return DataLoader(dataset, shuffle=False, **common)


def _common(batch_size: Any, num_workers: Any) -> dict[str, Any]:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"data.batch_size: must be a positive integer, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise DataError(f"data.num_workers: must be an integer >= 0, got {num_workers!r}")
    return {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": num_workers > 0,
    }
