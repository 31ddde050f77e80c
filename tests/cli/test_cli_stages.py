"""search → (refine) → export → finetune → eval/report on tiny fake data."""

from __future__ import annotations

import pytest
import torch
from conftest import write_recipe

import mpsctl


def _report_params_bit(report: dict) -> float:
    total = 0
    for row in report["layers"]:
        k = 9 if row["type"] == "Conv2d" else 1
        bits = row["w_bits"]
        per_channel = bits if isinstance(bits, list) else [bits] * row["out_channels"]
        total += k * row["in_channels"] * sum(per_channel)
    return total


def test_export_finetune_eval_report_chain(cli, recipe):
    search = cli.json("search", recipe)
    export = cli.json("export", search["checkpoint"])
    assert export["check"]["max_abs_diff"] <= 1e-5 * max(export["check"]["output_scale"], 1)
    # hard cost of the search equals the cost of the exported model, exactly
    assert export["cost"]["params_bit"] == search["cost"]["params_bit"]
    finetune = cli.json("finetune", export["checkpoint"], "finetune.epochs=1")
    assert finetune["metrics"]["accuracy"] >= export["metrics"]["accuracy"]
    evaluated = cli.json("eval", finetune["checkpoint"])
    assert evaluated["metrics"]["accuracy"] == finetune["metrics"]["accuracy"]
    assert (evaluated["split"], evaluated["samples"]) == ("val", 32)
    # the held-out split: reported by every stage, measured again by `eval --split test`
    tested = cli.json("eval", finetune["checkpoint"], "--split", "test")
    assert tested["samples"] == 64
    assert tested["metrics"]["accuracy"] == finetune["metrics"]["test_accuracy"]
    assert tested["metrics"]["loss"] == pytest.approx(finetune["metrics"]["test_loss"])
    assert export["metrics"]["test_accuracy"] == search["metrics"]["test_accuracy"]
    assert cli.json("eval", finetune["checkpoint"], "--split", "train")["samples"] == 96
    bad = cli("eval", finetune["checkpoint"], "--split", "tset")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: --split: 'tset'")
    report = cli.json("report", finetune["checkpoint"])
    assert report["stage"] == "finetune"
    assert report["cost"]["params_bit"] == _report_params_bit(report)
    assert 0 <= report["metrics"]["accuracy"] <= 1
    assert [row["stage"] for row in report["lineage"]] == ["fp32", "search", "export",
                                                           "finetune"]
    assert all(0 <= row["test_accuracy"] <= 1 for row in report["lineage"])
    human = cli("report", finetune["checkpoint"])
    assert "test accuracy" in human.stdout
    # -q like every other command: nothing on stderr, the result still on stdout
    for command in ("eval", "report"):
        quiet = cli(command, "-q")  # the newest checkpoint, picked without a word
        assert quiet.exit_code == 0 and quiet.stdout and not quiet.stderr, command


def test_export_removes_pruned_channels(cli, tmp_path):
    path = write_recipe(tmp_path, search={"cost": {"params_bit": 1.0}, "epochs": 2,
                                          "arch_optimizer": {"name": "adam", "lr": 0.5}})
    search = cli.json("search", path)
    export = cli.json("export", search["checkpoint"])
    rows = {row["name"]: row for row in export["layers"]}
    pruned = [r for r in rows.values() if r["out_channels"] < r["total_out_channels"]]
    assert pruned, "a huge size strength must prune channels"
    net = mpsctl.load(export["checkpoint"])
    layers = dict(net.layers())
    for name, row in rows.items():
        assert layers[name].weight.shape[0] == row["out_channels"]
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_newest_checkpoint_is_used_when_none_given(cli, tmp_path):
    cli.json("search", write_recipe(tmp_path))
    result = cli("export")
    assert result.exit_code == 0, result.stderr
    assert "search.pt" in result.stderr
    assert result.stdout.strip().endswith("export.pt")


def test_refine_then_export_and_finetune(cli, tmp_path):
    path = write_recipe(tmp_path, search={"cost": {"ne16": 1.0e-5}})
    search = cli.json("search", path)
    refine = cli.json("refine", search["checkpoint"], "--target", "ne16")
    assert refine["total"]["after"] <= refine["total"]["before"]
    assert all(r["after"] <= r["before"] for r in refine["layers"])
    # the exact search is never worse than the earlier heuristic (summed over shared layers)
    total = refine["total"]
    assert total["after"] <= total["heuristic_cycles"] <= total["before"]
    assert refine["total"]["heuristic_cycles"] == sum(r["heuristic_cycles"]
                                                      for r in refine["layers"])
    twice = cli.json("refine", refine["checkpoint"])
    assert twice["total"]["after"] == refine["total"]["after"]
    export = cli.json("export", refine["checkpoint"])
    assert export["cost"]["ne16"] == refine["total"]["after"]
    cli.json("finetune", export["checkpoint"])


