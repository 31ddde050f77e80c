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

from mpsctl.checkpoint import state
from mpsctl.console import Reporter
from mpsctl.errors import UserError
from mpsctl.stages import summary
from mpsctl.targets.refine import TARGETS, exact_layer_costs, refine_supernet


def run_refine(path: Path, target: str, reporter: Reporter) -> dict[str, Any]:
    if target not in TARGETS:
        raise UserError(f"--target: unknown target '{target}' (available: {', '.join(TARGETS)})")
    ckpt = state.read(path, command="refine")
    recipe, net = state.rebuild(ckpt)
    model = net.cost_model(target)
    before = exact_layer_costs(net, model)
    refined, skipped, heuristic = refine_supernet(net, model)
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
    layers = [{"name": n, "before": before[n], "heuristic_cycles": heuristic[n],
               "after": after[n]} for n in before]
    total = {"before": sum(before.values()), "heuristic_cycles": sum(heuristic.values()),
             "after": sum(after.values())}
    return {"checkpoint": str(out), "layers": layers, "total": total, "cost": cost}
