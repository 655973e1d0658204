"""Moving a domain to another libvirt host.

Live (the VM runs): peer-to-peer ``migrateToURI3`` from the source daemon
to the target's libvirt URI, with ``PERSIST_DEST|UNDEFINE_SOURCE`` so the
domain is defined on the target and undefined on the source only once the
migration succeeded. Disks the target cannot see are copied during the
migration (``NON_SHARED_DISK``, QEMU's NBD mirror) into volumes anyvirt
pre-creates in the target's pool; the destination XML points at them.
Progress comes from the migration job (``jobStats``); ``Task.cancel()``
aborts it (``abortJob``), and so does the job's deadline.

Offline (the VM is stopped): each volume is streamed from the source pool to
the target pool through the two connections, the domain is defined on the
target, and only then undefined (and its volumes removed) on the source.
"""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from anyvirt.errors import AnyvirtError, ConnectionFailed, InvalidSpec, Timeout
from anyvirt.model import MigrationResult
from anyvirt.tasks import Job
from anyvirt_libvirt import changes, domxml
from anyvirt_libvirt.deletion import UNDEFINE_FLAGS
from anyvirt_libvirt.disks import parse_disks
from anyvirt_libvirt.errors import translate
from anyvirt_libvirt.site import Site
from anyvirt_libvirt.storage import remove_made

CHUNK = 1024 * 1024


def _volume_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _visible_on(conn: libvirt.virConnect, path: str) -> bool:
    """True when the target host knows ``path`` as one of its volumes (shared storage)."""
    try:
        conn.storageVolLookupByPath(path)
    except libvirt.libvirtError:
        return False
    return True


def migrate(
    source: Site, vm_id: str, target: Site, live: bool, job: Job
) -> MigrationResult:
    started = time.monotonic()
    with source.link.call("migration source") as conn:
        dom = conn.lookupByUUIDString(vm_id)
        name = dom.name()
        changes.drop_checkpoints_for_move(dom)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE)
        inactive_xml = dom.XMLDesc(
            libvirt.VIR_DOMAIN_XML_MIGRATABLE
            | libvirt.VIR_DOMAIN_XML_SECURE
            | libvirt.VIR_DOMAIN_XML_INACTIVE
        )
        snapshot_xmls = [
            s.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE)
            for s in dom.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
        ]
        current = dom.snapshotCurrent(0).getName() if dom.hasCurrentSnapshot(0) else None
    for disk in parse_disks(xml):
        if disk.writable_disk and disk.kind != "file":
            raise InvalidSpec(
                f"cannot migrate {name!r}: disk {disk.describe()} is not a file, and anyvirt "
                "moves file disks only (a pool volume by name would need the same pool there)"
            )
    with target.link.call("migration target") as tconn:
        paths = [d.path for d in parse_disks(xml) if d.device == "disk" and d.path]
        copies = [p for p in paths if not _visible_on(tconn, p)]
    store = target.store_for(None) if copies else None
    path_map: dict[str, str] = {}
    console: str | None = None
    console_key: tuple[str, str] | None = None
    old_console = domxml.console_log_path(ET.fromstring(xml))  # noqa: S314 - from the daemon
    try:
        for path in copies:
            assert store is not None
            capacity, _backing = source.volume_facts(path)
            path_map[path] = store.create(_volume_name(path), capacity or 0)
        console = target.console_log_for(vm_id)
        console_key = target.inflight_key(console) if console else None
        if console_key:
            target.inflight.note(*console_key)  # QEMU there makes it; a dead target keeps it
        dest_xml = domxml.rewrite_for_copy(
            xml, name=None, uuid=None, disk_paths_map=path_map, console_log=console, new_macs=False
        )
        persist_xml = domxml.rewrite_for_copy(
            inactive_xml,
            name=None,
            uuid=None,
            disk_paths_map=path_map,
            console_log=console,
            new_macs=False,
        )
        if live:
            downtime, moved = _live(source, target, vm_id, dest_xml, persist_xml, path_map, job)
        else:
            snaps = SnapshotTree(snapshot_xmls, current, path_map)
            downtime, moved = None, _offline(source, target, vm_id, persist_xml, path_map, snaps, job)
    except BaseException:
        if console:
            # QEMU on the target may have started its console log already
            try:
                target.delete_console_log(console)
            except AnyvirtError:
                if console_key:
                    target.inflight.abandon(*console_key)
            else:
                if console_key:
                    target.inflight.done(*console_key)
        if store is not None:
            # best effort (the error that stopped the migration matters more); what the
            # target cannot remove now, its next connection does
            remove_made([(store, made) for made in path_map.values()])
        raise
    if store is not None:
        for made in path_map.values():
            store.settled(made)
    if console_key:
        target.inflight.done(*console_key)
    # the listing's template marks follow the VM (a template migrates as one)
    target.templates.note(vm_id, vm_id in source.templates.ids())
    source.templates.note(vm_id, False)
    # the domain now lives on the target: the source's copied volumes are leftovers
    for old in path_map:
        with contextlib.suppress(AnyvirtError):
            source.delete_volume_chain(old)
    if old_console and old_console != console:
        with contextlib.suppress(AnyvirtError):
            source.delete_console_log(old_console)
    return MigrationResult(
        vm_id=vm_id,
        vm_name=name,
        source=source.safe_uri,
        target=target.safe_uri,
        live=live,
        duration_s=round(time.monotonic() - started, 3),
        downtime_ms=downtime,
        bytes_transferred=moved,
    )


