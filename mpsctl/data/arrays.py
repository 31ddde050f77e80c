"""``tensors``: the user's own arrays from ``.npy``, ``.npz`` or ``.pt`` files, any sample rank.

A split is a ``.npz`` or ``.pt`` file holding inputs and labels under ``x_key``/``y_key``, or
a pair ``{x: inputs.npy, y: labels.npy}`` (each ``.npy`` or ``.pt``). Inputs are ``[N, ...]``
of any numeric type (a sample is ``[features]``, ``[channels, length]``,
``[channels, height, width]``...); labels ``[N]`` integer class indices.

``.npy`` files are memory-mapped and ``.pt`` files loaded with ``mmap=True``, so inputs
larger than the memory work: a sample is read when the loader asks for it, and the
normalisation statistics are accumulated in chunks. ``.npz`` archives are read into memory
(numpy cannot map their members).

Without ``val``/``test`` files, those splits are carved out of the training file with
``val_fraction`` and ``test_fraction``, drawn with ``split_seed`` (fixed by default, so the
test split stays the same whatever the recipe's seed). With ``normalize: true`` each channel
(the first axis of a sample; each feature of a ``[features]`` sample) is shifted and scaled
by the mean and standard deviation of the *training* split only, and the same constants are
applied to validation and test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mpsctl.data import options as opt
from mpsctl.data.registry import DataBundle, register_dataset
from mpsctl.data.tensors import seeded_permutation
from mpsctl.errors import DataError

#: Samples read at once while the normalisation statistics are accumulated.
CHUNK = 1024
#: Share of the training file carved out for validation, and for test, when not given.
DEFAULT_FRACTION = 0.1
_PAIR_HINT = "give a .npz or .pt file, or {x: inputs.npy, y: labels.npy}"


class ArraySplit(Dataset):
    """Rows ``indices`` of ``x`` (numpy, possibly memory-mapped) with labels ``y``.

    Items are ``(float32 tensor, int)``, normalised by ``mean``/``std`` when given.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: Tensor,
        indices: Tensor,
        mean: Tensor | None = None,
        std: Tensor | None = None,
    ) -> None:
        self.x = x
        self.y = y
        self.indices = indices
        self.mean = mean
        self.std = std

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        row = int(self.indices[index])
        x = torch.from_numpy(np.array(self.x[row], dtype=np.float32))
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x, int(self.y[row])

    @property
    def labels(self) -> Tensor:
        """This split's labels (read without touching the inputs)."""
        return self.y[self.indices]


@register_dataset("tensors")
def tensors(
    seed: int,
    train: str | dict[str, str] | None = None,
    val: str | dict[str, str] | None = None,
    test: str | dict[str, str] | None = None,
    x_key: str = "x",
    y_key: str = "y",
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    split_seed: int = 0,
    normalize: bool = False,
    num_classes: int | None = None,
) -> DataBundle:
    """Arrays from files: ``train`` always, ``val``/``test`` as files or carved fractions."""
    del seed  # splits use split_seed: the same test split for every recipe seed
    if train is None:
        raise DataError(
            f"data.train: dataset 'tensors' needs the training data; {_PAIR_HINT} "
            "(e.g. data.train={x: x_train.npy, y: y_train.npy})"
        )
    if not isinstance(x_key, str) or not isinstance(y_key, str):
        raise DataError("data.x_key: x_key and y_key must be strings (names inside the file)")
    normalize = opt.boolean("normalize", normalize)
    for name, spec, fraction in (("val", val, val_fraction), ("test", test, test_fraction)):
        if spec is not None and fraction is not None:
            raise DataError(
                f"data.{name}_fraction: unused, since data.{name} is a file; remove one of them"
            )
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
        raise DataError(f"data.split_seed: must be an integer >= 0, got {split_seed!r}")
    loaded = {"train": _read_split("train", train, x_key, y_key)}
    for name, spec in (("val", val), ("test", test)):
        if spec is not None:
            loaded[name] = _read_split(name, spec, x_key, y_key)
    sample = loaded["train"][0].shape[1:]
    for name, (x, _) in loaded.items():
        if x.shape[1:] != sample:
            raise DataError(
                f"data.{name}: samples are {list(x.shape[1:])} but training samples are "
                f"{list(sample)}; every split needs the same sample shape"
            )
    classes = _class_count(loaded, num_classes)
    x_train, y_train = loaded["train"]
    carved = _carve(len(y_train), val is None, test is None,
                    DEFAULT_FRACTION if val_fraction is None else val_fraction,
                    DEFAULT_FRACTION if test_fraction is None else test_fraction, split_seed)
    train_idx = carved["train"]
    mean = std = None
    if normalize:
        mean, std = channel_stats(x_train, train_idx)
    splits: dict[str, ArraySplit | None] = {"test": None}
    for name in ("train", "val", "test"):
        if name in carved:
            splits[name] = ArraySplit(x_train, y_train, carved[name], mean, std)
        elif name in loaded:
            x, y = loaded[name]
            splits[name] = ArraySplit(x, y, torch.arange(len(y)), mean, std)
    return DataBundle(
        train=splits["train"],
        val=splits["val"],
        input_shape=tuple(int(n) for n in sample),
        num_classes=classes,
        test=splits["test"],
    )


