"""Per-layer rows and cost totals of a supernet or fixed model, as plain JSON-ready data."""

from __future__ import annotations

from typing import Any

import torch

from mpsctl.search.choice import PrecisionChoice
from mpsctl.search.supernet import Supernet
from mpsctl.targets.catalog import builtin_target_costs

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
    """params_bit and bitops always, then the recipe's, then every hardware target's cost
    model (NE16, MPIC, GAP8, DIANA, the recipe's own) that runs the model as it is now:
    every layer supported, and its chosen precisions ones the target runs."""
    names = list(DEFAULT_COSTS) + [c for c in recipe_costs if c not in DEFAULT_COSTS]
    if net is None:
        return names
    candidates = dict.fromkeys([*builtin_target_costs(), *net.cost_models])
    return names + [n for n in candidates if n not in names and _runs(net, n)]


def _runs(net: Supernet, cost: str) -> bool:
    model = net.cost_model(cost)
    for _, layer in net.layers():
        slot = layer.input_slot
        act = int(slot.bits[int(slot.choice.assignment())])
        index = layer.choice.assignment().flatten().tolist()
        weights = sorted({int(layer.choice.bits[int(i)]) for i in index})
        if not model.supports(layer.geometry) or model.precision_problems(
            layer.geometry, act, weights
        ):
            return False
    return True


def kept_only_by_min_channels(net: Supernet) -> list[str]:
    """Pruning choices whose every channel went to 0 bits (``min_channels`` kept some)."""
    out = []
    for name, choice in net.choices():
        if choice.per_channel and choice.can_prune and choice.alpha is not None:
            if not bool((choice.alpha.detach().argmax(0) != 0).any()):
                out.append(name)
    return out


def constant_output_warning(
    net: Supernet, x: torch.Tensor, spread: float | None = None,
    emptied: list[str] | None = None,
) -> str | None:
    """A warning when the model gives the same output for every sample of ``x`` (then an
    export check passes vacuously and accuracy is chance); ``spread`` (the largest output
    difference between samples) is computed when not given."""
    if x.shape[0] < 2:
        return None
    if spread is None:
        was_training = net.training
        with torch.no_grad():
            y = net.eval()(x)
        net.train(was_training)
        spread = float((y - y[:1]).abs().max())
    if spread > 0:
        return None
    emptied = kept_only_by_min_channels(net) if emptied is None else emptied
    why = (f": every channel of {', '.join(emptied)} went to 0 bits and min_channels kept "
           "what is left" if emptied else "")
    return (f"the model's output is the same for all {x.shape[0]} samples of a validation "
            f"batch{why}; lower the cost strengths or raise search.min_channels, and search "
            "again")


def deployment(net: Supernet, example: torch.Tensor) -> dict[str, str | None]:
    """Per ONNX variant, None when the model can be exported, else the first blocking op."""
    from mpsctl.deploy import deployment_support

    return deployment_support(net, example)


def deployment_lines(support: dict[str, str | None]) -> list[str]:
    """One line per deployment format, for the log and the terminal."""
    return [f"ONNX {variant}: " + ("supported" if why is None else f"blocked: {why}")
            for variant, why in support.items()]
