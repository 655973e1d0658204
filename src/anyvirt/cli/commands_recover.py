"""``anyvirt recover``: bring a dead standalone host's VMs up on another host."""

from __future__ import annotations

from typing import Any

import click

import anyvirt
from anyvirt.cli.context import json_mode, json_option, settings
from anyvirt.cli.output import echo, print_json, print_table, say, styled
from anyvirt.recovery import RecoveredFrom, Recovery, RecoveryResult


@click.command("recover")
@click.option("--failed", "failed", metavar="URI", required=True,
              help="The host that died (it must not answer any more).")
@click.option("--to", "to", metavar="URI", required=True, help="The host to bring its VMs up on.")
@click.option("--from", "repository", metavar="REPO", default=None,
              help="Backup repository (file:///... or sftp://...) for the VMs whose disks the new "
                   "host cannot read: their newest restore points come back.")
@click.option("--fenced", is_flag=True,
              help="The failed host is powered off (fenced): skip the image-lock check.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def recover_command(failed: str, to: str, repository: str | None, fenced: bool, yes: bool,
                    json_flag: bool) -> None:
    """Bring up on --to the VMs of the standalone host --failed, which is down.

    VMs whose disks sit on storage --to reads come back on those disks (nothing lost);
    the others from their newest restore point in --from (what was written since is
    lost; the age is shown). Refused while --failed answers (use `anyvirt node evacuate`
    or `anyvirt vm migrate`) and while a disk is still locked by another process,
    unless --fenced.
    """
    as_json = json_mode(json_flag)
    if not (yes or as_json):
        echo(f"Recovering starts the VMs of {failed} on {to}. If {failed} still runs them, two "
             "copies would write the same disks: make sure it is down.")
        click.confirm("Recover?", abort=True)
    repo = anyvirt.BackupRepository(repository) if repository else None
    try:
        with settings().connect(to, changes=True) as host:
            progress = None if as_json else (lambda line: echo(line, err=True))
            recovery = anyvirt.recover(failed=failed, to=host, repository=repo, fenced=fenced,
                                       progress=progress)
            if as_json:
                print_json(as_dict(recovery))
            else:
                print_recovery(recovery)
    finally:
        if repo is not None:
            repo.close()
    if recovery.failed:
        raise SystemExit(1)


def as_dict(recovery: Recovery) -> dict[str, Any]:
    return {"elapsed_s": round(recovery.elapsed, 3), "vms": [_row(r) for r in recovery]}


def _row(result: RecoveryResult) -> dict[str, Any]:
    return {
        "name": result.vm_name, "old_id": result.old_id, "outcome": result.outcome.value,
        "new_id": result.vm.id if result.vm is not None else None,
        "point": result.point.id if result.point is not None else None,
        "data_age_s": result.data_age.total_seconds() if result.data_age is not None else None,
        "reason": result.reason, "elapsed_s": round(result.elapsed, 3),
    }


def print_recovery(recovery: Recovery) -> None:
    rows = []
    for result in recovery:
        if result.outcome is RecoveredFrom.RESTORE_POINT and result.data_age is not None:
            point = result.point.id if result.point else ""
            what = f"restore point {point} (data {_age(result.data_age.total_seconds())} old)"
        elif result.outcome is RecoveredFrom.SHARED_STORAGE:
            what = "shared storage (nothing lost)"
        else:
            what = result.outcome.value
        status = styled(what, "red") if not result.recovered else what
        rows.append([result.vm_name, status, result.reason, f"{result.elapsed:.1f}"])
    print_table("recovered", ["VM", "from", "note", "seconds"], rows)
    done = len(recovery) - len(recovery.failed)
    say(f"{done} of {len(recovery)} VM(s) recovered in {recovery.elapsed:.1f} s")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def register(group: click.Group) -> None:
    group.add_command(recover_command)


__all__ = ["register"]
