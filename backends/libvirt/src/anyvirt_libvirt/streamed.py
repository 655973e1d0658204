"""A stopped VM's disks read straight from the daemon's pools, as raw views, no copy.

A daemon whose files this process cannot read (a remote one) used to have every
volume downloaded whole into a temporary file, and a linked clone's chain
converted into one more, before the target's import could start. Here each volume
of a disk's chain is served to ``qemu-storage-daemon`` as an NBD export whose reads
are ``virStorageVolDownload`` ranges (:mod:`anyvirt.kit.nbd_server`), and the
daemon decodes the chain (qcow2, overlays flattened on the fly) into a FUSE raw
view (:mod:`anyvirt.kit.raw_view`). The import reads that view where it holds data:
only the image's metadata and its data clusters cross the wire, once, while the
import runs.

Reads go in download windows: the daemon pushes a whole window at once, so a window
cut short by a seek (qcow2 metadata lies elsewhere) is wasted wire. After a seek the
window is exactly the read asked for; it doubles, up to :data:`WINDOW`, while the
reads continue where the last window ended. A sequential run of data then costs a
few round trips, metadata reads waste nothing, and a run cut short wastes less than
what it had read.
"""

from __future__ import annotations

import contextlib
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import libvirt

from anyvirt.errors import InvalidSpec, TaskFailed
from anyvirt.kit import nbd_server, raw_view
from anyvirt.model import ExportedDisk
from anyvirt.tasks import Job
from anyvirt_libvirt.export import copyable_disks
from anyvirt_libvirt.site import Site

WINDOW = 16 * 1024 * 1024
FORMATS = ("raw", "qcow2")


class VolumeReader:
    """``read_at`` over one pool volume's file, by download windows."""

    def __init__(self, site: Site, path: str, size: int) -> None:
        self.site, self.path, self.size = site, path, size
        self.read_bytes = 0
        self._lock = threading.Lock()
        self._stream: libvirt.virStream | None = None
        self._at = 0  # the file offset the open stream delivers next
        self._left = 0  # bytes the open stream still owes
        self._window = 0  # the size of the last window: the next doubles it when reads run on

    def read_at(self, offset: int, length: int) -> bytes:
        # libvirt's errors leave typed (ConnectionFailed when the daemon is gone)
        with self._lock, self.site.link.call(f"downloading volume {self.path}"):
            parts: list[bytes] = []
            while length:
                if self._stream is None or self._at != offset or not self._left:
                    self._open(offset, length)
                assert self._stream is not None
                chunk = self._stream.recv(min(length, self._left, 1 << 20))
                if isinstance(chunk, int) or not chunk:
                    raise TaskFailed(f"the download of volume {self.path} ended at byte "
                                     f"{self._at}, before the {self.size} it holds")
                parts.append(chunk)
                self._at += len(chunk)
                self._left -= len(chunk)
                offset += len(chunk)
                length -= len(chunk)
                self.read_bytes += len(chunk)
                if not self._left:
                    self._stream.finish()
                    self._stream = None
            return b"".join(parts)

    def _open(self, offset: int, length: int) -> None:
        running_on = self._stream is None and self._at == offset
        self.close()
        self._window = min(max(self._window * 2, length), WINDOW) if running_on else length
        window = min(self._window, self.size - offset)
        what = f"downloading volume {self.path}"
        with self.site.link.call(what) as conn:
            vol = conn.storageVolLookupByPath(self.path)
            stream = conn.newStream(0)
            vol.download(stream, offset, window, 0)
        self._stream, self._at, self._left = stream, offset, window

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._stream.abort()
            self._stream = None


def _layer(site: Site, path: str) -> tuple[int, str]:
    """(file length, format) of a pool volume, as its pool records them (never probed:
    a raw disk whose guest wrote a qcow2 header stays raw)."""
    with site.link.call(f"reading volume {path}") as conn:
        vol = conn.storageVolLookupByPath(path)
        physical = int(vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2])
        xml = vol.XMLDesc(0)
    found = ET.fromstring(xml).find("./target/format")  # noqa: S314 - from the daemon
    fmt = found.get("type", "raw") if found is not None else "raw"
    if fmt not in FORMATS:
        raise InvalidSpec(f"volume {path} is {fmt}: only raw and qcow2 volumes are streamed")
    return physical, fmt


@contextlib.contextmanager
def streamed_disks(site: Site, vm_id: str, job: Job) -> Iterator[list[ExportedDisk] | None]:
    """The VM's disks as raw views read from the daemon while the block lasts; None (and
    nothing started) where some disk is not a pool volume or this machine has no raw
    views: the caller exports as before."""
    if site.embed_root is not None or not raw_view.available():
        yield None
        return
    _name, info = copyable_disks(site, vm_id, "stream disks")
    chains: list[list[tuple[str, int, str]]] = []
    capacities: list[int] = []  # the guest-visible size of each disk, as its pool says
    for disk in info.disks:
        job.check()
        if not disk.path:
            continue
        chain: list[tuple[str, int, str]] = []
        current: str | None = disk.path
        while current:
            if site.store_of(current) is None:
                yield None
                return
            physical, fmt = _layer(site, current)
            chain.append((current, physical, fmt))
            current = site.volume_facts(current)[1]
        capacities.append(site.volume_facts(disk.path)[0] or 0)
        chains.append(chain)
    readers: dict[str, VolumeReader] = {}
    exports: dict[str, nbd_server.Export] = {}
    for index, chain in enumerate(chains):
        for depth, (path, physical, _fmt) in enumerate(chain):
            key = f"disk{index}-layer{depth}"
            readers[key] = VolumeReader(site, path, physical)
            exports[key] = nbd_server.Export(size=physical, read_at=readers[key].read_at)
    disks = [d for d in info.disks if d.path]
    try:
        with nbd_server.NbdServer(exports) as server, contextlib.ExitStack() as views:
            out = []
            for index, (disk, chain, size) in enumerate(zip(disks, chains, capacities,
                                                            strict=True)):
                layers = [(f"disk{index}-layer{depth}", fmt)
                          for depth, (_p, _s, fmt) in enumerate(chain)]
                view = views.enter_context(raw_view.raw_view_of_nbd_chain(
                    server.socket_path, layers, size, job=job))
                out.append(ExportedDisk(id=disk.id or f"disk{index}", path=str(view),
                                        format="raw", size_bytes=size,
                                        bus=disk.bus))
            try:
                yield out
            except BaseException as failure:
                # a read of the source that failed shows as EIO in the import: say why
                if server.errors and not isinstance(failure, GeneratorExit):
                    raise server.errors[0] from failure
                raise
    finally:
        for reader in readers.values():
            reader.close()
