"""Watching from the command line: ``anyvirt events`` and ``anyvirt vms --watch``.

Both run on ``host.vms.watch()``. ``events`` prints one line per change, or one
JSON object per line with ``--json`` (for piping into other tools). ``vms
--watch`` redraws the VM table in place on a terminal and prints one line per
change elsewhere. Both run until Ctrl-C, or ``--count`` changes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import click
from rich.live import Live
from rich.table import Table

from anyvirt.cli.context import json_mode, json_option, settings, with_uri
from anyvirt.cli.output import escape_controls, jsonable, mib, stdout_console, styled_state
from anyvirt.cli.waiting import until_interrupted
from anyvirt.host import Host
from anyvirt.model import VMSummary
from anyvirt.watch import VMChange


def change_record(change: VMChange) -> dict[str, object]:
    """One change as a JSON-ready object (the line ``events --json`` prints)."""
    return {
        "kind": change.kind,
        "id": change.vm.id,
        "name": change.vm.name,
        "fields": sorted(change.fields),
        "old": jsonable(change.old),
        "new": jsonable(change.new),
    }


def change_line(change: VMChange) -> str:
    """One change as a line of text."""
    name = escape_controls(change.vm.name)
    if change.kind != "changed" or change.old is None or change.new is None:
        return f"{change.kind} {name}"
    parts = [f"{f} {getattr(change.old, f)} -> {getattr(change.new, f)}" for f in sorted(change.fields)]
    return f"changed {name}: " + ", ".join(escape_controls(p) for p in parts)


def follow(host: Host, on_change: Callable[[VMChange], None], *, initial: bool,
           interval: float | None, count: int | None) -> None:
    seen = 0
    with host.vms.watch(initial=initial, interval=interval) as changes:
        for change in changes:
            on_change(change)
            seen += 1
            if count is not None and seen >= count:
                return


@click.command()
@with_uri()
@click.option("--initial", is_flag=True, help="First give every VM there now as 'added'.")
@click.option("--interval", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Seconds between polls where the platform pushes nothing (Proxmox, VirtualBox).")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many changes.")
@json_option
def events(uri: str | None, initial: bool, interval: float | None, count: int | None,
           json_flag: bool) -> None:
    """Print each change to the host's VMs as it happens (added, removed, changed); with
    --json one JSON object per line. Runs until Ctrl-C or --count changes."""
    with settings().connect(uri) as host, until_interrupted():
        follow(host, _printer(json_mode(json_flag)), initial=initial, interval=interval,
               count=count)


def _printer(as_json: bool) -> Callable[[VMChange], None]:
    def show(change: VMChange) -> None:
        if as_json:
            click.echo(json.dumps(change_record(change), sort_keys=True, default=str))
        else:
            click.echo(change_line(change))  # escaped already; never wrapped by a console
        sys.stdout.flush()

    return show


def _table(title: str, vms: dict[str, VMSummary], names: dict[str, str]) -> Table:
    table = Table(title=escape_controls(title))
    for column in ("name", "state", "cpus", "memory", "node"):
        table.add_column(column)
    for vm in sorted(vms.values(), key=lambda v: v.name):
        table.add_row(escape_controls(vm.name), styled_state(vm.state), str(vm.cpus),
                      mib(vm.memory_mib), escape_controls(names.get(vm.node or "", vm.node or "")))
    return table


def watch_table(host: Host, names: dict[str, str], *, interval: float | None,
                count: int | None, as_json: bool = False) -> None:
    """``vms --watch``: the table redrawn in place on a terminal, else a line (or with
    ``--json`` a JSON object) per change."""
    if as_json or not sys.stdout.isatty():
        with until_interrupted():
            follow(host, _printer(as_json), initial=False, interval=interval, count=count)
        return
    title = f"VMs on {host.uri} (watching; Ctrl-C to stop)"
    with until_interrupted(), host.vms.watch(interval=interval) as changes:
        current = {vm.id: vm.summary for vm in changes.current()}
        with Live(_table(title, current, names), console=stdout_console(),
                  auto_refresh=False) as live:
            for seen, change in enumerate(changes, 1):
                if change.new is None:
                    current.pop(change.vm.id, None)
                else:
                    current[change.vm.id] = change.new
                live.update(_table(title, current, names), refresh=True)
                if count is not None and seen >= count:
                    return
