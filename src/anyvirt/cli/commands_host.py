"""Host-level commands: ``info``, ``vms``, ``nodes``, ``capabilities``, ``backends``."""

from __future__ import annotations

from typing import Any

import attrs
import click

from anyvirt import registry
from anyvirt.addresses import GuestAddress
from anyvirt.cli import commands_watch, fleet, matrix
from anyvirt.cli.commands_vm import node_names
from anyvirt.cli.context import json_mode, json_option, settings, with_uri
from anyvirt.cli.output import (
    echo,
    jsonable,
    mib,
    output_format,
    print_host_info,
    print_json,
    print_table,
    styled,
    styled_state,
)
from anyvirt.errors import NotFound
from anyvirt.host import Host
from anyvirt.model import Capability, PowerState, VMSummary


@click.command()
@with_uri()
@json_option
def info(uri: str | None, json_flag: bool) -> None:
    """Identity, capacity, allocation and storage of a host."""
    with settings().connect(uri) as host:
        facts = host.info()
        if json_mode(json_flag):
            print_json({"uri": host.uri, "info": facts})
        else:
            print_host_info(facts, host.uri)


@click.command()
@click.argument("targets", nargs=-1, metavar="[URI|PROFILE]...")
@click.option("--state", "states", type=click.Choice([s.value for s in PowerState]), multiple=True,
              help="Only VMs in this state (repeatable).")
@click.option("--node", "node_ref", metavar="NODE", help="Only VMs on this node (name or id).")
@click.option("--addresses", "with_addresses", is_flag=True,
              help="With --json: each VM's guest addresses too (one more call per VM).")
@click.option("--watch", "watching", is_flag=True,
              help="Keep the table up to date as VMs change (a line per change off a terminal; "
                   "Ctrl-C to stop). See also `anyvirt events`.")
@click.option("--interval", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="With --watch: seconds between polls where the platform pushes nothing.")
@click.option("--count", type=click.IntRange(min=1), help="With --watch: stop after this many changes.")
@json_option
def vms(targets: tuple[str, ...], states: tuple[str, ...], node_ref: str | None,
        with_addresses: bool, watching: bool, interval: float | None, count: int | None,
        json_flag: bool) -> None:
    """List the VMs of one host or several: name, state, CPUs, memory, node (ids with --json,
    or `vm show`).

    Each of TARGETS is a connection URI or a profile's name; several are read side by
    side, with a host column (and a "host" field in JSON). A connection that fails does
    not hide the others: they are listed, then it is named, and the exit code is its own.
    """
    if with_addresses and (watching or not json_mode(json_flag)):
        raise click.UsageError("--addresses goes with --json, without --watch")
    words: list[str | None] = list(targets) or [None]
    if watching:
        if len(words) > 1:
            raise click.UsageError("--watch follows one connection (`anyvirt events` per host)")
        with fleet.connect_word(settings(), words[0]) as host:
            commands_watch.watch_table(host, node_names(host), interval=interval, count=count,
                                       as_json=json_mode(json_flag))
        return
    as_json = json_mode(json_flag)

    def listing(host: Host) -> list[ListedVM]:
        listed = host.vms.list()
        names = node_names(host)
        if node_ref is not None:
            try:
                wanted = host.nodes.get(node_ref)
            except NotFound:
                if len(words) == 1:
                    raise
                return []  # of a fleet, the hosts that have this node
            listed = [vm for vm in listed if vm.node in (wanted.id, wanted.name)]
        if states:
            listed = [vm for vm in listed if vm.state.value in states]
        # opt-in: a listing is a fixed number of round trips, addresses one per VM
        addresses = with_addresses and as_json and host.supports(Capability.GUEST_ADDRESSES)
        return [ListedVM(host.uri, vm.summary, names.get(vm.node or "", vm.node or ""),
                         vm.addresses() if addresses else None)
                for vm in sorted(listed, key=lambda v: v.name)]

    reached = fleet.read_each(settings(), words, listing)
    rows = [row for r in reached for row in (r.result or [])]
    if node_ref is not None and len(words) > 1 and not rows and all(r.error is None for r in reached):
        raise NotFound(f"no node {node_ref!r} on any of the {len(reached)} connections")
    if as_json:
        print_json([row.as_json() for row in rows])
    elif len(reached) == 1:
        print_table(f"VMs on {reached[0].label}", ["name", "state", "cpus", "memory", "node"],
                    [row.cells() for row in rows], listing=True)
    else:
        print_table(f"VMs on {len(reached)} connections",
                    ["host", "name", "state", "cpus", "memory", "node"],
                    [(row.host, *row.cells()) for row in rows], listing=True)
    fleet.raise_failures(reached)


