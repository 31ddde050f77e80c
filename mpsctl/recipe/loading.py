"""Read a recipe: YAML files, includes, ``key=value`` overrides, validation, serialisation."""

from __future__ import annotations

import copy
import re
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mpsctl.errors import RecipeError
from mpsctl.recipe.errors import describe_errors, format_path, problems_error, show
from mpsctl.recipe.schema import Recipe
from mpsctl.resources import bundled_dir

#: Shared fragments (targets, precision presets, training defaults) a recipe can include.
CONFIGS_DIR = bundled_dir("configs")

INCLUDE_KEY = "include"


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads ``1e-3`` as a float and refuses duplicate keys."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, Hashable) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# PyYAML (YAML 1.1) reads ``1e-3`` and ``1.0e3`` as strings; recipes mean numbers.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; syntax errors become a RecipeError naming ``source`` and the line."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        raise RecipeError(f"{where}: invalid YAML ({exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: invalid YAML ({exc})") from None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The mapping at the top of a YAML file (an empty file is an empty mapping)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}") from None
    except IsADirectoryError:
        raise RecipeError(f"{path} is a folder (pass a recipe .yaml file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe {path} ({_reason(exc)})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(
            f"{path}: the top level must be a mapping of keys (got {type(data).__name__})"
        )
    return data


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read, include, override and validate the recipe at ``path``."""
    path = Path(path)
    data = _read_with_includes(path, ())
    _resolve_target_files(data, path.parent)
    return _validated(apply_overrides(data, overrides))


def recipe_from_dict(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> Recipe:
    """Validate an in-memory recipe (its includes resolve from the working folder)."""
    merged = _expand_includes(copy.deepcopy(dict(data)), Path.cwd(), (), "recipe")
    return _validated(apply_overrides(merged, overrides))


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain containers (safe for ``torch.load(weights_only=True)``)."""
    return _plain(recipe.model_dump(mode="python", exclude={INCLUDE_KEY}))


def dump_recipe_yaml(recipe: Recipe, path: str | Path) -> Path:
    """Write the resolved recipe beside a checkpoint so the run can be repeated from it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)
    path.write_text(text, encoding="utf-8")
    return path


def recipe_diff(a: Mapping[str, Any], b: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """Dotted keys under ``keys`` whose values differ between two recipe dicts.

    Used to refuse resuming a run whose recipe changed in a way that matters.
    """
    changed: list[str] = []
    for key in keys:
        for leaf in _leaf_diffs(key, _dotted_get(a, key), _dotted_get(b, key)):
            if leaf not in changed:
                changed.append(leaf)
    return changed


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: mappings merge, everything else is replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (values parsed as YAML) in order; report all bad ones."""
    found: list[str] = []
    for item in overrides:
        try:
            keys, value = _parse_override(item)
            _assign(data, keys, value, item)
        except RecipeError as exc:
            found.append(str(exc))
    if found:
        raise problems_error(found)
    return data


def _resolve_target_files(data: dict[str, Any], recipe_dir: Path) -> None:
    """Make ``search.targets`` paths that name a file beside the recipe absolute, so the
    run reads the same file from any folder (later stages rebuild from the checkpoint)."""
    search = data.get("search")
    targets = search.get("targets") if isinstance(search, dict) else None
    if not isinstance(targets, dict):
        return
    for name, value in targets.items():
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            beside = recipe_dir / value
            if beside.is_file():
                targets[name] = str(beside.resolve())


def _validated(data: dict[str, Any]) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise problems_error(describe_errors(exc, Recipe)) from None


def _read_with_includes(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    data = read_yaml_mapping(path)
    return _expand_includes(data, path.parent, chain + (path.resolve(),), str(path))


def _expand_includes(
    data: dict[str, Any], base_dir: Path, chain: tuple[Path, ...], source: str
) -> dict[str, Any]:
    """Merge the fragments named by ``data["include"]`` in order, then ``data`` on top."""
    names = data.pop(INCLUDE_KEY, None) or []
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise RecipeError(
            f"{source}: include: {show(names)} is not a list of file names "
            "(e.g. include: [precisions/w248-a8.yaml])"
        )
    merged: dict[str, Any] = {}
    for name in names:
        fragment = _find_include(name, base_dir, source)
        if fragment.resolve() in chain:
            cycle = " -> ".join(p.name for p in chain + (fragment.resolve(),))
            raise RecipeError(f"{source}: include cycle {cycle} (remove one of the includes)")
        merged = deep_merge(merged, _read_with_includes(fragment, chain))
    return deep_merge(merged, data)


def _find_include(name: str, base_dir: Path, source: str) -> Path:
    """Look beside the including file first, then in the shipped ``configs/`` folder."""
    folders = [base_dir, CONFIGS_DIR]
    spellings = [name] if Path(name).suffix else [name, f"{name}.yaml"]
    for folder in folders:
        for spelling in spellings:
            candidate = folder / Path(spelling).expanduser()
            if candidate.is_file():
                return candidate
    looked = ", ".join(str(folder) for folder in folders)
    raise RecipeError(f"{source}: include {name!r} not found (looked in {looked})")


_SEGMENT = re.compile(r"""\.?([^.\[\]"'=]+)|\[(?:"([^"]*)"|'([^']*)'|(\d+))\]""")


def _parse_key(key: str) -> list[str | int] | None:
    """``search.layers["conv.*"].weight_bits`` → ``["search", "layers", "conv.*", ...]``."""
    parts: list[str | int] = []
    position = 0
    while position < len(key):
        match = _SEGMENT.match(key, position)
        if match is None or (match.group(0).startswith(".") and not parts):
            return None
        plain, double, single, index = match.groups()
        if index is not None:
            parts.append(int(index))
        else:
            parts.append(next(part for part in (plain, double, single) if part is not None))
        position = match.end()
    return parts or None


def _parse_override(item: str) -> tuple[list[str | int], Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep:
        raise RecipeError(f"override {item!r} has no '=' (write key=value, e.g. search.epochs=2)")
    keys = _parse_key(key)
    if keys is None:
        raise RecipeError(
            f"override {item!r} has a malformed key (write dotted keys, "
            "e.g. search.cost.params_bit=1e-6)"
        )
    if keys[0] == INCLUDE_KEY:
        raise RecipeError(f"override {item!r}: include cannot be overridden (add it to the recipe)")
    return keys, parse_yaml(text, f"override {item!r}")


def _assign(data: dict[str, Any], keys: list[str | int], value: Any, item: str) -> None:
    """Set ``value`` at ``keys``, creating missing (or empty) mappings on the way."""
    node: Any = data
    for depth, key in enumerate(keys):
        if isinstance(key, int):
            if not isinstance(node, list) or key >= len(node):
                raise RecipeError(
                    f"override {item!r}: {format_path(keys[:depth])} has no item [{key}]"
                )
        elif not isinstance(node, dict):
            raise RecipeError(
                f"override {item!r}: {format_path(keys[:depth])} is {show(node)}, not a mapping"
            )
        if depth == len(keys) - 1:
            node[key] = value
        else:
            if isinstance(key, str) and node.get(key) is None:
                node[key] = {}
            node = node[key]


_MISSING = object()


def _dotted_get(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _leaf_diffs(prefix: str, a: Any, b: Any) -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        diffs: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            diffs += _leaf_diffs(f"{prefix}.{key}", a.get(key, _MISSING), b.get(key, _MISSING))
        return diffs
    return [] if a is b or a == b else [prefix]


def _plain(value: Any) -> Any:
    """Lists for tuples and sets, all the way down, so checkpoints stay loadable safely."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    return value


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc).splitlines()[0]
