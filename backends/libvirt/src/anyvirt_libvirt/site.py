"""One libvirt connection's site: what the helper modules (cloning, export,
live copy, migration, deletion) need of the host they work on.

The driver builds one :class:`Site` when it connects and hands it to every
helper, so no helper reaches into the driver (and none imports it): the
link, the host's facts, the template index, the in-flight record, the
embedded root, and the lookups (a domain by UUID, the store of a path, the
facts of a volume, where a console log goes).
"""

from __future__ import annotations

import logging
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt
from attrs import field, frozen

from anyvirt.errors import AnyvirtError, InvalidSpec, NotFound
from anyvirt_libvirt import storage
from anyvirt_libvirt.connection import Link
from anyvirt_libvirt.disks import DomainDisk
from anyvirt_libvirt.hostfacts import HostFacts
from anyvirt_libvirt.inflight import InflightRecord
from anyvirt_libvirt.templates import TemplateIndex

log = logging.getLogger(__name__)

#: the pools new volumes go to when none is named, first active one wins
DEFAULT_POOLS = ("default", "default-pool")


@frozen(repr=False)
class Site:
    """A live libvirt connection and the host facts read when it opened."""

    link: Link
    #: the target's URI without secrets (for messages)
    safe_uri: str
    #: the daemon is on this machine (no host in the URI): its files are ours to read
    is_local_socket: bool
    facts: HostFacts
    templates: TemplateIndex
    inflight: InflightRecord
    #: the directory of ``qemu:///embed`` (which has no storage pools), else None
    embed_root: Path | None
    #: held while linked clones choose and layer onto a shared base, and while a deletion
    #: decides that no volume needs a frozen base any more: else a clone reusing a frozen
    #: copy and the deletion of that copy's last user meet, and the new clone's overlay
    #: points at a deleted file (this process's threads; other processes are not covered)
    shared_bases: threading.RLock = field(factory=threading.RLock)

    def __repr__(self) -> str:
        return f"Site({self.safe_uri})"

    @contextmanager
    def domain(self, vm_id: str, what: str) -> Iterator[libvirt.virDomain]:
        """The domain with UUID ``vm_id`` (NotFound if none), on the live connection."""
        with self.link.call(what) as conn:
            try:
                dom = conn.lookupByUUIDString(vm_id)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise NotFound(f"no VM with id {vm_id!r} on {self.safe_uri}") from exc
                raise
            yield dom

    # ------------------------------------------------------------ stores
    def _embedded_store(self) -> storage.DirStore | None:
        return storage.DirStore(self.embed_root / "images") if self.embed_root is not None else None

    def store_for(self, requested: str | None) -> storage.DiskStore:
        """The store new volumes go to: a named pool, a pool given by its path, or the default."""
        embedded = self._embedded_store()
        if embedded is not None:
            if requested is not None:
                raise InvalidSpec("qemu:///embed has no storage pools: leave DiskSpec.storage unset")
            return embedded
        with self.link.call("storage pools") as conn:
            pools = {p.name(): p for p in conn.listAllStoragePools(0)}
            if requested is not None and requested.startswith("/"):
                # a path is accepted only when it *is* a pool's directory
                for name, pool in pools.items():
                    if _pool_path(pool) == requested.rstrip("/"):
                        requested = name
                        break
                else:
                    raise InvalidSpec(
                        f"{requested} is not a storage pool's directory: disks live in pools "
                        f"({', '.join(sorted(pools)) or 'none defined'})"
                    )
            if requested is not None:
                if requested not in pools:
                    raise NotFound(f"no storage pool {requested!r} on {self.safe_uri}")
                name = requested
            else:
                name = next((n for n in DEFAULT_POOLS if n in pools and pools[n].isActive()), "")
                if not name:
                    name = next((n for n, p in pools.items() if p.isActive()), "")
                if not name:
                    raise InvalidSpec(f"no active storage pool on {self.safe_uri} for the disks")
        return storage.PoolStore(self.link, name, self.inflight)

    def store_of(self, path: str) -> storage.DiskStore | None:
        """The store holding ``path``: a pool knowing it as a volume, or the pool whose
        directory it is in once refreshed (a file another tool put there); None if the
        path is outside every pool."""
        embedded = self._embedded_store()
        if embedded is not None:
            return embedded if embedded.owns(path) else None
        with self.link.call("volume") as conn:
            try:
                pool = conn.storageVolLookupByPath(path).storagePoolLookupByVolume().name()
                return storage.PoolStore(self.link, pool, self.inflight)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise
            directory = os.path.dirname(os.path.normpath(path))
            for candidate in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
                if _pool_path(candidate) == directory:
                    storage.refresh_pool(candidate)
                    try:
                        conn.storageVolLookupByPath(path)
                    except libvirt.libvirtError as exc:
                        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                            raise
                        return None
                    return storage.PoolStore(self.link, candidate.name(), self.inflight)
        return None

    # ------------------------------------------------------------ volumes
    def _volume_row(self, path: str) -> tuple[int | None, str | None, str | None]:
        """(capacity, pool, backing) of a pool volume; Nones outside every pool."""
        embedded = self._embedded_store()
        if embedded is not None:
            try:
                capacity, backing = embedded.describe(path)
            except AnyvirtError:
                return (None, None, None)
            return (capacity, None, backing)
        store = self.store_of(path)
        if store is None:
            return (None, None, None)
        try:
            capacity, backing = store.describe(path)
        except NotFound:
            return (None, None, None)
        return (capacity, store.name, backing)

    def volume_facts(self, path: str) -> tuple[int | None, str | None]:
        """(capacity, backing path) of a volume; Nones outside every pool."""
        capacity, _pool, backing = self._volume_row(path)
        return capacity, backing

    def disk_facts(
        self, dom: libvirt.virDomain, disk: DomainDisk
    ) -> tuple[int | None, str | None, str | None]:
        """Size, pool and backing of a disk: from its pool when it is a volume (an
        unrefreshed pool is refreshed), else the size libvirt's block info reads
        (``virsh domblkinfo``) and the backing the domain XML records."""
        capacity, pool, backing = self._volume_row(disk.path or "")
        if capacity is None and disk.path:
            try:
                capacity = int(dom.blockInfo(disk.path, 0)[0])
            except libvirt.libvirtError:
                capacity = None  # e.g. an empty CD-ROM drive, a missing file
        return capacity, pool, backing or disk.backing

    def delete_volume_chain(self, path: str, keep: Collection[str] = (),
                            linked_clone: bool = False) -> None:
        """Delete a volume a VM used (and unshared bases not in ``keep``); never a file
        outside the pools. A linked clone's chain loses only the frozen copies made for
        linked clones: the disk of a template or original (kept by ``delete(disks=False)``)
        stays."""
        store = self.store_of(path)
        if store is not None:
            with self.shared_bases:
                store.delete_chain(path, keep, base_deletable=(
                    storage.is_frozen_copy if linked_clone else (lambda _base: True)))

    # ------------------------------------------------------------ console logs
    def console_log_for(self, vm_uuid: str) -> str | None:
        """Where QEMU logs a new VM's serial console (next to the disks); None without a pool."""
        try:
            return self.store_for(None).console_log(vm_uuid)
        except (InvalidSpec, NotFound):
            return None

    def delete_console_log(self, path: str) -> None:
        """Remove a console log QEMU wrote next to the disks (a pool refresh finds it)."""
        embedded = self._embedded_store()
        if embedded is not None:
            embedded.delete(path)
            return
        try:
            store = self.store_for(os.path.dirname(path))
        except (InvalidSpec, NotFound):
            return  # not in a pool's directory: not anyvirt's to delete
        store.delete(path)

    # ------------------------------------------------------------ in-flight record
    def inflight_key(self, path: str) -> tuple[str, str] | None:
        """(pool, name) under which the in-flight record knows a file an operation makes
        in a pool's directory outside the storage API (QEMU's console log); None for a
        file in no pool."""
        if self.embed_root is not None:
            return None
        store = self.store_for(None)
        return (store.name, os.path.basename(path)) if store.owns(path) else None

    def sweep_inflight(self) -> None:
        """Remove volumes a create, clone or migration left when the daemon died under
        it (see :mod:`anyvirt_libvirt.inflight`)."""
        forgotten = self.inflight.sweep(
            lambda pool, volume: storage.remove_if_unused(self.link, self.inflight, pool, volume)
        )
        if forgotten:
            log.info("removed %d volume(s) left by interrupted operations", len(forgotten))


def _pool_path(pool: libvirt.virStoragePool) -> str:
    path = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")  # noqa: S314 - from the daemon
    return str(path).rstrip("/") if path else ""