def test_plain_qat_single_precision(cli, tmp_path):
    path = write_recipe(tmp_path, search={"type": "per_layer", "weight_bits": [8],
                                          "act_bits": [8], "cost": {}})
    search = cli.json("search", path)
    export = cli.json("export", search["checkpoint"])
    assert export["check"]["max_abs_diff"] == 0.0
    assert all(row["w_bits"] == 8 and row["a_bits"] == 8 for row in export["layers"])


def test_ne16_search_refine_export_finetune_on_cifar_shaped_resnet8(cli, tmp_path):
    path = write_recipe(
        tmp_path, name="r8", model={"name": "resnet8"},
        data={"name": "fake", "shape": [3, 32, 32], "size": 64, "val_size": 32,
              "batch_size": 32},
        search={"cost": {"ne16": 1.0e-6}, "act_bits": [8]},
    )
    search = cli.json("search", path)
    assert search["cost"]["ne16"] > 0
    refine = cli.json("refine", search["checkpoint"])
    assert refine["total"]["after"] <= refine["total"]["before"]
    export = cli.json("export", refine["checkpoint"])
    assert export["cost"]["ne16"] == refine["total"]["after"]
    report = cli.json("report", export["checkpoint"])
    assert set(report["layer_costs"]["conv1"] if "conv1" in report["layer_costs"] else
               next(iter(report["layer_costs"].values()))) >= {"ne16", "params_bit"}
    finetune = cli.json("finetune", export["checkpoint"])
    assert finetune["cost"]["ne16"] == export["cost"]["ne16"]


def test_ne16_with_4_bit_activations_is_refused_before_training(cli, tmp_path):
    path = write_recipe(tmp_path, search={"cost": {"ne16": 1.0e-6}, "act_bits": [4, 8]})
    result = cli("search", path)
    assert result.exit_code == 2 and "ne16" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_ne16_target_file_describes_an_engine_variant(cli, tmp_path):
    import yaml

    from mpsctl.targets.ne16 import DEFAULT_CONSTANTS_PATH

    variant = yaml.safe_load(DEFAULT_CONSTANTS_PATH.read_text())
    variant["stream_out"] = variant["stream_out"] + 1000
    target = tmp_path / "ne16-slow-stream.yaml"
    target.write_text(yaml.safe_dump(variant))
    stock = write_recipe(tmp_path, name="stock", search={"cost": {"ne16": 1e-6}})
    slow = write_recipe(tmp_path, name="slow",
                        search={"cost": {"ne16": 1e-6}, "ne16_target": str(target)})
    base = cli.json("search", stock, "--dry-run")["cost"]["ne16"]
    changed = cli.json("search", slow, "--dry-run")["cost"]["ne16"]
    assert changed > base
    bad = write_recipe(tmp_path, name="bad",
                       search={"cost": {"ne16": 1e-6}, "ne16_target": str(tmp_path / "x.yaml")})
    result = cli("search", bad, "--dry-run")
    assert result.exit_code == 2 and "x.yaml" in result.stderr


@pytest.mark.slow
def test_finetune_keeps_or_improves_accuracy_on_mnist5k(cli, tmp_path):
    path = write_recipe(
        tmp_path, name="mnist",
        data={"name": "mnist5k", "batch_size": 64, "shape": None, "val_size": None, "size": None},
        warmup={"epochs": 2, "optimizer": {"name": "adam", "lr": 3.0e-3}},
        search={"epochs": 2, "cost": {"params_bit": 5.0e-6},
                "temperature": {"start": 1.0, "end": 0.5}},
        finetune={"epochs": 2, "optimizer": {"name": "adam", "lr": 1.0e-3}},
    )
    search = cli.json("search", path)
    export = cli.json("export", search["checkpoint"])
    finetune = cli.json("finetune", export["checkpoint"])
    assert finetune["metrics"]["accuracy"] >= export["metrics"]["accuracy"]
    assert finetune["metrics"]["accuracy"] > 0.5  # real digits, learnt
