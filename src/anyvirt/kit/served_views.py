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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

from attrs import frozen

from anyvirt.kit import nbd_server, raw_view
from anyvirt.model import ExportedDisk
from anyvirt.tasks import Job


@frozen
class ServedDisk:
    """One disk: its layers as ``(export name, format)`` from the top down to its base (the
    formats from the platform's record, never probed), and its guest-visible size."""

    id: str
    layers: Sequence[tuple[str, str]]
    size: int
    bus: str | None = None


@contextlib.contextmanager
def served_views(exports: Mapping[str, nbd_server.Export], disks: Sequence[ServedDisk],
                 job: Job | None = None) -> Iterator[list[ExportedDisk]]:
    """``disks`` as raw views of ``exports`` for as long as the block lasts."""
    with nbd_server.NbdServer(exports) as server, contextlib.ExitStack() as views:
        out = [ExportedDisk(id=disk.id, format="raw", size_bytes=disk.size, bus=disk.bus,
                            path=str(views.enter_context(raw_view.raw_view_of_nbd_chain(
                                server.socket_path, disk.layers, disk.size, job=job))))
               for disk in disks]
        try:
            yield out
        except BaseException as failure:
            if server.errors and not isinstance(failure, GeneratorExit):
                raise server.errors[0] from failure  # why the import could not read
            raise


__all__ = ["ServedDisk", "served_views"]