def _carve(
    n: int, need_val: bool, need_test: bool, val_fraction: Any, test_fraction: Any, seed: int
) -> dict[str, Tensor]:
    """Indices into the training file: ``train`` plus the ``val``/``test`` splits it gives."""
    order = seeded_permutation(n, seed)
    carved: dict[str, Tensor] = {}
    start = 0
    for name, needed, key, fraction, check in (
        ("test", need_test, "test_fraction", test_fraction, opt.fraction_or_zero),
        ("val", need_val, "val_fraction", val_fraction, opt.fraction),
    ):
        if not needed:
            continue
        count = round(n * check(key, fraction))
        if count == 0 and name == "test" and fraction == 0:
            continue
        if count < 1:
            raise DataError(
                f"data.{key}: {fraction} of {n} training samples is no {name} sample; raise "
                f"it or give data.{name} as a file"
            )
        carved[name] = order[start : start + count]
        start += count
    if start >= n:
        raise DataError(
            f"data.val_fraction: validation and test leave no training samples out of {n}; "
            "lower the fractions"
        )
    carved["train"] = order[start:]
    return carved


def channel_stats(x: np.ndarray, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation over the samples ``indices`` of ``x``.

    Read in chunks of ``CHUNK`` sorted rows (memory-mapped files stay on disk) and summed
    in float64. The channel is the first axis of a sample; a ``[features]`` sample has one
    channel per feature. A constant channel gets std 1 (it is only shifted).
    """
    rows = indices.sort().values.numpy()
    sample = x.shape[1:]
    channels = sample[0]
    total = np.zeros(channels)
    squares = np.zeros(channels)
    count = 0
    for start in range(0, len(rows), CHUNK):
        chunk = np.asarray(x[rows[start : start + CHUNK]], dtype=np.float64)
        flat = chunk.reshape(len(chunk), channels, -1)
        total += flat.sum(axis=(0, 2))
        squares += (flat**2).sum(axis=(0, 2))
        count += flat.shape[0] * flat.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    std[std < 1e-12] = 1.0
    view = (channels, *([1] * (len(sample) - 1)))
    return (torch.tensor(mean, dtype=torch.float32).view(view),
            torch.tensor(std, dtype=torch.float32).view(view))


def _class_count(loaded: dict[str, tuple[np.ndarray, Tensor]], num_classes: Any) -> int:
    """``num_classes`` (checked against every label), or the largest label + 1."""
    if num_classes is not None:
        num_classes = opt.positive_int("num_classes", num_classes)
    largest = max(int(y.max()) for _, y in loaded.values())
    for name, (_, y) in loaded.items():
        if int(y.min()) < 0:
            raise DataError(
                f"data.{name}: label {int(y.min())} is negative; labels must be class indices "
                "0..num_classes-1"
            )
        if num_classes is not None and int(y.max()) >= num_classes:
            raise DataError(
                f"data.num_classes: {name} label {int(y.max())} is out of range for "
                f"{num_classes} classes (raise data.num_classes or fix the labels)"
            )
    return num_classes if num_classes is not None else largest + 1


def _read_split(name: str, spec: Any, x_key: str, y_key: str) -> tuple[np.ndarray, Tensor]:
    """Inputs (numpy, memory-mapped where possible) and int64 labels of one split."""
    key = f"data.{name}"
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"x", "y"})
        if unknown or not {"x", "y"} <= set(spec):
            raise DataError(f"{key}: a pair needs exactly the keys x and y; {_PAIR_HINT}")
        x = _read_array(key, spec["x"], None)
        y = _read_array(key, spec["y"], None)
    elif isinstance(spec, (str, Path)):
        path = _existing(key, spec)
        if path.suffix == ".npy":
            raise DataError(
                f"{key}: {path} holds one array; give the inputs and labels as a pair "
                f"{{x: {path.name}, y: labels.npy}}, or a .npz/.pt file with both"
            )
        x = _read_array(key, spec, x_key)
        y = _read_array(key, spec, y_key)
    else:
        raise DataError(f"{key}: got {spec!r}; {_PAIR_HINT}")
    return _checked(key, x, y)


def _checked(key: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, Tensor]:
    if x.ndim < 2:
        raise DataError(
            f"{key}: inputs have shape {list(x.shape)}; they must be [N, ...] with one sample "
            "per row (a feature vector per sample is [N, features])"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{key}: inputs must be numbers, got dtype {x.dtype}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{key}: labels have shape {list(y.shape)} for {len(x)} inputs; they must be "
            f"[{len(x)}] class indices"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{key}: labels must be integers (class indices), got dtype {y.dtype}")
    if len(y) == 0:
        raise DataError(f"{key}: the file holds no samples")
    return x, torch.from_numpy(np.array(y, dtype=np.int64))


def _existing(key: str, spec: Any) -> Path:
    if not isinstance(spec, (str, Path)):
        raise DataError(f"{key}: {spec!r} is not a file path; {_PAIR_HINT}")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DataError(f"{key}: no file {path} (working directory: {Path.cwd()})")
    return path


def _read_array(key: str, spec: Any, inner: str | None) -> np.ndarray:
    """One array: a ``.npy`` file, a ``.pt`` tensor, or member ``inner`` of a .npz/.pt."""
    path = _existing(key, spec)
    suffix = path.suffix
    try:
        if suffix == ".npy" and inner is None:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        if suffix == ".npz" and inner is not None:
            with np.load(path, allow_pickle=False) as archive:
                if inner not in archive.files:
                    raise DataError(_missing_key(key, path, inner, archive.files))
                return archive[inner]
        if suffix == ".pt":
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if inner is not None:
                if not isinstance(loaded, dict) or inner not in loaded:
                    names = list(loaded) if isinstance(loaded, dict) else []
                    raise DataError(_missing_key(key, path, inner, names))
                loaded = loaded[inner]
            if not isinstance(loaded, Tensor):
                raise DataError(f"{key}: {path} holds {type(loaded).__name__}, not a tensor")
            return loaded.numpy()
    except DataError:
        raise
    except Exception as exc:  # damaged files fail in many ways inside numpy/torch
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"{key}: cannot read {path} ({type(exc).__name__}: {reason})") from exc
    if suffix == ".npz":
        raise DataError(f"{key}: a pair takes .npy or .pt files; give {path.name} itself as {key}")
    raise DataError(f"{key}: {path.name} is not a .npy, .npz or .pt file; {_PAIR_HINT}")


def _missing_key(key: str, path: Path, inner: str, names: list[str]) -> str:
    held = ", ".join(map(str, names)) or "nothing"
    return (
        f"{key}: {path} has no array {inner!r} (it holds: {held}); set data.x_key and "
        "data.y_key to the names it uses"
    )