def _live(
    source: Site,
    target: Site,
    vm_id: str,
    dest_xml: str,
    persist_xml: str,
    path_map: dict[str, str],
    job: Job,
) -> tuple[float | None, int | None]:
    flags = (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
    )
    params: dict[str, Any] = {
        libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml,
        libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: persist_xml,
    }
    if target.is_local_socket:
        # both daemons are on this machine: keep QEMU's migration stream on loopback
        params[libvirt.VIR_MIGRATE_PARAM_URI] = "tcp://127.0.0.1"
    if path_map:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        with source.link.call("migration source") as conn:
            dom = conn.lookupByUUIDString(vm_id)
            devs = _devices_of(dom.XMLDesc(0), set(path_map))
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = devs
    else:
        # disks on storage both hosts see by the same path: QEMU cannot prove it is
        # coherent shared storage, so libvirt asks for the go-ahead
        flags |= libvirt.VIR_MIGRATE_UNSAFE

    conn = source.link.conn
    dom = conn.lookupByUUIDString(vm_id)
    outcome: dict[str, BaseException | None] = {"error": None}

    def run() -> None:
        try:
            dom.migrateToURI3(target.link.uri, params, flags)
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=f"anyvirt-migrate-{vm_id}", daemon=True)
    job.on_cancel(lambda: _abort(dom))
    worker.start()
    last: dict[str, Any] = {}
    try:
        while worker.is_alive():
            worker.join(0.2)
            if not worker.is_alive():
                break
            last = _report(dom, job) or last
            if job.deadline is not None and time.monotonic() > job.deadline:
                _abort(dom)
                worker.join(30)
                raise Timeout(f"live migration did not finish within {job.timeout:g} s; aborted")
    finally:
        if worker.is_alive() and job.cancelled:
            worker.join(30)
    error = outcome["error"]
    if error is not None:
        if job.cancelled:
            job.check()
        if isinstance(error, libvirt.libvirtError):
            if not _alive(conn):
                source.link.mark_dropped()
            mapped = translate(error, "live migration")
            if error.get_error_code() in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC):
                mapped = ConnectionFailed(f"live migration: {error.get_error_message()}")
            raise mapped from error
        raise error
    return _completed(target, vm_id, last)


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _abort(dom: libvirt.virDomain) -> None:
    with contextlib.suppress(libvirt.libvirtError):  # no job any more: it finished or failed on its own
        dom.abortJob()


def _report(dom: libvirt.virDomain, job: Job) -> dict[str, Any]:
    try:
        stats: dict[str, Any] = dom.jobStats(0)
    except libvirt.libvirtError:
        return {}
    total = int(stats.get("data_total", 0)) + int(stats.get("disk_total", 0))
    done = int(stats.get("data_processed", 0)) + int(stats.get("disk_processed", 0))
    if total > 0:
        job.progress(100.0 * done / total, f"migrated {done // (1024 * 1024)} MiB")
    return stats


def _completed(
    target: Site, vm_id: str, last: dict[str, Any]
) -> tuple[float | None, int | None]:
    """Downtime and bytes from the finished job, as the target keeps them."""
    stats = last
    try:
        with target.link.call("migration result") as tconn:
            done = tconn.lookupByUUIDString(vm_id).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
            if done:
                stats = done
    except AnyvirtError:
        pass
    downtime = stats.get("downtime")
    moved = None
    if "data_processed" in stats or "disk_processed" in stats:
        moved = int(stats.get("data_processed", 0)) + int(stats.get("disk_processed", 0))
    return (float(downtime) if downtime is not None else None), moved


