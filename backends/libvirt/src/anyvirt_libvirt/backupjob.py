"""A running VM's disks at one instant, through libvirt's backup job (pull mode).

``virDomainBackupBegin`` with a checkpoint: QEMU freezes a point-in-time view of
every disk (writes after it go on, the old blocks are kept in a scratch image)
and serves it over NBD on a unix socket in a private directory, while the
checkpoint starts a new persistent bitmap in each qcow2 file. Where the point
to build on has a checkpoint libvirt still knows, the backup is incremental
from it and the export carries ``qemu:dirty-bitmap:backup-<disk>``: the blocks
written since. Anything else (a stopped VM's bitmap mark, a deleted
checkpoint, a job libvirt refuses to base on it) is a full read of the
allocated blocks. The job is ended (``abortJob``, which is how a pull backup
ends) whatever happens; a checkpoint no point will name is deleted again.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path

import libvirt

from anyvirt.errors import InvalidState
from anyvirt.repository.sources import LiveDisk
from anyvirt.tasks import Job
from anyvirt_libvirt import nbd
from anyvirt_libvirt.changes import PREFIX, is_local_qcow2
from anyvirt_libvirt.disks import DomainDisk, parse_disks
from anyvirt_libvirt.site import Site

log = logging.getLogger("anyvirt")
_CHECKPOINT = re.compile(r"^checkpoint:(anyvirt-[0-9a-f]{16})$")
JOB_END_TIMEOUT = 30.0


@contextlib.contextmanager
def live_disks(site: Site, vm_id: str, since: Mapping[str, str], job: Job) -> Iterator[list[LiveDisk]]:
    with site.domain(vm_id, "back up a running VM") as dom:
        disks = [d for d in parse_disks(dom.XMLDesc(0), dom.connect()) if d.writable_disk]
        for disk in disks:
            if not is_local_qcow2(disk):
                raise InvalidState(f"disk {disk.describe()} is not a qcow2 file on this machine: "
                                   "a running VM's backup needs qcow2 (stop the VM to back it up)")
        known = {c.getName() for c in dom.listAllCheckpoints(0)}
    base = _common_checkpoint(disks, since, known)
    name = f"{PREFIX}{secrets.token_hex(8)}"
    tmp = Path(tempfile.mkdtemp(prefix="anyvirt-backup-"))
    sock = tmp / "nbd.sock"
    clients: list[nbd.Client] = []
    begun = False
    try:
        # from the parent's checkpoint; else in full with a new one; else (a disk that cannot
        # keep a bitmap: qcow2 v2, "compat=0.10") in full with none, and no mark to build on
        tries: list[tuple[str | None, str | None]] = (
            ([(base, name)] if base else []) + [(None, name), (None, None)])
        marked: str | None = None
        for from_checkpoint, new_checkpoint in tries:
            try:
                dom.backupBegin(_backup_xml(disks, sock, tmp, from_checkpoint),
                                _checkpoint_xml(disks, new_checkpoint) if new_checkpoint else None, 0)
            except libvirt.libvirtError as exc:
                if new_checkpoint is None:
                    raise
                log.info("libvirt refused a backup job (from checkpoint %s, new checkpoint %s): %s",
                         from_checkpoint, new_checkpoint, exc.get_error_message())
                continue
            base, marked = from_checkpoint, new_checkpoint
            break
        begun = True
        out = []
        for disk in disks:
            job.check()
            dirty = f"qemu:dirty-bitmap:backup-{disk.dev}"
            client = nbd.Client(str(sock), export=disk.dev,
                                contexts=("base:allocation", dirty) if base else ("base:allocation",))
            clients.append(client)
            out.append(LiveDisk(id=disk.dev, size=client.size, bus=disk.bus,
                                extents=tuple(client.data()), read=client.read,
                                mark=f"checkpoint:{marked}" if marked else None,
                                changed=tuple(client.dirty(dirty)) if base else None))
        yield out
    except BaseException:
        if begun:
            _end(dom, clients)
            clients = []
            if marked:
                with contextlib.suppress(libvirt.libvirtError):
                    dom.checkpointLookupByName(marked, 0).delete(0)  # no point names it
        raise
    finally:
        if begun:
            _end(dom, clients)
        shutil.rmtree(tmp, ignore_errors=True)


def drop_checkpoint(dom: libvirt.virDomain, name: str) -> None:
    """Delete anyvirt's checkpoint ``name`` (its bitmaps go with it), best effort."""
    with contextlib.suppress(libvirt.libvirtError):
        dom.checkpointLookupByName(name, 0).delete(0)


def checkpoint_name(mark: str) -> str | None:
    found = _CHECKPOINT.match(mark)
    return found.group(1) if found else None


def _common_checkpoint(disks: list[DomainDisk], since: Mapping[str, str],
                       known: set[str]) -> str | None:
    """The checkpoint every disk's earlier mark names, if libvirt still has it."""
    names = {checkpoint_name(since.get(d.dev, "")) for d in disks}
    if len(names) != 1:
        return None
    (name,) = names
    return name if name in known else None


def _end(dom: libvirt.virDomain, clients: list[nbd.Client]) -> None:
    for client in clients:
        client.close()
    clients.clear()
    with contextlib.suppress(libvirt.libvirtError):
        dom.abortJob()  # how a pull-mode backup ends
    deadline = time.monotonic() + JOB_END_TIMEOUT
    while time.monotonic() < deadline:  # the next job must not find this one still there
        with contextlib.suppress(libvirt.libvirtError):
            if dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE:
                return
        time.sleep(0.05)


def _checkpoint_xml(disks: list[DomainDisk], name: str) -> str:
    root = ET.Element("domaincheckpoint")
    ET.SubElement(root, "name").text = name
    listed = ET.SubElement(root, "disks")
    for disk in disks:
        ET.SubElement(listed, "disk", name=disk.dev, checkpoint="bitmap")
    return ET.tostring(root, encoding="unicode")


def _backup_xml(disks: list[DomainDisk], sock: Path, tmp: Path, base: str | None) -> str:
    root = ET.Element("domainbackup", mode="pull")
    if base is not None:
        ET.SubElement(root, "incremental").text = base
    ET.SubElement(root, "server", transport="unix", socket=str(sock))
    listed = ET.SubElement(root, "disks")
    for n, disk in enumerate(disks):
        entry = ET.SubElement(listed, "disk", name=disk.dev, backup="yes", type="file")
        ET.SubElement(entry, "scratch", file=str(tmp / f"scratch{n}.qcow2"))
    return ET.tostring(root, encoding="unicode")


__all__ = ["checkpoint_name", "drop_checkpoint", "live_disks"]
