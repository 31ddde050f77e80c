"""`mpsctl search`, `--dry-run`, overrides, `validate` and `mpsctl.load`, end to end."""

from __future__ import annotations

import json

import torch
from conftest import write_recipe

import mpsctl
from mpsctl.search.supernet import Supernet


def test_search_writes_checkpoint_and_prints_its_path_last(cli, recipe):
    result = cli("search", recipe, "--quiet")
    assert result.exit_code == 0, result.stderr
    path = result.stdout.strip().splitlines()[-1]
    assert path.endswith("search.pt")
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["stage"] == "search"
    assert ckpt["format_version"] == 1
    assert ckpt["recipe"]["search"]["weight_bits"] == [0, 2, 4, 8]
    assert set(ckpt["assignment"]) and all(k.startswith(("weight.", "act.")) for k in
                                           ckpt["assignment"])
    assert (cli.root / "runs" / "tiny" / "recipe.yaml").exists()
    assert len(ckpt["history"]) == 1 and "accuracy" in ckpt["history"][0]


def test_search_json_is_one_object_with_checkpoint_metrics_cost(cli, recipe):
    out = cli.json("search", recipe)
    assert {"checkpoint", "metrics", "cost"} <= set(out)
    assert 0.0 <= out["metrics"]["accuracy"] <= 1.0
    assert out["cost"]["params_bit"] > 0


def test_options_may_follow_overrides(cli, recipe):
    result = cli("search", recipe, "search.epochs=0", "--json", "warmup.epochs=0")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["checkpoint"].endswith("search.pt")


def test_overrides_are_typed_by_the_schema(cli, recipe):
    out = cli.json("validate", recipe, "search.epochs=3", "search.weight_bits=[8,2,0]",
                   "search.cost.bitops=1e-9")
    assert out["recipe"]["search"]["epochs"] == 3
    assert out["recipe"]["search"]["weight_bits"] == [0, 2, 8]
    assert out["recipe"]["search"]["cost"]["bitops"] == 1e-9


def test_dry_run_lists_layers_and_initial_costs(cli, recipe):
    out = cli.json("search", recipe, "--dry-run")
    names = [row["name"] for row in out["layers"]]
    assert names[0].startswith("features") and names[-1] == "head.fc"
    assert out["layers"][0]["w_bits"] == [0, 2, 4, 8]
    assert out["layers"][-1]["w_bits"] == [2, 4, 8]  # the output layer is never pruned
    assert set(out["cost"]) >= {"params_bit", "bitops"}
    assert not (cli.root / "runs").exists()


def test_dry_run_names_the_op_that_blocks_each_deployment_format(cli, recipe, tmp_path):
    """Issue 19: said before the long work, not after it."""
    out = cli.json("search", recipe, "--dry-run")
    assert out["deployment"] == {"integer": None, "qdq": None, "qonnx": None}
    (tmp_path / "exp_net_i19.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.c = nn.Conv2d(1, 4, 3)\n"
        "        self.fc = nn.Linear(4, 10)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.exp(self.c(x)).mean((2, 3)))\n"
    )
    path = write_recipe(tmp_path, name="blocked", model={"name": "exp_net_i19:Net"})
    blocked = cli.json("search", path, "--dry-run")["deployment"]
    assert set(blocked) == {"integer", "qdq", "qonnx"}
    assert all(why is not None and "op 'exp'" in why for why in blocked.values())
    text = cli("search", path, "--dry-run")
    assert text.exit_code == 0 and "ONNX integer: blocked: op 'exp'" in text.stderr


def test_dry_run_with_one_precision_gives_exact_integer_costs(cli, tmp_path):
    path = write_recipe(tmp_path, search={"type": "per_layer", "weight_bits": [4],
                                          "act_bits": [8], "cost": {}})
    out = cli.json("search", path, "--dry-run")
    expected = 0
    for row in out["layers"]:
        k = 9 if row["type"] == "Conv2d" else 1
        expected += k * row["in_channels"] * row["out_channels"] * 4
    assert out["cost"]["params_bit"] == expected
    assert float(out["cost"]["bitops"]).is_integer()


def test_load_rebuilds_the_supernet_in_eval_mode(cli, recipe):
    path = cli.json("search", recipe)["checkpoint"]
    net = mpsctl.load(path)
    assert isinstance(net, Supernet) and not net.training
    again = mpsctl.load(path)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(net(x), again(x))


def test_search_is_deterministic_on_cpu(cli, tmp_path):
    a = cli.json("search", write_recipe(tmp_path, name="a"))
    b = cli.json("search", write_recipe(tmp_path, name="b"))
    assert a["metrics"]["accuracy"] == b["metrics"]["accuracy"]
    assert a["cost"] == b["cost"]
    ca = torch.load(a["checkpoint"], weights_only=True)["assignment"]
    cb = torch.load(b["checkpoint"], weights_only=True)["assignment"]
    assert all(torch.equal(ca[k], cb[k]) for k in ca)


def test_ls_lists_registries(cli):
    assert "params_bit" in cli("ls", "costs").stdout.split()
    assert "mnist5k" in cli("ls", "datasets").stdout.split()
    assert "resnet8" in cli("ls", "models").stdout.split()
    assert cli("ls", "widgets").exit_code == 2
