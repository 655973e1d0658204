"""No import circle among the core's product modules.

The graph is read with ``ast`` from ``src/anyvirt`` (``anyvirt.testing`` included: it
configures the product, which never imports it back). Every import counts, at module
level or inside a function, except:

* imports under ``if TYPE_CHECKING:`` (annotations only);
* the handles' late imports of the migration workflows (``vm.backup`` calls
  ``anyvirt.migration.backup``): the workflows sit above the handles and use them;
  the handles reach up only on the call, as the layering says;
* ``from anyvirt import __version__``: package metadata, not code.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "anyvirt"
HANDLES = frozenset({"anyvirt.host", "anyvirt.vm", "anyvirt.snapshot", "anyvirt.node"})
WORKFLOWS = "anyvirt.migration"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, module: str, is_package: bool) -> set[tuple[str, bool]]:
    """(imported entry, whether inside a function) for every import but TYPE_CHECKING's;
    ``from pkg import x`` gives "pkg:x" (pkg.x if that is a module, else pkg)."""
    found: set[tuple[str, bool]] = set()

    def visit(node: ast.AST, late: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
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
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        resolved = set()
        for entry, late in _imports(tree, name, path.name == "__init__.py"):
            base, _, attr = entry.partition(":")
            target = f"{base}.{attr}" if f"{base}.{attr}" in modules else base
            if late and name in HANDLES and (target + ".").startswith(WORKFLOWS + "."):
                continue  # a handle calling a workflow above it, on the call
            resolved.add(target)
        graph[name] = {m for m in resolved if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
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


def test_the_graph_sees_the_core() -> None:
    graph = import_graph()
    assert "anyvirt.rules" in graph["anyvirt.operations"]
    assert "anyvirt.operations" in graph["anyvirt.host"]


def test_no_import_circle_among_product_modules() -> None:
    assert cycles(import_graph()) == []


def test_the_rules_are_a_leaf_and_the_gate_builds_no_handle() -> None:
    graph = import_graph()
    assert graph["anyvirt.rules"] <= {"anyvirt", "anyvirt.errors", "anyvirt.model",
                                      "anyvirt.validation"}
    handles = {"anyvirt.host", "anyvirt.vm", "anyvirt.snapshot", "anyvirt.node",
               "anyvirt.extensions", "anyvirt.migration"}
    source = (PACKAGE / "operations.py").read_text(encoding="utf-8")
    assert not {m for m in _all_imports(source)} & handles


def test_memory_does_not_import_the_testing_package() -> None:
    source = (PACKAGE / "memory.py").read_text(encoding="utf-8")
    assert not [m for m in _all_imports(source) if m.startswith("anyvirt.testing")]


def _all_imports(source: str) -> set[str]:
    """Every module an import names, anywhere in the file (functions and TYPE_CHECKING too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found
