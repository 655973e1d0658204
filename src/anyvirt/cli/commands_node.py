"""``anyvirt node ...``: a hypervisor's maintenance mode, and moving every VM off it."""

from __future__ import annotations

import click

from anyvirt.cli.commands_vm import node_names, run_task, timeout_option
from anyvirt.cli.context import json_mode, json_option, settings, with_uri
from anyvirt.cli.output import print_json, print_table, say
from anyvirt.errors import EvacuationIncomplete
from anyvirt.model import MigrationResult
from anyvirt.node import Node


@click.group()
def node() -> None:
    """A node (hypervisor) of a host: maintenance mode on or off, evacuate its VMs."""


@node.command()
@with_uri("NODE", "ON_OFF")
@timeout_option()
@json_option
def maintenance(uri: str | None, node: str, on_off: str, op_timeout: float, json_flag: bool) -> None:
    """Put a node into maintenance mode (on) or bring it back (off).

    Entering needs the node empty: `anyvirt node evacuate NODE --maintenance`
    moves its VMs off first. A node in maintenance takes no new VMs.
    """
    wanted = on_off.lower()
    if wanted not in ("on", "off"):
        raise click.UsageError(f"ON_OFF must be 'on' or 'off', not {on_off!r}")
    with settings().connect(uri, changes=True) as host:
        found = host.nodes.get(node)
        changed: Node = run_task(f"maintenance {wanted} on {found.name}",
                                 lambda _: found.set_maintenance(wanted == "on", wait=False,
                                                                 timeout=op_timeout),
                                 op_timeout, json_flag)
        if json_mode(json_flag):
            print_json(changed.info)
        else:
            say(f"{changed.name}: maintenance {'on' if changed.maintenance else 'off'}")


@node.command()
@with_uri("NODE")
@click.option("--to", "to_nodes", metavar="NODE", multiple=True,
              help="Node to move VMs to (repeatable; default: every other node).")
@click.option("--live/--cold", default=None, help="Live or cold moves; default: live for running VMs.")
@click.option("--maintenance", is_flag=True, help="Put the node into maintenance mode once it is empty.")
@timeout_option(what="each move")
@json_option
def evacuate(uri: str | None, node: str, to_nodes: tuple[str, ...], live: bool | None, maintenance: bool,
             op_timeout: float, json_flag: bool) -> None:
    """Move every VM off a node (hardware failure, maintenance), round-robin over --to."""
    with settings().connect(uri, changes=True) as host:
        source = host.nodes.get(node)
        names = node_names(host)
        targets = [host.nodes.get(ref) for ref in to_nodes]
        try:
            results: list[MigrationResult] = run_task(
                f"evacuate {source.name}",
                lambda on_progress: host.evacuate(source, to=targets or None, live=live,
                                                  maintenance=maintenance, wait=False,
                                                  timeout=op_timeout, on_progress=on_progress),
                None, json_flag)  # --timeout bounds each move; the VM count bounds the whole
        except EvacuationIncomplete as exc:
            _print_moves(list(exc.results), names, json_flag)  # type: ignore[arg-type]
            raise
        _print_moves(results, names, json_flag)
        if not json_mode(json_flag):
            say(f"{source.name}: empty{' and in maintenance' if maintenance else ''}")


def _print_moves(results: list[MigrationResult], names: dict[str, str], json_flag: bool) -> None:
    if json_mode(json_flag):
        print_json(results)
        return
    if results:
        print_table("moved", ["VM", "from", "to", "kind", "seconds"],
                    [(r.vm_name, names.get(r.source, r.source), names.get(r.target, r.target),
                      "live" if r.live else "cold", f"{r.duration_s:.2f}") for r in results])
