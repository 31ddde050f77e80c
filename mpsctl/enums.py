"""The base of mpsctl's kinds: enums whose members are also their string values.

A member compares, hashes, formats and serialises (JSON, reports) as its value, so code,
messages and saved files that used the bare strings keep working.
"""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """A str-valued enum that prints as its value (``f"{LayerKind.CONV}"`` is ``conv``)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)
