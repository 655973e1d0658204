"""Definition records and recovery marks as volumes beside a VM's disks.

The record of a VM (:mod:`anyvirt.recovery.records`) is the volume
``<uuid>.definition.json`` in the pool of its first writable disk, written
through the storage API (so a remote daemon's pools work as well as local ones)
whenever anyvirt defines or changes the VM, and removed when anyvirt deletes it.
When that pool's directory is shared storage, every host mounting it can read the
record once the VM's host is dead. A recovery leaves ``<uuid>.recovered.json``
there too: the returning host reads it on anyvirt's first contact and disarms its
stale copy (autostart off, a mark in the domain's metadata).

A record is rewritten in place (padded with spaces to the volume's size): libvirt
has no rename, and a delete-then-create would leave a moment with no record.
"""

from __future__ import annotations

import contextlib
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator

import libvirt

from anyvirt.errors import AnyvirtError, InvalidSpec, NotFound
from anyvirt.recovery import records
from anyvirt.recovery.records import DefinitionRecord, RecoveryMark
from anyvirt_libvirt import disks as disks_mod
from anyvirt_libvirt import storage
from anyvirt_libvirt.domxml import NS
from anyvirt_libvirt.site import Site
from anyvirt_libvirt.templates import anyvirt_metadata

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".definition.json"
MARK_SUFFIX = ".recovered.json"
_BLOCK = 4096
#: parses a record or mark: (bytes, what it is for messages) -> the value
Decoder = Callable[[bytes, str], object]
_META_KEY = "anyvirt"


def enabled(site: Site) -> bool:
    """Records need pools: not on ``qemu:///embed`` nor libvirt's test driver."""
    return site.embed_root is None and site.facts.choices.domain_type != "test"


# ---------------------------------------------------------------- writing
def remember(site: Site, vm_id: str) -> None:
    """Write (or refresh) the VM's record; a failure is logged, never raised: the
    operation that changed the VM succeeded, and the next change writes it again."""
    if not enabled(site):
        return
    try:
        with site.domain(vm_id, "read the definition to record") as dom:
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)  # never _SECURE: no passwords
            autostart = bool(dom.autostart())
            conn = dom.connect()
            paths = disks_mod.writable_paths(disks_mod.parse_disks(xml, conn))
        if not paths:
            return  # no disk: nothing of it survives its host, nothing to record
        if _stale(xml):
            return  # a stale copy: the record beside its disks is the recovered VM's
        store = site.store_of(paths[0])
        if not isinstance(store, storage.PoolStore):
            return  # outside every pool: not anyvirt's storage
        record = DefinitionRecord(
            vm_id=vm_id, vm_name=_name(xml), backend="libvirt", host_id=site.facts.node_id,
            hostname=site.facts.hostname, host_uri=site.safe_uri, written=records.now(),
            disks=tuple(paths), definition=xml, autostart=autostart, template=_template(xml))
        _put(site, store.name, vm_id + RECORD_SUFFIX, records.encode_record(record))
        try:
            with site.domain(vm_id, "does the VM still exist"):
                pass
        except NotFound:  # deleted meanwhile by another client: no orphan record
            _delete(site, store.name, vm_id + RECORD_SUFFIX)
        else:
            _drop_own_mark(site, store.name, vm_id)
    except (AnyvirtError, libvirt.libvirtError) as exc:
        log.warning("could not write the definition record of VM %s: %s", vm_id, exc)


def put_record(site: Site, record: DefinitionRecord) -> None:
    """Write ``record`` as it is (a recovery that did not finish puts the old one back)."""
    store = site.store_of(record.disks[0]) if record.disks else None
    if isinstance(store, storage.PoolStore):
        _put(site, store.name, record.vm_id + RECORD_SUFFIX, records.encode_record(record))


def record_pool(site: Site, vm_id: str) -> str | None:
    """The pool holding the VM's record (that of its first writable disk), if any; read
    before a delete, which may remove the disk that tells."""
    if not enabled(site):
        return None
    with site.domain(vm_id, "read the VM's disks") as dom:
        paths = disks_mod.writable_paths(disks_mod.parse_disks(dom.XMLDesc(0), dom.connect()))
    store = site.store_of(paths[0]) if paths else None
    return store.name if isinstance(store, storage.PoolStore) else None


