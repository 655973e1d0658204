"""Snapshot trees, read through the PropertyCollector.

The tree comes from ``snapshot.rootSnapshotList`` and ``snapshot.currentSnapshot``
in one RetrievePropertiesEx (reading ``vm.snapshot`` attribute by attribute
panics vcsim 0.24.2 when the VM has none). A snapshot's id is its managed
object id, unique on the server and valid as long as the snapshot exists.
A snapshot includes memory when the VM was on when it was taken and memory
was asked for: vSphere then records the snapshot's state as poweredOn.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from anyvirt.errors import NotFound
from anyvirt.model import PowerState, SnapshotInfo
from anyvirt.tasks import Job
from anyvirt_vsphere.inventory import Inventory, power_state
from anyvirt_vsphere.sdk import vim
from anyvirt_vsphere.tasks import run_task

SNAPSHOT_PATHS = ("snapshot.rootSnapshotList", "snapshot.currentSnapshot")


def list_snapshots(inventory: Inventory, vm_id: str) -> list[SnapshotInfo]:
    props = inventory.vm_props(vm_id, SNAPSHOT_PATHS)
    current = props.get("snapshot.currentSnapshot")
    current_id = str(current._moId) if current is not None else None
    out: list[SnapshotInfo] = []
    _walk(props.get("snapshot.rootSnapshotList") or (), None, current_id, out)
    return out


def _walk(
    trees: Iterable[Any], parent_id: str | None, current_id: str | None, out: list[SnapshotInfo]
) -> None:
    for tree in trees:
        snap_id = str(tree.snapshot._moId)
        state, _raw = power_state(tree.state)
        out.append(
            SnapshotInfo(
                id=snap_id,
                name=tree.name,
                description=tree.description or "",
                created=tree.createTime,
                parent_id=parent_id,
                memory=state in (PowerState.RUNNING, PowerState.SUSPENDED),
                vm_state=state,
                current=snap_id == current_id,
            )
        )
        _walk(tree.childSnapshotList or (), snap_id, current_id, out)


def create_snapshot(
    inventory: Inventory,
    vm_id: str,
    name: str,
    description: str,
    memory: bool,
    job: Job,
) -> SnapshotInfo:
    ref = inventory.vm_ref(vm_id)
    result = run_task(
        inventory.collector,
        # quiesce=False: anyvirt has no quiesced snapshots (a memory snapshot is its
        # consistent one), so no backend's create_snapshot takes more than the SPI's
        lambda: ref.CreateSnapshot_Task(name, description, memory, False),
        job,
        f"snapshot {name!r} of VM {vm_id}",
    )
    snaps = list_snapshots(inventory, vm_id)
    if result is not None:
        for snap in snaps:
            if snap.id == str(result._moId):
                return snap
    for snap in reversed(snaps):  # fallback: the newest of that name
        if snap.name == name:
            return snap
    raise NotFound(f"snapshot {name!r} of VM {vm_id} vanished right after it was taken")


def snapshot_ref(inventory: Inventory, vm_id: str, snapshot_id: str) -> Any:
    if not any(s.id == snapshot_id for s in list_snapshots(inventory, vm_id)):
        raise NotFound(f"VM {vm_id} has no snapshot {snapshot_id}")
    return inventory.session.ref(vim.vm.Snapshot, snapshot_id)


def revert_snapshot(inventory: Inventory, vm_id: str, snapshot_id: str, job: Job) -> None:
    ref = snapshot_ref(inventory, vm_id, snapshot_id)
    run_task(
        inventory.collector,
        lambda: ref.RevertToSnapshot_Task(None, False),
        job,
        f"reverting VM {vm_id} to snapshot {snapshot_id}",
    )


def delete_snapshot(inventory: Inventory, vm_id: str, snapshot_id: str, children: bool, job: Job) -> None:
    ref = snapshot_ref(inventory, vm_id, snapshot_id)
    run_task(
        inventory.collector,
        lambda: ref.RemoveSnapshot_Task(children, None),
        job,
        f"deleting snapshot {snapshot_id} of VM {vm_id}",
    )
