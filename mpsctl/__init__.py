"""mpsctl: mixed-precision search, export, fine-tuning and NE16 refinement for CNNs.

The names below are the public Python API (the README has one example each). They are
loaded on first use, so ``import mpsctl`` stays cheap (no torch) and the command line
starts fast; ``from mpsctl import build_supernet`` imports what that name needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mpsctl.version import __version__

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time these load lazily
    from mpsctl.cost.base import CostModel, LayerGeometry
    from mpsctl.deploy import export_onnx
    from mpsctl.errors import UserError
    from mpsctl.recipe.loading import load_recipe
    from mpsctl.recipe.schema import Recipe
    from mpsctl.resources import bundled_path
    from mpsctl.search.convert import build_supernet
    from mpsctl.search.space import LayerOverride, SearchSpace
    from mpsctl.search.supernet import Supernet
    from mpsctl.targets.refine import refine_supernet
    from mpsctl.targets.registry import (
        available_cost_models,
        build_cost_model,
        register_cost,
    )

#: Public name → the module that defines it.
_HOMES = {
    # build and search
    "SearchSpace": "mpsctl.search.space",
    "LayerOverride": "mpsctl.search.space",
    "build_supernet": "mpsctl.search.convert",
    "Supernet": "mpsctl.search.supernet",
    # costs and hardware targets
    "CostModel": "mpsctl.cost.base",
    "LayerGeometry": "mpsctl.cost.base",
    "available_cost_models": "mpsctl.targets.registry",
    "build_cost_model": "mpsctl.targets.registry",
    "register_cost": "mpsctl.targets.registry",
    "refine_supernet": "mpsctl.targets.refine",
    # deployment
    "export_onnx": "mpsctl.deploy",
    # recipes and shipped files
    "Recipe": "mpsctl.recipe.schema",
    "load_recipe": "mpsctl.recipe.loading",
    "bundled_path": "mpsctl.resources",
    # errors
    "UserError": "mpsctl.errors",
}

__all__ = [
    "CostModel",
    "LayerGeometry",
    "LayerOverride",
    "Recipe",
    "SearchSpace",
    "Supernet",
    "UserError",
    "__version__",
    "available_cost_models",
    "build_cost_model",
    "build_supernet",
    "bundled_path",
    "export_onnx",
    "load",
    "load_recipe",
    "refine_supernet",
    "register_cost",
]


def load(path: str) -> Supernet:
    """Rebuild the runnable model of any stage checkpoint, in eval mode."""
    from mpsctl.checkpoint.state import load_model

    return load_model(path)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'mpsctl' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
