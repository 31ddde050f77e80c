"""`mpsctl search`: optional fp32 warm-up, then the supernet search, then `search.pt`.

Both phases save `last.pt` after every epoch (and on Ctrl-C); `--resume` continues from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mpsctl.checkpoint import state
from mpsctl.console import Reporter
from mpsctl.errors import CheckpointError, RecipeError
from mpsctl.recipe import Recipe, build, dump_recipe_yaml, recipe_diff, recipe_to_dict
from mpsctl.search.choice import PrecisionChoice
from mpsctl.search.layers import ActivationSlot, SearchableLayer
from mpsctl.search.supernet import Supernet
from mpsctl.stages import summary
from mpsctl.training import distributed
from mpsctl.training.device import seed_everything
from mpsctl.training.epoch import evaluate
from mpsctl.training.layout import use_channels_last
from mpsctl.training.loop import EpochLoop, LoopPosition, StopFlag, sigint_stops
from mpsctl.training.optim import optimizer_for, temperature_at

#: Recipe keys that, changed, make a saved run impossible to continue.
RESUME_KEYS = (
    "model", "data.name", "data.shape", "data.num_classes", "data.image_size",
    "search.type", "search.weight_bits", "search.act_bits", "search.layers", "search.exclude",
    "search.weight_quantizer", "search.act_quantizer", "search.min_channels",
    "search.compensate", "search.input_signed",
)


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
    changed = recipe_diff(saved["recipe"], recipe_to_dict(recipe), RESUME_KEYS)
    if changed:
        raise RecipeError(
            f"--resume: the recipe changed {', '.join(changed)} since {path} was written "
            "(restore them, or start a new run without --resume)"
        )
    return saved


def run_search(recipe: Recipe, reporter: Reporter, resume: bool = False) -> dict[str, Any]:
    """Run warm-up and search; write ``<run_dir>/search.pt``; return the summary."""
    saved = load_resume_state(recipe, "search") if resume else None
    seed_everything(recipe.seed)
    ctx, device = distributed.init(recipe.device)
    reporter.quiet = reporter.quiet or not ctx.is_main
    bundle = build.datasets(recipe)
    model = build.float_model(recipe, load_weights=saved is None)
    build.check_classes(model, bundle.input_shape, bundle.num_classes)
    loaders = build.loaders(recipe, bundle)
    if ctx.is_main:
        state.ensure_writable(recipe.run_dir)
    last = recipe.run_dir / "last.pt"
    stop = StopFlag()
    with sigint_stops(stop):
        example = build.example_input(bundle.input_shape)
        if saved is None or saved["phase"] == "warmup":
            model.to(device)
            use_channels_last(recipe.channels_last, model, example, device)
            _warmup(recipe, model, loaders, device, reporter, stop, saved, last)
            fp32 = evaluate(model, loaders.val, device)
            reporter.log(f"fp32 model: validation accuracy {fp32['accuracy']:.4f}")
            net = build.supernet_for(recipe, model.cpu(), bundle.input_shape).to(device)
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
                          bundle.input_shape, fp32)
    in_sync = distributed.ranks_agree(net.arch_parameters())
    return _finish(recipe, net.cpu(), bundle.input_shape, fp32, history,
                   {"ranks": ctx.world_size, "ranks_in_sync": in_sync} if ctx.enabled else {})


def _warmup(recipe, model, loaders, device, reporter, stop, saved, last) -> None:
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
        after_epoch=after_epoch,
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


def _search(recipe, net: Supernet, loaders, device, reporter, stop, saved, last, shape, fp32):
    """Joint training of weights and architecture, evaluating the argmax model each epoch."""
    s = recipe.search
    steps = len(loaders.train)
    opt_w, sched_w = optimizer_for(net.weight_parameters(), s.optimizer, s.epochs, steps)
    opt_a, sched_a = optimizer_for(net.arch_parameters(), s.arch_optimizer, s.epochs, steps)
    net.set_mode(s.temperature.mode)
    names = summary.cost_names(s.cost, net)

    def before_epoch(epoch: int) -> None:
        net.set_temperature(_temperature(recipe, epoch))

    def after_epoch(epoch: int, stats) -> dict[str, Any]:
        argmax = evaluate(net, loaders.val, device)
        soft = evaluate_soft(net, loaders.val, device)
        hard = summary.costs(net, names, hard=True)
        temperature = _temperature(recipe, epoch)
        cost_text = ", ".join(f"{k} {v:,.0f}" for k, v in hard.items())
        reporter.log(
            f"search epoch {epoch + 1}/{s.epochs}: T {temperature:.3f}, loss {stats.loss:.4f}, "
            f"soft acc {soft['accuracy']:.4f}, argmax acc {argmax['accuracy']:.4f}, {cost_text}"
        )
        return {
            "epoch": epoch + 1, "temperature": temperature, "train_loss": stats.loss,
            "train_accuracy": stats.accuracy, "soft_accuracy": soft["accuracy"],
            "accuracy": argmax["accuracy"], "val_loss": argmax["loss"], "cost": hard,
        }

    def save(loop_state: dict) -> None:
        data = state.payload("search", recipe, net, shape, fp32=fp32, **loop_state)
        state.write(last, data)

    loop = EpochLoop(
        "search", distributed.wrap(net, device), loaders.train, [opt_w, opt_a],
        [x for x in (sched_w, sched_a) if x is not None], device, reporter, s.epochs,
        save=save, after_epoch=after_epoch, before_epoch=before_epoch,
        cost_strengths=dict(s.cost), cost_fn=net.cost,
    )
    position = loop.load(saved) if saved is not None else LoopPosition()
    return loop.run(position, stop)


def _finish(
    recipe: Recipe, net: Supernet, shape, fp32: dict, history: list, extra: dict
) -> dict[str, Any]:
    run_dir = recipe.run_dir
    names = summary.cost_names(recipe.search.cost, net)
    hard = summary.costs(net, names, hard=True)
    metrics = {"fp32_accuracy": fp32["accuracy"], **(history[-1] if history else {}), **extra}
    metrics.pop("cost", None)
    fp32_bits = 32 * sum(layer.weight.numel() for _, layer in net.layers())
    lineage = [
        {"stage": "fp32", "accuracy": fp32["accuracy"], "params_bit": float(fp32_bits)},
        {"stage": "search", "accuracy": metrics.get("accuracy"),
         "params_bit": hard["params_bit"]},
    ]
    data = state.payload("search", recipe, net, shape, metrics=metrics, history=history,
                         cost=hard, lineage=lineage, fp32=fp32,
                         temperature=_temperature(recipe, len(history)))
    path = state.write(run_dir / "search.pt", data)
    if distributed.is_main():
        dump_recipe_yaml(recipe, run_dir / "recipe.yaml")
    return {"checkpoint": str(path), "metrics": metrics, "cost": hard,
            "layers": summary.layer_rows(net)}


@torch.no_grad()
def evaluate_soft(net: Supernet, loader, device: torch.device) -> dict[str, float]:
    """Accuracy of the soft supernet (θ mixture, no Gumbel noise) on ``loader``.

    Only the choices and quantizers run in training mode (that is what makes them mix);
    everything else (dropout above all) is in eval mode, as for any measured accuracy.
    """
    mode = next((c.mode for _, c in net.choices()), "softmax")
    net.set_mode("softmax")
    net.eval()
    for module in net.modules():
        if isinstance(module, PrecisionChoice | ActivationSlot | SearchableLayer):
            module.train()
    correct = seen = 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            correct += int((net(x).argmax(1) == y).sum())
            seen += y.numel()
    net.set_mode(mode)
    net.eval()
    return {"accuracy": correct / max(seen, 1)}
