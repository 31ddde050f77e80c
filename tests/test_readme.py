"""The README's Python examples run as written, and the public API stays light to import."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import mpsctl
from mpsctl.cli import app

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "name": "quickstart",
    "seed": 0,
    "output_dir": "runs/quickstart",
    "model": {"name": "mnist_cnn"},
    "data": {"name": "fake", "shape": [1, 28, 28], "size": 64, "val_size": 32,
             "batch_size": 32},
    "search": {"type": "per_channel", "weight_bits": [0, 2, 4, 8], "act_bits": [8],
               "cost": {"params_bit": 1.0e-6}, "epochs": 1},
    "finetune": {"epochs": 1},
}


def _python_examples() -> str:
    """The ```python blocks of the README's Python API section, in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 4
    return "\n".join(blocks)


def test_public_names_resolve_and_import_mpsctl_stays_light() -> None:
    assert set(mpsctl.__all__) == {"__version__", "load", *mpsctl._HOMES}
    for name in mpsctl.__all__:
        assert getattr(mpsctl, name) is not None, name
    assert set(mpsctl.__all__) <= set(dir(mpsctl))
    with pytest.raises(AttributeError, match="no_such_name"):
        mpsctl.no_such_name  # noqa: B018
    # `import mpsctl` (what `mpsctl --help` pays) must not import torch or pydantic.
    probe = "import sys, mpsctl; print(sorted({'torch', 'pydantic'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


def test_every_public_name_has_a_readme_example() -> None:
    examples = _python_examples()
    missing = [n for n in mpsctl.__all__ if n != "__version__" and f"mpsctl.{n}" not in examples]
    assert not missing


@pytest.mark.slow
def test_readme_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX example needs the deploy extra")
    monkeypatch.chdir(tmp_path)
    # The checkpoint the examples load: a tiny search → export → finetune on fake data.
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    runner = CliRunner()
    for args in (["search", "tiny.yaml"], ["export", "runs/quickstart/search.pt"],
                 ["finetune", "runs/quickstart/export.pt"]):
        result = runner.invoke(app, [*args, "--quiet"])
        assert result.exit_code == 0, result.output
    script = tmp_path / "readme_examples.py"
    script.write_text(_python_examples())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "model.onnx").is_file()
    assert "no-such-recipe.yaml" in done.stdout  # the UserError example printed its line
