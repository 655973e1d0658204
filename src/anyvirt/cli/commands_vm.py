"""``anyvirt vm ...``: one VM's lifecycle, creation, changes, clones, moves and console."""

from __future__ import annotations

import contextlib
import difflib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import click

from anyvirt.addresses import GuestAddress
from anyvirt.cli import fleet
from anyvirt.cli.console_session import OUTPUT_CLOSED, interact, let_go_of_stdout, stdout_bytes
from anyvirt.cli.context import json_mode, json_option, settings, with_uri
from anyvirt.cli.exit_codes import CliError, ExitCode
from anyvirt.cli.output import (
    echo,
    escape_controls,
    human_bytes,
    jsonable,
    literal,
    mib,
    print_json,
    print_table,
    say,
    state_text,
    styled_state,
)
from anyvirt.cli.waiting import Notice, until_interrupted, wait_for
from anyvirt.cli.wording import seen
from anyvirt.deployment import Identity, User
from anyvirt.errors import AmbiguousName, AnyvirtError, NotFound, NotSupported, Timeout
from anyvirt.host import Host
from anyvirt.model import IMAGE_FORMATS, Capability, DiskSpec, MigrationResult, NicSpec, VMInfo, VMSpec
from anyvirt.node import Node
from anyvirt.tasks import DEFAULT_TIMEOUT, ProgressCallback, Task
from anyvirt.vm import DEFAULT_STOP_TIMEOUT, VM

TIMEOUT_TYPE = click.FloatRange(min=0, min_open=True)
#: seconds a graceful stop runs before the CLI says it is waiting for the guest
STOP_NOTICE_S = 5.0
#: the user ``--ssh-key`` logs in as, unless --user names another
DEFAULT_USER = "anyvirt"


@click.group()
def vm() -> None:
    """Start, stop, create, change, clone, move, delete one VM, and read its console."""


def find_vm(host: Host, ref: str) -> VM:
    """The VM by name or id; its id is remembered so that messages can say its name.
    A mistyped name gets the closest names there are, as a mistyped subcommand does."""
    try:
        found = host.vms.get(ref)
    except AmbiguousName:
        raise
    except NotFound as missing:
        close = _close_names(host, ref)
        if not close:
            raise
        raise NotFound(f"{missing}; did you mean {' or '.join(map(repr, close))}?") from missing
    seen.remember(found.id, found.name)
    return found


def _close_names(host: Host, ref: str) -> list[str]:
    """Up to three VM names like ``ref`` (one more listing, only once a lookup failed)."""
    try:
        names = sorted({vm.name for vm in host.vms.list()})
    except AnyvirtError:  # the suggestion is a courtesy: the NotFound stands without it
        return []
    return difflib.get_close_matches(ref, names, n=3, cutoff=0.6)


def node_names(host: Host) -> dict[str, str]:
    """Node id -> name (one listing), remembered for messages; names are what users type."""
    names: dict[str, str] = {}
    with contextlib.suppress(NotSupported):
        for node in host.nodes.list():
            names[node.id] = node.name
            seen.remember(node.id, node.name)
    return names


def _report(found: VM, json_flag: bool, verb: str) -> None:
    if json_mode(json_flag):
        print_json(found.summary)
    elif verb == found.state.value:  # "web1: stopped", not "web1: stopped (stopped)"
        say(f"{found.name}: ", styled_state(found.state))
    else:
        say(f"{found.name}: {verb} (", styled_state(found.state), ")")


def run_task(description: str, start: Callable[[ProgressCallback | None], Task[Any]],
             timeout: float | None, json_flag: bool, notice: Notice | None = None) -> Any:
    """Run one long operation: progress bar, Ctrl-C that says what carries on."""
    return wait_for(description, start, timeout=timeout, json_mode=json_mode(json_flag), notice=notice)


