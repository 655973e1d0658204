"""Snapshots: PVE names them (the name is the id), links each to its parent, and marks
where the VM is now with a pseudo-entry ``current`` whose parent is the current snapshot.

A snapshot with ``memory=True`` saves the running VM's state (``vmstate=1``); reverting
to it starts the VM again, as PVE itself does for snapshots with RAM.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from anyvirt.errors import NotFound
from anyvirt.model import PowerState, SnapshotInfo
from anyvirt.tasks import Job
from anyvirt_proxmox import config as cfg
from anyvirt_proxmox.inventory import Inventory
from anyvirt_proxmox.tasks import run_task

CURRENT = "current"


def _rows(inv: Inventory, vm_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = inv.vm_get(vm_id, ("snapshot",), f"listing snapshots of VM {vm_id}")
    return rows


def list_snapshots(inv: Inventory, vm_id: str) -> list[SnapshotInfo]:
    rows = _rows(inv, vm_id)
    here = next((r for r in rows if r.get("name") == CURRENT), {})
    current = here.get("parent")
    out = []
    for row in rows:
        if row.get("name") == CURRENT:
            continue
        stamp = row.get("snaptime")
        memory = bool(int(row.get("vmstate") or 0))
        out.append(SnapshotInfo(
            id=str(row["name"]), name=str(row["name"]), description=str(row.get("description") or ""),
            created=datetime.fromtimestamp(int(stamp), UTC) if stamp else None,
            parent_id=row.get("parent") or None, memory=memory,
            vm_state=PowerState.RUNNING if memory else None, current=row.get("name") == current,
        ))
    out.sort(key=lambda s: (s.created or datetime.min.replace(tzinfo=UTC), s.name))
    return out


def _find(inv: Inventory, vm_id: str, snapshot_id: str) -> SnapshotInfo:
    for snap in list_snapshots(inv, vm_id):
        if snap.id == snapshot_id:
            return snap
    raise NotFound(f"VM {vm_id} has no snapshot {snapshot_id!r}")


def create_snapshot(inv: Inventory, vm_id: str, name: str, description: str, memory: bool,
                    job: Job) -> SnapshotInfo:
    cfg.check_snapshot_name(name)
    cfg.check_description(description)
    node = inv.node_of(vm_id)
    run_task(inv.session, "POST", ("nodes", node, "qemu", cfg.vmid(vm_id), "snapshot"), job,
             f"snapshot {name!r} of VM {vm_id}", snapname=name, description=description or None,
             vmstate=1 if memory else None)
    return _find(inv, vm_id, name)


def revert_snapshot(inv: Inventory, vm_id: str, snapshot_id: str, job: Job) -> None:
    snap = _find(inv, vm_id, snapshot_id)
    node = inv.node_of(vm_id)
    run_task(inv.session, "POST", ("nodes", node, "qemu", cfg.vmid(vm_id), "snapshot", snap.id, "rollback"),
             job, f"reverting VM {vm_id} to {snap.id!r}", start=1 if snap.memory else None)


def delete_snapshot(inv: Inventory, vm_id: str, snapshot_id: str, children: bool, job: Job) -> None:
    snaps = list_snapshots(inv, vm_id)
    if snapshot_id not in {s.id for s in snaps}:
        raise NotFound(f"VM {vm_id} has no snapshot {snapshot_id!r}")
    doomed = _subtree_leaves_first(snaps, snapshot_id) if children else [snapshot_id]
    node = inv.node_of(vm_id)
    for sid in doomed:  # PVE re-parents the children of each one it deletes
        run_task(inv.session, "DELETE", ("nodes", node, "qemu", cfg.vmid(vm_id), "snapshot", sid), job,
                 f"deleting snapshot {sid!r} of VM {vm_id}")


def _subtree_leaves_first(snaps: list[SnapshotInfo], root: str) -> list[str]:
    kids: dict[str, list[str]] = {}
    for s in snaps:
        if s.parent_id:
            kids.setdefault(s.parent_id, []).append(s.id)
    order: list[str] = []

    def walk(sid: str) -> None:
        for kid in kids.get(sid, []):
            walk(kid)
        order.append(sid)

    walk(root)
    return order
