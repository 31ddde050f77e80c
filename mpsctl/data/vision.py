"""Datasets read through torchvision from the user's disk: ``mnist``, ``cifar10``, ``imagefolder``.

torchvision is imported inside the factories so that ``import mpsctl.data`` stays fast.
MNIST and CIFAR-10 keep their official test sets as the held-out ``test`` split; validation
is ``val_fraction`` of the official training set, drawn with the recipe's seed.
MNIST and CIFAR-10 are copied into ``UInt8Images`` (scaled to [0, 1] per item, exactly what
``ToTensor`` gives) to skip a PIL round trip per sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from mpsctl.data import options as opt
from mpsctl.data.registry import DataBundle, register_dataset
from mpsctl.data.tensors import UInt8Images, seeded_permutation
from mpsctl.errors import DataError


@register_dataset("mnist")
def mnist(
    seed: int,
    root: str | None = None,
    download: bool = False,
    size: int | None = None,
    val_fraction: float = 0.1,
) -> DataBundle:
    """Full MNIST from ``root/MNIST/raw``: 54k/6k train/val from the 60k, the 10k as test."""
    from torchvision.datasets import MNIST

    folder = opt.folder("root", root, "mnist", "set data.root to the folder that holds MNIST/raw")
    train, val = (
        _open(MNIST, folder, download, is_train, "MNIST", "MNIST/raw") for is_train in (True, False)
    )
    train_set, val_set = _hold_out(
        UInt8Images(train.data.unsqueeze(1), train.targets), val_fraction, seed
    )
    return DataBundle(
        train=_subset(train_set, size, seed),
        val=val_set,
        input_shape=(1, 28, 28),
        num_classes=10,
        test=UInt8Images(val.data.unsqueeze(1), val.targets),
    )


@register_dataset("cifar10")
def cifar10(
    seed: int,
    root: str | None = None,
    download: bool = False,
    size: int | None = None,
    val_fraction: float = 0.1,
) -> DataBundle:
    """CIFAR-10 from ``root/cifar-10-batches-py``: 45k/5k train/val, the 10k test set as test."""
    from torchvision.datasets import CIFAR10

    folder = opt.folder(
        "root", root, "cifar10", "set data.root to the folder that holds cifar-10-batches-py"
    )
    train, val = (
        _open(CIFAR10, folder, download, is_train, "CIFAR-10", "cifar-10-batches-py")
        for is_train in (True, False)
    )

    def to_u8(ds: Any) -> UInt8Images:
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return UInt8Images(images, torch.tensor(ds.targets))

    train_set, val_set = _hold_out(to_u8(train), val_fraction, seed)
    return DataBundle(
        train=_subset(train_set, size, seed),
        val=val_set,
        input_shape=(3, 32, 32),
        num_classes=len(train.classes),
        test=to_u8(val),
    )


@register_dataset("imagefolder")
def imagefolder(
    seed: int,
    root: str | None = None,
    image_size: int | list[int] | None = None,
    size: int | None = None,
) -> DataBundle:
    """Images in ``root/train/<class>/`` and ``root/val/<class>/``, resized, as RGB in [0, 1].

    ``root/test/<class>/`` is the test split when it exists; otherwise ``val/`` is halved
    with a fixed seed into validation and test (the same halves for every recipe seed).
    """
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    hint = "set data.root to a folder with train/ and val/ sub-folders, one folder per class"
    folder = opt.folder("root", root, "imagefolder", hint)
    if image_size is None:
        raise DataError(
            "data.image_size: dataset 'imagefolder' needs the size images are resized to; "
            "set data.image_size=96 (pixels, or [height, width])"
        )
    hw = opt.image_size("image_size", image_size)
    transform = transforms.Compose([transforms.Resize(hw), transforms.ToTensor()])
    splits = []
    has_test = (folder / "test").is_dir()
    for split in ("train", "val", "test") if has_test else ("train", "val"):
        path = folder / split
        if not path.is_dir():
            raise DataError(f"data.root: {path} is not a folder; {hint}")
        try:
            splits.append(ImageFolder(str(path), transform=transform))
        except OSError as exc:  # no class folders, no image files, unreadable folder
            raise DataError(
                f"data.root: no usable images in {path} ({_reason(exc)}); {hint}"
            ) from exc
    train = splits[0]
    for name, other in zip(("val", "test")[: len(splits) - 1], splits[1:], strict=True):
        if train.classes != other.classes:
            raise DataError(
                f"data.root: class folders differ between {folder / 'train'} "
                f"({len(train.classes)}) and {folder / name} ({len(other.classes)}); give "
                "them the same class folders"
            )
    if has_test:
        val, test = splits[1], splits[2]
    else:
        halves = seeded_permutation(len(splits[1]), _HALVING_SEED)
        middle = len(halves) // 2
        val = Subset(splits[1], halves[:middle].tolist())
        test = Subset(splits[1], halves[middle:].tolist())
    return DataBundle(
        train=_subset(train, size, seed),
        val=val,
        input_shape=(3, *hw),
        num_classes=len(train.classes),
        test=test,
    )


#: Seed that halves an imagefolder's val/ into validation and test when it has no test/.
_HALVING_SEED = 20_141_414


def _hold_out(data: UInt8Images, val_fraction: float, seed: int) -> tuple[UInt8Images, ...]:
    """``(train, val)``: ``val_fraction`` of ``data`` drawn with ``seed`` for validation."""
    val_fraction = opt.fraction("val_fraction", val_fraction)
    order = seeded_permutation(len(data), seed)
    n_val = round(len(data) * val_fraction)
    if not 0 < n_val < len(data):
        raise DataError(
            f"data.val_fraction: {val_fraction} leaves no train or val samples out of {len(data)}"
        )
    return data.take(order[n_val:]), data.take(order[:n_val])


def _open(cls: type, folder: Path, download: Any, train: bool, title: str, layout: str) -> Any:
    """Construct a torchvision dataset, turning its errors into one-line ``DataError``s."""
    download = opt.boolean("download", download)
    try:
        return cls(str(folder), train=train, download=download)
    except Exception as exc:  # torchvision reports missing, corrupt and unreadable files alike
        reason = _reason(exc)
        if download:
            raise DataError(
                f"data.download: fetching {title} into {folder} failed ({reason}); check the "
                f"network, or fetch it elsewhere and copy {layout} under data.root"
            ) from exc
        if isinstance(exc, RuntimeError):  # torchvision's "Dataset not found or corrupted"
            raise DataError(
                f"data.root: {title} not found or incomplete in {folder / layout}; set "
                f"data.download=true to fetch it, or point data.root at the folder holding "
                f"{layout}"
            ) from exc
        raise DataError(
            f"data.root: cannot read {title} from {folder / layout} ({reason}); "
            "delete the damaged files and fetch them again"
        ) from exc


def _reason(exc: BaseException, limit: int = 300) -> str:
    """The exception on one line (torchvision's download errors span several)."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _subset(dataset: Dataset, size: int | None, seed: int) -> Dataset:
    """``size`` training samples picked at random with ``seed`` (all of them if ``None``)."""
    if size is None:
        return dataset
    size = opt.positive_int("size", size)
    total = len(dataset)  # type: ignore[arg-type]
    if size > total:
        raise DataError(f"data.size: the training set has {total} samples, got {size}")
    indices = seeded_permutation(total, seed)[:size]
    if isinstance(dataset, UInt8Images):
        return dataset.take(indices)
    return Subset(dataset, indices.tolist())
