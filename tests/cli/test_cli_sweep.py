"""`mpsctl sweep` end to end on tiny fake data: one shared warm-up, searched points at two
budgets plus the uniform and L1-pruned baselines, sweep.json, pareto.png, and --resume after
an interrupted point."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest
from conftest import write_recipe

from mpsctl.cli.plots import PARETO_SIZE
from mpsctl.errors import Interrupted

SWEEP = {"cost": {}, "weight_bits": [0, 2, 8], "epochs": 1}


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def sweep_recipe(tmp_path):
    return write_recipe(tmp_path, search=SWEEP, warmup={"epochs": 1})


def test_sweep_resumes_after_an_interrupted_point(cli, sweep_recipe, tmp_path, monkeypatch):
    import mpsctl.stages.finetune as finetune

    real = finetune.run_finetune
    calls = []

    def interrupted_third(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise Interrupted("stopped during finetune epoch 1, step 1; state saved to last.pt")
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune, "run_finetune", interrupted_third)
    first = cli("sweep", sweep_recipe, "--budgets", "20%,40%")
    assert first.exit_code == 130, first.stderr
    run = tmp_path / "runs" / "tiny"
    saved = json.loads((run / "sweep.json").read_text())
    assert [p["id"] for p in saved["points"]] == ["searched-20pct", "searched-40pct"]
    planned = [p["id"] for p in saved["plan"]]
    # the uniform baselines at each non-zero precision; pruned to each budget at the lowest
    # precision whose unpruned model is over it (2-bit is 25 % of the 8-bit size)
    assert planned == ["searched-20pct", "searched-40pct", "uniform-w2", "uniform-w8",
                       "pruned-w2-20pct", "pruned-w8-40pct"]
    kept = {p["id"]: (run / p["id"] / "finetune.pt").stat().st_mtime_ns
            for p in saved["points"]}
    warm = (run / "fp32" / "warmup.pt").stat().st_mtime_ns

    monkeypatch.setattr(finetune, "run_finetune", real)
    out = cli.json("sweep", sweep_recipe, "--budgets", "20%,40%", "--resume")
    assert (run / "fp32" / "warmup.pt").stat().st_mtime_ns == warm  # warm-up reused
    for point, mtime in kept.items():  # finished points skipped, not redone
        assert (run / point / "finetune.pt").stat().st_mtime_ns == mtime
    points = {p["id"]: p for p in out["points"]}
    assert list(points) == planned
    for p in points.values():
        assert p["status"] == "done" and p["checkpoint"].endswith("finetune.pt")
        assert {"params_bit", "bitops"} <= set(p["cost"]) and 0 <= p["accuracy"] <= 1
    top = out["highest"]
    for pid in ("searched-20pct", "searched-40pct", "pruned-w2-20pct", "pruned-w8-40pct"):
        assert points[pid]["cost"]["params_bit"] <= points[pid]["bound"]
    for pid, share in (("searched-20pct", 0.2), ("searched-40pct", 0.4)):
        assert points[pid]["bound"] == pytest.approx(share * top)
        assert points[pid]["used"] >= 0.95
    assert points["uniform-w2"]["cost"]["params_bit"] == pytest.approx(top / 4)
    assert points["uniform-w8"]["cost"]["params_bit"] == pytest.approx(top)
    assert set(out["front"]) <= set(points) and out["front"]
    baselines = [d["baseline"] for d in out["dominance"]]
    assert baselines == ["uniform-w2", "uniform-w8", "pruned-w2-20pct", "pruned-w8-40pct"]
    for d in out["dominance"]:
        if d["searched"] is not None:
            assert points[d["searched"]]["accuracy"] >= d["baseline_accuracy"]
            assert d["ratio"] == pytest.approx(points[d["searched"]]["cost"]["params_bit"]
                                               / d["baseline_cost"])
    assert _png_size(run / "pareto.png") == tuple(int(v * 100) for v in PARETO_SIZE)
    assert out["plot"] == str(run / "pareto.png")
    assert json.loads((run / "sweep.json").read_text())["points"] == json.loads(
        json.dumps(out["points"]))
    again = cli("sweep", sweep_recipe, "--budgets", "20%,40%", "--resume")  # nothing left
    assert again.exit_code == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == str(run / "sweep.json")
    assert again.stderr.count("finished before, skipped") == len(planned)
    assert "Pareto front" in again.stderr
    for baseline in baselines:  # one dominance line each
        assert f"{baseline} (" in again.stderr


def test_sweep_refuses_bad_input_before_training(cli, sweep_recipe, tmp_path):
    for args, named in ((["--budgets", "1bits"], "smallest model"),
                        (["--budgets", "5 parsecs"], "unknown unit"),
                        (["--strengths", "x"], "--strengths"),
                        ([], "either --budgets or --strengths"),
                        (["--budgets", "5%", "--strengths", "1e-6"], "either"),
                        (["--budgets", "5%", "--jobs", "0"], "--jobs")):
        result = cli("sweep", sweep_recipe, *args)
        assert result.exit_code == 2, (args, result.stderr)
        assert named in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_sweep_with_jobs_runs_every_point_in_workers(cli, sweep_recipe, tmp_path):
    out = cli.json("sweep", sweep_recipe, "--budgets", "20%,40%", "--jobs", "2")
    run = tmp_path / "runs" / "tiny"
    saved = json.loads((run / "sweep.json").read_text())
    planned = [p["id"] for p in saved["plan"]]
    assert [p["id"] for p in out["points"]] == planned == [p["id"] for p in saved["points"]]
    for p in out["points"]:
        assert p["status"] == "done" and (run / p["id"] / "finetune.pt").exists()
        if p["bound"] is not None:
            assert p["cost"]["params_bit"] <= p["bound"]
    assert out["front"] and len(out["dominance"]) == 4


@pytest.mark.slow
def test_ctrl_c_stops_a_sweep_with_jobs_and_resume_finishes_it(tmp_path):
    """A terminal's Ctrl-C reaches the whole process group: the parent and both workers."""
    recipe = write_recipe(tmp_path, name="jobs", warmup={"epochs": 1},
                          search={**SWEEP, "epochs": 3},
                          data={"name": "fake", "shape": [1, 28, 28], "size": 1536,
                                "val_size": 64, "batch_size": 32})
    command = [sys.executable, "-m", "mpsctl", "sweep", str(recipe), "--budgets", "20%,40%",
               "--no-baselines", "--jobs", "2"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    run = tmp_path / "runs" / "jobs"
    started = [run / point / "last.pt" for point in ("searched-20pct", "searched-40pct")]
    deadline = time.monotonic() + 300
    while not all(p.exists() for p in started):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:  # leave nothing running behind a failed test
                os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(proc.communicate())
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "sweep stopped" in err and "--resume" in err and "Traceback" not in err
    resumed = subprocess.run([*command, "--resume", "--json"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    points = json.loads(resumed.stdout)["points"]
    assert [p["id"] for p in points] == ["searched-20pct", "searched-40pct"]
    assert all(p["status"] == "done" and p["used"] <= 1 for p in points)


def test_sweep_over_seeds_aggregates_each_seeds_sweep(cli, sweep_recipe, tmp_path):
    out = cli.json("sweep", sweep_recipe, "--budgets", "30%", "--no-baselines",
                   "--seeds", "0,1")
    run = tmp_path / "runs" / "tiny"
    seeds = [json.loads((run / f"seed-{s}" / "sweep.json").read_text()) for s in (0, 1)]
    assert [s["seed"] for s in seeds] == [0, 1]
    for sweep in seeds:
        assert (run / f"seed-{sweep['seed']}" / "pareto.png").exists()
        assert (run / f"seed-{sweep['seed']}" / "fp32" / "warmup.pt").exists()
    saved = json.loads((run / "seeds.json").read_text())
    assert out["file"] == str(run / "seeds.json") and saved["seeds"] == [0, 1]
    (point,) = saved["points"]
    values = [s["points"][0]["accuracy"] for s in seeds]
    assert point["id"] == "searched-30pct" and point["accuracy"]["values"] == values
    assert point["accuracy"]["mean"] == pytest.approx(sum(values) / 2)
    assert _png_size(run / "pareto.png") == tuple(int(v * 100) for v in PARETO_SIZE)
    # resuming skips every finished point of every seed
    again = cli("sweep", sweep_recipe, "--budgets", "30%", "--no-baselines", "--seeds", "0,1",
                "--resume")
    assert again.exit_code == 0, again.stderr
    assert again.stderr.count("finished before, skipped") == 2


def test_sweep_refuses_bad_seeds(cli, sweep_recipe, tmp_path):
    for seeds, named in (("0,x", "whole number"), ("1,1", "twice"), (",", "empty list")):
        result = cli("sweep", sweep_recipe, "--budgets", "30%", "--seeds", seeds)
        assert result.exit_code == 2, (seeds, result.stderr)
        assert named in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
