"""Disks out of vSphere, as raw files (backups and cross-platform moves).

A flat or thin VMDK on a datastore is a small text descriptor ``x.vmdk`` and
its extent ``x-flat.vmdk``, which holds the disk's bytes as they are: a raw
image. Exporting downloads that extent through the datastore's HTTPS
``/folder`` interface, streamed, counted against the length the server
declared and hashed on the way (a download cut half-way fails; it is never
padded). An extent shorter than the disk (a never-written thin disk on
vcsim) ends in a hole up to the disk's size: the rest reads as zeros, which
is what the guest sees. Delta disks (snapshots, linked clones) have no flat
extent: those are refused with a clear error rather than exported incomplete.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from anyvirt.errors import InvalidState, NotFound
from anyvirt.kit import extent_digest, nbd_server, raw_view
from anyvirt.kit.extent_digest import RangeDigest
from anyvirt.kit.served_views import ServedDisk, served_views
from anyvirt.model import DiskInfo, ExportedDisk
from anyvirt.tasks import Job
from anyvirt_vsphere import datastore_files
from anyvirt_vsphere.inventory import Inventory, split_datastore_path
from anyvirt_vsphere.vms import vm_info


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "disk"


def export_disks(
    driver: object, inventory: Inventory, vm_id: str, dest_dir: Path, job: Job
) -> list[ExportedDisk]:
    info = vm_info(inventory, vm_id)
    out: list[ExportedDisk] = []
    for index, disk in enumerate(info.disks):
        if disk.backing:
            raise InvalidState(
                f"disk {disk.id} of VM {info.name!r} is a delta disk (snapshot or linked clone): "
                "delete its snapshots or make a full clone before exporting"
            )
        out.append(_export_one(driver, info.name, disk, disk.path or "", index, len(info.disks),
                               dest_dir, job))
    return out


def export_snapshot_disks(
    driver: object, inventory: Inventory, vm_id: str, dest_dir: Path, job: Job
) -> list[ExportedDisk]:
    """The disks as they were when the VM's only snapshot was taken (a running VM's
    point-in-time copy): each disk now writes into a delta, and its parent, the base
    flat disk, no longer changes. A parent that is itself a delta (older snapshots) is
    refused: its flat base is older than the snapshot."""
    info = vm_info(inventory, vm_id)
    out: list[ExportedDisk] = []
    for index, disk in enumerate(info.disks):
        if not disk.backing:
            raise InvalidState(f"disk {disk.id} of VM {info.name!r} has no snapshot delta: the "
                               "snapshot did not take effect")
        out.append(_export_one(driver, info.name, disk, disk.backing, index, len(info.disks),
                               dest_dir, job))
    return out


@contextlib.contextmanager
def streamed_disks(driver: object, inventory: Inventory, vm_id: str,
                   job: Job) -> Iterator[list[ExportedDisk] | None]:
    """The disks' flat extents as raw views read by ranged GETs while the block lasts (no
    download into a file first); None where no raw view can be made here. A flat extent
    shorter than its disk (a thin disk never written to its end) reads as zeros past
    its end, as the guest sees it. The datastore's HTTP interface does not say where the
    holes are: the views read zeros too, so they cost wire the data alone would not."""
    if not raw_view.available():
        yield None
        return
    info = vm_info(inventory, vm_id)
    for disk in info.disks:
        if disk.backing:
            raise InvalidState(
                f"disk {disk.id} of VM {info.name!r} is a delta disk (snapshot or linked clone): "
                "delete its snapshots or make a full clone before exporting")
    with contextlib.ExitStack() as stack:
        exports: dict[str, nbd_server.Export] = {}
        for index, disk in enumerate(info.disks):
            job.check()
            datastore, extent = _flat_extent(info.name, disk, disk.path or "")
            reader, stored = stack.enter_context(
                datastore_files.ranged_reader(driver, datastore, extent))
            exports[f"disk{index}"] = nbd_server.Export(
                size=disk.size_bytes or stored, read_at=_zero_padded(reader.read_at, stored))
        served = [ServedDisk(disk.id, [(f"disk{index}", "raw")], exports[f"disk{index}"].size,
                             disk.bus) for index, disk in enumerate(info.disks)]
        with served_views(exports, served, job) as out:
            yield out


def _zero_padded(read_at: Callable[[int, int], bytes],
                 stored: int) -> Callable[[int, int], bytes]:
    def read(offset: int, length: int) -> bytes:
        inside = max(0, min(length, stored - offset))
        return (read_at(offset, inside) if inside else b"") + bytes(length - inside)
    return read


def digest_disk_ranges(driver: object, inventory: Inventory, vm_id: str, disk_index: int,
                       ranges: Sequence[tuple[int, int]], job: Job) -> RangeDigest | None:
    """The sha256 of ``ranges`` of a disk's flat extent, read by ranged GETs (only those
    bytes cross the wire); None for a delta disk, which has no flat extent to read."""
    info = vm_info(inventory, vm_id)
    if not 0 <= disk_index < len(info.disks):
        raise NotFound(f"VM {info.name!r} has no disk #{disk_index}")
    disk = info.disks[disk_index]
    if disk.backing:
        return None
    datastore, extent = _flat_extent(info.name, disk, disk.path or "")
    wanted = extent_digest.checked_ranges(ranges, disk.size_bytes or 0)
    return datastore_files.digest_ranges(driver, datastore, extent, wanted, job=job)


def _flat_extent(vm_name: str, disk: DiskInfo, descriptor: str) -> tuple[str, str]:
    """The datastore and path of the raw extent next to a flat disk's ``descriptor``."""
    datastore, rel = split_datastore_path(descriptor)
    if datastore is None or not rel.endswith(".vmdk"):
        raise InvalidState(f"disk {disk.id} of VM {vm_name!r} has no datastore file")
    return datastore, rel[: -len(".vmdk")] + "-flat.vmdk"


def _export_one(driver: object, vm_name: str, disk: DiskInfo, descriptor: str, index: int,
                count: int, dest_dir: Path, job: Job) -> ExportedDisk:
    """One disk's flat extent (next to ``descriptor``) downloaded, counted and hashed."""
    job.progress(100.0 * index / count, f"exporting {disk.id}")
    job.check()
    datastore, extent = _flat_extent(vm_name, disk, descriptor)
    target = dest_dir / f"{_safe(vm_name)}-{_safe(disk.id)}.raw"
    try:
        got = datastore_files.fetch(driver, datastore, extent, target, job=job,
                                    max_size=disk.size_bytes,
                                    span=(100.0 * index / count, 100.0 * (index + 1) / count))
    except NotFound as exc:
        raise InvalidState(
            f"disk {disk.id} of VM {vm_name!r} has no flat extent ({extent}): only flat and "
            "thin VMDKs (without older snapshots) can be exported"
        ) from exc
    size = disk.size_bytes or got.bytes
    sha256: str | None = got.sha256
    stream_bytes: int | None = got.bytes
    if got.bytes < size:
        # the server declared (and sent) a shorter file: a hole, not a guess
        with target.open("r+b") as handle:
            handle.truncate(size)
        sha256, stream_bytes = None, None  # the file is not the stream: the core hashes it
    return ExportedDisk(id=disk.id, path=str(target), format="raw", size_bytes=size,
                        bus=disk.bus, sha256=sha256, stream_bytes=stream_bytes)
