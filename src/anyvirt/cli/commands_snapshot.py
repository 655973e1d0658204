"""``anyvirt snapshot ...``: create, list (as a tree), revert, delete."""

from __future__ import annotations

import click
from rich.text import Text
from rich.tree import Tree

from anyvirt.cli.commands_vm import find_vm
from anyvirt.cli.context import json_mode, json_option, settings, with_uri
from anyvirt.cli.output import literal, print_json, say, stdout_console, styled, styled_state
from anyvirt.snapshot import Snapshot
from anyvirt.tasks import DEFAULT_TIMEOUT

TIMEOUT_TYPE = click.FloatRange(min=0, min_open=True)


@click.group()
def snapshot() -> None:
    """Snapshots of a VM: create, list, revert, delete."""


@snapshot.command()
@with_uri("VM", "NAME")
@click.option("--memory", is_flag=True, help="Also save a running guest's memory (revert resumes it).")
@click.option("--description", default="", help="Free text stored with the snapshot.")
@click.option("--timeout", "op_timeout", type=TIMEOUT_TYPE, default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds to wait for the operation.")
@json_option
def create(uri: str | None, vm: str, name: str, memory: bool, description: str, op_timeout: float,
           json_flag: bool) -> None:
    """Snapshot a VM."""
    with settings().connect(uri) as host:
        target = find_vm(host, vm)
        made: Snapshot = target.snapshots.create(name, description=description, memory=memory,
                                                 timeout=op_timeout)
        if json_mode(json_flag):
            print_json(made.info)
        else:
            kind = "with memory" if made.memory else "disk only"
            say(f"{target.name}: snapshot {made.name!r} created ({kind})")


def _label(snap: Snapshot) -> Text:
    created = snap.created.strftime("%Y-%m-%d %H:%M:%S") if snap.created else "?"
    label = Text.assemble(styled(snap.name, "bold"), " ", styled(created, "dim"))
    if snap.memory:
        label.append(" memory", style="cyan")
    if snap.is_current:
        label.append(" <- current", style="green")
    if snap.description:
        label.append(literal(f" - {snap.description}"))
    return label


@snapshot.command("list")
@with_uri("VM")
@json_option
def list_(uri: str | None, vm: str, json_flag: bool) -> None:
    """Show a VM's snapshots as a tree, the current one marked."""
    with settings().connect(uri) as host:
        target = find_vm(host, vm)
        snaps = target.snapshots.list()  # parents before children
        if json_mode(json_flag):
            print_json([s.info for s in snaps])
            return
        console = stdout_console()
        if not snaps:
            say(f"{target.name}: no snapshots")
            return
        tree = Tree(styled(target.name, "bold"))
        branches: dict[str, Tree] = {}
        for snap in snaps:
            parent = branches.get(snap.info.parent_id or "", tree)
            branches[snap.id] = parent.add(_label(snap))
        console.print(tree)


@snapshot.command()
@with_uri("VM", "NAME")
@click.option("--timeout", "op_timeout", type=TIMEOUT_TYPE, default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds to wait for the operation.")
@json_option
def revert(uri: str | None, vm: str, name: str, op_timeout: float, json_flag: bool) -> None:
    """Return a VM to a snapshot."""
    with settings().connect(uri) as host:
        target = find_vm(host, vm)
        snap = target.snapshots.get(name)
        snap.revert(timeout=op_timeout)
        if json_mode(json_flag):
            print_json({"vm": target.summary, "snapshot": snap.info})
        else:
            say(f"{target.name}: reverted to {snap.name!r}, now ", styled_state(target.state))


@snapshot.command()
@with_uri("VM", "NAME")
@click.option("--children", is_flag=True, help="Delete the snapshot's whole subtree.")
@click.option("--timeout", "op_timeout", type=TIMEOUT_TYPE, default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds to wait for the operation.")
@json_option
def delete(uri: str | None, vm: str, name: str, children: bool, op_timeout: float, json_flag: bool) -> None:
    """Delete a snapshot (its children move to its parent, unless --children deletes them too)."""
    with settings().connect(uri) as host:
        target = find_vm(host, vm)
        snap = target.snapshots.get(name)
        snap.delete(children=children, timeout=op_timeout)
        if json_mode(json_flag):
            print_json({"deleted": {"id": snap.id, "name": snap.name, "children": children}})
        else:
            say(f"{target.name}: snapshot {snap.name!r} deleted")
