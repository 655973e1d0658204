"""The libvirt package's import graph: the driver on top, helpers below it, no circle.

Pure logic (the modules' source read with ``ast``), no daemon. Every import counts,
``TYPE_CHECKING``-only and function-local ones too: a helper that needs the driver
even for a type annotation reaches into it, and the driver importing it back makes
a circle.
"""

from __future__ import annotations

from pathlib import Path

import anyvirt_libvirt

from anyvirt.testing import imports

PACKAGE = "anyvirt_libvirt"
SOURCE = Path(anyvirt_libvirt.__file__).parent
#: the modules allowed to import the driver: itself and the package's entry point
DRIVER_USERS = {f"{PACKAGE}.driver", PACKAGE}


def import_graph() -> dict[str, set[str]]:
    """Every import counts here, ``TYPE_CHECKING``-only ones too."""
    return imports.import_graph(SOURCE, type_checking=True)


def test_the_graph_sees_the_helpers() -> None:
    graph = import_graph()
    assert f"{PACKAGE}.cloning" in graph[f"{PACKAGE}.driver"], "the reader misses the driver's imports"
    assert f"{PACKAGE}.site" in graph[f"{PACKAGE}.cloning"]


def test_only_the_driver_imports_the_driver() -> None:
    graph = import_graph()
    users = sorted(m for m, deps in graph.items() if f"{PACKAGE}.driver" in deps and m not in DRIVER_USERS)
    assert users == [], f"helpers importing anyvirt_libvirt.driver: {users}"


def test_no_import_circle_in_the_libvirt_package() -> None:
    assert imports.cycles(import_graph()) == []
