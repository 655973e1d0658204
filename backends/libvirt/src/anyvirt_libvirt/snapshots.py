"""Internal snapshots (disk, plus memory for a running VM), their tree, revert, delete.

A snapshot's id is its name (libvirt names snapshots per domain). Internal
snapshots are what libvirt can both take and revert; external (disk-only)
snapshots cannot be reverted by libvirt 9.0, so anyvirt does not offer them.

A running VM's internal snapshot always includes its memory (QEMU's
``savevm``; libvirt refuses a memory-less internal snapshot of a running VM
and refuses to redefine one as offline). ``memory=False`` must still mean
what it means on every backend: the snapshot reports no memory and its
revert leaves the VM stopped with the snapshot's disks.

So the mark lives *inside the snapshot*: just before taking it, the domain's
metadata (a namespace of anyvirt's) names it, and libvirt copies the domain,
metadata included, into the snapshot's own XML. Whether a snapshot has
memory is then re-read from that XML every time. Nothing another tool does
to the domain afterwards (a ``virsh snapshot-revert``, which replaces the
domain's metadata by an older copy, a redefinition) changes it; only a
deliberate ``snapshot-create --redefine`` could.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import libvirt

from anyvirt.model import PowerState, SnapshotInfo

#: metadata namespace listing the snapshots taken with ``memory=False`` of a running VM
DISK_ONLY_NS = "https://anyvirt.dev/xmlns/libvirt/snapshots/1"
_DISK_ONLY_KEY = "anyvirt-snapshots"

_VM_STATE = {
    "running": PowerState.RUNNING,
    "blocked": PowerState.RUNNING,
    "paused": PowerState.PAUSED,
    "shutoff": PowerState.STOPPED,
    "shutdown": PowerState.STOPPED,
    "crashed": PowerState.CRASHED,
    "pmsuspended": PowerState.PAUSED,
    # an external disk-only snapshot of a running VM: it ran, only its disks were kept
    "disk-snapshot": PowerState.RUNNING,
}


def snapshot_xml(name: str, description: str) -> str:
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = description
    return ET.tostring(root, encoding="unicode")


def parse_snapshot(xml: str, current_name: str | None) -> SnapshotInfo:
    root = ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon
    name = root.findtext("name") or ""
    raw_state = root.findtext("state") or ""
    created = root.findtext("creationTime")
    return SnapshotInfo(
        id=name,
        name=name,
        description=root.findtext("description") or "",
        created=datetime.fromtimestamp(int(created), UTC) if created else None,
        parent_id=root.findtext("parent/name"),
        memory=has_memory(root),
        vm_state=_VM_STATE.get(raw_state),
        current=name == current_name,
        cpus=_snapshot_cpus(root),
        memory_mib=_snapshot_memory_mib(root),
    )


def _snapshot_cpus(root: ET.Element) -> int | None:
    """The vCPUs the VM had when the snapshot was taken (a revert brings them back)."""
    vcpu = root.find("domain/vcpu")
    if vcpu is None:
        return None
    return int(vcpu.get("current") or vcpu.text or 0) or None


def _snapshot_memory_mib(root: ET.Element) -> int | None:
    kib = root.findtext("domain/currentMemory") or root.findtext("domain/memory")
    return int(kib) // 1024 if kib else None


def has_memory(root: ET.Element) -> bool:
    """True when reverting to this snapshot brings the guest back running (libvirt
    kept its memory, and anyvirt was not asked to leave it out)."""
    name = root.findtext("name") or ""
    raw_state = root.findtext("state") or ""
    memory = root.find("memory")
    if raw_state not in ("running", "paused", "blocked"):
        return False  # shut off, or 'disk-snapshot' (external, disks only)
    if memory is not None and memory.get("snapshot") == "no":
        return False
    # libvirt puts the children of a metadata element into its namespace too
    holder = f"domain/metadata/{{{DISK_ONLY_NS}}}disk-only"
    marks = [*root.iterfind(f"{holder}/{{{DISK_ONLY_NS}}}snapshot"), *root.iterfind(f"{holder}/snapshot")]
    return not any(mark.get("name") == name for mark in marks)


def current_name(dom: libvirt.virDomain) -> str | None:
    if not dom.hasCurrentSnapshot(0):
        return None
    return str(dom.snapshotCurrent(0).getName())


def list_snapshots(dom: libvirt.virDomain) -> list[SnapshotInfo]:
    current = current_name(dom)
    return [parse_snapshot(s.getXMLDesc(0), current) for s in dom.listAllSnapshots(0)]


def _mark(dom: libvirt.virDomain, name: str | None) -> None:
    """Name ``name`` in the domain's metadata as a snapshot without memory (None: clear)."""
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if dom.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    if name is None:
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, None, None, DISK_ONLY_NS, flags)
        return
    root = ET.Element("disk-only")
    ET.SubElement(root, "snapshot", {"name": name})  # attribute escaped by the library
    xml = ET.tostring(root, encoding="unicode")
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, _DISK_ONLY_KEY, DISK_ONLY_NS, flags)


def create(dom: libvirt.virDomain, name: str, description: str, memory: bool = True) -> SnapshotInfo:
    # the mark must be in the domain when libvirt copies it into the snapshot
    marked = bool(dom.isActive()) and not memory
    _mark(dom, name if marked else None)
    try:
        snap = dom.snapshotCreateXML(snapshot_xml(name, description), 0)
    finally:
        if marked:
            with contextlib.suppress(libvirt.libvirtError):
                _mark(dom, None)  # the snapshot holds it now; the domain need not
    return parse_snapshot(snap.getXMLDesc(0), name)


def revert(dom: libvirt.virDomain, name: str) -> None:
    snap = dom.snapshotLookupByName(name, 0)
    root = ET.fromstring(snap.getXMLDesc(0))  # noqa: S314 - XML from the libvirt daemon
    disk_only = root.findtext("state") in ("running", "paused", "blocked") and not has_memory(root)
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED if disk_only else 0
    try:
        dom.revertToSnapshot(snap, flags)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_SNAPSHOT_REVERT_RISKY:
            raise
        # libvirt wants an explicit go-ahead where it must restart QEMU to revert
        dom.revertToSnapshot(snap, flags | libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE)
    if disk_only and dom.isActive():
        dom.destroy()  # the disks are the snapshot's; the guest never ran on them


def delete(dom: libvirt.virDomain, name: str, children: bool) -> None:
    snap = dom.snapshotLookupByName(name, 0)
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN if children else 0
    snap.delete(flags)
