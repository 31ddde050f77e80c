"""Dataset registry: recipes name a dataset, the registry checks its options and builds it.

A dataset factory is a function ``factory(seed, **options) -> DataBundle``; its keyword
parameters *are* the dataset's options, so an unknown option is caught from the signature
before the factory runs and every factory only validates values.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from mpsctl.errors import DataError
from mpsctl.registry import Registry, did_you_mean


@dataclass
class DataBundle:
    """Train and validation sets of one dataset, with what a model needs to fit them.

    Both sets yield ``(float image tensor of shape input_shape, int label)``.
    """

    train: Dataset
    val: Dataset
    input_shape: tuple[int, ...]
    num_classes: int


DatasetFactory = Callable[..., DataBundle]

DATASETS: Registry[DatasetFactory] = Registry("dataset")


def register_dataset(name: str) -> Callable[[DatasetFactory], DatasetFactory]:
    """Decorator that makes ``factory(seed, **options)`` available to recipes as ``name``."""
    return DATASETS.register(name)


def available_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching the shell-style ``pattern`` (``"mnist*"``), sorted."""
    return DATASETS.names(pattern)


def dataset_options(name: str) -> dict[str, Any]:
    """The options ``name`` accepts and their defaults (``inspect.Parameter.empty`` if none)."""
    factory = _lookup(name)
    params = inspect.signature(factory).parameters
    return {key: p.default for key, p in params.items() if key != "seed"}


def build_datasets(name: str, options: dict[str, Any], seed: int) -> DataBundle:
    """Build dataset ``name`` with ``options`` (``None`` values count as unset).

    Raises ``DataError`` naming ``data.<option>`` for unknown options or bad values.
    """
    accepted = dataset_options(name)
    given = {key: value for key, value in options.items() if value is not None}
    for key in given:
        if key not in accepted:
            allowed = ", ".join(accepted) or "none"
            raise DataError(
                f"data.{key}: not an option of dataset {name!r}{did_you_mean(key, accepted)}; "
                f"remove it (its options: {allowed})"
            )
    return _lookup(name)(seed=seed, **given)


def _lookup(name: str) -> DatasetFactory:
    if name not in DATASETS:
        raise DataError(
            f"data.name: unknown dataset {name!r}{DATASETS.did_you_mean(name)}; "
            f"available: {', '.join(available_datasets())}"
        )
    return DATASETS.get(name)


