"""Backups as portable archives (``.avbk``): one file, restorable on any backend.

An archive (format 2) is a plain tar file: ``manifest.json`` (the neutral
hardware description, the same one cross-platform moves use), then
``manifest.sha256`` (its checksum and size), then one compressed qcow2 per
disk under ``disks/``. The manifest carries each disk's virtual size, stored
size and sha256, the anyvirt version that wrote it, the source platform's raw
facts, and that snapshots were flattened to the current state.

An archive is untrusted input. :func:`restore` checks everything before it
creates anything (:mod:`anyvirt.migration.archive_check`): the members, the
manifest, every checksum, every image, and the sizes against the target's
free storage. Format 1 archives (no checksums) still restore, with a warning.
Files stream in and out; disks are never held in memory.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from anyvirt.errors import AlreadyExists, InvalidSpec, StorageFull, TaskFailed
from anyvirt.kit import qemu_img, streams
from anyvirt.kit.paths import path_error
from anyvirt.migration import archive_check, consistency
from anyvirt.migration.archive_check import Discard, UnverifiedArchiveWarning
from anyvirt.migration.manifest import FORMAT_V2, MANIFEST, MANIFEST_SUM, Manifest
from anyvirt.migration.target_spec import nics_for, spec_for
from anyvirt.model import (
    Capability,
    ExportedDisk,
    check_name,
)
from anyvirt.tasks import DEFAULT_TIMEOUT, Job, ProgressCallback

if TYPE_CHECKING:
    from anyvirt.host import Host
    from anyvirt.operations import HeldVM
    from anyvirt.vm import VM

FORMAT = FORMAT_V2
NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def backup(vm: VM, path: str | Path, *, shutdown: bool = False, snapshot: bool = False,
           timeout: float | None = DEFAULT_TIMEOUT,
           on_progress: ProgressCallback | None = None) -> Path:
    """Write ``vm`` (configuration and disks) to the archive ``path``. A running VM is
    refused unless ``shutdown=True`` (stopped gracefully first) or ``snapshot=True`` (its
    disks copied as a snapshot froze them, crash-consistent; the VM runs on).
    ``on_progress`` gets the Task as the disks stream (bytes, percent and rate)."""
    vm.host.gate.require(Capability.DISK_EXPORT)
    dest = check_destination(path)
    at_snapshot = consistency.prepare(vm, shutdown=shutdown, snapshot=snapshot, timeout=timeout)
    info = vm.info()

    def work(job: Job, held: HeldVM) -> Path:
        try:
            with tempfile.TemporaryDirectory(prefix="anyvirt-backup-") as tmp:
                # read in place where the driver can (the only copy is the compressed one)
                exported, in_place = consistency.held_disks(
                    held, Path(tmp), job, at_snapshot=at_snapshot, what=f"a backup of {vm.name}")
                disks = [compact(d, job, Path(tmp), keep_source=in_place) for d in exported]
                entries = [disk_entry(i, d, job) for i, d in enumerate(disks)]
                return write_archive(dest, _manifest(vm, info, entries), disks, job,
                                     f"the backup of {vm.name!r}")
        except OSError as exc:
            if exc.errno in NO_SPACE:  # the temporary copies ran out of room
                raise StorageFull(f"no room to write the backup of {vm.name!r} "
                                  f"({exc.strerror}); nothing was kept") from exc
            raise

    # the gate holds the VM (its disks cannot change while copied) and checks its state
    result = vm.host.gate.export(vm, "back up", work, running=at_snapshot, wait=True,
                                 timeout=timeout, on_progress=on_progress,
                                 state_hint=consistency.RUNNING_HINT)
    assert isinstance(result, Path)
    return result


def check_destination(path: str | os.PathLike[str]) -> Path:
    """Where a new archive goes: not there yet, in a directory that is."""
    dest = Path(path)
    if dest.exists():
        raise AlreadyExists(f"{dest} exists already")
    if not dest.parent.is_dir():
        raise InvalidSpec(f"cannot write {dest}: the directory {dest.parent} does not exist")
    return dest


def write_archive(dest: Path, manifest: dict[str, Any], disks: list[ExportedDisk], job: Job,
                  what: str) -> Path:
    """The tar itself: the manifest, its checksum, then each disk file under the member name
    its manifest entry gives. Written under a ``.partial`` name and renamed when complete,
    so a cut write leaves no archive behind."""
    partial = dest.with_name(dest.name + ".partial")
    try:
        data = json.dumps(manifest, indent=2, sort_keys=True).encode()
        with tarfile.open(partial, "x", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, MANIFEST, data)
            summed = f"{hashlib.sha256(data).hexdigest()}  {len(data)}\n"
            _add_bytes(tar, MANIFEST_SUM, summed.encode())
            for entry, disk in zip(manifest["disks"], disks, strict=True):
                job.check()
                member = tar.gettarinfo(disk.path, arcname=str(entry["file"]))
                member.uid = member.gid = 0
                member.uname = member.gname = ""
                with open(disk.path, "rb") as handle:
                    tar.addfile(member, handle)
        partial.rename(dest)
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise StorageFull(f"no room to write {what} ({exc.strerror}); nothing was kept") from exc
        if exc.filename in (str(partial), str(dest)):  # the caller's path: bad input
            raise path_error(exc, f"cannot write {dest}") from exc
        raise
    finally:
        partial.unlink(missing_ok=True)
    return dest


def _manifest(vm: VM, info: Any, disks: list[dict[str, Any]]) -> dict[str, Any]:
    from anyvirt import __version__

    return {
        "format": FORMAT,
        "anyvirt_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # the raw facts say what the neutral description left out, for a human reading it
        "source": {"backend": vm.host.backend, "uri": vm.host.uri,
                   "raw": {"state": info.raw_state, "extra": _plain(info.extra)}},
        "snapshots": {"mode": "flattened",
                      "note": "the current state only; the snapshot tree is not carried"},
        "vm": {
            "name": info.name, "cpus": info.cpus, "memory_mib": info.memory_mib,
            "firmware": info.firmware.value, "guest_os": info.guest_os,
            "description": info.description,
            "nics": [{"id": n.id, "network": n.network, "model": n.model, "mac": n.mac}
                     for n in info.nics],
        },
        "disks": disks,
    }


def _plain(value: Any) -> Any:
    """JSON-safe copy of a driver's raw facts (SDK objects become their text)."""
    return json.loads(json.dumps(value, default=str))


