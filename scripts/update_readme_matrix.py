"""Regenerate the support matrix in README.md from the installed drivers' declarations.

    .venv/bin/python scripts/update_readme_matrix.py

tests/test_readme.py fails when the README's copy is out of date.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from anyvirt.cli.matrix import support_matrix_markdown
from anyvirt.registry import installed_drivers

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(<!-- support-matrix:start -->\n).*?(<!-- support-matrix:end -->)", re.S)


def matrix_table() -> str:
    """The table rows and the conditions its "if [n]" cells point to (the footnote about
    what was installed belongs to the docs build)."""
    lines = support_matrix_markdown(installed_drivers()).splitlines()
    table = [line for line in lines if line.startswith("|")]
    conditions = [line for line in lines if line.startswith("- [")]
    return "\n".join([*table, "", "Where a cell says \"if [n]\", only where condition n holds:", "",
                      *conditions])


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + matrix_table() + "\n" + m.group(2), text)


if __name__ == "__main__":
    README.write_text(render(README.read_text(encoding="utf-8")), encoding="utf-8")
    sys.exit(0)
