"""`search.budget` values: units, percentages, and the errors for bad ones."""

from __future__ import annotations

import pytest

from mpsctl.errors import RecipeError
from mpsctl.recipe import load_recipe
from mpsctl.recipe.budget import parse_budget
from mpsctl.search.budget import Budget

GOOD = [
    ("params_bit", "24KiB", Budget("params_bit", 24 * 8192)),
    ("params_bit", "3kB", Budget("params_bit", 24_000)),
    ("params_bit", "100 B", Budget("params_bit", 800)),
    ("params_bit", "1.5MiB", Budget("params_bit", 1.5 * 8 * 2**20)),
    ("params_bit", "2MB", Budget("params_bit", 16e6)),
    ("params_bit", "5000bits", Budget("params_bit", 5000)),
    ("params_bit", 5000, Budget("params_bit", 5000)),
    ("params_bit", "5000", Budget("params_bit", 5000)),
    ("params_bit", "10%", Budget("params_bit", 0.1, relative=True)),
    ("bitops", "1.2M", Budget("bitops", 1.2e6)),
    ("bitops", "3G", Budget("bitops", 3e9)),
    ("ne16", "60k", Budget("ne16", 60_000)),
    ("ne16", 60000, Budget("ne16", 60_000)),
    ("ne16", "2.5e4", Budget("ne16", 25_000)),
    ("ne16", "12.5%", Budget("ne16", 0.125, relative=True)),
]


@pytest.mark.parametrize(("cost", "text", "expected"), GOOD)
def test_units_and_percentages(cost, text, expected):
    got = parse_budget(cost, text)
    assert got.relative == expected.relative
    assert got.amount == pytest.approx(expected.amount)


def test_a_percentage_resolves_against_the_highest_precision_model():
    assert parse_budget("params_bit", "10%").resolve(94_618) == pytest.approx(9461.8)
    assert parse_budget("params_bit", "1KiB").resolve(94_618) == 8192


BAD = [
    ("params_bit", "24 parsecs", "unknown unit 'parsecs'"),
    ("params_bit", "3k", "unknown unit 'k'"),       # k alone is not a size
    ("bitops", "3KiB", "unknown unit 'KiB'"),       # sizes only for params_bit
    ("params_bit", "0", "must be positive"),
    ("params_bit", 0, "must be positive"),
    ("params_bit", -5, "must be positive"),
    ("params_bit", "150%", "above 100 %"),
    ("params_bit", True, "is not a budget"),
    ("params_bit", "ten", "is not a budget"),
]


@pytest.mark.parametrize(("cost", "value", "message"), BAD)
def test_bad_values_say_why(cost, value, message):
    with pytest.raises(ValueError, match=message):
        parse_budget(cost, value)


def test_recipe_errors_name_the_budget_path(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: mnist_cnn}\nsearch: {type: per_channel, "
                      "weight_bits: [0, 2, 8]}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe, ["search.budget={params_bit: 3 parsecs, latncy: 5}"])
    text = str(err.value)
    assert "search.budget.params_bit" in text and "parsecs" in text
    assert "search.budget.latncy" in text and "unknown cost model" in text
    loaded = load_recipe(recipe, ["search.budget={params_bit: 24KiB, bitops: 10%}"])
    assert loaded.search.budgets()["params_bit"].amount == 24 * 8192
    assert loaded.search.objective_costs() == ["params_bit", "bitops"]
    with pytest.raises(RecipeError, match="ne16 needs 8-bit activations"):
        load_recipe(recipe, ["search.budget={ne16: 60k}", "search.act_bits=[4,8]"])
