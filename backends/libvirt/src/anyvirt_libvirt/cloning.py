"""Clones: a new domain (new UUID, new MACs) with copied or linked disks.

A full clone copies every volume (``createXMLFrom``, or ``qemu-img convert``
for the embedded store). A linked clone must not read a disk its original
keeps writing to, so the original's disk is *frozen*: it becomes a read-only
base, the original continues on a fresh overlay of it, and the clone gets a
second overlay. Both are cheap, and neither can corrupt the other. The base
is deleted with the last VM that needs it (see ``DiskStore.delete_chain``).
While the original has not written to its overlay since, further linked
clones go straight onto the same base: bulk clones (``count=``) all share
one base instead of each adding a level to the chain.
Internal snapshots live inside the frozen base, where the original could no
longer revert to them, so a VM with snapshots can only be cloned in full.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid as uuidlib
from typing import TYPE_CHECKING

import libvirt

from anyvirt.errors import AnyvirtError, InvalidSpec, InvalidState
from anyvirt.model import VMSummary
from anyvirt.tasks import Job
from anyvirt_libvirt import domxml, listing, storage

if TYPE_CHECKING:
    from anyvirt_libvirt.driver import LibvirtDriver


def clone(driver: LibvirtDriver, vm_id: str, name: str, linked: bool, job: Job) -> VMSummary:
    with driver._domain(vm_id, f"clone VM as {name!r}") as dom:
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        source_name = dom.name()
        if dom.isActive():
            raise InvalidState(
                f"VM {source_name!r} is running: stop it (or suspend it) before cloning, "
                "so its disks are consistent"
            )
        has_snapshots = dom.snapshotNum(0) > 0
        saved = bool(dom.hasManagedSaveImage(0))
    if linked and has_snapshots:
        raise InvalidState(
            f"VM {source_name!r} has snapshots: a linked clone would strand them; "
            "make a full clone, or delete the snapshots first"
        )
    new_uuid = str(uuidlib.uuid4())
    made: list[tuple[storage.DiskStore, str]] = []
    clone_paths: dict[str, str] = {}
    source_paths: dict[str, str] = {}
    try:
        for index, path in enumerate(domxml.disk_paths(xml)):
            job.check()
            store = driver._store_of(path)
            if store is None:
                raise InvalidSpec(
                    f"disk {path} of {source_name!r} is not in a storage pool: cannot clone it"
                )
            vol_name = f"{new_uuid}-disk{index}.qcow2"
            if linked:
                shared = _overlay_on_unchanged_base(store, vol_name, path)
                if shared is not None:
                    clone_paths[path] = shared  # the original stays as it is
                else:
                    overlay_name = f"{vm_id}-disk{index}-{secrets.token_hex(4)}.qcow2"
                    source_overlay = store.overlay(overlay_name, path)
                    made.append((store, source_overlay))
                    source_paths[path] = source_overlay
                    clone_paths[path] = store.overlay(vol_name, path)
            else:
                clone_paths[path] = store.copy(vol_name, path)
            made.append((store, clone_paths[path]))
        console = driver.console_log_for(new_uuid) if driver.facts.choices.domain_type != "test" else None
        new_xml = domxml.rewrite_for_copy(
            xml, name=name, uuid=new_uuid, disk_paths_map=clone_paths, console_log=console, new_macs=True
        )
        with driver.link.call(f"define clone {name!r}") as conn:
            new_dom = conn.defineXML(new_xml)
            try:
                if source_paths:
                    conn.defineXML(_on_new_disks(xml, source_paths))  # the original continues on its overlay
                    if saved:
                        _move_managed_save(conn, vm_id, source_paths)
            except libvirt.libvirtError:
                new_dom.undefine()
                if source_paths:
                    conn.defineXML(xml)  # back on its own disk, as it was
                raise
            return listing.summary_of(new_dom, driver.facts.node_id)
    except BaseException:
        for store, path in reversed(made):
            with contextlib.suppress(AnyvirtError):
                store.delete(path)
        raise


def _overlay_on_unchanged_base(store: storage.DiskStore, vol_name: str, path: str) -> str | None:
    """The clone's overlay on the original's base when the original has not written
    to its own overlay since it was frozen (bulk clones, ``count=``); else None.

    Without this every linked clone would freeze the original once more and the
    chains would grow one level per clone. A fresh qcow2 overlay holds only its
    header and tables, and the first write to it allocates more, so an overlay
    exactly as big as a fresh one on the same base has no data of its own: a
    new overlay of that base shows the same disk."""
    capacity, base = store.describe(path)
    if not base or not store.owns(base) or store.describe(base)[0] != capacity:
        return None
    candidate = store.overlay(vol_name, base)
    try:
        if store.allocation(candidate) == store.allocation(path):
            return candidate
    except BaseException:
        with contextlib.suppress(AnyvirtError):
            store.delete(candidate)
        raise
    store.delete(candidate)
    return None


def _move_managed_save(conn: libvirt.virConnect, vm_id: str, paths: dict[str, str]) -> None:
    """A suspended original resumes from the XML inside its save image, not from its
    definition: point that XML at the overlays too, or it would resume writing into
    the frozen base its linked clone reads."""
    dom = conn.lookupByUUIDString(vm_id)
    saved_xml = dom.managedSaveGetXMLDesc(libvirt.VIR_DOMAIN_SAVE_IMAGE_XML_SECURE)
    dom.managedSaveDefineXML(_on_new_disks(saved_xml, paths), 0)


def domxml_root(xml: str):  # type: ignore[no-untyped-def]
    import xml.etree.ElementTree as ET

    return ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon


def _on_new_disks(xml: str, paths: dict[str, str]) -> str:
    """The same domain (name, UUID, MACs, console) with its disks moved to ``paths``."""
    return domxml.rewrite_for_copy(
        xml,
        name=None,
        uuid=None,
        disk_paths_map=paths,
        console_log=domxml.console_log_path(domxml_root(xml)),
        new_macs=False,
    )
