"""Disks from image files: any format qemu-img reads becomes a flat VMDK on a datastore.

A flat VMDK is a small text descriptor plus an extent holding the raw disk
bytes. An image is first checked as untrusted (the kit's
``inspect_untrusted``: no backing file, external extent, data file or
``json:`` name, so a crafted image cannot make qemu-img read host files or
open connections). A raw image is then streamed as it is to
``[datastore] anyvirt-import-<id>/diskN-flat.vmdk`` (no temporary copy; its
tail up to ``size_gib`` is sent as zeros); any other format is streamed from
the kit's raw view of it (:mod:`anyvirt.kit.raw_view`, decoded as it is
read, no copy), or where no view can be made, converted to one temporary
sparse raw file first. A descriptor is written next to it and
the new VM's disk points at that. vcsim accepts exactly this pair, and so
does ESXi.

Every upload is metered (byte count against ``Content-Length``, progress,
cancel); when one fails, the import folder is removed again, so a cut
upload leaves nothing on the datastore.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from anyvirt.errors import InvalidSpec, NotSupported
from anyvirt.kit import qemu_img, raw_view
from anyvirt.kit.readahead import read_ahead
from anyvirt.model import GIB, Capability, DiskSpec, evolve
from anyvirt.tasks import Job
from anyvirt_vsphere import datastore_files
from anyvirt_vsphere.inventory import datastore_path
from anyvirt_vsphere.tasks import cleanup_job

SECTOR = 512
KIB = 1024
IMPORT_PREFIX = "anyvirt-import-"


def is_local_image(disk: DiskSpec) -> bool:
    return disk.image is not None and not disk.image.startswith("[")


def descriptor(extent_name: str, size_bytes: int) -> bytes:
    """A monolithicFlat descriptor for one raw extent of ``size_bytes``."""
    sectors = size_bytes // SECTOR
    return (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n\n'
        f'RW {sectors} FLAT "{extent_name}" 0\n\n'
        '# The Disk Data Base\nddb.adapterType = "lsilogic"\nddb.virtualHWVersion = "13"\n'
    ).encode()


class ZeroPadded:
    """A file read to its end, then zeros up to ``size``: a raw image grown to a larger
    disk without writing the zeros anywhere first."""

    def __init__(self, handle: IO[bytes], size: int) -> None:
        self.handle = handle
        self.left = size

    def read(self, size: int = -1, /) -> bytes:
        want = self.left if size is None or size < 0 else min(size, self.left)
        if want <= 0:
            return b""
        data = self.handle.read(want) or bytes(min(want, 1024 * 1024))
        self.left -= len(data)
        return data


def upload_images(
    driver: Any, disks: Sequence[DiskSpec], datastore: str, job: Job
) -> tuple[list[DiskSpec], str | None]:
    """Replace local images by uploaded flat VMDKs; returns the new disk specs and the
    datastore folder they went to (None when nothing was uploaded). When anything fails,
    the folder is removed before the error goes on."""
    local = [d for d in disks if is_local_image(d)]
    if not local:
        return list(disks), None
    checked = {id(d): check_local_image(str(d.image), job, d.format)  # all, before any upload
               for d in local}
    folder = f"{IMPORT_PREFIX}{uuid.uuid4().hex[:12]}"
    out: list[DiskSpec] = []
    try:
        for index, disk in enumerate(disks):
            if not is_local_image(disk):
                out.append(disk)
                continue
            found = checked[id(disk)]
            size = disk_bytes(found, disk)
            span = (100.0 * index / len(disks), 100.0 * (index + 1) / len(disks))
            _upload_one(driver, found, size, datastore, folder, index, job, span)
            out.append(evolve(  # the size is exact (a power-of-two division): vSphere is told it
                disk, image=datastore_path(datastore, f"{folder}/disk{index}.vmdk"),
                size_gib=size / GIB, storage=None, format=None))
    except BaseException:
        _remove_folder(driver, datastore, folder)
        raise
    return out, folder


def disk_bytes(found: qemu_img.ImageInfo, disk: DiskSpec) -> int:
    """The size of the vSphere disk an image becomes: at least the image and the size
    asked for, in whole KiB (vSphere counts a disk's capacity in KiB; a descriptor's
    sectors divide it exactly)."""
    return -(-max(found.virtual_size, disk.size_bytes or 0) // KIB) * KIB


def check_local_image(image: str, job: Job | None = None,
                      format: str | None = None) -> qemu_img.ImageInfo:
    """A local image file the caller handed over: readable by qemu-img, pointing nowhere else;
    read as ``format`` (``DiskSpec.format``) when the caller knows it, else probed. The
    result's ``format`` is what every later qemu-img call (conversion, raw view) is given."""
    if not qemu_img.available():
        raise NotSupported("vsphere", Capability.VM_CREATE_FROM_IMAGE,
                           "qemu-img is needed (apt-get install qemu-utils)")
    if not Path(image).is_file():
        raise InvalidSpec(f"disk image {image!r} does not exist")
    found = qemu_img.inspect_untrusted(image, format=format, job=job)
    if found.virtual_size <= 0:  # a disk of 0 bytes: vSphere would be asked for size 0
        raise InvalidSpec(f"disk image {image!r} is empty: its disk is 0 bytes ({found.format})")
    return found


