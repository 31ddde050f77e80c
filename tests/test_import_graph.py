"""The package's import graph: no cycles (function-level imports included) and one-way layers.

Every ``import`` and ``from ... import`` in every module counts, wherever it stands (module
level, inside a function); only imports under ``if TYPE_CHECKING:`` are left out, since they
never run. Layers, lowest first: the shared utilities, the core (quant, cost, targets,
search, models, data), deploy, training, recipe, checkpoint, stages, the CLI. A package may
import only from its own layer or below, and the core knows nothing of YAML or terminals.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mpsctl

ROOT = Path(mpsctl.__file__).parent

#: Subpackage (or top-level module) → its layer; a package may import layers <= its own.
LAYERS = {
    "errors": 0, "registry": 0, "version": 0, "enums": 0, "resources": 0,
    "quant": 1, "cost": 1, "models": 1, "data": 1,
    "targets": 2, "search": 3, "deploy": 4,
    "console": 5, "training": 5,
    "recipe": 6, "checkpoint": 7, "stages": 8, "cli": 9, "__main__": 9,
}
CORE = ("quant", "cost", "targets", "search")
#: What the core must not import (beyond the higher layers the rule above already forbids).
CORE_FORBIDDEN = {"yaml", "rich", "typer"}
#: The one core module that reads a hardware target's constants file (YAML).
READS_YAML = {"mpsctl.targets.constants"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """Every import statement, however deeply nested, except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str) -> set[str]:
    """Fully qualified names each import statement of module ``name`` reaches."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        for alias in node.names:
            full = f"{base}.{alias.name}"
            found.add(full if full in MODULES else base)
    return found


def _own_module(target: str) -> str | None:
    """The mpsctl module an imported name lives in (a module, or the module defining it)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name in MODULES:
        targets = {_own_module(t) for t in imports_of(name) if t.split(".")[0] == "mpsctl"}
        edges[name] = {t for t in targets if t is not None and t != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component larger than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_path_through(sorted(component), edges))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _path_through(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A cycle inside ``component`` starting at its first module, for the failure message."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return component


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_module_is_in_a_layer() -> None:
    missing = sorted(n for n in MODULES if n != "mpsctl" and layer_of(n) is None)
    assert not missing, f"add these to LAYERS in {__file__}: {missing}"


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_imports_go_one_way_down_the_layers() -> None:
    upward = []
    for name, targets in graph().items():
        if name == "mpsctl":  # the public API may reach anything
            continue
        for target in sorted(targets):
            if target == "mpsctl" or layer_of(target) > layer_of(name):
                upward.append(f"{name} -> {target}")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_the_core_knows_nothing_of_yaml_or_terminals() -> None:
    bad = []
    for name in MODULES:
        if layer_of(name) is None or name.split(".")[1] not in CORE:
            continue
        for target in sorted(imports_of(name)):
            top = target.split(".")[0]
            if top in CORE_FORBIDDEN and not (top == "yaml" and name in READS_YAML):
                bad.append(f"{name} -> {target}")
    assert not bad, "the core imports:\n" + "\n".join(bad)


def test_the_checker_sees_function_level_imports_and_cycles() -> None:
    lazy = imports_of("mpsctl.cli.app")  # its stage imports all sit inside functions
    assert "mpsctl.stages.search" in lazy
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
