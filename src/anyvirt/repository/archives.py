"""The portable archive (``.avbk``) into and out of a repository.

Both directions are checked end to end, so a point and an archive that pass
through here hold the same guest bytes:

* **import**: the archive is checked as a restore checks it (members,
  manifest and its checksum, then each disk's sha256 and image while it
  unpacks), then each disk is chunked into the repository like a backup's,
  holes never stored. The point keeps the archive's manifest (its VM, NICs,
  source facts, the time it was made) with the disks' indexes in place of the
  archive's members. Format 1 archives carry no checksums and are refused: a
  repository holds only what it can verify.
* **export**: every chunk is checked against its name as it is written into a
  sparse raw image, the image is compressed into the archive's qcow2, and
  ``qemu-img compare`` proves the qcow2 holds the same guest bytes before the
  archive (written by the archive's own writer) appears under its name.

An archive says nothing trustworthy about which VM it came from (anyone can
write one), so an imported point gets an id of its own, ``archive:<hash>`` of
the source platform, URI and VM name the manifest gives: imports of one VM's
archives are grouped for retention, and never with a VM backed up directly.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from anyvirt.errors import InvalidSpec, StorageFull, TaskFailed
from anyvirt.kit import qemu_img, streams
from anyvirt.migration import archive, archive_check
from anyvirt.migration.manifest import FORMAT_V2
from anyvirt.model import ExportedDisk
from anyvirt.repository import leases, points
from anyvirt.repository.points import RestorePoint
from anyvirt.repository.sources import open_raw
from anyvirt.tasks import DEFAULT_TIMEOUT, Job, ProgressCallback, run

if TYPE_CHECKING:
    from anyvirt.repository.repo import BackupRepository

ARCHIVE_VM_PREFIX = "archive:"


def importable(path: str | os.PathLike[str]) -> archive_check.CheckedArchive:
    """The archive at ``path`` with its members and manifest checked (no disk read yet), or
    InvalidSpec: what a caller checks before making a repository to import into."""
    checked = archive_check.open_checked(path)
    if not checked.manifest.checksums:
        raise InvalidSpec(f"{checked.path} is a format 1 archive: it carries no checksums, so "
                          "what it holds cannot be verified; restore it and back the VM up again")
    return checked


def import_archive(repo: BackupRepository, path: str | os.PathLike[str], *,
                   timeout: float | None = DEFAULT_TIMEOUT,
                   on_progress: ProgressCallback | None = None) -> RestorePoint:
    """A new restore point in ``repo`` holding what the archive at ``path`` holds."""
    checked = importable(path)
    manifest = checked.manifest
    source = checked.raw.get("source") or {}
    vm_id = archive_vm_id(manifest.source_backend or "", str(source.get("uri", "")),
                          manifest.name)

    def work(job: Job) -> RestorePoint:
        with leases.hold(repo.store, "backup") as held, \
                tempfile.TemporaryDirectory(prefix="anyvirt-import-") as tmp:
            archive_check.check_room(Path(tmp), checked)
            repo._clean_leftovers()
            known = repo._chunk_names()
            earlier = repo.points(vm_id)
            created = _created(manifest.created)
            point_id = points.point_id(created, held.id)
            entries, disks, read, stored = [], [], 0, 0
            share = 100.0 / max(len(manifest.disks), 1)
            for n, disk in enumerate(manifest.disks):
                span = job.span(share * n, share * (n + 1))
                # counted and hashed against the manifest as it unpacks, then the image checked
                file = archive_check.extract_disk(checked, disk, Path(tmp), span.span(0, 30))
                unpacked = ExportedDisk(id=disk.id, path=str(file), format=disk.format,
                                        size_bytes=disk.size_bytes, bus=disk.bus)
                with open_raw(unpacked, repo.chunk_size, Path(tmp), span) as raw, \
                        open(raw.path, "rb") as handle:
                    index, got, put = repo._store_disk(raw, functools.partial(
                        raw.read, handle.fileno()), known, held, span.span(30, 100))
                file.unlink()
                entry, record, written = repo._put_index(point_id, n, raw, index, held)
                read, stored = read + got, stored + put + written
                entries.append(entry)
                disks.append(record)
            point = RestorePoint(
                id=point_id, vm_name=manifest.name, vm_id=vm_id, created=created,
                incremental=bool(earlier), read_bytes=read, stored_bytes=stored,
                source_backend=manifest.source_backend or "",
                size_bytes=sum(e["size_bytes"] for e in entries),
                manifest={**checked.raw, "disks": entries}, disks=tuple(disks))
            repo._put_point(point, held)
            job.progress(100, f"restore point {point_id} written")
            return point

    result = run(f"import {checked.path}", work, wait=True, timeout=timeout,
                 on_progress=on_progress)
    assert isinstance(result, RestorePoint)
    return result


def export_archive(repo: BackupRepository, point: RestorePoint | str,
                   path: str | os.PathLike[str], *, timeout: float | None = DEFAULT_TIMEOUT,
                   on_progress: ProgressCallback | None = None) -> Path:
    """Write ``point`` as a portable archive at ``path`` (which must not exist yet),
    restorable anywhere with ``host.restore(path)``."""
    found = repo.point(point if isinstance(point, str) else point.id)
    dest = archive.check_destination(path)
    if not qemu_img.available():
        raise TaskFailed("exporting a restore point needs qemu-img (qemu-utils)")

    def work(job: Job) -> Path:
        indexes = [repo._index(found, n) for n in range(len(found.disks))]  # checked first
        described = found.manifest["disks"]
        with tempfile.TemporaryDirectory(prefix="anyvirt-export-") as tmp:
            _check_room(Path(tmp), indexes, repo.chunk_size, found.id)
            packed, entries = [], []
            share = 100.0 / max(len(indexes), 1)
            for n, (index, disk) in enumerate(zip(indexes, described, strict=True)):
                span = job.span(share * n, share * (n + 1))
                image = Path(tmp) / f"disk{n}.raw"
                size = int(disk["size_bytes"])
                repo._write_disk(index, size, image, span.span(0, 40))  # each chunk checked
                raw = ExportedDisk(id=str(disk["id"]), path=str(image), format="raw",
                                   size_bytes=size, bus=disk.get("bus"))
                out = archive.compact(raw, span.span(40, 80), Path(tmp), keep_source=True)
                entry = archive.disk_entry(n, out, span.span(80, 85))
                # not strict: that also compares allocation, and qcow2 allocates differently
                same = qemu_img.compare(image, out.path, first_format="raw",
                                        second_format=out.format, job=span.span(85, 100))
                if not same or entry["size_bytes"] != size:
                    raise TaskFailed(f"disk {raw.id} of point {found.id} differs from its "
                                     "compressed copy: nothing was written")
                image.unlink()
                packed.append(out)
                entries.append(entry)
            manifest = {**found.manifest, "format": FORMAT_V2, "disks": entries}
            return archive.write_archive(dest, manifest, packed, job,
                                         f"the archive of point {found.id}")

    result = run(f"export {found.id}", work, wait=True, timeout=timeout, on_progress=on_progress)
    assert isinstance(result, Path)
    return result


def archive_vm_id(backend: str, uri: str, name: str) -> str:
    """The id imported points of one VM share (see the module's doc)."""
    digest = hashlib.sha256(json.dumps([backend, uri, name]).encode()).hexdigest()
    return f"{ARCHIVE_VM_PREFIX}{digest[:16]}"


def _created(text: str | None) -> dt.datetime:
    """When the archive says it was made (retention counts its age from then), else now.
    A time in the future is not believed."""
    now = dt.datetime.now(dt.UTC)
    try:
        when = dt.datetime.strptime(text or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return now
    return when if when <= now else now


def _check_room(directory: Path, indexes: list[bytes], chunk_size: int, point_id: str) -> None:
    """The largest disk's data, twice (its raw image and its qcow2), must fit while written."""
    largest = max((sum(1 for c in points.chunk_ids(i) if c) for i in indexes), default=0)
    need = 2 * largest * chunk_size
    free = shutil.disk_usage(directory).free
    if need > free:
        raise StorageFull(f"exporting {point_id} needs up to {streams.human(need)} of temporary "
                          f"space in {directory}, {streams.human(free)} is free (set TMPDIR to "
                          "a larger disk)")


__all__ = ["archive_vm_id", "export_archive", "import_archive"]
