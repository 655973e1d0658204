"""No import circle among the core's product modules.

The graph is read with ``ast`` from ``src/anyvirt`` (``anyvirt.testing`` included: it
configures the product, which never imports it back). Every import counts, at module
level or inside a function, except:

* imports under ``if TYPE_CHECKING:`` (annotations only);
* the handles' late imports of the workflows (``vm.backup`` calls
  ``anyvirt.migration.backup``; ``host.recover`` reports in ``anyvirt.recovery``'s types):
  the workflows sit above the handles and use them; the handles reach up only on the
  call, as the layering says;
* ``from anyvirt import __version__``: package metadata, not code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from anyvirt.testing import imports

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "anyvirt"
HANDLES = frozenset({"anyvirt.host", "anyvirt.vm", "anyvirt.snapshot", "anyvirt.node"})
#: the workflows above the handles, which the handles call on the call only
WORKFLOWS = ("anyvirt.migration", "anyvirt.watch", "anyvirt.recovery")


def _handles_calling_workflows(module: str, target: str, late: bool) -> bool:
    """A handle's late import of a workflow above it (``vm.backup``, ``vm.wait_for``)."""
    return late and module in HANDLES and any(
        (target + ".").startswith(workflow + ".") for workflow in WORKFLOWS)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


def import_graph() -> dict[str, set[str]]:
    return imports.import_graph(PACKAGE, exempt=_handles_calling_workflows)


def test_the_graph_sees_the_core() -> None:
    graph = import_graph()
    assert "anyvirt.rules" in graph["anyvirt.operations"]
    assert "anyvirt.operations" in graph["anyvirt.host"]


def test_no_import_circle_among_product_modules() -> None:
    assert imports.cycles(import_graph()) == []


def test_the_rules_are_a_leaf_and_the_gate_builds_no_handle() -> None:
    graph = import_graph()
    # the rules read the identity spec (plain values, validated when made): the deployment
    # spec's modules are leaves too, so everything the rules reach is a leaf
    leaves = {"anyvirt", "anyvirt.capability", "anyvirt.errors", "anyvirt.model", "anyvirt.validation",
              "anyvirt.secret"}
    spec = {m for m in graph if m.startswith("anyvirt.deployment.")}
    assert graph["anyvirt.rules"] <= leaves | spec
    assert _reachable(graph, "anyvirt.rules") <= leaves | spec
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


@pytest.mark.parametrize("backend", ["libvirt", "vsphere", "proxmox", "virtualbox"])
def test_no_import_circle_in_a_backend(backend: str) -> None:
    package = SRC.parent / "backends" / backend / "src" / f"anyvirt_{backend}"
    assert imports.cycles(imports.import_graph(package)) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert imports.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert imports.cycles({"a": {"b"}, "b": set()}) == []
