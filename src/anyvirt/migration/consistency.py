"""How a copy of a VM's disks is made consistent: stopped, shut down first, or frozen by a
snapshot while it runs on. Backups (portable archives and repository points) share it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from anyvirt.errors import InvalidSpec
from anyvirt.model import ExportedDisk, PowerState
from anyvirt.tasks import Job

if TYPE_CHECKING:
    from anyvirt.operations import HeldVM
    from anyvirt.vm import VM

#: what to do about a running VM the export row refuses, in the backup's own options
RUNNING_HINT = ("stop it first, or pass shutdown=True (graceful stop) or snapshot=True "
                "(crash-consistent copy)")
SNAPSHOT_PREFIX = "anyvirt-backup-"


def prepare(vm: VM, *, shutdown: bool, snapshot: bool, timeout: float | None) -> bool:
    """Make ``vm`` ready to be copied; True when its disks are to be read at a snapshot
    (it runs, and ``snapshot``). With ``shutdown`` a running VM is stopped gracefully
    first; with neither, the export row refuses a running VM with :data:`RUNNING_HINT`."""
    if shutdown and snapshot:
        raise InvalidSpec("shutdown=True and snapshot=True exclude each other: choose one")
    running = vm.refresh().state is PowerState.RUNNING
    if running and shutdown:
        vm.stop(timeout=min(timeout or 300.0, 300.0))
        return False
    return running and snapshot


def held_disks(held: HeldVM, dest: Path, job: Job, *, at_snapshot: bool,
               what: str) -> tuple[list[ExportedDisk], bool]:
    """The held VM's disks as files and whether they are read in place; at a snapshot
    (taken, exported and removed under the hold) when ``at_snapshot``."""
    if at_snapshot:
        name = f"{SNAPSHOT_PREFIX}{uuid.uuid4().hex[:8]}"
        return held.disks_at_snapshot(name, f"point-in-time copy for {what}", dest, job), False
    return held.disks(dest, job)


__all__ = ["RUNNING_HINT", "held_disks", "prepare"]
