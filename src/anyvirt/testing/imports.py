"""A package's import graph, read with ``ast``: for tests that keep a layering honest.

The core checks its own modules with it, and a backend checks its package the same
way (no circle; helpers below the driver), so the next backend gets the check for
free. Nothing is imported: the source is read as text.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

#: ``(importing module, imported module, inside a function)`` -> leave this edge out
Exempt = Callable[[str, str, bool], bool]


def module_name(root: Path, path: Path) -> str:
    """``anyvirt/host.py`` under ``root`` -> ``anyvirt.host``; packages by their ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(tree: ast.Module, module: str, is_package: bool, *,
               type_checking: bool) -> set[tuple[str, bool]]:
    """``(entry, inside a function)`` per import; ``from pkg import x`` gives ``"pkg:x"``.

    ``type_checking=False`` leaves out what sits under ``if TYPE_CHECKING:``.
    ``from pkg import __version__`` is package metadata, not code, and never counts.
    """
    found: set[tuple[str, bool]] = set()

    def visit(node: ast.AST, late: bool) -> None:
        if not type_checking and isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, late)
            return
        if isinstance(node, ast.Import):
            found.update((alias.name, late) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                if not is_package:
                    anchor = anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.update((f"{base}:{alias.name}", late) for alias in node.names
                         if alias.name != "__version__")
        inner = late or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for nested in ast.iter_child_nodes(node):
            visit(nested, inner)

    visit(tree, False)
    return found


def import_graph(package: Path, *, type_checking: bool = False,
                 exempt: Exempt | None = None) -> dict[str, set[str]]:
    """Each module of ``package`` (a source folder; subpackages too) -> its modules it imports."""
    root = package.parent
    modules = {module_name(root, path): path for path in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        resolved = set()
        for entry, late in imports_of(tree, name, path.name == "__init__.py",
                                      type_checking=type_checking):
            base, _, attr = entry.partition(":")
            target = f"{base}.{attr}" if f"{base}.{attr}" in modules else base
            if exempt is not None and exempt(name, target, late):
                continue
            resolved.add(target)
        graph[name] = {m for m in resolved if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


__all__ = ["Exempt", "cycles", "import_graph", "imports_of", "module_name"]
