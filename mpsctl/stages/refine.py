"""`mpsctl refine --target NAME`: promote channels where the target's latency gets cheaper.

Promoting a channel to a higher precision can make a layer *faster* on targets that process
channels in chunks (NE16's tiles, a YAML target's ``cout_multiple``/``cin_multiple``) or
that run precision groups on different units concurrently (DIANA: moving a channel from the
analog array to the digital accelerator changes which side is the slower one). Targets where
it cannot (GAP8's latency ignores bits, MPIC has no rounding) are refused in one line.

Works on a search (or refine) checkpoint. Each per-channel weight choice is refined as a
whole, with the summed latency of every layer that shares it, to the cheapest channel counts
promotions can reach; per-layer choices are left alone. The cycles the earlier two-pass
heuristic would have reached are reported beside the optimum (``heuristic``).
The result freezes every choice at the refined assignment (stage ``refine``), which
export accepts like a search checkpoint. Promotions add weight bits: a choice whose
refinement would take the model over one of the search's budgets stays as searched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpsctl.checkpoint import state
from mpsctl.console import Reporter
from mpsctl.stages import budgets, summary
from mpsctl.targets import catalog
from mpsctl.targets.refine import exact_layer_costs, latency_model, refine_supernet


def run_refine(path: Path, target: str, reporter: Reporter) -> dict[str, Any]:
    builtin = catalog.BUILTIN.get(target)
    if builtin is not None:  # refused before reading anything when it cannot help
        catalog.refuse_unrefinable(builtin, None)
    ckpt = state.read(path, command="refine")
    recipe, net = state.rebuild(ckpt)
    model = latency_model(target, recipe.search.targets, net)
    before = exact_layer_costs(net, model)
    bounds = ckpt.get("budgets", {})
    refined, skipped, heuristic = refine_supernet(net, model, bounds)
    after = exact_layer_costs(net, model)
    choices = dict(net.choices())
    held = [n for n in skipped if choices[n].per_channel]
    per_layer = [n for n in skipped if n not in held]
    if per_layer:
        reporter.log(f"per-layer choices left alone: {', '.join(per_layer)}")
    if held:
        reporter.log(f"kept as searched (refining them would break the budget "
                     f"{', '.join(bounds)}): {', '.join(held)}")
    names = summary.cost_names(recipe.search.objective_costs(), net)
    cost = summary.costs(net, names, hard=True)
    data = state.payload("refine", recipe, net, tuple(ckpt["input_shape"]),
                         metrics=ckpt.get("metrics", {}), history=ckpt.get("history", []),
                         cost=cost, refine={"target": target, "before": before, "after": after},
                         lineage=state.extend_lineage(ckpt, "refine", {}, cost),
                         budgets=ckpt.get("budgets", {}))
    out = state.write(Path(path).parent / "refine.pt", data)
    layers = [{"name": n, "before": before[n], "heuristic_cycles": heuristic[n],
               "after": after[n]} for n in before]
    total = {"before": sum(before.values()), "heuristic_cycles": sum(heuristic.values()),
             "after": sum(after.values())}
    return {"checkpoint": str(out), "target": target, "latency": model.name, "layers": layers,
            "total": total, "cost": cost, "held_by_budget": held,
            "budget": budgets.slack(cost, bounds)}
