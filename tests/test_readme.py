"""The README's promises: its support matrix is the generated one, its commands exist."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _updater() -> object:
    spec = importlib.util.spec_from_file_location("update_readme_matrix",
                                                  ROOT / "scripts" / "update_readme_matrix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_matrix_is_generated_from_the_drivers() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    updater = _updater()
    assert updater.render(readme) == readme, (  # type: ignore[attr-defined]
        "README's support matrix is stale: run .venv/bin/python scripts/update_readme_matrix.py")
    assert "| `vm.create` |" in readme


def test_readme_gives_exactly_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "    bash scripts/tour.sh" in readme
    assert "    bash scripts/test.sh" in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash scripts/test.sh" in ci


def readme_example(uri: str) -> str:
    """The README's first Python block, connecting to ``uri`` instead of the default."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert "anyvirt.connect() as host" in code
    return code.replace("anyvirt.connect()", f"anyvirt.connect({uri!r})")


def test_readme_example_runs_as_written_on_memory() -> None:
    from anyvirt.memory import reset

    try:
        exec(compile(readme_example("memory://readme"), "README.md", "exec"), {})
        import anyvirt

        with anyvirt.connect("memory://readme") as host:
            assert host.vms.list() == [], "the example cleans up after itself"
    finally:
        reset("readme")
