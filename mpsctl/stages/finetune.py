"""`mpsctl finetune`: quantization-aware training of an exported (or refined) model.

Weights and learned clips keep training at the fixed precisions; the checkpoint keeps the
best validation accuracy seen, the starting model included, so fine-tuning never hands back
a worse model than it was given.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from mpsctl.console import Reporter
from mpsctl.recipe import recipe_from_dict
from mpsctl.stages import build, state, summary
from mpsctl.stages.search import optimizer_for
from mpsctl.train import evaluate, train_epoch


def run_finetune(path: Path, overrides: list[str], reporter: Reporter) -> dict[str, Any]:
    ckpt = state.read(path, expect=("export", "refine"), command="finetune")
    _, net = state.rebuild(ckpt)
    if ckpt["stage"] == "refine":
        net = net.harden()
    recipe = recipe_from_dict(ckpt["recipe"], overrides)
    build.seed_everything(recipe.seed)
    device = build.resolve_device(recipe.device)
    bundle = build.datasets(recipe)
    loaders = build.loaders(recipe, bundle)
    net.to(device)
    f = recipe.finetune
    opt, schedule = optimizer_for(net.parameters(), f.optimizer, f.epochs, len(loaders.train))
    best = evaluate(net, loaders.val, device)
    best_state = copy.deepcopy(net.state_dict())
    best_epoch = 0
    reporter.log(f"before fine-tuning: validation accuracy {best['accuracy']:.4f}")
    history = []
    for epoch in range(f.epochs):
        with reporter.progress(f"finetune {epoch + 1}/{f.epochs}", len(loaders.train)) as adv:
            stats = train_epoch(net, loaders.train, [opt], device, epoch,
                                schedules=[schedule] if schedule else None, on_step=adv)
        val = evaluate(net, loaders.val, device)
        history.append({"epoch": epoch + 1, "train_loss": stats.loss, **val})
        reporter.log(f"finetune epoch {epoch + 1}/{f.epochs}: loss {stats.loss:.4f}, "
                     f"validation accuracy {val['accuracy']:.4f}")
        if val["accuracy"] > best["accuracy"]:
            best, best_epoch = val, epoch + 1
            best_state = copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    net.cpu().eval()
    names = summary.cost_names(recipe.search.cost, net)
    cost = summary.costs(net, names, hard=True)
    metrics = {**best, "best_epoch": best_epoch}
    data = state.payload("finetune", recipe, net, bundle.input_shape, metrics=metrics,
                         cost=cost, history=ckpt.get("history", []),
                         finetune_history=history,
                         lineage=state.extend_lineage(ckpt, "finetune", metrics, cost))
    out = state.write(Path(path).parent / "finetune.pt", data)
    return {"checkpoint": str(out), "metrics": metrics, "cost": cost,
            "layers": summary.layer_rows(net)}
