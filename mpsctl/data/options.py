"""Checks for dataset option values; each failure is one line naming ``data.<key>``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpsctl.errors import DataError


def positive_int(key: str, value: Any) -> int:
    """An int >= 1 (bools, which YAML may produce by mistake, are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"data.{key}: must be a positive integer, got {value!r}")
    return value


def fraction(key: str, value: Any) -> float:
    """A number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise DataError(f"data.{key}: must be a number between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def boolean(key: str, value: Any) -> bool:
    """A real bool, so that a quoted ``"false"`` is not taken as true."""
    if not isinstance(value, bool):
        raise DataError(f"data.{key}: must be true or false, got {value!r}")
    return value


def shape(key: str, value: Any) -> tuple[int, ...]:
    """A sample shape of any rank: ``[features]``, ``[channels, length]``, ``[c, h, w]``..."""
    ok = isinstance(value, (list, tuple)) and len(value) >= 1
    if not ok or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise DataError(
            f"data.{key}: must be a list of positive integers such as [128], [40, 49] or "
            f"[3, 32, 32], got {value!r}"
        )
    return tuple(value)


def fraction_or_zero(key: str, value: Any) -> float:
    """A number in [0, 1): 0 turns a split off."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise DataError(f"data.{key}: must be a number in [0, 1), got {value!r}")
    return float(value)


def image_size(key: str, value: Any) -> tuple[int, int]:
    """Pixels: one int for square images or ``[height, width]``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return (value, value)
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    if ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return (value[0], value[1])
    raise DataError(
        f"data.{key}: must be a positive integer or [height, width] in pixels, got {value!r}"
    )


def folder(key: str, value: Any, dataset: str, hint: str) -> Path:
    """A folder path (``~`` expanded); ``None`` means the user has not set it yet."""
    if value is None:
        raise DataError(f"data.{key}: dataset {dataset!r} needs a data folder; {hint}")
    if not isinstance(value, (str, Path)):
        raise DataError(f"data.{key}: must be a folder path, got {value!r}")
    return Path(value).expanduser()
