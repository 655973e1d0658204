"""Clones: a new domain (new UUID, new MACs, its own NVRAM and console log) with
copied or linked disks, of a stopped or a running VM.

A full clone copies every writable disk into a new volume of the same pool
(``createXMLFrom``; for a running VM a block copy, see :mod:`livecopy`, which
gives a crash-consistent point-in-time copy). CD-ROMs and floppies are shared
read-only media and stay as they are. Disks anyvirt cannot copy (block
devices, network disks, files outside every pool) are refused before
anything is made.

A linked clone must not read a disk its original keeps writing to:

* a **template** never writes to its disks: its clones' overlays sit on them;
* a stopped VM **without snapshots** has its disk *frozen*: the disk becomes a
  read-only base, the original continues on a fresh overlay of it, and the
  clone gets a second overlay. Cheap, and neither can corrupt the other. While
  the original has not written to its overlay since, further linked clones go
  straight onto the same base (bulk clones share one base);
* a VM **with snapshots**, or a **running** one, keeps its disk (its internal
  snapshots live in it, and a running QEMU cannot be moved onto an overlay
  without one): a *frozen copy* of its current state (flattened, no
  snapshots) becomes the base. Later linked clones reuse that copy while the
  original's disk has not changed since it was made (bulk clones again).

Bases are deleted with the last volume that needs them (``DiskStore.delete_chain``).

A clone with an identity gets its MACs chosen here, its NoCloud seed written from them
into its own volume next to its first disk, and is defined once, seed drive included:
no second define once libvirt has picked the MACs. What a bulk clone reads of its
original (disk capacities, the console log directory) is read once for all clones.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid as uuidlib
import xml.etree.ElementTree as ET

import libvirt
from attrs import define, field

from anyvirt.deployment import ResolvedIdentity
from anyvirt.errors import AnyvirtError, InvalidSpec, NotFound
from anyvirt.model import VMSummary
from anyvirt.tasks import Job
from anyvirt_libvirt import deletion, domxml, listing, livecopy, seeds, storage, templates
from anyvirt_libvirt.disks import DomainDisk, parse_disks, refuse_uncopyable
from anyvirt_libvirt.site import Site


@define
class _Source:
    """What a clone needs to know of its original, read once."""

    vm_id: str
    name: str
    xml: str
    disks: list[DomainDisk]
    running: bool
    has_snapshots: bool
    saved: bool
    template: bool


@define
class _Shared:
    """What every clone of one call reads alike, read once: the capacity of each volume
    an overlay goes onto, and where console logs go."""

    site: Site
    capacities: dict[str, int] = field(factory=dict)
    console_store: storage.DiskStore | None = None
    console_known: bool = False

    def capacity(self, store: storage.DiskStore, path: str) -> int | None:
        if path not in self.capacities:
            capacity = store.describe(path)[0]
            if capacity is None:
                return None
            self.capacities[path] = capacity
        return self.capacities[path]

    def console_log(self, vm_uuid: str) -> str | None:
        if self.site.facts.choices.domain_type == "test":
            return None
        if not self.console_known:
            with contextlib.suppress(InvalidSpec, NotFound):
                self.console_store = self.site.store_for(None)
            self.console_known = True
        return self.console_store.console_log(vm_uuid) if self.console_store else None


@define
class _Plan:
    """The volumes made so far (deleted again if the clone fails)."""

    made: list[tuple[storage.DiskStore, str]] = field(factory=list)
    clone_paths: dict[str, str] = field(factory=dict)  # file disks: old path -> new
    clone_volumes: dict[str, str] = field(factory=dict)  # volume disks: old name -> new
    source_paths: dict[str, str] = field(factory=dict)  # the original moved onto overlays
    source_volumes: dict[str, str] = field(factory=dict)

    def retarget(self, disk: DomainDisk, new_path: str, *, original: bool = False) -> None:
        paths, volumes = (
            (self.source_paths, self.source_volumes) if original
            else (self.clone_paths, self.clone_volumes)
        )
        if disk.kind == "volume" and disk.volume:
            volumes[disk.volume] = os.path.basename(new_path)
        else:
            paths[disk.path or ""] = new_path


def _read_source(site: Site, vm_id: str, name: str) -> _Source:
    with site.domain(vm_id, f"clone VM as {name!r}") as dom:
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        running = bool(dom.isActive())
        return _Source(
            vm_id=vm_id,
            name=dom.name(),
            xml=xml,
            disks=parse_disks(xml, dom.connect()),
            running=running,
            has_snapshots=dom.snapshotNum(0) > 0,
            saved=not running and bool(dom.hasManagedSaveImage(0)),
            template=templates.is_marked(dom),
        )


def clone(site: Site, vm_id: str, names: list[str], linked: bool, job: Job,
          identities: list[ResolvedIdentity] | None = None) -> list[VMSummary]:
    """Clones named ``names``, all or none. Linked clones that need a frozen copy share
    one, made once (for a running VM: of every disk at one instant). ``identities``: one
    per clone, each written into the clone's own seed before its define."""
    if identities is not None and len(identities) != len(names):
        raise ValueError("one identity per clone")
    source = _read_source(site, vm_id, names[0])
    refuse_uncopyable(source.disks, source.name, "clone")
    writable = [d for d in source.disks if d.writable_disk]
    stores = {}
    for disk in writable:
        store = site.store_of(disk.path or "")
        if store is None:
            raise InvalidSpec(
                f"cannot clone {source.name!r}: disk {disk.describe()} is outside every storage "
                "pool, and anyvirt copies only pool volumes"
            )
        stores[disk.dev] = store
    if identities and not writable:
        raise InvalidSpec(f"cannot give clones of {source.name!r} an identity: it has no disk "
                          "in a storage pool to keep their seeds next to")
    reads = _Shared(site)
    shared = _Plan()  # the frozen copies these clones share
    made: list[VMSummary] = []
    try:
        with site.shared_bases if linked else contextlib.nullcontext():
            bases: dict[str, str] = {}
            if linked and not source.template and (source.running or source.has_snapshots):
                bases = _frozen_copies(site, source, writable, stores, shared, job)
            for index, name in enumerate(names):
                job.progress(100.0 * index / len(names), f"cloning {name}")
                identity = identities[index] if identities else None
                step = job.span(100.0 * index / len(names), 100.0 * (index + 1) / len(names))
                made.append(_one(reads, source, writable, stores, bases, name, linked, identity,
                                 step))
    except BaseException:
        for summary in reversed(made):  # all or none
            with contextlib.suppress(AnyvirtError):
                deletion.delete_vm(site, summary.id, True, Job(f"remove clone {summary.name}", 300))
        storage.remove_made(shared.made)
        raise
    storage.settle_made(shared.made)
    return made


