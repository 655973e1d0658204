"""Deleting a domain: undefine it, and with its disks remove only what it owns.

Also used by cloning (to take back clones of a bulk clone that failed) and by
migration (the undefine flags), hence a module of its own rather than driver code.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from anyvirt.tasks import Job
from anyvirt_libvirt import disks as disks_mod
from anyvirt_libvirt import domxml, seeds, usage
from anyvirt_libvirt.site import Site

#: undefine a domain with its snapshots' metadata, its managed save and its NVRAM
UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA  # a running backup's checkpoint
    | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
)


def delete_vm(site: Site, vm_id: str, disks: bool, job: Job) -> None:
    """Undefine the VM; with ``disks``, remove the volumes and files it owns: its
    writable disks in a pool (with bases nothing else needs), its console log,
    its NVRAM, its own seed (:mod:`anyvirt_libvirt.seeds`: the volume named for it, or an
    inherited one whose VM is gone and that nothing else reads). Never a file another
    domain references, never one outside the pools (a disk another tool attached there
    is the caller's), never other CD-ROMs."""
    with site.domain(vm_id, "delete VM") as dom:
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        conn = dom.connect()
        own = disks_mod.parse_disks(xml, conn)
        others = usage.other_domains(conn, vm_id)
        seed = seeds.seed_to_remove(xml, dom.name(), conn)
        nvram = _parse(xml).findtext("os/nvram")
        keep_nvram = not disks or (nvram or "").strip() in others.paths
        undefine(dom, keep_nvram)
    site.templates.note(vm_id, False)
    # the seed is the VM's identity, not a disk: it goes with the VM even with disks=False
    if seed and seed not in others.paths:
        store = site.store_of(seed)
        if store is not None:
            store.delete(seed)
    if not disks:
        return
    clone = _is_linked_clone(xml)
    for path in disks_mod.writable_paths(own):
        job.check()
        if path not in others.paths:
            site.delete_volume_chain(path, keep=others.paths, linked_clone=clone)
    log = domxml.console_log_path(_parse(xml))
    if log and log not in others.paths:
        site.delete_console_log(log)



def linked_clones(site: Site, vm_id: str) -> list[str]:
    """The VMs that need this one's disks: anyvirt's linked clones of it (marked in
    their metadata), and volumes another tool layered on one of its disks (deleting
    the disk would break them). The gate refuses ``delete(disks=True)`` meanwhile."""
    with site.domain(vm_id, "linked clones") as dom:
        conn = dom.connect()
        own = disks_mod.parse_disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), conn)
        others = usage.other_domains(conn, vm_id)
    users = list(others.linked_clones)
    for path in disks_mod.writable_paths(own):
        store = site.store_of(path)
        for layered in store.backing_users(path) if store is not None else []:
            user = others.owners.get(layered, layered)  # a domain's name, else the volume
            if user not in users:
                users.append(user)
    return users


def is_linked_clone(site: Site, vm_id: str) -> bool:
    """Whether this VM's disks read from another's: anyvirt made it as a linked clone (its
    metadata says of which VM), or a writable disk of it has a backing volume (a layer
    another tool made). A platform fact the gate reads: it refuses to move such a VM to
    another host, where a copy of the top layer alone would be a broken disk."""
    with site.domain(vm_id, "linked clone?") as dom:
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        own = disks_mod.parse_disks(xml, dom.connect())
    if _is_linked_clone(xml):
        return True
    return any(site.volume_facts(path)[1] for path in disks_mod.writable_paths(own))


def undefine(dom: libvirt.virDomain, keep_nvram: bool = False) -> None:
    """Undefine with its snapshots' metadata and managed save, and its NVRAM file unless
    ``keep_nvram``, dropping only the flags a driver refuses (libvirt's test driver knows
    no NVRAM flag, and a plain undefine refuses a domain that has snapshots)."""
    without_nvram = UNDEFINE_FLAGS & ~libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    keeping = without_nvram | libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
    # a driver that knows no checkpoints (the test driver) refuses their flag too
    plain = without_nvram & ~libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    choices = ((keeping, without_nvram, plain) if keep_nvram
               else (UNDEFINE_FLAGS, without_nvram, plain))
    for flags in choices:
        try:
            dom.undefineFlags(flags)
            return
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
                raise
    dom.undefine()


def _is_linked_clone(xml: str) -> bool:
    """Whether anyvirt made this domain as a linked clone (its metadata says of which VM)."""
    meta = _parse(xml).find(f"metadata/{{{domxml.NS}}}vm")
    return meta is not None and bool(meta.get("linked-clone-of"))


def _parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon
