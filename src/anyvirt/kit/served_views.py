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
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

from attrs import evolve, frozen

from anyvirt.kit import extent_digest, nbd_server, raw_view, view_records
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


@contextlib.contextmanager
def served_views(exports: Mapping[str, nbd_server.Export], disks: Sequence[ServedDisk],
                 job: Job | None = None) -> Iterator[list[ExportedDisk]]:
    """``disks`` as raw views of ``exports`` for as long as the block lasts."""
    outbound = {disk.layers[0][0]: _Outbound(exports[disk.layers[0][0]].read_at)
                for disk in disks if len(disk.layers) == 1 and disk.layers[0][1] == "raw"}
    served = {name: evolve(export, read_at=outbound[name].read_at) if name in outbound else export
              for name, export in exports.items()}
    with nbd_server.NbdServer(served) as server, contextlib.ExitStack() as views:
        out = []
        for disk in disks:
            view = views.enter_context(raw_view.raw_view_of_nbd_chain(
                server.socket_path, disk.layers, disk.size, job=job))
            if disk.layers[0][0] in outbound:  # resolved here, where no read is under way
                outbound[disk.layers[0][0]].key = view_records.resolved(view)
            out.append(ExportedDisk(id=disk.id, format="raw", size_bytes=disk.size,
                                    bus=disk.bus, path=str(view)))
        try:
            yield out
        except BaseException as failure:
            if server.errors and not isinstance(failure, GeneratorExit):
                raise server.errors[0] from failure  # why the import could not read
            raise


__all__ = ["ServedDisk", "layer_export", "served_views"]