def timeout_option(default: float = DEFAULT_TIMEOUT, what: str = "the operation") -> Callable[[Any], Any]:
    return click.option("--timeout", "op_timeout", type=TIMEOUT_TYPE, default=default, show_default=True,
                        help=f"Seconds to wait for {what}.")


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
    @timeout_option()
    @json_option
    def command(uri: str | None, vm: str, op_timeout: float, json_flag: bool) -> None:
        with settings().connect(uri, changes=True) as host:
            target = find_vm(host, vm)
            action: Callable[..., Any] = getattr(target, method)
            run_task(f"{name} {target.name}",
                     lambda on_progress: action(wait=False, timeout=op_timeout, on_progress=on_progress),
                     op_timeout, json_flag)
            _report(target.refresh(), json_flag, verb)

    return click.command(name, help=help_text)(command)


for _spec in _POWER_COMMANDS:
    vm.add_command(_power_command(*_spec))


@vm.command()
@with_uri("VM")
@click.option("--force", is_flag=True, help="Power off at once instead of a graceful shutdown.")
@timeout_option(DEFAULT_STOP_TIMEOUT, "the guest to shut down")
@json_option
def stop(uri: str | None, vm: str, force: bool, op_timeout: float, json_flag: bool) -> None:
    """Shut a VM down gracefully (ACPI / guest tools), or power it off with --force.

    A graceful stop needs a guest that answers: after a few seconds the command
    says it is waiting for the guest, and if the guest never shuts down it says
    that --force powers the VM off.
    """
    with settings().connect(uri, changes=True) as host:
        target = find_vm(host, vm)
        notice = None if force or json_mode(json_flag) else Notice(
            STOP_NOTICE_S,
            f"{target.name}: waiting for the guest to shut down (up to {op_timeout:g} s; "
            "a guest that ignores ACPI never does: --force powers it off)")
        try:
            run_task(f"stop {target.name}",
                     lambda on_progress: target.stop(force=force, timeout=op_timeout, wait=False,
                                                     on_progress=on_progress),
                     op_timeout, json_flag, notice)
        except Timeout as exc:
            raise Timeout(f"{target.name}: the guest did not shut down within {op_timeout:g} s; "
                          "`anyvirt vm stop --force` powers it off") from exc
        _report(target.refresh(), json_flag, "powered off" if force else "stopped")


@vm.command()
@with_uri("VM")
@click.option("--keep-disks", is_flag=True, help="Remove the VM but leave its disks in place.")
@timeout_option()
@json_option
def delete(uri: str | None, vm: str, keep_disks: bool, op_timeout: float, json_flag: bool) -> None:
    """Delete a stopped VM (and its disks and snapshots, unless --keep-disks)."""
    with settings().connect(uri, changes=True) as host:
        target = find_vm(host, vm)
        run_task(f"delete {target.name}",
                 lambda _: target.delete(disks=not keep_disks, wait=False, timeout=op_timeout),
                 op_timeout, json_flag)
        if json_mode(json_flag):
            print_json({"deleted": {"id": target.id, "name": target.name}})
        else:
            say(f"{target.name}: deleted")


@vm.command()
@fleet.with_targets("VM")
@json_option
def show(targets: list[str | None], vm: str, json_flag: bool) -> None:
    """Everything known about a VM: id, state, CPUs, memory, node, disks, NICs, and its
    addresses where the connection reports them.

    Given several connections (URIs or profiles), the VM is looked for on each and shown
    wherever it is, under its host (in JSON: a list, each with its "host")."""
    as_json = json_mode(json_flag)
    if len(targets) == 1:
        with fleet.connect_word(settings(), targets[0]) as host:
            shown = _shown(host, vm)
        if as_json:
            print_json(shown.as_json())
        else:
            shown.print()
        return

    def lookup(host: Host) -> ShownVM | None:
        try:
            return _shown(host, vm)
        except AmbiguousName:
            raise
        except NotFound:
            return None

    reached = fleet.read_each(settings(), targets, lookup)
    found = [r.result for r in reached if r.result is not None]
    if as_json:
        print_json([shown.as_json() for shown in found])
    for shown in [] if as_json else found:
        say("on ", literal(shown.host, "bold"))
        shown.print()
    if not found and all(r.error is None for r in reached):
        raise NotFound(f"no VM with id or name {vm!r} on any of the {len(reached)} connections")
    fleet.raise_failures(reached)


