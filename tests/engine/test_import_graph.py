"""The import graph runs one way: no circle among the modules, no layer imports a backend module,
and mochapy never imports galaxy_model. Read from the source (ast), so a circle that happens to
import fine today still fails here."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

PACKAGES = ("mochapy", "galaxy_model")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages (a package by its name)."""
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported(path: Path, modules: dict[str, Path], top_level_only: bool) -> set[str]:
    """The project modules a file imports: `from a.b import c` names module a.b.c if there is
    one, else a.b. Imports under `if TYPE_CHECKING:` never run; with top_level_only, imports
    inside functions (run later, when every module is loaded) are left out too."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(filter(None, (resolve(alias.name) for alias in node.names)))
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.update(filter(None, (resolve(f"{node.module}.{alias.name}")
                                           for alias in node.names)))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and top_level_only:
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit([child for child in getattr(node, field, []) if isinstance(child, ast.AST)
                       and not isinstance(child, ast.expr)])

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    return found


def test_no_import_circle() -> None:
    modules = module_files()
    graph = {name: imported(path, modules, top_level_only=True) - {name}
             for name, path in modules.items()}
    assert circles(graph) == []


def test_layers_import_no_backend_and_mochapy_no_galaxy_model() -> None:
    modules = module_files()
    for name, path in modules.items():
        targets = imported(path, modules, top_level_only=False)
        if name.startswith("mochapy.layers"):
            assert not {t for t in targets if t.startswith("mochapy.backends")}, name
        if name.startswith("mochapy"):
            assert not {t for t in targets if t.startswith("galaxy_model")}, name


def test_the_checker_sees_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
