"""`mpsctl eval` and `mpsctl report`: accuracy, per-layer precisions and recomputed costs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpsctl.checkpoint import state
from mpsctl.stages import common, summary
from mpsctl.training import distributed
from mpsctl.training.epoch import evaluate


def run_eval(path: Path) -> dict[str, Any]:
    ckpt = state.read(path)
    recipe, net = state.rebuild(ckpt)
    _, device = distributed.init(recipe.device)
    _, loader = common.val_loader(recipe)
    metrics = evaluate(net.to(device), loader, device)
    return {"checkpoint": str(path), "stage": ckpt["stage"], "metrics": metrics}


def run_report(path: Path) -> dict[str, Any]:
    """Layers and costs recomputed from the model; metrics as the checkpoint recorded them."""
    ckpt = state.read(path)
    recipe, net = state.rebuild(ckpt)
    names = summary.cost_names(recipe.search.cost, net)
    metrics = {k: v for k, v in ckpt.get("metrics", {}).items() if not isinstance(v, dict)}
    return {
        "checkpoint": str(path),
        "stage": ckpt["stage"],
        "layers": summary.layer_rows(net),
        "cost": summary.costs(net, names, hard=True),
        "layer_costs": summary.per_layer_costs(net, names),
        "metrics": metrics,
        "history": ckpt.get("history", []),
        "lineage": ckpt.get("lineage", []),
    }
