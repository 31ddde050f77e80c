"""Two CPU processes under torchrun (gloo): one checkpoint, ranks in sync, loads in one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_recipe

import mpsctl
from mpsctl.training.runlog import read_metrics

pytestmark = pytest.mark.slow

DATA = {"name": "fake", "shape": [1, 28, 28], "size": 128, "val_size": 64, "batch_size": 16}


def _torchrun(folder: Path, *args: str) -> dict:
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "mpsctl", *args,
         "--json"],
        cwd=folder, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout  # only rank 0 prints
    return json.loads(lines[0])


def test_two_process_search_writes_one_checkpoint_in_sync(cli, tmp_path):
    recipe = write_recipe(tmp_path, name="ddp", data=DATA,
                          search={"temperature": {"mode": "gumbel"}})
    result = _torchrun(tmp_path, "search", str(recipe))
    assert result["metrics"]["ranks"] == 2
    assert result["metrics"]["ranks_in_sync"] is True
    run = tmp_path / "runs" / "ddp"
    assert sorted(p.name for p in run.glob("*.pt")) == ["last.pt", "search.pt"]
    state = torch.load(run / "search.pt", weights_only=True)["model_state"]
    assert not any(k.startswith("module.") for k in state)
    net = mpsctl.load(run / "search.pt")
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    export = cli.json("export", run / "search.pt")
    assert export["checkpoint"].endswith("export.pt")
    # resume under torchrun: one more epoch on top of the saved one
    resumed = _torchrun(tmp_path, "search", str(recipe), "--resume", "search.epochs=2")
    assert resumed["metrics"]["epoch"] == 2
    assert resumed["metrics"]["ranks_in_sync"] is True
    # rank 0 alone writes the run log, and the resume adds only the new epoch
    lines = read_metrics(run / "metrics.jsonl")
    assert [(e["stage"], e["epoch"]) for e in lines] == [("search", 1), ("search", 2)]
    finetune = _torchrun(tmp_path, "finetune", export["checkpoint"])
    assert finetune["checkpoint"].endswith("finetune.pt")
    evaluated = _torchrun(tmp_path, "eval", finetune["checkpoint"])
    assert 0.0 <= evaluated["metrics"]["accuracy"] <= 1.0


def test_two_process_sweep_with_a_budget(tmp_path):
    recipe = write_recipe(tmp_path, name="ddp-sweep", data=DATA, warmup={"epochs": 1},
                          search={"cost": {}, "weight_bits": [0, 2, 8]})
    result = _torchrun(tmp_path, "sweep", str(recipe), "--budgets", "30%", "--no-baselines")
    (point,) = result["points"]
    assert point["id"] == "searched-30pct" and point["status"] == "done"
    assert 0.95 <= point["used"] <= 1.0
    search = torch.load(tmp_path / "runs" / "ddp-sweep" / "searched-30pct" / "search.pt",
                        weights_only=True)
    assert search["metrics"]["ranks"] == 2 and search["metrics"]["ranks_in_sync"] is True
    assert (tmp_path / "runs" / "ddp-sweep" / "pareto.png").exists()
