"""Backups, portable and into a repository: ``backup``, ``restore``, ``backups``, and
``repo verify|prune|import|export``.

``backup VM PATH`` writes a portable archive, ``backup VM --to REPO`` a restore
point into a backup repository; ``restore PATH`` and ``restore REPO POINT --to
URI`` are their way back. REPO is a directory, a ``file://`` URL or
``sftp://user@host[:port]/path`` (``--ssh-key``, ``--known-hosts``: the
server's key must be listed there).

An encrypted repository's passphrase comes from the variable ``--passphrase-env``
names, else ``$ANYVIRT_REPO_PASSPHRASE``, else it is asked on the terminal without
echo; it is held as a ``Secret`` from the moment it is read, so no output, log or
traceback shows it. A repository is shown by its own URL (``repo.url``), which
carries no secret.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import click

from anyvirt.cli.commands_move import (
    backup_archive,
    busy,
    consistency_options,
    network_map_option,
    restore_archive,
    timeout_option,
)
from anyvirt.cli.context import json_mode, json_option, settings, with_uri
from anyvirt.cli.exit_codes import CliError, ExitCode
from anyvirt.cli.output import (
    human_bytes,
    jsonable,
    print_json,
    print_table,
    say,
    styled,
    styled_state,
)
from anyvirt.cli.progress import progress_bar, wanted
from anyvirt.repository import (
    BackupRepository,
    PassphraseNeeded,
    RestorePoint,
    archives,
    retention,
)
from anyvirt.target import Secret
from anyvirt.vm import VM

F = TypeVar("F", bound=Callable[..., Any])

#: where the passphrase is read from when --passphrase-env names no other variable
PASSPHRASE_VARIABLE = "ANYVIRT_REPO_PASSPHRASE"  # noqa: S105 (a variable's name)


# -- opening a repository ----------------------------------------------------------


@attrs.frozen
class Access:
    """How to open a repository: where its passphrase is, and the SSH options."""

    passphrase_env: str | None = None
    ssh_key: str | None = None
    known_hosts: str | None = None

    def passphrase(self) -> Secret | None:
        """From the environment, as a Secret at once; None when no variable holds one."""
        name = self.passphrase_env or PASSPHRASE_VARIABLE
        value = os.environ.get(name)
        if value is None and self.passphrase_env is not None:
            # name the variable, never a value
            raise click.UsageError(f"--passphrase-env {name}: that variable is not set")
        return Secret(value) if value else None


def repo_options(func: F) -> F:
    """``--passphrase-env``, ``--ssh-key``, ``--known-hosts``: given to the command as
    one ``access`` keyword."""
    @functools.wraps(func)
    def wrapper(*args: Any, passphrase_env: str | None, ssh_key: str | None,
                known_hosts: str | None, **kwargs: Any) -> Any:
        return func(*args, access=Access(passphrase_env, ssh_key, known_hosts), **kwargs)

    decorated: Any = wrapper
    for option in (
        click.option("--known-hosts", type=click.Path(dir_okay=False), metavar="FILE",
                     help="SSH known_hosts for an sftp:// repository (default "
                          "~/.ssh/known_hosts); the server's key must be listed."),
        click.option("--ssh-key", type=click.Path(dir_okay=False), metavar="FILE",
                     help="SSH private key for an sftp:// repository."),
        click.option("--passphrase-env", metavar="VAR",
                     help=f"Read the repository's passphrase from environment variable VAR "
                          f"(default ${PASSPHRASE_VARIABLE}; else it is asked on a terminal, "
                          "never echoed)."),
    ):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


def _ask(confirm: bool) -> Secret:
    typed = click.prompt("Repository passphrase", hide_input=True, confirmation_prompt=confirm,
                         err=True)
    held = Secret(str(typed))
    del typed
    return held


def _terminal() -> bool:
    return sys.stdin.isatty()


def open_repository(location: str, access: Access, *, create: bool = False,
                    encrypt: bool = False) -> BackupRepository:
    """Open (or, with ``create``, make) the repository at ``location``; the passphrase is
    asked for only where the repository is encrypted (or ``encrypt`` makes a new one so)."""
    secret = access.passphrase()
    if secret is None and encrypt:
        if not _terminal():
            raise click.UsageError(f"--encrypt needs a passphrase: set ${PASSPHRASE_VARIABLE} "
                                   "or --passphrase-env VAR, or run on a terminal to be asked")
        secret = _ask(confirm=True)
    def opened(passphrase: Secret | None, make: bool) -> BackupRepository:
        return BackupRepository(location, passphrase=passphrase, create=make,
                                key_filename=access.ssh_key, known_hosts=access.known_hosts)

    try:
        return opened(secret, create)
    except PassphraseNeeded as exc:
        if not _terminal():
            raise PassphraseNeeded(f"{exc}: set ${PASSPHRASE_VARIABLE} or --passphrase-env VAR, "
                                   "or run on a terminal to be asked") from None
    return opened(_ask(confirm=False), False)


def point_json(point: RestorePoint) -> dict[str, Any]:
    """A point for scripts: its facts, not its manifest (``repo export`` gives that)."""
    return {"id": point.id, "vm_name": point.vm_name, "vm_id": point.vm_id,
            "created": point.created.isoformat(), "incremental": point.incremental,
            "size_bytes": point.size_bytes, "read_bytes": point.read_bytes,
            "stored_bytes": point.stored_bytes, "source_backend": point.source_backend,
            "disks": [d.get("id") for d in point.manifest.get("disks", [])]}


def print_points(title: str, found: list[RestorePoint], *, listing: bool = True) -> None:
    print_table(title, ["point", "VM", "created", "kind", "size", "read", "stored", "source"],
                [(p.id, p.vm_name, p.created.strftime("%Y-%m-%d %H:%M:%S"),
                  "incremental" if p.incremental else "full", human_bytes(p.size_bytes),
                  human_bytes(p.read_bytes), human_bytes(p.stored_bytes), p.source_backend)
                 for p in found], listing=listing)


def say_point(point: RestorePoint, repo: BackupRepository, verb: str) -> None:
    say(f"{point.vm_name}: {verb} {point.id} in {repo.url} (read {human_bytes(point.read_bytes)}, "
        f"stored {human_bytes(point.stored_bytes)})")


# -- backup and restore ------------------------------------------------------------


@click.command("backup")
@with_uri("VM", "PATH", optional=1)
@click.option("--to", "repo", metavar="REPO",
              help="Back up into the backup repository REPO (a directory, file:// or sftp:// "
                   "URL; made there if nothing is) instead of a portable archive at PATH.")
@click.option("--encrypt", is_flag=True,
              help="With --to: a repository made now is encrypted with the passphrase.")
@consistency_options
@repo_options
@timeout_option
@json_option
def backup_command(uri: str | None, vm: str, path: str | None, repo: str | None, encrypt: bool,
                   shutdown: bool, snapshot: bool, access: Access, op_timeout: float,
                   json_flag: bool) -> None:
    """Back a VM (configuration and disks) up: to the portable archive PATH (which must not
    exist yet; restorable anywhere with `anyvirt restore PATH`), or with --to REPO as a new
    restore point in a backup repository (only data the repository lacks is stored)."""
    if (path is None) == (repo is None):
        raise click.UsageError("give PATH (a portable archive) or --to REPO (a backup "
                               "repository): one of them")
    if encrypt and repo is None:
        raise click.UsageError("--encrypt is for a repository (--to REPO)")
    if path is not None:
        backup_archive(uri, vm, path, shutdown=shutdown, snapshot=snapshot,
                       op_timeout=op_timeout, as_json=json_mode(json_flag))
        return
    assert repo is not None
    as_json = json_mode(json_flag)
    with settings().connect(uri) as host:
        source = host.vms.get(vm)  # first: a mistyped name leaves no new repository behind
        with open_repository(repo, access, create=True, encrypt=encrypt) as repository:
            _backup_into(repository, source, shutdown=shutdown, snapshot=snapshot,
                         op_timeout=op_timeout, as_json=as_json)


def _backup_into(repository: BackupRepository, source: VM, *, shutdown: bool, snapshot: bool,
                 op_timeout: float, as_json: bool) -> None:
    with progress_bar(f"back up {source.name}", wanted(as_json)) as on_progress:
        point = repository.backup(source, shutdown=shutdown, snapshot=snapshot,
                                  timeout=op_timeout, on_progress=on_progress)
    if as_json:
        print_json({"repository": repository.url, "point": point_json(point)})
    else:
        say_point(point, repository, "backed up as")


@click.command("restore")
@with_uri("PATH")
@click.option("--to", "target_uri", metavar="URI",
              help="Restore a restore point: the arguments are then REPO POINT, and URI the "
                   "host to restore onto.")
@click.option("--name", help="Name of the restored VM (default: the name in the backup).")
@network_map_option
@repo_options
@timeout_option
@json_option
def restore_command(uri: str | None, path: str, target_uri: str | None, name: str | None,
                    networks: dict[str, str], access: Access, op_timeout: float,
                    json_flag: bool) -> None:
    """Create a VM on a host (of any backend) from a backup; it is left stopped.

    \b
    anyvirt restore [URI] PATH            from a portable archive (`anyvirt backup VM PATH`)
    anyvirt restore REPO POINT --to URI   from a restore point (`anyvirt backups REPO`)

    A network the host lacks must be mapped (--network-map), as for `anyvirt move`.
    """
    as_json = json_mode(json_flag)
    if target_uri is None:
        restore_archive(uri, path, name=name, networks=networks, op_timeout=op_timeout,
                        as_json=as_json)
        return
    if uri is None:
        raise click.UsageError("with --to URI the arguments are REPO POINT (see `anyvirt "
                               "backups REPO` for the points)")
    with open_repository(uri, access) as repository, \
            settings().connect(target_uri, changes=True) as host:
        point = repository.point(path)
        with busy(f"restoring {point.vm_name} from {point.id}", wanted(as_json)):
            made = repository.restore(point, to=host, name=name, networks=networks,
                                      timeout=op_timeout)
        if as_json:
            print_json({**jsonable(made.summary), "point": point.id})
        else:
            say(f"{made.name}: restored from {point.id} on {host.uri} (",
                styled_state(made.state), ")")


@click.command("backups")
@click.argument("repo")
@click.option("--vm", "vm_name", metavar="NAME", help="Only the points of this VM (name or id).")
@repo_options
@json_option
def backups_command(repo: str, vm_name: str | None, access: Access, json_flag: bool) -> None:
    """List the restore points in the backup repository REPO, oldest first."""
    with open_repository(repo, access) as repository:
        found = repository.points(vm_name)
        if json_mode(json_flag):
            print_json([point_json(p) for p in found])
            return
        print_points(f"restore points in {repository.url}", found)


# -- repo verify | prune | import | export ----------------------------------------------


@click.group("repo")
def repo_group() -> None:
    """Look after a backup repository: verify, prune, and portable archives in and out."""


@repo_group.command("verify")
@click.argument("repo")
@repo_options
@json_option
def verify_command(repo: str, access: Access, json_flag: bool) -> None:
    """Read everything in REPO: every chunk re-hashed against its name, every point's
    manifest and indexes, every chunk an index names present. Exits 1 when anything is
    missing or damaged, naming it."""
    as_json = json_mode(json_flag)
    with open_repository(repo, access) as repository:
        with busy(f"verifying {repository.url}", wanted(as_json)):
            report = repository.verify()
        if as_json:
            print_json({"repository": repository.url, "ok": report.ok, "chunks": report.chunks,
                        "points": report.points, "problems": list(report.problems)})
        elif report.ok:
            say(styled(f"{repository.url}: ok", "green"),
                f" ({report.points} point(s), {report.chunks} chunk(s) checked)")
        else:
            for problem in report.problems:
                say(styled(problem, "red"))
        if not report.ok:
            raise CliError(f"{repository.url}: {len(report.problems)} problem(s) found",
                           ExitCode.FAILURE, "Damaged")


@repo_group.command("prune")
@click.argument("repo")
@click.option("--keep-last", type=click.IntRange(min=0), metavar="N",
              help="Keep the N newest points of each VM.")
@click.option("--keep-daily", type=click.IntRange(min=0), metavar="N",
              help="Keep the newest point of each of the last N days (UTC) with points.")
@click.option("--keep-weekly", type=click.IntRange(min=0), metavar="N",
              help="The same per ISO week.")
@click.option("--keep-monthly", type=click.IntRange(min=0), metavar="N",
              help="The same per calendar month.")
@click.option("--dry-run", is_flag=True, help="Show what would go, remove nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@repo_options
@json_option
def prune_command(repo: str, keep_last: int | None, keep_daily: int | None,
                  keep_weekly: int | None, keep_monthly: int | None, dry_run: bool, yes: bool,
                  access: Access, json_flag: bool) -> None:
    """Forget the restore points no --keep-* rule keeps (each VM judged on its own; a point
    any rule keeps is kept), then remove the data no point needs. At least one rule is
    needed. Asks first, unless --yes or --json."""
    as_json = json_mode(json_flag)
    rules = retention.check_rules(keep_last=keep_last, keep_daily=keep_daily,
                                  keep_weekly=keep_weekly, keep_monthly=keep_monthly)
    with open_repository(repo, access) as repository:
        every = repository.points()
        keep = retention.kept(every, **rules)
        going = [p for p in every if p.id not in keep]
        if dry_run or not as_json:
            if as_json:
                print_json({"repository": repository.url, "dry_run": True,
                            "removed": [point_json(p) for p in going],
                            "kept": sorted(keep)})
                return
            say(f"{repository.url}: {len(going)} of {len(every)} point(s) go, "
                f"{len(every) - len(going)} stay")
            if going:
                print_points("points to forget", going, listing=False)
            if dry_run or not going:
                return
        if not (yes or as_json):
            click.confirm("Forget them and remove the data only they need?", abort=True)
        with busy(f"pruning {repository.url}", wanted(as_json)):
            report = repository.prune(**rules)  # judges again: a point may have landed
        if as_json:
            print_json({"repository": repository.url, "dry_run": False, **attrs.asdict(report)})
            return
        say(f"forgot {len(report.removed)} point(s), removed {report.removed_chunks} chunk(s) "
            f"({human_bytes(report.freed_bytes)})")
        if report.chunks_deferred:
            say(styled("a backup is running: unneeded data goes at the next prune", "yellow"))


@repo_group.command("import")
@click.argument("repo")
@click.argument("archive", type=click.Path(dir_okay=False))
@repo_options
@timeout_option
@json_option
def import_command(repo: str, archive: str, access: Access, op_timeout: float,
                   json_flag: bool) -> None:
    """Make a restore point in REPO from a portable archive (`anyvirt backup VM PATH`),
    checked as a restore checks it: every sha256 and every image."""
    as_json = json_mode(json_flag)
    archives.importable(archive)  # first: a missing or damaged archive makes no repository
    with open_repository(repo, access, create=True) as repository:
        with progress_bar(f"import {archive}", wanted(as_json)) as on_progress:
            point = repository.import_archive(archive, timeout=op_timeout,
                                              on_progress=on_progress)
        if as_json:
            print_json({"repository": repository.url, "point": point_json(point)})
        else:
            say_point(point, repository, "imported as")


@repo_group.command("export")
@click.argument("repo")
@click.argument("point")
@click.argument("path", type=click.Path(dir_okay=False))
@repo_options
@timeout_option
@json_option
def export_command(repo: str, point: str, path: str, access: Access, op_timeout: float,
                   json_flag: bool) -> None:
    """Write restore POINT of REPO as a portable archive at PATH (which must not exist
    yet), every chunk checked and every image compared with the point's bytes."""
    as_json = json_mode(json_flag)
    with open_repository(repo, access) as repository:
        with progress_bar(f"export {point}", wanted(as_json)) as on_progress:
            out = repository.export_archive(point, path, timeout=op_timeout,
                                            on_progress=on_progress)
        size = out.stat().st_size
        if as_json:
            print_json({"repository": repository.url, "point": point, "path": str(out),
                        "archive_bytes": size})
        else:
            say(f"{point}: exported to {out} ({human_bytes(size)})")


def register(group: click.Group) -> None:
    for command in (backup_command, restore_command, backups_command, repo_group):
        group.add_command(command)


__all__ = ["register"]
