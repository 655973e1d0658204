"""Disks out of VirtualBox (backups, cross-platform moves).

A disk is written with ``clonemedium``, which flattens the chain of
differencing images (snapshots, linked clones) into one VDI file holding
exactly what the guest sees now; the copy is then forgotten by VirtualBox's
media registry (``closemedium``), the file stays.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from anyvirt.errors import AnyvirtError
from anyvirt.model import ExportedDisk
from anyvirt.tasks import Job
from anyvirt_virtualbox import machines
from anyvirt_virtualbox.runner import VBoxManage

_UNSAFE = re.compile(r"[^\w.-]+")


def export_disks(vbox: VBoxManage, vm_id: str, dest_dir: Path, job: Job) -> list[ExportedDisk]:
    info = machines.show(vbox, vm_id)
    disks = machines.disks(info, machines.media(vbox))
    out = []
    for n, disk in enumerate(disks):
        job.check()
        job.progress(100.0 * n / max(len(disks), 1), f"exporting disk {disk.id}")
        base = _UNSAFE.sub("_", f"{info.get('name')}-{disk.id}").strip("_") or f"disk{n}"
        dest = dest_dir / f"{base}.vdi"
        vbox.run(
            ["clonemedium", "disk", disk.path or "", str(dest), "--format", "VDI"],
            f"exporting disk {disk.id}",
            timeout=job.remaining(3600.0),
        )
        with contextlib.suppress(AnyvirtError):
            vbox.run(["closemedium", "disk", str(dest)], "forgetting the exported copy")
        out.append(
            ExportedDisk(
                id=disk.id,
                path=str(dest),
                format="vdi",
                size_bytes=disk.size_bytes or dest.stat().st_size,
                bus=disk.bus,
            )
        )
    return out
