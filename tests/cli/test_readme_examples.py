"""The README's own-data examples, run as written (epochs shortened) on files the test writes."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
#: Shorter runs than the README's, so the examples stay test-sized; nothing else changes.
SHORT = ["warmup.epochs=1", "search.epochs=1", "finetune.epochs=1"]


def readme_example(name: str) -> str:
    """The fenced block right after ``<!-- example: NAME -->`` in the README."""
    match = re.search(
        rf"<!-- example: {re.escape(name)} -->\n```\w*\n(.*?)```", README.read_text(), re.S
    )
    assert match, f"README has no example {name}"
    return match.group(1)


def run_commands(cli, script: str, extra: list[str]) -> list:
    """Each ``mpsctl ...`` line of ``script``; ``extra`` overrides go to recipe commands."""
    results = []
    for line in script.strip().splitlines():
        args = shlex.split(line)
        assert args[0] == "mpsctl", line
        if args[2].endswith(".yaml"):
            args += extra
        result = cli(*args[1:])
        assert result.exit_code == 0, (line, result.stderr)
        results.append(result)
    return results


def test_arrays_without_python(cli, tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 12, 240)
    # each class lifts a few of the 40 channels, so a short run learns something
    x = rng.normal(0.0, 1.0, (240, 40, 49)).astype(np.float32) * 3 + 5
    x[np.arange(240), labels] += 4.0
    np.save(tmp_path / "x_train.npy", x)
    np.save(tmp_path / "y_train.npy", labels)
    (tmp_path / "kws.yaml").write_text(readme_example("kws.yaml"))
    results = run_commands(cli, readme_example("kws.sh"), [*SHORT, "model.width=8"])
    assert "recipe is valid" in results[0].stderr
    assert (tmp_path / "runs/kws/finetune.pt").exists()
    graph = onnx.load(tmp_path / "kws.onnx").graph
    assert [i.type.tensor_type.shape.dim[1].dim_value for i in graph.input] == [40]
    assert "ONNX (integer)" in results[4].stderr and "top-1 agreement" in results[4].stderr
    assert "test split (24 samples)" in results[-1].stdout
    report = cli.json("report", "runs/kws/finetune.pt")
    assert [r["type"] for r in report["layers"]][:2] == ["Conv1d", "Conv1d"]
    assert all(row["test_accuracy"] is not None for row in report["lineage"])


def test_own_dataset_class(cli, tmp_path):
    (tmp_path / "my_data.py").write_text(readme_example("my_data.py"))
    (tmp_path / "sensors.yaml").write_text(readme_example("sensors.yaml"))
    sys.modules.pop("my_data", None)
    try:
        out = cli.json("validate", "sensors.yaml")
        assert out["data"] == {"input_shape": [3, 64], "num_classes": 4,
                               "samples": {"train": 512, "val": 128, "test": 128}}
        assert out["warnings"] == []
        # the windows are centred on 0: an unsigned input quantizer would clip half of them
        unsigned = cli("validate", "sensors.yaml", "search.input_signed=false")
        assert unsigned.exit_code == 0
        assert "warning: search.input_signed: the training inputs go down to -" in unsigned.stderr
        wide = cli.json("validate", "sensors.yaml", "search.input_clip=0.5")
        assert [w["field"] for w in wide["warnings"]] == ["search.input_clip"]
        # the README's 3 warm-up epochs (cheap, float); one search and fine-tuning epoch
        search = cli.json("search", "sensors.yaml", "search.epochs=1", "finetune.epochs=1")
        export = cli.json("export", search["checkpoint"])
        finetune = cli.json("finetune", export["checkpoint"])
    finally:
        sys.modules.pop("my_data", None)
    # the classes are separated by a shift of 1 per label: far better than chance (0.25)
    assert search["metrics"]["fp32_accuracy"] > 0.5
    assert search["metrics"]["fp32_test_accuracy"] > 0.5
    assert 0 <= finetune["metrics"]["test_accuracy"] <= 1


@pytest.mark.parametrize(
    ("factory", "text"),
    [
        ("def make():\n    return [1, 2, 3]\n", "returned int as the train set; it must be a"),
        ("def make():\n    return (1,)\n", "returned tuple; it must return (train, val)"),
        ("def make():\n    return 7\n", "returned int"),
        (
            "import torch\n"
            "def make():\n"
            "    a = [(torch.zeros(3), 0), (torch.zeros(4), 1)]\n"
            "    return a, a\n",
            "samples of inconsistent shape: train[0] is [3] but train[1] is [4]",
        ),
        (
            "import torch\n"
            "from mpsctl.data import DataBundle\n"
            "def make():\n"
            "    a = [(torch.zeros(3), 0), (torch.zeros(3), 5)]\n"
            "    return DataBundle(a, a, (3,), num_classes=2)\n",
            "train label 5 of bad_data:make is out of range for 2 classes",
        ),
        (
            "import torch\n"
            "def make():\n"
            "    a = [(torch.zeros(3, dtype=torch.uint8), 0)]\n"
            "    return a, a\n",
            "torch.uint8 tensor input",
        ),
        ("def make(size):\n    return None\n", "data.size"),
    ],
)
def test_bad_factories_are_one_line_exit_2(cli, tmp_path, factory, text):
    from conftest import write_recipe

    (tmp_path / "bad_data.py").write_text(factory)
    sys.modules.pop("bad_data", None)
    data = {"name": "bad_data:make", "shape": None, "size": None, "val_size": None}
    if "size" in factory:
        data = {"name": "bad_data:make", "shape": None, "val_size": None, "sizee": 3}
    path = write_recipe(tmp_path, data=data)
    try:
        result = cli("search", path)
    finally:
        sys.modules.pop("bad_data", None)
    assert result.exit_code == 2, result.stderr
    assert text in result.stderr
    assert result.stderr.startswith("error: data.")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ({"train": "nope.npz"}, "error: data.train: no file nope.npz"),
        ({"train": "d.npz", "nomalize": True}, "error: data.nomalize: not an option of dataset "
         "'tensors' (did you mean 'normalize'?)"),
        ({"train": "d.npz", "num_classes": 2}, "error: data.num_classes: train label"),
        ({"train": {"x": "d.npz", "y": "d.npz"}}, "error: data.train: a pair takes .npy or .pt"),
    ],
)
def test_bad_array_data_is_one_line_exit_2(cli, tmp_path, data, text):
    from conftest import write_recipe

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((20, 1, 28, 28), dtype=np.float32),
             y=np.arange(20) % 10)
    path = write_recipe(tmp_path, data={"name": "tensors", "shape": None, "size": None,
                                        "val_size": None, **data})
    for command in ("search", "validate"):
        result = cli(command, path)
        assert result.exit_code == 2, result.stderr
        assert result.stderr.startswith(text), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
