"""`mpsctl finetune`: quantization-aware training of an exported (or refined) model.

Weights and learned clips keep training at the fixed precisions; the checkpoint keeps the
best validation accuracy seen, the starting model included, so fine-tuning never hands back
a worse model than it was given. `last.pt` is saved every epoch; `--resume` continues.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from mpsctl.checkpoint import state
from mpsctl.console import Reporter
from mpsctl.errors import CheckpointError
from mpsctl.recipe import build, recipe_from_dict
from mpsctl.stages import budgets, common, summary
from mpsctl.training import distributed
from mpsctl.training.device import seed_everything
from mpsctl.training.epoch import evaluate
from mpsctl.training.layout import use_channels_last
from mpsctl.training.loop import EpochLoop, LoopPosition, StopFlag, sigint_stops
from mpsctl.training.optim import optimizer_for
from mpsctl.training.runlog import RunLog


def run_finetune(
    path: Path, overrides: list[str], reporter: Reporter, resume: bool = False
) -> dict[str, Any]:
    ckpt = state.read(path, command="finetune")
    _, net = state.rebuild(ckpt)
    if ckpt["stage"] == "refine":
        net = net.harden()
    recipe = recipe_from_dict(ckpt["recipe"], overrides)
    seed_everything(recipe.seed)
    ctx, device = distributed.init(recipe.device)
    reporter.quiet = reporter.quiet or not ctx.is_main
    bundle = build.datasets(recipe)
    loaders = build.loaders(recipe, bundle)
    last = Path(path).parent / "last.pt"
    saved = _resume_state(last) if resume else None
    if saved is not None:
        net.load_state_dict(saved["model_state"])
    log = RunLog(last.parent, recipe.log.tensorboard, enabled=ctx.is_main)
    # the precisions stay fixed: the run log shows the same hard cost every epoch
    fixed_cost = summary.costs(net, summary.cost_names(recipe.search.cost, net), hard=True)
    net.to(device)
    use_channels_last(recipe.channels_last, net, build.example_input(bundle.input_shape), device)
    f = recipe.finetune
    opt, schedule = optimizer_for(net.parameters(), f.optimizer, f.epochs, len(loaders.train))
    if saved is None:
        best = {**evaluate(net, loaders.val, device), "epoch": 0}
        best_state = copy.deepcopy(net.state_dict())
        reporter.log(f"before fine-tuning: validation accuracy {best['accuracy']:.4f}")
    else:
        best, best_state = saved["best"], saved["best_state"]
        reporter.log(f"resuming the fine-tuning at epoch {saved['epoch'] + 1}")

    def after_epoch(epoch: int, stats) -> dict[str, Any]:
        nonlocal best, best_state
        val = evaluate(net, loaders.val, device)
        reporter.log(f"finetune epoch {epoch + 1}/{f.epochs}: loss {stats.loss:.4f}, "
                     f"validation accuracy {val['accuracy']:.4f}")
        if val["accuracy"] > best["accuracy"]:
            best = {**val, "epoch": epoch + 1}
            best_state = copy.deepcopy(net.state_dict())
        return {"epoch": epoch + 1, "train_loss": stats.loss, "accuracy": val["accuracy"],
                "val_loss": val["loss"], "cost": fixed_cost}

    def save(loop_state: dict) -> None:
        data = state.payload("finetune", recipe, net, bundle.input_shape, best=best,
                             best_state={k: v.detach().cpu() for k, v in best_state.items()},
                             **loop_state)
        state.write(last, data)

    loop = EpochLoop("finetune", distributed.wrap(net, device), loaders.train, [opt],
                     [schedule] if schedule else [], device, reporter, f.epochs, save=save,
                     after_epoch=after_epoch, run_log=log, log_model=net)
    position = loop.load(saved) if saved is not None else LoopPosition()
    stop = StopFlag()
    with sigint_stops(stop):
        history = loop.run(position, stop)
    net.load_state_dict(best_state)
    test = common.test_metrics(net, loaders.test, device)
    net.cpu().eval()
    names = summary.cost_names(recipe.search.objective_costs(), net)
    cost = summary.costs(net, names, hard=True)
    metrics = {"accuracy": best["accuracy"], "loss": best["loss"], "best_epoch": best["epoch"],
               **test}
    data = state.payload("finetune", recipe, net, bundle.input_shape, metrics=metrics,
                         cost=cost, history=ckpt.get("history", []),
                         finetune_history=history,
                         lineage=state.extend_lineage(ckpt, "finetune", metrics, cost),
                         budgets=ckpt.get("budgets", {}))
    out = state.write(Path(path).parent / "finetune.pt", data)
    return {"checkpoint": str(out), "metrics": metrics, "cost": cost,
            "layers": summary.layer_rows(net),
            "budget": budgets.slack(cost, ckpt.get("budgets", {}))}


def _resume_state(last: Path) -> dict[str, Any]:
    if not last.exists():
        raise CheckpointError(f"--resume: no {last} to resume from (run without --resume)")
    saved = state.read(last)
    if saved["stage"] != "finetune" or "best_state" not in saved:
        raise CheckpointError(
            f"--resume: {last} belongs to `mpsctl {saved['stage']}`, not `mpsctl finetune`"
        )
    return saved
