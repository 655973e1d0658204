"""A moved disk proven by its data alone: the ranges the source holds data in are hashed
on both sides, the target's read by its driver straight from its storage.

The whole-disk read-back (:mod:`anyvirt.migration.disk_check`) carries the zeros of a
half-empty disk back over the wire; this carries the data once, so a verified move moves
about 1x the allocated data each way. What it does not read, the source's holes, the
target's import wrote as holes or zeros itself (a streamOptimized upload never sends
them); the target's reported stored length must still cover every data range.
Used only where every disk qualifies (a map that places all its data, a target that
reads ranges); otherwise the caller reads whole disks back.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from anyvirt.errors import TaskFailed
from anyvirt.kit import extent_digest
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


__all__ = ["METHOD", "read_back"]
