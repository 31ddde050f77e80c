"""`mpsctl sweep`: the accuracy/cost front of a recipe's search at several budgets (or
strengths), beside the baselines a user would otherwise pick, all on the same schedule.

One fp32 warm-up is trained and shared (every point starts from its weights); then each
point runs search → export → finetune in its own folder ``runs/<name>/<point>/``:

- ``searched``: the recipe's search with ``search.budget.<cost>`` (or a strength) set;
- ``uniform``: plain QAT at each non-zero weight precision of the recipe (activations at
  the recipe's highest precision);
- ``pruned``: L1-norm channel pruning to each budget, then QAT at the lowest precision whose
  unpruned model is over the budget (the prune-then-quantize alternative), channels frozen.

After every finished point ``runs/<name>/sweep.json`` is rewritten (atomically), so Ctrl-C
keeps every finished point and ``--resume`` skips them (an interrupted point starts over).
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mpsctl.console import Reporter
from mpsctl.errors import UserError
from mpsctl.recipe import Recipe, build, recipe_from_dict, recipe_to_dict
from mpsctl.recipe.budget import format_amount, parse_budget
from mpsctl.search.budget import cost_range
from mpsctl.stages.parallel import run_in_workers
from mpsctl.training import distributed
from mpsctl.training.device import seed_everything

SWEEP_FILE = "sweep.json"
WARMUP_FILE = "fp32/warmup.pt"
KINDS = ("searched", "uniform", "pruned")


@dataclass(frozen=True)
class SweepPoint:
    """One model of the sweep: how its recipe differs from the base recipe."""

    id: str
    kind: str
    label: str
    cost: str = "params_bit"
    budget: str | None = None
    bound: float | None = None
    strength: float | None = None
    bits: int | None = None
    search: dict[str, Any] = field(default_factory=dict)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "", text.replace("%", "pct"))


def sweep_cost(recipe: Recipe, cost: str | None) -> str:
    """The swept cost: ``--cost``, else the recipe's only budget, else its only strength,
    else ``params_bit``."""
    if cost is not None:
        from mpsctl.recipe.schema import known_costs

        if cost not in known_costs():
            raise UserError(f"--cost: unknown cost model '{cost}' "
                            f"(available: {', '.join(known_costs())})")
        return cost
    for keys in (list(recipe.search.budget), list(recipe.search.cost)):
        if len(keys) == 1:
            return keys[0]
    return "params_bit"


def parse_list(text: str | None, option: str) -> list[str]:
    if text is None:
        return []
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UserError(f"{option}: empty list (give comma-separated values, e.g. 5%,10%)")
    return items


def plan(
    recipe: Recipe,
    model,
    input_shape: tuple[int, ...],
    cost: str,
    budget_texts: list[str],
    strengths: list[float],
    baselines: bool,
) -> tuple[list[SweepPoint], dict[str, Any]]:
    """The sweep's points, with every budget resolved and checked before any training."""
    base = recipe_to_dict(recipe)
    net = build.supernet_for(recipe, copy.deepcopy(model).cpu(), input_shape)
    low, high = cost_range(net, [cost])[cost]
    points: list[SweepPoint] = []
    bounds: list[tuple[str, float]] = []
    for text in budget_texts:
        try:
            spec = parse_budget(cost, _number_or_text(text))
        except ValueError as exc:
            raise UserError(f"--budgets: {exc}") from None
        bound = spec.resolve(high)
        if bound < low:
            raise UserError(
                f"--budgets: {text} = {format_amount(cost, bound)} is below the smallest "
                f"model the recipe's search space can express, {format_amount(cost, low)} "
                f"({low / high:.1%}) (raise it to at least that)"
            )
        bounds.append((text, bound))
        search = {"budget": {**base["search"].get("budget", {}), cost: text},
                  "cost": {k: v for k, v in base["search"].get("cost", {}).items() if k != cost}}
        points.append(SweepPoint(f"searched-{_slug(text)}", "searched", text, cost,
                                 budget=text, bound=bound, search=search))
    for strength in strengths:
        search = {"cost": {**base["search"].get("cost", {}), cost: strength},
                  "budget": {k: v for k, v in base["search"].get("budget", {}).items()
                             if k != cost}}
        points.append(SweepPoint(f"searched-s{strength:g}", "searched",
                                 f"strength {strength:g}", cost, strength=strength,
                                 search=search))
    if baselines:
        points += _baselines(recipe, model, input_shape, cost, bounds)
    return points, {"cost": cost, "lowest": low, "highest": high}


