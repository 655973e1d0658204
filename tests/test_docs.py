"""The documentation builds with ``mkdocs build --strict``, and its generated pages are complete."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from anyvirt import registry
from anyvirt.cli.matrix import columns, support_matrix_markdown
from anyvirt.model import Capability

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def installed_schemes() -> list[str]:
    """Schemes of installed backends that load (the build runs in its own process, so
    backends that other tests register by hand in this one do not count)."""
    loadable = []
    for ep in entry_points(group=registry.GROUP):
        try:
            ep.load()
        except Exception:
            continue
        loadable.append(ep.name)
    return loadable


def _text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


def test_matrix_page_lists_every_installed_backend_and_capability(site: Path) -> None:
    text = _text(site / "support-matrix" / "index.html")
    assert "generated: support-matrix" not in text
    schemes = installed_schemes()
    assert "memory" in schemes
    for scheme in schemes:
        assert scheme in text, f"backend {scheme} missing from the matrix"
    for capability in Capability:
        assert capability.value in text, f"capability {capability.value} missing from the matrix"


def test_matrix_cells_follow_the_declared_capabilities() -> None:
    table = support_matrix_markdown()
    cols = columns()
    for capability in Capability:
        line = next(row for row in table.splitlines() if row.startswith(f"| `{capability.value}` |"))
        cells = [cell.strip() for cell in line.strip("|").split("|")][2:]
        assert cells == ["yes" if capability in c.capabilities else "-" for c in cols]


def test_cli_page_has_the_help_of_every_command(site: Path) -> None:
    text = _text(site / "cli" / "index.html")
    assert "generated: cli-help" not in text
    for command in ("anyvirt vm stop", "anyvirt snapshot list", "anyvirt testbed libvirt",
                    "anyvirt capabilities", "Exit codes"):
        assert command in text


def test_api_reference_is_rendered_from_docstrings(site: Path) -> None:
    text = _text(site / "reference" / "host" / "index.html")
    assert "Connect to a virtualization platform" in text
    memory_page = (site / "reference" / "memory" / "index.html").read_text(encoding="utf-8")
    assert 'id="anyvirt.memory.inject_failure"' in memory_page
