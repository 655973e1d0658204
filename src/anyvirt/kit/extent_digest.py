"""The sha256 of chosen byte ranges of a disk: what a move's verification compares.

A verified move used to read the whole target disk back, zeros included (2x the
allocated data on the wire for a half-empty disk). Hashing only the ranges the
source holds data in, on both sides, reads each side's data once: the source's
from its local image, the target's through the target driver's ranged reads.

The digest is over the ranges' bytes concatenated in order (the ranges are
sorted and do not overlap), so both sides agree without sending ranges apart.
A range's unmapped parts (the widening of a qcow2 cluster map to the read
granularity) read as the zeros the guest sees.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence

from attrs import frozen

from anyvirt.errors import InvalidSpec, TaskFailed
from anyvirt.kit import qemu_img, streams
from anyvirt.kit.view_records import ViewRecord
from anyvirt.tasks import Job

#: ranges are widened to this: a short list of large reads (one HTTP request each on
#: a datastore) costs less than exact cluster runs, and the zeros they add are few
GRANULARITY = 1024 * 1024


@frozen
class RangeDigest:
    """sha256 of ``ranges``' bytes in order; ``bytes``: how many were hashed;
    ``stored_bytes``: the length the side holding the disk reports it stored (None when
    it does not say)."""

    sha256: str
    bytes: int
    stored_bytes: int | None = None


def checked_ranges(ranges: Sequence[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """``ranges`` as ``(offset, length)``, refused unless sorted, disjoint, non-empty and
    inside a disk of ``size`` bytes: a wrong list must fail, not hash something else."""
    out: list[tuple[int, int]] = []
    end = 0
    for offset, length in ranges:
        if offset < end or length <= 0 or offset + length > size:
            raise InvalidSpec(f"byte range ({offset}, {length}) is out of order, empty or "
                              f"outside the {size}-byte disk")
        out.append((offset, length))
        end = offset + length
    return out


def data_ranges(path: str, format: str, size: int, job: Job | None = None
                ) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]] | None:
    """The ranges of an image holding data (widened to :data:`GRANULARITY`, clipped to
    the disk) and where that data sits in the file, or None when some of it sits
    nowhere readable directly (compressed clusters): then the caller reads everything."""
    found = qemu_img.data_map(path, format, granularity=GRANULARITY, job=job)
    if found.layout is None:
        return None
    ranges = [(o, min(o + n, size) - o) for o, n in found.extents if o < size]
    return ranges, found.layout


def image_digest(path: str, layout: Sequence[tuple[int, int, int]],
                 ranges: Sequence[tuple[int, int]], job: Job | None = None, *,
                 stop: threading.Event | None = None) -> RangeDigest:
    """The digest of ``ranges`` of the guest-visible disk of a local image whose data sits
    at ``layout`` (``(guest offset, length, file offset)`` pieces in guest order). ``stop``
    set ends it early (``TaskFailed``): the other side of a comparison failed."""
    digest = hashlib.sha256()
    count = 0
    with open(path, "rb") as handle:
        for chunk in _guest_bytes(handle.fileno(), layout, ranges):
            if job is not None:
                job.check()
            if stop is not None and stop.is_set():
                raise TaskFailed("hashing the source's data ranges stopped: the target's failed")
            digest.update(chunk)
            count += len(chunk)
    return RangeDigest(sha256=digest.hexdigest(), bytes=count, stored_bytes=None)


def _guest_bytes(fd: int, layout: Sequence[tuple[int, int, int]],
                 ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
    """The bytes of ``ranges`` in order, in pieces of at most one chunk: mapped pieces
    read from the file, the rest zeros."""
    zeros = bytes(streams.CHUNK)
    piece = 0
    for start, length in ranges:
        offset, end = start, start + length
        while offset < end:
            while piece < len(layout) and layout[piece][0] + layout[piece][1] <= offset:
                piece += 1
            if piece < len(layout) and layout[piece][0] <= offset:
                guest, size, where = layout[piece]
                step = min(end, guest + size, offset + streams.CHUNK) - offset
                data = os.pread(fd, step, where + offset - guest)
                if len(data) != step:
                    raise TaskFailed(f"the image ended at byte {where + offset - guest} where "
                                     "its map says data lies")
                yield data
            else:
                upto = layout[piece][0] if piece < len(layout) else end
                step = min(end, upto, offset + streams.CHUNK) - offset
                yield zeros[:step]
            offset += step


def merged(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(offset, length)`` ranges in order with touching ones joined: two lists that
    cover the same bytes compare equal."""
    out: list[tuple[int, int]] = []
    for offset, length in ranges:
        if out and out[-1][0] + out[-1][1] == offset:
            out[-1] = (out[-1][0], out[-1][1] + length)
        else:
            out.append((offset, length))
    return out


@frozen
class TakenDigest:
    """What an :class:`OutboundDigest` pass saw: the :data:`GRANULARITY` blocks it was
    given data in (merged ranges, clipped to the disk) and their digest."""

    ranges: tuple[tuple[int, int], ...]
    digest: RangeDigest


