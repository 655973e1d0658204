"""Everything a restore checks in an archive before it creates anything.

In order, each step before the next reads more:

1. the tar members: at most a few, each a regular file with a confined name
   (no absolute or ``..`` path, no link, device, FIFO or sparse member), all
   inside the archive file's own length (a 10 KiB file cannot hold 1 TiB),
   exactly the manifest and the disks it names;
2. the manifest: its own checksum (format 2), then the schema
   (:mod:`anyvirt.migration.manifest`), every field typed and bounded;
3. the sizes: members against what the manifest declares, disks against the
   target's free storage and the local temp dir's free space;
4. each disk as it is unpacked: its byte count and sha256 while it streams
   out, its real format (by its magic bytes) against the declared one, then the
   image itself (:func:`anyvirt.kit.qemu_img.inspect_untrusted`:
   no backing file, external extent, data file or ``json:`` name), and its
   virtual size against the declared one.

Every failure is an ``InvalidSpec`` naming the archive and the fault (or
``StorageFull`` for room), never a raw tarfile, JSON or OS error.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import shutil
import tarfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from attrs import frozen

from anyvirt.errors import InvalidSpec, StorageFull
from anyvirt.kit import qemu_img, streams
from anyvirt.kit.paths import path_error
from anyvirt.migration import manifest as schema
from anyvirt.migration.manifest import MANIFEST, MANIFEST_SUM, Manifest, ManifestDisk
from anyvirt.tasks import Job

if TYPE_CHECKING:
    from anyvirt.host import Host

MAX_MEMBERS = schema.MAX_DISKS + 2
NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class UnverifiedArchiveWarning(UserWarning):
    """The archive carries no checksums (format 1): damage inside it cannot be seen."""


@frozen
class CheckedArchive:
    """An archive whose members and manifest passed; disks are checked as they unpack."""

    path: Path
    manifest: Manifest
    raw: dict[str, Any]
    members: dict[str, tarfile.TarInfo]


class Discard:
    """A writer that keeps nothing: for checksumming a stream without storing it."""

    def write(self, data: bytes, /) -> int:
        return len(data)


def _refuse(path: Path, why: str) -> InvalidSpec:
    return InvalidSpec(f"{path} is refused: {why}")


def open_checked(path: str | os.PathLike[str]) -> CheckedArchive:
    """Steps 1 and 2: the members and the manifest (reads no disk)."""
    archive = Path(path)
    if not archive.is_file():
        raise InvalidSpec(f"{archive} is not a file")
    length = archive.stat().st_size
    try:
        with tarfile.open(archive, "r:") as tar:
            members = _members(tar, archive, length)
            raw = _manifest_json(tar, members, archive)
    except tarfile.TarError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidSpec(f"{archive} is not an anyvirt backup: {reason}") from exc
    except OSError as exc:  # /proc/self/mem, a file that cannot be read
        raise path_error(exc, f"{archive} cannot be read") from exc
    manifest = schema.parse(raw)
    wanted = {MANIFEST} | {d.file for d in manifest.disks}
    if manifest.checksums:
        wanted.add(MANIFEST_SUM)
    missing = sorted(wanted - members.keys())
    if missing:
        raise _refuse(archive, f"it lacks {', '.join(missing)}")
    extra = sorted(members.keys() - wanted)
    if extra:
        raise _refuse(archive, f"it holds members its manifest does not name: {', '.join(extra)}")
    for disk in manifest.disks:
        stored = members[disk.file].size
        if disk.file_bytes is not None and stored != disk.file_bytes:
            raise _refuse(archive, f"member {disk.file} is {stored} bytes, its manifest says "
                                   f"{disk.file_bytes}")
    return CheckedArchive(path=archive, manifest=manifest, raw=raw, members=members)


def _members(tar: tarfile.TarFile, archive: Path, length: int) -> dict[str, tarfile.TarInfo]:
    found: dict[str, tarfile.TarInfo] = {}
    for member in tar:
        if len(found) >= MAX_MEMBERS:
            raise _refuse(archive, f"more than {MAX_MEMBERS} members")
        name = member.name
        clean = posixpath.normpath(name)
        if name.startswith("/") or clean.startswith("..") or clean != name or "\\" in name:
            raise _refuse(archive, f"member {name[:80]!r} is not a plain relative path")
        if not member.isreg():
            kind = ("a link" if member.issym() or member.islnk() else
                    "a device" if member.isdev() else "a directory" if member.isdir() else
                    "not a regular file")
            raise _refuse(archive, f"member {name[:80]!r} is {kind}")
        if member.sparse is not None:
            raise _refuse(archive, f"member {name[:80]!r} is a sparse tar member")
        if member.offset_data + member.size > length:
            raise _refuse(archive, f"member {name[:80]!r} declares {member.size} bytes, more than "
                                   "the archive holds")
        if name in found:
            raise _refuse(archive, f"member {name[:80]!r} appears twice")
        found[name] = member
    return found


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int, archive: Path) -> bytes:
    if member.size > limit:
        raise _refuse(archive, f"{member.name} is {member.size} bytes, at most {limit}")
    handle = tar.extractfile(member)
    assert handle is not None  # a regular file, checked
    return handle.read()


def _manifest_json(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo],
                   archive: Path) -> dict[str, Any]:
    if MANIFEST not in members:
        raise InvalidSpec(f"{archive} is not an anyvirt backup: it has no {MANIFEST}")
    data = _read_member(tar, members[MANIFEST], schema.MAX_MANIFEST_BYTES, archive)
    if MANIFEST_SUM in members:
        digest, size = schema.parse_sum(_read_member(tar, members[MANIFEST_SUM], 200, archive))
        if size != len(data) or hashlib.sha256(data).hexdigest() != digest:
            raise _refuse(archive, f"{MANIFEST} does not match its checksum in {MANIFEST_SUM}")
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidSpec(f"{archive}: {MANIFEST} is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidSpec(f"manifest field top level: expected an object in {archive}")
    if raw.get("format") == schema.FORMAT_V2 and MANIFEST_SUM not in members:
        raise _refuse(archive, f"a format 2 archive without {MANIFEST_SUM}")
    return raw


def check_target_storage(host: Host, manifest: Manifest) -> None:
    """The disks must fit the target's largest free storage (a restore puts them on one)."""
    storages = [s for s in host.info().storage if s.active and s.capacity_bytes > 0]
    if not storages or not manifest.disks:
        return  # the platform reports no sizes: its create is the check
    room = max(s.available_bytes for s in storages)
    if manifest.disk_bytes > room:
        raise StorageFull(
            f"the archive's disks need {streams.human(manifest.disk_bytes)}, but the most free "
            f"storage on {host.uri} is {streams.human(room)}")


