"""Per-layer rows and cost totals of a supernet or fixed model, as plain JSON-ready data."""

from __future__ import annotations

from typing import Any

from mpsctl.search.choice import PrecisionChoice
from mpsctl.search.supernet import Supernet

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
    ne16 = net.cost_model("ne16")
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
            "ne16": ne16.supports(g),
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
    """params_bit and bitops always, then the recipe's, then ne16 for NE16-shaped models."""
    names = list(DEFAULT_COSTS) + [c for c in recipe_costs if c not in DEFAULT_COSTS]
    if net is not None and "ne16" not in names and all(
        net.cost_model("ne16").supports(layer.geometry) for _, layer in net.layers()
    ) and all(
        slot.bits[int(slot.choice.assignment())] == 8 for _, slot in net.activation_slots()
    ):
        names.append("ne16")
    return names