def _number_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _uniform_search(recipe: Recipe, bits: list[int]) -> dict[str, Any]:
    """Search settings of a baseline: fixed weight candidates, top activation precision, no
    cost terms (nothing is left to choose)."""
    return {"weight_bits": bits, "act_bits": [max(recipe.search.act_bits)], "cost": {},
            "budget": {}}


def _baselines(
    recipe: Recipe, model, input_shape, cost: str, bounds: list[tuple[str, float]]
) -> list[SweepPoint]:
    precisions = [b for b in recipe.search.weight_bits if b != 0]
    points = [
        SweepPoint(f"uniform-w{b}", "uniform", f"uniform {b}-bit", cost, bits=b,
                   search=_uniform_search(recipe, [b]))
        for b in precisions
    ]
    if recipe.search.type != "per_channel":
        return points
    uniform_cost = {}
    for b in precisions:
        r = derive_recipe(recipe, {"search": _uniform_search(recipe, [b])})
        net = build.supernet_for(r, copy.deepcopy(model).cpu(), input_shape)
        uniform_cost[b] = cost_range(net, [cost])[cost][1]
    for text, bound in bounds:
        over = [b for b in precisions if uniform_cost[b] > bound]
        if not over:
            continue
        b = min(over)
        if not _prunable_to(recipe, model, input_shape, b, cost, bound):
            continue
        points.append(SweepPoint(f"pruned-w{b}-{_slug(text)}", "pruned",
                                 f"{b}-bit pruned to {text}", cost, budget=text, bound=bound,
                                 bits=b, search=_uniform_search(recipe, [0, b])))
    return points


def _prunable_to(recipe: Recipe, model, input_shape, bits: int, cost: str, bound: float) -> bool:
    """Whether ``bits``-bit weights with only ``min_channels`` channels per layer fit."""
    from mpsctl.search.pruning import l1_pruned_assignment

    r = derive_recipe(recipe, {"search": _uniform_search(recipe, [0, bits])})
    net = build.supernet_for(r, copy.deepcopy(model).cpu(), input_shape)
    return l1_pruned_assignment(net, {cost: bound}) is not None


def derive_recipe(recipe: Recipe, changes: dict[str, Any], **top: Any) -> Recipe:
    """``recipe`` with some keys of its sections replaced, and top-level keys set."""
    data = recipe_to_dict(recipe)
    for section, values in changes.items():
        data[section] = {**data.get(section, {}), **values}
    return recipe_from_dict({**data, **top})


def point_recipe(recipe: Recipe, point: SweepPoint, run_dir: Path, weights: Path) -> Recipe:
    """The base recipe with the point's search settings, starting from the shared fp32
    weights (no warm-up of its own), writing to ``run_dir/<point id>``."""
    changes = {"search": point.search, "warmup": {"epochs": 0},
               "model": {"weights": str(weights.resolve())}}
    return derive_recipe(recipe, changes, output_dir=str(run_dir / point.id))


# ----------------------------------------------------------------------- running


