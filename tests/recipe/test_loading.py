"""Recipe loading: YAML files, includes, overrides, serialisation and diffs."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import mpsctl.recipe.schema as schema
from mpsctl.errors import RecipeError
from mpsctl.recipe import (
    CONFIGS_DIR,
    deep_merge,
    dump_recipe_yaml,
    load_recipe,
    recipe_diff,
    recipe_from_dict,
    recipe_to_dict,
)


@pytest.fixture(autouse=True)
def _known_costs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "known_costs", lambda: ("bitops", "ne16", "params_bit"))


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


MINIMAL = "model: {name: tiny}\n"


# --- files -------------------------------------------------------------------------------


def test_load_recipe_from_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.yaml",
        "name: demo\nmodel: {name: resnet8, num_classes: 10}\n"
        "search: {type: per_channel, weight_bits: [8, 0, 2], cost: {params_bit: 1e-6}}\n",
    )
    recipe = load_recipe(path)
    assert recipe.name == "demo" and recipe.model.kwargs() == {"num_classes": 10}
    assert recipe.search.weight_bits == [0, 2, 8]
    assert recipe.search.cost == {"params_bit": 1e-6}


def test_exponent_without_dot_is_a_float(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", MINIMAL + "search: {optimizer: {lr: 1e-3}}\n")
    assert load_recipe(path).search.optimizer.lr == pytest.approx(1e-3)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RecipeError, match="recipe file not found: .*nope.yaml"):
        load_recipe(missing)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="is a folder"):
        load_recipe(tmp_path)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "name: x\nmodel: {name: tiny}\nsearch: [1, 2\nseed: 0\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line ") and "invalid YAML" in message
    assert "\n" not in message


def test_yaml_syntax_error_line_number_is_exact(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "name: x\nmodel: {name: tiny}\nseed: : 3\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml, line 3, column \d+: invalid YAML"):
        load_recipe(path)


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.yaml", "model: {name: tiny}\nseed: 1\nseed: 2\n")
    with pytest.raises(RecipeError, match=r"line 3, .*duplicate key 'seed'"):
        load_recipe(path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "r.yaml", text)
    with pytest.raises(RecipeError, match="top level must be a mapping"):
        load_recipe(path)


def test_empty_file_reports_the_missing_model(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="^model: required key is missing"):
        load_recipe(write(tmp_path, "empty.yaml", ""))


# --- includes ----------------------------------------------------------------------------


def test_include_relative_to_the_recipe(tmp_path: Path) -> None:
    write(tmp_path, "parts/base.yaml", "model: {name: tiny}\nsearch: {epochs: 7, act_bits: [8]}\n")
    path = write(tmp_path, "r.yaml", "include: [parts/base.yaml]\nsearch: {epochs: 3}\n")
    recipe = load_recipe(path)
    assert recipe.search.epochs == 3  # the recipe wins
    assert recipe.search.act_bits == [8]  # the fragment fills what the recipe leaves out
    assert recipe.include == []


def test_includes_merge_in_order(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "search: {epochs: 1, act_bits: [4, 8]}\n")
    write(tmp_path, "b.yaml", "search: {epochs: 2}\n")
    path = write(tmp_path, "r.yaml", MINIMAL + "include: [a.yaml, b]\n")
    recipe = load_recipe(path)
    assert recipe.search.epochs == 2 and recipe.search.act_bits == [4, 8]


def test_lists_are_replaced_not_merged(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "search: {weight_bits: [2, 4, 8], exclude: [fc]}\n")
    path = write(tmp_path, "r.yaml", MINIMAL + "include: [a.yaml]\nsearch: {weight_bits: [8]}\n")
    search = load_recipe(path).search
    assert search.weight_bits == [8] and search.exclude == ["fc"]


def test_include_from_project_configs(tmp_path: Path) -> None:
    assert (CONFIGS_DIR / "precisions" / "w248-a8.yaml").is_file()
    path = write(
        tmp_path, "r.yaml", MINIMAL + "include: [precisions/w248-a8.yaml, training/paper]\n"
    )
    search = load_recipe(path).search
    assert (search.weight_bits, search.act_bits) == ([2, 4, 8], [8])
    assert (search.optimizer.name, search.optimizer.lr) == ("adam", 1e-3)
    assert (search.arch_optimizer.name, search.arch_optimizer.lr) == ("adam", 1e-2)
    assert (search.temperature.start, search.temperature.decay) == (1.0, 0.045)


def test_local_fragment_shadows_configs(tmp_path: Path) -> None:
    write(tmp_path, "precisions/w248-a8.yaml", "search: {act_bits: [4]}\n")
    path = write(tmp_path, "r.yaml", MINIMAL + "include: [precisions/w248-a8.yaml]\n")
    assert load_recipe(path).search.act_bits == [4]


def test_nested_includes(tmp_path: Path) -> None:
    write(tmp_path, "inner/deep.yaml", "seed: 5\nsearch: {epochs: 9}\n")
    write(tmp_path, "inner/mid.yaml", "include: [deep.yaml]\nsearch: {epochs: 4}\n")
    path = write(tmp_path, "r.yaml", MINIMAL + "include: [inner/mid.yaml]\n")
    recipe = load_recipe(path)
    assert recipe.seed == 5 and recipe.search.epochs == 4


def test_include_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "include: [b.yaml]\n")
    write(tmp_path, "b.yaml", "include: [a.yaml]\n")
    path = write(tmp_path, "r.yaml", MINIMAL + "include: [a.yaml]\n")
    with pytest.raises(
        RecipeError, match=r"include cycle r\.yaml -> a\.yaml -> b\.yaml -> a\.yaml"
    ):
        load_recipe(path)


def test_self_include_is_a_cycle(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", MINIMAL + "include: [r.yaml]\n")
    with pytest.raises(RecipeError, match="include cycle"):
        load_recipe(path)


def test_missing_include_names_it_and_where_it_looked(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", MINIMAL + "include: [nowhere.yaml]\n")
    with pytest.raises(RecipeError, match=r"include 'nowhere\.yaml' not found \(looked in "):
        load_recipe(path)


def test_include_must_be_a_list(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", MINIMAL + "include: {a: 1}\n")
    with pytest.raises(RecipeError, match="include: .* is not a list of file names"):
        load_recipe(path)


def test_syntax_error_in_fragment_names_the_fragment(tmp_path: Path) -> None:
    write(tmp_path, "frag.yaml", "search: {epochs: [\n")
    path = write(tmp_path, "r.yaml", MINIMAL + "include: [frag.yaml]\n")
    with pytest.raises(RecipeError, match=r"frag\.yaml, line \d+"):
        load_recipe(path)


# --- overrides ---------------------------------------------------------------------------


def test_overrides_are_typed_by_the_schema() -> None:
    recipe = recipe_from_dict(
        {"model": {"name": "tiny"}},
        [
            "search.epochs=2",
            "data.size=64",
            "search.type=per_channel",
            "search.weight_bits=[0,2,4,8]",
            "search.cost.params_bit=1e-6",
            "model.num_classes=10",
            "search.compile=false",
            "search.act_clip=4",
        ],
    )
    assert recipe.search.epochs == 2 and recipe.data.size == 64
    assert recipe.search.weight_bits == [0, 2, 4, 8]
    assert recipe.search.cost == {"params_bit": 1e-6}
    assert recipe.model.kwargs() == {"num_classes": 10}
    assert recipe.search.compile is False and recipe.search.act_clip == 4.0


def test_overrides_apply_after_includes(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "search: {epochs: 7}\n")
    path = write(tmp_path, "r.yaml", MINIMAL + "include: [base.yaml]\nsearch: {epochs: 5}\n")
    assert load_recipe(path, ["search.epochs=1"]).search.epochs == 1


def test_override_with_quoted_key_reaches_dotted_globs() -> None:
    recipe = recipe_from_dict(
        {"model": {"name": "tiny"}}, ['search.layers["features.0"].act_bits=[8, 4]']
    )
    assert recipe.search.layers["features.0"].act_bits == [4, 8]


def test_override_later_wins_and_equals_in_value_is_kept() -> None:
    recipe = recipe_from_dict(
        {"model": {"name": "tiny"}}, ["search.epochs=1", "search.epochs=3", "data.root=a=b"]
    )
    assert recipe.search.epochs == 3 and recipe.data.root == "a=b"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("search.epochs", "override 'search.epochs' has no '='"),
        ("=3", "override '=3' has a malformed key"),
        ("search..epochs=3", "override 'search..epochs=3' has a malformed key"),
        ("search.=3", "override 'search.=3' has a malformed key"),
        ("search.epochs=[1,", "override 'search.epochs=[1,', line 1"),
        ("include=[a.yaml]", "override 'include=[a.yaml]': include cannot be overridden"),
        ("seed.value=1", "override 'seed.value=1': seed is 0, not a mapping"),
    ],
)
def test_bad_override_syntax(override: str, expected: str) -> None:
    with pytest.raises(RecipeError) as info:
        recipe_from_dict({"model": {"name": "tiny"}, "seed": 0}, [override])
    assert str(info.value).startswith(expected)


def test_every_bad_override_is_reported_together() -> None:
    with pytest.raises(RecipeError) as info:
        recipe_from_dict({"model": {"name": "tiny"}}, ["a", "b", "search.epochs=2"])
    assert len(info.value.problems) == 2 and "\n" not in str(info.value)


def test_override_value_is_validated_with_its_path() -> None:
    with pytest.raises(RecipeError, match=r"^search\.epochs: 'two' is not an integer"):
        recipe_from_dict({"model": {"name": "tiny"}}, ["search.epochs=two"])
    with pytest.raises(RecipeError, match=r"^search\.epcohs: unknown key \(did you mean 'epochs'"):
        recipe_from_dict({"model": {"name": "tiny"}}, ["search.epcohs=2"])


def test_overrides_do_not_mutate_the_callers_dict() -> None:
    data: dict[str, Any] = {"model": {"name": "tiny"}, "search": {"epochs": 1}}
    recipe_from_dict(data, ["search.epochs=5"])
    assert data == {"model": {"name": "tiny"}, "search": {"epochs": 1}}


# --- serialisation and diffs -------------------------------------------------------------


def full_recipe() -> dict[str, Any]:
    return {
        "name": "full",
        "model": {"name": "resnet8", "num_classes": 10},
        "data": {"name": "fake", "shape": [3, 8, 8], "val_fraction": 0.1},
        "search": {
            "type": "per_channel",
            "weight_bits": [0, 2, 4, 8],
            "act_bits": [8],
            "cost": {"ne16": 1.0, "params_bit": 1e-6},
            "layers": {"features.*": {"weight_bits": [4, 8], "options": {"k": [1, 2]}}},
            "arch_optimizer": {"name": "sgd", "momentum": 0.9, "schedule": {"name": "step"}},
        },
    }


def assert_plain(value: Any) -> None:
    if isinstance(value, dict):
        assert all(isinstance(key, str) for key in value)
        for item in value.values():
            assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain(item)
    else:
        assert value is None or type(value) in (str, int, float, bool)


def test_recipe_to_dict_round_trips() -> None:
    recipe = recipe_from_dict(full_recipe())
    data = recipe_to_dict(recipe)
    assert_plain(data)
    assert "include" not in data
    assert data["model"] == {"name": "resnet8", "weights": None, "num_classes": 10}
    assert recipe_from_dict(data) == recipe


def test_recipe_dict_survives_a_weights_only_torch_load() -> None:
    data = recipe_to_dict(recipe_from_dict(full_recipe()))
    buffer = io.BytesIO()
    torch.save({"recipe": data}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["recipe"] == data


def test_dump_recipe_yaml_loads_back_identical(tmp_path: Path) -> None:
    recipe = recipe_from_dict(full_recipe())
    path = dump_recipe_yaml(recipe, tmp_path / "run" / "recipe.yaml")
    assert yaml.safe_load(path.read_text())["name"] == "full"
    assert load_recipe(path) == recipe


def test_recipe_diff_names_changed_keys_under_the_prefixes() -> None:
    a = recipe_to_dict(recipe_from_dict(full_recipe()))
    changed = full_recipe()
    changed["search"]["weight_bits"] = [0, 4, 8]
    changed["search"]["epochs"] = 99
    changed["model"]["num_classes"] = 100
    b = recipe_to_dict(recipe_from_dict(changed))
    keys = ["model", "search.type", "search.weight_bits", "search.act_bits"]
    assert recipe_diff(a, b, keys) == ["model.num_classes", "search.weight_bits"]
    assert recipe_diff(a, a, keys) == []
    assert recipe_diff(a, b, ["search"]) == ["search.epochs", "search.weight_bits"]


def test_recipe_diff_counts_added_and_removed_keys() -> None:
    a = {"model": {"name": "x"}}
    b = {"model": {"name": "x", "width": 2}}
    assert recipe_diff(a, b, ["model"]) == ["model.width"]
    assert recipe_diff(a, {}, ["model"]) == ["model"]
    assert recipe_diff({}, {}, ["model"]) == []


def test_deep_merge_leaves_its_inputs_alone() -> None:
    base = {"search": {"epochs": 1, "cost": {"bitops": 1.0}}}
    over = {"search": {"cost": {"ne16": 2.0}}}
    merged = deep_merge(base, over)
    assert merged == {"search": {"epochs": 1, "cost": {"bitops": 1.0, "ne16": 2.0}}}
    assert base == {"search": {"epochs": 1, "cost": {"bitops": 1.0}}}
    merged["search"]["cost"]["ne16"] = 0.0
    assert over["search"]["cost"]["ne16"] == 2.0


def test_include_by_absolute_path_and_from_a_dict(tmp_path: Path) -> None:
    fragment = write(tmp_path, "elsewhere/frag.yaml", "search: {epochs: 6}\n")
    path = write(tmp_path, "r.yaml", MINIMAL + f"include: ['{fragment}']\n")
    assert load_recipe(path).search.epochs == 6
    recipe = recipe_from_dict({"model": {"name": "tiny"}, "include": ["precisions/w248-a8"]})
    assert recipe.search.act_bits == [8]
