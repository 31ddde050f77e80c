"""`mpsctl refine --target NAME`: promote channels where the target's latency gets cheaper.

Promoting a channel to a higher precision can make a layer *faster* on targets that process
channels in chunks (NE16's tiles, a YAML target's ``cout_multiple``/``cin_multiple``) or
that run precision groups on different units concurrently (DIANA: moving a channel from the
analog array to the digital accelerator changes which side is the slower one). Targets where
it cannot (GAP8's latency ignores bits, MPIC has no rounding) are refused in one line.

Works on a search (or refine) checkpoint. Each per-channel weight choice is refined as a
whole, with the latency of every layer that shares it; per-layer choices are left alone.
The result freezes every choice at the refined assignment (stage ``refine``), which
export accepts like a search checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpsctl.checkpoint import state
from mpsctl.console import Reporter
from mpsctl.cost import get_cost
from mpsctl.cost.ne16 import ne16_layer_cycles
from mpsctl.errors import UserError
from mpsctl.recipe import Recipe
from mpsctl.refine import channel_counts, refine_channel_assignment
from mpsctl.search.supernet import Supernet
from mpsctl.stages import summary
from mpsctl.targets import catalog


class _NE16Latency:
    """NE16's exact layer latency in the shape of the other targets' cost models."""

    def exact_layer_cost(self, geom, counts: dict[int, int], cin: int, act_bits: int) -> int:
        return ne16_layer_cycles(geom, counts, cin)


def latency_model(target: str, recipe: Recipe, net: Supernet) -> Any:
    """The latency cost model refine minimises for ``target`` (its recipe constants), or a
    UserError when the target is unknown or promoting channels cannot make it faster."""
    found = catalog.get_target(target, recipe.search.targets)
    if found is None:
        names = [*catalog.BUILTIN, *(n for n in recipe.search.targets if n not in catalog.BUILTIN)]
        raise UserError(f"--target: unknown target '{target}' (available: {', '.join(names)})")
    refuse_unrefinable(found, found.load(recipe.search.targets.get(target)))
    if target == "ne16":
        return _NE16Latency()
    latency = found.costs[0]
    return net.cost_models.get(latency) or get_cost(latency)


def refuse_unrefinable(target: catalog.Target, constants: Any) -> None:
    if not target.refinable(constants):
        raise UserError(f"refine --target {target.name}: {target.no_refine_reason} "
                        "(refine helps ne16, diana and YAML targets with channel rounding)")


def layer_cycles(net: Supernet, model: Any) -> dict[str, float]:
    """Exact latency of every layer at the current (argmax or frozen) assignment."""
    out = {}
    for name, layer in net.layers():
        choice = layer.choice
        index = choice.assignment()
        if choice.per_channel:
            counts = channel_counts(index, choice.bits)
        else:
            counts = {choice.bits[int(index)]: layer.geometry.cout}
        out[name] = model.exact_layer_cost(layer.geometry, counts, layer.kept_in_channels(),
                                           _act_bits(layer))
    return out


def _act_bits(layer) -> int:
    slot = layer.input_slot
    return int(slot.bits[int(slot.choice.assignment())])


def refine_supernet(net: Supernet, model: Any) -> tuple[list[str], list[str]]:
    """Refine every per-channel choice in place (frozen afterwards); returns refined and
    left-alone choice names."""
    members: dict[int, list] = {}
    for _, layer in net.layers():
        members.setdefault(id(layer.choice), []).append(layer)
    refined, skipped = [], []
    for name, choice in list(net.choices()):
        if not name.startswith("weight.") or not choice.per_channel:
            choice.freeze()
            if name.startswith("weight."):
                skipped.append(name)
            continue
        layers = members.get(id(choice), [])
        cins = [layer.kept_in_channels() for layer in layers]
        acts = [_act_bits(layer) for layer in layers]

        def latency(counts: dict[int, int], layers=layers, cins=cins, acts=acts) -> float:
            return sum(model.exact_layer_cost(layer.geometry, counts, cin, act)
                       for layer, cin, act in zip(layers, cins, acts, strict=True))

        before = choice.assignment()
        # A refined (frozen) choice has no logits left; its one-hot serves, and a second
        # refine finds nothing to move anyway.
        logits = choice.alpha.detach() if choice.alpha is not None else choice.one_hot()
        after = refine_channel_assignment(before, choice.bits, logits, latency)
        choice.freeze(after)
        refined.append(name)
    return refined, skipped


def run_refine(path: Path, target: str, reporter: Reporter) -> dict[str, Any]:
    builtin = catalog.BUILTIN.get(target)
    if builtin is not None:  # refused before reading anything when it cannot help
        refuse_unrefinable(builtin, None)
    ckpt = state.read(path, command="refine")
    recipe, net = state.rebuild(ckpt)
    model = latency_model(target, recipe, net)
    before = layer_cycles(net, model)
    refined, skipped = refine_supernet(net, model)
    after = layer_cycles(net, model)
    if skipped:
        reporter.log(f"per-layer choices left alone: {', '.join(skipped)}")
    names = summary.cost_names(recipe.search.cost, net)
    cost = summary.costs(net, names, hard=True)
    data = state.payload("refine", recipe, net, tuple(ckpt["input_shape"]),
                         metrics=ckpt.get("metrics", {}), history=ckpt.get("history", []),
                         cost=cost, refine={"target": target, "before": before, "after": after},
                         lineage=state.extend_lineage(ckpt, "refine", {}, cost))
    out = state.write(Path(path).parent / "refine.pt", data)
    layers = [{"name": n, "before": before[n], "after": after[n]} for n in before]
    total = {"before": sum(before.values()), "after": sum(after.values())}
    return {"checkpoint": str(out), "layers": layers, "total": total, "cost": cost}
