"""What every dataset factory returns: the three splits and what a model needs to fit them."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from mpsctl.errors import DataError

#: The splits a bundle may hold, in the order reports list them.
SPLITS = ("train", "val", "test")


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
