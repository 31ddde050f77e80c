"""Files shipped with mpsctl: the ready recipes and the configuration fragments.

In the repository they live in the top-level ``recipes/`` and ``configs/`` folders, where
users browse them; ``mpsctl/recipes`` and ``mpsctl/configs`` are links to those folders, so
the wheel carries them as package data (every ``*.yaml``, picked up by glob when built) and
an editable or source checkout reads the same files. Everything that needs a shipped file
asks this module, so there is one answer to "where are they" for every kind of install.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mpsctl.errors import UserError
from mpsctl.registry import closest

#: The kinds of shipped files, each a folder of YAML files inside the package.
KINDS = ("recipes", "configs")


def bundled_dir(kind: str) -> Path:
    """The folder of shipped ``kind`` files (``recipes`` or ``configs``) of this install."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of bundled file {kind!r} (one of: {', '.join(KINDS)})")
    folder = resources.files("mpsctl") / kind
    # A wheel installed by pip is plain files; only a zipped package gives something else.
    if not isinstance(folder, Path):
        raise UserError(f"mpsctl is installed inside an archive; {kind} need a normal install")
    return folder


def bundled_names(kind: str) -> list[str]:
    """Names of the shipped ``kind`` files, without ``.yaml``, subfolders with ``/``
    (``quickstart``, ``targets/ne16``): the names ``mpsctl cp`` and ``include:`` accept."""
    folder = bundled_dir(kind)
    if not folder.is_dir():
        return []
    return sorted(path.relative_to(folder).with_suffix("").as_posix()
                  for path in folder.rglob("*.yaml"))


def bundled_file(kind: str, name: str) -> Path | None:
    """The shipped ``kind`` file called ``name`` (with or without ``.yaml``), or None."""
    folder = bundled_dir(kind)
    if Path(name).is_absolute():
        return None
    root = folder.resolve()
    spellings = [name] if name.endswith(".yaml") else [f"{name}.yaml", name]
    for spelling in spellings:
        candidate = folder / spelling
        # Names stay inside the folder: "../x" is not a shipped file.
        if candidate.is_file() and root in candidate.resolve().parents:
            return candidate
    return None


def bundled_path(name: str) -> Path:
    """The shipped recipe or config called ``name``: ``quickstart``, ``targets/ne16``, with
    or without ``.yaml``, optionally prefixed ``recipes/`` or ``configs/`` (recipes first).
    An unknown name is a :class:`UserError` that suggests the closest one."""
    kinds: tuple[str, ...] = KINDS
    for kind in KINDS:
        if name.startswith(f"{kind}/"):
            kinds, name = (kind,), name[len(kind) + 1 :]
            break
    for kind in kinds:
        found = bundled_file(kind, name)
        if found is not None:
            return found
    close = closest(name.removesuffix(".yaml"), [n for k in kinds for n in bundled_names(k)])
    hint = f"did you mean '{close}'? " if close else ""
    raise UserError(
        f"no shipped recipe or config named '{name}' ({hint}see mpsctl ls recipes, "
        "mpsctl ls configs)"
    )
