"""Fixtures for end-to-end CLI tests: tiny recipes on fake data, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mpsctl.cli import app

TINY = {
    "name": "tiny",
    "seed": 0,
    "model": {"name": "mnist_cnn"},
    "data": {"name": "fake", "shape": [1, 28, 28], "size": 96, "val_size": 32,
             "batch_size": 32},
    "search": {
        "type": "per_channel",
        "weight_bits": [0, 2, 4, 8],
        "act_bits": [8],
        "cost": {"params_bit": 1.0e-6},
        "epochs": 1,
    },
    "finetune": {"epochs": 1},
}


class Cli:
    """Runs `mpsctl` in-process and keeps stdout and stderr apart."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runner = CliRunner()

    def __call__(self, *args: str):
        return self.runner.invoke(app, [str(a) for a in args])

    def json(self, *args: str) -> dict:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.chdir(tmp_path)
    return Cli(tmp_path)


def write_recipe(folder: Path, **changes) -> Path:
    """The tiny recipe with top-level sections replaced or merged by ``changes``."""
    recipe = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key].update(value)
        else:
            recipe[key] = value
    recipe.setdefault("output_dir", str(folder / "runs" / recipe["name"]))
    path = folder / f"{recipe['name']}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    return write_recipe(tmp_path)
