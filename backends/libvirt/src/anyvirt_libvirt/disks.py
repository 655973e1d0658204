"""A domain's disks as libvirt describes them, whatever tool defined the domain.

virsh can give a domain disks of many kinds: a file, a block device, a pool
volume (``<disk type='volume'>`` naming pool and volume, no path), a network
export (NBD, iSCSI), CD-ROMs and floppies, LUNs. anyvirt owns only what is a
writable disk in a storage pool; everything else is read, never deleted, and
an operation that cannot treat a kind faithfully refuses it before anything
changes. Volume disks are resolved to the volume's path through the pool, so
the rest of the backend deals in paths.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
from attrs import frozen

from anyvirt.errors import InvalidSpec


@frozen
class DomainDisk:
    """One ``<disk>`` of a domain."""

    dev: str  # target dev: vda, sdb, hdc
    kind: str  # the disk's type attribute: file | block | volume | network | dir
    device: str  # disk | cdrom | floppy | lun
    path: str | None  # a file or block path; a volume's resolved path; None for network
    pool: str | None = None  # for kind="volume"
    volume: str | None = None
    readonly: bool = False
    shareable: bool = False
    format: str | None = None
    bus: str | None = None
    backing: str | None = None  # the first <backingStore> libvirt recorded, if any

    @property
    def writable_disk(self) -> bool:
        """A disk the VM writes to (not a CD-ROM, floppy, read-only or shared disk)."""
        return self.device == "disk" and not self.readonly and not self.shareable

    @property
    def copyable(self) -> bool:
        """Content anyvirt can copy through the storage API (a file or a pool volume)."""
        return self.kind in ("file", "volume") and self.path is not None

    def describe(self) -> str:
        if self.kind == "volume":
            return f"{self.dev} (volume {self.volume!r} of pool {self.pool!r})"
        if self.kind == "network":
            return f"{self.dev} (network disk)"
        return f"{self.dev} ({self.kind} {self.path})"


def parse_disks(xml: str, conn: libvirt.virConnect | None = None) -> list[DomainDisk]:
    """Every ``<disk>`` of a domain XML, volume disks resolved through ``conn``."""
    root = ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon
    out = []
    for disk in root.findall("devices/disk"):
        kind = disk.get("type", "file")
        source = disk.find("source")
        target = disk.find("target")
        driver = disk.find("driver")
        pool = volume = path = None
        if source is not None:
            if kind == "volume":
                pool, volume = source.get("pool"), source.get("volume")
                path = _volume_path(conn, pool, volume) if conn is not None else None
            elif kind in ("file", "block", "dir"):
                path = source.get("file") or source.get("dev") or source.get("dir")
        out.append(
            DomainDisk(
                dev=target.get("dev", "") if target is not None else "",
                kind=kind,
                device=disk.get("device", "disk"),
                path=path,
                pool=pool,
                volume=volume,
                readonly=disk.find("readonly") is not None,
                shareable=disk.find("shareable") is not None,
                format=driver.get("type") if driver is not None else None,
                bus=target.get("bus") if target is not None else None,
                backing=_backing(disk),
            )
        )
    return out


def _backing(disk: ET.Element) -> str | None:
    source = disk.find("backingStore/source")
    if source is None:
        return None
    return source.get("file") or source.get("dev")


def _volume_path(conn: libvirt.virConnect, pool: str | None, volume: str | None) -> str | None:
    if not pool or not volume:
        return None
    try:
        return str(conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).path())
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_NO_STORAGE_VOL):
            return None  # a dangling reference: nothing to copy or delete
        raise


def writable_paths(disks: list[DomainDisk]) -> list[str]:
    """Paths of the disks a VM writes to, in device order."""
    return [d.path for d in disks if d.writable_disk and d.path]


def refuse_uncopyable(disks: list[DomainDisk], vm_name: str, what: str) -> None:
    """InvalidSpec before anything is made when a disk cannot be copied faithfully (a
    LUN is a host's SCSI device passed through: two VMs writing it would corrupt it)."""
    for disk in disks:
        if disk.device == "lun" and not disk.shareable:
            raise InvalidSpec(
                f"cannot {what} {vm_name!r}: disk {disk.dev} is a LUN passed through from the "
                "host, which anyvirt can neither copy nor share (detach it first)"
            )
        if disk.writable_disk and not disk.copyable:
            raise InvalidSpec(
                f"cannot {what} {vm_name!r}: disk {disk.describe()} is not a file or pool volume, "
                "so anyvirt cannot copy it (detach it first, or copy it yourself)"
            )


def referenced_paths(xml: str, conn: libvirt.virConnect | None = None) -> set[str]:
    """Every file a domain's definition points at: disks of any device, their recorded
    backing chain, NVRAM, and serial/console logs (what deleting another VM must spare)."""
    root = ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon
    paths = {d.path for d in parse_disks(xml, conn) if d.path}
    for source in root.iterfind("devices/disk//backingStore/source"):
        found = source.get("file") or source.get("dev")
        if found:
            paths.add(found)
    nvram = root.find("os/nvram")
    if nvram is not None:
        if (nvram.text or "").strip():
            paths.add((nvram.text or "").strip())
        if nvram.get("template"):
            # a clone's NVRAM is copied from its original's on first start: keep it
            paths.add(nvram.get("template", ""))
    for log in root.iterfind("devices/*/log"):
        if log.get("file"):
            paths.add(log.get("file", ""))
    return paths
