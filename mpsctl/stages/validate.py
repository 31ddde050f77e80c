"""`mpsctl validate`: everything that can fail before training, checked without training.

The recipe schema first (every problem at once), then each thing a run builds before its
first step: the device, the model (registry name or import path, kwargs against the
factory's signature, the weights file), the data (name or import path, its options, its
files), that the model takes the data's samples and has one output per class, and that it
converts to a supernet with the recipe's search space on one example batch (which also
checks the ``search.exclude`` and ``search.layers`` patterns). A check whose inputs failed
is skipped, so every problem reported is a real one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from mpsctl.errors import RecipeError, UserError
from mpsctl.recipe import Recipe, build, load_recipe, recipe_to_dict
from mpsctl.training.device import resolve_device

_FIELD = re.compile(r"^([A-Za-z_][\w.]*(?:\[[^\]]*\])*(?:\.[\w]+)*|--\w+): (.*)$")


def problem(message: str) -> dict[str, str]:
    """``{"field", "message"}`` from a one-line ``field: what is wrong (fix)`` error."""
    match = _FIELD.match(message)
    if match:
        return {"field": match.group(1), "message": match.group(2)}
    return {"field": "", "message": message}


def run_validate(path: str, overrides: list[str]) -> dict[str, Any]:
    """``{"valid", "problems", "checks", "recipe"}``; ``recipe`` only when the schema passed."""
    try:
        recipe = load_recipe(path, overrides)
    except RecipeError as exc:
        found = getattr(exc, "problems", None) or [str(exc)]
        return {"valid": False, "problems": [problem(p) for p in found], "checks": ["recipe"]}
    checks = Checks()
    checks.run("device", lambda: resolve_device(recipe.device))
    model = checks.run("model", lambda: build.float_model(recipe))
    bundle = checks.run("data", lambda: build.datasets(recipe))
    if model is not None and bundle is not None:
        fits = checks.run("model fits data", lambda: _fits(recipe, model, bundle))
        if fits:
            checks.run("search space",
                       lambda: build.supernet_for(recipe, model, bundle.input_shape))
    warnings = build.input_range_warnings(recipe, bundle) if bundle is not None else []
    return {
        "valid": not checks.problems,
        "problems": checks.problems,
        "warnings": [problem(w) for w in warnings],
        "checks": ["recipe", *checks.passed],
        "recipe": recipe_to_dict(recipe),
        **({"data": _data_summary(bundle)} if bundle is not None else {}),
    }


class Checks:
    """Runs named checks, keeping each one's result and the problems of those that fail."""

    def __init__(self) -> None:
        self.problems: list[dict[str, str]] = []
        self.passed: list[str] = []

    def run(self, name: str, check: Callable[[], Any]) -> Any:
        """``check()``'s result, or ``None`` after recording its one-line problem."""
        try:
            result = check()
        except UserError as exc:
            self.problems.append(problem(str(exc)))
            return None
        self.passed.append(name)
        return result


def _fits(recipe: Recipe, model, bundle) -> bool:
    build.check_classes(model, bundle.input_shape, bundle.num_classes)
    return True


def _data_summary(bundle) -> dict[str, Any]:
    sizes = {name: len(getattr(bundle, name)) for name in ("train", "val", "test")
             if getattr(bundle, name) is not None}
    return {"input_shape": list(bundle.input_shape), "num_classes": bundle.num_classes,
            "samples": sizes}
