"""The wheel works outside the checkout: build it, install it into a fresh virtual
environment, and use the shipped recipes and configs from a folder that is not the
repository.

The fresh environment reuses this interpreter's installed packages (torch & co.) through a
``.pth`` file instead of downloading them, so the test stays offline and takes seconds. The
checkout is copied first, so building leaves nothing behind in the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "mpsctl", "configs", "recipes")

pytestmark = pytest.mark.slow


def _run(*args: str | Path, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, source / name)
    dist = tmp / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", dist, source, cwd=tmp, env=env)
    (wheel,) = dist.glob("mpsctl-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path, env: dict[str, str]) -> Path:
    """A new environment whose own site-packages holds only mpsctl; the rest is borrowed."""
    root = tmp / "venv"
    venv.create(root, with_pip=False, symlinks=os.name != "nt")
    python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                     cwd=tmp, env=env).strip())
    borrowed = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "borrowed-site-packages.pth").write_text("\n".join(borrowed) + "\n")
    # --ignore-installed: the borrowed site-packages holds this checkout's editable install.
    _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
         "-q", wheel, cwd=tmp, env=env)
    return root


def test_wheel_runs_outside_the_checkout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    wheel = _build_wheel(tmp_path, env)
    root = _fresh_venv(tmp_path, wheel, env)
    mpsctl = root / ("Scripts/mpsctl.exe" if os.name == "nt" else "bin/mpsctl")
    work = tmp_path / "elsewhere"
    work.mkdir()

    # The installed copy is the one that runs, and its shipped files are inside it.
    where = json.loads(_run(
        root / "bin" / "python", "-c",
        "import json, mpsctl; from mpsctl.resources import bundled_dir as d;"
        "from mpsctl.targets.constants import TARGETS_DIR as t;"
        "print(json.dumps([mpsctl.__file__, str(d('recipes')), str(d('configs')), str(t)]))",
        cwd=work, env=env))
    package = Path(where[0]).parent
    assert package.is_relative_to(root) and not package.is_relative_to(REPO)
    assert Path(where[1]) == package / "recipes" and not Path(where[1]).is_symlink()
    assert (Path(where[2]) / "targets" / "ne16.yaml").is_file()  # the NE16 constants
    assert Path(where[3]) == Path(where[2]) / "targets"  # every target's constants
    version = wheel.name.split("-")[1]
    assert _run(mpsctl, "--version", cwd=work, env=env).strip() == f"mpsctl {version}"

    # Every YAML file of the repository's folders made it into the wheel, none listed by hand.
    for kind in ("recipes", "configs"):
        shipped = _run(mpsctl, "ls", kind, cwd=work, env=env).split()
        in_repo = sorted(p.relative_to(REPO / kind).with_suffix("").as_posix()
                         for p in (REPO / kind).rglob("*.yaml"))
        assert "quickstart" in in_repo or kind == "configs"
        assert shipped == in_repo
    assert _run(mpsctl, "cp", "quickstart", cwd=work, env=env).strip() == "quickstart.yaml"
    copied = (work / "quickstart.yaml").read_bytes()
    assert copied == (REPO / "recipes" / "quickstart.yaml").read_bytes()

    # A 1-epoch search on tiny fake data, from a recipe that includes the copy (found beside
    # it) and a shipped fragment (found in the installed configs, which set 2/4/8 bits).
    (work / "tiny.yaml").write_text(
        "include: [quickstart, precisions/w248-a8]\n"
        "warmup: {epochs: 0}\n"
        "data: {name: fake, shape: [1, 28, 28], size: 64, val_size: 32, batch_size: 32}\n"
    )
    out = _run(mpsctl, "search", "tiny.yaml", "search.epochs=1", "--json", "--quiet",
               cwd=work, env=env)
    result = json.loads(out.strip().splitlines()[-1])
    assert (work / result["checkpoint"]).resolve() == (work / "runs/quickstart/search.pt").resolve()
    saved = (work / "runs" / "quickstart" / "recipe.yaml").read_text()
    assert "weight_bits: [2, 4, 8]" in saved and "name: fake" in saved
