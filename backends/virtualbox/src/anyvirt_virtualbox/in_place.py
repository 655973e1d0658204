"""A stopped VM's disks read where they are, with no ``clonemedium`` copy first.

A move (or a backup) then reads each image straight from the VM's folder. That is
safe only for a disk that is one whole image qemu-img reads as VirtualBox does:

- a base medium of type ``normal`` (no parent): no snapshot, no linked clone, not
  shareable (a shareable disk may be written by a VM the move does not hold), and
  not encrypted (qemu would read the ciphertext as the guest's bytes);
- in a format taken from VirtualBox's own record (``list hdds``), never probed:
  VDI or VMDK. A differencing VDI is refused by qemu-img ("unsupported VDI image
  (non-NULL link UUID)", measured with qemu-img 7.2), so a chain keeps
  ``clonemedium``, which flattens it. VHD is left out: qemu's ``vpc`` driver sizes
  a VirtualBox VHD by its CHS geometry, smaller than the disk (4177920 bytes for
  a 4 MiB VHD, measured), and would cut the guest's last sectors off;
- the same file here as VirtualBox's: VBoxManage may run elsewhere (a chroot, as in
  the testbed, where only some directories are shared), so a path is taken only
  when the image there carries the UUID VirtualBox gives that medium (it identifies
  its media by that UUID too);
- one the kit's untrusted-image inspection accepts (no extent or link outside it).

Any disk that fails one of these sends the whole VM on: a move streams VDI chains
(:mod:`anyvirt_virtualbox.streamed`), anything else is exported with ``clonemedium``.
"""

from __future__ import annotations

import os
import re
import struct
import uuid

from anyvirt.errors import AnyvirtError
from anyvirt.kit import qemu_img
from anyvirt.model import MIB, ExportedDisk
from anyvirt.tasks import Job
from anyvirt_virtualbox import machines, vminfo
from anyvirt_virtualbox.listings import Medium
from anyvirt_virtualbox.runner import VBoxManage

#: VirtualBox's storage format -> qemu-img's name for it (only those read in place)
QEMU_FORMAT = {"VDI": "vdi", "VMDK": "vmdk"}
#: VM states whose disks nothing writes (a saved VM keeps clonemedium: its disks belong
#: with the saved memory)
STOPPED = frozenset({"poweroff", "aborted"})

_VDI_SIGNATURE = 0xBEDA107F
_VDI_UUID_AT = 0x188  # uuidCreate in the VDI 1.1 header, as qemu's vdi driver reads it
_VMDK_UUID = re.compile(rb'^ddb\.uuid\.image\s*=\s*"([0-9a-fA-F-]{36})"\s*$', re.MULTILINE)
_VMDK_MAX_DESCRIPTOR = 1 * MIB


def disks_in_place(vbox: VBoxManage, vm_id: str, job: Job) -> list[ExportedDisk] | None:
    """The stopped VM's hard disks as the files they are, or None when any one of them
    cannot be read in place (see the module's rules)."""
    info = machines.show(vbox, vm_id)
    if info.get("VMState") not in STOPPED:
        return None
    by_uuid = machines.media(vbox)
    out = []
    for att in vminfo.attachments(info):
        if att.dvd:
            continue
        job.check()
        medium = by_uuid.get(att.image_uuid or "")
        if medium is None:
            return None
        found = readable_here(medium, job)
        if found is None:
            return None
        fmt, size = found
        out.append(ExportedDisk(id=att.id, path=medium.location, format=fmt, size_bytes=size,
                                bus=att.bus))
    return out


def readable_here(medium: Medium, job: Job) -> tuple[str, int] | None:
    """``(qemu format, virtual size)`` of a medium this process can read in place, else None."""
    fmt = QEMU_FORMAT.get(medium.format)
    standalone = (medium.parent is None and medium.kind == "normal (base)"
                  and medium.state == "created" and medium.encryption == "disabled")
    path = medium.location
    if fmt is None or not standalone or not os.path.isfile(path) or not os.access(path, os.R_OK):
        return None
    try:
        if image_uuid(path, fmt) != medium.uuid:
            return None  # another file at that path (VBoxManage sees another file system)
        image = qemu_img.inspect_untrusted(path, (fmt,), format=fmt, job=job)
    except (OSError, AnyvirtError):
        return None
    if medium.capacity_mib is None or abs(image.virtual_size - medium.capacity_mib * MIB) >= MIB:
        return None  # qemu-img would not read the disk VirtualBox has
    return fmt, image.virtual_size


def image_uuid(path: str, fmt: str) -> str | None:
    """The medium UUID written in the image's own header (VDI) or descriptor (VMDK), lower
    case; None when the file is not such an image."""
    with open(path, "rb") as handle:
        head = handle.read(_VDI_UUID_AT + 16)
        if fmt == "vdi":
            if len(head) < _VDI_UUID_AT + 16 or struct.unpack_from("<I", head, 0x40)[0] != _VDI_SIGNATURE:
                return None
            return str(uuid.UUID(bytes_le=head[_VDI_UUID_AT:_VDI_UUID_AT + 16]))
        if len(head) < 44 or head[:4] != b"KDMV":  # a monolithic sparse VMDK's header
            return None
        offset, size = struct.unpack_from("<QQ", head, 28)  # descriptor, in sectors
        if not offset or not size or size * 512 > _VMDK_MAX_DESCRIPTOR:
            return None
        handle.seek(offset * 512)
        found = _VMDK_UUID.search(handle.read(size * 512))
    return found.group(1).decode().lower() if found else None
