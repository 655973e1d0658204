"""Disks from image files: any format qemu-img reads becomes a flat VMDK on a datastore.

A flat VMDK is a small text descriptor plus an extent holding the raw disk
bytes. So an image is inspected as untrusted (refused if it has a backing
file, extents or a data file elsewhere), converted to raw with the kit's
qemu-img runner into a temporary (sparse) file, streamed to
``[datastore] anyvirt-import-<id>/diskN-flat.vmdk`` through the datastore's
HTTPS interface, and a descriptor written next to it; the new VM's disk
then points at that descriptor. vcsim accepts exactly this pair, and so
does ESXi.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from anyvirt.errors import InvalidSpec, NotSupported, TaskFailed
from anyvirt.kit import qemu_img
from anyvirt.model import GIB, Capability, DiskSpec, evolve
from anyvirt.tasks import Job
from anyvirt_vsphere import datastore_files
from anyvirt_vsphere.inventory import datastore_path

SECTOR = 512


def is_local_image(disk: DiskSpec) -> bool:
    return disk.image is not None and not disk.image.startswith("[")


def check_local_image(image: str, job: Job | None = None) -> qemu_img.ImageInfo:
    """A local image file the caller handed over: readable by qemu-img, pointing nowhere else."""
    if not qemu_img.available():
        raise NotSupported(
            "vsphere", Capability.VM_CREATE_FROM_IMAGE, "qemu-img is needed (apt-get install qemu-utils)"
        )
    return qemu_img.inspect_untrusted(image, job=job)


def descriptor(extent_name: str, size_bytes: int) -> bytes:
    """A monolithicFlat descriptor for one raw extent of ``size_bytes``."""
    sectors = size_bytes // SECTOR
    return (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n\n'
        f'RW {sectors} FLAT "{extent_name}" 0\n\n'
        '# The Disk Data Base\nddb.adapterType = "lsilogic"\nddb.virtualHWVersion = "13"\n'
    ).encode()


def upload_images(
    driver: object, disks: Sequence[DiskSpec], datastore: str, job: Job
) -> tuple[list[DiskSpec], str | None]:
    """Replace local images by uploaded flat VMDKs; returns the new disk specs and the
    datastore folder they went to (None when nothing was uploaded)."""
    if not any(is_local_image(d) for d in disks):
        return list(disks), None
    folder = f"anyvirt-import-{uuid.uuid4().hex[:12]}"
    out: list[DiskSpec] = []
    share = 100.0 / sum(1 for d in disks if is_local_image(d))
    low = 0.0
    with tempfile.TemporaryDirectory(prefix="anyvirt-vsphere-") as scratch:
        for index, disk in enumerate(disks):
            if not is_local_image(disk):
                out.append(disk)
                continue
            assert disk.image is not None
            image = Path(disk.image)
            job.progress(low, f"converting {image.name}")
            facts = check_local_image(disk.image, job)
            size = max(facts.virtual_size, disk.size_bytes or 0)
            size = -(-size // SECTOR) * SECTOR
            raw = Path(scratch) / f"disk{index}.raw"
            try:
                qemu_img.convert(image, raw, source_format=facts.format, format="raw", job=job,
                                 span=(low, low + share / 2))
            except TaskFailed as exc:
                raise InvalidSpec(f"disk image {disk.image!r} cannot be converted: {exc}") from exc
            with raw.open("r+b") as handle:
                handle.truncate(size)  # grow to size_gib when asked; sparse
            extent = f"disk{index}-flat.vmdk"
            datastore_files.upload(driver, datastore, f"{folder}/{extent}", raw, job=job,
                                   span=(low + share / 2, low + share))
            desc = Path(scratch) / f"disk{index}.vmdk"
            desc.write_bytes(descriptor(extent, size))
            datastore_files.upload(driver, datastore, f"{folder}/disk{index}.vmdk", desc)
            raw.unlink()
            low += share
            out.append(
                evolve(  # the size is exact (a power-of-two division): vSphere is told it
                    disk,
                    image=datastore_path(datastore, f"{folder}/disk{index}.vmdk"),
                    size_gib=size / GIB,
                    storage=None,
                )
            )
    return out, folder