@attrs.frozen
class ShownVM:
    """What ``vm show`` prints of one VM, read while connected."""

    host: str
    details: VMInfo
    node: str
    addresses: list[GuestAddress] | None

    def as_json(self) -> dict[str, Any]:
        """The VM's details, where it is (``host``) and its node's name."""
        out: dict[str, Any] = {**jsonable(self.details), "host": self.host,
                               "node_name": self.node or None}
        if self.addresses is not None:
            out["addresses"] = jsonable(self.addresses)
        return out

    def print(self) -> None:
        details = self.details
        stale = details.extra.get("stale_copy")
        if stale:  # another host runs the recovered VM: this copy must stay down
            echo(f"warning: {details.name}: {stale}", err=True)
        print_table(
            f"VM {details.name}",
            ["field", "value"],
            [("id", details.id),
             ("state", state_text(details.state, details.raw_state)),
             ("cpus", details.cpus), ("memory", mib(details.memory_mib)), ("node", self.node),
             ("firmware", details.firmware.value), ("guest OS", details.guest_os),
             ("template", "yes" if details.template else "no"), ("description", details.description)],
        )
        if details.disks:
            print_table("disks", ["id", "size", "format", "bus", "storage", "path", "backing"],
                        [(d.id, human_bytes(d.size_bytes),
                          d.format, d.bus, d.storage, d.path, d.backing) for d in details.disks])
        if details.nics:
            print_table("NICs", ["id", "network", "model", "mac"],
                        [(n.id, n.network, n.model, n.mac) for n in details.nics])
        if self.addresses:
            _print_addresses(self.addresses)


def _shown(host: Host, ref: str) -> ShownVM:
    target = find_vm(host, ref)
    details = target.info()
    found = target.addresses() if host.supports(Capability.GUEST_ADDRESSES) else None
    node = node_names(host).get(details.node or "", details.node or "")
    return ShownVM(host.uri, details, node, found)


def _image_disks(images: tuple[str, ...], formats: tuple[str, ...]) -> list[DiskSpec]:
    """One disk per ``--image``, each with its ``--image-format`` (paired in order, or the one
    format given for all); a count that pairs neither way is refused before connecting."""
    if formats and not images:
        raise click.UsageError("--image-format is the format of an --image: give the image too")
    given: tuple[str | None, ...] = formats * len(images) if len(formats) == 1 else formats
    if not given:
        given = (None,) * len(images)  # found from each image's first bytes
    if len(given) != len(images):
        raise click.UsageError(f"{len(images)} --image and {len(formats)} --image-format: give one "
                               "format for every image, or one for all of them")
    return [DiskSpec(image=path, format=fmt) for path, fmt in zip(images, given, strict=True)]


@vm.command()
@with_uri("NAME")
@click.option("--cpus", type=click.IntRange(min=1), default=1, show_default=True, help="Virtual CPUs.")
@click.option("--memory", "memory_mib", type=click.IntRange(min=1), default=512, show_default=True,
              help="Memory in MiB.")
@click.option("--disk-gib", type=click.FloatRange(min=0, min_open=True), multiple=True,
              help="Add a blank disk of this size (repeatable).")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, readable=True), multiple=True,
              help="Add a disk copied from this image file, e.g. a cloud image (repeatable).")
@click.option("--image-format", "image_formats", type=click.Choice(IMAGE_FORMATS), multiple=True,
              help="The format of each --image, in the same order (one given is every image's). "
                   "Without it the format is found from the image's first bytes: give 'raw' for a "
                   "raw disk, whose guest may have written any header there.")
