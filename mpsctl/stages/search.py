"""`mpsctl search`: optional fp32 warm-up, then the supernet search, then `search.pt`.

Both phases save `last.pt` after every epoch (and on Ctrl-C); `--resume` continues from it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mpsctl.checkpoint import state
from mpsctl.console import Reporter, format_cost
from mpsctl.errors import CheckpointError, RecipeError
from mpsctl.recipe import Recipe, build, dump_recipe_yaml, recipe_diff, recipe_to_dict
from mpsctl.search.budget import DualAscent, rate_for
from mpsctl.search.supernet import Supernet
from mpsctl.stages import budgets, common, summary
from mpsctl.training import distributed
from mpsctl.training.device import seed_everything
from mpsctl.training.epoch import evaluate
from mpsctl.training.layout import use_channels_last
from mpsctl.training.loop import EpochLoop, LoopPosition, StopFlag, sigint_stops
from mpsctl.training.optim import optimizer_for, temperature_at
from mpsctl.training.runlog import RunLog

#: Recipe keys that, changed, make a saved run impossible to continue.
#: ``data`` counts whole (every dataset option: files, keys, splits, normalisation) but for
#: these loader settings, which do not change what is learned from.
LOADER_KEYS = frozenset({"batch_size", "global_batch_size", "num_workers", "root", "download"})
RESUME_KEYS = (
    "model", "data", "search.type", "search.weight_bits", "search.act_bits", "search.layers",
    "search.exclude", "search.weight_quantizer", "search.act_quantizer", "search.min_channels",
    "search.compensate", "search.input_signed", "search.budget",
)


def _without_loader_keys(recipe: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in (recipe.get("data") or {}).items() if k not in LOADER_KEYS}
    return {**recipe, "data": data}


def dry_run(recipe: Recipe) -> dict[str, Any]:
    """The supernet's layers and costs at initialisation, without data or training."""
    bundle = build.datasets(recipe)
    model = build.float_model(recipe)
    build.check_classes(model, bundle.input_shape, bundle.num_classes)
    net = build.supernet_for(recipe, model, bundle.input_shape)
    build.check_target_precisions(recipe, net)
    names = summary.cost_names(recipe.search.objective_costs())
    deployment = summary.deployment(net, build.example_input(bundle.input_shape))
    net.train()
    return {
        "layers": [
            {k: row[k] for k in ("name", "type", "w_bits", "a_bits", "in_channels",
                                 "out_channels")}
            for row in summary.layer_rows(net, candidates=True)
        ],
        "cost": summary.costs(net, names, hard=False),
        "deployment": deployment,
    }


def load_resume_state(recipe: Recipe, phase_stage: str) -> dict[str, Any]:
    """The run's ``last.pt``, refused when missing or when the recipe changed what it built."""
    path = recipe.run_dir / "last.pt"
    if not path.exists():
        raise CheckpointError(
            f"--resume: no {path} to resume from (run without --resume to start)"
        )
    saved = state.read(path, allow_partial=True)
    if saved["stage"] != phase_stage:
        raise CheckpointError(
            f"--resume: {path} belongs to `mpsctl {saved['stage']}`, not `mpsctl {phase_stage}`"
        )
    changed = recipe_diff(_without_loader_keys(saved["recipe"]),
                          _without_loader_keys(recipe_to_dict(recipe)), RESUME_KEYS)
    if changed:
        raise RecipeError(
            f"--resume: the recipe changed {', '.join(changed)} since {path} was written "
            "(restore them, or start a new run without --resume)"
        )
    return saved


