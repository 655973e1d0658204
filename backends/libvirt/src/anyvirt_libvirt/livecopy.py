"""A crash-consistent, point-in-time copy of a running VM's disks (clones of running VMs).

QEMU's block copy (``virDomainBlockCopy``, a mirror job) copies the whole
chain of a disk, flattened, into a volume anyvirt made, then keeps it in sync
with the guest's writes. Once every copy is in sync ("ready"), the VM is
paused for the moment it takes to end the jobs without pivoting, so every
copy holds the disks as they were at that one instant: what a power cut
would have left. The VM continues on its own disks all along.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET

import libvirt

from anyvirt.tasks import Job
from anyvirt_libvirt.disks import DomainDisk
from anyvirt_libvirt.site import Site

_FLAGS = libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT | libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB


def _destination(path: str) -> str:
    disk = ET.Element("disk", {"type": "file"})
    ET.SubElement(disk, "source", {"file": path})
    ET.SubElement(disk, "driver", {"type": "qcow2"})
    return ET.tostring(disk, encoding="unicode")


def _ready(dom: libvirt.virDomain, devs: set[str]) -> bool:
    """True once every mirror job is in sync (the live XML says ``ready='yes'``)."""
    root = ET.fromstring(dom.XMLDesc(0))  # noqa: S314 - XML from the libvirt daemon
    ready = set()
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        mirror = disk.find("mirror")
        if target is not None and mirror is not None and mirror.get("ready") == "yes":
            ready.add(target.get("dev", ""))
    return devs <= ready


def copy_running(
    site: Site, vm_id: str, pairs: list[tuple[DomainDisk, str]], job: Job
) -> None:
    """Copy each running disk into the volume beside it (made already, same capacity)."""
    with site.domain(vm_id, "copy the running VM's disks") as dom:
        started: list[str] = []
        try:
            for disk, path in pairs:
                job.check()
                dom.blockCopy(disk.dev, _destination(path), {}, _FLAGS)
                started.append(disk.dev)
            job.wait_for(lambda: _ready(dom, set(started)), "the disk copies to catch up",
                         interval=0.1, max_interval=0.5)
            pause = len(started) > 1 and dom.state(0)[0] == libvirt.VIR_DOMAIN_RUNNING
            if pause:
                dom.suspend()
            try:
                while started:
                    dom.blockJobAbort(started[0], 0)  # no pivot: the copy keeps this instant
                    started.pop(0)
            finally:
                if pause:
                    dom.resume()
        except BaseException:
            for dev in started:
                with contextlib.suppress(libvirt.libvirtError):
                    dom.blockJobAbort(dev, 0)
            raise
