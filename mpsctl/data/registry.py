"""Dataset registry: recipes name a dataset, the registry checks its options and builds it.

A dataset factory is a function ``factory(seed, **options) -> DataBundle``; its keyword
parameters *are* the dataset's options, so an unknown option is caught from the signature
before the factory runs and every factory only validates values. ``package.module:attr``
names a user's factory instead (``mpsctl.data.custom``).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from mpsctl.errors import DataError
from mpsctl.registry import Registry


@dataclass
class DataBundle:
    """Train, validation and held-out test sets of one dataset, with what a model needs.

    Every set yields ``(float tensor of shape input_shape, int label)``. Training selects
    on ``val`` only; ``test`` is for reporting (``None`` when a dataset has none).
    """

    train: Dataset
    val: Dataset
    input_shape: tuple[int, ...]
    num_classes: int
    test: Dataset | None = None

    def split(self, name: str) -> Dataset:
        """The ``train``, ``val`` or ``test`` set; ``DataError`` when there is no such split."""
        if name not in SPLITS:
            raise DataError(f"--split: {name!r} is not a split (use {', '.join(SPLITS)})")
        found = getattr(self, name)
        if found is None:
            raise DataError(
                f"--split: this dataset has no {name} split (use --split val, or give the "
                f"dataset a {name} set)"
            )
        return found


#: The splits a bundle may hold, in the order reports list them.
SPLITS = ("train", "val", "test")

DatasetFactory = Callable[..., DataBundle]

DATASETS: Registry[DatasetFactory] = Registry("dataset")


def register_dataset(name: str) -> Callable[[DatasetFactory], DatasetFactory]:
    """Decorator that makes ``factory(seed, **options)`` available to recipes as ``name``."""
    return DATASETS.register(name)


def available_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching the shell-style ``pattern`` (``"mnist*"``), sorted."""
    return DATASETS.names(pattern)


def dataset_options(name: str) -> dict[str, Any] | None:
    """The options ``name`` accepts and their defaults (``inspect.Parameter.empty`` if none);
    ``None`` for a ``module:attr`` factory that takes any keyword (``**kwargs``)."""
    if ":" in name:
        from mpsctl.data.custom import custom_factory, factory_options

        return factory_options(custom_factory(name))
    factory = _lookup(name)
    params = inspect.signature(factory).parameters
    return {key: p.default for key, p in params.items() if key != "seed"}


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options that were set (``None`` counts as unset), each known to dataset ``name``.

    Raises ``DataError`` naming ``data.<option>`` for an option the dataset does not take.
    """
    accepted = dataset_options(name)
    given = {key: value for key, value in options.items() if value is not None}
    for key in given:
        if accepted is not None and key not in accepted:
            allowed = ", ".join(accepted) or "none"
            raise DataError(
                f"data.{key}: not an option of dataset {name!r}{_did_you_mean(key, accepted)}; "
                f"remove it (its options: {allowed})"
            )
    return given


def build_datasets(name: str, options: dict[str, Any], seed: int) -> DataBundle:
    """Build dataset ``name`` (a registered name or ``package.module:factory``) with
    ``options`` (``None`` values count as unset).

    Raises ``DataError`` naming ``data.<option>`` for unknown options or bad values.
    """
    given = check_options(name, options)
    if ":" in name:
        from mpsctl.data.custom import build_custom

        return build_custom(name, given, seed)
    return _lookup(name)(seed=seed, **given)


def _lookup(name: str) -> DatasetFactory:
    if name not in DATASETS:
        raise DataError(
            f"data.name: unknown dataset {name!r}{DATASETS.did_you_mean(name)}; "
            f"available: {', '.join(available_datasets())}, or package.module:factory"
        )
    return DATASETS.get(name)


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
