"""scripts/sweep_table.py: several seeds' sweep.json into one table and one PNG."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mpsctl.cli.plots import PARETO_SIZE

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sweep_table.py"


def _module():
    spec = importlib.util.spec_from_file_location("sweep_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sweep(folder: Path, seed: int, shift: float) -> Path:
    points = [
        {"id": "searched-10pct", "kind": "searched", "share": 0.095, "used": 0.95,
         "accuracy": 0.95 + shift, "test_accuracy": 0.94 + shift},
        {"id": "uniform-w2", "kind": "uniform", "share": 0.25, "used": None,
         "accuracy": 0.94 + shift, "test_accuracy": 0.93 + shift},
        {"id": "pruned-w2-10pct", "kind": "pruned", "share": 0.1, "used": 0.99,
         "accuracy": 0.90 + shift, "test_accuracy": 0.89 + shift},
    ]
    path = folder / f"s{seed}.json"
    path.write_text(json.dumps({"recipe": f"sweep-s{seed}", "seed": seed, "cost": "params_bit",
                                "points": points}))
    return path


def test_table_gives_mean_and_range_and_marks_the_front(tmp_path: Path) -> None:
    paths = [_sweep(tmp_path, 0, 0.0), _sweep(tmp_path, 1, 0.02)]
    table = _module().aggregate(paths)
    row = next(line for line in table.splitlines() if line.startswith("| searched-10pct"))
    assert "95.0 (94.0-96.0)" in row and row.rstrip().endswith("* |")
    pruned = next(line for line in table.splitlines() if line.startswith("| pruned"))
    assert not pruned.rstrip().endswith("* |")  # larger and less accurate than searched
    assert "2 seeds (0, 1)" in table


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    paths = [_sweep(tmp_path, 0, 0.0), _sweep(tmp_path, 1, 0.02)]
    out = _module().plot(paths, tmp_path / "front.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == tuple(int(v * 100) for v in PARETO_SIZE)
