"""A recipe's ``search.budget``: resolved against its search space, checked before any
training, enforced on the searched model, and reported as slack."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from mpsctl.console import Reporter
from mpsctl.errors import RecipeError
from mpsctl.recipe import Recipe
from mpsctl.recipe.budget import format_amount
from mpsctl.search.budget import apply_assignment, cost_range, project
from mpsctl.search.supernet import Supernet


def resolve(recipe: Recipe, net: Supernet) -> dict[str, float]:
    """``{cost: bound}`` in each cost's unit; a budget below the cheapest model the space
    can express is refused, naming that smallest reachable cost."""
    specs = recipe.search.budgets()
    if not specs:
        return {}
    ranges = cost_range(net, list(specs))
    out = {}
    for name, spec in specs.items():
        low, high = ranges[name]
        value = spec.resolve(high)
        if value < low:
            raw = recipe.search.budget[name]
            raise RecipeError(
                f"search.budget.{name}: {raw} = {format_amount(name, value)} is below the "
                f"smallest model this search space can express, {format_amount(name, low)} "
                f"({low / high:.1%} of the highest-precision model) (raise the budget to at "
                "least that, or lower search.min_channels or the lowest precision)"
            )
        out[name] = value
    return out


def check_before_training(
    recipe: Recipe, model: nn.Module, input_shape: tuple[int, ...]
) -> dict[str, float]:
    """Resolve the budgets on a throw-away supernet of ``model`` (costs depend only on the
    architecture), so an impossible budget fails before the warm-up."""
    if not recipe.search.budget:
        return {}
    from mpsctl.recipe import build

    net = build.supernet_for(recipe, copy.deepcopy(model).cpu(), input_shape)
    return resolve(recipe, net)


def slack(costs: dict[str, float], bounds: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per budget: the bound, the model's cost, the slack (bound − cost) and the share used."""
    return {
        name: {"budget": bound, "cost": costs[name], "slack": bound - costs[name],
               "used": costs[name] / bound}
        for name, bound in bounds.items() if name in costs
    }


def epoch_log(
    strengths: dict[str, float], usage: dict[str, float], expected: dict[str, float]
) -> tuple[str, dict]:
    """The budget part of a search epoch's log line and history entry: the strength, and
    the argmax (hard) and expected costs as shares of the budget."""
    text = ", ".join(
        f"{name} strength {strengths.get(name, 0.0):.3g} (hard {usage.get(name, 0.0):.1%}, "
        f"expected {expected.get(name, 0.0):.1%} of budget)" for name in usage
    )
    record = {name: {"strength": strengths.get(name, 0.0), "used": usage.get(name, 0.0),
                     "expected": expected.get(name, 0.0)} for name in usage}
    return text, record


def enforce(net: Supernet, bounds: dict[str, float], reporter: Reporter) -> dict[str, Any]:
    """Project the searched model's argmax under every budget (see
    :func:`mpsctl.search.budget.project`) and make that the supernet's argmax."""
    result = project(net, bounds)
    changed = apply_assignment(net, result.assignment)
    used = ", ".join(
        f"{name} {format_amount(name, result.costs[name])} = {result.costs[name] / bound:.1%} "
        "of budget" for name, bound in bounds.items()
    )
    reporter.log(
        f"budget projection: {result.lowered} step(s) down, {result.promoted} up, "
        f"{changed} choice(s) changed; {used}"
    )
    return {"lowered": result.lowered, "promoted": result.promoted, "changed": changed}
