"""Following a run: metrics.jsonl and TensorBoard through the command line (issue 18)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import write_recipe

from mpsctl.training.runlog import TENSORBOARD_MISSING, read_metrics

SEARCH_FIELDS = {"stage", "epoch", "train_loss", "train_task_loss", "train_accuracy",
                 "soft_accuracy", "accuracy", "val_loss", "cost", "expected_cost", "temperature",
                 "strength", "lr", "epoch_seconds", "wall_time"}


def test_search_and_finetune_write_one_line_per_epoch(cli, tmp_path):
    has_tensorboard = importlib.util.find_spec("tensorboard") is not None
    recipe = write_recipe(tmp_path, warmup={"epochs": 1}, search={"epochs": 2})
    flag = ["--tensorboard"] if has_tensorboard else []
    search = cli.json("search", recipe, *flag)
    export = cli.json("export", search["checkpoint"])
    cli.json("finetune", export["checkpoint"], "finetune.epochs=1")
    run = tmp_path / "runs" / "tiny"
    lines = read_metrics(run / "metrics.jsonl")
    assert [(e["stage"], e["epoch"]) for e in lines] == [
        ("warmup", 1), ("search", 1), ("search", 2), ("finetune", 1)]
    searched = [e for e in lines if e["stage"] == "search"]
    assert all(set(e) == SEARCH_FIELDS for e in searched)
    assert set(searched[0]["cost"]) >= {"params_bit", "bitops"}
    assert set(searched[0]["lr"]) == {"weights", "arch"}
    assert searched[-1]["accuracy"] == search["metrics"]["accuracy"]
    assert searched[-1]["cost"] == search["cost"]
    assert searched[0]["temperature"] > searched[1]["temperature"]
    finetuned = lines[-1]
    assert finetuned["cost"] == export["cost"] and "val_loss" in finetuned
    if not has_tensorboard:
        return
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb" / "search"), size_guidance={"histograms": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"accuracy", "soft_accuracy", "temperature", "cost/params_bit", "lr/arch",
            "strength/params_bit"} <= scalars
    assert [e.step for e in events.Scalars("accuracy")] == [1, 2]
    assert events.Scalars("accuracy")[-1].value == pytest.approx(searched[-1]["accuracy"])
    histograms = set(events.Tags()["histograms"])
    assert {f"weight_bits/{row['name']}" for row in search["layers"]} == histograms
    # the finetune inherits log.tensorboard from the search's recipe
    assert (run / "tb" / "finetune").is_dir() and (run / "tb" / "warmup").is_dir()


def test_missing_tensorboard_stops_before_training(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    result = cli("search", write_recipe(tmp_path), "--tensorboard")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {TENSORBOARD_MISSING}"
    assert not (tmp_path / "runs").exists()
