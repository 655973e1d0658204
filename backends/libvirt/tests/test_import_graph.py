"""The libvirt package's import graph: the driver on top, helpers below it, no circle.

Pure logic (the modules' source read with ``ast``), no daemon. Every import counts,
``TYPE_CHECKING``-only and function-local ones too: a helper that needs the driver
even for a type annotation reaches into it, and the driver importing it back makes
a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import anyvirt_libvirt

PACKAGE = "anyvirt_libvirt"
SOURCE = Path(anyvirt_libvirt.__file__).parent
#: the modules allowed to import the driver: itself and the package's entry point
DRIVER_USERS = {f"{PACKAGE}.driver", PACKAGE}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports (``from anyvirt_libvirt import x``
    names module ``x`` when there is one, else the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: a relative import this reader does not follow"
            if not node.module or node.module.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    found.discard(_module_name(path))
    return found & modules


def import_graph() -> dict[str, set[str]]:
    """Each module of the package (subpackages too) -> the package's modules it imports."""
    files = sorted(SOURCE.rglob("*.py"))
    names = {_module_name(f) for f in files}
    return {_module_name(f): _imports(f, names) for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules in order, the first repeated at the end), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return None
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def test_the_graph_sees_the_helpers() -> None:
    graph = import_graph()
    assert f"{PACKAGE}.cloning" in graph[f"{PACKAGE}.driver"], "the reader misses the driver's imports"
    assert f"{PACKAGE}.site" in graph[f"{PACKAGE}.cloning"]


def test_only_the_driver_imports_the_driver() -> None:
    graph = import_graph()
    users = sorted(m for m, deps in graph.items() if f"{PACKAGE}.driver" in deps and m not in DRIVER_USERS)
    assert users == [], f"helpers importing anyvirt_libvirt.driver: {users}"


def test_no_import_circle_in_the_libvirt_package() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import circle: {' -> '.join(cycle or [])}"


def test_the_cycle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
