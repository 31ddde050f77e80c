"""Bad input: one line naming the field and the fix, exit code 2, nothing written."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import write_recipe

BAD_OVERRIDES = [
    (["search.act_bits=[0,8]"], "search.act_bits"),
    (["search.type=per_layer"], "search.weight_bits"),
    (["search.weight_bits=[2,4,4]"], "search.weight_bits[2]"),
    (["search.epcohs=2"], "did you mean 'epochs'"),
    (["search.epochs=two"], "search.epochs"),
    (["search.cost.latency=1"], "search.cost"),
    (["model.name=nosuchnet"], "model.name"),
    (["model.name=nosuchpkg.mod:factory"], "model.name"),
    (["data.name=imagenet"], "data.name"),
    (["search.cost.ne16=1e-6", "search.act_bits=[4,8]"], "ne16"),
    (["search.temperature.mode=frozen"], "search.temperature.mode"),
    (["searchepochs"], "searchepochs"),
]


@pytest.mark.parametrize(("overrides", "named"), BAD_OVERRIDES)
def test_bad_override_is_one_line_exit_2_and_nothing_written(cli, recipe, overrides, named):
    result = cli("search", recipe, *overrides)
    assert result.exit_code == 2, result.stderr
    assert named in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (cli.root / "runs").exists()


def test_missing_recipe_and_yaml_syntax_error(cli, tmp_path):
    missing = cli("search", tmp_path / "absent.yaml")
    assert missing.exit_code == 2 and "absent.yaml" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nmodel: {name: mnist_cnn\n")
    result = cli("search", broken)
    assert result.exit_code == 2 and "line" in result.stderr


def test_stage_order_errors_name_the_command_to_run_first(cli, recipe):
    search_ckpt = cli.json("search", recipe)["checkpoint"]
    finetune = cli("finetune", search_ckpt)
    assert finetune.exit_code == 2 and "mpsctl export" in finetune.stderr
    export_ckpt = cli.json("export", search_ckpt)["checkpoint"]
    again = cli("export", export_ckpt)
    assert again.exit_code == 2 and "mpsctl search" in again.stderr
    refine = cli("refine", export_ckpt)
    assert refine.exit_code == 2 and "mpsctl search" in refine.stderr


def test_foreign_checkpoint_is_refused(cli, tmp_path):
    import torch

    foreign = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    result = cli("export", foreign)
    assert result.exit_code == 2 and "not an mpsctl checkpoint" in result.stderr


def test_real_process_prints_no_traceback(tmp_path):
    recipe = write_recipe(tmp_path, search={"weight_bits": [0, 2], "type": "per_layer"})
    proc = subprocess.run(
        [sys.executable, "-m", "mpsctl", "search", str(recipe)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: search.weight_bits")


def _checkpoint_corpus(folder, search_ckpt):
    """Files that are not usable checkpoints, each with a word its error must contain."""
    import pickle

    import torch

    cases = {}
    empty = folder / "empty.pt"
    empty.write_bytes(b"")
    cases[empty] = "empty.pt"
    noise = folder / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 8)
    cases[noise] = "noise.pt"
    truncated = folder / "truncated.pt"
    truncated.write_bytes(search_ckpt.read_bytes()[: search_ckpt.stat().st_size // 2])
    cases[truncated] = "truncated.pt"
    plain = folder / "plain.pt"
    torch.save({"conv.weight": torch.zeros(1)}, plain)
    cases[plain] = "not an mpsctl checkpoint"
    newer = folder / "newer.pt"
    data = torch.load(search_ckpt, weights_only=True)
    data["format_version"] = 99
    torch.save(data, newer)
    cases[newer] = "newer mpsctl"
    evil = folder / "evil.pt"
    marker = folder / "pwned"
    evil.write_bytes(pickle.dumps(_Evil(str(marker))))
    cases[evil] = "evil.pt"
    missing = folder / "missing.pt"
    cases[missing] = "missing.pt"
    return cases, marker


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("command", ["export", "finetune", "refine", "eval", "report"])
def test_bad_checkpoints_are_refused_by_every_command(cli, recipe, tmp_path, command):
    search_ckpt = tmp_path / "runs" / "tiny" / "search.pt"
    cli.json("search", recipe)
    folder = tmp_path / "bad"
    folder.mkdir()
    cases, marker = _checkpoint_corpus(folder, search_ckpt)
    for path, named in cases.items():
        before = sorted(p.name for p in folder.iterdir())
        result = cli(command, path)
        assert result.exit_code == 2, (path, result.stderr)
        assert named in result.stderr, (path, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr
        assert sorted(p.name for p in folder.iterdir()) == before  # nothing written
    assert not marker.exists()  # the crafted pickle ran no code


def test_unwritable_output_folder_is_one_line(cli, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    path = write_recipe(tmp_path, output_dir=str(blocker / "run"))
    result = cli("search", path)
    assert result.exit_code == 2, result.stderr
    assert "file.txt" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_non_finite_loss_stops_with_epoch_and_step(cli, tmp_path):
    path = write_recipe(tmp_path, search={"cost": {"params_bit": 1.0e38}, "epochs": 2})
    result = cli("search", path)
    assert result.exit_code == 2, result.stderr
    assert "non-finite" in result.stderr and "epoch 1" in result.stderr
    assert "strength" in result.stderr
    assert not (tmp_path / "runs" / "tiny" / "search.pt").exists()


def test_resume_without_a_saved_run(cli, recipe):
    result = cli("search", recipe, "--resume")
    assert result.exit_code == 2 and "last.pt" in result.stderr


def test_torchvision_weights_without_network(cli, tmp_path, monkeypatch):
    """model.weights: DEFAULT offline: one line saying how to pass a local weights file."""
    import urllib.error

    import torchvision.models._api as tv_api

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    path = write_recipe(tmp_path, model={"name": "torchvision:squeezenet1_1",
                                         "weights": "DEFAULT"},
                        data={"shape": [3, 32, 32]})
    result = cli("search", path)
    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "model.weights" in result.stderr and "name resolution" in result.stderr
    assert "torch.save" in result.stderr and "set model.weights to the path" in result.stderr
    assert not (cli.root / "runs").exists()
