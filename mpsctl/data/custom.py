"""Datasets from the user's own code: ``data.name: package.module:factory``.

The factory gets the recipe's ``data`` options (every key but the name and the loader
settings) as keyword arguments, plus ``seed`` when it has a parameter of that name, and
returns ``(train, val)``, ``(train, val, test)`` or a ``DataBundle``. What it returns is
checked here on a few samples before any training, so that a wrong shape or label becomes
one line naming ``data.name`` instead of a failure deep inside an epoch.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from mpsctl.data.bundle import SPLITS, DataBundle
from mpsctl.errors import DataError

#: How many samples of each split are looked at (evenly spaced, first and last included).
PROBES = 8


def custom_factory(spec: str) -> Callable[..., Any]:
    """The user's factory behind ``package.module:attr``."""
    from mpsctl.models.external import import_attr

    return import_attr(spec, key="data.name", error=DataError)


def factory_options(factory: Callable[..., Any]) -> dict[str, Any] | None:
    """The keyword options the factory accepts (``None``: it takes ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {k: p.default for k, p in params.items() if p.kind in kinds and k != "seed"}


def build_custom(spec: str, options: dict[str, Any], seed: int) -> DataBundle:
    """Call the user's factory and check what it returns."""
    factory = custom_factory(spec)
    kwargs = dict(options)
    if _takes_seed(factory):
        kwargs["seed"] = seed
    try:
        made = factory(**kwargs)
    except (TypeError, ValueError, OSError) as exc:
        raise DataError(f"data.name: {spec} failed: {_one_line(exc)}") from exc
    return checked_bundle(spec, made)


def checked_bundle(spec: str, made: Any) -> DataBundle:
    """A ``DataBundle`` from the factory's result, with shapes and labels checked."""
    if isinstance(made, DataBundle):
        splits = {name: getattr(made, name) for name in SPLITS}
        num_classes: int | None = made.num_classes
    elif isinstance(made, (tuple, list)) and len(made) in (2, 3):
        splits = dict(zip(SPLITS, made, strict=False))
        splits.setdefault("test", None)
        num_classes = None
    else:
        raise DataError(
            f"data.name: {spec} returned {type(made).__name__}; it must return (train, val), "
            "(train, val, test) of torch Datasets, or an mpsctl.data.DataBundle"
        )
    for name, dataset in splits.items():
        if dataset is None and name == "test":
            continue
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise DataError(
                f"data.name: {spec} returned {type(dataset).__name__} as the {name} set; it "
                "must be a torch.utils.data.Dataset with __len__ and __getitem__"
            )
        if len(dataset) == 0:
            raise DataError(f"data.name: {spec} returned an empty {name} set")
    shape, seen = _probe_shapes(spec, splits)
    if isinstance(made, DataBundle) and tuple(made.input_shape) != shape:
        raise DataError(
            f"data.name: {spec} says input_shape {list(made.input_shape)} but its samples are "
            f"{list(shape)}; fix the DataBundle's input_shape"
        )
    labels = {name: _all_labels(ds) for name, ds in splits.items() if ds is not None}
    found = {name: known if known is not None else seen[name] for name, known in labels.items()}
    if num_classes is None:
        num_classes = _class_count(splits["train"], labels["train"], found)
    for name, split_labels in found.items():
        _check_labels(spec, name, split_labels, num_classes)
    return DataBundle(
        train=splits["train"], val=splits["val"], input_shape=shape,
        num_classes=num_classes, test=splits["test"],
    )


def _probe_shapes(
    spec: str, splits: dict[str, Dataset | None]
) -> tuple[tuple[int, ...], dict[str, list[int]]]:
    """The common sample shape (from a few samples of every split) and the labels seen."""
    shape: tuple[int, ...] | None = None
    first = ""
    seen: dict[str, list[int]] = {}
    for name, dataset in splits.items():
        if dataset is None:
            continue
        seen[name] = []
        n = len(dataset)
        for index in sorted({round(i * (n - 1) / max(PROBES - 1, 1)) for i in range(PROBES)}):
            x, y = _sample(spec, name, dataset, index)
            where = f"{name}[{index}]"
            if shape is None:
                shape, first = tuple(x.shape), where
            elif tuple(x.shape) != shape:
                raise DataError(
                    f"data.name: samples of inconsistent shape: {first} is {list(shape)} but "
                    f"{where} is {list(x.shape)} (every sample must have the same shape)"
                )
            seen[name].append(y)
    assert shape is not None
    return shape, seen


def _sample(spec: str, split: str, dataset: Dataset, index: int) -> tuple[Tensor, int]:
    try:
        item = dataset[index]
    except Exception as exc:  # the user's __getitem__ can fail in any way
        raise DataError(
            f"data.name: reading {split}[{index}] from {spec} failed: {_one_line(exc)}"
        ) from exc
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise DataError(
            f"data.name: {split}[{index}] of {spec} is a {type(item).__name__}; samples must "
            "be (input tensor, integer label) pairs"
        )
    x, y = item
    if not isinstance(x, Tensor) or x.dtype != torch.float32:
        got = f"{x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
        raise DataError(
            f"data.name: {split}[{index}] of {spec} has a {got} input; inputs must be "
            "torch.float32 tensors (convert with torch.as_tensor(x, dtype=torch.float32))"
        )
    label = _as_int(y)
    if label is None:
        raise DataError(
            f"data.name: {split}[{index}] of {spec} has label {y!r}; labels must be integer "
            "class indices"
        )
    return x, label


def _as_int(y: Any) -> int | None:
    """An integer label (Python, numpy or one-element integer tensor), else None."""
    if isinstance(y, Tensor):
        return int(y) if y.numel() == 1 and not y.is_floating_point() and y.dtype != torch.bool \
            else None
    if isinstance(y, bool):
        return None
    try:
        return operator.index(y)
    except TypeError:
        return None


def _all_labels(dataset: Dataset) -> Sequence[int] | None:
    """Labels a dataset exposes as ``targets`` or ``labels`` (torchvision's convention)."""
    for attr in ("targets", "labels"):
        found = getattr(dataset, attr, None)
        if found is not None and hasattr(found, "__len__") and len(found) == len(dataset):
            return torch.as_tensor(found).flatten().tolist()
    return None


def _class_count(
    train: Dataset, train_labels: Sequence[int] | None, found: dict[str, Sequence[int]]
) -> int:
    """From ``classes`` if the training set has it, else the largest label + 1 (the training
    labels are read once through ``__getitem__`` when the set does not expose them)."""
    classes = getattr(train, "classes", None)
    if classes is not None and hasattr(classes, "__len__"):
        return len(classes)
    if train_labels is None:
        train_labels = [int(train[i][1]) for i in range(len(train))]
    return max(max(train_labels), *(max(v) for v in found.values() if len(v))) + 1


def _check_labels(spec: str, split: str, labels: Sequence[int], num_classes: int) -> None:
    bad = [y for y in labels if not 0 <= y < num_classes]
    if bad:
        raise DataError(
            f"data.name: {split} label {bad[0]} of {spec} is out of range for {num_classes} "
            f"classes (labels must be 0..{num_classes - 1})"
        )


def _takes_seed(factory: Callable[..., Any]) -> bool:
    try:
        return "seed" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
