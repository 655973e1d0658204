"""Which files other domains use, so that deleting one VM never takes another's.

Domains defined by other tools may share a disk, an NVRAM file or a console
log, and a linked clone made by hand (``qemu-img create -b``) may sit on a
VM's own disk. Deleting reads every other domain's definition once (a delete
is rare, listing never pays for this).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
from attrs import frozen

from anyvirt_libvirt.disks import referenced_paths
from anyvirt_libvirt.domxml import NS


@frozen
class OtherDomains:
    """What every domain but one references."""

    paths: frozenset[str]
    #: names of the domains anyvirt made as linked clones of that one
    linked_clones: tuple[str, ...]


def other_domains(conn: libvirt.virConnect, vm_id: str) -> OtherDomains:
    paths: set[str] = set()
    clones: list[str] = []
    for dom in conn.listAllDomains(0):
        if dom.UUIDString() == vm_id:
            continue
        try:
            xml = dom.XMLDesc(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # undefined meanwhile
            raise
        paths |= referenced_paths(xml, conn)
        meta = ET.fromstring(xml).find(f"metadata/{{{NS}}}vm")  # noqa: S314 - from the daemon
        if meta is not None and meta.get("linked-clone-of") == vm_id:
            clones.append(dom.name())
    return OtherDomains(frozenset(paths), tuple(sorted(clones)))
