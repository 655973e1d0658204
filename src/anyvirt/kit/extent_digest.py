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

import bisect
import contextlib
import hashlib
import heapq
import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from attrs import frozen

from anyvirt.errors import InvalidSpec, TaskFailed
from anyvirt.kit import image_maps, streams
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
    found = image_maps.data_map(path, format, granularity=GRANULARITY, job=job)
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
        self._checks: dict[int, Callable[[], bool]] = {}  # by pass: whole only if it holds
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

    def require(self, within: int, check: Callable[[], bool]) -> None:
        """The claimed pass ``within`` is taken whole at :meth:`end` only if ``check()``
        holds then (its feeder saw every byte it expected, none left waiting)."""
        with self._lock:
            self._checks[within] = check

    def end(self) -> None:
        with self._lock:
            check = self._checks.get(self._passes) if self._open else None
        # outside the lock: the check takes its feeder's lock, which holds this one to add
        whole = check() if check is not None else True
        with self._lock:
            if not self._open:
                return
            if not whole:
                self._open = False
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

#: guest bytes held back, waiting for earlier ones, before a pass gives up on the order
REORDER_LIMIT = 64 * 1024 * 1024
#: guest bytes handed on that are kept to compare a read of them again with
REREAD_LIMIT = 8 * 1024 * 1024


class InOrder:
    """Guest bytes of known data ``spans`` (sorted, disjoint ``(offset, length)``) that
    arrive roughly in order (a decoder's reads of a chain's layers), handed to ``add``
    strictly in order, each byte once.

    A read ahead of the next expected byte waits (at most ``limit`` bytes); a read of bytes
    already handed on is compared with them (the last ``keep`` bytes are kept). Past the
    limit, or a read again that differs or can no longer be compared, the feed is
    ``spoiled`` and hands on nothing more: the digest it feeds is then not trusted and the
    source is read instead. :meth:`complete`: every byte of the spans was handed on."""

    def __init__(self, spans: Sequence[tuple[int, int]], add: Callable[[int, bytes], None], *,
                 limit: int = REORDER_LIMIT, keep: int = REREAD_LIMIT) -> None:
        self.spans = [(o, n) for o, n in merged(spans) if n > 0]
        self._add = add
        self.limit, self.keep = limit, keep
        self.spoiled = False
        self._span = 0  # index of the span holding the next expected byte
        self.expected = self.spans[0][0] if self.spans else _NEVER
        self._waiting: dict[int, bytes] = {}  # by offset
        self._order: list[int] = []  # the offsets waiting, as a heap
        self._waiting_bytes = 0
        self._kept: deque[tuple[int, bytes]] = deque()
        self._kept_bytes = 0

    @property
    def started(self) -> bool:
        return bool(self.spans) and self.expected != self.spans[0][0]

    def complete(self) -> bool:
        return not self.spoiled and self.expected == _NEVER and not self._waiting

    def put(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if self.spoiled or not data:
            return
        if offset > self.expected:
            self._wait(offset, bytes(data))
            return
        self._take(offset, memoryview(data))
        while not self.spoiled and self._order and self._order[0] <= self.expected:
            first = heapq.heappop(self._order)
            held = self._waiting.pop(first)
            self._waiting_bytes -= len(held)
            self._take(first, memoryview(held))

    def _wait(self, offset: int, data: bytes) -> None:
        held = self._waiting.get(offset)
        if held is not None:
            if held[:len(data)] != data[:len(held)]:
                self._spoil()
            elif len(data) > len(held):
                self._waiting[offset] = data
                self._waiting_bytes += len(data) - len(held)
        else:
            self._waiting[offset] = data
            heapq.heappush(self._order, offset)
            self._waiting_bytes += len(data)
        if self._waiting_bytes > self.limit:
            self._spoil()

    def _take(self, offset: int, data: memoryview) -> None:
        """``data`` at ``offset`` (at most the next expected byte): what lies before that
        byte is a read again, the rest is handed on."""
        seen = min(len(data), self.expected - offset)
        if seen > 0 and not self._same(offset, data[:seen]):
            self._spoil()
            return
        at, data = offset + seen, data[seen:]
        while data and not self.spoiled and self.expected != _NEVER:
            start, length = self.spans[self._span]
            if at < start:  # outside the spans: a read the map says holds no data
                skip = min(len(data), start - at)
                at, data = at + skip, data[skip:]
                continue
            step = min(len(data), start + length - at)
            chunk = bytes(data[:step])
            self._add(at, chunk)
            self._remember(at, chunk)
            at, data = at + step, data[step:]
            if at == start + length:
                self._span += 1
                self.expected = self.spans[self._span][0] if self._span < len(self.spans) \
                    else _NEVER
            else:
                self.expected = at

    def _same(self, offset: int, data: memoryview) -> bool:
        """Whether ``data`` at ``offset``, all handed on already, is what was handed on
        (outside the spans: nothing to compare, the map says no data lies there)."""
        end = offset + len(data)
        for low, high in _overlaps_of(self.spans, offset, end):
            covered = low
            for at, kept in self._kept:
                k_low, k_high = max(at, covered), min(at + len(kept), high)
                if k_low >= k_high or k_low != covered:
                    continue
                if data[k_low - offset:k_high - offset] != kept[k_low - at:k_high - at]:
                    return False
                covered = k_high
            if covered < high:
                return False  # no longer kept: cannot be compared
        return True

    def _remember(self, offset: int, data: bytes) -> None:
        self._kept.append((offset, data))
        self._kept_bytes += len(data)
        while self._kept_bytes > self.keep and len(self._kept) > 1:
            self._kept_bytes -= len(self._kept.popleft()[1])

    def _spoil(self) -> None:
        self.spoiled = True
        self._waiting.clear()
        self._order.clear()
        self._waiting_bytes = 0
        self._kept.clear()


_NEVER = 1 << 63


def _overlaps_of(spans: Sequence[tuple[int, int]], start: int, end: int
                 ) -> Iterator[tuple[int, int]]:
    """The parts ``(low, high)`` of sorted, disjoint ``spans`` inside ``start .. end``."""
    index = max(0, bisect.bisect_right(spans, (start, _NEVER)) - 1)
    for offset, length in itertools.islice(spans, index, None):
        if offset >= end:
            return
        if offset + length > start:
            yield max(offset, start), min(offset + length, end)
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


__all__ = ["GRANULARITY", "REORDER_LIMIT", "REREAD_LIMIT", "TAPS", "InOrder", "OutboundDigest",
           "RangeDigest", "TakenDigest", "checked_ranges",
           "data_ranges", "image_digest", "merged", "tap_at", "tap_for", "tapping"]