def forget(site: Site, vm_id: str, pool_name: str | None) -> None:
    """Remove what anyvirt kept of a VM deleted here: its record if it names this host (a
    stale copy's record names the host that recovered it, and stays), its recovery mark
    if this host is the failed one (the stale copy is gone)."""
    if pool_name is None:
        return
    try:
        record = _read_one(site, pool_name, vm_id + RECORD_SUFFIX, records.decode_record)
        if isinstance(record, DefinitionRecord) and record.host_id == site.facts.node_id:
            _delete(site, pool_name, vm_id + RECORD_SUFFIX)
        _drop_own_mark(site, pool_name, vm_id)
    except (AnyvirtError, libvirt.libvirtError) as exc:
        log.warning("could not remove the definition record of VM %s: %s", vm_id, exc)


def _drop_own_mark(site: Site, pool_name: str, vm_id: str) -> None:
    """A mark saying this host failed goes once the VM is here through anyvirt again (moved
    back) or its stale copy is deleted: it must not disarm a legitimate copy later."""
    mark = _read_one(site, pool_name, vm_id + MARK_SUFFIX, records.decode_mark)
    if isinstance(mark, RecoveryMark) and mark.failed_host_id == site.facts.node_id:
        _delete(site, pool_name, vm_id + MARK_SUFFIX)


def _read_one(site: Site, pool_name: str, vol_name: str, decode: Decoder) -> object | None:
    with site.link.call(f"read {vol_name}") as conn:
        vol = _volume(conn.storagePoolLookupByName(pool_name), vol_name)
        if vol is None:
            return None
        try:
            return decode(_download(conn, vol), vol_name)
        except InvalidSpec as exc:
            log.warning("ignoring %s: %s", vol_name, exc)
            return None


def write_mark(site: Site, mark: RecoveryMark, record: DefinitionRecord | None) -> bool:
    """The recovery mark beside the record's first disk; False if that is in no pool."""
    if record is None or not record.disks:
        return False
    store = site.store_of(record.disks[0])
    if not isinstance(store, storage.PoolStore):
        return False
    _put(site, store.name, mark.vm_id + MARK_SUFFIX, records.encode_mark(mark))
    return True


def remove_mark(site: Site, record: DefinitionRecord) -> None:
    """The mark of a recovery that did not finish goes again."""
    store = site.store_of(record.disks[0]) if record.disks else None
    if isinstance(store, storage.PoolStore):
        _delete(site, store.name, record.vm_id + MARK_SUFFIX)


