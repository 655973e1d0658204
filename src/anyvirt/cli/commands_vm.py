"""``anyvirt vm ...``: one VM's lifecycle, creation, clones and moves."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import click
from rich.text import Text

from anyvirt.cli.context import json_mode, json_option, settings, with_uri
from anyvirt.cli.output import mib, print_json, print_table, say, styled_state
from anyvirt.cli.progress import progress_bar, wanted
from anyvirt.host import Host
from anyvirt.model import DiskSpec, MigrationResult, NicSpec, VMSpec
from anyvirt.node import Node
from anyvirt.tasks import DEFAULT_TIMEOUT
from anyvirt.vm import DEFAULT_STOP_TIMEOUT, VM

TIMEOUT_TYPE = click.FloatRange(min=0, min_open=True)


@click.group()
def vm() -> None:
    """Start, stop, create, clone, move and delete one VM."""


def _report(found: VM, json_flag: bool, verb: str) -> None:
    if json_mode(json_flag):
        print_json(found.summary)
    else:
        say(f"{found.name}: {verb} (", styled_state(found.state), ")")


# name, past tense for the report, VM method, help text
_POWER_COMMANDS: tuple[tuple[str, str, str, str], ...] = (
    ("start", "started", "start", "Power a VM on."),
    ("reboot", "rebooted", "reboot", "Ask the guest to restart."),
    ("reset", "reset", "reset", "Hard reset, like the reset button."),
    ("pause", "paused", "pause", "Freeze a running VM's CPUs (memory stays in place)."),
    ("resume", "resumed", "resume", "Continue a paused (or suspended) VM."),
    ("suspend", "suspended", "suspend", "Save a VM's memory to disk and stop it."),
)


def _power_command(name: str, verb: str, method: str, help_text: str) -> click.Command:
    """One lifecycle command: find the VM, run the action with a progress bar, report the state."""

    @with_uri("VM")
    @click.option("--timeout", "op_timeout", type=TIMEOUT_TYPE, default=DEFAULT_TIMEOUT, show_default=True,
                  help="Seconds to wait for the operation.")
    @json_option
    def command(uri: str | None, vm: str, op_timeout: float, json_flag: bool) -> None:
        with settings().connect(uri) as host:
            target = host.vms.get(vm)
            action: Callable[..., Any] = getattr(target, method)
            with progress_bar(f"{name} {target.name}", wanted(json_mode(json_flag))) as on_progress:
                action(timeout=op_timeout, on_progress=on_progress)
            _report(target, json_flag, verb)

    return click.command(name, help=help_text)(command)


for _spec in _POWER_COMMANDS:
    vm.add_command(_power_command(*_spec))


@vm.command()
@with_uri("VM")
@click.option("--force", is_flag=True, help="Power off at once instead of a graceful shutdown.")
@click.option("--timeout", "op_timeout", type=TIMEOUT_TYPE, default=DEFAULT_STOP_TIMEOUT, show_default=True,
              help="Seconds to wait for the guest to shut down.")
@json_option
def stop(uri: str | None, vm: str, force: bool, op_timeout: float, json_flag: bool) -> None:
    """Shut a VM down gracefully (ACPI / guest tools), or power it off with --force."""
    with settings().connect(uri) as host:
        target = host.vms.get(vm)
        with progress_bar(f"stop {target.name}", wanted(json_mode(json_flag))) as on_progress:
            target.stop(force=force, timeout=op_timeout, on_progress=on_progress)
        _report(target, json_flag, "powered off" if force else "stopped")


@vm.command()
@with_uri("VM")
@click.option("--keep-disks", is_flag=True, help="Remove the VM but leave its disks in place.")
@click.option("--timeout", "op_timeout", type=TIMEOUT_TYPE, default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds to wait for the operation.")
@json_option
def delete(uri: str | None, vm: str, keep_disks: bool, op_timeout: float, json_flag: bool) -> None:
    """Delete a stopped VM (and its disks and snapshots, unless --keep-disks)."""
    with settings().connect(uri) as host:
        target = host.vms.get(vm)
        target.delete(disks=not keep_disks, timeout=op_timeout)
        if json_mode(json_flag):
            print_json({"deleted": {"id": target.id, "name": target.name}})
        else:
            say(f"{target.name}: deleted")


@vm.command()
@with_uri("VM")
@json_option
def show(uri: str | None, vm: str, json_flag: bool) -> None:
    """Everything known about a VM: state, CPUs, memory, disks, NICs."""
    with settings().connect(uri) as host:
        details = host.vms.get(vm).info()
        if json_mode(json_flag):
            print_json(details)
            return
        print_table(
            f"VM {details.name}",
            ["field", "value"],
            [("id", details.id),
             ("state", Text.assemble(styled_state(details.state), f" ({details.raw_state})")),
             ("cpus", details.cpus), ("memory", mib(details.memory_mib)), ("node", details.node or ""),
             ("firmware", details.firmware.value), ("guest OS", details.guest_os),
             ("template", "yes" if details.template else "no"), ("description", details.description)],
        )
        if details.disks:
            print_table("disks", ["id", "size", "format", "bus", "storage", "path", "backing"],
                        [(d.id, "?" if d.size_bytes is None else f"{d.size_bytes / 1024**3:.2f} GiB",
                          d.format, d.bus, d.storage, d.path, d.backing) for d in details.disks])
        if details.nics:
            print_table("NICs", ["id", "network", "model", "mac"],
                        [(n.id, n.network, n.model, n.mac) for n in details.nics])


@vm.command()
@with_uri("NAME")
@click.option("--cpus", type=click.IntRange(min=1), default=1, show_default=True, help="Virtual CPUs.")
@click.option("--memory", "memory_mib", type=click.IntRange(min=1), default=512, show_default=True,
              help="Memory in MiB.")
@click.option("--disk-gib", type=click.FloatRange(min=0, min_open=True), multiple=True,
              help="Add a blank disk of this size (repeatable).")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, readable=True), multiple=True,
              help="Add a disk copied from this image file (repeatable).")
@click.option("--network", multiple=True, help="Add a NIC on this network (repeatable).")
@click.option("--firmware", type=click.Choice(["bios", "efi"]), default="bios", show_default=True)
@click.option("--node", help="Node (hypervisor) to place the VM on.")
@click.option("--description", default="", help="Free text stored with the VM.")
@click.option("--start", "start_after", is_flag=True, help="Start the VM once created.")
@click.option("--timeout", "op_timeout", type=TIMEOUT_TYPE, default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds to wait for the operation.")
@json_option
def create(uri: str | None, name: str, cpus: int, memory_mib: int, disk_gib: tuple[float, ...],
           image: tuple[str, ...], network: tuple[str, ...], firmware: str, node: str | None,
           description: str, start_after: bool, op_timeout: float, json_flag: bool) -> None:
    """Create a VM (left stopped unless --start)."""
    spec = VMSpec(
        name=name, cpus=cpus, memory_mib=memory_mib,
        disks=[*(DiskSpec(image=path) for path in image), *(DiskSpec(size_gib=g) for g in disk_gib)],
        nics=[NicSpec(network=n) for n in network], firmware=firmware, node=node,
        description=description,
    )
    with settings().connect(uri) as host:
        with progress_bar(f"create {name}", wanted(json_mode(json_flag))) as on_progress:
            made = host.vms.create(spec, timeout=op_timeout, on_progress=on_progress)
            if start_after:
                made.start(timeout=op_timeout, on_progress=on_progress)
        _report(made, json_flag, "created")


@vm.command()
@with_uri("VM", "NEW_NAME")
@click.option("--linked", is_flag=True, help="Share the source's disks copy-on-write.")
@click.option("--node", help="Node (hypervisor) to place the clone on.")
@click.option("--timeout", "op_timeout", type=TIMEOUT_TYPE, default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds to wait for the operation.")
@json_option
def clone(uri: str | None, vm: str, new_name: str, linked: bool, node: str | None, op_timeout: float,
          json_flag: bool) -> None:
    """Copy a VM under a new name (full copy, or --linked)."""
    with settings().connect(uri) as host:
        source = host.vms.get(vm)
        with progress_bar(f"clone {source.name}", wanted(json_mode(json_flag))) as on_progress:
            made = source.clone(new_name, linked=linked, node=node, timeout=op_timeout,
                                on_progress=on_progress)
        _report(made, json_flag, f"{'linked' if linked else 'full'} clone of {source.name}")


@vm.command()
@with_uri("VM")
@click.option("--node", help="A node of the same host to move the VM to.")
@click.option("--to-host", "to_host", metavar="URI",
              help="Another host of the same backend to move the VM to (same connection options).")
@click.option("--live/--cold", default=None,
              help="Live (running VM) or cold (stopped VM); default: live if it is running.")
@click.option("--timeout", "op_timeout", type=TIMEOUT_TYPE, default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds to wait for the operation.")
@json_option
def migrate(uri: str | None, vm: str, node: str | None, to_host: str | None, live: bool | None,
            op_timeout: float, json_flag: bool) -> None:
    """Move a VM to another node of the same host (--node), or to another host of the same
    backend (--to-host), live or cold. Moves across platforms are not this command."""
    if (node is None) == (to_host is None):
        raise click.UsageError("give exactly one of --node and --to-host")
    with contextlib.ExitStack() as stack:
        host = stack.enter_context(settings().connect(uri))
        source = host.vms.get(vm)
        destination: Node | Host
        if node is not None:
            destination = host.nodes.get(node)
        else:
            destination = stack.enter_context(settings().connect(to_host))
        with progress_bar(f"migrate {source.name}", wanted(json_mode(json_flag))) as on_progress:
            result: MigrationResult = source.migrate(to=destination, live=live, timeout=op_timeout,
                                                     on_progress=on_progress)
        if json_mode(json_flag):
            print_json(result)
        else:
            kind = "live" if result.live else "cold"
            say(f"{result.vm_name}: {kind} migration {result.source} -> {result.target} "
                f"in {result.duration_s:.2f} s")
