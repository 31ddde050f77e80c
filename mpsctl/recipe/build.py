"""From a validated recipe to the objects a stage works with: model, data, search space."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mpsctl.cost.base import CostModel
from mpsctl.data import DataBundle, build_datasets, make_eval_loader, make_loaders
from mpsctl.errors import RecipeError, UserError
from mpsctl.models.registry import build_model
from mpsctl.recipe.schema import Recipe
from mpsctl.search.convert import build_supernet
from mpsctl.search.space import LayerOverride, SearchSpace
from mpsctl.search.supernet import Supernet
from mpsctl.targets import catalog
from mpsctl.targets.registry import build_cost_model
from mpsctl.training import distributed


def search_space(recipe: Recipe) -> SearchSpace:
    """The core's view of ``recipe.search`` (plain data, no YAML)."""
    s = recipe.search
    overrides = tuple(
        LayerOverride(
            pattern=pattern,
            weight_bits=tuple(o.weight_bits) if o.weight_bits is not None else None,
            act_bits=tuple(o.act_bits) if o.act_bits is not None else None,
            weight_quantizer=o.weight_quantizer,
            act_quantizer=o.act_quantizer,
            options=dict(o.options),
        )
        for pattern, o in s.layers.items()
    )
    return SearchSpace(
        weight_bits=tuple(s.weight_bits),
        act_bits=tuple(s.act_bits),
        per_channel=s.type == "per_channel",
        weight_quantizer=s.weight_quantizer,
        act_quantizer=s.act_quantizer,
        exclude=tuple(s.exclude),
        overrides=overrides,
        min_channels=s.min_channels,
        compensate=s.compensate,
        input_clip=s.input_clip,
        act_clip=s.act_clip,
        input_signed=s.input_signed,
        compile=s.compile,
    )


def float_model(recipe: Recipe, load_weights: bool = True) -> nn.Module:
    """The user's float model; ``model.weights`` is a state_dict file, or for
    ``torchvision:`` models a weight name such as ``DEFAULT`` (needs network access)."""
    kwargs = recipe.model.kwargs()
    weights = recipe.model.weights
    if weights is not None and _is_torchvision_weight_name(recipe.model.name, weights):
        if load_weights:
            kwargs["weights"] = weights
        weights = None
    return build_model(recipe.model.name, kwargs, weights if load_weights else None)


def _is_torchvision_weight_name(model: str, weights: str) -> bool:
    return model.startswith("torchvision:") and weights.replace("_", "").isalnum() and not (
        Path(weights).exists()
    )


def datasets(recipe: Recipe) -> DataBundle:
    return build_datasets(recipe.data.name, recipe.data.options(), recipe.seed)


@dataclass
class Loaders:
    """Training, validation (selection) and held-out test (reporting only) loaders."""

    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    test: torch.utils.data.DataLoader | None = None


def loaders(recipe: Recipe, bundle: DataBundle) -> Loaders:
    """Train/val/test loaders; under torchrun each process reads its own shard."""
    ctx = distributed.context()
    batch = recipe.data.batch_size
    if recipe.data.global_batch_size is not None:
        if recipe.data.global_batch_size % ctx.world_size:
            raise UserError(
                f"data.global_batch_size: {recipe.data.global_batch_size} is not divisible by "
                f"the {ctx.world_size} processes (pick a multiple)"
            )
        batch = recipe.data.global_batch_size // ctx.world_size
    workers = recipe.data.num_workers
    train, val = make_loaders(bundle, batch, recipe.seed, workers, ctx.enabled)
    test = None
    if bundle.test is not None:
        test = make_eval_loader(bundle.test, batch, workers, ctx.enabled)
    return Loaders(train, val, test)


def eval_loader(recipe: Recipe, dataset) -> torch.utils.data.DataLoader:
    """An unshuffled loader over ``dataset`` with the recipe's batch size and workers."""

    ctx = distributed.context()
    return make_eval_loader(dataset, recipe.data.batch_size, recipe.data.num_workers, ctx.enabled)


def example_input(input_shape: tuple[int, ...]) -> torch.Tensor:
    return torch.zeros((2, *input_shape))


