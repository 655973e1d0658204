"""Changed-block tracking for a stopped VM's qcow2 disks: persistent dirty bitmaps.

A mark is a persistent bitmap that ``qemu-img bitmap --add`` puts into the
disk's qcow2 file (enabled: from then on QEMU, qemu-io and every other
writer through the qcow2 driver set its bits for what they write, and QEMU
keeps it across runs of the VM). Its dirty extents are read back through a
read-only ``qemu-nbd -B`` export on a private unix socket, as the
``qemu:dirty-bitmap:NAME`` meta context (:mod:`anyvirt_libvirt.nbd`).

Every doubt is a full read, never a wrong backup: the answer is None when the
disk is not a local qcow2 file this process may write, the bitmap is gone
(removed, a replaced disk, a point whose mark was dropped), QEMU flagged it
inconsistent (``in-use``: QEMU died holding it) or disabled, or the file's
size changed. QEMU refuses to revert an internal snapshot while an enabled
bitmap exists, so :func:`drop_all` removes anyvirt's marks before a revert,
which also makes the next backup a full read, as it must be.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt

from anyvirt.errors import AnyvirtError
from anyvirt.kit import qemu_img
from anyvirt.tasks import Job
from anyvirt_libvirt import nbd
from anyvirt_libvirt.disks import DomainDisk, parse_disks
from anyvirt_libvirt.site import Site

log = logging.getLogger("anyvirt")
PREFIX = "anyvirt-"
# a bitmap this module added, or one a backup job's checkpoint started (same name in the file)
_MARK = re.compile(r"^(?:bitmap|checkpoint):(anyvirt-[0-9a-f]{16})$")
NBD_START_TIMEOUT = 10.0
QEMU_IMG_TIMEOUT = 120.0


def supported(site: Site) -> bool:
    """Marks need the disk files on this machine: a local daemon or the embedded one."""
    return site.embed_root is not None or site.is_local_socket


def change_mark(site: Site, vm_id: str, disk_id: str, job: Job) -> str | None:
    """A new bitmap in the disk's qcow2 file, or None where it cannot have one."""
    disk = _tracked_disk(site, vm_id, disk_id)
    if disk is None or disk.path is None:
        return None
    name = f"{PREFIX}{secrets.token_hex(8)}"
    try:
        _qemu_img(["bitmap", "--add", "-f", "qcow2", "--", disk.path, name], job)
    except AnyvirtError as exc:
        log.info("no change mark on %s of VM %s: %s", disk_id, vm_id, exc)
        return None
    return f"bitmap:{name}"


def changed_extents(site: Site, vm_id: str, disk_id: str, since: str,
                    job: Job) -> list[tuple[int, int]] | None:
    """What was written to the disk since the mark ``since``; None: unknown (full read)."""
    found = _MARK.match(since)
    disk = _tracked_disk(site, vm_id, disk_id)
    if found is None or disk is None or disk.path is None:
        return None
    name = found.group(1)
    try:
        state = _bitmaps(disk.path, job).get(name)
        if state is None or "in-use" in state or "auto" not in state:
            log.info("change mark %s of %s is %s: a full read", name, disk_id,
                     "gone" if state is None else "no longer trustworthy")
            return None
        return _dirty_over_nbd(disk.path, name, job)
    except (AnyvirtError, OSError) as exc:
        log.info("the changes of %s since %s are unknown (%s): a full read", disk_id, name, exc)
        return None