def run_sweep(
    recipe: Recipe,
    reporter: Reporter,
    budget_texts: list[str],
    strengths: list[float],
    cost: str | None = None,
    baselines: bool = True,
    resume: bool = False,
    jobs: int = 1,
) -> dict[str, Any]:
    """Warm up once, run every point (skipping finished ones with ``resume``; ``jobs``
    points at a time in worker processes), and return the points, the Pareto front and how
    the searched models compare with the baselines."""
    if bool(budget_texts) == bool(strengths):
        raise UserError("sweep: give either --budgets or --strengths (e.g. --budgets 5%,10%)")
    if jobs < 1:
        raise UserError(f"--jobs: {jobs} must be at least 1")
    run_dir = recipe.run_dir
    sweep_file = run_dir / SWEEP_FILE
    previous = _read_previous(sweep_file, resume)
    cost = sweep_cost(recipe, cost)
    seed_everything(recipe.seed)
    ctx, _ = distributed.init(recipe.device)
    if jobs > 1 and ctx.enabled:
        raise UserError(f"--jobs {jobs}: under torchrun every point already runs on all the "
                        "processes (drop --jobs, or run without torchrun)")
    reporter.quiet = reporter.quiet or not ctx.is_main
    bundle = build.datasets(recipe)
    model = build.float_model(recipe)
    build.check_classes(model, bundle.input_shape, bundle.num_classes)
    points, scale = plan(recipe, model, bundle.input_shape, cost, budget_texts, strengths,
                         baselines)
    ids = [p.id for p in points]
    if len(set(ids)) != len(ids):
        raise UserError("--budgets/--strengths: a value is listed twice (list each once)")
    done = {r["id"]: r for r in previous.get("points", []) if _finished(r)}
    record = {"recipe": recipe.name, "seed": recipe.seed, **scale, "points": [],
              "warmup": previous.get("warmup")}
    weights = run_dir / WARMUP_FILE
    if record["warmup"] is None or not weights.exists():
        reporter.log(f"sweep: fp32 warm-up ({recipe.warmup.epochs} epochs), shared by "
                     f"{len(points)} points")
        from mpsctl.stages.search import run_warmup

        warm = derive_recipe(recipe, {}, output_dir=str(run_dir / "fp32"))
        fp32 = run_warmup(warm, reporter, weights)
        record["warmup"] = {"accuracy": fp32["accuracy"], "weights": str(weights)}
        done = {}
    else:
        reporter.log(f"sweep: reusing the fp32 warm-up in {weights}")
    distributed.barrier()
    _write(sweep_file, record, points, done)
    for point in points:
        if point.id in done:
            reporter.log(f"sweep: {point.id} finished before, skipped")
    todo = [p for p in points if p.id not in done]

    def finished(point_id: str, result: dict[str, Any]) -> None:
        done[point_id] = result
        _write(sweep_file, record, points, done)

    if jobs > 1 and len(todo) > 1:
        data = recipe_to_dict(recipe)
        run_in_workers(_point_job, [
            (p.id, (data, p, str(run_dir), str(weights), cost, scale["highest"])) for p in todo
        ], jobs, reporter, finished)
    else:
        for index, point in enumerate(todo, 1):
            reporter.log(f"sweep [{index}/{len(todo)}] {point.id}: {point.label}")
            finished(point.id, _run_point(recipe, point, run_dir, weights, reporter, cost,
                                          scale["highest"]))
    return {**summarise(record, points, done, cost), "sweep": str(sweep_file),
            "run_dir": str(run_dir)}


def _finished(entry: dict[str, Any]) -> bool:
    return entry.get("status") == "done" and Path(entry.get("checkpoint", "")).exists()


