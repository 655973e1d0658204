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
    #: path -> name of a domain referencing it
    owners: dict[str, str]


def other_domains(conn: libvirt.virConnect, vm_id: str) -> OtherDomains:
    owners: dict[str, str] = {}
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
        for path in referenced_paths(xml, conn):
            owners.setdefault(path, dom.name())
        meta = ET.fromstring(xml).find(f"metadata/{{{NS}}}vm")  # noqa: S314 - from the daemon
        if meta is not None and meta.get("linked-clone-of") == vm_id:
            clones.append(dom.name())
    return OtherDomains(frozenset(owners), tuple(sorted(clones)), owners)
