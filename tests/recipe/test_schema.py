"""Recipe schema: defaults, normalisation and every validation rule, with path-first messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import mpsctl.recipe.schema as schema
from mpsctl.errors import RecipeError
from mpsctl.recipe import Recipe, load_recipe, recipe_from_dict

COSTS = ("bitops", "ne16", "params_bit")


@pytest.fixture(autouse=True)
def _known_costs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "known_costs", lambda: COSTS)


def build(**sections: object) -> Recipe:
    return recipe_from_dict({"model": {"name": "tiny"}, **sections})


def problems(**sections: object) -> list[str]:
    with pytest.raises(RecipeError) as info:
        build(**sections)
    message = str(info.value)
    assert "\n" not in message
    assert message == "; ".join(info.value.problems)
    return info.value.problems


def only_problem(**sections: object) -> str:
    found = problems(**sections)
    assert len(found) == 1, found
    return found[0]


def test_defaults() -> None:
    recipe = build()
    assert (recipe.name, recipe.seed, recipe.device, recipe.include) == ("run", 0, "auto", [])
    assert recipe.data.name == "mnist5k" and recipe.data.batch_size == 64
    assert recipe.warmup.epochs == 0 and recipe.warmup.optimizer.lr == 1e-3
    search = recipe.search
    assert search.type == "per_layer"
    assert search.weight_bits == [2, 4, 8] and search.act_bits == [2, 4, 8]
    assert search.cost == {} and search.epochs == 1
    assert (search.temperature.start, search.temperature.decay) == (1.0, 0.045)
    assert search.temperature.mode == "softmax"
    assert (search.optimizer.name, search.optimizer.lr) == ("adam", 1e-3)
    assert (search.arch_optimizer.name, search.arch_optimizer.lr) == ("adam", 1e-2)
    assert (search.weight_quantizer, search.act_quantizer) == ("minmax", "pact")
    assert search.compile is True and search.min_channels == 1
    assert (recipe.finetune.epochs, recipe.finetune.optimizer.lr) == (1, 1e-4)


def test_default_sections_are_not_shared() -> None:
    first, second = build(), build()
    first.search.weight_bits.append(16)
    first.search.optimizer.lr = 5.0
    assert second.search.weight_bits == [2, 4, 8] and second.search.optimizer.lr == 1e-3


def test_run_dir_defaults_to_runs_name_and_follows_output_dir() -> None:
    assert str(build(name="exp-1").run_dir) == "runs/exp-1"
    assert str(build(output_dir="/tmp/out").run_dir) == "/tmp/out"


def test_model_extra_keys_are_factory_kwargs() -> None:
    recipe = recipe_from_dict({"model": {"name": "resnet8", "num_classes": 10, "width": 2}})
    assert recipe.model.kwargs() == {"num_classes": 10, "width": 2}
    assert recipe.model.weights is None


def test_data_options_lists_only_what_was_set() -> None:
    data = build(data={"name": "fake", "shape": [3, 8, 8], "num_classes": 4}).data
    assert data.options() == {"shape": [3, 8, 8], "num_classes": 4}
    assert build(data={"download": True}).data.options() == {"download": True}


def test_precisions_are_normalised_to_ascending_order() -> None:
    search = build(
        search={
            "type": "per_channel",
            "weight_bits": [8, 0, 2, 4],
            "act_bits": [8, 4],
            "layers": {"fc": {"weight_bits": [8, 2]}},
        }
    ).search
    assert search.weight_bits == [0, 2, 4, 8]
    assert search.act_bits == [4, 8]
    assert search.layers["fc"].weight_bits == [2, 8]


@given(st.lists(st.integers(min_value=1, max_value=16), min_size=1, unique=True))
def test_any_distinct_valid_precisions_come_back_sorted(bits: list[int]) -> None:
    search = schema.SearchConfig(weight_bits=bits, act_bits=bits)
    assert search.weight_bits == sorted(bits) == search.act_bits


def test_duplicate_precision_names_its_index() -> None:
    assert only_problem(search={"weight_bits": [2, 4, 4]}) == (
        "search.weight_bits[2]: duplicate precision 4 (list each precision once)"
    )


def test_duplicate_in_layer_override_names_the_glob() -> None:
    message = only_problem(search={"layers": {"features.*": {"act_bits": [8, 8]}}})
    assert message.startswith('search.layers["features.*"].act_bits[1]: duplicate precision 8')


def test_zero_bit_activations_cannot_be_pruned() -> None:
    message = only_problem(search={"act_bits": [0, 8]})
    assert message.startswith("search.act_bits[0]: activations cannot be pruned")


@pytest.mark.parametrize(
    ("field", "bits", "path", "allowed"),
    [
        ("weight_bits", [2, 17], "search.weight_bits[1]", "(0..16)"),
        ("weight_bits", [-1, 8], "search.weight_bits[0]", "(0..16)"),
        ("act_bits", [8, 32], "search.act_bits[1]", "(1..16)"),
    ],
)
def test_precision_out_of_range(field: str, bits: list[int], path: str, allowed: str) -> None:
    message = only_problem(search={field: bits})
    assert message.startswith(f"{path}: ") and message.endswith(allowed)


def test_empty_precision_list_is_an_error() -> None:
    assert only_problem(search={"act_bits": []}).startswith("search.act_bits: empty list")


def test_zero_bit_weights_need_per_channel_search() -> None:
    message = only_problem(search={"weight_bits": [0, 2, 4, 8]})
    assert message.startswith("search.weight_bits[0]: ")
    assert "per_channel" in message
    layer = only_problem(search={"layers": {"conv1": {"weight_bits": [0, 8]}}})
    assert layer.startswith("search.layers.conv1.weight_bits[0]: ") and "per_channel" in layer
    assert build(search={"type": "per_channel", "weight_bits": [0, 8]}).search.weight_bits == [0, 8]


def test_unknown_key_suggests_the_closest_field() -> None:
    assert (
        only_problem(search={"epcohs": 3}) == "search.epcohs: unknown key (did you mean 'epochs'?)"
    )
    assert only_problem(serach={}) == "serach: unknown key (did you mean 'search'?)"
    nested = only_problem(search={"temperature": {"strat": 2.0}})
    assert nested == "search.temperature.strat: unknown key (did you mean 'start'?)"


def test_unknown_key_without_close_match_lists_allowed_keys() -> None:
    message = only_problem(finetune={"zzz": 1})
    assert message == "finetune.zzz: unknown key (allowed: epochs, optimizer)"


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"search": {"epochs": "two"}}, "search.epochs: 'two' is not an integer"),
        ({"search": {"epochs": True}}, "search.epochs: true is not an integer"),
        ({"search": {"epochs": 2.5}}, "search.epochs: 2.5 is not an integer"),
        ({"search": {"compile": "yes"}}, "search.compile: 'yes' is not a boolean (true, false)"),
        ({"search": {"act_clip": "big"}}, "search.act_clip: 'big' is not a number"),
        ({"search": {"weight_bits": 4}}, "search.weight_bits: 4 is not a list"),
        ({"search": {"weight_bits": [2, "x"]}}, "search.weight_bits[1]: 'x' is not an integer"),
        ({"search": 3}, "search: 3 is not a mapping"),
        ({"data": {"batch_size": 0}}, "data.batch_size: 0 is too small (must be > 0)"),
        ({"data": {"val_fraction": 1.5}}, "data.val_fraction: 1.5 is too large (must be < 1"),
        ({"warmup": {"epochs": -1}}, "warmup.epochs: -1 is too small (must be >= 0)"),
        ({"search": {"optimizer": {"lr": 0}}}, "search.optimizer.lr: 0 is too small (must be > 0)"),
    ],
)
def test_wrong_types_and_ranges(sections: dict[str, object], expected: str) -> None:
    assert only_problem(**sections).startswith(expected)


def test_missing_model_and_model_name() -> None:
    with pytest.raises(RecipeError, match=r"^model: required key is missing"):
        recipe_from_dict({})
    with pytest.raises(RecipeError, match=r"^model\.name: required key is missing"):
        recipe_from_dict({"model": {"num_classes": 10}})


def test_allowed_keys_are_listed_once_per_section() -> None:
    found = problems(finetune={"zzz": 1, "yyy": 2})
    assert found == [
        "finetune.zzz: unknown key (allowed: epochs, optimizer)",
        "finetune.yyy: unknown key (remove it)",
    ]


def test_literal_choices_are_listed() -> None:
    assert only_problem(search={"type": "per_lyer"}) == (
        "search.type: 'per_lyer' is not allowed (per_layer, per_channel)"
    )
    quantizer = only_problem(search={"layers": {"fc": {"weight_quantizer": "pact"}}})
    assert quantizer == "search.layers.fc.weight_quantizer: 'pact' is not allowed (minmax, lsq)"


def test_unknown_cost_name_suggests_a_known_one() -> None:
    message = only_problem(search={"cost": {"param_bit": 1e-6}})
    assert message.startswith(
        "search.cost.param_bit: unknown cost model (did you mean 'params_bit'?"
    )
    assert "bitops, ne16, params_bit" in message


def test_cost_strength_must_not_be_negative() -> None:
    message = only_problem(search={"cost": {"bitops": -1.0}})
    assert message.startswith("search.cost.bitops: -1.0 is too small (must be >= 0)")


def test_ne16_needs_8_bit_activations() -> None:
    message = only_problem(search={"cost": {"ne16": 1.0}, "act_bits": [4, 8]})
    assert message == "search.act_bits: ne16 needs 8-bit activations (set search.act_bits: [8])"
    layer = only_problem(
        search={"cost": {"ne16": 1.0}, "act_bits": [8], "layers": {"fc": {"act_bits": [4]}}}
    )
    assert layer.startswith("search.layers.fc.act_bits: ne16 needs 8-bit activations")
    assert build(search={"cost": {"ne16": 1.0}, "act_bits": [8]}).search.cost == {"ne16": 1.0}


def test_optimizer_names_are_case_insensitive_torch_optimizers() -> None:
    optimizer = build(search={"optimizer": {"name": "AdamW"}}).search.optimizer
    assert (optimizer.name, optimizer.torch_name) == ("adamw", "AdamW")
    message = only_problem(search={"arch_optimizer": {"name": "sgdd"}})
    assert message == (
        "search.arch_optimizer.name: 'sgdd' is not a torch.optim optimizer (did you mean 'sgd'?)"
    )


def test_momentum_only_for_optimizers_that_have_it() -> None:
    assert build(search={"arch_optimizer": {"name": "sgd", "momentum": 0.9}})
    message = only_problem(search={"optimizer": {"name": "adam", "momentum": 0.9}})
    assert message.startswith("search.optimizer.momentum: adam has no momentum")


def test_schedule_name_is_checked() -> None:
    schedule = build(finetune={"optimizer": {"schedule": {"name": "cosine"}}})
    assert schedule.finetune.optimizer.schedule.name == "cosine"
    message = only_problem(finetune={"optimizer": {"schedule": {"name": "cosin"}}})
    assert message == (
        "finetune.optimizer.schedule.name: 'cosin' is not allowed (none, cosine, step, onecycle)"
    )


def test_temperature_min_must_not_exceed_start() -> None:
    message = only_problem(search={"temperature": {"start": 1.0, "min": 2.0}})
    assert message.startswith("search.temperature.min: 2.0 is above start")


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_valid_devices(device: str) -> None:
    assert build(device=device).device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CPU", "cuda:0:1", ""])
def test_invalid_devices(device: str) -> None:
    assert only_problem(device=device) == (
        f"device: {device!r} is not a device (auto, cpu, cuda, cuda:N)"
    )


@pytest.mark.parametrize("name", ["a/b", "../up", "", ".hidden"])
def test_run_name_must_be_a_folder_name(name: str) -> None:
    assert only_problem(name=name).startswith(f"name: {name!r} is not a valid run name")


def test_every_problem_is_reported_at_once_on_one_line() -> None:
    found = problems(
        device="gpu",
        search={
            "type": "per_lyer",
            "weight_bits": [8, 4, 4],
            "act_bits": [0, 8],
            "epcohs": 3,
            "cost": {"param_bit": 1.0},
        },
        data={"batch_size": -2},
    )
    assert len(found) == 7
    paths = [line.split(":")[0] for line in found]
    assert set(paths) == {
        "device",
        "search.type",
        "search.weight_bits[2]",
        "search.act_bits[0]",
        "search.epcohs",
        "search.cost.param_bit",
        "data.batch_size",
    }


def test_python_callers_get_a_pydantic_error() -> None:
    with pytest.raises(ValidationError, match="duplicate precision 4"):
        schema.SearchConfig(weight_bits=[4, 4])


def test_temperature_end_sets_the_decay_from_the_epochs():
    import math

    from mpsctl.recipe import recipe_from_dict

    recipe = recipe_from_dict({"model": {"name": "mnist_cnn"},
                               "search": {"epochs": 11,
                                          "temperature": {"start": 2.0, "end": 0.02}}})
    decay = recipe.search.temperature.decay_for(recipe.search.epochs)
    assert math.isclose(2.0 * math.exp(-decay * 10), 0.02)


def test_channels_last_is_auto_true_or_false() -> None:
    assert build().channels_last == "auto"
    assert build(channels_last=False).channels_last is False
    assert build(channels_last=True).channels_last is True
    found = only_problem(channels_last="yes")
    assert found.startswith("channels_last: 'yes'"), found


# ----------------------------------------------------------------------- search.targets


def _search(**search):
    return recipe_from_dict({"model": {"name": "mnist_cnn"}, "search": search}).search


def test_yaml_target_adds_its_cost_names(tmp_path):
    mcu = tmp_path / "mcu.yaml"
    mcu.write_text("macs_per_cycle: {8: {8: 2.0}}\nenergy_per_cycle: 1.0e-11\n")
    search = _search(act_bits=[8], weight_bits=[8], targets={"my_mcu": str(mcu)},
                     cost={"my_mcu": 1e-6, "my_mcu_energy": 1.0})
    assert search.targets == {"my_mcu": str(mcu.resolve())}
    no_energy = tmp_path / "plain.yaml"
    no_energy.write_text("macs_per_cycle: {8: {8: 2.0}}\n")
    with pytest.raises(RecipeError, match=r"search.cost.plain_energy: unknown cost model"):
        _search(targets={"plain": str(no_energy)}, cost={"plain_energy": 1.0})


def test_target_files_are_checked_with_the_recipe(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("macs_per_cycle: {8: {8: 2.0}}\ncout_multiple: 0\n")
    with pytest.raises(RecipeError, match=r"search.targets.mine: .*'cout_multiple' must be"):
        _search(targets={"mine": str(bad)}, cost={"mine": 1.0})
    with pytest.raises(RecipeError, match=r"search.targets.diana: .*not found"):
        _search(targets={"diana": str(tmp_path / "nope.yaml")})
    with pytest.raises(RecipeError, match=r"search.targets.bitops: not a usable target name"):
        _search(targets={"bitops": str(bad)})


def test_recipe_files_find_targets_beside_them(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "mcu.yaml").write_text("macs_per_cycle: {8: {8: 2.0}}\n")
    (folder / "r.yaml").write_text(
        "model: {name: mnist_cnn}\n"
        "search: {act_bits: [8], weight_bits: [8], cost: {mcu: 1.0}, targets: {mcu: mcu.yaml}}\n"
    )
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(folder / "r.yaml")
    assert recipe.search.targets["mcu"] == str((folder / "mcu.yaml").resolve())


def test_ne16_target_is_the_old_name_of_targets_ne16(tmp_path):
    ne16 = tmp_path / "ne16.yaml"
    ne16.write_text("k_body: 16\n")
    search = _search(act_bits=[8], ne16_target=str(ne16))
    assert search.targets == {"ne16": str(ne16.resolve())}
    assert _search(ne16_target=None).targets == {}
    with pytest.raises(RecipeError, match="search.ne16_target: give the NE16 constants file once"):
        _search(ne16_target=str(ne16), targets={"ne16": "other.yaml"})
