"""``mnist5k``: 5,000 MNIST digits shipped inside the package, so the quickstart runs offline.

The test split is 100 images of each digit (1,000), drawn once with a fixed seed: the same
images for every recipe seed, never seen by training or selection. The other 4,000 are
shuffled by the recipe's seed and split into validation (``val_fraction``, 800 by default)
and training (3,200).

See ``files/MNIST5K-NOTICE.txt`` for attribution and ``scripts/make_mnist5k.py`` for the
file layout.
"""

from __future__ import annotations

import functools
import gzip
import struct
from importlib import resources

import torch
from torch import Tensor

from mpsctl.data import options as opt
from mpsctl.data.registry import DataBundle, register_dataset
from mpsctl.data.tensors import UInt8Images, seeded_permutation
from mpsctl.errors import DataError

MNIST5K_FILE = "mnist5k.bin.gz"
_MAGIC = b"U8IM"
_HEADER = struct.Struct("<4s4I")
#: Test images per digit, and the seed that picks them (independent of the recipe's seed).
TEST_PER_CLASS = 100
TEST_SEED = 20_141_414


@register_dataset("mnist5k")
def mnist5k(seed: int, val_fraction: float = 0.2, size: int | None = None) -> DataBundle:
    """Bundled MNIST subset (500 per digit): a fixed test split of 100 per digit, the rest
    shuffled by ``seed`` and split train/val."""
    val_fraction = opt.fraction("val_fraction", val_fraction)
    data = load_u8_file(MNIST5K_FILE)
    test_idx, rest = fixed_test_split(data.labels, TEST_PER_CLASS, TEST_SEED)
    n_val = round(len(rest) * val_fraction)
    if not 0 < n_val < len(rest):
        raise DataError(
            f"data.val_fraction: {val_fraction} leaves no train or val samples out of {len(rest)}"
        )
    order = rest[seeded_permutation(len(rest), seed)]
    train_idx, val_idx = order[n_val:], order[:n_val]
    if size is not None:
        size = opt.positive_int("size", size)
        if size > len(train_idx):
            raise DataError(
                f"data.size: mnist5k has {len(train_idx)} training samples with "
                f"data.val_fraction={val_fraction}, got {size}; lower data.size"
            )
        train_idx = train_idx[:size]
    return DataBundle(
        train=data.take(train_idx),
        val=data.take(val_idx),
        input_shape=tuple(data.images.shape[1:]),
        num_classes=10,
        test=data.take(test_idx),
    )


def fixed_test_split(labels: Tensor, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(test indices, remaining indices)``: ``per_class`` samples of every label, picked
    with ``seed``; both sorted, so the split does not depend on anything else."""
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    test = torch.cat(picked).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[test] = False
    return test, mask.nonzero().flatten()


@functools.lru_cache(maxsize=2)
def load_u8_file(filename: str) -> UInt8Images:
    """Decode a bundled ``U8IM`` file (cached: every seed and split shares one copy)."""
    resource = resources.files("mpsctl.data") / "files" / filename
    try:
        raw = bytearray(gzip.decompress(resource.read_bytes()))
    except (OSError, EOFError) as exc:
        raise DataError(
            f"data.name: bundled file {filename} is missing or damaged ({exc}); reinstall mpsctl"
        ) from exc
    return _decode(raw, filename)


def _decode(raw: bytearray, filename: str) -> UInt8Images:
    magic, n, c, h, w = _HEADER.unpack_from(raw) if len(raw) >= _HEADER.size else (b"", 0, 0, 0, 0)
    expected = _HEADER.size + n * c * h * w + n
    if magic != _MAGIC or len(raw) != expected:
        raise DataError(f"data.name: bundled file {filename} is damaged; reinstall mpsctl")
    flat: Tensor = torch.frombuffer(raw, dtype=torch.uint8)
    images = flat[_HEADER.size : _HEADER.size + n * c * h * w].view(n, c, h, w)
    labels = flat[_HEADER.size + n * c * h * w :]
    return UInt8Images(images, labels)
