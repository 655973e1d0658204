"""Internal snapshots (disk, plus memory for a running VM), their tree, revert, delete.

A snapshot's id is its name (libvirt names snapshots per domain). Internal
snapshots are what libvirt can both take and revert; external (disk-only)
snapshots cannot be reverted by libvirt 9.0, so anyvirt does not offer them.
A running VM's internal snapshot always includes its memory (QEMU's
``savevm``), so ``memory=False`` on a running VM still records memory, and
the returned SnapshotInfo says so.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import libvirt

from anyvirt.model import PowerState, SnapshotInfo

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


def parse_snapshot(xml: str, current_name: str | None) -> SnapshotInfo:
    root = ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon
    name = root.findtext("name") or ""
    raw_state = root.findtext("state") or ""
    created = root.findtext("creationTime")
    memory = root.find("memory")
    with_memory = raw_state in ("running", "paused", "blocked") and (
        memory is None or memory.get("snapshot") != "no"
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
    return [parse_snapshot(s.getXMLDesc(0), current) for s in dom.listAllSnapshots(0)]


def create(dom: libvirt.virDomain, name: str, description: str) -> SnapshotInfo:
    snap = dom.snapshotCreateXML(snapshot_xml(name, description), 0)
    return parse_snapshot(snap.getXMLDesc(0), name)


def revert(dom: libvirt.virDomain, name: str) -> None:
    snap = dom.snapshotLookupByName(name, 0)
    try:
        dom.revertToSnapshot(snap, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_SNAPSHOT_REVERT_RISKY:
            raise
        # libvirt wants an explicit go-ahead where it must restart QEMU to revert
        dom.revertToSnapshot(snap, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE)


def delete(dom: libvirt.virDomain, name: str, children: bool) -> None:
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN if children else 0
    dom.snapshotLookupByName(name, 0).delete(flags)