def disk_entry(index: int, disk: ExportedDisk, job: Job) -> dict[str, Any]:
    with open(disk.path, "rb") as handle:
        summed = streams.copy(handle, Discard(), size=os.path.getsize(disk.path), job=job,
                              what=f"checksumming disk {disk.id}")
    # the size restore checks the image against: what the stored image says (qcow2 rounds a
    # raw export up to whole sectors)
    size = (qemu_img.info(disk.path, format=disk.format, job=job).virtual_size
            if qemu_img.available() else disk.size_bytes)
    return {"id": disk.id, "file": f"disks/{index}-{_member_safe(disk.id)}.{disk.format}",
            "format": disk.format, "size_bytes": size, "bus": disk.bus,
            "file_bytes": summed.bytes, "sha256": summed.sha256,
            "compressed": disk.format == "qcow2"}


def _member_safe(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:60] or "disk"


def compact(disk: ExportedDisk, job: Job, into: Path, *, keep_source: bool) -> ExportedDisk:
    """Every export becomes a compressed qcow2 in ``into`` before archiving: tar keeps no
    holes, and a compressed qcow2 stores no zeros and squeezes the rest. The export is
    checked like any image first (a guest disk is data), and removed after unless
    ``keep_source`` (a disk read in place). Without qemu-img the file goes in as it is."""
    if not qemu_img.available():
        return disk
    qemu_img.inspect_untrusted(disk.path, format=disk.format, job=job)
    out = into / f"{uuid.uuid4().hex[:12]}.archived.qcow2"  # two pools may hold equal names
    try:
        qemu_img.run(["convert", "-p", "-c", "-f", qemu_img.check_format(disk.format),
                      "-O", "qcow2", "--", qemu_img.path_arg(disk.path), qemu_img.path_arg(out)],
                     what=f"compressing disk {disk.id}", timeout=qemu_img.CONVERT_TIMEOUT, job=job)
    except TaskFailed as exc:
        out.unlink(missing_ok=True)
        if "No space left" in str(exc) or "File too large" in str(exc):
            raise StorageFull(f"no room to compress disk {disk.id}: {exc}") from exc
        raise TaskFailed(f"qemu-img could not compress disk {disk.id}: {exc}") from exc
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    if not keep_source:
        Path(disk.path).unlink()
    return attrs.evolve(disk, path=str(out), format="qcow2")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    member.mtime = int(time.time())
    tar.addfile(member, io.BytesIO(data))


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The archive's manifest as JSON, after the checks that need no disk to be read
    (members, schema, the manifest's own checksum)."""
    return archive_check.open_checked(path).raw


def describe(path: str | os.PathLike[str]) -> Manifest:
    """The checked manifest of an archive (``anyvirt backup-info``): reads no disk."""
    return archive_check.open_checked(path).manifest


def verify(path: str | os.PathLike[str], *, timeout: float | None = DEFAULT_TIMEOUT) -> Manifest:
    """Check an archive completely without restoring it: members, manifest, every disk's
    size and sha256, every image (no backing file, extent, data file). Raises
    ``InvalidSpec`` on the first fault; returns the manifest when all is well."""
    checked = archive_check.open_checked(path)
    job = Job(f"verifying {path}", timeout)
    with tempfile.TemporaryDirectory(prefix="anyvirt-verify-") as tmp:
        for disk in checked.manifest.disks:
            file = archive_check.extract_disk(checked, disk, Path(tmp), job)
            file.unlink()
    return checked.manifest


def restore(host: Host, path: str | os.PathLike[str], *, name: str | None = None,
            networks: Mapping[str, str] | None = None,
            timeout: float | None = DEFAULT_TIMEOUT) -> VM:
    """Create a VM on ``host`` from the archive ``path`` (from any backend). ``networks``
    maps networks the host lacks, as in ``plan_migration``: an unmapped one is refused."""
    checked = archive_check.open_checked(path)
    manifest = checked.manifest
    if not manifest.checksums:
        warnings.warn(UnverifiedArchiveWarning(
            f"{path} is a format 1 archive: it carries no checksums, so a damaged disk inside "
            "it cannot be detected; back the VM up again to get a verifiable archive"),
            stacklevel=3)
    new_name = check_name(manifest.name if name is None else name, "name")
    # before unpacking what may be many GiB of disks: capability, name, capacity, storage
    host.gate.check_restore(new_name, manifest.cpus, manifest.memory_mib,
                            with_images=bool(manifest.disks))
    archive_check.check_target_storage(host, manifest)
    nics = nics_for(host, manifest, networks)
    job = Job(f"restoring {path}", timeout)
    with tempfile.TemporaryDirectory(prefix="anyvirt-restore-") as tmp:
        archive_check.check_room(Path(tmp), checked)
        files = [archive_check.extract_disk(checked, d, Path(tmp), job) for d in manifest.disks]
        spec = spec_for(host, manifest, new_name, files, nics)
        return host.vms.create(spec, timeout=job.remaining())


__all__ = ["UnverifiedArchiveWarning", "backup", "describe", "read_manifest", "restore", "verify"]
