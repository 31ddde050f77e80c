"""`search.budget` end to end: refused before training when impossible, met by the exported
model, reported as slack."""

from __future__ import annotations

import torch
from conftest import write_recipe


def test_impossible_budget_is_refused_before_training(cli, tmp_path):
    recipe = write_recipe(tmp_path, search={"cost": {}, "budget": {"params_bit": "50bits"}},
                          warmup={"epochs": 3})
    result = cli("search", recipe)
    assert result.exit_code == 2, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert line.startswith("error: search.budget.params_bit: 50bits")
    # the smallest reachable cost is named: min_channels 1 per layer at 2 bits, head at 2 bits
    smallest = 2 * (9 * 1 + 9 * 1 + 9 * 1 + 1 * 10)  # the head sees the pooled channel
    assert f"{smallest:,} bits" in line and "smallest model" in line
    assert not (tmp_path / "runs").exists()


def test_budget_is_met_by_the_exported_model_and_reported(cli, tmp_path):
    recipe = write_recipe(tmp_path, search={"cost": {}, "budget": {"params_bit": "30%"},
                                            "epochs": 2})
    searched = cli.json("search", recipe)
    bound = searched["budget"]["params_bit"]["budget"]
    ckpt = torch.load(searched["checkpoint"], weights_only=True)
    history = ckpt["history"]
    assert all("strength" in h["budget"]["params_bit"] for h in history)
    assert ckpt["budgets"] == {"params_bit": bound}
    exported = cli.json("export", searched["checkpoint"])
    used = exported["budget"]["params_bit"]
    assert exported["cost"]["params_bit"] <= bound
    assert 0.95 <= used["used"] <= 1.0
    assert used["slack"] == bound - exported["cost"]["params_bit"]
    report = cli.json("report", exported["checkpoint"])
    assert report["budget"] == exported["budget"]
    human = cli("report", exported["checkpoint"])
    assert "budget params_bit:" in human.stdout and "used" in human.stdout
