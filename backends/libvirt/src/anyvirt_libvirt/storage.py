"""Disk volumes: create, import an image, clone (full/linked), delete.

Two stores behind one interface:

* :class:`PoolStore` works through libvirt's storage API, so it works the
  same on a remote host (images are uploaded as a stream, copies are made by
  the daemon with ``createXMLFrom``, overlays with ``<backingStore>``).
* :class:`DirStore` is for ``qemu:///embed``, which has no storage driver: it
  runs ``qemu-img`` on files in one local directory.

Volume file names derive from the VM's UUID, never from its (user-given) name.
Nothing outside the store (the pool's directory) is ever deleted.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import libvirt

from anyvirt.errors import AnyvirtError, InvalidSpec, NotFound
from anyvirt.kit import qemu_img
from anyvirt_libvirt.connection import Link
from anyvirt_libvirt.disks import referenced_paths
from anyvirt_libvirt.errors import is_pool_busy
from anyvirt_libvirt.inflight import InflightRecord

CHUNK = 1024 * 1024
#: what :meth:`DiskStore.write` sends between two reports: a seed ISO (about 70 KiB) goes
#: in one send, each a message to the daemon
WRITE_CHUNK = 256 * 1024
QEMU_IMG_TIMEOUT = 600.0


def image_facts(image: str, format: str | None = None) -> tuple[int, str]:
    """(virtual size, format) of a local image file: read as untrusted, so an image that
    names a backing file, an extent or a ``json:`` spec is refused before qemu-img opens it.
    ``format`` where the caller knows it (``DiskSpec.format``): read as that, not probed."""
    found = qemu_img.inspect_untrusted(image, format=format)
    return found.virtual_size, found.format


def run_qemu_img(args: list[str]) -> str:
    """``qemu-img *args`` through the kit's one runner (argument list, bounded wait)."""
    return qemu_img.run(args, what=f"qemu-img {args[0]}", timeout=QEMU_IMG_TIMEOUT)[1]


def convert_image(image: str, fmt: str, qcow2: str) -> None:
    """``image`` (read as ``fmt``) into a new qcow2 file, through the kit's converter: a
    raw view the kit made of NBD exports (a restore's chunks) is read from the exports
    themselves, several requests at once, not through the view's FUSE file."""
    qemu_img.convert(image, qcow2, source_format=fmt, format="qcow2", timeout=QEMU_IMG_TIMEOUT)


#: qcow2 version 3: persistent dirty bitmaps (QEMU 1.1 and later read it)
QCOW2_COMPAT = "1.1"


def _volume_xml(name: str, capacity: int, backing: str | None = None) -> str:
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type="qcow2")
    # stated, because libvirt makes qcow2 version 2 files ("0.10") where none is given,
    # and those cannot keep the persistent bitmaps that changed-block backups read
    ET.SubElement(target, "compat").text = QCOW2_COMPAT
    if backing is not None:
        store = ET.SubElement(vol, "backingStore")
        ET.SubElement(store, "path").text = backing
        ET.SubElement(store, "format", type="qcow2")
    return ET.tostring(vol, encoding="unicode")


def _raw_volume_xml(name: str, capacity: int) -> str:
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    ET.SubElement(ET.SubElement(vol, "target"), "format", type="raw")
    return ET.tostring(vol, encoding="unicode")


#: in the name of a frozen copy made as the base of linked clones (see :mod:`cloning`): only
#: such a base goes with the last linked clone that needs it (``Site.delete_volume_chain``)
FROZEN_MARK = "-frozen-"


def is_frozen_copy(path: str) -> bool:
    """True for a volume cloning froze as the base of linked clones (by its name)."""
    return FROZEN_MARK in os.path.basename(path)


#: how long a pool refresh waits for another client's volume build to finish
BUSY_POOL_WAIT = 30.0


