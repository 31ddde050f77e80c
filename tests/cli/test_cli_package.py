"""What the package ships, from the command line: `mpsctl ls recipes|configs`, `mpsctl cp`
(copy a shipped file to edit, never clobber) and `mpsctl --version`."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import mpsctl
from mpsctl.resources import bundled_file, bundled_names


def _one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_ls_recipes_and_configs(cli) -> None:
    assert cli("ls", "recipes").stdout.split() == bundled_names("recipes")
    assert "quickstart" in bundled_names("recipes")
    assert "targets/ne16" in cli("ls", "configs").stdout.split()
    assert cli.json("ls", "recipes") == {"recipes": bundled_names("recipes")}


def test_cp_copies_into_the_current_folder(cli, tmp_path: Path) -> None:
    result = cli("cp", "quickstart")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "quickstart.yaml"
    copy = tmp_path / "quickstart.yaml"
    assert copy.read_bytes() == bundled_file("recipes", "quickstart").read_bytes()
    assert cli("validate", copy).exit_code == 0  # the copy is a working recipe
    assert [p.name for p in tmp_path.iterdir()] == ["quickstart.yaml"]  # no temporary left


def test_cp_refuses_to_overwrite_without_force(cli, tmp_path: Path) -> None:
    mine = tmp_path / "quickstart.yaml"
    mine.write_text("name: mine\n")
    _one_line_error(cli("cp", "quickstart"), "already exists", "--force")
    assert mine.read_text() == "name: mine\n"
    assert cli("cp", "quickstart", "--force").exit_code == 0
    assert mine.read_bytes() == bundled_file("recipes", "quickstart").read_bytes()


def test_cp_destinations(cli, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    assert cli("cp", "recipes/qat8-mnist5k.yaml", "mine").exit_code == 0
    assert (tmp_path / "mine" / "qat8-mnist5k.yaml").is_file()
    assert cli.json("cp", "targets/ne16", "my-ne16") == {"file": "my-ne16.yaml"}
    assert (tmp_path / "my-ne16.yaml").read_bytes() == (
        bundled_file("configs", "targets/ne16").read_bytes()
    )
    _one_line_error(cli("cp", "quickstart", "absent/"), "absent", "does not exist")
    assert not (tmp_path / "absent").exists()


def test_cp_unknown_name_suggests(cli, tmp_path: Path) -> None:
    _one_line_error(cli("cp", "quickstrat"), "'quickstrat'", "did you mean 'quickstart'")
    _one_line_error(cli("cp", "../pyproject.toml"), "mpsctl ls recipes")
    assert list(tmp_path.iterdir()) == []


def test_version_is_written_once(cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"mpsctl {mpsctl.__version__}"
    # The installed metadata reads the same string (pyproject: dynamic version).
    assert metadata.version("mpsctl") == mpsctl.__version__


@pytest.mark.parametrize("args", [["ls", "recipes"], ["cp", "quickstart"]])
def test_shipped_file_commands_do_not_import_torch(args: list[str], tmp_path: Path) -> None:
    # Listing or copying a YAML file should not pay torch's import (about a second).
    probe = (
        "import atexit, sys; atexit.register(lambda: print('torch' in sys.modules));"
        f"sys.argv = ['mpsctl', *{args!r}]; from mpsctl.cli import main; main()"
    )
    repo = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": repo})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
