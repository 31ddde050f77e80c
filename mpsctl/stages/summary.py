"""Per-layer rows and cost totals of a supernet or fixed model, as plain JSON-ready data."""

from __future__ import annotations

from typing import Any

from mpsctl.cost import get_cost
from mpsctl.cost.ne16 import ne16_supported
from mpsctl.search.choice import PrecisionChoice
from mpsctl.search.supernet import Supernet
from mpsctl.targets.catalog import BUILTIN_MODELS, precision_problems

DEFAULT_COSTS = ("params_bit", "bitops")


def _chosen_bits(choice: PrecisionChoice) -> int | list[int]:
    index = choice.assignment()
    bits = [choice.bits[int(i)] for i in index.flatten()] if index.dim() else None
    if bits is None:
        return choice.bits[int(index)]
    return [b for b in bits if b != 0]


def layer_rows(net: Supernet, candidates: bool = False) -> list[dict[str, Any]]:
    """One row per searchable layer: chosen precisions (or the candidates) and channels."""
    rows = []
    for name, layer in net.layers():
        g = layer.geometry
        choice, slot = layer.choice, layer.input_slot
        if candidates:
            w_bits: Any = list(choice.bits)
            a_bits: Any = list(slot.bits)
            cout, cin = g.cout, g.cin
        else:
            w_bits = _chosen_bits(choice)
            a_bits = slot.bits[int(slot.choice.assignment())]
            cout = layer.kept_out_channels()
            cin = layer.kept_in_channels()
        rows.append({
            "name": name,
            "type": layer.source_type,
            "kind": g.kind,
            "w_bits": w_bits,
            "a_bits": a_bits,
            "in_channels": cin,
            "out_channels": cout,
            "total_out_channels": layer.original_out_channels,
            "ne16": ne16_supported(g),
        })
    return rows


def costs(net: Supernet, names: tuple[str, ...] | list[str], hard: bool) -> dict[str, float]:
    """Model costs; ``hard`` = exact for the argmax assignment, else expected under θ."""
    if not hard:
        net.sample_choices()
    return {name: float(net.cost(name, hard=hard).detach()) for name in names}


def per_layer_costs(net: Supernet, names: tuple[str, ...] | list[str]) -> dict[str, dict]:
    """``{layer: {cost: value}}`` at the argmax assignment."""
    out: dict[str, dict] = {}
    for name in names:
        for layer, value in net.layer_costs(name, hard=True).items():
            out.setdefault(layer, {})[name] = float(value)
    return out


def cost_names(recipe_costs: dict[str, float], net: Supernet | None = None) -> list[str]:
    """params_bit and bitops always, then the recipe's, then every hardware target's cost
    model that can run the model at its current assignment (NE16 for NE16-shaped models,
    MPIC, GAP8, DIANA, the recipe's own targets)."""
    names = list(DEFAULT_COSTS) + [c for c in recipe_costs if c not in DEFAULT_COSTS]
    if net is None:
        return names
    if "ne16" not in names and all(
        ne16_supported(layer.geometry) for _, layer in net.layers()
    ) and all(
        slot.bits[int(slot.choice.assignment())] == 8 for _, slot in net.activation_slots()
    ):
        names.append("ne16")
    candidates = [*BUILTIN_MODELS, *net.cost_models]
    names += [c for c in dict.fromkeys(candidates) if c not in names and _runs(net, c)]
    return names


def _runs(net: Supernet, cost: str) -> bool:
    """Whether the target behind ``cost`` runs every layer at its chosen precisions."""
    model = net.cost_models.get(cost) or get_cost(cost)
    for _, layer in net.layers():
        slot = layer.input_slot
        act = int(slot.bits[int(slot.choice.assignment())])
        index = layer.choice.assignment().flatten().tolist()
        weights = sorted({int(layer.choice.bits[int(i)]) for i in index})
        if precision_problems(model, cost, layer.geometry, act, weights):
            return False
    return True