class OutboundDigest:
    """The digest of a disk's data ranges, taken from the bytes a reader of the disk got,
    in order, as it reads them. A range is every :data:`GRANULARITY` block any byte was
    read in (the widening :func:`data_ranges` does); what was not read inside it is
    hashed as zeros, as the map that steered the reader says the guest sees there.

    A pass is :meth:`begin`, :meth:`add` in increasing offsets, :meth:`end`; ``taken``
    is the last whole pass (a restarted reader, a retried upload, starts a new one). A
    read out of order spoils the pass: it leaves ``taken`` as it was.

    The source's side of a stream (the bytes a served view's export hands out) may feed
    the digest instead, when no reader does: it claims a pass (:meth:`claim`), again when
    a new reader starts at the disk's first byte (the import after a probe of the
    header), and adds ``within`` it; a reader's :meth:`begin` takes the digest over for
    good (the claimed pass's adds stop counting). Such a feeder never knows the copy's
    last read: whoever knows the copy is done calls :meth:`end`, and no claim follows a
    pass taken whole (a later probe of the source is no copy)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken: TakenDigest | None = None
        self._lock = threading.Lock()
        self._open = False
        self._passes = 0  # passes begun: a claimed pass is the one its number still names
        self._read = False  # a reader began a pass: the source's side feeds no more
        self._begin()

    def _begin(self) -> None:
        self._hasher = hashlib.sha256()
        self._count = 0
        self._ranges: list[tuple[int, int]] = []
        self._at = 0  # hashed up to here
        self._block_end = 0  # the end of the blocks the current range holds so far

    def begin(self) -> None:
        with self._lock:
            self._begin()
            self._open = True
            self._passes += 1
            self._read = True

    def claim(self) -> int | None:
        """Begin a pass fed from the source's side, unless a reader ever began one or a
        pass was taken whole, and return its number for :meth:`add`'s ``within``; None:
        that pass counts."""
        with self._lock:
            if self._read or self.taken is not None:
                return None
            self._begin()
            self._open = True
            self._passes += 1
            return self._passes

    def add(self, offset: int, data: bytes | bytearray | memoryview, *, within: int | None = None) -> None:
        """Hash ``data`` read at ``offset``; with ``within``, only while the pass of that
        number (a :meth:`claim`) is the one under way."""
        with self._lock:
            if not self._open or (within is not None and within != self._passes):
                return
            length = min(len(data), self.size - offset)
            if length <= 0:
                return
            if offset < self._at:
                self._open = False  # out of order: nothing this pass says is kept
                return
            if offset >= self._block_end:  # a new block: the last range ends first
                self._zeros(self._block_end)
                start = offset // GRANULARITY * GRANULARITY
                if not self._ranges or start != self._block_end:
                    self._ranges.append((start, 0))
                self._at = start
            self._zeros(offset)
            self._hasher.update(data[:length])
            self._count += length
            self._at = offset + length
            self._block_end = min(-(-self._at // GRANULARITY) * GRANULARITY, self.size)
            first = self._ranges[-1][0]
            self._ranges[-1] = (first, self._block_end - first)

    def end(self) -> None:
        with self._lock:
            if not self._open:
                return
            self._zeros(self._block_end)
            self._open = False
            self.taken = TakenDigest(
                ranges=tuple(self._ranges),
                digest=RangeDigest(sha256=self._hasher.hexdigest(), bytes=self._count))

    def _zeros(self, upto: int) -> None:
        zeros = memoryview(_ZEROS)
        while self._at < upto:
            step = min(len(zeros), upto - self._at)
            self._hasher.update(zeros[:step])
            self._count += step
            self._at += step


_ZEROS = bytes(GRANULARITY)
#: the digests moves asked for, by the path of the disk their readers read
TAPS: ViewRecord[OutboundDigest] = ViewRecord()


@contextlib.contextmanager
def tapping(sizes: Mapping[str, int]) -> Iterator[dict[str, OutboundDigest]]:
    """An :class:`OutboundDigest` for each disk ``path -> size`` while the block lasts:
    the kit's readers of those files (:class:`anyvirt.kit.stream_vmdk.
    StreamOptimizedEncoder`) feed them. A path another caller taps already gets none
    here (its reads are that caller's pass): its digest is taken by reading it again."""
    with TAPS.recorded({path: OutboundDigest(size) for path, size in sizes.items()}) as taps:
        yield taps


def tap_for(path: str | os.PathLike[str]) -> OutboundDigest | None:
    """The digest to feed with what is read from ``path``, if someone asked for one."""
    return TAPS.get(path)


def tap_at(key: str) -> OutboundDigest | None:
    """:func:`tap_for` a path already :func:`resolved`, touching no file system: the server
    behind a FUSE view asks from inside a read of that view, where a ``stat`` of it would
    wait for the very read it is serving."""
    return TAPS.at(key)


__all__ = ["GRANULARITY", "TAPS", "OutboundDigest", "RangeDigest", "TakenDigest", "checked_ranges",
           "data_ranges", "image_digest", "merged", "tap_at", "tap_for", "tapping"]
