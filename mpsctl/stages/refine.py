"""`mpsctl refine --target ne16`: promote channels where NE16's tiles make that cheaper.

Works on a search (or refine) checkpoint. Each per-channel weight choice is refined as a
whole, with the summed latency of every layer that shares it, to the cheapest channel counts
promotions can reach; per-layer choices are left alone. The cycles the earlier two-pass
heuristic would have reached are reported beside the optimum (``heuristic``).
The result freezes every choice at the refined assignment (stage ``refine``), which
export accepts like a search checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpsctl.console import Reporter
from mpsctl.cost.ne16 import ne16_layer_cycles
from mpsctl.errors import UserError
from mpsctl.refine import Additive, channel_counts, heuristic_counts, refine_channel_assignment
from mpsctl.search.supernet import Supernet
from mpsctl.stages import state, summary

TARGETS = ("ne16",)


def layer_cycles(net: Supernet) -> dict[str, int]:
    """Exact NE16 cycles of every layer at the current (argmax or frozen) assignment."""
    out = {}
    for name, layer in net.layers():
        choice = layer.choice
        index = choice.assignment()
        if choice.per_channel:
            counts = channel_counts(index, choice.bits)
        else:
            counts = {choice.bits[int(index)]: layer.geometry.cout}
        out[name] = ne16_layer_cycles(layer.geometry, counts, layer.kept_in_channels())
    return out


def refine_supernet(net: Supernet) -> tuple[list[str], list[str], dict[str, int]]:
    """Refine every per-channel choice in place (frozen afterwards).

    Returns the refined and the left-alone choice names, and each layer's cycles at the
    counts the earlier heuristic reaches (for the comparison in the report).
    """
    members: dict[int, list] = {}
    for name, layer in net.layers():
        members.setdefault(id(layer.choice), []).append((name, layer))
    refined, skipped = [], []
    heuristic = layer_cycles(net)
    for name, choice in list(net.choices()):
        if not name.startswith("weight.") or not choice.per_channel:
            choice.freeze()
            if name.startswith("weight."):
                skipped.append(name)
            continue
        layers = [layer for _, layer in members.get(id(choice), [])]
        cins = [layer.kept_in_channels() for layer in layers]

        def group(bits: int, count: int, layers=layers, cins=cins) -> int:
            return sum(ne16_layer_cycles(layer.geometry, {bits: count}, cin)
                       for layer, cin in zip(layers, cins, strict=True))

        latency = Additive(group)
        before = choice.assignment()
        old_counts = heuristic_counts(channel_counts(before, choice.bits), latency)
        for (layer_name, layer), cin in zip(members.get(id(choice), []), cins, strict=True):
            heuristic[layer_name] = ne16_layer_cycles(layer.geometry, old_counts, cin)
        # A refined (frozen) choice has no logits left; its one-hot serves, and a second
        # refine finds nothing to move anyway.
        logits = choice.alpha.detach() if choice.alpha is not None else choice.one_hot()
        after = refine_channel_assignment(before, choice.bits, logits, latency)
        choice.freeze(after)
        refined.append(name)
    return refined, skipped, heuristic


def run_refine(path: Path, target: str, reporter: Reporter) -> dict[str, Any]:
    if target not in TARGETS:
        raise UserError(f"--target: unknown target '{target}' (available: {', '.join(TARGETS)})")
    ckpt = state.read(path, expect=("search", "refine"), command="refine")
    recipe, net = state.rebuild(ckpt)
    before = layer_cycles(net)
    refined, skipped, heuristic = refine_supernet(net)
    after = layer_cycles(net)
    if skipped:
        reporter.log(f"per-layer choices left alone: {', '.join(skipped)}")
    names = summary.cost_names(recipe.search.cost, net)
    cost = summary.costs(net, names, hard=True)
    data = state.payload("refine", recipe, net, tuple(ckpt["input_shape"]),
                         metrics=ckpt.get("metrics", {}), history=ckpt.get("history", []),
                         cost=cost, refine={"target": target, "before": before, "after": after},
                         lineage=state.extend_lineage(ckpt, "refine", {}, cost))
    out = state.write(Path(path).parent / "refine.pt", data)
    layers = [{"name": n, "before": before[n], "heuristic_cycles": heuristic[n],
               "after": after[n]} for n in before]
    total = {"before": sum(before.values()), "heuristic_cycles": sum(heuristic.values()),
             "after": sum(after.values())}
    return {"checkpoint": str(out), "layers": layers, "total": total, "cost": cost}
