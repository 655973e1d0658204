"""MkDocs hook: fill the pages whose content comes from the code, at build time.

* ``support-matrix.md``: the capability matrix from every installed driver's
  ``possible_capabilities`` (``anyvirt.cli.matrix.support_matrix_markdown``),
  so the published matrix cannot drift from what the drivers declare.
* ``concepts.md`` and ``support-matrix.md``: the operation gate's table
  (``anyvirt.operations.operations_markdown``), the rules the code enforces.
* ``cli.md``: the ``--help`` text of every ``anyvirt`` command.
* ``backends/<name>.md``: the backend's own ``backends/<name>/README.md``, kept
  beside its code so it changes with it, shown here without a copy.

Each page holds a marker comment; the hook replaces the marker, and fails the
build if a marker is missing (a page edited by hand must not silently lose
its generated part).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
from mkdocs.exceptions import PluginError

MATRIX_MARKER = "<!-- generated: support-matrix -->"
OPERATIONS_MARKER = "<!-- generated: operations -->"
CLI_MARKER = "<!-- generated: cli-help -->"
BACKEND_MARKER = re.compile(r"<!-- generated: backend-readme ([a-z0-9_-]+) -->")
ROOT = Path(__file__).resolve().parents[2]


def _cli_help() -> str:
    from anyvirt.cli.main import cli

    sections: list[str] = []

    def walk(command: click.Command, path: list[str], parent: click.Context | None) -> None:
        ctx = click.Context(command, info_name=path[-1], parent=parent, terminal_width=100,
                            max_content_width=100)
        heading = "#" * min(len(path) + 1, 4)
        sections.append(f"{heading} `{' '.join(path)}`\n\n```text\n{command.get_help(ctx)}\n```\n")
        if isinstance(command, click.Group):
            for name in sorted(command.list_commands(ctx)):
                sub = command.get_command(ctx, name)
                if sub is not None:
                    walk(sub, [*path, name], ctx)

    walk(cli, ["anyvirt"], None)
    return "\n".join(sections)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    src = page.file.src_uri
    if src in ("concepts.md", "support-matrix.md"):
        from anyvirt.operations import operations_markdown

        if OPERATIONS_MARKER not in markdown:
            raise PluginError(f"{src} lost its marker {OPERATIONS_MARKER}")
        markdown = markdown.replace(OPERATIONS_MARKER, operations_markdown())
    if src == "support-matrix.md":
        from anyvirt.cli.matrix import support_matrix_markdown

        if MATRIX_MARKER not in markdown:
            raise PluginError(f"{src} lost its marker {MATRIX_MARKER}")
        return markdown.replace(MATRIX_MARKER, support_matrix_markdown())
    if src == "cli.md":
        if CLI_MARKER not in markdown:
            raise PluginError(f"{src} lost its marker {CLI_MARKER}")
        return markdown.replace(CLI_MARKER, _cli_help())
    if src.startswith("backends/"):
        match = BACKEND_MARKER.search(markdown)
        if match is None:
            raise PluginError(f"{src} lost its backend-readme marker")
        readme = ROOT / "backends" / match.group(1) / "README.md"
        if not readme.is_file():
            raise PluginError(f"{src} names {readme}, which does not exist")
        return BACKEND_MARKER.sub(lambda _: readme.read_text(encoding="utf-8"), markdown)
    return markdown
