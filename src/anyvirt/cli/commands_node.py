"""``anyvirt node ...``: a hypervisor's maintenance mode, moving every VM off it, and
bringing a failed one's VMs back on the others."""

from __future__ import annotations

from typing import Any

import click

from anyvirt.cli.commands_vm import node_names, run_task, timeout_option
from anyvirt.cli.context import json_mode, json_option, settings, with_uri
from anyvirt.cli.exit_codes import ExitCode
from anyvirt.cli.output import print_json, print_table, say, styled
from anyvirt.errors import EvacuationIncomplete
from anyvirt.model import MigrationResult
from anyvirt.node import Node
from anyvirt.recovery import Recovery


@click.group()
def node() -> None:
    """A node (hypervisor) of a host: maintenance mode on or off, evacuate its VMs, recover
    a failed node's VMs."""


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


@node.command()
@with_uri("NODE")
@click.option("--to", "to_node", metavar="NODE", default=None,
              help="Bring every VM up on this node (default: the least loaded live nodes of "
                   "the failed node's cluster that see its disks).")
@click.option("--fenced", is_flag=True,
              help="State that the node is fenced (powered off): needed where the platform "
                   "cannot prove it down itself.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@timeout_option(what="the whole recovery")
@json_option
def recover(uri: str | None, node: str, to_node: str | None, fenced: bool, yes: bool,
            op_timeout: float, json_flag: bool) -> None:
    """Bring the VMs of a failed NODE back on live nodes, from their disks where they are.

    Fencing first: a node that still answers is refused (`anyvirt node evacuate` moves its
    VMs), and so is one the platform cannot prove down, unless --fenced. Each VM is
    reported: recovered from shared storage, recovered by the cluster's own HA (Proxmox
    VE), or not recovered and why; the exit code is 1 when any VM was not recovered.
    Confirmation is asked first, unless --yes or --json.
    """
    as_json = json_mode(json_flag)
    with settings().connect(uri, changes=True) as host:
        failed = host.nodes.get(node)
        if not as_json:
            on = failed.vms()
            say(f"{failed.name} ({failed.state}): {len(on)} VMs to bring back on "
                f"{to_node or 'the live nodes of its cluster'}"
                f"{' (fenced, by your word)' if fenced else ''}")
            for vm in on:
                say(f"  {vm.name} ({vm.state})")
        if not (yes or as_json):
            click.confirm("Recover them?", abort=True)
        names = node_names(host)
        recovery: Recovery = run_task(
            f"recover {failed.name}",
            lambda on_progress: host.recover(failed, to=to_node, fenced=fenced, wait=False,
                                             timeout=op_timeout, on_progress=on_progress),
            op_timeout, json_flag)
        if as_json:
            print_json(recovery_json(recovery))
        else:
            _print_recovery(recovery, names)
        if recovery.failed:
            raise SystemExit(ExitCode.FAILURE)


def recovery_json(recovery: Recovery) -> dict[str, Any]:
    """A recovery as JSON: per VM its outcome, where it runs now, and why not."""
    return {
        "elapsed": recovery.elapsed,
        "vms": [{"name": r.vm_name, "old_id": r.old_id, "outcome": r.outcome.value,
                 "id": r.vm.id if r.vm is not None else None,
                 "node": r.vm.node if r.vm is not None else None,
                 "state": r.vm.state.value if r.vm is not None else None,
                 "reason": r.reason, "elapsed": r.elapsed} for r in recovery],
    }


def _print_recovery(recovery: Recovery, names: dict[str, str]) -> None:
    if recovery:
        print_table("recovered", ["VM", "outcome", "node", "state", "seconds", "reason"],
                    [(r.vm_name, r.outcome.value,
                      names.get(r.vm.node or "", r.vm.node or "") if r.vm is not None else "-",
                      r.vm.state.value if r.vm is not None else "-", f"{r.elapsed:.2f}", r.reason)
                     for r in recovery])
    lost = len(recovery.failed)
    say(f"{len(recovery) - lost} of {len(recovery)} VMs back in {recovery.elapsed:.2f} s",
        styled(f"; {lost} not recovered", "red") if lost else "")
