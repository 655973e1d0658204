"""Disks served from anywhere as raw views that an import reads: the one way every
backend streams a VM's disks to a target without a staging copy.

A backend gives its disks' images as NBD exports (:mod:`anyvirt.kit.nbd_server`: a
``read_at`` over whatever reaches the bytes: a remote daemon's volume windows, a
datastore's ranged GETs, a node's files over SSH, a chain of VDI maps) and says which
exports make up each disk, top layer first; this serves them on one private socket,
opens a raw view of each disk (:mod:`anyvirt.kit.raw_view`) and yields the views as
:class:`~anyvirt.model.ExportedDisk` files. A read that failed inside the server shows
in the import only as EIO: the import's failure is replaced by that read's own error,
the cause a user can act on.

A disk that is one raw layer hands out its guest bytes as they are: whatever reads its
view (an import of any platform), the export's reads feed the digest a move asked for
on the view (:func:`anyvirt.kit.extent_digest.tapping`), so the move's verification
need not read a source served from afar a second time. A reader that feeds the digest
itself takes it over (:meth:`~anyvirt.kit.extent_digest.OutboundDigest.claim`).

A disk with a qcow2 layer (a qcow2 volume, a linked clone's chain) is mapped before its
view opens: each layer alone (``qemu-img map`` through its export, its backing none:
only the layers' metadata is read), the maps composed into where each run of guest
data sits in which layer (:func:`anyvirt.kit.mapped_sources.chain_pieces`). The view's
:class:`~anyvirt.kit.mapped_sources.MappedSource` is registered from that (a reader may
read the data there, past the decoder), and the decoder's reads of the layers' data
are, through the same pieces, guest bytes at known offsets: they feed the move's digest
as a raw layer's do, put back in order first (:class:`~anyvirt.kit.extent_digest.
InOrder`). A chain whose map does not place all its data (compressed or encrypted
clusters) is served as before, its digest taken by reading the source again.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

from attrs import evolve, frozen

from anyvirt.errors import AnyvirtError, InvalidSpec
from anyvirt.kit import (
    extent_digest,
    image_maps,
    mapped_sources,
    nbd_server,
    qemu_img,
    raw_view,
    view_records,
)
from anyvirt.model import ExportedDisk
from anyvirt.tasks import Job


def layer_export(disk_index: int, depth: int) -> str:
    """The export name of layer ``depth`` (0: the top) of disk ``disk_index``."""
    return f"disk{disk_index}-layer{depth}"


@frozen
class ServedDisk:
    """One disk: its layers as ``(export name, format)`` from the top down to its base (the
    formats from the platform's record, never probed), and its guest-visible size."""

    id: str
    layers: Sequence[tuple[str, str]]
    size: int
    bus: str | None = None


class _Outbound:
    """An export's reads handed on to the digest a move took on its disk's view, once the
    view is there (``key``) and the move asked for one."""

    def __init__(self, read_at: Callable[[int, int], nbd_server.Data]) -> None:
        self.inner = read_at
        self.key: str | None = None
        self._lock = threading.Lock()
        self._tap: extent_digest.OutboundDigest | None = None
        self._pass: int | None = None

    def read_at(self, offset: int, length: int) -> nbd_server.Data:
        data = self.inner(offset, length)
        tap = extent_digest.tap_at(self.key) if self.key is not None else None
        if tap is not None:
            with self._lock:
                # a read of the first byte again: a new reader (the import after a probe of
                # the header) starts a new pass
                if tap is not self._tap or (offset == 0 and self._pass is not None):
                    self._tap, self._pass = tap, tap.claim()
                within = self._pass
            if within is not None:
                tap.add(offset, data, within=within)
        return data


class _ChainOutbound:
    """A chain's layers' reads handed on, as the guest bytes they are (:attr:`pieces`), to
    the digest a move took on its disk's view, once the view is there (``key``) and the
    move asked for one; in guest order (:class:`~anyvirt.kit.extent_digest.InOrder`)."""

    def __init__(self, pieces: Sequence[mapped_sources.Piece], layers: int) -> None:
        self.pieces = pieces
        self.key: str | None = None
        self._lock = threading.Lock()
        # each layer's pieces by file offset: (file offset, length, guest offset)
        self._by_host: list[list[tuple[int, int, int]]] = [[] for _ in range(layers)]
        for guest, length, layer, host in pieces:
            self._by_host[layer].append((host, length, guest))
        for found in self._by_host:
            found.sort()
        self._first = pieces[0][0] if pieces else None
        self._tap: extent_digest.OutboundDigest | None = None
        self._feed: extent_digest.InOrder | None = None

    def reader(self, layer: int, read_at: Callable[[int, int], nbd_server.Data]
               ) -> Callable[[int, int], nbd_server.Data]:
        def read(offset: int, length: int) -> nbd_server.Data:
            data = read_at(offset, length)
            tap = extent_digest.tap_at(self.key) if self.key is not None else None
            if tap is not None:
                self._saw(tap, layer, offset, data)
            return data
        return read

    def _saw(self, tap: extent_digest.OutboundDigest, layer: int, offset: int,
             data: nbd_server.Data) -> None:
        found = self._by_host[layer]
        index = max(0, bisect.bisect_right(found, (offset, 1 << 63)) - 1)
        view = memoryview(data)
        with self._lock:
            for host, length, guest in itertools.islice(found, index, None):
                if host >= offset + len(view):
                    break
                low, high = max(host, offset), min(host + length, offset + len(view))
                if low >= high:
                    continue
                at = guest + low - host
                feed = self._feed
                # a new reader (the import after a probe) starts at the first data byte
                # again: a new pass; so does a new digest
                if tap is not self._tap or (at == self._first and feed is not None
                                            and feed.started):
                    feed = self._claim(tap)
                if feed is not None:
                    feed.put(at, view[low - offset:high - offset])

    def _claim(self, tap: extent_digest.OutboundDigest) -> extent_digest.InOrder | None:
        self._tap, self._feed = tap, None
        within = tap.claim()
        if within is None:
            return None
        spans = [(guest, length) for guest, length, _layer, _host in self.pieces]
        feed = extent_digest.InOrder(
            spans, lambda at, data: tap.add(at, data, within=within))
        tap.require(within, lambda: self._complete(feed))
        self._feed = feed
        return feed

    def _complete(self, feed: extent_digest.InOrder) -> bool:
        with self._lock:
            return feed.complete()


def _chain_pieces(exports: Mapping[str, nbd_server.Export], disks: Sequence[ServedDisk],
                  job: Job | None) -> dict[str, list[mapped_sources.Piece]]:
    """Where the data of each disk with a qcow2 layer sits in its layers (by the disk's
    top export; left out where some sits nowhere readable directly), mapped through the
    exports before the views open: each layer alone, so only its metadata is read (a
    qcow2's tables: about 128 KiB a GiB)."""
    chains = [disk for disk in disks if any(fmt != "raw" for _name, fmt in disk.layers)]
    if not chains:
        return {}
    out: dict[str, list[mapped_sources.Piece]] = {}
    with nbd_server.NbdServer(exports) as server:
        try:
            for disk in chains:
                pieces = mapped_sources.chain_pieces([
                    image_maps.map_ranges(_layer_spec(str(server.socket_path), name, fmt), job=job)
                    for name, fmt in disk.layers])
                if pieces is not None:
                    out[disk.layers[0][0]] = pieces
        except AnyvirtError:
            server.raise_first_error()  # the read that failed, not qemu-img's account of it
            raise
    return out


def _layer_spec(socket_path: str, export: str, fmt: str) -> dict[str, object]:
    """QEMU's block options for one layer, an NBD export, alone: a qcow2's backing none
    (each layer is mapped by itself; what the chain reads is composed from the maps)."""
    spec: dict[str, object] = {"driver": fmt, "file": {
        "driver": "nbd", "export": export, "server": {"type": "unix", "path": socket_path}}}
    if fmt == "qcow2":
        spec["backing"] = None
    return spec


def _refuse_data_files(exports: Mapping[str, nbd_server.Export],
                       disks: Sequence[ServedDisk]) -> None:
    for disk in disks:
        for depth, (name, fmt) in enumerate(disk.layers):
            if fmt != "qcow2":
                continue
            export = exports[name]
            header = bytes(export.read_at(0, min(qemu_img.QCOW2_HEADER, export.size)))
            if qemu_img.qcow2_data_file_named(header):
                raise InvalidSpec(f"layer {depth} of disk {disk.id} keeps its data in an "
                                  "external data file: refused (its name is the image's "
                                  "word, and would be opened here)")


@contextlib.contextmanager
def served_views(exports: Mapping[str, nbd_server.Export], disks: Sequence[ServedDisk],
                 job: Job | None = None) -> Iterator[list[ExportedDisk]]:
    """``disks`` as raw views of ``exports`` for as long as the block lasts. A qcow2 layer
    whose header names an external data file is refused (``InvalidSpec``) before anything
    opens it: QEMU would read that file, named by the image, on this machine."""
    _refuse_data_files(exports, disks)
    outbound = {disk.layers[0][0]: _Outbound(exports[disk.layers[0][0]].read_at)
                for disk in disks if len(disk.layers) == 1 and disk.layers[0][1] == "raw"}
    mapped = _chain_pieces(exports, disks, job)
    chains = {disk.layers[0][0]: _ChainOutbound(mapped[disk.layers[0][0]], len(disk.layers))
              for disk in disks if disk.layers[0][0] in mapped}
    served = {name: evolve(export, read_at=outbound[name].read_at) if name in outbound else export
              for name, export in exports.items()}
    for disk in disks:
        if disk.layers[0][0] in chains:
            chain = chains[disk.layers[0][0]]
            for depth, (name, _fmt) in enumerate(disk.layers):
                served[name] = evolve(served[name], read_at=chain.reader(depth, served[name].read_at))
    with nbd_server.NbdServer(served) as server, contextlib.ExitStack() as views:
        out = []
        sources: dict[str, mapped_sources.MappedSource] = {}
        for disk in disks:
            top = disk.layers[0][0]
            view = views.enter_context(raw_view.raw_view_of_nbd_chain(
                server.socket_path, disk.layers, disk.size, job=job))
            key = view_records.resolved(view)  # here, where no read is under way
            if top in outbound:
                outbound[top].key = key
            if top in chains:
                chains[top].key = key
                # read past the decoder straight from the layers, not fed to the digest
                # from here: such a reader feeds it itself
                sources[str(view)] = mapped_sources.MappedSource(
                    mapped[top], [exports[name].read_at for name, _fmt in disk.layers])
            out.append(ExportedDisk(id=disk.id, format="raw", size_bytes=disk.size,
                                    bus=disk.bus, path=str(view)))
        views.enter_context(mapped_sources.registered(sources))
        try:
            yield out
        except BaseException as failure:
            if server.errors and not isinstance(failure, GeneratorExit):
                raise server.errors[0] from failure  # why the import could not read
            raise


__all__ = ["ServedDisk", "layer_export", "served_views"]
