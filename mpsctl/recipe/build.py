"""From a validated recipe to the objects a stage works with: model, data, search space."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mpsctl.cost.base import CostModel
from mpsctl.data import DataBundle, build_datasets, make_loaders
from mpsctl.errors import UserError
from mpsctl.models.registry import build_model
from mpsctl.recipe.schema import Recipe
from mpsctl.search.convert import build_supernet
from mpsctl.search.space import LayerOverride, SearchSpace
from mpsctl.search.supernet import Supernet
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
    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader


def loaders(recipe: Recipe, bundle: DataBundle) -> Loaders:
    """Train/val loaders; under torchrun each process reads its own shard."""
    ctx = distributed.context()
    batch = recipe.data.batch_size
    if recipe.data.global_batch_size is not None:
        if recipe.data.global_batch_size % ctx.world_size:
            raise UserError(
                f"data.global_batch_size: {recipe.data.global_batch_size} is not divisible by "
                f"the {ctx.world_size} processes (pick a multiple)"
            )
        batch = recipe.data.global_batch_size // ctx.world_size
    train, val = make_loaders(bundle, batch, recipe.seed, recipe.data.num_workers, ctx.enabled)
    return Loaders(train, val)


def example_input(input_shape: tuple[int, ...]) -> torch.Tensor:
    return torch.zeros((2, *input_shape))


def check_classes(model: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
    """A model whose output width differs from the data's classes fails here, not mid-epoch."""
    model.eval()
    with torch.no_grad():
        out = model(example_input(input_shape))
    if out.dim() != 2 or out.shape[1] != num_classes:
        raise UserError(
            f"model.num_classes: the model outputs shape {tuple(out.shape)} but the data has "
            f"{num_classes} classes (set model.num_classes: {num_classes})"
        )


def constants_path(recipe: Recipe, cost: str) -> str | None:
    """The constants file a recipe gives the cost model ``cost`` (None: its shipped ones)."""
    return recipe.search.ne16_target if cost == "ne16" else None


def cost_models(recipe: Recipe) -> dict[str, CostModel]:
    """The recipe's cost models, and NE16 (which reports use), with the recipe's constants."""
    names = dict.fromkeys([*recipe.search.cost, "ne16"])
    return {name: build_cost_model(name, constants_path(recipe, name)) for name in names}


def supernet_for(recipe: Recipe, model: nn.Module, input_shape: tuple[int, ...]) -> Supernet:
    """The supernet of ``model``, with the recipe's quantizer path (``search.compile``) and
    cost models (``search.ne16_target``) built into it."""
    return build_supernet(model, example_input(input_shape), search_space(recipe),
                          cost_models(recipe))
