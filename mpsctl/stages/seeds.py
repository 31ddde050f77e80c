"""`mpsctl sweep --seeds 0,1,2`: the same sweep at several seeds, and the front of their means.

One seed's front moves by about a point on a small data set (the test accuracy of a point
moved by up to 1.8 points between two runs of the same seed on the quickstart), so a claim
about the front needs several seeds. Each seed is a whole sweep in ``runs/<name>/seed-<S>/``
(its own warm-up, points, ``sweep.json`` and ``pareto.png``); ``runs/<name>/seeds.json``
then gives, per point, the mean and range over the seeds and the front on the means.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean
from typing import Any

from mpsctl.console import Reporter
from mpsctl.errors import UserError
from mpsctl.recipe import Recipe
from mpsctl.stages.sweep import derive_recipe, front_flags, run_sweep, write_json
from mpsctl.training import distributed

SEEDS_FILE = "seeds.json"


def seed_recipe(recipe: Recipe, seed: int) -> Recipe:
    """The recipe at ``seed``, writing to ``<run dir>/seed-<seed>``."""
    return derive_recipe(recipe, {}, seed=seed, output_dir=str(recipe.run_dir / f"seed-{seed}"))


def run_sweep_seeds(recipe: Recipe, reporter: Reporter, seeds: list[int],
                    **sweep_options: Any) -> dict[str, Any]:
    """Run the sweep once per seed (``--resume`` and ``--jobs`` apply to each), then write
    and return the points aggregated over the seeds."""
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds: a seed is listed twice ({seeds}); list each once")
    files = []
    for index, seed in enumerate(seeds, 1):
        reporter.log(f"sweep: seed {seed} ({index}/{len(seeds)})")
        files.append(run_sweep(seed_recipe(recipe, seed), reporter, **sweep_options)["sweep"])
    sweeps = [json.loads(Path(f).read_text()) for f in files]
    summary = {"recipe": recipe.name, "seeds": list(seeds), "sweeps": files,
               **across_seeds(sweeps)}
    path = recipe.run_dir / SEEDS_FILE
    if distributed.is_main():
        write_json(path, summary)
    return {**summary, "file": str(path), "run_dir": str(recipe.run_dir)}


def across_seeds(sweeps: list[dict[str, Any]]) -> dict[str, Any]:
    """Per point id present in every sweep: kind, and over the seeds the size (share of
    the highest-precision model), budget used, validation and test accuracy, each as
    ``{"mean", "min", "max", "values"}``; ``front``: on the mean of ``score_on`` (test
    where every point has it, else validation), no other point as small or smaller and at
    least as accurate, strictly better in one."""
    if not sweeps:
        raise ValueError("across_seeds needs at least one sweep")
    ids = [p["id"] for p in sweeps[0]["points"]]
    common = [i for i in ids if all(i in {p["id"] for p in s["points"]} for s in sweeps)]
    points = []
    for pid in common:
        found = [next(p for p in s["points"] if p["id"] == pid) for s in sweeps]
        points.append({
            "id": pid, "kind": found[0]["kind"],
            "share": _stats([p["share"] for p in found]),
            "used": _stats([p["used"] for p in found if p.get("used") is not None]),
            "accuracy": _stats([p["accuracy"] for p in found]),
            "test_accuracy": _stats([p["test_accuracy"] for p in found
                                     if p.get("test_accuracy") is not None]),
        })
    complete = all(p["test_accuracy"] and len(p["test_accuracy"]["values"]) == len(sweeps)
                   for p in points)
    score_on = "test_accuracy" if complete else "accuracy"
    flags = front_flags([(p["share"]["mean"], p[score_on]["mean"]) for p in points])
    for p, on in zip(points, flags, strict=True):
        p["front"] = on
    points.sort(key=lambda p: p["share"]["mean"])
    return {"cost": sweeps[0]["cost"], "score_on": score_on,
            "seeds_found": [s.get("seed") for s in sweeps], "points": points}


def _stats(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"mean": mean(values), "min": min(values), "max": max(values),
            "values": list(values)}
