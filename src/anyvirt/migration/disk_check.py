"""Proving a copied disk holds the source's bytes, before a move may call itself done.

The source side is hashed as it streams out (drivers hand over the sha256 of a raw
export; otherwise the core hashes the exported file once). The target side is read
back through the target driver's own export, so the check covers everything in
between: the network, the conversion, the platform's storage. Two raw images of one
size compare by sha256; anything else (qcow2 on libvirt, a larger target disk) by
``qemu-img compare``, which also requires the extra tail to read as zeros.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from anyvirt.errors import TaskFailed
from anyvirt.kit import qemu_img, streams
from anyvirt.migration.archive_check import Discard
from anyvirt.model import DiskVerification, ExportedDisk
from anyvirt.tasks import Job


def checked_export(disk: ExportedDisk, job: Job) -> ExportedDisk:
    """An exported disk, checked like any image from elsewhere (a guest's disk is data:
    a qcow2 header inside a raw disk must not send qemu-img to a backing file), with its
    sha256 when it is raw."""
    if qemu_img.available():
        found = qemu_img.inspect_untrusted(disk.path, format=disk.format, job=job)
        if found.virtual_size < disk.size_bytes:
            raise TaskFailed(f"the export of disk {disk.id} holds {found.virtual_size} bytes, "
                             f"less than the disk's {disk.size_bytes}")
    if disk.format != "raw":
        return disk
    size = os.path.getsize(disk.path)
    if disk.sha256 is not None and disk.stream_bytes == size:
        return disk
    return attrs.evolve(disk, sha256=raw_sha256(Path(disk.path), job, f"hashing disk {disk.id}"),
                        stream_bytes=size)


def raw_sha256(path: Path, job: Job, what: str) -> str:
    with open(path, "rb") as handle:
        return streams.copy(handle, Discard(), size=os.path.getsize(path), job=job, what=what).sha256


def compare(source: ExportedDisk, copy: ExportedDisk, job: Job) -> DiskVerification:
    """``copy`` (read back from the target) against ``source``; raises ``TaskFailed`` if
    they differ."""
    copy = checked_export(copy, job)
    same_shape = (source.format == copy.format == "raw"
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