@click.option("--network", multiple=True, help="Add a NIC on this network (repeatable).")
@click.option("--firmware", type=click.Choice(["bios", "efi"]), default="bios", show_default=True)
@click.option("--node", help="Node (hypervisor) to place the VM on.")
@click.option("--description", default="", help="Free text stored with the VM.")
@click.option("--start", "start_after", is_flag=True, help="Start the VM once created.")
@timeout_option()
@json_option
def create(uri: str | None, name: str, cpus: int, memory_mib: int, disk_gib: tuple[float, ...],
           image: tuple[str, ...], image_formats: tuple[str, ...], network: tuple[str, ...],
           firmware: str, node: str | None, description: str, start_after: bool, op_timeout: float,
           json_flag: bool) -> None:
    """Create a VM (left stopped unless --start)."""
    spec = VMSpec(
        name=name, cpus=cpus, memory_mib=memory_mib,
        disks=[*_image_disks(image, image_formats), *(DiskSpec(size_gib=g) for g in disk_gib)],
        nics=[NicSpec(network=n) for n in network], firmware=firmware, node=node,
        description=description,
    )
    with settings().connect(uri, changes=True) as host:
        made: VM = run_task(
            f"create {name}",
            lambda on_progress: host.vms.create(spec, wait=False, timeout=op_timeout,
                                                on_progress=on_progress),
            op_timeout, json_flag)
        seen.remember(made.id, made.name)
        if start_after:
            run_task(f"start {name}",
                     lambda on_progress: made.start(wait=False, timeout=op_timeout, on_progress=on_progress),
                     op_timeout, json_flag)
        _report(made.refresh(), json_flag, "created")


@vm.command()
@with_uri("VM")
@click.option("--cpus", type=click.IntRange(min=1), help="New number of virtual CPUs.")
@click.option("--memory", "memory_mib", type=click.IntRange(min=1), help="New memory in MiB.")
@timeout_option()
@json_option
def reconfigure(uri: str | None, vm: str, cpus: int | None, memory_mib: int | None, op_timeout: float,
                json_flag: bool) -> None:
    """Change a VM's CPUs and/or memory (live where the platform can, else at the next start)."""
    if cpus is None and memory_mib is None:
        raise click.UsageError("give --cpus, --memory or both")
    with settings().connect(uri, changes=True) as host:
        target = find_vm(host, vm)
        live = run_task(f"reconfigure {target.name}",
                        lambda _: target.reconfigure(cpus=cpus, memory_mib=memory_mib, wait=False,
                                                     timeout=op_timeout),
                        op_timeout, json_flag)
        target.refresh()
        if json_mode(json_flag):
            print_json({"vm": target.summary, "live": bool(live)})
        else:
            when = "now" if live else "from the next start"
            say(f"{target.name}: {target.cpus} CPUs, {mib(target.memory_mib)} ({when})")


@vm.command()
@with_uri("VM", "NEW_NAME")
@click.option("--linked", is_flag=True, help="Share the source's disks copy-on-write.")
@click.option("--node", help="Node (hypervisor) to place the clone on.")
@click.option("--count", type=click.IntRange(min=1),
              help="Make this many clones, NEW_NAME-1 .. NEW_NAME-N (all or none).")
@click.option("--concurrency", type=click.IntRange(min=1),
              help="How many clones are made at once (with --count; default one).")
@click.option("--ssh-key", "ssh_keys", type=click.Path(exists=True, dir_okay=False, readable=True),
              multiple=True, help="Give each clone an identity with this public key file "
                                  "(repeatable): its own host name (its name), --user with sudo.")
@click.option("--user", default=DEFAULT_USER, show_default=True,
              help="The user --ssh-key logs in as.")
@click.option("--wait-ready", is_flag=True,
              help="Start each clone and wait until it has an address (within --timeout).")
