"""Cross-platform moves and portable backups: ``plan``, ``move``, ``backup-info``,
``verify``, and the archive forms of ``backup`` and ``restore`` (their commands are in
``commands_repo``, beside the repository forms).

``plan`` and ``move`` open two connections, source and target, with the same
connection options (``--username``, ``--password-env``, ``--insecure``,
``--timeout``, ``--profile``); ``--target-password-env`` gives the target its
own password. Nothing here prints a URI the user typed: hosts are shown as
``host.uri`` and plans as their ``source_uri``/``target_uri``, which carry no
secrets.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import attrs
import click

from anyvirt.cli.commands_vm import TIMEOUT_TYPE, find_vm
from anyvirt.cli.context import Settings, json_mode, json_option, settings, with_uri
from anyvirt.cli.output import (
    human_bytes,
    jsonable,
    literal,
    mib,
    print_json,
    print_table,
    say,
    stderr_console,
    styled,
    styled_state,
)
from anyvirt.cli.progress import progress_bar, wanted
from anyvirt.host import Host
from anyvirt.migration import (
    MigrationPlan,
    backup,
    migrate,
    plan_migration,
    read_manifest,
    verify,
)
from anyvirt.migration.plan import require_movable
from anyvirt.model import MigrationResult
from anyvirt.tasks import DEFAULT_TIMEOUT

F = TypeVar("F", bound=Callable[..., Any])


# -- shared pieces -----------------------------------------------------------------


def target_password_option(func: F) -> F:
    """``--target-password-env VAR``: the target's password, when it differs from the source's."""
    return click.option(
        "--target-password-env", metavar="VAR",
        help="Read the target's password from environment variable VAR (default: the same "
             "password as the source, from --password-env).",
    )(func)


def name_option(func: F) -> F:
    return click.option("--name", help="Name of the VM on the target (default: its current name).")(func)


def parse_network_map(_ctx: click.Context, _param: click.Parameter,
                      values: tuple[str, ...]) -> dict[str, str]:
    """``--network-map a=b`` (repeatable; ``*=b`` for every network not named)."""
    mapping: dict[str, str] = {}
    for value in values:
        source, sep, target = value.partition("=")
        if not sep or not source or not target:
            raise click.BadParameter(f"{value!r}: expected SOURCE=TARGET, e.g. lab=vm-network")
        if source in mapping:
            raise click.BadParameter(f"{source!r} is mapped twice")
        mapping[source] = target
    return mapping


def network_map_option(func: F) -> F:
    return click.option(
        "--network-map", "networks", multiple=True, callback=parse_network_map,
        metavar="SOURCE=TARGET",
        help="Put NICs of source network SOURCE on target network TARGET (repeatable; "
             "'*=TARGET' for every network not named). A NIC on a network the target lacks "
             "and the map does not name is refused before anything is copied.",
    )(func)


def consistency_options(func: F) -> F:
    """``--shutdown`` and ``--snapshot``: how a running VM's disks are copied (moves, backups)."""
    func = click.option(
        "--snapshot", is_flag=True,
        help="Copy a running VM from a point-in-time snapshot (crash-consistent; the "
             "snapshot is removed afterwards and the VM keeps running).")(func)
    return click.option(
        "--shutdown", is_flag=True,
        help="Shut a running VM down gracefully first (without it or --snapshot, a running "
             "VM is refused).")(func)


def timeout_option(func: F) -> F:
    return click.option("--timeout", "op_timeout", type=TIMEOUT_TYPE, default=DEFAULT_TIMEOUT,
                        show_default=True, help="Seconds to wait for the operation.")(func)


def target_settings(source: Settings, password_env: str | None) -> Settings:
    """The target's connection settings: the source's, with another password variable if given."""
    if password_env is None:
        return source
    if os.environ.get(password_env) is None:
        # name the variable, never a value
        raise click.UsageError(f"--target-password-env {password_env}: that variable is not set")
    return attrs.evolve(source, password_env=password_env)


@contextlib.contextmanager
def two_hosts(source_uri: str | None, target_uri: str,
              target_password_env: str | None) -> Iterator[tuple[Host, Host]]:
    """Connect to the source and the target; both are closed on the way out."""
    source_settings = settings()
    for_target = target_settings(source_settings, target_password_env)  # checked before connecting
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(source_settings.connect(source_uri))
        target = stack.enter_context(for_target.connect(target_uri))
        yield source, target


@contextlib.contextmanager
def busy(message: str, enabled: bool) -> Iterator[None]:
    """A spinner on stderr for operations that report no progress (backup, restore)."""
    if not enabled:
        yield
        return
    with stderr_console().status(literal(message)):
        yield


# -- plan --------------------------------------------------------------------------


def plan_as_json(plan: MigrationPlan) -> dict[str, Any]:
    """The plan for scripts. Disks are named by their source disk id: the spec's image
    paths are placeholders until the export writes the real files."""
    spec = jsonable(plan.spec)
    spec["disks"] = [{"source_disk": disk_id, "bus": disk.bus}
                     for disk_id, disk in zip(plan.disk_ids, plan.spec.disks, strict=True)]
    return {
        "source_uri": plan.source_uri,
        "target_uri": plan.target_uri,
        "source": jsonable(plan.source),
        "spec": spec,
        "disks": [jsonable(d) for d in plan.disks],
        "networks": [jsonable(n) for n in plan.networks],
        "warnings": [{"code": w.code.value, "message": w.message} for w in plan.warnings],
    }


