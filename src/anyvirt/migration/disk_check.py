"""Proving a copied disk holds the source's bytes, before a move may call itself done.

The source side is hashed as it streams out (drivers hand over the sha256 of a raw
export; otherwise the core hashes the exported file once). The target side is read
back through the target driver's own export, so the check covers everything in
between: the network, the conversion, the platform's storage. Two raw images of one
size compare by sha256; anything else (qcow2 on libvirt, a larger target disk) by
``qemu-img compare``, which also requires the extra tail to read as zeros.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import attrs

from anyvirt.errors import TaskFailed
from anyvirt.kit import qemu_img, streams
from anyvirt.model import DiskVerification, ExportedDisk
from anyvirt.tasks import Job


def checked_export(disk: ExportedDisk, job: Job, *, hashed: bool = True) -> ExportedDisk:
    """An exported disk, checked like any image from elsewhere (a guest's disk is data:
    a qcow2 header inside a raw disk must not send qemu-img to a backing file), with its
    sha256 when it is raw and ``hashed`` (a disk streamed from afar is not: hashing it
    first would read all of it over the wire once more before the copy starts)."""
    if qemu_img.available():
        found = qemu_img.inspect_untrusted(disk.path, format=disk.format, job=job)
        if found.virtual_size < disk.size_bytes:
            raise TaskFailed(f"the export of disk {disk.id} holds {found.virtual_size} bytes, "
                             f"less than the disk's {disk.size_bytes}")
    if disk.format != "raw" or not hashed:
        return disk
    size = os.path.getsize(disk.path)
    if disk.sha256 is not None and disk.stream_bytes == size:
        return disk
    return attrs.evolve(disk, sha256=raw_sha256(Path(disk.path), job, f"hashing disk {disk.id}"),
                        stream_bytes=size)


def raw_sha256(path: Path, job: Job, what: str) -> str:
    """The sha256 of a raw image's bytes, holes included. Holes are hashed as zeros from
    memory instead of being read: reading a hole costs as much as reading data here (about
    3 s per GiB on an overlay file system), hashing zeros a sixth of that."""
    digest = hashlib.sha256()
    zeros = memoryview(bytes(streams.CHUNK))
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        fd = handle.fileno()
        for start, end, data in _extents(fd, size):
            offset = start
            while offset < end:
                job.check()
                step = min(streams.CHUNK, end - offset)
                if data:
                    chunk = os.pread(fd, step, offset)
                    if len(chunk) != step:
                        raise TaskFailed(f"{what}: {path} changed while it was read")
                    digest.update(chunk)
                else:
                    digest.update(zeros[:step])
                offset += step
    return digest.hexdigest()


def _extents(fd: int, size: int) -> list[tuple[int, int, bool]]:
    """(start, end, is_data) ranges covering the file; all data where holes are unknown."""
    out: list[tuple[int, int, bool]] = []
    offset = 0
    try:
        while offset < size:
            data = os.lseek(fd, offset, os.SEEK_DATA)
            if data > offset:
                out.append((offset, data, False))
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
            out.append((data, hole, True))
            offset = hole
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: no data after offset, the rest is a hole
            return [(0, size, True)]
        if offset < size:
            out.append((offset, size, False))
    return out


def compare(source: ExportedDisk, copy: ExportedDisk, job: Job) -> DiskVerification:
    """``copy`` (read back from the target) against ``source``; raises ``TaskFailed`` if
    they differ."""
    copy = checked_export(copy, job)
    same_shape = (source.format == copy.format == "raw" and source.sha256 is not None
                  and os.path.getsize(source.path) == os.path.getsize(copy.path))
    if same_shape:
        if source.sha256 != copy.sha256:
            raise TaskFailed(f"disk {source.id}: the copy's sha256 {copy.sha256} is not the "
                             f"source's {source.sha256}")
        method = "sha256"
    else:
        equal = qemu_img.compare(source.path, copy.path, first_format=source.format,
                                 second_format=copy.format, job=job)
        if not equal:
            raise TaskFailed(f"disk {source.id}: qemu-img compare finds the copy differs from "
                             "the source")
        method = "qemu-img compare"
    return DiskVerification(id=source.id, size_bytes=source.size_bytes,
                            source_sha256=source.sha256, target_sha256=copy.sha256,
                            method=method, exported_bytes=source.stream_bytes)


__all__ = ["checked_export", "compare", "raw_sha256"]
