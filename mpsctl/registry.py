"""A name → factory table filled by decorators (models, datasets, cost models share it), and
the one "did you mean" rule every error message about a misspelt name uses."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def closest(word: object, choices: Iterable[str]) -> str | None:
    """The choice closest to a misspelt ``word``, or None when nothing is close."""
    matches = difflib.get_close_matches(str(word), list(choices), n=1)
    return matches[0] if matches else None


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ``""``."""
    close = closest(word, choices)
    return f" (did you mean {close!r}?)" if close is not None else ""


class Registry(Generic[T]):
    """Entries registered by name with ``@registry.register("name")``; ``kind`` names them
    in messages ("model", "dataset", "cost model")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = entry
            return entry

        return decorate

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching the shell-style ``pattern``, sorted."""
        return sorted(fnmatch.filter(self._entries, pattern))

    def get(self, name: str) -> T:
        """The entry ``name``; ``KeyError`` (with the close matches) when there is none."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}{self.did_you_mean(name)}") from None

    def did_you_mean(self, word: str) -> str:
        """`` (did you mean 'x'?)`` for the closest registered name, else ``""``."""
        return did_you_mean(word, self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
