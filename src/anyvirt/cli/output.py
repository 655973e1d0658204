r"""Rendering results: rich tables for people, plain columns, TSV or names for pipes, JSON
for scripts.

The format comes from ``--format`` (or ``--json``); without one, a terminal gets
a boxed table and anything else (a pipe, a file) plain aligned columns with no
box drawing and no colour. Every cell is literal text with control characters
escaped, so a VM named ``"\x1b[2J"`` cannot clear the reader's screen.

JSON is built from the attrs value types with ``attrs.asdict``; enums become
their value, datetimes ISO 8601 strings, sets sorted lists. Nothing that could
hold a secret (a ``Target``, a ``Credentials``) is ever passed here.
"""

from __future__ import annotations

import enum
import json
import math
import sys
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs
import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from anyvirt.model import HostInfo, PowerState

# Wide enough that ids and URIs are not wrapped when output goes to a file or a pipe.
PIPE_WIDTH = 200

#: what ``--format`` accepts; "plain" is what a pipe gets when no format is asked for
FORMATS = ("table", "plain", "tsv", "names", "json")


def output_format() -> str:
    """The format asked for on the command line, else table on a terminal, plain elsewhere."""
    ctx = click.get_current_context(silent=True)
    chosen = None
    while ctx is not None and chosen is None:
        obj = ctx.obj
        chosen = getattr(obj, "output_format", None)
        ctx = ctx.parent
    if chosen:
        return str(chosen)
    return "table" if sys.stdout.isatty() else "plain"


def escape_controls(text: str, keep: str = "") -> str:
    r"""Control and format characters as visible escapes (``\x1b``, ``\u202e``), the rest (and
    the characters in ``keep``, e.g. the line feeds of a multi-line message) as is."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable() or char == " " or char in keep:
            out.append(char)
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs"):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def stdout_console() -> Console:
    """A console on the current ``sys.stdout`` (click's test runner swaps it)."""
    wide = None if sys.stdout.isatty() else PIPE_WIDTH
    return Console(file=sys.stdout, width=wide, highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False)


def _serialise_value(_inst: Any, _field: Any, value: Any) -> Any:
    return jsonable(value)


def jsonable(value: Any) -> Any:
    """Turn attrs instances, enums, datetimes, sets and tuples into JSON-ready values."""
    if attrs.has(type(value)):
        return attrs.asdict(value, recurse=True, value_serializer=_serialise_value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, frozenset | set):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    click.echo(json.dumps(jsonable(value), indent=2, sort_keys=True, default=str))


def literal(text: object, style: str = "") -> Text:
    """User or platform text for rich: control characters escaped, never parsed as markup.
    Every cell, label, line and status that may hold such text is made here or by
    :func:`echo`, so a name holding ``ESC ]0;`` cannot reach the reader's terminal."""
    return Text(escape_controls("" if text is None else str(text)), style=style)


def styled(text: str, style: str) -> Text:
    """A table cell or message part in a style (see :func:`literal`)."""
    return literal(text, style)


def echo(text: str, *, err: bool = False, keep: str = "") -> None:
    """One plain line on stdout (or stderr), control characters escaped (see :func:`literal`)."""
    click.echo(escape_controls(text, keep), err=err)


def say(*parts: str | Text) -> None:
    """Print one line; plain strings are literal (a VM named ``[red]x`` prints as such)."""
    line = Text.assemble(*parts)
    # escaping changes the text's length, so a line that needs it loses its styles
    stdout_console().print(line if line.plain.isprintable() else Text(escape_controls(line.plain)))


def _cell(value: Any) -> Text:
    if isinstance(value, Text):
        if value.plain.isprintable():
            return value
        return Text(escape_controls(value.plain), style=value.style)
    return Text(escape_controls("" if value is None else str(value)))


def _tsv_field(value: Any) -> str:
    text = value.plain if isinstance(value, Text) else ("" if value is None else str(value))
    return escape_controls(text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n"))


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
                listing: bool = False) -> None:
    """A table in the chosen format; cells are literal text unless given as ``rich.text.Text``.

    ``names`` prints the first column only (one name a line, for ``xargs``);
    ``tsv`` a header line and tab-separated rows; ``plain`` aligned columns
    without box drawing (and without the title of a ``listing``, so that
    ``anyvirt vms | awk`` sees only the header and rows); ``table`` the boxed
    table with its title.
    """
    fmt = output_format()
    if fmt == "names":
        for row in rows:
            click.echo(_tsv_field(row[0]))
        return
    if fmt == "tsv":
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join(_tsv_field(cell) for cell in row))
        return
    console = stdout_console()
    plain = fmt == "plain"
    # the title goes above the table, not into it: a long URI would wrap a table title
    if title and not (plain and listing):
        console.print(literal(title, "bold"))
    table = Table(show_lines=False, box=None if plain else box.HEAVY_HEAD, pad_edge=not plain,
                  header_style="" if plain else "bold")
    for column in columns:
        # folded, never cut with an ellipsis: a path or id is no use with its end missing
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(cell) for cell in row))
    if plain:  # no trailing blanks for `cut`/`awk` to trip over
        with console.capture() as captured:
            console.print(table)
        for line in captured.get().splitlines():
            click.echo(line.rstrip())
        return
    console.print(table)


