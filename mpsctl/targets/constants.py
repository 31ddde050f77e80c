"""Reading a hardware target's constants file (``configs/targets/<target>.yaml``) strictly.

The one place in the core that parses YAML: a target's factory hands the mapping read here
to its own validation (:class:`Fields`, :class:`MacsPerCycle`), so every target reports a
missing or malformed file, an unknown key or a bad value the same way, naming the file and
the key: a typo in a user's copy must not fall back silently to a default.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from torch import Tensor

from mpsctl.errors import UserError
from mpsctl.resources import bundled_dir

#: The folder of the shipped constants files (``<name>.yaml``), in a wheel or a checkout.
TARGETS_DIR = bundled_dir("configs") / "targets"

#: Largest bit width a look-up table may name (the recipe's limit too).
MAX_TABLE_BITS = 16

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads ``250e6`` as a number (YAML 1.1 would make it a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_constants_file(path: Path, target: str) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (an empty file: an empty mapping); a one-line
    UserError naming ``target`` when the file is missing, unreadable or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {target} constants file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        raise UserError(f"{path}: cannot read {target} constants: {reason}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of {target} constant names to values")
    return data


def shipped_file(name: str) -> Path:
    return TARGETS_DIR / f"{name}.yaml"


def load_target_constants(cls: type[T], name: str, label: str, path: str | Path | None) -> T:
    """``cls.from_mapping`` of the YAML file ``path``; without a path the shipped
    ``configs/targets/<name>.yaml``, or the built-in defaults ``cls()`` where that file is
    not installed. ``label`` names the target in errors."""
    path = Path(path) if path is not None else shipped_file(name)
    if not path.is_file() and path == shipped_file(name):
        return cls()
    return cls.from_mapping(read_constants_file(path, label), str(path))


class Fields:
    """Typed access to one constants mapping, each error naming ``source`` and the key."""

    def __init__(self, data: Mapping[str, Any], source: str, what: str,
                 known: Iterable[str]) -> None:
        self.data, self.source, self.what = data, source, what
        known = sorted(known)
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise UserError(
                f"{source}: unknown {what} constant(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(known)}"
            )

    def fail(self, key: str, expected: str, value: Any) -> UserError:
        return UserError(f"{self.source}: {self.what} constant {key!r} must be {expected}, "
                         f"got {value!r}")

    def number(self, key: str, default: float, positive: bool = True) -> float:
        value = self.data.get(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or (value <= 0 if positive else value < 0):
            raise self.fail(key, "a positive number" if positive else "a non-negative number",
                            value)
        return float(value)

    def integer(self, key: str, default: int, lowest: int = 1) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise self.fail(key, f"an integer >= {lowest}", value)
        return value

    def optional_number(self, key: str) -> float | None:
        if self.data.get(key) is None:
            return None
        return self.number(key, 0.0)

    def table(self, key: str, default: MacsPerCycle | None = None) -> MacsPerCycle:
        if key not in self.data:
            if default is None:
                raise UserError(f"{self.source}: {self.what} needs {key!r} (MACs per cycle "
                                "by activation bits, then weight bits)")
            return default
        return MacsPerCycle.from_mapping(self.data[key], f"{self.source}: {key}")


@dataclass(frozen=True)
class MacsPerCycle:
    """A MACs-per-cycle look-up table over (activation bits, weight bits).

    A pair missing from the table is a precision the target cannot run; 0-bit weights are
    pruned channels and cost nothing.
    """

    entries: tuple[tuple[int, int, float], ...]

    @classmethod
    def from_mapping(cls, data: Any, source: str) -> MacsPerCycle:
        """``{act_bits: {weight_bits: macs_per_cycle}}`` as written in a target file."""
        expected = ("a mapping of activation bits to {weight bits: MACs per cycle}, "
                    "e.g. {8: {8: 2.1, 4: 2.3}}")
        if not isinstance(data, dict) or not data:
            raise UserError(f"{source}: expected {expected}, got {data!r}")
        entries = []
        for act, row in data.items():
            if not _is_bits(act):
                raise UserError(f"{source}: activation bits {act!r} must be an integer "
                                f"in 1..{MAX_TABLE_BITS}")
            if not isinstance(row, dict) or not row:
                raise UserError(f"{source}: {act}: expected {{weight bits: MACs per cycle}}, "
                                f"got {row!r}")
            for weight, rate in row.items():
                if not _is_bits(weight):
                    raise UserError(f"{source}: {act}: weight bits {weight!r} must be an "
                                    f"integer in 1..{MAX_TABLE_BITS}")
                good = isinstance(rate, int | float) and not isinstance(rate, bool)
                if not good or not math.isfinite(rate) or rate <= 0:
                    raise UserError(f"{source}: {act}: {weight}: MACs per cycle must be a "
                                    f"positive number, got {rate!r}")
                entries.append((act, weight, float(rate)))
        return cls(tuple(sorted(entries)))

    def rate(self, act_bits: int, weight_bits: int) -> float | None:
        """MACs per cycle of the pair, None where the target cannot run it."""
        for a, w, r in self.entries:
            if a == act_bits and w == weight_bits:
                return r
        return None

    def act_bits(self) -> list[int]:
        return sorted({a for a, _, _ in self.entries})

    def weight_bits(self, act_bits: int) -> list[int]:
        return sorted(w for a, w, _ in self.entries if a == act_bits)

    def problems(self, target: str, act_bits: int, weight_bits: list[int]) -> list[str]:
        """The (activation, weight) pairs ``target`` cannot run; 0-bit weights are pruning."""
        runs = self.weight_bits(act_bits)
        if not runs:
            acts = ", ".join(map(str, self.act_bits()))
            return [f"{target} cannot run {act_bits}-bit activations (it runs {acts})"]
        return [f"{target} cannot run {w}-bit weights with {act_bits}-bit activations "
                f"(it runs {', '.join(map(str, runs))}, or 0 to prune)"
                for w in weight_bits if w != 0 and w not in runs]

    def cycles(self, work: Any, act_bits: Any, weight_bits: Any, target: str) -> Any:
        """Cycles of ``work`` MACs at (``act_bits``, ``weight_bits``). Tensors broadcast (the
        search; NaN for a pair outside the table); numbers are exact, 0 for 0-bit weights
        and a ValueError naming ``target`` for a pair outside the table."""
        if isinstance(act_bits, Tensor) or isinstance(weight_bits, Tensor):
            ref = act_bits if isinstance(act_bits, Tensor) else weight_bits
            a = torch.as_tensor(act_bits, device=ref.device)
            w = torch.as_tensor(weight_bits, device=ref.device)
            return work * self.cycles_per_mac(a, w)
        if weight_bits == 0:
            return 0
        rate = self.rate(int(act_bits), int(weight_bits))
        if rate is None:
            raise ValueError(f"{target} cannot run {act_bits}-bit activations with "
                             f"{weight_bits}-bit weights")
        return work / rate

    def cycles_per_mac(self, act_bits: Tensor, weight_bits: Tensor) -> Tensor:
        """Cycles per MAC for broadcastable bit tensors: 0 for 0-bit weights, NaN for a pair
        outside the table (the recipe check refuses those before a search starts)."""
        table = _dense_table(self, weight_bits.device)
        return table[act_bits.long(), weight_bits.long()]


def _is_bits(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_TABLE_BITS


@functools.lru_cache(maxsize=64)
def _dense_table(table: MacsPerCycle, device: torch.device) -> Tensor:
    """Cycles per MAC indexed by [act bits, weight bits], built once per (table, device)."""
    size = MAX_TABLE_BITS + 1
    dense = torch.full((size, size), float("nan"), dtype=torch.float32)
    dense[:, 0] = 0.0
    for a, w, r in table.entries:
        dense[a, w] = 1.0 / r
    return dense.to(device)
