"""Kill or interrupt a real search process, resume it, and get the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_recipe

from mpsctl.training.runlog import read_metrics

pytestmark = pytest.mark.slow

SLOW_DATA = {"name": "fake", "shape": [1, 28, 28], "size": 1536, "val_size": 64,
             "batch_size": 32}
SEARCH = {"epochs": 3}


def _start(recipe: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mpsctl", "search", str(recipe), "--json", *extra],
        cwd=recipe.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        if time.monotonic() >= deadline:
            proc.kill()  # leave no search running behind a failed test
            proc.communicate()
            raise AssertionError("no epoch checkpoint appeared")
        time.sleep(0.05)


def _result(proc: subprocess.Popen) -> dict:
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, err
    return json.loads(out)


def _assignment(path: str) -> dict:
    return torch.load(path, weights_only=True)["assignment"]


def _same_run(a: dict, b: dict) -> None:
    assert a["metrics"]["accuracy"] == b["metrics"]["accuracy"]
    assert a["metrics"]["val_loss"] == b["metrics"]["val_loss"]
    assert a["metrics"]["epoch"] == b["metrics"]["epoch"] == SEARCH["epochs"]
    assert a["cost"] == b["cost"]
    ca, cb = _assignment(a["checkpoint"]), _assignment(b["checkpoint"])
    assert all(torch.equal(ca[k], cb[k]) for k in ca)
    # metrics.jsonl: one line per epoch, none repeated by the resume, the same numbers
    la, lb = (read_metrics(Path(r["checkpoint"]).parent / "metrics.jsonl") for r in (a, b))
    assert [(e["stage"], e["epoch"]) for e in la] == [("search", e + 1)
                                                      for e in range(SEARCH["epochs"])]
    assert [(e["stage"], e["epoch"]) for e in lb] == [(e["stage"], e["epoch"]) for e in la]
    for ea, eb in zip(la, lb, strict=True):
        assert (ea["train_loss"], ea["accuracy"]) == (eb["train_loss"], eb["accuracy"])


@pytest.fixture
def reference(tmp_path: Path) -> dict:
    folder = tmp_path / "ref"
    folder.mkdir()
    recipe = write_recipe(folder, name="ref", data=SLOW_DATA, search=SEARCH)
    return _result(_start(recipe))


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, reference):
    folder = tmp_path / "killed"
    folder.mkdir()
    recipe = write_recipe(folder, name="killed", data=SLOW_DATA, search=SEARCH)
    proc = _start(recipe)
    last = folder / "runs" / "killed" / "last.pt"
    _wait_for(last, proc)
    time.sleep(0.3)  # well inside the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(last, weights_only=True)["epoch"] >= 1  # the last good epoch survived
    resumed = _result(_start(recipe, "--resume"))
    _same_run(resumed, reference)


def test_sigint_finishes_the_step_saves_and_resumes_exactly(tmp_path, reference):
    folder = tmp_path / "interrupted"
    folder.mkdir()
    recipe = write_recipe(folder, name="interrupted", data=SLOW_DATA, search=SEARCH)
    proc = _start(recipe)
    last = folder / "runs" / "interrupted" / "last.pt"
    _wait_for(last, proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    saved = torch.load(last, weights_only=True)
    assert saved["totals"] is not None and saved["totals"]["steps"] > 0  # cut mid-epoch
    resumed = _result(_start(recipe, "--resume"))
    _same_run(resumed, reference)


def test_resume_refuses_a_changed_search_space(tmp_path):
    recipe = write_recipe(tmp_path, name="changed")
    first = subprocess.run([sys.executable, "-m", "mpsctl", "search", str(recipe), "-q"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "mpsctl", "search", str(recipe), "--resume",
         "search.weight_bits=[0,4,8]"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert "search.weight_bits" in proc.stderr
    # any dataset option counts (here the number of samples); loader settings do not
    data = subprocess.run(
        [sys.executable, "-m", "mpsctl", "search", str(recipe), "--resume", "data.size=48"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert data.returncode == 2 and "data.size" in data.stderr, data.stderr
