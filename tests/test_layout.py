"""The test layout of docs/writing-a-backend.md ("Where tests go") holds on the whole tree.

Pure logic over file names and sources: every test folder (``tests/`` and each
``backends/<b>/tests/``) is walked, so a file added in the wrong place, under a second
name of a kind, or twice under one name fails here rather than confusing the next reader.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
BACKENDS = ROOT / "backends"
#: The shipped test helpers (``anyvirt.testing``): a test module must not copy one either.
SHIPPED_HELPERS = ROOT / "src" / "anyvirt" / "testing"

#: The folders of tests/, one per kind of the docs' table (feature suites included).
FOLDERS = {"unit", "kit", "gate", "contract", "cross", "hostile", "deployment", "repository", "watch",
           "cli", "ansible"}
#: Feature suites (the docs' ``tests/<feature>/`` row); ``ansible`` runs the collection's playbooks.
FEATURE_FOLDERS = {"deployment", "repository", "watch", "ansible"}
#: Folders whose every test module carries the folder's prefix (their topics repeat elsewhere).
PREFIXED = {"gate": "test_gate_", "kit": "test_kit_", "hostile": "test_hostile_"}
#: Modules a suite still being written names its own way; rename to <topic>_support.py
#: when it lands (``backup_process.py`` is run as a script by its path).
PENDING_HELPERS = {"tests/repository/repo_helpers.py",
                   "tests/repository/backup_process.py"}
#: Fixture twins this rule found in the core's tests when it was written, owned by other
#: suites; move each to its folder's conftest and drop it from here.
KNOWN_FIXTURE_TWINS = {"anyvirt_migration_target", "host"}
CONTRACT_WIRING = re.compile(r"^\s*from anyvirt\.testing\.suite import \*", re.MULTILINE)
#: What only a test that talks to a host does: connect, or ask for a testbed.
TALKS_TO_A_HOST = re.compile(r"\bconnect\(|\blibvirt_daemon\b|\bvcsim_vcenter\b|\bproxmox_testbed\b")


def folders_of_tests() -> list[Path]:
    return [TESTS, *sorted(p for p in BACKENDS.glob("*/tests") if p.is_dir())]


def modules() -> list[Path]:
    return sorted(p for folder in folders_of_tests() for p in folder.rglob("*.py")
                  if "__pycache__" not in p.parts)


def holds_files(folder: Path) -> bool:
    """A folder a move emptied keeps only ``__pycache__`` on disk: it is gone from the tree."""
    return any(p.is_file() and "__pycache__" not in p.parts for p in folder.rglob("*"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def backend_of(path: Path) -> str | None:
    """``libvirt`` for backends/libvirt/tests/...; None for the core's tests."""
    parts = path.relative_to(ROOT).parts
    return parts[1] if parts[0] == "backends" else None


def test_the_tree_has_test_modules() -> None:
    # the walk itself must see the tree, or every rule below passes on nothing
    assert len(modules()) > 50
    assert {p.name for p in BACKENDS.glob("*/tests")} == {"tests"}
    assert len(folders_of_tests()) == 1 + len([p for p in BACKENDS.iterdir() if (p / "tests").is_dir()])


def test_no_module_name_is_used_twice() -> None:
    """pytest's default import mode imports each test module and helper by its bare name."""
    seen: dict[str, list[str]] = defaultdict(list)
    for path in modules():
        if path.name not in ("conftest.py", "__init__.py"):
            seen[path.name].append(rel(path))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


def test_a_test_folder_holds_tests_helpers_and_conftest_only() -> None:
    odd = [rel(p) for p in modules()
           if not (p.name.startswith("test_") or p.name == "conftest.py" or p.name.endswith("_support.py"))
           and rel(p) not in PENDING_HELPERS]
    assert odd == []


def test_helpers_are_not_collected_as_tests() -> None:
    assert [rel(p) for p in modules() if p.name.startswith("test_") and p.name.endswith("_support.py")] == []


def test_the_folders_of_tests_are_the_documented_ones() -> None:
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and holds_files(p)}
    assert folders <= FOLDERS, f"undocumented test folders: {sorted(folders - FOLDERS)}"
    page = (ROOT / "docs" / "writing-a-backend.md").read_text(encoding="utf-8")
    section = page.split("## Where tests go", 1)[1].split("\n## ", 1)[0]
    assert [f for f in sorted(FOLDERS - FEATURE_FOLDERS - {"cli"})
            if f"`tests/{f}/`" not in section] == []
    assert "`tests/<feature>/`" in section


