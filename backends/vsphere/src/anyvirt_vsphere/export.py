"""Disks out of vSphere, as raw files (backups and cross-platform moves).

A flat or thin VMDK on a datastore is a small text descriptor ``x.vmdk`` and
its extent ``x-flat.vmdk``, which holds the disk's bytes as they are: a raw
image. Exporting downloads that extent through the datastore's HTTPS
``/folder`` interface, streamed (sparse, byte-counted, progress per disk),
and gives it the disk's virtual size.
Delta disks (snapshots, linked clones) have no flat extent: those are
refused with a clear error rather than exported incomplete.
"""

from __future__ import annotations

import re
from pathlib import Path

from anyvirt.errors import InvalidState, NotFound
from anyvirt.model import ExportedDisk
from anyvirt.tasks import Job
from anyvirt_vsphere import datastore_files
from anyvirt_vsphere.inventory import Inventory, split_datastore_path
from anyvirt_vsphere.vms import vm_info


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "disk"


def export_disks(
    driver: object, inventory: Inventory, vm_id: str, dest_dir: Path, job: Job
) -> list[ExportedDisk]:
    info = vm_info(inventory, vm_id)
    out: list[ExportedDisk] = []
    share = 100.0 / max(len(info.disks), 1)
    for index, disk in enumerate(info.disks):
        job.progress(share * index, f"exporting {disk.id}")
        job.check()
        datastore, rel = split_datastore_path(disk.path or "")
        if datastore is None or not rel.endswith(".vmdk"):
            raise InvalidState(f"disk {disk.id} of VM {info.name!r} has no datastore file")
        if disk.backing:
            raise InvalidState(
                f"disk {disk.id} of VM {info.name!r} is a delta disk (snapshot or linked clone): "
                "delete its snapshots or make a full clone before exporting"
            )
        extent = rel[: -len(".vmdk")] + "-flat.vmdk"
        target = dest_dir / f"{_safe(info.name)}-{_safe(disk.id)}.raw"
        try:
            datastore_files.download(driver, datastore, extent, target, job=job,
                                     span=(share * index, share * (index + 1)))
        except NotFound as exc:
            raise InvalidState(
                f"disk {disk.id} of VM {info.name!r} has no flat extent ({extent}): only flat and "
                "thin VMDKs can be exported"
            ) from exc
        size = disk.size_bytes or target.stat().st_size
        with target.open("r+b") as handle:
            if handle.seek(0, 2) < size:
                handle.truncate(size)  # sparse: the unwritten tail reads as zeros
        out.append(ExportedDisk(id=disk.id, path=str(target), format="raw", size_bytes=size, bus=disk.bus))
    return out
