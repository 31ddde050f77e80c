"""``fake``: random samples for tests and smoke runs, learnable so training visibly works.

Each class owns a random texture (a small tile repeated over every axis after the first,
the channel axis); a sample is half its class texture and half uniform noise. Convolutions
pick the texture up anywhere, so even a tiny CNN with global pooling fits the labels. Any
rank works: ``[features]`` (one random vector per class), ``[channels, length]``,
``[channels, height, width]``. Samples are generated on
demand from ``(seed, split, index)``: no memory cost, identical in every worker.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from mpsctl.data import options as opt
from mpsctl.data.registry import DataBundle, register_dataset

_TILE = 4


class TextureNoise(Dataset):
    """``length`` samples drawn from per-class ``textures``; sample ``i`` seeded by ``base + i``."""

    def __init__(self, textures: Tensor, length: int, base_seed: int) -> None:
        self.textures = textures
        self.length = length
        self.base_seed = base_seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        generator = torch.Generator().manual_seed(self.base_seed + index)
        label = int(torch.randint(len(self.textures), (1,), generator=generator))
        noise = torch.rand(self.textures.shape[1:], generator=generator)
        return 0.5 * self.textures[label] + 0.5 * noise, label


@register_dataset("fake")
def fake(
    seed: int,
    shape: list[int] | tuple[int, ...] = (3, 32, 32),
    num_classes: int = 10,
    size: int = 256,
    val_size: int = 64,
    test_size: int = 64,
) -> DataBundle:
    """Synthetic samples of ``shape`` in [0, 1], deterministic for a seed."""
    dims = opt.shape("shape", shape)
    num_classes = opt.positive_int("num_classes", num_classes)
    size = opt.positive_int("size", size)
    val_size = opt.positive_int("val_size", val_size)
    test_size = opt.positive_int("test_size", test_size)
    generator = torch.Generator().manual_seed(seed)
    spatial = dims[1:]
    tiles = torch.rand(num_classes, dims[0], *(_TILE for _ in spatial), generator=generator)
    reps = tuple(-(-n // _TILE) for n in spatial)
    textures = tiles.repeat(1, 1, *reps)[(slice(None), slice(None), *map(slice, spatial))]
    textures = textures.contiguous()
    train_base, val_base = torch.randint(2**62, (2,), generator=generator).tolist()
    test_base = int(torch.randint(2**62, (1,), generator=generator))
    return DataBundle(
        train=TextureNoise(textures, size, train_base),
        val=TextureNoise(textures, val_size, val_base),
        input_shape=dims,
        num_classes=num_classes,
        test=TextureNoise(textures, test_size, test_base),
    )
