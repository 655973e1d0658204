"""Snapshots: take (with or without the running guest's memory), the tree, restore, delete.

The tree, names, descriptions, times and the current snapshot come from the
VM's ``.vbox`` file only: ``snapshot list --machinereadable`` prints names and
descriptions raw even in 7.2, so a description holding
``SnapshotUUID-1="..."`` lines would read as snapshots of its own there.

VirtualBox always saves a running guest's memory with a snapshot. A snapshot
asked for without memory is marked in the VM's extra data, and restoring it
discards that saved state, so the VM comes back stopped as on every backend.
VirtualBox restores only a VM that is not running: a running one is powered
off first, which is what a revert means anyway.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from anyvirt.errors import AnyvirtError, ConnectionFailed, NotFound
from anyvirt.model import PowerState, SnapshotInfo
from anyvirt.tasks import Job
from anyvirt_virtualbox import machines, settings
from anyvirt_virtualbox.runner import VBoxManage

_TAKEN = re.compile(r"Snapshot taken\. UUID: (?P<uuid>[0-9a-fA-F-]{36})")
_RUNNING = ("running", "paused", "stuck", "gurumeditation", "teleporting", "livesnapshotting")


def _state(vbox: VBoxManage, vm_id: str) -> str:
    return machines.show(vbox, vm_id).get("VMState")


def _from_settings(facts: settings.MachineFacts) -> list[SnapshotInfo]:
    out = []
    for snap in facts.snapshots:
        memory = snap.has_state and f"{settings.DISK_ONLY_PREFIX}{snap.uuid}" not in facts.extra
        out.append(
            SnapshotInfo(
                id=snap.uuid,
                name=snap.name,
                description=snap.description,
                created=snap.created,
                parent_id=snap.parent,
                memory=memory,
                vm_state=PowerState.RUNNING if memory else PowerState.STOPPED,
                current=snap.uuid == facts.current_snapshot,
            )
        )
    return out


def _facts(vbox: VBoxManage, home: Path | None, vm_id: str) -> settings.MachineFacts:
    facts = machines.settings_of(vbox, home, vm_id)
    if facts is None:
        raise ConnectionFailed(
            f"the settings file of VM {vm_id} cannot be read here: its snapshots are read from it "
            "only, as `snapshot list` prints their names and descriptions raw"
        )
    return facts


def list_snapshots(vbox: VBoxManage, home: Path | None, vm_id: str) -> list[SnapshotInfo]:
    """From the VM's ``.vbox`` file (VBoxSVC writes it before a snapshot command returns)."""
    return _from_settings(_facts(vbox, home, vm_id))


def create_snapshot(
    vbox: VBoxManage, home: Path | None, vm_id: str, name: str, description: str, memory: bool, job: Job
) -> SnapshotInfo:
    running = _state(vbox, vm_id) in _RUNNING
    args = ["snapshot", vm_id, "take", name]
    if description:
        args += ["--description", description]
    if running:
        args.append("--live")  # the guest keeps running while its state is saved
    out = vbox.run(args, f"taking snapshot {name!r}", timeout=job.remaining(900.0))
    m = _TAKEN.search(out.stdout) or _TAKEN.search(out.stderr)
    snap_id = m["uuid"].lower() if m else None
    if running and not memory:
        if snap_id is None:
            snap_id = _current(vbox, home, vm_id)
        vbox.run(
            ["setextradata", vm_id, f"{settings.DISK_ONLY_PREFIX}{snap_id}", "1"],
            "marking the snapshot disk-only",
        )
    for snap in list_snapshots(vbox, home, vm_id):
        if snap.id == snap_id or (snap_id is None and snap.current):
            return snap
    raise NotFound(f"snapshot {name!r} was taken but is not listed")


def _current(vbox: VBoxManage, home: Path | None, vm_id: str) -> str:
    for snap in list_snapshots(vbox, home, vm_id):
        if snap.current:
            return snap.id
    raise NotFound(f"VM {vm_id} has no current snapshot")


def revert_snapshot(vbox: VBoxManage, home: Path | None, vm_id: str, snapshot_id: str, job: Job) -> None:
    facts = _facts(vbox, home, vm_id)
    snaps = {s.id: s for s in _from_settings(facts)}
    if snapshot_id not in snaps:
        raise NotFound(f"VM {vm_id} has no snapshot {snapshot_id}")
    state = _state(vbox, vm_id)
    if state in _RUNNING:
        vbox.run(["controlvm", vm_id, "poweroff"], "powering off before the revert")
    elif state in ("saved", "aborted-saved"):
        vbox.run(["discardstate", vm_id], "discarding the saved state before the revert")
    vbox.run(
        ["snapshot", vm_id, "restore", snapshot_id],
        f"reverting to {snapshot_id}",
        timeout=job.remaining(900.0),
    )
    has_state = any(s.uuid == snapshot_id and s.has_state for s in facts.snapshots)
    if snaps[snapshot_id].memory:
        vbox.run(
            ["startvm", vm_id, "--type", "headless"],
            "resuming the snapshot's guest",
            timeout=job.remaining(300.0),
        )
    elif has_state:
        vbox.run(["discardstate", vm_id], "leaving a disk-only snapshot stopped")


def delete_snapshot(
    vbox: VBoxManage, home: Path | None, vm_id: str, snapshot_id: str, children: bool, job: Job
) -> None:
    facts = _facts(vbox, home, vm_id)
    marks = set(facts.extra)
    snaps = _from_settings(facts)
    if snapshot_id not in {s.id for s in snaps}:
        raise NotFound(f"VM {vm_id} has no snapshot {snapshot_id}")
    doomed = [snapshot_id]
    if children:
        doomed = _subtree(snaps, snapshot_id)
    for sid in reversed(doomed):  # leaves first: VirtualBox deletes one with one child at most
        job.check()
        vbox.run(["snapshot", vm_id, "delete", sid], f"deleting snapshot {sid}", timeout=job.remaining(900.0))
        if f"{settings.DISK_ONLY_PREFIX}{sid}" in marks:
            with contextlib.suppress(AnyvirtError):
                vbox.run(["setextradata", vm_id, f"{settings.DISK_ONLY_PREFIX}{sid}"], "dropping a mark")


def _subtree(snaps: list[SnapshotInfo], root: str) -> list[str]:
    order = [root]
    for sid in order:
        order += [s.id for s in snaps if s.parent_id == sid]
    return order
