"""`mpsctl eval` and `mpsctl report`: accuracy, per-layer precisions and recomputed costs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpsctl.checkpoint import state
from mpsctl.recipe import build
from mpsctl.stages import budgets, common, summary
from mpsctl.training import distributed
from mpsctl.training.epoch import evaluate


def run_eval(path: Path, split: str = "val") -> dict[str, Any]:
    """Accuracy and loss of a checkpoint's model on the ``train``, ``val`` or ``test`` split."""
    ckpt = state.read(path)
    recipe, net = state.rebuild(ckpt)
    _, device = distributed.init(recipe.device)
    loader = common.split_loader(recipe, split)
    metrics = evaluate(net.to(device), loader, device)
    return {"checkpoint": str(path), "stage": ckpt["stage"], "split": split,
            "samples": len(loader.dataset), "metrics": metrics}


def run_report(path: Path) -> dict[str, Any]:
    """Layers and costs recomputed from the model; metrics as the checkpoint recorded them."""
    ckpt = state.read(path)
    recipe, net = state.rebuild(ckpt)
    names = summary.cost_names(recipe.search.objective_costs(), net)
    metrics = {k: v for k, v in ckpt.get("metrics", {}).items() if not isinstance(v, dict)}
    cost = summary.costs(net, names, hard=True)
    return {
        "checkpoint": str(path),
        "stage": ckpt["stage"],
        "layers": summary.layer_rows(net),
        "cost": cost,
        "budget": budgets.slack(cost, ckpt.get("budgets", {})),
        "layer_costs": summary.per_layer_costs(net, names),
        "metrics": metrics,
        "history": ckpt.get("history", []),
        "lineage": ckpt.get("lineage", []),
        "deployment": summary.deployment(net, build.example_input(tuple(ckpt["input_shape"]))),
    }
