"""Hardware targets end to end: precision checks, refine per target, YAML-only targets."""

from __future__ import annotations

import pytest
from conftest import write_recipe

ROUNDED_MCU = ("macs_per_cycle: {8: {8: 2.0, 4: 3.5, 2: 6.0}}\n"
               "overhead_per_layer: 100\ncout_multiple: 8\nenergy_per_cycle: 1.0e-11\n")


@pytest.mark.parametrize(("search", "needle"), [
    ({"cost": {"mpic_latency": 1e-6}, "weight_bits": [0, 3, 8]},
     "layer 'features.conv1.conv': MPIC cannot run 3-bit weights with 8-bit activations"),
    ({"cost": {"diana_latency": 1e-6}, "weight_bits": [0, 2, 4, 8]},
     "layer 'features.conv1.conv': DIANA cannot run 4-bit weights"),
    ({"cost": {"diana_latency": 1e-6}, "weight_bits": [0, 2, 8], "act_bits": [4, 8]},
     "search.act_bits: diana_latency needs 8-bit activations"),
])
def test_precisions_a_target_cannot_run_are_refused_before_training(cli, tmp_path, search,
                                                                     needle):
    path = write_recipe(tmp_path, search=search)
    result = cli("search", path)
    assert result.exit_code == 2
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_diana_search_refine_export_report(cli, tmp_path):
    path = write_recipe(tmp_path, search={"cost": {"diana_latency": 1e-4},
                                          "weight_bits": [0, 2, 8]})
    search = cli.json("search", path)
    refine = cli.json("refine", search["checkpoint"], "--target", "diana")
    assert refine["total"]["after"] <= refine["total"]["before"]
    assert all(r["after"] <= r["before"] for r in refine["layers"])
    export = cli.json("export", refine["checkpoint"])
    assert export["cost"]["diana_latency"] == pytest.approx(refine["total"]["after"])
    report = cli.json("report", export["checkpoint"])
    # every target that runs 8-bit activations with {2, 8}-bit weights is reported
    assert {"diana_latency", "gap8_latency", "mpic_latency", "mpic_energy"} <= set(
        report["cost"])
    assert set(next(iter(report["layer_costs"].values()))) == set(report["cost"])


@pytest.mark.parametrize("target", ["gap8", "mpic"])
def test_refine_refuses_targets_promotion_cannot_speed_up(cli, tmp_path, target):
    result = cli("refine", tmp_path / "missing.pt", "--target", target)
    assert result.exit_code == 2
    assert "never makes a layer faster" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_target_from_yaml_only(cli, tmp_path):
    (tmp_path / "my_mcu.yaml").write_text(ROUNDED_MCU)
    (tmp_path / "plain_mcu.yaml").write_text("macs_per_cycle: {8: {8: 2.0, 4: 3.5, 2: 6.0}}\n")
    path = write_recipe(tmp_path, search={
        "cost": {"my_mcu": 1e-5},
        "targets": {"my_mcu": "my_mcu.yaml", "plain_mcu": "plain_mcu.yaml"},
    })
    listed = cli.json("ls", "costs", "--recipe", path)["costs"]
    assert {"my_mcu", "my_mcu_energy", "plain_mcu", "mpic_latency"} <= set(listed)
    assert "my_mcu" not in cli.json("ls", "costs")["costs"]
    search = cli.json("search", path)
    assert search["cost"]["my_mcu"] > 0
    refine = cli.json("refine", search["checkpoint"], "--target", "my_mcu")
    assert refine["total"]["after"] <= refine["total"]["before"]
    assert refine["cost"]["my_mcu"] == pytest.approx(refine["total"]["after"])
    assert refine["cost"]["my_mcu_energy"] == pytest.approx(refine["total"]["after"] * 1e-11)
    plain = cli("refine", search["checkpoint"], "--target", "plain_mcu")
    assert plain.exit_code == 2 and "no channel rounding" in plain.stderr
    unknown = cli("refine", search["checkpoint"], "--target", "nope")
    assert unknown.exit_code == 2 and "my_mcu" in unknown.stderr