def _one(
    reads: _Shared, source: _Source, writable: list[DomainDisk],
    stores: dict[str, storage.DiskStore], bases: dict[str, str], name: str, linked: bool,
    identity: ResolvedIdentity | None, job: Job,
) -> VMSummary:
    site = reads.site
    new_uuid = str(uuidlib.uuid4())
    plan = _Plan()
    try:
        live_disks: list[tuple[DomainDisk, str]] = []
        for index, disk in enumerate(writable):
            job.check()
            store = stores[disk.dev]
            vol_name = f"{new_uuid}-disk{index}.qcow2"
            if not linked and source.running:
                live_disks.append((disk, _blank_like(store, plan, vol_name, disk)))
            elif not linked:
                plan.retarget(disk, _made(plan, store, store.copy(vol_name, disk.path or "")))
            elif source.template or disk.dev in bases:
                # a template never writes to its disks: clones layer straight onto them
                base = (disk.path or "") if source.template else bases[disk.dev]
                overlay = store.overlay(vol_name, base, reads.capacity(store, base))
                plan.retarget(disk, _made(plan, store, overlay))
            else:
                _freeze(source, store, plan, disk, index, vol_name)
        if live_disks:
            # every disk copied up to one instant: the clone is crash-consistent
            livecopy.copy_running(site, source.vm_id, live_disks, job)
            for disk, path in live_disks:
                plan.retarget(disk, path)
        macs = _new_macs(source.xml) if identity is not None else None
        seed = None
        if identity is not None:
            store = stores[writable[0].dev]
            seed = _made(plan, store, seeds.write_seed(site.link, store, new_uuid, name, identity,
                                                       macs or [], job))
        summary = _define(reads, source, plan, name, new_uuid, linked, macs, seed)
    except BaseException:
        storage.remove_made(plan.made)
        raise
    storage.settle_made(plan.made)
    return summary


def _new_macs(xml: str) -> list[str]:
    """A new MAC for each NIC of the original, in its order, chosen here (as libvirt would:
    its default prefix and three random bytes) so the seed can name them before the define."""
    count = len(ET.fromstring(xml).findall("devices/interface"))  # noqa: S314 - from the daemon
    return [domxml.random_mac() for _ in range(count)]


def _made(plan: _Plan, store: storage.DiskStore, path: str) -> str:
    plan.made.append((store, path))
    return path