def check_room(directory: Path, checked: CheckedArchive) -> None:
    """The local temp dir must hold the unpacked disks (each at its stored size)."""
    need = sum(checked.members[d.file].size for d in checked.manifest.disks)
    free = shutil.disk_usage(directory).free
    if need > free:
        raise StorageFull(f"unpacking needs {streams.human(need)} in {directory}, which has "
                          f"{streams.human(free)} free (set TMPDIR to a larger disk)")


def extract_disk(checked: CheckedArchive, disk: ManifestDisk, directory: Path, job: Job) -> Path:
    """Step 4 for one disk: stream it out counted and hashed, then check the image."""
    member = checked.members[disk.file]
    out = directory / posixpath.basename(disk.file)
    what = f"{checked.path}: disk {disk.file}"
    try:
        with tarfile.open(checked.path, "r:") as tar:
            handle: IO[bytes] | None = tar.extractfile(member)
            assert handle is not None
            streams.copy_to_file(handle, out, size=member.size, job=job, what=what,
                                 expected_sha256=disk.sha256, error=InvalidSpec)
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise StorageFull(f"no room to unpack {disk.file} in {directory} "
                              f"({exc.strerror})") from exc
        raise InvalidSpec(f"{what} cannot be read: {exc}") from exc
    except tarfile.TarError as exc:
        raise InvalidSpec(f"{what} cannot be read: {exc}") from exc
    real = qemu_img.probe_format(out)  # by its magic bytes, read by us: nothing is opened
    if real != disk.format:
        # a qcow2 declared raw passes a raw reading (its backing file unseen), yet every
        # later probe (a restore's create, a hypervisor) reads it as the qcow2 it is
        out.unlink(missing_ok=True)
        raise _refuse(checked.path, f"disk {disk.file} is declared {disk.format} but is really "
                                    f"{real}")
    if qemu_img.available():
        try:
            found = qemu_img.inspect_untrusted(out, format=disk.format, job=job)
        except InvalidSpec as exc:
            out.unlink(missing_ok=True)
            raise InvalidSpec(f"{checked.path}: disk {disk.file} is refused: {exc}") from exc
        # format 1 wrote the export's size, which qcow2 rounds up to whole sectors
        if found.virtual_size not in (disk.size_bytes, -(-disk.size_bytes // 512) * 512):
            out.unlink(missing_ok=True)
            raise _refuse(checked.path, f"disk {disk.file} holds {found.virtual_size} bytes, its "
                                        f"manifest says {disk.size_bytes}")
    elif disk.format != "raw":
        out.unlink(missing_ok=True)
        raise InvalidSpec(f"{what} is {disk.format}: checking it needs qemu-img (qemu-utils)")
    return out


__all__ = ["CheckedArchive", "Discard", "UnverifiedArchiveWarning", "check_room",
           "check_target_storage", "extract_disk", "open_checked"]
