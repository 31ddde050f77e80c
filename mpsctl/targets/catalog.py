"""The hardware targets a recipe can name, beside their cost models: constants files and
whether ``refine`` can help them.

A target is either built in (``ne16``, ``mpic``, ``gap8``, ``diana``: formulas in Python,
constants in ``configs/targets/<name>.yaml``, replaceable by a copy) or described by a YAML
file alone (any other name; see ``configs/targets/template.yaml``). ``search.targets``
maps target names to constants files; every cost model of a target reads the same file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpsctl.errors import UserError
from mpsctl.targets import custom, diana, gap8, mpic


@dataclass(frozen=True)
class Target:
    """What mpsctl knows of one target besides its cost models."""

    name: str
    #: The cost model names it provides (``search.cost`` keys), latency first.
    costs: tuple[str, ...]
    load: Callable[[str | Path | None], Any]
    #: Whether promoting channels can make a layer faster (``mpsctl refine --target``).
    refinable: Callable[[Any], bool]
    #: One line on why refine cannot help, for targets where it cannot.
    no_refine_reason: str = ""


def _load_ne16(path: str | Path | None) -> Any:
    from mpsctl.targets.ne16 import load_ne16_constants

    return load_ne16_constants(path)


BUILTIN: dict[str, Target] = {
    t.name: t
    for t in (
        Target("ne16", ("ne16",), _load_ne16, lambda c: True),
        Target("mpic", ("mpic_latency", "mpic_energy"), mpic.load_mpic_constants,
               lambda c: False,
               "MPIC has no channel rounding: promoting a channel never makes a layer faster"),
        Target("gap8", ("gap8_latency",), gap8.load_gap8_constants, lambda c: False,
               "GAP8's latency ignores bit widths: promoting a channel never makes a layer "
               "faster"),
        Target("diana", ("diana_latency",), diana.load_diana_constants, lambda c: True),
    )
}


def custom_target(name: str) -> Target:
    """The target ``name`` described by a YAML file alone (its costs depend on the file)."""

    def load(path: str | Path | None) -> custom.CustomConstants:
        if path is None:
            raise ValueError(f"target {name!r} needs a constants file")
        return custom.load_custom_constants(path)

    return Target(name, (name, f"{name}_energy"), load, lambda c: c.rounds,
                  f"{name} has no channel rounding (cout_multiple, cin_multiple): promoting "
                  "a channel never makes a layer faster")


def refuse_unrefinable(target: Target, constants: Any) -> None:
    """A one-line UserError when promoting channels cannot make ``target`` faster."""
    if not target.refinable(constants):
        raise UserError(f"refine --target {target.name}: {target.no_refine_reason} "
                        "(refine helps ne16, diana and YAML targets with channel rounding)")


def custom_costs(name: str, constants: custom.CustomConstants) -> tuple[str, ...]:
    """The cost names a YAML target provides: latency, and energy when it gives one."""
    return (name, f"{name}_energy") if constants.energy_per_cycle is not None else (name,)


def target_of_cost(cost: str, targets: dict[str, str] | None = None) -> Target | None:
    """The target whose cost model ``cost`` is (None for params_bit, bitops, ...)."""
    for target in BUILTIN.values():
        if cost in target.costs:
            return target
    for name in targets or {}:
        if name not in BUILTIN and cost in (name, f"{name}_energy"):
            return custom_target(name)
    return None


def get_target(name: str, targets: dict[str, str] | None = None) -> Target | None:
    """The built-in target ``name``, or the recipe's YAML target of that name."""
    if name in BUILTIN:
        return BUILTIN[name]
    if name in (targets or {}):
        return custom_target(name)
    return None


def builtin_target_costs() -> list[str]:
    """Every cost model name of the built-in targets."""
    return [cost for target in BUILTIN.values() for cost in target.costs]


def yaml_cost_models(targets: dict[str, str]) -> dict[str, custom.CustomLatency]:
    """The cost models of a recipe's YAML-only targets (``search.targets`` entries whose name
    is not a built-in target): each one's latency, and its energy if the file gives one."""
    out: dict[str, custom.CustomLatency] = {}
    for name, path in targets.items():
        if name in BUILTIN:
            continue
        constants = custom.load_custom_constants(path)
        out[name] = custom.CustomLatency(name, constants)
        if constants.energy_per_cycle is not None:
            out[f"{name}_energy"] = custom.CustomEnergy(f"{name}_energy", constants)
    return out
