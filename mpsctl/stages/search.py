"""`mpsctl search`: optional fp32 warm-up, then the supernet search, then `search.pt`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mpsctl.console import Reporter
from mpsctl.recipe import Recipe, dump_recipe_yaml
from mpsctl.recipe.schema import OptimizerConfig
from mpsctl.search.supernet import Supernet
from mpsctl.stages import build, state, summary
from mpsctl.train import (
    StepSchedule,
    evaluate,
    make_optimizer,
    make_schedule,
    temperature_at,
    train_epoch,
)


def optimizer_for(params, config: OptimizerConfig, epochs: int, steps: int):
    opt = make_optimizer(params, config.torch_name, config.lr, config.weight_decay,
                         config.momentum)
    schedule = None
    if config.schedule is not None:
        s = config.schedule
        schedule = make_schedule(opt, s.name, epochs, steps, s.step_size, s.gamma, s.max_lr)
    return opt, schedule


def _warmup(recipe: Recipe, model, loaders, device, reporter: Reporter) -> None:
    epochs = recipe.warmup.epochs
    opt, schedule = optimizer_for(model.parameters(), recipe.warmup.optimizer, epochs,
                                  len(loaders.train))
    for epoch in range(epochs):
        with reporter.progress(f"warm-up {epoch + 1}/{epochs}", len(loaders.train)) as advance:
            stats = train_epoch(model, loaders.train, [opt], device, epoch,
                                schedules=[schedule] if schedule else None, on_step=advance)
        reporter.log(f"warm-up epoch {epoch + 1}/{epochs}: loss {stats.loss:.4f}, "
                     f"train accuracy {stats.accuracy:.4f}")


def dry_run(recipe: Recipe) -> dict[str, Any]:
    """The supernet's layers and costs at initialisation, without data or training."""
    bundle = build.datasets(recipe)
    model = build.float_model(recipe)
    net = build.supernet_for(recipe, model, bundle.input_shape)
    names = summary.cost_names(recipe.search.cost)
    net.train()
    return {
        "layers": [
            {k: row[k] for k in ("name", "type", "w_bits", "a_bits", "in_channels",
                                 "out_channels")}
            for row in summary.layer_rows(net, candidates=True)
        ],
        "cost": summary.costs(net, names, hard=False),
    }


def run_search(recipe: Recipe, reporter: Reporter) -> dict[str, Any]:
    """Run warm-up and search; write ``<run_dir>/search.pt``; return the summary."""
    build.seed_everything(recipe.seed)
    device = build.resolve_device(recipe.device)
    bundle = build.datasets(recipe)
    model = build.float_model(recipe)
    build.check_classes(model, bundle.input_shape, bundle.num_classes)
    loaders = build.loaders(recipe, bundle)
    model.to(device)
    if recipe.warmup.epochs:
        _warmup(recipe, model, loaders, device, reporter)
    fp32 = evaluate(model, loaders.val, device)
    reporter.log(f"fp32 model: validation accuracy {fp32['accuracy']:.4f}")

    net = build.supernet_for(recipe, model.cpu(), bundle.input_shape).to(device)
    history = search_epochs(recipe, net, loaders, device, reporter)

    run_dir = recipe.run_dir
    names = summary.cost_names(recipe.search.cost, net)
    hard = summary.costs(net, names, hard=True)
    metrics = {"fp32_accuracy": fp32["accuracy"], **(history[-1] if history else {})}
    metrics.pop("cost", None)
    fp32_bits = 32 * sum(layer.weight.numel() for _, layer in net.layers())
    lineage = [
        {"stage": "fp32", "accuracy": fp32["accuracy"], "params_bit": float(fp32_bits)},
        {"stage": "search", "accuracy": metrics.get("accuracy"),
         "params_bit": hard["params_bit"]},
    ]
    data = state.payload("search", recipe, net, bundle.input_shape,
                         metrics=metrics, history=history, cost=hard, lineage=lineage,
                         temperature=_temperature(recipe, len(history)))
    path = state.write(run_dir / "search.pt", data)
    dump_recipe_yaml(recipe, run_dir / "recipe.yaml")
    return {"checkpoint": str(path), "metrics": metrics, "cost": hard,
            "layers": summary.layer_rows(net)}


def _temperature(recipe: Recipe, epoch: int) -> float:
    t = recipe.search.temperature
    return temperature_at(epoch, t.start, t.decay, t.min)


def search_epochs(
    recipe: Recipe, net: Supernet, loaders, device: torch.device, reporter: Reporter
) -> list[dict[str, Any]]:
    """Joint training of weights and architecture, evaluating the argmax model each epoch."""
    s = recipe.search
    steps = len(loaders.train)
    opt_w, sched_w = optimizer_for(net.weight_parameters(), s.optimizer, s.epochs, steps)
    opt_a, sched_a = optimizer_for(net.arch_parameters(), s.arch_optimizer, s.epochs, steps)
    schedules: list[StepSchedule] = [x for x in (sched_w, sched_a) if x is not None]
    net.set_mode(s.temperature.mode)
    names = summary.cost_names(s.cost, net)
    history = []
    for epoch in range(s.epochs):
        temperature = _temperature(recipe, epoch)
        net.set_temperature(temperature)
        with reporter.progress(f"search {epoch + 1}/{s.epochs}", steps) as advance:
            stats = train_epoch(net, loaders.train, [opt_w, opt_a], device, epoch,
                                s.cost, net.cost, schedules, advance)
        argmax = evaluate(net, loaders.val, device)
        soft = evaluate_soft(net, loaders.val, device)
        hard = summary.costs(net, names, hard=True)
        row = {
            "epoch": epoch + 1,
            "temperature": temperature,
            "train_loss": stats.loss,
            "train_accuracy": stats.accuracy,
            "soft_accuracy": soft["accuracy"],
            "accuracy": argmax["accuracy"],
            "val_loss": argmax["loss"],
            "cost": hard,
        }
        history.append(row)
        cost_text = ", ".join(f"{k} {v:,.0f}" for k, v in hard.items())
        reporter.log(
            f"search epoch {epoch + 1}/{s.epochs}: T {temperature:.3f}, loss {stats.loss:.4f}, "
            f"soft acc {soft['accuracy']:.4f}, argmax acc {argmax['accuracy']:.4f}, {cost_text}"
        )
    return history


@torch.no_grad()
def evaluate_soft(net: Supernet, loader, device: torch.device) -> dict[str, float]:
    """Accuracy of the soft supernet (θ mixture, no Gumbel noise) on ``loader``."""
    mode = next((c.mode for _, c in net.choices()), "softmax")
    net.set_mode("softmax")
    net.train()
    correct = seen = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        correct += int((net(x).argmax(1) == y).sum())
        seen += y.numel()
    net.set_mode(mode)
    net.eval()
    return {"accuracy": correct / max(seen, 1)}


def output_path(recipe: Recipe, stage: str) -> Path:
    return recipe.run_dir / f"{stage}.pt"
