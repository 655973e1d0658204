"""MkDocs hook: fill the pages whose content comes from the code, at build time.

* ``support-matrix.md``: the capability matrix from every installed driver's
  ``possible_capabilities`` (``anyvirt.cli.matrix.support_matrix_markdown``),
  so the published matrix cannot drift from what the drivers declare.
* ``concepts.md`` and ``support-matrix.md``: the operation gate's table
  (``anyvirt.rules.operations_markdown``), the rules the code enforces.
* ``cli.md``: the ``--help`` text of every ``anyvirt`` command.
* ``input-rules.md``: the table of ``anyvirt.validation``'s rules.
* ``reference/vm.md``: which errors each operation raises, from the operation
  gate's table (``anyvirt.rules.RULES``).
* ``backends/<name>.md``: the backend's own ``backends/<name>/README.md``, kept
  beside its code so it changes with it, shown here without a copy.
* ``css/pygments.css``: the highlighting colours, from the installed Pygments, so the
  stylesheet always matches the classes that Pygments wrote into the pages.

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
RULES_MARKER = "<!-- generated: input-rules -->"
ERRORS_MARKER = "<!-- generated: operation-errors -->"
#: Sphinx roles left in docstrings (":class:`Host`"): Markdown renders the
#: backticks as code, the role itself would show as raw text
SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|mod|func|meth|attr|exc|data|obj|const|ref):(?=<code>)")
TILDE_IN_CODE = re.compile(r"<code>~(?=[\w.]+</code>)")
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


def _operation_errors() -> str:
    """Per operation of the gate's table, the errors it can raise before and while it runs,
    read off the rows' fields and the errors their check callables declare."""
    from anyvirt.rules import RULES, refusals

    lines = ["| call | raises before anything is sent | then |", "| --- | --- | --- |"]
    for rule in RULES.values():
        before = ", ".join(f"`{name}`" for name in refusals(rule))
        lines.append(f"| `{rule.call}` | {before} | `TaskFailed`, `Timeout` |")
    return "\n".join(lines) + "\n"


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """No raw reST in the HTML: ``:class:`x``` becomes plain code, ``~a.b`` its last part's path."""
    return TILDE_IN_CODE.sub("<code>", SPHINX_ROLE.sub("", html))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    src = page.file.src_uri
    if src == "reference/vm.md":
        if ERRORS_MARKER not in markdown:
            raise PluginError(f"{src} lost its marker {ERRORS_MARKER}")
        return markdown.replace(ERRORS_MARKER, _operation_errors())
    if src in ("concepts.md", "support-matrix.md"):
        from anyvirt.rules import operations_markdown

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
    if src == "input-rules.md":
        from anyvirt.validation import rules_markdown

        if RULES_MARKER not in markdown:
            raise PluginError(f"{src} lost its marker {RULES_MARKER}")
        return markdown.replace(RULES_MARKER, rules_markdown())
    if src.startswith("backends/"):
        match = BACKEND_MARKER.search(markdown)
        if match is None:
            raise PluginError(f"{src} lost its backend-readme marker")
        readme = ROOT / "backends" / match.group(1) / "README.md"
        if not readme.is_file():
            raise PluginError(f"{src} names {readme}, which does not exist")
        return BACKEND_MARKER.sub(lambda _: readme.read_text(encoding="utf-8"), markdown)
    return markdown


#: the colour scheme of code blocks; the same classes Pygments writes into the pages
PYGMENTS_STYLE = "friendly"


def on_post_build(config: Any) -> None:
    from pygments.formatters import HtmlFormatter

    css = HtmlFormatter(style=PYGMENTS_STYLE).get_style_defs(".highlight")
    target = Path(config["site_dir"]) / "css" / "pygments.css"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(css + "\n", encoding="utf-8")
