"""``mnist5k``: 5,000 MNIST digits shipped inside the package, so the quickstart runs offline.

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


@register_dataset("mnist5k")
def mnist5k(seed: int, val_fraction: float = 0.2, size: int | None = None) -> DataBundle:
    """Bundled MNIST subset (500 per digit), shuffled by ``seed`` and split train/val."""
    val_fraction = opt.fraction("val_fraction", val_fraction)
    data = load_u8_file(MNIST5K_FILE)
    n_val = round(len(data) * val_fraction)
    if not 0 < n_val < len(data):
        raise DataError(
            f"data.val_fraction: {val_fraction} leaves no train or val samples out of {len(data)}"
        )
    order = seeded_permutation(len(data), seed)
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
    )


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
