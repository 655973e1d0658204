"""A disk as the guest sees it, read chunk by chunk for a backup, holes never read.

The disks come the way a portable backup gets them
(:meth:`anyvirt.operations.HeldVM.disks`: read in place where the
driver can, else exported), in whatever format the platform keeps: raw,
qcow2, VMDK. ``qemu-img map`` says where the data is; ranges it calls
unallocated or zero are zero chunks, never read and never stored. Where the
data sits uncompressed in the image file (a raw file, an uncompressed qcow2,
a flat VMDK) it is read straight from there, at the offsets the map gives.
Anything else (compressed clusters) is read through a raw view of the image
(``qemu-storage-daemon`` over FUSE), or, where that is missing, a raw
conversion into a temporary file.

Changed-block tracking plugs in here: a driver that can say which extents
changed since a mark it gave for an earlier point implements
:class:`ChangeTracker` and declares ``Capability.CHANGED_BLOCKS`` (libvirt:
persistent qcow2 bitmaps; vSphere: CBT's change ids), and a backup then reads
only those extents and takes every other chunk from the earlier point's index.
Without one, or when its answer is None (the record is lost or invalid), the
backup reads every data extent: a full read, deduplicated.

A running VM is read through :class:`LiveBackup` where the driver offers it
(libvirt's backup job): the platform freezes every disk at one instant and
hands each over as a :class:`LiveDisk` (a read function, where the data is,
a new mark, and what changed since the parent point's mark, or None).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from attrs import frozen

from anyvirt.errors import TaskFailed
from anyvirt.kit import image_maps, qemu_img, raw_view
from anyvirt.model import ExportedDisk
from anyvirt.tasks import Job


@runtime_checkable
class ChangeTracker(Protocol):
    """What a driver offers when its platform records changed blocks."""

    def change_mark(self, vm_id: str, disk_id: str, job: Job) -> str | None:
        """A mark of the disk's state now, to ask about changes since later; None: none."""

    def changed_extents(self, vm_id: str, disk_id: str, since: str,
                        job: Job) -> list[tuple[int, int]] | None:
        """``(offset, length)`` ranges that may have changed since ``since``, or None when
        the platform no longer knows (the record was lost or reset): then a full read."""

    def drop_change_mark(self, vm_id: str, disk_id: str, mark: str, job: Job) -> None:
        """Forget ``mark`` (no later backup builds on it): best effort, never raises."""


@frozen
class RawDisk:
    """One disk's guest bytes: ``size`` of them, data only inside ``extents``."""

    id: str
    size: int
    bus: str | None
    extents: tuple[tuple[int, int], ...]  # (offset, length), sorted, chunk-aligned
    pieces: tuple[tuple[int, int, int], ...]  # (guest offset, length, file offset)
    path: str  # the file the pieces are read from

    def chunks(self, chunk: int) -> Iterator[tuple[int, int, bool]]:
        """(offset, length, may hold data) for every chunk of the disk, in order."""
        return walk_chunks(self.extents, self.size, chunk)

    def read(self, fd: int, offset: int, length: int) -> bytes:
        """The guest bytes [offset, offset+length): pieces from the file, zeros between."""
        end = offset + length
        pieces = list(self._overlapping(offset, end))
        if len(pieces) == 1 and pieces[0][0] <= offset and pieces[0][0] + pieces[0][1] >= end:
            start, _size, where = pieces[0]  # the usual case: one piece holds the whole chunk
            data = os.pread(fd, length, where + (offset - start))
            if len(data) != length:
                raise TaskFailed(f"disk {self.id} ended early: its image changed while read")
            return data
        out = bytearray(length)
        for start, size, where in pieces:
            lo, hi = max(start, offset), min(start + size, end)
            data = os.pread(fd, hi - lo, where + (lo - start))
            if len(data) != hi - lo:
                raise TaskFailed(f"disk {self.id} ended early: its image changed while read")
            out[lo - offset:hi - offset] = data
        return bytes(out)

    def _overlapping(self, offset: int, end: int) -> Iterator[tuple[int, int, int]]:
        import bisect

        starts = [p[0] for p in self.pieces]
        i = max(bisect.bisect_right(starts, offset) - 1, 0)
        while i < len(self.pieces) and self.pieces[i][0] < end:
            start, size, where = self.pieces[i]
            if start + size > offset:
                yield start, size, where
            i += 1


