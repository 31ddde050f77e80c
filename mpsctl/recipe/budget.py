"""Budget values as users write them: ``24KiB``, ``3.5kB``, ``60000``, ``1.2M``, ``10%``.

Model size (``params_bit``) takes ``bits``, ``B``, ``kB``, ``KiB``, ``MB`` or ``MiB`` (a bare
number is bits); other costs take plain numbers with an optional ``k``, ``M`` or ``G``; any
cost takes a percentage of the recipe's model at its highest precisions.
"""

from __future__ import annotations

import re

from mpsctl.search.budget import Budget

SIZE_COST = "params_bit"

#: Multipliers to bits.
SIZE_UNITS = {
    "": 1, "bit": 1, "bits": 1, "b": 1,
    "B": 8, "kB": 8e3, "KB": 8e3, "KiB": 8 * 1024, "MB": 8e6, "MiB": 8 * 1024**2,
}
COUNT_UNITS = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}

_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z%]*)\s*$")


def units_for(cost: str) -> str:
    """The units ``cost`` accepts, for error messages."""
    if cost == SIZE_COST:
        return "bits, B, kB, KiB, MB, MiB or a percentage such as 10%"
    return "a number, optionally with k, M or G, or a percentage such as 10%"


def parse_budget(cost: str, value: object) -> Budget:
    """``value`` as a :class:`Budget` for ``cost``; ValueError with a short reason otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a budget (use {units_for(cost)})")
    if isinstance(value, int | float):
        if not value > 0:
            raise ValueError(f"{value!r} must be positive")
        return Budget(cost, float(value))
    match = _NUMBER.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a budget (use {units_for(cost)})")
    number, unit = float(match.group(1)), match.group(2)
    if not number > 0:
        raise ValueError(f"{value!r} must be positive")
    if unit == "%":
        if number > 100:
            raise ValueError(f"{value!r} is above 100 % (every model fits; drop the budget)")
        return Budget(cost, number / 100, relative=True)
    units = SIZE_UNITS if cost == SIZE_COST else COUNT_UNITS
    if unit not in units:
        raise ValueError(f"unknown unit {unit!r} in {value!r} (use {units_for(cost)})")
    return Budget(cost, number * units[unit])


def format_amount(cost: str, value: float) -> str:
    """A budget or cost in readable units: ``9,461 bits (1.2 KiB)`` or ``60,000``."""
    if cost == SIZE_COST:
        return f"{value:,.0f} bits ({value / 8 / 1024:.2f} KiB)"
    return f"{value:,.0f}"
