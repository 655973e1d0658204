"""Internal snapshots (disk, plus memory for a running VM), their tree, revert, delete.

A snapshot's id is its name (libvirt names snapshots per domain). Internal
snapshots are what libvirt can both take and revert; external (disk-only)
snapshots cannot be reverted by libvirt 9.0, so anyvirt does not offer them.

A running VM's internal snapshot always includes its memory (QEMU's
``savevm``; libvirt refuses a memory-less internal snapshot of a running VM
and refuses to redefine one as offline). ``memory=False`` must still mean
what it means on every backend: the snapshot reports no memory and its
revert leaves the VM stopped with the snapshot's disks. So the names of
such snapshots are kept in the domain's own metadata (under a namespace of
anyvirt's), and their revert restores the disks without letting the guest
run (reverted paused, then powered off).
"""

from __future__ import annotations

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
    "disk-snapshot": PowerState.STOPPED,
}


def snapshot_xml(name: str, description: str) -> str:
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = description
    return ET.tostring(root, encoding="unicode")


def parse_snapshot(
    xml: str, current_name: str | None, disk_only: frozenset[str] = frozenset()
) -> SnapshotInfo:
    root = ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon
    name = root.findtext("name") or ""
    raw_state = root.findtext("state") or ""
    created = root.findtext("creationTime")
    memory = root.find("memory")
    with_memory = (
        raw_state in ("running", "paused", "blocked")
        and (memory is None or memory.get("snapshot") != "no")
        and name not in disk_only
    )
    return SnapshotInfo(
        id=name,
        name=name,
        description=root.findtext("description") or "",
        created=datetime.fromtimestamp(int(created), UTC) if created else None,
        parent_id=root.findtext("parent/name"),
        memory=with_memory,
        vm_state=_VM_STATE.get(raw_state),
        current=name == current_name,
    )


def current_name(dom: libvirt.virDomain) -> str | None:
    if not dom.hasCurrentSnapshot(0):
        return None
    return str(dom.snapshotCurrent(0).getName())


def list_snapshots(dom: libvirt.virDomain) -> list[SnapshotInfo]:
    current = current_name(dom)
    marked = disk_only_names(dom)
    return [parse_snapshot(s.getXMLDesc(0), current, marked) for s in dom.listAllSnapshots(0)]


def disk_only_names(dom: libvirt.virDomain) -> frozenset[str]:
    """Names of the snapshots taken with ``memory=False`` while the VM ran."""
    try:
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, DISK_ONLY_NS, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            raise
        return frozenset()  # no such metadata: none were taken
    root = ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon
    return frozenset(e.get("name", "") for e in root.iter("snapshot"))


def _store_disk_only_names(dom: libvirt.virDomain, names: frozenset[str]) -> None:
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if dom.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    if not names:
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, None, None, DISK_ONLY_NS, flags)
        return
    root = ET.Element("disk-only")
    for name in sorted(names):
        ET.SubElement(root, "snapshot", {"name": name})  # attribute escaped by the library
    xml = ET.tostring(root, encoding="unicode")
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, _DISK_ONLY_KEY, DISK_ONLY_NS, flags)


def create(dom: libvirt.virDomain, name: str, description: str, memory: bool = True) -> SnapshotInfo:
    running = bool(dom.isActive())
    snap = dom.snapshotCreateXML(snapshot_xml(name, description), 0)
    before = disk_only_names(dom)
    # a stale mark (copied by a clone, left by a snapshot deleted behind our back)
    # must not turn this snapshot into a disk-only one
    marked = before | {name} if running and not memory else before - {name}
    if marked != before:
        try:
            _store_disk_only_names(dom, marked)
        except libvirt.libvirtError:
            # without the mark the snapshot would silently carry memory: undo it instead
            snap.delete(0)
            raise
    return parse_snapshot(snap.getXMLDesc(0), name, marked)


def revert(dom: libvirt.virDomain, name: str) -> None:
    snap = dom.snapshotLookupByName(name, 0)
    # the revert replaces the domain's definition (and metadata) by the snapshot's copy
    marked = disk_only_names(dom)
    disk_only = name in marked
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
    if marked != disk_only_names(dom):
        _store_disk_only_names(dom, marked)


def delete(dom: libvirt.virDomain, name: str, children: bool) -> None:
    snap = dom.snapshotLookupByName(name, 0)
    doomed = {name}
    if children:
        descendants = snap.listAllChildren(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_DESCENDANTS)
        doomed |= {str(child.getName()) for child in descendants}
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN if children else 0
    snap.delete(flags)
    marked = disk_only_names(dom)
    if marked & doomed:
        _store_disk_only_names(dom, marked - doomed)
