"""What `mpsctl ls` lists: registered models, datasets, cost models and shipped recipes."""

from __future__ import annotations

from pathlib import Path

from mpsctl.errors import UserError

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
KINDS = ("models", "datasets", "costs", "recipes")


def listing(what: str, recipe: str | None = None) -> list[str]:
    """The names of ``what``; for costs, ``recipe`` adds its YAML-only targets' costs."""
    if recipe is not None and what != "costs":
        raise UserError(f"ls --recipe: only 'ls costs' reads a recipe, not 'ls {what}'")
    if what == "models":
        from mpsctl.models.registry import available_models

        return available_models() + ["torchvision:<name>", "package.module:attr"]
    if what == "datasets":
        from mpsctl.data import available_datasets

        return available_datasets()
    if what == "costs":
        from mpsctl.targets import available_cost_models

        names = available_cost_models()
        if recipe is not None:
            from mpsctl.recipe import load_recipe
            from mpsctl.targets.catalog import yaml_cost_models

            targets = load_recipe(recipe).search.targets
            names += [n for n in yaml_cost_models(targets) if n not in names]
        return names
    if what == "recipes":
        return sorted(str(p.relative_to(RECIPES_DIR.parent)) for p in RECIPES_DIR.glob("*.yaml"))
    raise UserError(f"ls: unknown kind '{what}' (one of: {', '.join(KINDS)})")
