"""The hardware targets a recipe can name: their cost models, constants and precision rules.

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

from mpsctl.cost.base import LayerGeometry
from mpsctl.targets import custom, diana, gap8, mpic

#: ``(geometry, act bits, weight bits, constants) -> problems`` (empty: the target runs it).
ProblemsFn = Callable[[LayerGeometry, int, list[int], Any], list[str]]


@dataclass(frozen=True)
class Target:
    """What mpsctl knows of one target besides its cost formulas."""

    name: str
    #: The cost model names it provides (``search.cost`` keys).
    costs: tuple[str, ...]
    load: Callable[[str | Path | None], Any]
    problems: ProblemsFn
    #: Whether promoting channels can make a layer faster (``mpsctl refine --target``).
    refinable: Callable[[Any], bool]
    #: One line on why refine cannot help, for targets where it cannot.
    no_refine_reason: str = ""


def _ne16_problems(geom: LayerGeometry, act_bits: int, weight_bits: list[int],
                   constants: Any) -> list[str]:
    return [] if act_bits == 8 else [f"NE16 runs 8-bit activations only, not {act_bits}"]


def _load_ne16(path: str | Path | None) -> Any:
    from mpsctl.cost.ne16 import load_ne16_constants

    return load_ne16_constants(path)


BUILTIN: dict[str, Target] = {
    t.name: t
    for t in (
        Target("ne16", ("ne16",), _load_ne16, _ne16_problems, lambda c: True),
        Target("mpic", ("mpic_latency", "mpic_energy"), mpic.load_mpic_constants,
               mpic.mpic_precision_problems, lambda c: False,
               "MPIC has no channel rounding: promoting a channel never makes a layer faster"),
        Target("gap8", ("gap8_latency",), gap8.load_gap8_constants,
               lambda g, a, w, c: gap8.gap8_precision_problems(g, a, w), lambda c: False,
               "GAP8's latency ignores bit widths: promoting a channel never makes a layer "
               "faster"),
        Target("diana", ("diana_latency",), diana.load_diana_constants,
               diana.diana_precision_problems, lambda c: True),
    )
}


def custom_target(name: str) -> Target:
    """The target ``name`` described by a YAML file alone (its costs depend on the file)."""

    def problems(geom: LayerGeometry, act: int, weights: list[int], c: Any) -> list[str]:
        return custom.custom_precision_problems(name, geom, act, weights, c)

    def load(path: str | Path | None) -> custom.CustomConstants:
        if path is None:
            raise ValueError(f"target {name!r} needs a constants file")
        return custom.load_custom_constants(path)

    return Target(name, (name, f"{name}_energy"), load, problems,
                  lambda c: c.rounds,
                  f"{name} has no channel rounding (cout_multiple, cin_multiple): promoting "
                  "a channel never makes a layer faster")


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


#: The cost model classes of the built-in targets, by cost name.
BUILTIN_MODELS: dict[str, Callable[[Any], Any]] = {
    "mpic_latency": mpic.MPICLatency,
    "mpic_energy": mpic.MPICEnergy,
    "gap8_latency": gap8.GAP8Latency,
    "diana_latency": diana.DianaLatency,
}


def register_builtin_models(registry: Any) -> None:
    """Put the built-in targets' cost models (shipped constants) in the cost registry."""
    for name, cls in BUILTIN_MODELS.items():
        if name not in registry:
            target = target_of_cost(name)
            assert target is not None
            registry.register(name)(cls(target.load(None)))


def cost_models(targets: dict[str, str]) -> dict[str, Any]:
    """The cost models a recipe's ``search.targets`` files define: built-in ones with the
    file's constants, and each YAML-only target's latency (and energy, if it gives one)."""
    out: dict[str, Any] = {}
    for name, path in targets.items():
        target = get_target(name, targets)
        if target is None:
            continue
        constants = target.load(path)
        if name in BUILTIN:
            out.update({cost: BUILTIN_MODELS[cost](constants) for cost in target.costs
                        if cost in BUILTIN_MODELS})
            continue
        out[name] = custom.CustomLatency(name, constants)
        if constants.energy_per_cycle is not None:
            out[f"{name}_energy"] = custom.CustomEnergy(f"{name}_energy", constants)
    return out


def precision_problems(model: Any, cost: str, geom: LayerGeometry, act_bits: int,
                       weight_bits: list[int]) -> list[str]:
    """Why the target behind cost model ``model`` (named ``cost``) cannot run a layer with
    these precisions; empty for costs that are not a target's (params_bit, bitops)."""
    check = getattr(model, "precision_problems", None)
    if check is not None:
        return check(geom, act_bits, weight_bits)
    target = target_of_cost(cost)
    if target is None:
        return []
    return target.problems(geom, act_bits, weight_bits, None)
