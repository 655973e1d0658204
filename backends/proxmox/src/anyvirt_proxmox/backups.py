"""Proxmox VE's own backups: ``vzdump`` into a PVE storage, listed, restored as a new VM.

These are PVE's archives (``local:backup/vzdump-qemu-100-2026_12_06-23_30_00.vma.zst``),
made and read by PVE alone, so they need no SSH and work on running VMs too
(``mode="snapshot"``, PVE's default). They restore on Proxmox only; the
portable backup (``vm.backup(path)``) and the repository (``BackupRepository``)
are the ones that restore anywhere, and need the disks' bytes (``ssh=``).

* a backup is ``POST /nodes/{node}/vzdump`` with ``vmid``, ``storage``, ``mode``,
  ``compress``, ``notes-template``, ``protected``; its volume is the one that was
  not in the storage's backup content before the task and is there after (a
  task that ends well without one is TaskFailed: nothing is assumed);
* the listing is ``GET /nodes/{node}/storage/{storage}/content?content=backup``
  over every online node's storages that take backups, a shared storage once;
* a restore is ``POST /nodes/{node}/qemu`` with ``archive=``, always into a new
  vmid (never ``force``: an existing VM is never overwritten), ``unique=1`` by
  default (new MACs and SMBIOS UUID, so the copy can run beside the original),
  and ``name=`` (PVE 7.2+ takes non-disk options with an archive);
* deleting a backup is ``DELETE .../content/{volume}``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from attrs import frozen

from anyvirt.errors import AlreadyExists, AnyvirtError, InvalidSpec, NotFound, TaskFailed
from anyvirt.model import VMSummary
from anyvirt.tasks import Job
from anyvirt_proxmox import config as cfg
from anyvirt_proxmox.inventory import Inventory
from anyvirt_proxmox.tasks import cleanup_job, run_task, settle, wait_task
from anyvirt_proxmox.vms import ID_ATTEMPTS, delete_vm, is_id_collision, next_vmid

MODES = ("snapshot", "suspend", "stop")
COMPRESSIONS = ("zstd", "lzo", "gzip", "none")
MAX_NOTES = 1024
STORAGE_ID = re.compile(r"^[a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]$")
#: a vzdump archive's volume name: whose it is, and when PVE made it (its own clock)
ARCHIVE = re.compile(r"^(?P<storage>[^:]+):backup/vzdump-qemu-(?P<vmid>\d+)-[\w.-]+$")


@frozen
class NativeBackup:
    """One vzdump archive of a VM, as PVE lists it."""

    volid: str  # "local:backup/vzdump-qemu-100-2026_12_06-23_30_00.vma.zst"
    vm_id: str
    node: str  # a node whose storage holds it (a shared storage: any of them)
    storage: str
    size_bytes: int
    created: datetime  # UTC
    format: str  # "vma.zst", "vma.lzo", "vma.gz", "vma"
    notes: str = ""
    protected: bool = False


def check_backup_options(storage: str | None, mode: str, compress: str, notes: str | None) -> None:
    if storage is not None and not STORAGE_ID.match(storage):
        raise InvalidSpec(f"storage {storage!r} is not a Proxmox VE storage id")
    if mode not in MODES:
        raise InvalidSpec(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    if compress not in COMPRESSIONS:
        raise InvalidSpec(f"compress must be one of {', '.join(COMPRESSIONS)} (got {compress!r})")
    if notes is not None and (len(notes) > MAX_NOTES or "\0" in notes):
        raise InvalidSpec(f"notes are at most {MAX_NOTES} characters, without NUL")


def _row_to_backup(row: dict[str, Any], node: str, storage: str) -> NativeBackup | None:
    match = ARCHIVE.match(str(row.get("volid", "")))
    if match is None or row.get("content") not in (None, "backup"):
        return None  # a container's archive, or something else kept in the dump directory
    return NativeBackup(
        volid=str(row["volid"]), vm_id=str(row.get("vmid") or match["vmid"]), node=node,
        storage=storage, size_bytes=int(row.get("size") or 0),
        created=datetime.fromtimestamp(int(row.get("ctime") or 0), UTC),
        format=str(row.get("format") or ""), notes=str(row.get("notes") or ""),
        protected=bool(int(row.get("protected") or 0)))


def backup_storages(inv: Inventory, node: str) -> list[dict[str, Any]]:
    """The node's active storages that take backups, roomiest first."""
    rows = inv.node_storages(node, content="backup")
    return sorted(rows, key=lambda s: -int(s.get("avail") or 0))


def list_backups(inv: Inventory, vm_id: str | None = None, storage: str | None = None,
                 nodes: list[str] | None = None) -> list[NativeBackup]:
    """Every vzdump archive of QEMU VMs (of ``vm_id`` only, when given), oldest first."""
    seen: dict[str, NativeBackup] = {}
    for node in nodes if nodes is not None else inv.online_nodes():
        for store in backup_storages(inv, node):
            name = str(store["storage"])
            if storage is not None and name != storage:
                continue
            if store.get("shared") and any(b.storage == name for b in seen.values()):
                continue  # the same shared storage, seen from another node
            params: dict[str, Any] = {"content": "backup"}
            if vm_id is not None:
                params["vmid"] = cfg.vmid(vm_id)
            rows = inv.session.get(("nodes", node, "storage", name, "content"),
                                   f"listing the backups on {name!r} of {node}", **params)
            for row in rows:
                found = _row_to_backup(row, node, name)
                if found is not None and found.volid not in seen:
                    seen[found.volid] = found
    return sorted(seen.values(), key=lambda b: (b.created, b.volid))