def refresh_pool(pool: libvirt.virStoragePool, wait: float = BUSY_POOL_WAIT) -> None:
    """Refresh a pool, waiting briefly while libvirt builds a volume in it.

    libvirt refuses a refresh while any volume of the pool is being created or
    uploaded ("has asynchronous jobs running"); concurrent creates and deletes
    meet that all the time, and it says nothing about the refresh itself."""
    deadline = time.monotonic() + wait
    delay = 0.05
    while True:
        try:
            pool.refresh(0)
            return
        except libvirt.libvirtError as exc:
            if not is_pool_busy(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _mtime(vol_xml: str) -> float:
    """When a volume's file was last written, as its pool reports it (ns precision)."""
    stamp = ET.fromstring(vol_xml).findtext("target/timestamps/mtime")  # noqa: S314 - from the daemon
    return float(stamp) if stamp else 0.0


class DiskStore(abc.ABC):
    """Where a VM's disks live."""

    name: str

    def settled(self, *paths: str) -> None:  # noqa: B027 - only pools keep a record
        """Volumes made here are owned by a defined domain now (see :mod:`inflight`)."""

    def abandoned(self, path: str) -> None:  # noqa: B027 - only pools keep a record
        """A volume made here could not be removed after a failure: the next connection does."""

    @abc.abstractmethod
    def create(self, vol_name: str, size_bytes: int) -> str:
        """A blank qcow2 volume; returns its path."""

    @abc.abstractmethod
    def import_image(self, vol_name: str, image: str, min_size: int | None,
                     image_format: str | None = None) -> str:
        """A qcow2 volume holding a copy of a local image file (any format qemu-img reads),
        read as ``image_format`` when the caller knows it (else probed by the kit)."""

    @abc.abstractmethod
    def newest_unchanged_copy(self, prefix: str, source: str) -> str | None:
        """The path of a volume named ``prefix...`` written after ``source`` last was
        (a frozen copy still showing the source's current state), or None."""

    @abc.abstractmethod
    def copy(self, vol_name: str, source: str) -> str:
        """A full, independent copy of the volume at ``source``."""

    @abc.abstractmethod
    def overlay(self, vol_name: str, backing: str, capacity: int | None = None) -> str:
        """A qcow2 overlay whose backing file is ``source`` (a linked clone's disk).
        ``capacity``: the backing volume's, when the caller knows it already (bulk clones
        read it once, not once per clone)."""

    @abc.abstractmethod
    def write(self, vol_name: str, data: bytes,
              sent: Callable[[int, int], None] | None = None) -> str:
        """A raw volume holding ``data`` (a seed ISO); ``sent(done, total)`` once the upload
        has begun and after each chunk. A volume left half-written is removed, or left to the
        in-flight sweep."""

    @abc.abstractmethod
    def owns(self, path: str) -> bool:
        """True when ``path`` is a volume of this store."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Remove the volume at ``path`` (refused for anything outside the store)."""

    @abc.abstractmethod
    def describe(self, path: str) -> tuple[int | None, str | None]:
        """(capacity, backing path) of a volume."""

    @abc.abstractmethod
    def allocation(self, path: str) -> int:
        """Bytes the volume's file really takes (grows with every first write to a qcow2)."""

    @abc.abstractmethod
    def backing_users(self, path: str) -> list[str]:
        """Volumes of this store whose backing file is ``path``."""

    @abc.abstractmethod
    def console_log(self, vm_uuid: str) -> str | None:
        """Where QEMU should log a VM's serial console (None if the store has no directory)."""

    def delete_chain(self, path: str, keep: Collection[str] = (),
                     base_deletable: Callable[[str], bool] = lambda _base: True) -> None:
        """Delete a volume, then its backing files that no other volume still needs, that
        are not in ``keep`` (the disks other domains use: a template's disk under its
        linked clones, a VM's disk another tool layered a clone on) and that
        ``base_deletable`` allows (a linked clone takes only the frozen copies made for
        it, never another VM's disk, even one that VM's deletion left behind)."""
        backing = self.describe(path)[1] if self.owns(path) else None
        self.delete(path)
        while (backing and backing not in keep and self.owns(backing) and base_deletable(backing)
               and not self.backing_users(backing)):
            next_backing = self.describe(backing)[1]
            self.delete(backing)
            backing = next_backing


class PoolStore(DiskStore):
    """A libvirt storage pool."""

    def __init__(self, link: Link, pool_name: str, record: InflightRecord | None = None) -> None:
        self.link = link
        self.name = pool_name
        self.record = record
        self._cached_pool: tuple[libvirt.virConnect, libvirt.virStoragePool] | None = None
        with link.call(f"storage pool {pool_name!r}") as conn:
            pool = conn.storagePoolLookupByName(pool_name)
            root = ET.fromstring(pool.XMLDesc(0))  # noqa: S314 - from the daemon
        self.type = root.get("type", "")
        self.directory = root.findtext("target/path")

    def _pool(self, conn: libvirt.virConnect) -> libvirt.virStoragePool:
        """The pool on ``conn``, looked up once per connection (a bulk clone makes two
        volumes per clone in it)."""
        cached = self._cached_pool
        if cached is not None and cached[0] is conn:
            return cached[1]
        pool = conn.storagePoolLookupByName(self.name)
        self._cached_pool = (conn, pool)
        return pool

    @contextlib.contextmanager
    def _making(self, vol_name: str) -> Iterator[None]:
        """Note a volume in the in-flight record before libvirt starts making it; if
        making it fails, the note stays for the next connection to clean up after."""
        if self.record is not None:
            self.record.note(self.name, vol_name)
        try:
            yield
        except BaseException:
            if self.record is not None:
                self.record.abandon(self.name, vol_name)
            raise

    def settled(self, *paths: str) -> None:
        if self.record is not None:
            self.record.done(self.name, *(os.path.basename(path) for path in paths))

    def abandoned(self, path: str) -> None:
        if self.record is not None:
            self.record.abandon(self.name, os.path.basename(path))

    def create(self, vol_name: str, size_bytes: int) -> str:
        with self._making(vol_name), self.link.call(f"create volume {vol_name}") as conn:
            vol = self._pool(conn).createXML(_volume_xml(vol_name, size_bytes), 0)
            return str(vol.path())

    def import_image(self, vol_name: str, image: str, min_size: int | None,
                     image_format: str | None = None) -> str:
        virtual, fmt = image_facts(image, image_format)
        with tempfile.TemporaryDirectory(prefix="anyvirt-import-") as tmp:
            converted = os.path.join(tmp, "image.qcow2")
            convert_image(image, fmt, converted)
            size = os.path.getsize(converted)
            with self._making(vol_name), self.link.call(f"import image into volume {vol_name}") as conn:
                vol = self._pool(conn).createXML(_volume_xml(vol_name, virtual), 0)
                try:
                    stream = conn.newStream(0)
                    vol.upload(stream, 0, size, 0)
                    with open(converted, "rb") as data:
                        while chunk := data.read(CHUNK):
                            sent = 0
                            while sent < len(chunk):
                                sent += stream.send(chunk[sent:])
                    stream.finish()
                    if min_size and min_size > virtual:
                        vol.resize(min_size, 0)
                except BaseException:
                    with contextlib.suppress(libvirt.libvirtError):
                        vol.delete(0)
                    raise
                return str(vol.path())

    def copy(self, vol_name: str, source: str) -> str:
        with self._making(vol_name), self.link.call(f"copy volume to {vol_name}") as conn:
            src = conn.storageVolLookupByPath(source)
            capacity = src.info()[1]
            vol = self._pool(conn).createXMLFrom(_volume_xml(vol_name, capacity), src, 0)
            return str(vol.path())

    def newest_unchanged_copy(self, prefix: str, source: str) -> str | None:
        with self.link.call(f"volumes of pool {self.name!r}") as conn:
            src = self._lookup(conn, source)
            if src is None:
                return None
            written = _mtime(src.XMLDesc(0))
            best: tuple[float, str] | None = None
            for vol in self._pool(conn).listAllVolumes(0):
                if not vol.name().startswith(prefix):
                    continue
                try:
                    stamp = _mtime(vol.XMLDesc(0))
                except libvirt.libvirtError:
                    continue  # deleted meanwhile: not a copy to share
                if stamp > written and (best is None or stamp > best[0]):
                    best = (stamp, str(vol.path()))
        return best[1] if best else None

    def overlay(self, vol_name: str, backing: str, capacity: int | None = None) -> str:
        with self._making(vol_name), self.link.call(f"create overlay {vol_name}") as conn:
            if capacity is None:
                capacity = int(conn.storageVolLookupByPath(backing).info()[1])
            vol = self._pool(conn).createXML(_volume_xml(vol_name, capacity, backing), 0)
            return str(vol.path())

    def write(self, vol_name: str, data: bytes,
              sent: Callable[[int, int], None] | None = None) -> str:
        with self._making(vol_name), self.link.call(f"write volume {vol_name}") as conn:
            vol = self._pool(conn).createXML(_raw_volume_xml(vol_name, len(data)), 0)
            try:
                stream = conn.newStream(0)
                vol.upload(stream, 0, len(data), 0)
                done = 0
                if sent is not None:
                    sent(done, len(data))  # the volume exists, its upload has begun
                while done < len(data):
                    done += stream.send(data[done:done + WRITE_CHUNK])
                    if sent is not None:
                        sent(done, len(data))
                stream.finish()
            except BaseException:
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)  # a dead daemon cannot: _making leaves it to the sweep
                raise
            return str(vol.path())

    def owns(self, path: str) -> bool:
        if not self.directory:
            return False
        return os.path.dirname(os.path.normpath(path)) == os.path.normpath(self.directory)

    def _lookup(self, conn: libvirt.virConnect, path: str) -> libvirt.virStorageVol | None:
        try:
            return conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise
        # a file QEMU created (the console log) is not known until the pool is refreshed
        refresh_pool(self._pool(conn))
        try:
            return conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise
        return None

    def delete(self, path: str) -> None:
        if not self.owns(path):
            raise InvalidSpec(f"{path} is not in storage pool {self.name!r}; refusing to delete it")
        with self.link.call(f"delete volume {path}") as conn:
            vol = self._lookup(conn, path)
            if vol is not None:
                vol.delete(0)
        self.settled(path)

    def describe(self, path: str) -> tuple[int | None, str | None]:
        with self.link.call(f"volume {path}") as conn:
            vol = self._lookup(conn, path)
            if vol is None:
                raise NotFound(f"no volume {path} in pool {self.name!r}")
            root = ET.fromstring(vol.XMLDesc(0))  # noqa: S314 - from the daemon
            return int(vol.info()[1]), root.findtext("backingStore/path")

    def allocation(self, path: str) -> int:
        with self.link.call(f"volume {path}") as conn:
            vol = self._lookup(conn, path)
            if vol is None:
                raise NotFound(f"no volume {path} in pool {self.name!r}")
            return int(vol.info()[2])  # libvirt re-reads the file for this

    def backing_users(self, path: str) -> list[str]:
        users = []
        with self.link.call(f"volumes of pool {self.name!r}") as conn:
            for vol in self._pool(conn).listAllVolumes(0):
                try:
                    root = ET.fromstring(vol.XMLDesc(0))  # noqa: S314 - from the daemon
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                        continue  # deleted by another client meanwhile
                    raise
                if root.findtext("backingStore/path") == path:
                    users.append(str(vol.path()))
        return users

    def console_log(self, vm_uuid: str) -> str | None:
        if self.type != "dir" or not self.directory:
            return None
        return os.path.join(self.directory, f"{vm_uuid}.console.log")


