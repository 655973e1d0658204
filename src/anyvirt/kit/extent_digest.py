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

import hashlib
import os
import threading
from collections.abc import Iterator, Sequence

from attrs import frozen

from anyvirt.errors import InvalidSpec, TaskFailed
from anyvirt.kit import qemu_img, streams
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


__all__ = ["GRANULARITY", "RangeDigest", "checked_ranges", "data_ranges", "image_digest"]