def backup_vm(inv: Inventory, vm_id: str, storage: str | None, mode: str, compress: str,
              notes: str | None, protected: bool, job: Job) -> NativeBackup:
    node = inv.node_of(vm_id, refresh=True)
    stores = {str(s["storage"]): s for s in backup_storages(inv, node)}
    name = storage or next(iter(stores), None)
    if name is None or name not in stores:
        known = ", ".join(sorted(stores)) or "none"
        raise InvalidSpec(f"no storage {name!r} takes backups on node {node!r} (there: {known})")
    before = {b.volid for b in list_backups(inv, vm_id, name, [node])}
    params: dict[str, Any] = {"vmid": str(cfg.vmid(vm_id)), "storage": name, "mode": mode,
                              "compress": "0" if compress == "none" else compress}
    if notes:
        params["notes-template"] = notes
    if protected:
        params["protected"] = 1
    what = f"backing up VM {vm_id} to {name!r} (vzdump)"
    run_task(inv.session, "POST", ("nodes", node, "vzdump"), job, what, **params)
    made = [b for b in list_backups(inv, vm_id, name, [node]) if b.volid not in before]
    if not made:
        raise TaskFailed(f"{what}: the task ended well but no new backup of VM {vm_id} is in "
                         f"{name!r}", task_id="")
    return made[-1]


def find_backup(inv: Inventory, volid: str) -> NativeBackup:
    match = ARCHIVE.match(volid)
    if match is None:
        raise InvalidSpec(f"{volid!r} is not a vzdump archive of a QEMU VM "
                          "(storage:backup/vzdump-qemu-<vmid>-...)")
    for found in list_backups(inv, match["vmid"], match["storage"]):
        if found.volid == volid:
            return found
    raise NotFound(f"no backup {volid!r} on any online node")


def restore_vm(inv: Inventory, backup: NativeBackup, name: str | None, node: str | None,
               storage: str | None, unique: bool, job: Job) -> VMSummary:
    """A new VM from ``backup``, on ``node`` (the backup's by default)."""
    if name is not None:
        cfg.check_vm_name(name)
        if any(vm.name == name for vm in inv.list_vms()):
            raise AlreadyExists(f"a VM named {name!r} exists already")
    if storage is not None and not STORAGE_ID.match(storage):
        raise InvalidSpec(f"storage {storage!r} is not a Proxmox VE storage id")
    where = node or backup.node
    params: dict[str, Any] = {"archive": backup.volid}
    if storage is not None:
        params["storage"] = storage
    if unique:
        params["unique"] = 1
    if name is not None:
        params["name"] = name
    what = f"restoring {backup.volid!r}"
    for attempt in range(1, ID_ATTEMPTS + 1):
        new_id = next_vmid(inv)
        started: list[str] = []
        try:
            run_task(inv.session, "POST", ("nodes", where, "qemu"), job, what, started,
                     vmid=new_id, **params)
        except AnyvirtError as exc:
            if is_id_collision(exc):
                # another client took the id first: the VM there is theirs, never removed
                if attempt < ID_ATTEMPTS:
                    continue
                raise
            if not isinstance(exc, TaskFailed):
                _undo(inv, where, new_id, started, what)  # given up: the restore may run on
            raise  # a failed restore: PVE's worker has removed what it made
        except BaseException:
            _undo(inv, where, new_id, started, what)
            raise
        inv.remember(str(new_id), where)
        return inv.vm_summary(str(new_id))
    raise AlreadyExists(f"{what}: every vmid PVE offered was taken meanwhile ({ID_ATTEMPTS} tries)")


def _undo(inv: Inventory, node: str, new_id: int, started: list[str], what: str) -> None:
    """A restore that was started and then given up (cancelled, out of time): once its task
    has ended, the VM it made goes. It is ours: PVE accepted the restore with that vmid, so
    the id was free and PVE reserved it for this restore."""
    if not started:
        return
    settle(inv.session, started, what)
    inv.remember(str(new_id), node)
    try:
        inv.vm_summary(str(new_id))
        delete_vm(inv, str(new_id), cleanup_job(what))
    except NotFound:
        inv.forget(str(new_id))


def delete_backup(inv: Inventory, backup: NativeBackup, job: Job) -> None:
    what = f"deleting backup {backup.volid!r}"
    job.check()
    upid = inv.session.delete(("nodes", backup.node, "storage", backup.storage, "content", backup.volid),
                              what)
    if isinstance(upid, str) and upid.startswith("UPID:"):  # PVE answers null when it was quick
        wait_task(inv.session, upid, job, what)


__all__ = ["COMPRESSIONS", "MODES", "NativeBackup", "backup_vm", "check_backup_options", "delete_backup",
           "find_backup", "list_backups", "restore_vm"]
