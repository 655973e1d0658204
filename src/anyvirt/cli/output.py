"""Rendering results: rich tables for people, JSON for scripts.

JSON is built from the attrs value types with ``attrs.asdict``; enums become
their value, datetimes ISO 8601 strings, sets sorted lists. Nothing that could
hold a secret (a ``Target``, a ``Credentials``) is ever passed here.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs
import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from anyvirt.model import HostInfo, PowerState

# Wide enough that ids and URIs are not wrapped when output goes to a file or a pipe.
PIPE_WIDTH = 200


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


def styled(text: str, style: str) -> Text:
    """A table cell or message part in a style; the text itself is never parsed as markup."""
    return Text(text, style=style)


def say(*parts: str | Text) -> None:
    """Print one line; plain strings are literal (a VM named ``[red]x`` prints as such)."""
    stdout_console().print(Text.assemble(*parts))


def _cell(value: Any) -> Text:
    if isinstance(value, Text):
        return value
    return Text("" if value is None else str(value))


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table; cells are literal text unless given as ``rich.text.Text`` (see ``styled``)."""
    # the title goes above the table, not into it: a long URI would wrap a table title
    console = stdout_console()
    if title:
        console.print(Text(title, style="bold"))
    table = Table(show_lines=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(cell) for cell in row))
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


def gib_bytes(value: int | None) -> str:
    if value is None:
        return "?"
    return f"{value / 1024**3:.1f} GiB"


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
        ("vCPUs allocated", f"{alloc.vcpus} (ratio {alloc.cpu_ratio:g}, limit {info.overcommit.cpu:g})"),
        ("memory allocated",
         f"{mib(alloc.memory_mib)} (ratio {alloc.memory_ratio:g}, limit {info.overcommit.memory:g})"),
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
                (s.name, s.type, s.node or "shared", gib_bytes(s.capacity_bytes),
                 gib_bytes(s.allocated_bytes), gib_bytes(s.available_bytes), "yes" if s.active else "no")
                for s in info.storage
            ],
        )
