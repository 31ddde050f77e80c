"""Dataset registry: recipes name a dataset, the registry checks its options and builds it.

A dataset factory is a function ``factory(seed, **options) -> DataBundle``; its keyword
parameters *are* the dataset's options, so an unknown option is caught from the signature
before the factory runs and every factory only validates values. ``package.module:attr``
names a user's factory instead (``mpsctl.data.custom``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mpsctl.data.bundle import DataBundle
from mpsctl.data.custom import build_custom, custom_factory, factory_options
from mpsctl.errors import DataError
from mpsctl.registry import Registry, did_you_mean

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
                f"data.{key}: not an option of dataset {name!r}{did_you_mean(key, accepted)}; "
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
        return build_custom(name, given, seed)
    return _lookup(name)(seed=seed, **given)


def _lookup(name: str) -> DatasetFactory:
    if name not in DATASETS:
        raise DataError(
            f"data.name: unknown dataset {name!r}{DATASETS.did_you_mean(name)}; "
            f"available: {', '.join(available_datasets())}, or package.module:factory"
        )
    return DATASETS.get(name)