def _devices_of(xml: str, paths: set[str]) -> list[str]:
    root = ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon
    devs = []
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        target = disk.find("target")
        if source is not None and target is not None and source.get("file") in paths:
            devs.append(target.get("dev", ""))
    return devs


def _offline(
    source: Site,
    target: Site,
    vm_id: str,
    persist_xml: str,
    path_map: dict[str, str],
    snaps: SnapshotTree,
    job: Job,
) -> int:
    moved = 0
    with source.link.call("offline migration: read volume") as conn, target.link.call(
        "offline migration: write volume"
    ) as tconn:
        for index, (old, new) in enumerate(path_map.items()):
            job.check()
            job.progress(100.0 * index / max(1, len(path_map)), f"copying {_volume_name(old)}")
            try:
                moved += _stream_volume(conn, tconn, old, new)
            except libvirt.libvirtError as exc:
                _blame_the_side_that_died(source, conn, target, tconn, exc)
                raise
        tdom = tconn.defineXML(persist_xml)
        try:
            snaps.redefine_on(tdom)  # the volumes carry the snapshots' data already
            # undefining the source is the point of no return: a move cancelled or past
            # its deadline stops here, after it the move completes and says so
            job.commit(f"undefining the source {vm_id}")
            conn.lookupByUUIDString(vm_id).undefineFlags(UNDEFINE_FLAGS)
        except BaseException:
            tdom.undefineFlags(UNDEFINE_FLAGS)  # keep the VM in exactly one place
            raise
    return moved


class SnapshotTree:
    """A domain's internal snapshots, to redefine on another host after its volumes
    were copied whole (internal snapshots, memory states included, live inside the
    qcow2 files; libvirt keeps only their metadata, which must follow)."""

    def __init__(self, xmls: list[str], current: str | None, path_map: dict[str, str]) -> None:
        self.current = current
        self.xmls = [self._moved(x, path_map) for x in xmls]  # parents before children

    @staticmethod
    def _moved(xml: str, path_map: dict[str, str]) -> str:
        root = ET.fromstring(xml)  # noqa: S314 - XML from the libvirt daemon
        for source in root.iterfind("domain/devices/disk/source"):
            if source.get("file") in path_map:
                source.set("file", path_map[source.get("file", "")])
        for disk in root.iterfind("disks/disk/source"):
            if disk.get("file") in path_map:
                disk.set("file", path_map[disk.get("file", "")])
        return ET.tostring(root, encoding="unicode")

    def redefine_on(self, dom: libvirt.virDomain) -> None:
        for xml in self.xmls:
            name = ET.fromstring(xml).findtext("name")  # noqa: S314 - from the daemon
            flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
            if name == self.current:
                flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
            dom.snapshotCreateXML(xml, flags)


def _blame_the_side_that_died(source: Site, conn: libvirt.virConnect,
                              target: Site, tconn: libvirt.virConnect,
                              exc: libvirt.libvirtError) -> None:
    """A stream between two daemons fails on both ends when either dies: say which one."""
    for side, site, c in (("source", source, conn), ("target", target, tconn)):
        try:
            alive = bool(c.isAlive())
        except libvirt.libvirtError:
            alive = False
        if not alive:
            site.link.mark_dropped()  # the next call opens a new connection
            raise ConnectionFailed(
                f"offline migration: the {side}, {site.safe_uri}, was lost while copying a "
                f"volume: {exc.get_error_message()}"
            ) from exc


def _stream_volume(
    conn: libvirt.virConnect, tconn: libvirt.virConnect, old: str, new: str
) -> int:
    src = conn.storageVolLookupByPath(old)
    dst = tconn.storageVolLookupByPath(new)
    size = int(src.info()[2]) or int(src.info()[1])
    down = conn.newStream(0)
    up = tconn.newStream(0)
    src.download(down, 0, 0, 0)
    dst.upload(up, 0, 0, 0)
    moved = 0
    while True:
        chunk = down.recv(CHUNK)
        if isinstance(chunk, int) or not chunk:
            break
        sent = 0
        while sent < len(chunk):
            sent += up.send(chunk[sent:])
        moved += len(chunk)
    down.finish()
    up.finish()
    return moved or size
