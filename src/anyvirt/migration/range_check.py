"""A moved disk proven by its data alone: the ranges the source holds data in are hashed
on both sides, the target's read by its driver straight from its storage.

The whole-disk read-back (:mod:`anyvirt.migration.disk_check`) carries the zeros of a
half-empty disk back over the wire; this carries the data once, so a verified move moves
about 1x the allocated data each way. What it does not read, the source's holes, the
target's import wrote as holes or zeros itself (a streamOptimized upload never sends
them); the target's reported stored length must still cover every data range.
The source's side is the digest the copy took as it read the source
(:class:`anyvirt.kit.extent_digest.OutboundDigest`), where it took one over the
same ranges; else the source is read here, at the same time as the target.
Used only where every disk qualifies (a map that places all its data, a target that
reads ranges); otherwise the caller reads whole disks back, and compares each with the
digest the copy took on the way out where there is one (:func:`against_taken`): the
target's whole disk is read back then, but the source, which may be far away, is not.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from anyvirt.errors import TaskFailed
from anyvirt.kit import extent_digest, streams
from anyvirt.model import DiskVerification, ExportedDisk
from anyvirt.tasks import Job, Task, TaskState

if TYPE_CHECKING:
    from anyvirt.operations import HeldVM
    from anyvirt.vm import VM

METHOD = "sha256 of data ranges"


def read_back(new: VM, sources: Sequence[ExportedDisk], job: Job
              ) -> tuple[DiskVerification, ...] | None:
    """Every disk of ``new`` (in order) checked against ``sources`` by data ranges, under the
    new VM's export row, as a task inside ``job``; None when some disk cannot be checked
    this way (nothing was read from the target then)."""
    plans = []
    for source in sources:
        found = extent_digest.data_ranges(source.path, source.format, source.size_bytes, job)
        if found is None:
            return None
        plans.append(found)

    def work(inner: Job, held: HeldVM) -> tuple[DiskVerification, ...] | None:
        checks = []
        for index, (source, (ranges, layout)) in enumerate(zip(sources, plans, strict=True)):
            inner.progress(100.0 * index / max(len(sources), 1), f"verifying disk {source.id}")
            taken = _taken_on_the_way_out(source, ranges)
            if taken is not None:  # hashed as the copy read it: not read a second time
                target = held.digest_disk_ranges(index, ranges, inner)
                if target is None:
                    return None
                checks.append(_compared(source, taken, target))
                continue
            # both sides at once: the source may be streamed from afar as well
            stop = threading.Event()  # the target side failed: the source side stops too
            with ThreadPoolExecutor(1, thread_name_prefix="anyvirt-verify") as pool:
                mine = pool.submit(extent_digest.image_digest, source.path, layout, ranges,
                                   inner, stop=stop)
                try:
                    target = held.digest_disk_ranges(index, ranges, inner)
                except BaseException:
                    stop.set()
                    raise
                if target is None:
                    stop.set()
                    return None
                checks.append(_compared(source, mine.result(), target))
        return tuple(checks)

    def forward(task: Task[Any]) -> None:
        # not the task's own 100 % at its end: a target that cannot read ranges ends it at
        # once, and the whole-disk read-back then starts this share of the bar again
        if task.state is TaskState.RUNNING:
            job.progress(task.progress, task.message or "")

    task = new.host.gate.export(new, "verify by data ranges", work, wait=False,
                                timeout=job.remaining(), on_progress=forward)
    job.on_cancel(task.cancel)
    result: tuple[DiskVerification, ...] | None = task.wait(job.remaining())
    return result


def _taken_on_the_way_out(source: ExportedDisk, ranges: Sequence[tuple[int, int]]
                          ) -> extent_digest.RangeDigest | None:
    """The source's digest of ``ranges`` as the copy read them, if it was taken
    (:func:`anyvirt.kit.extent_digest.tapping`) over exactly these ranges: a reader whose
    map placed the data elsewhere than this map does is not trusted, the source is read."""
    tap = extent_digest.tap_for(source.path)
    taken = tap.taken if tap is not None else None
    if taken is None or extent_digest.merged(taken.ranges) != extent_digest.merged(ranges):
        return None
    return taken.digest


def against_taken(source: ExportedDisk, copy: ExportedDisk, job: Job) -> DiskVerification | None:
    """``copy``, the target's whole disk read back as a raw file here, proven against the
    digest of ``source`` its copy took on the way out: the copy's bytes in the ranges that
    pass read hash the same, and read as zeros everywhere else. None where that proves
    nothing: no whole pass was taken, the copy is not raw, the pass missed some range the
    source's map holds data in, or the copy differs; the caller then compares with the
    source itself (a pass taken from a served view's export is only as whole as its
    readers' pattern: a difference is never called on its word alone)."""
    tap = extent_digest.tap_for(source.path)
    taken = tap.taken if tap is not None else None
    if taken is None or copy.format != "raw":
        return None
    found = extent_digest.data_ranges(source.path, source.format, source.size_bytes, job)
    size = os.path.getsize(copy.path)
    if found is None or not _covers(taken.ranges, found[0]) or size < source.size_bytes:
        return None
    target = extent_digest.image_digest(copy.path, [(0, size, 0)], taken.ranges, job)
    if (target.sha256, target.bytes) != (taken.digest.sha256, taken.digest.bytes) or \
            not _zeros_elsewhere(copy.path, taken.ranges, size, job):
        return None
    return _compared(source, taken.digest, target)


def _covers(outer: Sequence[tuple[int, int]], inner: Sequence[tuple[int, int]]) -> bool:
    """Whether every byte of ``inner`` lies in ``outer`` (both sorted, disjoint)."""
    spans = extent_digest.merged(outer)
    index = 0
    for offset, length in inner:
        while index < len(spans) and spans[index][0] + spans[index][1] <= offset:
            index += 1
        if index == len(spans) or spans[index][0] > offset or \
                spans[index][0] + spans[index][1] < offset + length:
            return False
    return True


def _zeros_elsewhere(path: str, ranges: Sequence[tuple[int, int]], size: int, job: Job) -> bool:
    """Whether ``path``'s bytes outside ``ranges`` (where the source reads as zeros) are
    all zeros; its holes are not read."""
    zeros = bytes(streams.CHUNK)
    with open(path, "rb") as handle:
        fd = handle.fileno()
        for start, end in _data_outside(fd, ranges, size):
            for offset in range(start, end, streams.CHUNK):
                job.check()
                step = min(streams.CHUNK, end - offset)
                if os.pread(fd, step, offset) != zeros[:step]:
                    return False
    return True


def _data_outside(fd: int, ranges: Sequence[tuple[int, int]], size: int
                  ) -> Iterator[tuple[int, int]]:
    """The ``(start, end)`` runs of the file's data (SEEK_DATA; all of it where holes are
    unknown) between ``ranges`` and up to ``size``."""
    for at, gap_end in _gaps(ranges, size):
        while at < gap_end:
            try:
                data = os.lseek(fd, at, os.SEEK_DATA)
                hole = os.lseek(fd, data, os.SEEK_HOLE)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nothing but a hole from here on
                    return
                data, hole = at, gap_end  # no holes known: every byte is read
            if data >= gap_end:
                break
            yield data, min(hole, gap_end)
            at = hole


def _gaps(ranges: Sequence[tuple[int, int]], size: int) -> Iterator[tuple[int, int]]:
    at = 0
    for offset, length in extent_digest.merged(ranges):
        if offset > at:
            yield at, offset
        at = offset + length
    if at < size:
        yield at, size


def _compared(source: ExportedDisk, mine: extent_digest.RangeDigest,
              target: extent_digest.RangeDigest) -> DiskVerification:
    if target.bytes != mine.bytes or target.sha256 != mine.sha256:
        raise TaskFailed(f"disk {source.id}: the copy differs from the source in the ranges the "
                         f"source holds data in: {target.bytes} bytes hashing to {target.sha256} "
                         f"read back, {mine.bytes} bytes hashing to {mine.sha256} at the source")
    return DiskVerification(id=source.id, size_bytes=source.size_bytes,
                            source_sha256=mine.sha256, target_sha256=target.sha256,
                            method=METHOD, exported_bytes=source.stream_bytes,
                            read_back_bytes=target.bytes)


__all__ = ["METHOD", "against_taken", "read_back"]