def _blank_like(store: storage.DiskStore, plan: _Plan, vol_name: str, disk: DomainDisk) -> str:
    capacity = store.describe(disk.path or "")[0] or 0
    return _made(plan, store, store.create(vol_name, capacity))


def _freeze(
    source: _Source, store: storage.DiskStore, plan: _Plan, disk: DomainDisk, index: int,
    vol_name: str,
) -> None:
    path = disk.path or ""
    shared = _overlay_on_unchanged_base(store, vol_name, path)
    if shared is not None:
        plan.retarget(disk, _made(plan, store, shared))  # the original stays as it is
        return
    overlay_name = f"{source.vm_id}-disk{index}-{secrets.token_hex(4)}.qcow2"
    plan.retarget(disk, _made(plan, store, store.overlay(overlay_name, path)), original=True)
    plan.retarget(disk, _made(plan, store, store.overlay(vol_name, path)))


def _frozen_copies(
    site: Site, source: _Source, writable: list[DomainDisk],
    stores: dict[str, storage.DiskStore], shared: _Plan, job: Job,
) -> dict[str, str]:
    """A flattened copy of each disk's current state (device -> path), for linked
    clones of a running VM or of one with snapshots. A stopped VM's copy is reused
    while the original's disk has not been written since it was made."""
    bases: dict[str, str] = {}
    live: list[tuple[DomainDisk, str]] = []
    for index, disk in enumerate(writable):
        store, path = stores[disk.dev], disk.path or ""
        prefix = f"{source.vm_id}-disk{index}{storage.FROZEN_MARK}"
        name = f"{prefix}{secrets.token_hex(4)}.qcow2"
        if source.running:
            live.append((disk, _blank_like(store, shared, name, disk)))
            continue
        reusable = store.newest_unchanged_copy(prefix, path)
        bases[disk.dev] = reusable or _made(shared, store, store.copy(name, path))
    if live:
        livecopy.copy_running(site, source.vm_id, live, job)  # one instant for all
        bases.update({disk.dev: path for disk, path in live})
    return bases


def _define(
    reads: _Shared, source: _Source, plan: _Plan, name: str, new_uuid: str, linked: bool,
    macs: list[str] | None, seed: str | None,
) -> VMSummary:
    site = reads.site
    new_xml = domxml.rewrite_for_copy(
        source.xml, name=name, uuid=new_uuid, disk_paths_map=plan.clone_paths,
        console_log=reads.console_log(new_uuid), new_macs=True, macs=macs,
        volume_names=plan.clone_volumes, own_nvram=True, template_mark=False,
        linked_clone_of=source.vm_id if linked else None,
    )
    root = ET.fromstring(new_xml)  # noqa: S314 - our own rewrite of the daemon's XML
    if seed is not None:
        seeds.place_seed(root, seed)
        new_xml = ET.tostring(root, encoding="unicode")
    cpus, memory_kib = domxml.current_size(root)
    moved = bool(plan.source_paths or plan.source_volumes)
    with site.link.call(f"define clone {name!r}") as conn:
        new_dom = conn.defineXML(new_xml)
        try:
            if moved:
                # the original continues on its overlay
                conn.defineXML(_on_new_disks(source.xml, plan))
                if source.saved:
                    _move_managed_save(conn, source.vm_id, plan)
        except libvirt.libvirtError:
            new_dom.undefine()
            if moved:
                conn.defineXML(source.xml)  # back on its own disk, as it was
            raise
        return listing.new_summary(new_dom, site.facts.node_id, cpus, memory_kib)


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


def _move_managed_save(conn: libvirt.virConnect, vm_id: str, plan: _Plan) -> None:
    """A suspended original resumes from the XML inside its save image, not from its
    definition: point that XML at the overlays too, or it would resume writing into
    the frozen base its linked clone reads."""
    dom = conn.lookupByUUIDString(vm_id)
    saved_xml = dom.managedSaveGetXMLDesc(libvirt.VIR_DOMAIN_SAVE_IMAGE_XML_SECURE)
    dom.managedSaveDefineXML(_on_new_disks(saved_xml, plan), 0)


def _on_new_disks(xml: str, plan: _Plan) -> str:
    """The same domain (name, UUID, MACs, console) with its disks moved to the overlays."""
    return domxml.rewrite_for_copy(
        xml,
        name=None,
        uuid=None,
        disk_paths_map=plan.source_paths,
        console_log=domxml.console_log_path(ET.fromstring(xml)),  # noqa: S314 - from the daemon
        new_macs=False,
        volume_names=plan.source_volumes,
    )
