"""Recipes: the YAML schema of a run, its includes and overrides, and path-precise errors."""

from mpsctl.recipe.loading import (
    CONFIGS_DIR,
    apply_overrides,
    deep_merge,
    dump_recipe_yaml,
    load_recipe,
    recipe_diff,
    recipe_from_dict,
    recipe_to_dict,
)
from mpsctl.recipe.schema import (
    DataConfig,
    FinetuneConfig,
    LayerOverride,
    ModelConfig,
    OptimizerConfig,
    Recipe,
    ScheduleConfig,
    SearchConfig,
    TemperatureConfig,
    WarmupConfig,
)

__all__ = [
    "CONFIGS_DIR",
    "DataConfig",
    "FinetuneConfig",
    "LayerOverride",
    "ModelConfig",
    "OptimizerConfig",
    "Recipe",
    "ScheduleConfig",
    "SearchConfig",
    "TemperatureConfig",
    "WarmupConfig",
    "apply_overrides",
    "deep_merge",
    "dump_recipe_yaml",
    "load_recipe",
    "recipe_diff",
    "recipe_from_dict",
    "recipe_to_dict",
]
