"""What `mpsctl ls` lists: registered models, datasets, cost models and shipped recipes."""

from __future__ import annotations

from pathlib import Path

from mpsctl.errors import UserError

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
KINDS = ("models", "datasets", "costs", "recipes")


def listing(what: str) -> list[str]:
    if what == "models":
        from mpsctl.models.registry import available_models

        return available_models() + ["torchvision:<name>", "package.module:attr"]
    if what == "datasets":
        from mpsctl.data import available_datasets

        return available_datasets()
    if what == "costs":
        from mpsctl.targets import available_cost_models

        return available_cost_models()
    if what == "recipes":
        return sorted(str(p.relative_to(RECIPES_DIR.parent)) for p in RECIPES_DIR.glob("*.yaml"))
    raise UserError(f"ls: unknown kind '{what}' (one of: {', '.join(KINDS)})")
