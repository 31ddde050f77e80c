"""`mpsctl validate`: everything that fails before training is found without training."""

from __future__ import annotations

import json

import pytest
from conftest import write_recipe


def _problems(cli, recipe, *overrides) -> dict[str, str]:
    result = cli("validate", recipe, *overrides, "--json")
    assert result.exit_code == 2, result.stderr
    out = json.loads(result.stdout)
    assert out["valid"] is False
    assert not (cli.root / "runs").exists()
    return {p["field"]: p["message"] for p in out["problems"]}


def test_a_valid_recipe_is_checked_through_the_supernet(cli, recipe):
    result = cli("validate", recipe)
    assert result.exit_code == 0, result.stderr
    assert "name: tiny" in result.stdout
    out = cli.json("validate", recipe)
    assert out["valid"] and out["problems"] == []
    assert out["checks"] == ["recipe", "device", "model", "data", "model fits data",
                             "search space"]
    assert out["data"] == {"input_shape": [1, 28, 28], "num_classes": 10,
                           "samples": {"train": 96, "val": 32, "test": 64}}
    assert not (cli.root / "runs").exists()


def test_unknown_names_get_a_suggestion_and_are_all_reported(cli, recipe):
    found = _problems(cli, recipe, "model.name=mnist_cnm", "data.name=mnist5")
    assert "did you mean 'mnist_cnn'" in found["model.name"]
    assert "did you mean 'mnist5k'" in found["data.name"]


def test_failing_import_paths(cli, recipe, tmp_path):
    (tmp_path / "broken_code.py").write_text("import nosuchmodule_xyz\n")
    found = _problems(cli, recipe, "model.name=broken_code:net", "data.name=nosuchpkg.data:make")
    assert "cannot import module 'broken_code'" in found["model.name"]
    assert "nosuchmodule_xyz" in found["model.name"]
    assert "cannot import module 'nosuchpkg.data'" in found["data.name"]


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        (["model.widht=8"], "model.widht", "mnist_cnn has no argument"),
        (["data.sizee=8"], "data.sizee", "did you mean 'size'"),
        (["data.shape=[3,28,28]"], "model", "cannot take the data's samples of shape [3, 28, 28]"),
        (["model.num_classes=7"], "model.num_classes", "10 classes"),
        (["search.exclude=[clasifier.*]"], "search.exclude[0]", "matches no layer"),
        (['search.layers={"stme*": {weight_bits: [8]}}'], "search.layers[stme*]",
         "matches no layer"),
        (["search.epochs=two"], "search.epochs", ""),
    ],
)
def test_each_kind_of_problem_names_its_field(cli, recipe, overrides, field, text):
    found = _problems(cli, recipe, *overrides)
    assert field in found, found
    assert text in found[field]


def test_human_output_lists_every_problem_one_per_line(cli, recipe):
    result = cli("validate", recipe, "model.name=mnist_cnm", "data.name=mnist5")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in result.stderr


def test_search_refuses_a_shape_the_model_cannot_take(cli, tmp_path):
    path = write_recipe(tmp_path, data={"shape": [3, 28, 28]})
    for args in (["search", path], ["search", path, "--dry-run"]):
        result = cli(*args)
        assert result.exit_code == 2, result.stderr
        assert result.stderr.startswith("error: model: cannot take the data's samples")
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
