"""The sweep's bookkeeping: the Pareto front, dominance of the baselines, the plan."""

from __future__ import annotations

import pytest

from mpsctl.errors import UserError
from mpsctl.recipe import load_recipe
from mpsctl.stages.sweep import dominance, pareto_front, plan


def _point(pid: str, kind: str, bits: float, accuracy: float) -> dict:
    return {"id": pid, "kind": kind, "cost": {"params_bit": bits}, "accuracy": accuracy}


POINTS = [
    _point("s5", "searched", 5, 0.90),
    _point("s10", "searched", 10, 0.95),
    _point("s25", "searched", 25, 0.96),
    _point("u2", "uniform", 25, 0.94),      # beaten by s10 (cheaper, more accurate)
    _point("u8", "uniform", 100, 0.97),     # the most accurate: on the front
    _point("p10", "pruned", 10, 0.95),      # ties s10: neither beats the other
]


def test_front_keeps_the_points_nothing_beats():
    assert pareto_front(POINTS, "params_bit") == ["s5", "s10", "s25", "u8", "p10"]


def test_dominance_names_the_smallest_searched_model_as_accurate():
    found = {d["baseline"]: d for d in dominance(POINTS, "params_bit")}
    assert list(found) == ["u2", "u8", "p10"]
    assert found["u2"]["searched"] == "s10" and found["u2"]["ratio"] == pytest.approx(0.4)
    assert found["u2"]["dominated"] is True
    assert found["u8"]["searched"] is None and found["u8"]["dominated"] is False
    assert found["p10"]["searched"] == "s10" and found["p10"]["ratio"] == 1.0


def test_plan_resolves_budgets_and_picks_the_pruning_precision(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: mnist_cnn}\ndata: {name: fake, shape: [1, 28, 28]}\n"
                      "search: {type: per_channel, weight_bits: [0, 2, 4, 8], act_bits: [8]}\n")
    r = load_recipe(recipe)
    from mpsctl.models.registry import build_model

    model = build_model("mnist_cnn", {}, None)
    points, scale = plan(r, model, (1, 28, 28), "params_bit", ["10%", "30%", "60%"], [], True)
    ids = [p.id for p in points]
    assert ids == ["searched-10pct", "searched-30pct", "searched-60pct", "uniform-w2",
                   "uniform-w4", "uniform-w8", "pruned-w2-10pct", "pruned-w4-30pct",
                   "pruned-w8-60pct"]
    byid = {p.id: p for p in points}
    assert byid["searched-30pct"].bound == pytest.approx(0.3 * scale["highest"])
    assert byid["searched-30pct"].search["budget"] == {"params_bit": "30%"}
    assert byid["uniform-w4"].search["weight_bits"] == [4]
    assert byid["pruned-w2-10pct"].search["weight_bits"] == [0, 2]
    assert scale["lowest"] < 0.01 * scale["highest"]
    with pytest.raises(UserError, match="smallest model"):
        plan(r, model, (1, 28, 28), "params_bit", ["0.001%"], [], False)


def test_plan_with_strengths_sets_the_cost_and_drops_its_budget(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: mnist_cnn}\ndata: {name: fake, shape: [1, 28, 28]}\n"
                      "search: {type: per_layer, weight_bits: [2, 8], act_bits: [8],\n"
                      "         budget: {params_bit: 50%, bitops: 60%}}\n")
    from mpsctl.models.registry import build_model

    model = build_model("mnist_cnn", {}, None)
    points, _ = plan(load_recipe(recipe), model, (1, 28, 28), "params_bit", [], [1e-6, 3e-6],
                     True)
    assert [p.id for p in points] == ["searched-s1e-06", "searched-s3e-06", "uniform-w2",
                                      "uniform-w8"]  # per layer: no pruned baseline
    assert points[0].search == {"cost": {"params_bit": 1e-6}, "budget": {"bitops": "60%"}}
