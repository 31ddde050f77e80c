"""`sweep --seeds`: the points of several seeds' sweeps as mean and range, and the front on
the means."""

from __future__ import annotations

import pytest

from mpsctl.stages.seeds import across_seeds


def _sweep(seed: int, points: list[tuple[str, str, float, float, float | None]]) -> dict:
    return {"seed": seed, "cost": "params_bit", "points": [
        {"id": pid, "kind": kind, "share": share, "used": 0.96 if kind == "searched" else None,
         "accuracy": val, **({"test_accuracy": test} if test is not None else {})}
        for pid, kind, share, val, test in points
    ]}


def test_means_ranges_and_the_front_on_mean_test_accuracy():
    a = _sweep(0, [("s10", "searched", 0.10, 0.95, 0.94), ("u25", "uniform", 0.25, 0.96, 0.93),
                   ("u100", "uniform", 1.0, 0.97, 0.97)])
    b = _sweep(1, [("s10", "searched", 0.12, 0.93, 0.92), ("u25", "uniform", 0.25, 0.94, 0.97),
                   ("u100", "uniform", 1.0, 0.97, 0.95)])
    out = across_seeds([a, b])
    points = {p["id"]: p for p in out["points"]}
    assert [p["id"] for p in out["points"]] == ["s10", "u25", "u100"]  # by mean size
    s10 = points["s10"]
    assert s10["share"]["mean"] == pytest.approx(0.11)
    assert (s10["accuracy"]["min"], s10["accuracy"]["max"]) == (0.93, 0.95)
    assert s10["test_accuracy"]["values"] == [0.94, 0.92] and s10["used"]["mean"] == 0.96
    assert points["u25"]["used"] is None
    assert out["score_on"] == "test_accuracy" and out["seeds_found"] == [0, 1]
    # mean test: s10 0.93, u25 0.95, u100 0.96: each beats the smaller ones, all on the front
    assert [p["front"] for p in out["points"]] == [True, True, True]
    b["points"][1]["test_accuracy"] = 0.89  # u25's mean test falls to 0.91, below s10's
    assert not {p["id"]: p for p in across_seeds([a, b])["points"]}["u25"]["front"]


def test_front_falls_back_to_validation_and_keeps_only_common_points():
    a = _sweep(0, [("s10", "searched", 0.10, 0.95, None), ("u25", "uniform", 0.25, 0.94, None),
                   ("only-here", "searched", 0.2, 0.99, None)])
    b = _sweep(1, [("s10", "searched", 0.10, 0.93, None), ("u25", "uniform", 0.25, 0.92, None)])
    out = across_seeds([a, b])
    assert out["score_on"] == "accuracy"
    assert [p["id"] for p in out["points"]] == ["s10", "u25"]
    assert [p["front"] for p in out["points"]] == [True, False]  # larger and less accurate
    assert out["points"][0]["test_accuracy"] is None
    with pytest.raises(ValueError):
        across_seeds([])