def check_classes(model: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
    """A model that cannot take the data's samples, or whose output width differs from the
    data's classes, fails here with one line, not mid-epoch."""
    model.eval()
    try:
        with torch.no_grad():
            out = model(example_input(input_shape))
    except Exception as exc:  # shape errors surface as RuntimeError, ValueError, IndexError...
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise UserError(
            f"model: cannot take the data's samples of shape {list(input_shape)} "
            f"({type(exc).__name__}: {reason}); make the model's input size match the data "
            "(e.g. model.in_channels) or fix the data (data.shape for fake data)"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise UserError(
            f"model: returns {type(out).__name__}, not a tensor of class scores; make "
            "forward() return the logits [batch, num_classes]"
        )
    if out.dim() != 2 or out.shape[1] != num_classes:
        raise UserError(
            f"model.num_classes: the model outputs shape {tuple(out.shape)} but the data has "
            f"{num_classes} classes (set model.num_classes: {num_classes})"
        )


def input_range_warnings(recipe: Recipe, bundle: DataBundle, samples: int = 256) -> list[str]:
    """Warnings when the training inputs fall outside what the input quantizer keeps.

    The network input is quantized on ``[0, input_clip]`` (``[-clip, clip]`` when signed);
    the clip is learned but starts at ``input_clip``. Up to ``samples`` evenly spaced
    training samples are read (never the loader, whose shuffle order must not move).
    """
    s = recipe.search
    n = len(bundle.train)
    picks = sorted({round(i * (n - 1) / max(samples - 1, 1)) for i in range(min(samples, n))})
    values = torch.stack([bundle.train[i][0] for i in picks])
    low, high = float(values.min()), float(values.max())
    found = []
    if low < 0 and not s.input_signed:
        found.append(
            f"search.input_signed: the training inputs go down to {low:.3g} but the input "
            "quantizer is unsigned and clips them to 0; set search.input_signed: true (and "
            f"search.input_clip near {max(abs(low), high):.3g})"
        )
    elif max(abs(low), high) > 4 * s.input_clip:
        found.append(
            f"search.input_clip: the training inputs reach {max(abs(low), high):.3g} but the "
            f"input quantizer starts clipping at {s.input_clip:g}; set search.input_clip near "
            "their range, or normalise the data"
        )
    return found


def constants_path(recipe: Recipe, cost: str) -> str | None:
    """The constants file a recipe gives the cost model ``cost`` (``search.targets`` of its
    target; None: the shipped one)."""
    target = catalog.target_of_cost(cost, recipe.search.targets)
    return recipe.search.targets.get(target.name) if target is not None else None


def cost_models(recipe: Recipe) -> dict[str, CostModel]:
    """The recipe's cost models and every hardware target's (reports list those that run
    the model), with the recipe's constants files; its YAML-only targets' too."""
    custom = catalog.yaml_cost_models(recipe.search.targets)
    names = dict.fromkeys([*recipe.search.cost, *catalog.builtin_target_costs()])
    built = {name: build_cost_model(name, constants_path(recipe, name))
             for name in names if name not in custom}
    return {**built, **custom}


def supernet_for(recipe: Recipe, model: nn.Module, input_shape: tuple[int, ...]) -> Supernet:
    """The supernet of ``model``, with the recipe's quantizer path (``search.compile``) and
    cost models (``search.cost``, every target's, with ``search.targets`` files) built in."""
    return build_supernet(model, example_input(input_shape), search_space(recipe),
                          cost_models(recipe))


def check_target_precisions(recipe: Recipe, net: Supernet) -> None:
    """Refuse, before any training, a search whose candidates a target cannot run: each
    cost model of the recipe checks every layer's weight and input precisions."""
    found: list[str] = []
    for cost in recipe.search.cost:
        model = net.cost_model(cost)
        for name, layer in net.layers():
            for act in layer.input_slot.bits:
                for text in model.precision_problems(layer.geometry, int(act),
                                                     [int(b) for b in layer.choice.bits]):
                    line = f"search.cost.{cost}: layer '{name}': {text}"
                    if line not in found:
                        found.append(line)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise RecipeError(f"{found[0]}{more}: change search.weight_bits/act_bits, or the "
                          "layer's precisions in search.layers")

