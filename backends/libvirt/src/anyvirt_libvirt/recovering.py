"""Taking over a dead host's VMs from their definition records (the libvirt side).

Three primitives for :mod:`anyvirt.recovery.standalone`: which of a record's disks
this daemon cannot use, which are still locked by a running QEMU (QEMU's image
locks: ``qemu-img info`` without ``-U`` fails to get the shared "write" lock while
another QEMU writes the image), and defining the VM from its record. The record is
data another host wrote: its definition must name the record's VM, its disks must
be volumes of this daemon's pools and its networks must exist here, or nothing is
defined.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from anyvirt.errors import InvalidSpec, TaskFailed
from anyvirt.kit import qemu_img
from anyvirt.model import VMSummary
from anyvirt.recovery.records import DefinitionRecord
from anyvirt.tasks import Job
from anyvirt_libvirt import definitions, domxml, listing
from anyvirt_libvirt import disks as disks_mod
from anyvirt_libvirt.site import Site

#: what qemu-img says when another process holds an image's write lock
#: ('Failed to get shared "write" lock / Is another process using the image?')
LOCK_WORDS = ("failed to get", "lock")
LOCK_PROBE_TIMEOUT = 30.0


def unreadable_disks(site: Site, record: DefinitionRecord) -> list[str]:
    """The record's disks that are not volumes of this daemon's pools."""
    missing = []
    for path in record.disks:
        if site.store_of(path) is None:
            missing.append(path)
    return missing


def locked_disks(site: Site, paths: list[str]) -> dict[str, str] | None:
    """Disks a running QEMU holds (path -> qemu-img's words); None when the daemon's files
    are not this machine's (a remote URI): their locks cannot be probed from here."""
    if not site.is_local_socket or site.embed_root is not None:
        return None
    locked = {}
    for path in paths:
        what = f"probing the image lock of {path}"
        try:
            # without -U (force-share): qemu-img takes QEMU's shared lock, as a second QEMU would
            qemu_img.run(["info", "--output=json", "--", qemu_img.path_arg(path)],
                         what=what, timeout=LOCK_PROBE_TIMEOUT, error=TaskFailed)
        except TaskFailed as exc:
            said = str(exc).removeprefix(what + ": ")
            if all(word in said.lower() for word in LOCK_WORDS):
                locked[path] = said.splitlines()[0]
            else:
                raise
    return locked


def define(site: Site, record: DefinitionRecord, job: Job) -> VMSummary:
    """Define the record's VM on this daemon, same id and name, on its own disks; its
    console log moves to this host's pool; its autostart is the record's."""
    root = ET.fromstring(record.definition)  # noqa: S314 - parsed as data, checked below
    if root.tag != "domain" or root.findtext("uuid") != record.vm_id or \
            root.findtext("name") != record.vm_name:
        raise InvalidSpec(f"the definition record of {record.vm_name!r} names another VM")
    with site.link.call("read the recovered VM's disks") as conn:
        disks = disks_mod.parse_disks(record.definition, conn)
        networks = {n.name() for n in conn.listAllNetworks(0)}
    for disk in disks:
        if disk.writable_disk and (disk.path is None or disk.path not in record.disks):
            raise InvalidSpec(f"the definition of {record.vm_name!r} has a disk its record does "
                              f"not name: {disk.describe()}")
    missing = unreadable_disks(site, record)
    if missing:
        raise InvalidSpec(f"{record.vm_name!r}: {', '.join(missing)} not in a storage pool of "
                          f"{site.safe_uri}")
    for iface in root.findall("devices/interface[@type='network']"):
        network = iface.find("source")
        name = network.get("network", "") if network is not None else ""
        if name not in networks:
            raise InvalidSpec(f"{record.vm_name!r} uses network {name!r}, which {site.safe_uri} "
                              f"lacks (networks: {', '.join(sorted(networks)) or 'none'})")
    job.check()
    xml = domxml.rewrite_for_copy(record.definition, name=None, uuid=None, disk_paths_map={},
                                  console_log=site.console_log_for(record.vm_id), new_macs=False)
    with site.link.call(f"define recovered VM {record.vm_name!r}") as conn:
        dom = conn.defineXML(xml)
        try:
            dom.setAutostart(1 if record.autostart else 0)
        except libvirt.libvirtError:
            dom.undefine()
            raise
        summary = listing.summary_of(dom, site.facts.node_id)
    site.templates.note(record.vm_id, record.template)
    definitions.remember(site, record.vm_id)  # the record now names this host
    return summary


def undo(site: Site, record: DefinitionRecord) -> None:
    """Undefine a recovered VM that did not start (its disks stay), and put its record back."""
    with site.domain(record.vm_id, f"undefine recovered VM {record.vm_name!r}") as dom:
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    site.templates.note(record.vm_id, False)
    definitions.put_record(site, record)
    definitions.remove_mark(site, record)