@pytest.mark.parametrize(("folder", "prefix"), sorted(PREFIXED.items()))
def test_prefixed_folders(folder: str, prefix: str) -> None:
    names = [p.name for p in (TESTS / folder).glob("test_*.py")]
    assert names, f"tests/{folder} is empty"
    assert [n for n in names if not n.startswith(prefix)] == []


def test_contract_wiring_is_named_test_contract_and_names_its_backend() -> None:
    wiring = {p for p in modules() if CONTRACT_WIRING.search(p.read_text(encoding="utf-8"))}
    named = {p for p in modules() if p.name.startswith("test_contract_")}
    assert sorted(rel(p) for p in wiring ^ named) == []
    misplaced = []
    for path in sorted(wiring):
        backend = backend_of(path)
        if backend is None:
            ok = path.parent == TESTS / "contract" and bool(
                re.fullmatch(r"test_contract_(memory|remote)(_[a-z0-9]+)*\.py", path.name))
        else:
            ok = re.fullmatch(rf"test_contract_{backend}(_[a-z0-9]+)*\.py", path.name) is not None
        if not ok:
            misplaced.append(rel(path))
    assert misplaced == []
    # every backend runs the suite
    assert {b.name for b in BACKENDS.iterdir() if (b / "tests").is_dir()} <= {backend_of(p) for p in wiring}


def test_gate_tests_on_a_backend_name_it() -> None:
    odd = [rel(p) for p in modules() if backend_of(p) and p.name.startswith("test_gate")
           and p.name != f"test_gate_{backend_of(p)}.py"]
    assert odd == []


def test_real_is_a_target_suffix_never_a_place() -> None:
    """Every backend test runs on a real target; the word names one only beside a stand-in."""
    assert [rel(p) for p in TESTS.rglob("real") if p.is_dir() and holds_files(p)] == []
    odd = []
    for path in modules():
        words = path.stem.split("_")
        if "real" in words and (words[-1] != "real" or backend_of(path) is None):
            odd.append(rel(path))
    assert odd == []


def test_unit_tests_talk_to_no_host() -> None:
    unit = sorted((TESTS / "unit").glob("test_*.py"))
    assert unit
    assert [rel(p) for p in unit if TALKS_TO_A_HOST.search(p.read_text(encoding="utf-8"))] == []


def _is_fixture(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any("fixture" in ast.unparse(decorator) for decorator in node.decorator_list)


def _fixtures(path: Path) -> list[tuple[str, str]]:
    """(name, source) of each fixture a module defines."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and _is_fixture(node):
            body = ast.unparse(ast.Module(body=node.body, type_ignores=[]))
            found.append((node.name, body))
    return found


def test_no_fixture_is_copied_into_two_modules() -> None:
    """A fixture two test modules of one backend (or of the core) both need lives once, in
    their conftest: the same fixture written out twice drifts apart. (A module's own fixture
    of a conftest's name, doing something else, is an override and fine.)"""
    seen: dict[tuple[str | None, str, str], list[str]] = defaultdict(list)
    for path in modules():
        if path.name.startswith("test_"):
            for name, body in _fixtures(path):
                seen[(backend_of(path), name, body)].append(rel(path))
    twins = {name: paths for (_, name, _), paths in seen.items() if len(paths) > 1}
    assert {name: paths for name, paths in twins.items() if name not in KNOWN_FIXTURE_TWINS} == {}


def _functions(path: Path) -> list[tuple[str, str]]:
    """(name, normalized body) of each top-level function of a module but its fixtures: the
    body's AST without the docstring, so a copy with other comments, layout or docstring
    (or other defaults, which live in the signature) is still the same function."""
    found = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not _is_fixture(node):
            body = node.body
            if ast.get_docstring(node) is not None:
                body = body[1:]
            found.append((node.name, ast.dump(ast.Module(body=body, type_ignores=[]))))
    return found


def test_no_helper_is_copied_into_two_modules() -> None:
    """A helper two test modules need (``run``, ``drain``, ``spec``...) lives once: in the
    folder's ``*_support.py``, or in ``anyvirt.testing`` when the core's tests and a backend's
    (or two backends') share it. Twins are found by name and body, which is all a copy keeps;
    fixtures have their own rule above (a same-named fixture may override a conftest's)."""
    assert (SHIPPED_HELPERS / "watch_changes.py").is_file()  # the walk sees the shipped helpers
    seen: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in [*modules(), *sorted(SHIPPED_HELPERS.rglob("*.py"))]:
        for name, body in _functions(path):
            seen[(name, body)].append(rel(path))
    assert sorted((name, paths) for (name, _), paths in seen.items() if len(paths) > 1) == []