def run_search(
    recipe: Recipe,
    reporter: Reporter,
    resume: bool = False,
    prepare: Callable[[Supernet], None] | None = None,
) -> dict[str, Any]:
    """Run warm-up and search; write ``<run_dir>/search.pt``; return the summary.

    ``prepare`` edits a new supernet before its training (the sweep's pruned baseline
    freezes its choices there); it is not applied when resuming an existing search."""
    saved = load_resume_state(recipe, "search") if resume else None
    seed_everything(recipe.seed)
    ctx, device = distributed.init(recipe.device)
    reporter.quiet = reporter.quiet or not ctx.is_main
    bundle = build.datasets(recipe)
    model = build.float_model(recipe, load_weights=saved is None)
    build.check_classes(model, bundle.input_shape, bundle.num_classes)
    # the targets' precision rules need the supernet's layers: check them before training
    build.check_target_precisions(recipe, build.supernet_for(recipe, model,
                                                             bundle.input_shape))
    bounds = budgets.check_before_training(recipe, model, bundle.input_shape)
    loaders = build.loaders(recipe, bundle)
    for warning in build.input_range_warnings(recipe, bundle):
        reporter.log(f"warning: {warning}")
    log = RunLog(recipe.run_dir, recipe.log.tensorboard, enabled=ctx.is_main)
    if ctx.is_main:
        state.ensure_writable(recipe.run_dir)
    last = recipe.run_dir / "last.pt"
    stop = StopFlag()
    with sigint_stops(stop):
        example = build.example_input(bundle.input_shape)
        if saved is None or saved["phase"] == "warmup":
            model.to(device)
            use_channels_last(recipe.channels_last, model, example, device)
            _warmup(recipe, model, loaders, device, reporter, stop, saved, last, log)
            fp32 = {**evaluate(model, loaders.val, device),
                    **common.test_metrics(model, loaders.test, device)}
            reporter.log(f"fp32 model: validation accuracy {fp32['accuracy']:.4f}")
            net = build.supernet_for(recipe, model.cpu(), bundle.input_shape)
            for line in summary.deployment_lines(summary.deployment(net, example)):
                reporter.log(line)
            if prepare is not None:
                prepare(net)
            net = net.to(device)
            saved_search = None
        else:
            fp32 = saved["fp32"]
            net = build.supernet_for(recipe, model, bundle.input_shape)
            net.load_state_dict(saved["model_state"])
            net.to(device)
            saved_search = saved
            reporter.log(f"resuming the search at epoch {saved['epoch'] + 1}")
        if use_channels_last(recipe.channels_last, net, example, device):
            reporter.log("channels-last layout: on (set channels_last: false to turn it off)")
        history = _search(recipe, net, loaders, device, reporter, stop, saved_search, last,
                          bundle.input_shape, fp32, bounds, log)
    extra = {}
    if bounds:
        extra["projection"] = budgets.enforce(net, bounds, reporter)
        if extra["projection"]["changed"]:
            projected = evaluate(net, loaders.val, device)
            extra.update(accuracy=projected["accuracy"], val_loss=projected["loss"])
            reporter.log(f"projected model: validation accuracy {projected['accuracy']:.4f}")
    in_sync = distributed.ranks_agree(net.arch_parameters())
    extra.update(common.test_metrics(net, loaders.test, device))
    if ctx.enabled:
        extra.update(ranks=ctx.world_size, ranks_in_sync=in_sync)
    result = _finish(recipe, net.cpu(), bundle.input_shape, fp32, history, extra, bounds)
    x, _ = next(iter(loaders.val), (None, None))
    warning = summary.constant_output_warning(net, x) if x is not None else None
    if warning:
        reporter.log(f"warning: {warning}")
        result["warnings"] = [warning]
    return result