@timeout_option()
@json_option
def clone(uri: str | None, vm: str, new_name: str, linked: bool, node: str | None,
          count: int | None, concurrency: int | None, ssh_keys: tuple[str, ...], user: str,
          wait_ready: bool, op_timeout: float, json_flag: bool) -> None:
    """Copy a VM under a new name (full copy, or --linked); --count N makes N of them."""
    if concurrency is not None and count is None:
        raise click.UsageError("--concurrency goes with --count")
    identity = identity_from_keys(ssh_keys, user)
    with settings().connect(uri, changes=True) as host:
        source = find_vm(host, vm)
        made: VM | list[VM] = run_task(
            f"clone {source.name}",
            lambda on_progress: source.clone(new_name, linked=linked, node=node, count=count,
                                             concurrency=concurrency, identity=identity,
                                             wait=False, timeout=op_timeout,
                                             on_progress=on_progress),
            op_timeout, json_flag)
        clones = made if isinstance(made, list) else [made]
        if not wait_ready:
            if count is None:
                _report(clones[0], json_flag, f"{'linked' if linked else 'full'} clone of {source.name}")
            elif json_mode(json_flag):
                print_json([c.summary for c in clones])
            else:
                for c in clones:
                    _report(c, json_flag, f"{'linked' if linked else 'full'} clone of {source.name}")
            return
        ready = start_and_wait_ready(clones, op_timeout, json_flag)
        if json_mode(json_flag):
            print_json([{"vm": c.refresh().summary, "addresses": ready[c.id]} for c in clones])
        else:
            for c in clones:
                say(f"{c.name}: ready at {', '.join(str(a.ip) for a in ready[c.id])}")


def identity_from_keys(key_files: tuple[str, ...], user: str) -> Identity | None:
    """An identity for ``--ssh-key`` files (None without any): every key line in them."""
    if not key_files:
        return None
    keys = []
    for path in key_files:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--ssh-key") from None
        keys += [line.strip() for line in text.splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise click.BadParameter("no public key in the files given", param_hint="--ssh-key")
    return Identity(users=[User(user, ssh_keys=keys, sudo=True)])


def start_and_wait_ready(clones: list[VM], timeout: float, json_flag: bool) -> dict[str, list[GuestAddress]]:
    """Start the clones, then wait for each to be ready, all within one ``timeout``."""
    deadline = time.monotonic() + timeout
    for c in clones:
        run_task(f"start {c.name}",
                 lambda on_progress, c=c: c.start(wait=False, timeout=timeout,  # type: ignore[misc]
                                                  on_progress=on_progress),
                 timeout, json_flag)
    ready: dict[str, list[GuestAddress]] = {}
    for c in clones:
        ready[c.id] = c.wait_ready(timeout=max(deadline - time.monotonic(), 0.001))
    return ready


@vm.command()
@with_uri("VM")
@json_option
def addresses(uri: str | None, vm: str, json_flag: bool) -> None:
    """The guest's addresses on the VM's own NICs, as the platform reports them now."""
    with settings().connect(uri) as host:
        found = find_vm(host, vm).addresses()
        if json_mode(json_flag):
            print_json(found)
            return
        _print_addresses(found)


def _print_addresses(found: list[GuestAddress]) -> None:
    print_table("addresses", ["mac", "ip", "prefix", "source"],
                [(a.mac, str(a.ip), "" if a.prefix is None else a.prefix, a.source) for a in found])


@vm.command()
@with_uri("VM")
@click.option("--node", help="A node of the same host to move the VM to.")
@click.option("--to-host", "to_host", metavar="URI",
              help="Another host of the same backend to move the VM to (same connection options).")
@click.option("--live/--cold", default=None,
              help="Live (running VM) or cold (stopped VM); default: live if it is running.")
@timeout_option()
@json_option
def migrate(uri: str | None, vm: str, node: str | None, to_host: str | None, live: bool | None,
            op_timeout: float, json_flag: bool) -> None:
    """Move a VM to another node of the same host (--node), or to another host of the same
    backend (--to-host), live or cold. Moves across platforms are `anyvirt move`."""
    if (node is None) == (to_host is None):
        raise click.UsageError("give exactly one of --node and --to-host")
    with contextlib.ExitStack() as stack:
        host = stack.enter_context(settings().connect(uri, changes=True))
        source = find_vm(host, vm)
        names = node_names(host)
        destination: Node | Host
        if node is not None:
            destination = host.nodes.get(node)
        else:
            destination = stack.enter_context(settings().connect(to_host))
            names.update(node_names(destination))
        result: MigrationResult = run_task(
            f"migrate {source.name}",
            lambda on_progress: source.migrate(to=destination, live=live, wait=False, timeout=op_timeout,
                                               on_progress=on_progress),
            op_timeout, json_flag)
        if json_mode(json_flag):
            print_json(result)
        else:
            kind = "live" if result.live else "cold"
            say(f"{result.vm_name}: {kind} migration {names.get(result.source, result.source)} -> "
                f"{names.get(result.target, result.target)} in {result.duration_s:.2f} s")


@vm.command()
@with_uri("VM")
@click.option("--follow", "-f", is_flag=True, help="Keep printing what the guest writes, until Ctrl-C.")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=None,
              help="Only the last N lines.")