def print_warnings(plan: MigrationPlan) -> None:
    if not plan.warnings:
        say(styled("no warnings: the hardware maps one to one", "green"))
        return
    print_table(f"{len(plan.warnings)} warning(s)", ["code", "what changes"],
                [(styled(w.code.value, "yellow"), w.message) for w in plan.warnings])


def print_plan(plan: MigrationPlan) -> None:
    """Source next to target for each setting, then disks, NICs and the warnings."""
    src, spec = plan.source, plan.spec
    say(f"{src.name} on {plan.source_uri} -> {spec.name} on {plan.target_uri}")
    print_table(
        "hardware", ["setting", "source", "target"],
        [("name", src.name, spec.name), ("cpus", src.cpus, spec.cpus),
         ("memory", mib(src.memory_mib), mib(spec.memory_mib)),
         ("firmware", src.firmware.value, spec.firmware.value),
         ("guest OS", src.guest_os, spec.guest_os)],
    )
    if plan.disks:
        print_table(
            "disks", ["disk", "size", "format", "source bus", "target bus", "at most sent"],
            [(d.id, human_bytes(c.size_bytes), _change(c.source_format, c.target_format, "?"),
              d.bus or "", c.target_bus or "", human_bytes(c.bytes_to_send))
             for d, c in zip(src.disks, plan.disks, strict=True)],
        )
    if src.nics:
        print_table(
            "NICs", ["NIC", "network", "model", "MAC"],
            [(n.id, _change(n.network, planned.network, "the target's default"),
              _change(n.model, planned.model, "the target's default"),
              _change(n.mac, planned.mac, "a new one"))
             for n, planned in zip(src.nics, spec.nics, strict=True)],
        )
    print_warnings(plan)


def _change(before: str | None, after: str | None, instead: str) -> str:
    if before == after:
        return before or ""
    return f"{before or '-'} -> {after or instead}"


@click.command("plan")
@with_uri("VM", "TARGET_URI")
@name_option
@network_map_option
@target_password_option
@json_option
def plan_command(uri: str | None, vm: str, target_uri: str, name: str | None,
                 networks: dict[str, str], target_password_env: str | None,
                 json_flag: bool) -> None:
    """Show how a VM would move to TARGET_URI (a host of any backend): the hardware as
    the target will get it and every warning. Changes nothing; exits 0 even with warnings.

    URI is the source host; both connections use the same connection options.
    """
    with two_hosts(uri, target_uri, target_password_env) as (source, target):
        planned = plan_migration(find_vm(source, vm), to=target, name=name, networks=networks)
        if json_mode(json_flag):
            print_json(plan_as_json(planned))
        else:
            print_plan(planned)


# -- move --------------------------------------------------------------------------


def print_moved(result: MigrationResult, deleted_source: bool) -> None:
    copied = "" if result.bytes_transferred is None else f", {human_bytes(result.bytes_transferred)} copied"
    say(f"{result.vm_name}: moved {result.source} -> {result.target} "
        f"in {result.duration_s:.2f} s{copied}")
    say(f"new id: {result.vm_id}")
    say("source: deleted" if deleted_source else "source: kept")
    if result.verified:
        say(f"verified: {', '.join(result.verified)} ({result.consistency or 'stopped'} source)")
    for disk in result.disks:
        digest = f", sha256 {disk.target_sha256[:16]}..." if disk.target_sha256 else ""
        say(f"  {disk.id}: {human_bytes(disk.size_bytes)} matched by {disk.method}{digest}")
    if result.warnings:
        say("warnings: " + ", ".join(result.warnings))


@click.command("move")
@with_uri("VM", "TARGET_URI")
@name_option
@consistency_options
@network_map_option
@click.option("--delete-source", is_flag=True,
              help="Delete the source VM and its disks once the copy is verified.")