@attrs.frozen
class ListedVM:
    """One row of ``vms``: the VM as listed, where (``host``: its connection's safe URI),
    and its node's name."""

    host: str
    summary: VMSummary
    node_name: str
    addresses: list[GuestAddress] | None = None

    def cells(self) -> tuple[object, ...]:
        vm = self.summary
        return (vm.name, styled_state(vm.state), vm.cpus, mib(vm.memory_mib), self.node_name)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {**jsonable(self.summary), "host": self.host,
                               "node_name": self.node_name or None}
        if self.addresses is not None:
            out["addresses"] = jsonable(self.addresses)
        return out


@click.command()
@with_uri()
@json_option
def nodes(uri: str | None, json_flag: bool) -> None:
    """List the hypervisors behind a connection (ESXi hosts of a vCenter, cluster nodes)."""
    with settings().connect(uri) as host:
        found = host.nodes.list()
        if json_mode(json_flag):
            print_json([n.info for n in found])
            return
        print_table(
            f"nodes of {host.uri}",
            ["name", "state", "maintenance", "cpus", "memory", "free memory", "cluster"],
            [(n.name, n.state, "yes" if n.maintenance else "no", n.info.cpus, mib(n.info.memory_mib),
              mib(n.info.free_memory_mib), n.info.cluster or "") for n in found],
            listing=True,
        )


@click.command()
@with_uri()
@click.option("--all", "all_backends", is_flag=True,
              help="Show what every installed backend can offer, without connecting.")
@json_option
def capabilities(uri: str | None, all_backends: bool, json_flag: bool) -> None:
    """What a connection can do, as a matrix (or every backend's with --all)."""
    if all_backends:
        cols = matrix.columns()
        if json_mode(json_flag):
            # the shape scripts rely on: backend -> capabilities (the conditions are in the
            # table; a connection's own answer is `capabilities URI --json`, with why_not)
            print_json({c.title: sorted(cap.value for cap in c.capabilities) for c in cols})
            return
        print_table(
            "what each installed backend can offer (if [n]: only where note n holds)",
            ["capability", "Python name", *(c.title for c in cols)],
            [(cap.value, matrix.python_name(cap), *marks) for cap, marks in matrix.cells(cols)],
            listing=True,
        )
        if output_format() not in ("names", "tsv"):
            for note in matrix.notes(cols):
                echo(note.text())
        return
    with settings().connect(uri) as host:
        caps = host.capabilities
        why = {cap: host.why_not(cap) for cap in Capability if cap not in caps}
        if json_mode(json_flag):
            print_json({"uri": host.uri, "backend": host.backend, "capabilities": caps,
                        "why_not": {cap.value: reason for cap, reason in why.items()}})
            return
        print_table(
            f"capabilities of {host.uri}",
            ["capability", "Python name", "supported", "meaning", "why not"],
            [(cap.value, matrix.python_name(cap),
              styled("yes", "green") if cap in caps else styled("no", "red"), matrix.describe(cap),
              why.get(cap, ""))
             for cap in Capability],
            listing=True,
        )


@click.command()
@json_option
def backends(json_flag: bool) -> None:
    """The installed backends and the URI schemes they answer to."""
    entries = []
    for scheme in registry.available():
        try:
            cls = registry.driver_for(scheme)
        except Exception as exc:  # a broken optional backend: say why, keep listing the others
            entries.append({"scheme": scheme, "backend": None, "platform": None, "loadable": False,
                            "error": f"{type(exc).__name__}: {exc}"})
            continue
        entries.append({"scheme": scheme, "backend": cls.backend, "platform": cls.platform,
                        "loadable": True, "error": None})
    if json_mode(json_flag):
        print_json(entries)
        return
    print_table(
        "installed backends",
        ["scheme", "backend", "platform", "status"],
        [(e["scheme"], e["backend"] or "", e["platform"] or "",
          "ok" if e["loadable"] else styled(f"fails to load: {e['error']}", "red"))
         for e in entries],
            listing=True,
        )


def register(group: click.Group) -> None:
    for command in (info, vms, nodes, capabilities, backends):
        group.add_command(command)