def run_warmup(recipe: Recipe, reporter: Reporter, weights: Path) -> dict[str, Any]:
    """Only the fp32 warm-up: train ``warmup.epochs``, then save the float weights (a
    state_dict that ``model.weights`` can load) to ``weights``; returns the validation
    metrics. The sweep shares one warm-up between all its points this way."""
    seed_everything(recipe.seed)
    ctx, device = distributed.init(recipe.device)
    reporter.quiet = reporter.quiet or not ctx.is_main
    bundle = build.datasets(recipe)
    model = build.float_model(recipe)
    build.check_classes(model, bundle.input_shape, bundle.num_classes)
    loaders = build.loaders(recipe, bundle)
    if ctx.is_main:
        state.ensure_writable(recipe.run_dir)
    stop = StopFlag()
    with sigint_stops(stop):
        model.to(device)
        use_channels_last(recipe.channels_last, model, build.example_input(bundle.input_shape),
                          device)
        log = RunLog(recipe.run_dir, recipe.log.tensorboard, enabled=ctx.is_main)
        _warmup(recipe, model, loaders, device, reporter, stop, None, recipe.run_dir / "last.pt",
                log)
    fp32 = {**evaluate(model, loaders.val, device),
            **common.test_metrics(model, loaders.test, device)}
    reporter.log(f"fp32 model: validation accuracy {fp32['accuracy']:.4f}")
    # A warm-up checkpoint (no supernet: stage commands refuse it) whose "model" entry is
    # the plain state_dict that model.weights loads.
    state.write(weights, {
        "stage": "search", "phase": "warmup", "recipe": recipe_to_dict(recipe), "fp32": fp32,
        "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    })
    return fp32


def _warmup(recipe, model, loaders, device, reporter, stop, saved, last, log) -> None:
    epochs = recipe.warmup.epochs
    opt, schedule = optimizer_for(model.parameters(), recipe.warmup.optimizer, epochs,
                                  len(loaders.train))

    def after_epoch(epoch: int, stats) -> dict[str, Any]:
        reporter.log(f"warm-up epoch {epoch + 1}/{epochs}: loss {stats.loss:.4f}, "
                     f"train accuracy {stats.accuracy:.4f}")
        return {"epoch": epoch + 1, "train_loss": stats.loss, "train_accuracy": stats.accuracy}

    loop = EpochLoop(
        "warmup", distributed.wrap(model, device), loaders.train, [opt],
        [schedule] if schedule else [], device,
        reporter, epochs, save=lambda s: _save_warmup(recipe, model, s, last),
        after_epoch=after_epoch, run_log=log,
    )
    position = LoopPosition()
    if saved is not None:
        model.load_state_dict(saved["model_state"])
        position = loop.load(saved)
        reporter.log(f"resuming the warm-up at epoch {position.epoch + 1}")
    loop.run(position, stop)


def _save_warmup(recipe: Recipe, model, loop_state: dict, path: Path) -> None:
    data = {
        "stage": "search",
        "recipe": recipe_to_dict(recipe),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **loop_state,
    }
    state.write(path, data)


def _temperature(recipe: Recipe, epoch: int) -> float:
    t = recipe.search.temperature
    return temperature_at(epoch, t.start, t.decay_for(recipe.search.epochs), t.min)


def _search(recipe, net: Supernet, loaders, device, reporter, stop, saved, last, shape, fp32,
            bounds: dict[str, float], log):
    """Joint training of weights and architecture, evaluating the argmax model each epoch.
    With budgets, their strengths adapt every step (:class:`DualAscent`)."""
    s = recipe.search
    steps = len(loaders.train)
    opt_w, sched_w = optimizer_for(net.weight_parameters(), s.optimizer, s.epochs, steps)
    opt_a, sched_a = optimizer_for(net.arch_parameters(), s.arch_optimizer, s.epochs, steps)
    net.set_mode(s.temperature.mode)
    dual = None
    if bounds:
        dual = DualAscent(net, bounds, rate=rate_for(s.epochs), steps_per_epoch=steps,
                          reduce=lambda v: distributed.reduce_sums(v, device))
        if saved is not None and "budget" in saved:
            dual.load_state_dict(saved["budget"])

    def before_epoch(epoch: int) -> None:
        net.set_temperature(_temperature(recipe, epoch))

    def after_epoch(epoch: int, stats) -> dict[str, Any]:
        argmax = evaluate(net, loaders.val, device)
        soft = evaluate_soft(net, loaders.val, device)
        # the targets that run the argmax model change as its precisions do
        hard = summary.costs(net, summary.cost_names(s.objective_costs(), net), hard=True)
        temperature = _temperature(recipe, epoch)
        cost_text = ", ".join(f"{k} {format_cost(v)}" for k, v in hard.items())
        record = {
            "epoch": epoch + 1, "temperature": temperature, "train_loss": stats.loss,
            "train_accuracy": stats.accuracy, "soft_accuracy": soft["accuracy"],
            "accuracy": argmax["accuracy"], "val_loss": argmax["loss"], "cost": hard,
        }
        if dual is not None:
            usage = {b: hard[b] / bound for b, bound in bounds.items()}
            budget_text, record["budget"] = budgets.epoch_log(dual.strengths, usage,
                                                              dual.expected)
            cost_text += f"; {budget_text}"
        reporter.log(
            f"search epoch {epoch + 1}/{s.epochs}: T {temperature:.3f}, loss {stats.loss:.4f}, "
            f"soft acc {soft['accuracy']:.4f}, argmax acc {argmax['accuracy']:.4f}, {cost_text}"
        )
        return record

    def save(loop_state: dict) -> None:
        data = state.payload("search", recipe, net, shape, fp32=fp32, **loop_state)
        state.write(last, data)

    loop = EpochLoop(
        "search", distributed.wrap(net, device), loaders.train, [opt_w, opt_a],
        [x for x in (sched_w, sched_a) if x is not None], device, reporter, s.epochs,
        save=save, after_epoch=after_epoch, before_epoch=before_epoch,
        cost_strengths=dict(s.cost), cost_fn=net.cost,
        penalty=dual.penalty if dual is not None else None,
        extra_state=(lambda: {"budget": dual.state_dict()}) if dual is not None else dict,
        run_log=log, optimizer_names=("weights", "arch"), log_model=net,
    )
    position = loop.load(saved) if saved is not None else LoopPosition()
    return loop.run(position, stop)


def _finish(
    recipe: Recipe, net: Supernet, shape, fp32: dict, history: list, extra: dict,
    bounds: dict[str, float],
) -> dict[str, Any]:
    run_dir = recipe.run_dir
    names = summary.cost_names(recipe.search.objective_costs(), net)
    hard = summary.costs(net, names, hard=True)
    metrics = {"fp32_accuracy": fp32["accuracy"], **(history[-1] if history else {}), **extra}
    if "test_accuracy" in fp32:
        metrics["fp32_test_accuracy"] = fp32["test_accuracy"]
    metrics.pop("cost", None)
    metrics.pop("budget", None)
    fp32_bits = 32 * sum(layer.weight.numel() for _, layer in net.layers())
    lineage = [
        {"stage": "fp32", "accuracy": fp32["accuracy"],
         "test_accuracy": fp32.get("test_accuracy"), "params_bit": float(fp32_bits)},
        {"stage": "search", "accuracy": metrics.get("accuracy"),
         "test_accuracy": metrics.get("test_accuracy"), "params_bit": hard["params_bit"]},
    ]
    data = state.payload("search", recipe, net, shape, metrics=metrics, history=history,
                         cost=hard, lineage=lineage, fp32=fp32,
                         temperature=_temperature(recipe, len(history)), budgets=bounds)
    path = state.write(run_dir / "search.pt", data)
    if distributed.is_main():
        dump_recipe_yaml(recipe, run_dir / "recipe.yaml")
    result = {"checkpoint": str(path), "metrics": metrics, "cost": hard,
              "layers": summary.layer_rows(net)}
    if bounds:
        result["budget"] = budgets.slack(hard, bounds)
    return result


@torch.no_grad()
def evaluate_soft(net: Supernet, loader, device: torch.device) -> dict[str, float]:
    """Accuracy of the soft supernet (θ mixture, no Gumbel noise) on ``loader``.

    Only the choices and quantizers run in training mode (that is what makes them mix);
    everything else (dropout above all) is in eval mode, as for any measured accuracy.
    """
    mode = next((c.mode for _, c in net.choices()), "softmax")
    net.set_mode("softmax")
    net.soft_eval()
    correct = seen = 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            correct += int((net(x).argmax(1) == y).sum())
            seen += y.numel()
    net.set_mode(mode)
    net.eval()
    return {"accuracy": correct / max(seen, 1)}