_STATE_STYLE = {
    PowerState.RUNNING: "green",
    PowerState.STOPPED: "dim",
    PowerState.PAUSED: "yellow",
    PowerState.SUSPENDED: "yellow",
    PowerState.CRASHED: "red",
    PowerState.UNKNOWN: "magenta",
}


def styled_state(state: PowerState) -> Text:
    return Text(state.value, style=_STATE_STYLE[state])


def mib(value: int | None) -> str:
    if value is None:
        return "?"
    return f"{value / 1024:.1f} GiB" if value >= 1024 else f"{value} MiB"


def human_bytes(value: int | None) -> str:
    """Sizes as people read them: a 1 MiB test disk is not "0.00 GiB"."""
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def state_text(state: PowerState, raw: str) -> Text:
    """The state, then the platform's own word where it adds something: "running (booted)"
    for libvirt's "running (booted)", not "running (running (booted))"."""
    if raw == state.value or not raw:
        return styled_state(state)
    if raw.startswith(f"{state.value} "):
        return Text.assemble(styled_state(state), escape_controls(raw[len(state.value):]))
    return Text.assemble(styled_state(state), f" ({escape_controls(raw)})")


def overcommit_text(info: HostInfo) -> str:
    """The limit as numbers with where they come from, and which VMs count against it."""
    policy = info.overcommit
    if math.isinf(policy.cpu) and math.isinf(policy.memory):
        return "none (overcommit unlimited)"
    whose = ("every defined VM counts" if policy.counts == "defined"
             else "powered-on VMs count, stopped ones do not")
    return (f"{info.cpus * policy.cpu:g} vCPUs ({info.cpus} CPUs x {policy.cpu:g}), "
            f"{mib(round(info.memory_mib * policy.memory))} of memory (x {policy.memory:g}); "
            f"{whose} (--overcommit to change)")


def print_host_info(info: HostInfo, uri: str) -> None:
    """Identity and capacity, then allocation, then storage: the order an operator reads it."""
    alloc = info.allocation
    facts = [
        ("URI", uri),
        ("name", info.name),
        ("backend", info.backend),
        ("hypervisor", f"{info.hypervisor} {info.hypervisor_version}"),
        ("nodes", info.nodes),
        ("CPUs", info.cpus),
        ("memory", mib(info.memory_mib)),
        ("free memory", mib(info.free_memory_mib)),
        ("VMs", f"{alloc.vms} ({alloc.running_vms} running)"),
        ("vCPUs allocated",
         f"{alloc.vcpus} ({alloc.powered_on_vcpus} powered on; ratio {alloc.cpu_ratio:g} per CPU)"),
        ("memory allocated", f"{mib(alloc.memory_mib)} ({mib(alloc.powered_on_memory_mib)} powered "
                             f"on; ratio {alloc.memory_ratio:g})"),
        ("overcommit limit", overcommit_text(info)),
        ("networks", ", ".join(info.networks) or "-"),
    ]
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in facts:
        table.add_row(key, _cell(value))
    console = stdout_console()
    console.print(table)
    if info.storage:
        print_table(
            "storage",
            ["name", "type", "node", "capacity", "allocated", "available", "active"],
            [
                (s.name, s.type, s.node or "shared", human_bytes(s.capacity_bytes),
                 human_bytes(s.allocated_bytes), human_bytes(s.available_bytes), "yes" if s.active else "no")
                for s in info.storage
            ],
        )
