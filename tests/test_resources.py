"""Shipped recipes and configs: one locator, every YAML file of the folders, safe names."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpsctl.recipe import CONFIGS_DIR
from mpsctl.resources import bundled_dir, bundled_file, bundled_names
from mpsctl.targets.ne16 import DEFAULT_CONSTANTS_PATH

REPO = Path(__file__).resolve().parents[1]


def test_the_package_folders_are_the_repository_folders() -> None:
    # In a checkout the package links to the top-level folders users browse and edit.
    assert bundled_dir("recipes").resolve() == (REPO / "recipes").resolve()
    assert bundled_dir("configs").resolve() == (REPO / "configs").resolve()
    assert CONFIGS_DIR == bundled_dir("configs")
    assert DEFAULT_CONSTANTS_PATH == bundled_dir("configs") / "targets" / "ne16.yaml"


@pytest.mark.parametrize("kind", ["recipes", "configs"])
def test_every_yaml_file_is_listed(kind: str) -> None:
    # Files added to the folders need no registration: the listing is a glob.
    on_disk = sorted(
        p.relative_to(REPO / kind).with_suffix("").as_posix()
        for p in (REPO / kind).rglob("*.yaml")
    )
    assert on_disk and bundled_names(kind) == on_disk


def test_bundled_file_spellings_and_escapes() -> None:
    ne16 = bundled_file("configs", "targets/ne16")
    assert ne16 is not None and ne16 == bundled_file("configs", "targets/ne16.yaml")
    assert bundled_file("recipes", "quickstart").name == "quickstart.yaml"
    assert bundled_file("recipes", "no-such-recipe") is None
    assert bundled_file("recipes", "../configs/targets/ne16") is None
    assert bundled_file("recipes", str(REPO / "recipes" / "quickstart.yaml")) is None
    with pytest.raises(ValueError, match="recipes"):
        bundled_dir("widgets")


def test_every_shipped_file_is_found_through_the_locator() -> None:
    # A path built from a module's __file__ works in a checkout and breaks in a wheel.
    package = REPO / "mpsctl"
    offenders = [str(p.relative_to(REPO)) for p in package.rglob("*.py")
                 if "__file__" in p.read_text()]
    assert not offenders