def walk_chunks(extents: Sequence[tuple[int, int]], size: int,
                chunk: int) -> Iterator[tuple[int, int, bool]]:
    """(offset, length, may hold data) for every chunk of a disk of ``size`` bytes whose
    data lies in ``extents``, in order."""
    marks = dirty_chunks(extents, chunk, size)
    for index in range((size + chunk - 1) // chunk):
        offset = index * chunk
        yield offset, min(chunk, size - offset), index in marks


@frozen
class LiveDisk:
    """A running VM's disk as the platform froze it for a backup (libvirt's backup job):
    readable while the driver's ``live_disks`` block runs."""

    id: str
    size: int
    bus: str | None
    extents: tuple[tuple[int, int], ...]  # where the data is (the rest reads as zeros)
    read: Callable[[int, int], bytes]  # (offset, length) -> the guest bytes
    mark: str | None  # the record of this instant, for the next backup's question
    changed: tuple[tuple[int, int], ...] | None  # since the mark asked about; None: unknown

    def chunks(self, chunk: int) -> Iterator[tuple[int, int, bool]]:
        return walk_chunks(self.extents, self.size, chunk)


@runtime_checkable
class LiveBackup(Protocol):
    """What a driver offers when it can back up a running VM at one instant, with its
    changes since an earlier mark (declared with ``Capability.CHANGED_BLOCKS``)."""

    def live_disks(self, vm_id: str, since: Mapping[str, str], job: Job
                   ) -> contextlib.AbstractContextManager[list[LiveDisk]]:
        """The VM's disks frozen now; ``since`` maps a disk id to the mark of the point
        to build on. A disk's ``changed`` is None where that mark is no longer valid."""


def dirty_chunks(changed: Sequence[tuple[int, int]], chunk: int, size: int) -> set[int]:
    """The indexes of the chunks that ``changed`` extents ``(offset, length)`` touch."""
    out: set[int] = set()
    last = max(-(-size // chunk) - 1, 0)
    for offset, length in changed:
        if length <= 0:
            continue
        first, end = offset // chunk, (offset + length - 1) // chunk
        out.update(range(max(first, 0), min(end, last) + 1))
    return out


@contextlib.contextmanager
def open_raw(disk: ExportedDisk, chunk: int, scratch: Path, job: Job) -> Iterator[RawDisk]:
    """``disk`` as a :class:`RawDisk`, for the block. The image is checked like any image
    from elsewhere first (a guest's disk is data: no backing file is ever followed)."""
    found = qemu_img.inspect_untrusted(disk.path, format=disk.format, job=job)
    size = max(found.virtual_size, disk.size_bytes)
    mapped = image_maps.data_map(disk.path, disk.format, granularity=chunk, force_share=True,
                               job=job)
    if mapped.layout is not None and found.virtual_size == size:
        yield RawDisk(id=disk.id, size=size, bus=disk.bus, extents=tuple(mapped.extents),
                      pieces=tuple(mapped.layout), path=disk.path)
        return
    with _decoded(disk, size, scratch, job) as raw_path:
        pieces = tuple((start, length, start) for start, length in mapped.extents)
        yield RawDisk(id=disk.id, size=size, bus=disk.bus, extents=tuple(mapped.extents),
                      pieces=pieces, path=str(raw_path))


@contextlib.contextmanager
def _decoded(disk: ExportedDisk, size: int, scratch: Path, job: Job) -> Iterator[Path]:
    """A raw file of the image's guest bytes: a FUSE view where possible, else a copy."""
    if raw_view.available() and size == qemu_img.info(disk.path, format=disk.format).virtual_size:
        with raw_view.raw_view(disk.path, disk.format, size, job=job) as view:
            yield view
        return
    out = scratch / f"{os.getpid()}-{abs(hash(disk.path))}.raw"
    try:
        qemu_img.convert(disk.path, out, source_format=disk.format, format="raw", job=job,
                         timeout=qemu_img.CONVERT_TIMEOUT)
        yield out
    finally:
        out.unlink(missing_ok=True)


__all__ = ["ChangeTracker", "LiveBackup", "LiveDisk", "RawDisk", "dirty_chunks", "open_raw",
           "walk_chunks"]
