"""A stopped VM's disks read straight from the daemon's pools, as raw views, no copy.

A daemon whose files this process cannot read (a remote one) used to have every
volume downloaded whole into a temporary file, and a linked clone's chain
converted into one more, before the target's import could start. Here each volume
of a disk's chain is served to ``qemu-storage-daemon`` as an NBD export whose reads
are ``virStorageVolDownload`` ranges (:mod:`anyvirt.kit.nbd_server`), and the
daemon decodes the chain (qcow2, overlays flattened on the fly) into a FUSE raw
view (:mod:`anyvirt.kit.raw_view`). The import reads that view where it holds data:
only the image's metadata and its data clusters cross the wire, once, while the
import runs. Where each layer's map (``qemu-img map`` through the same exports) says
where the chain's data sits in the files, the import reads it there, straight from the
layers' windows (:mod:`anyvirt.kit.mapped_sources`): the daemon and FUSE then serve the
view's size and map only, and the data crosses this machine once rather than three
more times (on 2 cores shared by the whole pipeline, that was a fifth of its CPU).

Reads go in download windows (:mod:`anyvirt.kit.windowed_reads`): a seek wastes
nothing, a sequential run of data costs a few round trips, and reads that arrive out
of order inside a window are served from it, not by aborting it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator

import libvirt

from anyvirt.errors import InvalidSpec
from anyvirt.kit import nbd_server, raw_view
from anyvirt.kit.served_views import ServedDisk, layer_export, served_views
from anyvirt.kit.windowed_reads import WindowedReader
from anyvirt.model import ExportedDisk
from anyvirt.tasks import Job
from anyvirt_libvirt.export import copyable_disks
from anyvirt_libvirt.site import Site

WINDOW = 16 * 1024 * 1024
REMEMBER = 4 * 1024 * 1024  # small reads kept per volume: the L2 tables of 32 GiB of qcow2
FORMATS = ("raw", "qcow2")


@functools.cache
def _stream_recv() -> Callable[[int, memoryview], int] | None:
    """``virStreamRecv(stream pointer, buffer)`` into a caller's buffer, or None where the
    library cannot be reached so.

    The binding's ``recv`` receives into a buffer it allocates and returns a copy of it as
    bytes: for a download that is two copies of every byte more than the library's own
    (and the reader joined the 256 KiB packets into its reads once more). The C call itself
    takes any buffer; it is reached through the library the binding has loaded already
    (its soname: no search, no second copy of the library). The binding's errors stay: a
    failure raises its libvirtError, which reads the thread's last error as the binding
    does. Looked up on first use, not at import: the CLI imports this module."""
    try:
        recv = ctypes.CDLL("libvirt.so.0").virStreamRecv
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    recv.restype = ctypes.c_int

    def recv_into(stream: int, buffer: memoryview) -> int:
        target = (ctypes.c_char * len(buffer)).from_buffer(buffer)
        got = int(recv(stream, target, len(buffer)))
        if got < 0:
            raise libvirt.libvirtError("virStreamRecv() failed")
        return got
    return recv_into


#: the C pointer inside the binding's capsule (a function of its own: ctypes.pythonapi's
#: shared one is not retyped under other code's feet)
_CAPSULE_POINTER = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))


def _stream_pointer(stream: libvirt.virStream) -> int | None:
    """The ``virStreamPtr`` of the binding's stream, or None where the binding keeps it
    otherwise than this one does (then the binding's own ``recv`` is used)."""
    try:
        pointer = _CAPSULE_POINTER(stream._o, b"virStreamPtr")
    except (AttributeError, TypeError, ValueError):
        return None
    return int(pointer) if pointer else None


class _Download:
    """One ``virStorageVolDownload`` window (a :class:`anyvirt.kit.windowed_reads.Window`)."""

    def __init__(self, stream: libvirt.virStream) -> None:
        self.stream = stream

    def read(self, size: int) -> bytes:
        chunk = self.stream.recv(size)
        return b"" if isinstance(chunk, int) else chunk

    def finish(self) -> None:
        self.stream.finish()

    def abort(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self.stream.abort()


class _DownloadInto(_Download):
    """A window received straight into the reader's buffer (an
    :class:`anyvirt.kit.windowed_reads.IntoWindow`)."""

    def __init__(self, stream: libvirt.virStream, pointer: int,
                 recv_into: Callable[[int, memoryview], int]) -> None:
        super().__init__(stream)  # holds the binding's stream, so the pointer stays valid
        self.pointer, self.recv_into = pointer, recv_into

    def readinto(self, buffer: memoryview) -> int:
        return self.recv_into(self.pointer, buffer)


def _window(stream: libvirt.virStream) -> _Download:
    recv_into = _stream_recv()
    pointer = _stream_pointer(stream) if recv_into is not None else None
    if recv_into is None or pointer is None:
        return _Download(stream)
    return _DownloadInto(stream, pointer, recv_into)


def volume_reader(site: Site, path: str, size: int) -> WindowedReader:
    """``read_at`` over one pool volume's file, in download windows."""
    what = f"downloading volume {path}"

    def open_window(offset: int, length: int) -> _Download:
        with site.link.call(what) as conn:
            stream = conn.newStream(0)
            conn.storageVolLookupByPath(path).download(stream, offset, length, 0)
        return _window(stream)

    # the daemon sends a window whole even when it is aborted (the client library queues
    # what comes): a gap read through costs no more wire than an abort, and serves the
    # import's reads that come out of order; a qcow2's tables, read by the chain's map and
    # again by the view's decoder, come once
    return WindowedReader(open_window, size, what, max_window=WINDOW, read_through=WINDOW,
                          remember=REMEMBER)


def _typed(site: Site, reader: WindowedReader) -> Callable[[int, int], bytes]:
    """``reader.read_at`` with libvirt's errors typed (``ConnectionFailed`` when the daemon
    is gone), as the NBD server records them."""
    def read_at(offset: int, length: int) -> bytes:
        with site.link.call(reader.what):
            return reader.read_at(offset, length)
    return read_at


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
    readers: dict[str, WindowedReader] = {}
    exports: dict[str, nbd_server.Export] = {}
    for index, chain in enumerate(chains):
        for depth, (path, physical, _fmt) in enumerate(chain):
            key = layer_export(index, depth)
            readers[key] = volume_reader(site, path, physical)
            exports[key] = nbd_server.Export(size=physical, read_at=_typed(site, readers[key]))
    disks = [d for d in info.disks if d.path]
    served = [ServedDisk(disk.id or f"disk{index}",
                         [(layer_export(index, depth), fmt)
                          for depth, (_p, _s, fmt) in enumerate(chain)], size, disk.bus)
              for index, (disk, chain, size) in enumerate(zip(disks, chains, capacities,
                                                              strict=True))]
    try:
        # served_views maps each chain through the exports and registers where its data
        # sits: the import then reads the data from the layers' windows itself
        with served_views(exports, served, job) as out:
            yield out
    finally:
        for reader in readers.values():
            reader.close()
