"""What `mpsctl ls` lists (registered models, datasets, cost models, shipped recipes and
configs) and what `mpsctl cp` copies out of the package."""

from __future__ import annotations

import os
from pathlib import Path

from mpsctl.errors import UserError
from mpsctl.resources import bundled_names, bundled_path

KINDS = ("models", "datasets", "costs", "recipes", "configs")


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
    if what in ("recipes", "configs"):
        return bundled_names(what)
    raise UserError(f"ls: unknown kind '{what}' (one of: {', '.join(KINDS)})")


def copy_bundled(name: str, dest: str | None = None, force: bool = False) -> Path:
    """Copy a shipped recipe or config to ``dest`` (default: the current folder) to edit.

    A ``dest`` that is a folder (existing, or written with a trailing ``/``) receives the
    file under its own name; a name without a suffix gets ``.yaml``. An existing file is
    kept unless ``force``; the copy is written to a temporary file and renamed, so an
    interrupted copy leaves nothing half-written.
    """
    source = bundled_path(name)
    target = Path(dest).expanduser() if dest else Path(source.name)
    if (dest and dest.endswith(("/", os.sep))) or target.is_dir():
        target = target / source.name
    elif not target.suffix:
        target = target.with_suffix(".yaml")
    if target.exists() and not force:
        raise UserError(f"cp: {target} already exists (pass --force to overwrite it)")
    if not target.parent.is_dir():
        raise UserError(f"cp: folder {target.parent} does not exist (create it first)")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "xb") as out:  # created with the user's usual permissions
            out.write(source.read_bytes())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target
