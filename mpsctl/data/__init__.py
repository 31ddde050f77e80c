"""Datasets by name: the bundled MNIST subset, synthetic data, torchvision's on-disk sets,
the user's own arrays (``tensors``) and the user's own factories (``package.module:attr``)."""

from mpsctl.data import arrays, bundled, synthetic, vision  # noqa: F401  (register the built-ins)
from mpsctl.data.bundle import SPLITS, DataBundle
from mpsctl.data.loaders import make_eval_loader, make_loaders
from mpsctl.data.registry import (
    available_datasets,
    build_datasets,
    dataset_options,
    register_dataset,
)

__all__ = [
    "SPLITS",
    "DataBundle",
    "available_datasets",
    "build_datasets",
    "dataset_options",
    "make_eval_loader",
    "make_loaders",
    "register_dataset",
]