def drop_mark(site: Site, vm_id: str, disk_id: str, mark: str, job: Job) -> None:
    """Remove the bitmap ``mark`` names, if it is still there (best effort); a
    checkpoint through libvirt first (a running VM's bitmaps go with it)."""
    found = _MARK.match(mark)
    if found is not None and mark.startswith("checkpoint:"):
        with site.domain(vm_id, "drop a checkpoint") as dom, \
                contextlib.suppress(libvirt.libvirtError):
            checkpoint = dom.checkpointLookupByName(found.group(1), 0)
            # libvirt 9.0 deletes a stopped VM's checkpoint only as metadata: its bitmap
            # goes below, with qemu-img, like any mark's
            checkpoint.delete(0 if dom.isActive()
                              else libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
    disk = _tracked_disk(site, vm_id, disk_id)
    if found is None or disk is None or disk.path is None:
        return
    with contextlib.suppress(AnyvirtError, OSError):
        if found.group(1) in _bitmaps(disk.path, job):
            _qemu_img(["bitmap", "--remove", "-f", "qcow2", "--", disk.path, found.group(1)], job)


def drop_all(dom: libvirt.virDomain, job: Job | None = None) -> None:
    """Remove every anyvirt mark from a stopped domain's qcow2 disks (before a snapshot
    revert, which QEMU refuses while a bitmap is enabled)."""
    if dom.isActive():
        return
    forget_checkpoints(dom)
    for disk in parse_disks(dom.XMLDesc(0), dom.connect()):
        if not is_local_qcow2(disk) or disk.path is None:
            continue
        with contextlib.suppress(AnyvirtError, OSError):
            for name in _bitmaps(disk.path, job):
                if name.startswith(PREFIX):
                    _qemu_img(["bitmap", "--remove", "-f", "qcow2", "--", disk.path, name], job)


def drop_checkpoints_for_move(dom: libvirt.virDomain) -> None:
    """Before a migration: anyvirt's checkpoints stay behind (libvirt would refuse to
    undefine the source with them, and their record does not travel). A running VM's are
    deleted with their bitmaps; a stopped VM's records only (its bitmaps travel in the
    files). The next running backup, finding no checkpoint, reads in full."""
    if not dom.isActive():
        forget_checkpoints(dom)
        return
    for checkpoint in dom.listAllCheckpoints(0):
        if checkpoint.getName().startswith(PREFIX):
            with contextlib.suppress(libvirt.libvirtError):
                checkpoint.delete(0)


def forget_checkpoints(dom: libvirt.virDomain) -> None:
    """Delete the libvirt record (only) of anyvirt's checkpoints of a stopped domain.
    libvirt 9.0 refuses block operations on a stopped domain with checkpoints (an
    internal snapshot: "cannot perform block operations while checkpoint exists"); the
    bitmaps stay in the files, so a stopped backup still builds on them by name, and
    the next running backup, finding no checkpoint, reads in full."""
    if dom.isActive():
        return
    for checkpoint in dom.listAllCheckpoints(0):
        if checkpoint.getName().startswith(PREFIX):
            with contextlib.suppress(libvirt.libvirtError):
                checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)


# ---------------------------------------------------------------- helpers


def _tracked_disk(site: Site, vm_id: str, disk_id: str) -> DomainDisk | None:
    """The stopped VM's disk ``disk_id`` if it is a local qcow2 file this process writes."""
    if not supported(site):
        return None
    with site.domain(vm_id, "read the disks for changed blocks") as dom:
        if dom.isActive():
            return None  # a running VM's disk is QEMU's: its bitmaps are too
        disks = parse_disks(dom.XMLDesc(0), dom.connect())
    for disk in disks:
        if disk.dev == disk_id and disk.writable_disk and is_local_qcow2(disk):
            return disk
    return None


def is_local_qcow2(disk: DomainDisk) -> bool:
    return (disk.kind in ("file", "volume") and disk.format == "qcow2" and disk.path is not None
            and os.path.isfile(disk.path) and os.access(disk.path, os.R_OK | os.W_OK))


def _bitmaps(path: str, job: Job | None) -> dict[str, tuple[str, ...]]:
    """The qcow2 file's persistent bitmaps: name -> flags (``auto``, ``in-use``)."""
    _code, out = qemu_img.run(["info", "--output=json", "-f", "qcow2", "--", path],
                              what=f"reading the bitmaps of {path}", timeout=QEMU_IMG_TIMEOUT,
                              job=job)
    data = json.loads(out)
    found = ((data.get("format-specific") or {}).get("data") or {}).get("bitmaps") or []
    return {str(b.get("name")): tuple(str(f) for f in b.get("flags", ())) for b in found}


def _qemu_img(args: list[str], job: Job | None) -> None:
    qemu_img.run(args, what=f"qemu-img {args[0]} {args[1]}", timeout=QEMU_IMG_TIMEOUT, job=job)


def _dirty_over_nbd(path: str, bitmap: str, job: Job) -> list[tuple[int, int]]:
    context = f"qemu:dirty-bitmap:{bitmap}"
    with _nbd_export(path, bitmap, job) as sock, nbd.Client(str(sock), contexts=(context,)) as client:
        return client.dirty(context)


@contextlib.contextmanager
def _nbd_export(path: str, bitmap: str, job: Job) -> Iterator[Path]:
    """A read-only ``qemu-nbd`` of ``path`` exporting ``bitmap``, on a socket only this
    process can reach, gone when the block ends."""
    with tempfile.TemporaryDirectory(prefix="anyvirt-nbd-") as tmp:
        sock = Path(tmp) / "nbd.sock"
        proc = subprocess.Popen(  # an argument list, the file after --: no shell
            ["qemu-nbd", "--read-only", "--format=qcow2", "--shared=1", f"--bitmap={bitmap}",
             f"--socket={sock}", "--", path],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + NBD_START_TIMEOUT
            while not sock.exists():
                job.check()
                if proc.poll() is not None:
                    assert proc.stderr is not None
                    raise nbd.NBDError(f"qemu-nbd stopped: {proc.stderr.read()[:300]!r}")
                if time.monotonic() > deadline:
                    raise nbd.NBDError("qemu-nbd did not open its socket in time")
                time.sleep(0.02)
            yield sock
        finally:
            proc.kill()
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


__all__ = ["change_mark", "changed_extents", "drop_all", "drop_checkpoints_for_move", "drop_mark",
           "forget_checkpoints",
           "is_local_qcow2",
           "supported"]