@click.option("--interactive", "-i", is_flag=True,
              help="Attach to the running VM's serial line: type to it, Ctrl-] leaves.")
def console(uri: str | None, vm: str, follow: bool, lines: int | None, interactive: bool) -> None:
    """Show a VM's serial console output, or attach to it with -i.

    libvirt (the local QEMU and the testbeds) logs every guest's first serial
    port to a file, which this prints; platforms without one say so (exit 5).
    Control characters from the guest are shown escaped, never sent to your terminal.

    With -i (a running VM, where the connection has vm.console): your keys go to the
    guest and its bytes come back unchanged, as with virsh console; Ctrl-] leaves. Piped
    input is sent, then the answer is shown until the guest is quiet for a second.
    """
    with settings().connect(uri) as host:
        target = find_vm(host, vm)
        if interactive:
            _attach(target)
            return
        path = target.info().extra.get("console_log")
        if not path:
            raise CliError(f"{host.backend} keeps no serial console log of VM {target.name!r}",
                           ExitCode.NOT_SUPPORTED, "NotSupported")
        log = Path(str(path))
        if not log.is_file():
            raise CliError(f"the console log of VM {target.name!r} is kept where the VM runs, "
                           "not on this machine", ExitCode.NOT_SUPPORTED, "NotSupported")
        try:
            _print_console(log, lines, follow)
        except BrokenPipeError:  # `| head` has its lines and left; the connection still closes
            let_go_of_stdout()


def _attach(target: VM) -> None:
    with target.console() as attached:
        if sys.stdin.isatty():
            click.echo(f"attached to the console of {target.name!r}; Ctrl-] leaves", err=True)
        ended = interact(attached, sys.stdin.fileno(), stdout_bytes())
    if ended == OUTPUT_CLOSED:
        let_go_of_stdout()
    elif ended == "console ended":
        click.echo(f"\nthe console of {target.name!r} ended", err=True)


def _print_console(log: Path, lines: int | None, follow: bool) -> None:
    text = log.read_bytes().decode("utf-8", errors="replace")
    shown = text.splitlines()
    if lines is not None:
        shown = shown[-lines:] if lines else []
    for line in shown:
        click.echo(escape_controls(line.rstrip("\r")))
    if not follow:
        return
    offset = log.stat().st_size
    with until_interrupted():
        _follow_log(log, offset)


def _follow_log(log: Path, offset: int) -> None:
    while True:  # until Ctrl-C
        time.sleep(0.5)
        size = log.stat().st_size
        if size > offset:
            with log.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read(size - offset).decode("utf-8", errors="replace")
            offset = size
            for line in chunk.splitlines():
                click.echo(escape_controls(line.rstrip("\r")))