def _read_previous(path: Path, resume: bool) -> dict[str, Any]:
    if not path.exists():
        return {}
    if not resume:
        raise UserError(
            f"{path} exists: continue that sweep with --resume, or remove the folder "
            "(or set name=...) to start a new one"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--resume: cannot read {path} ({exc}); remove it to start over") from None


def _run_point(
    recipe: Recipe, point: SweepPoint, run_dir: Path, weights: Path, reporter: Reporter,
    cost: str, highest: float,
) -> dict[str, Any]:
    from mpsctl.stages.export import run_export
    from mpsctl.stages.finetune import run_finetune
    from mpsctl.stages.search import run_search

    started = time.monotonic()
    r = point_recipe(recipe, point, run_dir, weights)
    prepare = _pruner(point) if point.kind == "pruned" else None
    searched = run_search(r, reporter, prepare=prepare)
    distributed.barrier()
    exported = run_export(Path(searched["checkpoint"]), reporter)
    distributed.barrier()
    tuned = run_finetune(Path(exported["checkpoint"]), [], reporter)
    distributed.barrier()
    out = {
        "id": point.id, "kind": point.kind, "label": point.label, "budget": point.budget,
        "bound": point.bound, "strength": point.strength, "bits": point.bits,
        "status": "done",
        "accuracy": tuned["metrics"]["accuracy"],
        "search_accuracy": searched["metrics"].get("accuracy"),
        "export_accuracy": exported["metrics"].get("accuracy"),
        "cost": tuned["cost"],
        "checkpoint": tuned["checkpoint"],
        "seconds": round(time.monotonic() - started, 1),
    }
    if tuned["metrics"].get("test_accuracy") is not None:  # reported, never selected on
        out["test_accuracy"] = tuned["metrics"]["test_accuracy"]
    out["share"] = tuned["cost"][cost] / highest
    if point.bound is not None:
        out["used"] = tuned["cost"][cost] / point.bound
    if "projection" in searched["metrics"]:
        out["projection"] = searched["metrics"]["projection"]
    return out


def _point_job(recipe_data: dict[str, Any], point: SweepPoint, run_dir: str, weights: str,
               cost: str, highest: float) -> dict[str, Any]:
    """One point in a worker process of ``--jobs``: the same run, reporting nothing."""
    return _run_point(recipe_from_dict(recipe_data), point, Path(run_dir), Path(weights),
                      Reporter(quiet=True), cost, highest)


def _pruner(point: SweepPoint):
    """Freeze a new supernet at the L1-pruned assignment that fits the point's bound."""
    from mpsctl.search.pruning import freeze, l1_pruned_assignment

    def prepare(net) -> None:
        found = l1_pruned_assignment(net, {point.cost: point.bound})
        if found is None:  # plan() checked that min_keep channels fit
            raise UserError(f"{point.id}: the pruned baseline cannot reach {point.budget}")
        freeze(net, found[0])

    return prepare


def _write(path: Path, record: dict, points: list[SweepPoint], done: dict) -> None:
    if not distributed.is_main():
        return
    write_json(path, {**summarise(record, points, done, record["cost"]),
                      "plan": [asdict(p) for p in points]})


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` so that a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        json.dump(data, stream, indent=1)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temp, path)


# ----------------------------------------------------------------------- the front


def pareto_front(points: list[dict[str, Any]], cost: str) -> list[str]:
    """Ids of the points no other point beats: as cheap or cheaper and at least as accurate,
    strictly better in one."""
    return [p["id"] for p, on in zip(points, front_flags(
        [(p["cost"][cost], p["accuracy"]) for p in points]), strict=True) if on]


def front_flags(pairs: list[tuple[float, float]]) -> list[bool]:
    """For each (cost, accuracy) pair, whether no other pair is as cheap or cheaper and at
    least as accurate, strictly better in one."""
    return [not any(c <= cost and a >= acc and (c < cost or a > acc)
                    for j, (c, a) in enumerate(pairs) if j != i)
            for i, (cost, acc) in enumerate(pairs)]


def dominance(points: list[dict[str, Any]], cost: str) -> list[dict[str, Any]]:
    """For each baseline: the smallest searched model at least as accurate, and the size
    ratio searched / baseline (below 1: the search gives the same accuracy for less)."""
    searched = sorted((p for p in points if p["kind"] == "searched"),
                      key=lambda p: p["cost"][cost])
    out = []
    for base in (p for p in points if p["kind"] != "searched"):
        match = next((s for s in searched if s["accuracy"] >= base["accuracy"]), None)
        entry = {"baseline": base["id"], "baseline_accuracy": base["accuracy"],
                 "baseline_cost": base["cost"][cost], "searched": None, "ratio": None,
                 "dominated": False}
        if match is not None:
            entry.update(searched=match["id"], searched_accuracy=match["accuracy"],
                         searched_cost=match["cost"][cost],
                         ratio=match["cost"][cost] / base["cost"][cost],
                         dominated=match["cost"][cost] <= base["cost"][cost])
        out.append(entry)
    return out


def summarise(record: dict, points: list[SweepPoint], done: dict, cost: str) -> dict[str, Any]:
    """The record with its finished points (in plan order), the front and the dominance."""
    finished = [done[p.id] for p in points if p.id in done]
    return {**{k: v for k, v in record.items() if k != "points"}, "points": finished,
            "front": pareto_front(finished, cost), "dominance": dominance(finished, cost)}
