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
from mpsctl.cost.base import CostModel
from mpsctl.errors import UserError
from mpsctl.recipe import Recipe
from mpsctl.search.supernet import Supernet
from mpsctl.stages import summary
from mpsctl.targets import catalog
from mpsctl.targets.refine import exact_layer_costs, refine_supernet


def latency_model(target: str, recipe: Recipe, net: Supernet) -> CostModel:
    """The latency model refine minimises for ``target``, with the recipe's constants; a
    UserError when the target is unknown or promoting channels cannot make it faster."""
    found = catalog.get_target(target, recipe.search.targets)
    if found is None:
        names = [*catalog.BUILTIN, *(n for n in recipe.search.targets if n not in catalog.BUILTIN)]
        raise UserError(f"--target: unknown target '{target}' (available: {', '.join(names)})")
    refuse_unrefinable(found, found.load(recipe.search.targets.get(target)))
    return net.cost_model(found.costs[0])


def refuse_unrefinable(target: catalog.Target, constants: Any) -> None:
    if not target.refinable(constants):
        raise UserError(f"refine --target {target.name}: {target.no_refine_reason} "
                        "(refine helps ne16, diana and YAML targets with channel rounding)")


def run_refine(path: Path, target: str, reporter: Reporter) -> dict[str, Any]:
    builtin = catalog.BUILTIN.get(target)
    if builtin is not None:  # refused before reading anything when it cannot help
        refuse_unrefinable(builtin, None)
    ckpt = state.read(path, command="refine")
    recipe, net = state.rebuild(ckpt)
    model = latency_model(target, recipe, net)
    before = exact_layer_costs(net, model)
    refined, skipped = refine_supernet(net, model)
    after = exact_layer_costs(net, model)
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
    return {"checkpoint": str(out), "target": target, "latency": model.name, "layers": layers,
            "total": total, "cost": cost}