def _upload_one(driver: Any, found: qemu_img.ImageInfo, size: int, datastore: str, folder: str,
                index: int, job: Job, span: tuple[float, float]) -> None:
    extent = f"disk{index}-flat.vmdk"
    with raw_bytes(found, job, span) as (raw, upload_span), \
            raw.open("rb") as handle, read_ahead(ZeroPadded(handle, size)) as ahead:
        # the disk (or the view's decoder) reads ahead while TLS sends
        datastore_files.upload(driver, datastore, f"{folder}/{extent}", ahead, size=size,
                               job=job, span=upload_span)
    desc = descriptor(extent, size)
    datastore_files.upload(driver, datastore, f"{folder}/disk{index}.vmdk", _bytes_file(desc),
                           size=len(desc))


@contextlib.contextmanager
def raw_bytes(found: qemu_img.ImageInfo, job: Job,
              span: tuple[float, float]) -> Iterator[tuple[Path, tuple[float, float]]]:
    """The image's raw bytes as a file to read, and the progress span left for sending it:
    the image itself when raw, else a raw view of it (no copy; decoded as it is read),
    else, where no view can be made, a temporary raw conversion."""
    source = Path(found.path)
    if found.format == "raw":
        yield source, span
        return
    with contextlib.ExitStack() as stack:
        try:  # only making the view may fall back; a failing upload is the caller's error
            view = stack.enter_context(raw_view.raw_view(source, found.format,
                                                         found.virtual_size, job=job))
        except NotSupported:
            pass
        else:
            yield view, span
            return
    middle = (span[0] + span[1]) / 2  # half the disk's share converting, half uploading
    job.progress(span[0], f"converting {source.name} to raw")
    with tempfile.TemporaryDirectory(prefix="anyvirt-vsphere-") as scratch:
        converted = Path(scratch) / "disk.raw"
        qemu_img.convert(source, converted, source_format=found.format, format="raw",
                         job=job.span(span[0], middle))
        yield converted, (middle, span[1])


def _bytes_file(data: bytes) -> IO[bytes]:
    import io

    return io.BytesIO(data)


def _remove_folder(driver: Any, datastore: str, folder: str) -> None:
    """Best effort: the first error is the one the caller must see."""
    with contextlib.suppress(Exception):
        datastore_files.remove_path(driver.inventory, datastore_path(datastore, folder),
                                    cleanup_job("removing a failed disk import"))


__all__ = ["IMPORT_PREFIX", "check_local_image", "descriptor", "disk_bytes", "is_local_image", "raw_bytes",
           "upload_images"]