class DirStore(DiskStore):
    """A local directory of qcow2 files, managed with qemu-img (for ``qemu:///embed``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = str(self.directory)

    def _path(self, vol_name: str) -> str:
        path = self.directory / vol_name
        if path.exists():
            raise InvalidSpec(f"volume {vol_name} exists already in {self.directory}")
        return str(path)

    def create(self, vol_name: str, size_bytes: int) -> str:
        path = self._path(vol_name)
        run_qemu_img(["create", "-q", "-f", "qcow2", "--", path, str(size_bytes)])
        return path

    def import_image(self, vol_name: str, image: str, min_size: int | None,
                     image_format: str | None = None) -> str:
        virtual, fmt = image_facts(image, image_format)
        path = self._path(vol_name)
        try:
            convert_image(image, fmt, path)
            if min_size and min_size > virtual:
                run_qemu_img(["resize", "-q", "-f", "qcow2", "--", path, str(min_size)])
        except BaseException:
            # a conversion cut short (the image failed a read) leaves a partial file that
            # no VM names: the caller only knows to remove volumes this returned
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        return path

    def copy(self, vol_name: str, source: str) -> str:
        path = self._path(vol_name)
        run_qemu_img(["convert", "-O", "qcow2", "--", source, path])
        return path

    def newest_unchanged_copy(self, prefix: str, source: str) -> str | None:
        written = os.stat(source).st_mtime_ns
        copies = [(p.stat().st_mtime_ns, str(p)) for p in self.directory.glob(f"{prefix}*")]
        fresh = [c for c in copies if c[0] > written]
        return max(fresh)[1] if fresh else None

    def overlay(self, vol_name: str, backing: str, capacity: int | None = None) -> str:
        path = self._path(vol_name)
        run_qemu_img(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, "--", path])
        return path

    def write(self, vol_name: str, data: bytes,
              sent: Callable[[int, int], None] | None = None) -> str:
        path = self._path(vol_name)
        try:
            with open(path, "xb") as out:
                out.write(data)
        except BaseException:
            Path(path).unlink(missing_ok=True)
            raise
        if sent is not None:
            sent(len(data), len(data))
        return path

    def owns(self, path: str) -> bool:
        return Path(path).resolve().parent == self.directory

    def delete(self, path: str) -> None:
        if not self.owns(path):
            raise InvalidSpec(f"{path} is not in {self.directory}; refusing to delete it")
        Path(path).unlink(missing_ok=True)

    def describe(self, path: str) -> tuple[int | None, str | None]:
        facts = json.loads(run_qemu_img(["info", "--output=json", "-U", "--", path]))
        backing = facts.get("full-backing-filename") or facts.get("backing-filename")
        return int(facts["virtual-size"]), backing

    def allocation(self, path: str) -> int:
        return os.stat(path).st_blocks * 512

    def backing_users(self, path: str) -> list[str]:
        users = []
        for candidate in self.directory.glob("*.qcow2"):
            if self.describe(str(candidate))[1] == path:
                users.append(str(candidate))
        return users

    def console_log(self, vm_uuid: str) -> str | None:
        return str(self.directory / f"{vm_uuid}.console.log")


def settle_made(made: list[tuple[DiskStore, str]]) -> None:
    """The volumes an operation made are owned by a defined domain now: drop their
    in-flight notes (one change of the record per store, not one per volume)."""
    by_store: dict[int, tuple[DiskStore, list[str]]] = {}
    for store, path in made:
        by_store.setdefault(id(store), (store, []))[1].append(path)
    for store, paths in by_store.values():
        store.settled(*paths)


def remove_made(made: list[tuple[DiskStore, str]]) -> None:
    """Remove the volumes a failed operation made; those that cannot be removed now (the
    daemon is gone) are left to the next connection's sweep (:mod:`inflight`)."""
    for store, path in reversed(made):
        try:
            store.delete(path)
        except AnyvirtError:  # the original error is the one to report
            store.abandoned(path)


def remove_if_unused(link: Link, record: InflightRecord, pool_name: str, vol_name: str) -> bool:
    """Remove a volume an interrupted operation left, unless a domain or another volume
    uses it after all (a define that got through before the daemon died). True once it
    is gone or in use: the in-flight record may forget it."""
    with link.call("volumes left by an interrupted operation") as conn:
        try:
            pool = conn.storagePoolLookupByName(pool_name)
            refresh_pool(pool)
            path = str(pool.storageVolLookupByName(vol_name).path())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_NO_STORAGE_POOL,
                                        libvirt.VIR_ERR_NO_STORAGE_VOL):
                return True  # never made, or removed already
            raise
        for dom in conn.listAllDomains(0):
            if path in referenced_paths(dom.XMLDesc(0), conn):
                return True
    store = PoolStore(link, pool_name, record)
    if not store.backing_users(path):
        store.delete(path)
    return True