def _put(site: Site, pool_name: str, vol_name: str, data: bytes) -> None:
    with site.link.call(f"write {vol_name}") as conn:
        pool = conn.storagePoolLookupByName(pool_name)
        vol = _volume(pool, vol_name)
        if vol is not None and int(vol.info()[1]) < len(data):
            vol.delete(0)
            vol = None
        if vol is None:
            size = -(-len(data) // _BLOCK) * _BLOCK
            root = ET.Element("volume")
            ET.SubElement(root, "name").text = vol_name
            ET.SubElement(root, "capacity").text = str(size)
            ET.SubElement(ET.SubElement(root, "target"), "format", type="raw")
            vol = pool.createXML(ET.tostring(root, encoding="unicode"), 0)
        padded = data.ljust(int(vol.info()[1]), b" ")
        stream = conn.newStream(0)
        vol.upload(stream, 0, len(padded), 0)
        sent = 0
        while sent < len(padded):
            sent += stream.send(padded[sent:])
        stream.finish()


def _delete(site: Site, pool_name: str, vol_name: str) -> None:
    with site.link.call(f"delete {vol_name}") as conn:
        vol = _volume(conn.storagePoolLookupByName(pool_name), vol_name)
        if vol is not None:
            vol.delete(0)


def _volume(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise
    return None


# ---------------------------------------------------------------- reading
def read_records(site: Site, refresh: bool = True) -> list[DefinitionRecord]:
    """Every record in this host's active pools (refreshed first: another host wrote them)."""
    return [r for r in _read_all(site, RECORD_SUFFIX, records.decode_record, refresh)
            if isinstance(r, DefinitionRecord)]


def read_marks(site: Site, refresh: bool = True) -> list[RecoveryMark]:
    return [m for m in _read_all(site, MARK_SUFFIX, records.decode_mark, refresh)
            if isinstance(m, RecoveryMark)]


def _read_all(site: Site, suffix: str, decode: Decoder, refresh: bool) -> Iterator[object]:
    if not enabled(site):
        return
    with site.link.call("read recovery records") as conn:
        pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        seen: set[str] = set()
        for pool in pools:
            if refresh:
                with contextlib.suppress(libvirt.libvirtError):
                    storage.refresh_pool(pool)
            for vol in pool.listAllVolumes(0):
                name = vol.name()
                if not name.endswith(suffix) or name in seen:
                    continue  # one shared directory may be two pools of one host
                seen.add(name)
                what = f"{name} in pool {pool.name()!r}"
                try:
                    yield decode(_download(conn, vol), what)
                except (InvalidSpec, libvirt.libvirtError) as exc:
                    log.warning("skipping %s: %s", what, exc)


def _download(conn: libvirt.virConnect, vol: libvirt.virStorageVol) -> bytes:
    size = int(vol.info()[1])
    if size > records.MAX_BYTES:
        raise InvalidSpec(f"{size} bytes: not an anyvirt record")
    stream = conn.newStream(0)
    vol.download(stream, 0, size, 0)
    data = bytearray()
    while True:
        chunk = stream.recv(65536)
        if not chunk or isinstance(chunk, int):  # b"" at the end; -2 would mean "again"
            break
        data.extend(chunk)
    stream.finish()
    return bytes(data)


# ---------------------------------------------------------------- stale copies
def disarm_stale_copies(site: Site) -> list[str]:
    """On first contact: local domains another host took over while this one was dead
    lose their autostart and carry the mark (``vm.info().extra['stale_copy']``).
    Returns their ids. Marks are found by volume name first, so a host with no stale
    copy downloads nothing."""
    if not enabled(site):
        return []
    disarmed = []
    with site.link.call("look for stale copies") as conn:
        marked = {v.name().removesuffix(MARK_SUFFIX)
                  for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
                  for v in pool.listAllVolumes(0) if v.name().endswith(MARK_SUFFIX)}
        if not marked:
            return []  # the usual case: one call per pool, no domain listed
        local = {d.UUIDString(): d for d in conn.listAllDomains(0)}
    if not marked & set(local):
        return []
    for mark in read_marks(site, refresh=False):
        dom = local.get(mark.vm_id)
        if dom is None or mark.failed_host_id != site.facts.node_id:
            continue
        if mark.recovered_host_id == site.facts.node_id:
            continue
        try:
            if dom.isActive():
                # it runs here: the image lock kept the recovered copy from starting on the
                # same disks, or the disks differ; say so, but never stop a running guest
                log.warning("VM %s runs here although it was recovered elsewhere (%s)",
                            dom.name(), mark.warning())
            dom.setAutostart(0)
            set_stale_mark(dom, mark)
            disarmed.append(mark.vm_id)
        except libvirt.libvirtError as exc:
            log.warning("could not disarm the stale copy %s: %s", mark.vm_id, exc)
    return disarmed


def set_stale_mark(dom: libvirt.virDomain, mark: RecoveryMark) -> None:
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    element = anyvirt_metadata(dom, flags)
    if element is None:
        element = ET.Element("vm", {"guest-os": "other"})
    element.set("stale", mark.warning())
    xml = ET.tostring(element, encoding="unicode")
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, _META_KEY, NS, flags)



def _name(xml: str) -> str:
    return ET.fromstring(xml).findtext("name") or ""  # noqa: S314 - from the daemon


def _stale(xml: str) -> bool:
    meta = ET.fromstring(xml).find(f"metadata/{{{NS}}}vm")  # noqa: S314 - from the daemon
    return meta is not None and bool(meta.get("stale"))


def _template(xml: str) -> bool:
    meta = ET.fromstring(xml).find(f"metadata/{{{NS}}}vm")  # noqa: S314 - from the daemon
    return meta is not None and meta.get("template") == "yes"