@click.option("--start/--no-start", "start", default=None,
              help="Start the copy (default: start it if the source was running).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@timeout_option
@target_password_option
@json_option
def move_command(uri: str | None, vm: str, target_uri: str, name: str | None, shutdown: bool,
                 snapshot: bool, networks: dict[str, str], delete_source: bool,
                 start: bool | None, yes: bool, op_timeout: float,
                 target_password_env: str | None, json_flag: bool) -> None:
    """Copy a VM to TARGET_URI, a host of any backend (cold: the VM must be stopped, or
    --shutdown), verify the copy, and delete the source only with --delete-source.

    URI is the source host; both connections use the same connection options. The
    plan's warnings are shown and confirmation asked first, unless --yes or --json.
    """
    as_json = json_mode(json_flag)
    with two_hosts(uri, target_uri, target_password_env) as (source, target):
        source_vm = find_vm(source, vm)
        planned = plan_migration(source_vm, to=target, name=name, networks=networks)
        if not (shutdown or snapshot):
            require_movable(source_vm)  # refuse before asking, not after
        if not as_json:
            say(f"{source_vm.name} on {planned.source_uri} -> {planned.spec.name} on {planned.target_uri}")
            print_warnings(planned)
            if delete_source:
                say(styled("the source VM and its disks are deleted once the copy is verified", "red"))
        if not (yes or as_json):
            click.confirm("Move it?", abort=True)
        with progress_bar(f"move {source_vm.name}", wanted(as_json)) as on_progress:
            result = migrate(source_vm, to=target, name=name, shutdown=shutdown,
                             snapshot=snapshot, networks=networks, delete_source=delete_source,
                             start=start, timeout=op_timeout, on_progress=on_progress)
        if as_json:
            print_json(result)
        else:
            print_moved(result, delete_source)


# -- backups -----------------------------------------------------------------------


def backup_archive(uri: str | None, vm: str, path: str, *, shutdown: bool, snapshot: bool,
                   op_timeout: float, as_json: bool) -> None:
    """``anyvirt backup VM PATH``: the VM as a portable archive (the command is in
    ``commands_repo``, beside its repository form)."""
    with settings().connect(uri) as host:
        source = find_vm(host, vm)
        with progress_bar(f"back up {source.name}", wanted(as_json)) as on_progress:
            archive = backup(source, path, shutdown=shutdown, snapshot=snapshot,
                             timeout=op_timeout, on_progress=on_progress)
        size = archive.stat().st_size
        if as_json:
            print_json({"path": str(archive), "archive_bytes": size, "manifest": read_manifest(archive)})
        else:
            say(f"{source.name}: backed up to {archive} ({human_bytes(size)})")


def restore_archive(uri: str | None, path: str, *, name: str | None, networks: dict[str, str],
                    op_timeout: float, as_json: bool) -> None:
    """``anyvirt restore PATH``: a VM from a portable archive."""
    with settings().connect(uri) as host:
        with busy(f"restoring {path}", wanted(as_json)):
            made = host.restore(path, name=name, networks=networks, timeout=op_timeout)
        if as_json:
            print_json(made.summary)
        else:
            say(f"{made.name}: restored from {path} on {host.uri} (", styled_state(made.state), ")")


@click.command("backup-info")
@click.argument("path")
@json_option
def backup_info_command(path: str, json_flag: bool) -> None:
    """Show what a backup archive holds (its manifest), without connecting to any host."""
    manifest = read_manifest(path)
    if json_mode(json_flag):
        print_json(manifest)
        return
    print_manifest(manifest)


@click.command("verify")
@click.argument("path")
@timeout_option
@json_option
def verify_command(path: str, op_timeout: float, json_flag: bool) -> None:
    """Check a backup archive completely without restoring it (no host needed): its
    members, its manifest, every disk's size and sha256, and every image (no backing
    file, external extent or data file). Exits 2 on the first fault."""
    as_json = json_mode(json_flag)
    with busy(f"verifying {path}", wanted(as_json)):
        checked = verify(path, timeout=op_timeout)
    if as_json:
        print_json({"path": path, "ok": True, "format": checked.format,
                    "checksums": checked.checksums,
                    "disks": [{"id": d.id, "size_bytes": d.size_bytes, "sha256": d.sha256}
                              for d in checked.disks]})
        return
    kind = "sha256 of every disk checked" if checked.checksums else \
        "format 1: no checksums to check, structure and images only"
    say(f"{path}: ok ({kind}; {len(checked.disks)} disk(s), "
        f"{human_bytes(checked.disk_bytes)})")


def print_manifest(manifest: dict[str, Any]) -> None:
    """The manifest comes from a file of unknown origin: every value is printed as literal text."""
    vm = manifest.get("vm", {})
    origin = manifest.get("source", {})
    print_table(
        f"backup of {vm.get('name')}", ["field", "value"],
        [("format", manifest.get("format")), ("created", manifest.get("created")),
         ("source", f"{origin.get('backend')} {origin.get('uri')}"),
         ("written by", f"anyvirt {manifest.get('anyvirt_version') or '(unknown)'}"),
         ("snapshots", (manifest.get("snapshots") or {}).get("mode", "flattened")),
         ("cpus", vm.get("cpus")), ("memory", mib(vm.get("memory_mib"))),
         ("firmware", vm.get("firmware")), ("guest OS", vm.get("guest_os")),
         ("description", vm.get("description"))],
    )
    disks = manifest.get("disks", [])
    if disks:
        print_table("disks", ["disk", "size", "stored", "format", "bus", "sha256"],
                    [(d.get("id"), human_bytes(d.get("size_bytes")), human_bytes(d.get("file_bytes")),
                      d.get("format"), d.get("bus"), (d.get("sha256") or "none")[:16])
                     for d in disks])
    nics = vm.get("nics", [])
    if nics:
        print_table("NICs", ["NIC", "network", "model", "MAC"],
                    [(n.get("id"), n.get("network"), n.get("model"), n.get("mac")) for n in nics])


def register(group: click.Group) -> None:
    for command in (plan_command, move_command, backup_info_command, verify_command):
        group.add_command(command)


__all__ = ["register"]
